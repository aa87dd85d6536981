// Memory cost of the server's single-use memory (MemoryStore): what 100k redeemed codes and 100k live
// sessions hold, that refresh rotations add nothing, that the store refuses past its cap (a revocation
// still goes in), and that everything is given back once it expires.
//
//   node --expose-gc --import tsx bench/single-use-memory.ts [count] [expirySeconds]
//
// Prints one JSON line (the last line of stdout). Run by bench/run.ts.

import { randomBytes } from "node:crypto";
import process from "node:process";
import { MemoryStore } from "../server.ts";

const COUNT = Number(process.argv[2] ?? 100_000);
const EXPIRY_SECONDS = Number(process.argv[3] ?? 12);
const ROTATIONS_PER_SESSION = 10;
const MB = 1024 * 1024;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.log(JSON.stringify({ ok: false, error: "run with node --expose-gc" }));
  process.exit(1);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function settle(): Promise<NodeJS.MemoryUsage> {
  // a few full collections with turns of the event loop in between, so that
  // finalizers and weak callbacks have run and freed pages are counted out
  for (let i = 0; i < 4; i++) {
    gc!();
    await sleep(50);
  }
  return process.memoryUsage();
}
const heapOf = (usage: NodeJS.MemoryUsage) => usage.heapUsed + usage.external;

/** Ids shaped like the server's own jti and sid values (16 random bytes, base64url), all distinct. */
function idMaker() {
  const pool = randomBytes(16 * 1024);
  let i = 0;
  return () => {
    if (i % 1024 === 0) randomBytes(16 * 1024).copy(pool); // fresh bytes every 1024 ids
    const bytes = pool.subarray((i % 1024) * 16, (i % 1024) * 16 + 16);
    bytes.writeUInt32BE(i++, 0); // the counter keeps every id distinct
    return bytes.toString("base64url");
  };
}

async function main(): Promise<void> {
  // Codes fill a store at its default cap (100,000): exactly COUNT fit, the next is refused.
  const codes = new MemoryStore();
  const sessions = new MemoryStore({ maxEntries: COUNT });
  // warm the code paths once so that compiled code is not counted as data
  const warm = new MemoryStore();
  const warmExp = Math.floor(Date.now() / 1000) + 1;
  for (let i = 0; i < 1000; i++) {
    await warm.spendOnce(`warm-${i}`, warmExp);
    await warm.startSession(`warm-${i}`, "a", warmExp);
    await warm.rotateRefresh(`warm-${i}`, "a", "b");
  }
  await sleep(2100);
  const before = await settle();

  const expiresAt = Math.floor(Date.now() / 1000) + EXPIRY_SECONDS;
  const nextId = idMaker();
  let firstCode = "";
  let accepted = 0;
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i++) {
    const id = nextId();
    if (i === 0) firstCode = id;
    if (await codes.spendOnce(id, expiresAt)) accepted++;
  }
  const spendMs = performance.now() - t0;
  const replayRejected = (await codes.spendOnce(firstCode, expiresAt)) === false;
  const capRefused = await codes.spendOnce(nextId(), expiresAt).then(() => false, () => true);
  await codes.revokeSession(nextId(), expiresAt); // a revocation is never refused, even past the cap
  const revokedPastCap = codes.size === COUNT + 1;
  const afterCodes = await settle();

  // Sessions: one record each, holding its current refresh token's jti.
  const sids: string[] = [];
  const current: string[] = [];
  for (let i = 0; i < COUNT; i++) {
    sids.push(nextId());
    current.push(nextId());
    await sessions.startSession(sids[i], current[i], expiresAt);
  }
  const sessionCount = sessions.size;
  const afterSessions = await settle();

  // Refresh rotations: each replaces its session's jti in place.
  let rotated = 0;
  const t1 = performance.now();
  for (let round = 0; round < ROTATIONS_PER_SESSION; round++) {
    for (let i = 0; i < COUNT; i++) {
      const next = nextId();
      if (await sessions.rotateRefresh(sids[i], current[i], next)) rotated++;
      current[i] = next;
    }
  }
  const rotateMs = performance.now() - t1;
  const sizeAfterRotations = sessions.size;
  const afterRotations = await settle();
  sids.length = 0; // the store's own keys and values are all that is left of them
  current.length = 0;
  const sessionsAlone = await settle();

  // wait until every entry is past its expiry, then collect
  await sleep(Math.max(0, expiresAt * 1000 - Date.now()) + 1500);
  const expired = await settle();
  const sizeExpired = codes.size + sessions.size;

  const codeGrowth = heapOf(afterCodes) - heapOf(before);
  const sessionGrowth = heapOf(sessionsAlone) - heapOf(afterCodes);
  const rotationGrowth = heapOf(afterRotations) - heapOf(afterSessions);
  const heapRetained = heapOf(expired) - heapOf(before);
  const totalGrowth = codeGrowth + sessionGrowth;
  const complete = revokedPastCap && sessionCount === COUNT && sizeAfterRotations === COUNT;
  const result = {
    ok: accepted === COUNT && replayRejected && capRefused && rotated === COUNT * ROTATIONS_PER_SESSION && complete,
    ...(complete ? {} : {
      error: "entries expired before the measurement: machine too busy, raise the expiry",
    }),
    codes: COUNT,
    expirySeconds: EXPIRY_SECONDS,
    accepted,
    replayRejected,
    capRefused,
    revokedPastCap,
    spendNsPerCode: Math.round((spendMs * 1e6) / COUNT),
    sessions: sessionCount,
    rotations: rotated,
    rotateNsPerRefresh: Math.round((rotateMs * 1e6) / rotated),
    sizeAfterRotations,
    sizeAfterSpend: COUNT,
    sizeAfterExpiry: sizeExpired,
    rssBeforeMb: +(before.rss / MB).toFixed(1),
    rssAfterMb: +(afterSessions.rss / MB).toFixed(1),
    rssAfterExpiryMb: +(expired.rss / MB).toFixed(1),
    rssGrowthMb: +((afterCodes.rss - before.rss) / MB).toFixed(1),
    rssRetainedAfterExpiryMb: +((expired.rss - before.rss) / MB).toFixed(1),
    heapGrowthMb: +(codeGrowth / MB).toFixed(1),
    sessionHeapGrowthMb: +(sessionGrowth / MB).toFixed(1),
    rotationHeapGrowthMb: +(rotationGrowth / MB).toFixed(1),
    heapRetainedAfterExpiryMb: +(heapRetained / MB).toFixed(1),
    bytesPerCode: Math.round(codeGrowth / COUNT),
    bytesPerSession: Math.round(sessionGrowth / COUNT),
    // Released: every entry left the store and the heap came back to within 10% of what
    // the entries had taken (resident pages may lag: V8 returns them to the OS lazily).
    released: sizeExpired === 0 && heapRetained <= Math.max(0.1 * totalGrowth, 1 * MB),
  };
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }));
  process.exit(1);
});
