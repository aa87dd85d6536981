// Memory cost of the server's single-use memory (MemoryStore): how much resident memory
// 100k redeemed codes hold, and whether it is given back once they expire.
//
//   node --expose-gc --import tsx bench/single-use-memory.ts [count] [expirySeconds]
//
// Prints one JSON line (the last line of stdout). Run by bench/run.ts.

import { randomBytes } from "node:crypto";
import { MemoryStore } from "../server.ts";

const COUNT = Number(process.argv[2] ?? 100_000);
const EXPIRY_SECONDS = Number(process.argv[3] ?? 6);
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

async function main(): Promise<void> {
  const store = new MemoryStore();
  // warm the code paths once so that compiled code is not counted as data
  const warmExp = Math.floor(Date.now() / 1000) + 1;
  for (let i = 0; i < 1000; i++) await store.spendOnce(`warm-${i}`, warmExp);
  await sleep(2100);
  const before = await settle();
  const sizeBefore = store.size;

  // Ids shaped like the server's own jti values (16 random bytes, base64url).
  const expiresAt = Math.floor(Date.now() / 1000) + EXPIRY_SECONDS;
  const pool = randomBytes(16 * 1024);
  let firstId = "";
  let accepted = 0;
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i++) {
    // fresh random bytes every 1024 ids; mixing in the counter keeps every id distinct
    if (i % 1024 === 0) randomBytes(16 * 1024).copy(pool);
    const b = pool.subarray((i % 1024) * 16, (i % 1024) * 16 + 16);
    b.writeUInt32BE(i, 0);
    const id = b.toString("base64url");
    if (i === 0) firstId = id;
    if (await store.spendOnce(id, expiresAt)) accepted++;
  }
  const spendMs = performance.now() - t0;
  const replayRejected = (await store.spendOnce(firstId, expiresAt)) === false;
  const after = await settle();
  const sizeAfter = store.size;

  // wait until every entry is past its expiry, then collect
  const waitMs = Math.max(0, expiresAt * 1000 - Date.now()) + 1500;
  await sleep(waitMs);
  const expired = await settle();
  const sizeExpired = store.size;

  const heapGrowth = after.heapUsed + after.external - (before.heapUsed + before.external);
  const heapRetained = expired.heapUsed + expired.external - (before.heapUsed + before.external);
  const complete = sizeAfter - sizeBefore === COUNT;
  const result = {
    ok: accepted === COUNT && replayRejected && complete,
    ...(complete ? {} : {
      error:
        `entries expired before the measurement (${sizeAfter} of ${COUNT} left): machine too busy, raise the expiry`,
    }),
    codes: COUNT,
    expirySeconds: EXPIRY_SECONDS,
    accepted,
    replayRejected,
    spendNsPerCode: Math.round((spendMs * 1e6) / COUNT),
    sizeAfterSpend: sizeAfter,
    sizeAfterExpiry: sizeExpired,
    rssBeforeMb: +(before.rss / MB).toFixed(1),
    rssAfterMb: +(after.rss / MB).toFixed(1),
    rssAfterExpiryMb: +(expired.rss / MB).toFixed(1),
    rssGrowthMb: +((after.rss - before.rss) / MB).toFixed(1),
    rssRetainedAfterExpiryMb: +((expired.rss - before.rss) / MB).toFixed(1),
    heapGrowthMb: +(heapGrowth / MB).toFixed(1),
    heapRetainedAfterExpiryMb: +(heapRetained / MB).toFixed(1),
    bytesPerCode: Math.round(heapGrowth / COUNT),
    // Released: every entry left the store and the heap came back to within 10% of what
    // the entries had taken (resident pages may lag: V8 returns them to the OS lazily).
    released: sizeExpired === sizeBefore && heapRetained <= Math.max(0.1 * heapGrowth, 1 * MB),
  };
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }));
  process.exit(1);
});
