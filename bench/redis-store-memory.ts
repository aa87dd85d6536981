// Memory cost of the Redis store (examples/redis-store.ts): Redis's used_memory per spent code, per session
// and per revocation, and that refresh rotations add no key. Needs a Redis to write to; it uses its own key
// prefix and deletes its keys afterwards.
//
//   REDIS_URL=redis://127.0.0.1:6379 npx tsx bench/redis-store-memory.ts [count]
//
// Prints one JSON line.

import { randomBytes } from "node:crypto";
import process from "node:process";
import { createClient } from "redis";
import { RedisStore } from "../examples/redis-store.ts";

const COUNT = Number(process.argv[2] ?? 10_000);
const ROTATIONS_PER_SESSION = 10;
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `bench-${randomBytes(4).toString("hex")}:`;
const id = () => randomBytes(16).toString("base64url"); // shaped like the server's jti and sid values

const client = createClient({ url });
await client.connect();
const store = new RedisStore(client, { prefix });
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info("memory"))?.[1]);
const keys = async () => (await client.keys(`${prefix}*`)).length;
const expiresAt = Math.floor(Date.now() / 1000) + 600;

try {
  const start = await usedMemory();
  for (let i = 0; i < COUNT; i++) await store.spendOnce(id(), expiresAt);
  const afterCodes = await usedMemory();

  const sessions = Array.from({ length: COUNT }, () => ({ sid: id(), jti: id() }));
  for (const session of sessions) await store.startSession(session.sid, session.jti, expiresAt);
  const afterSessions = await usedMemory();
  const keysBeforeRotations = await keys();

  let rotated = 0;
  for (let round = 0; round < ROTATIONS_PER_SESSION; round++) {
    for (const session of sessions) {
      const next = id();
      if (await store.rotateRefresh(session.sid, session.jti, next)) rotated++;
      session.jti = next;
    }
  }
  const afterRotations = await usedMemory();
  const keysAfterRotations = await keys();

  for (const session of sessions) await store.revokeSession(session.sid, expiresAt);
  const afterRevocations = await usedMemory();

  console.log(JSON.stringify({
    ok: rotated === COUNT * ROTATIONS_PER_SESSION && keysAfterRotations === keysBeforeRotations,
    count: COUNT,
    bytesPerCode: Math.round((afterCodes - start) / COUNT),
    bytesPerSession: Math.round((afterSessions - afterCodes) / COUNT),
    bytesPerRevocation: Math.round((afterRevocations - afterRotations) / COUNT),
    rotations: rotated,
    keysBeforeRotations,
    keysAfterRotations,
    rotationGrowthBytes: afterRotations - afterSessions,
  }));
} finally {
  for (const key of await client.keys(`${prefix}*`)) await client.del(key);
  client.destroy();
}
