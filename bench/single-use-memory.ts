// Memory cost of the server's single-use memory (MemoryStore) per sign-in: a sign-in leaves two records, its
// spent code and its session (the session id is the code's jti, one string for both, as in server.ts). Fills a
// store at its default cap (100,000 records = 50,000 sign-ins), checks that the next record is refused and that
// a revocation still goes in, that refresh rotations add nothing, and that everything is given back at expiry.
//
//   node --expose-gc --import tsx bench/single-use-memory.ts [signIns=50000] [expirySeconds=20]
//
// Prints one JSON line (the last line of stdout). Run by bench/run.ts.

import { randomBytes } from "node:crypto";
import process from "node:process";
import { MemoryStore } from "../server.ts";

const SIGN_INS = Number(process.argv[2] ?? 50_000);
const EXPIRY_SECONDS = Number(process.argv[3] ?? 20);
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

/** Ids shaped like the server's own jti values (16 random bytes, base64url), all distinct. */
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
  const store = new MemoryStore({ maxEntries: 2 * SIGN_INS });
  // warm the code paths once so that compiled code is not counted as data
  const warm = new MemoryStore();
  const warmExp = Math.floor(Date.now() / 1000) + 1;
  for (let i = 0; i < 1000; i++) {
    await warm.spendOnce(`warm-${i}`, warmExp);
    await warm.startSession(`warm-${i}`, "a", warmExp);
    await warm.rotateRefresh(`warm-${i}`, "a", "b");
  }
  // the benchmark's own arrays exist before the baseline, so that only the store's records are counted
  const sids: string[] = new Array(SIGN_INS).fill("");
  const current: string[] = new Array(SIGN_INS).fill("");
  await sleep(2100);
  const before = await settle();

  const expiresAt = Math.floor(Date.now() / 1000) + EXPIRY_SECONDS;
  const nextId = idMaker();
  // A sign-in's first record: its code, spent at the exchange (the code's jti, which becomes the session id).
  let accepted = 0;
  const t0 = performance.now();
  for (let i = 0; i < SIGN_INS; i++) {
    sids[i] = nextId();
    if (await store.spendOnce(sids[i], expiresAt)) accepted++;
  }
  const spendMs = performance.now() - t0;
  const replayRejected = (await store.spendOnce(sids[0], expiresAt)) === false;
  const afterCodes = await settle();
  const sizeAfterCodes = store.size;

  // Its second record: the session, holding its current refresh token's jti.
  for (let i = 0; i < SIGN_INS; i++) {
    current[i] = nextId();
    await store.startSession(sids[i], current[i], expiresAt);
  }
  const afterSessions = await settle();
  const sizeAfterSessions = store.size;

  // Full: the next record is refused; a revocation is never refused, even past the cap.
  const capRefused = await store.spendOnce(nextId(), expiresAt).then(() => false, () => true);
  await store.revokeSession(nextId(), expiresAt);
  const revokedPastCap = store.size === 2 * SIGN_INS + 1;

  // Refresh rotations: each replaces its session's jti in place.
  let rotated = 0;
  const t1 = performance.now();
  for (let round = 0; round < ROTATIONS_PER_SESSION; round++) {
    for (let i = 0; i < SIGN_INS; i++) {
      const next = nextId();
      if (await store.rotateRefresh(sids[i], current[i], next)) rotated++;
      current[i] = next;
    }
  }
  const rotateMs = performance.now() - t1;
  const sizeAfterRotations = store.size;
  const afterRotations = await settle();
  sids.fill("");
  current.fill("");
  const stillComplete = store.size === 2 * SIGN_INS + 1; // nothing expired before the last measurement

  // wait until every record is past its expiry, then collect
  await sleep(Math.max(0, expiresAt * 1000 - Date.now()) + 1500);
  const expired = await settle();
  const sizeExpired = store.size;

  const codeGrowth = heapOf(afterCodes) - heapOf(before);
  const sessionGrowth = heapOf(afterSessions) - heapOf(afterCodes);
  const rotationGrowth = heapOf(afterRotations) - heapOf(afterSessions);
  const signInGrowth = heapOf(afterSessions) - heapOf(before);
  const heapRetained = heapOf(expired) - heapOf(before);
  const complete = sizeAfterCodes === SIGN_INS && sizeAfterSessions === 2 * SIGN_INS && revokedPastCap &&
    sizeAfterRotations === 2 * SIGN_INS + 1 && stillComplete;
  const result = {
    ok: accepted === SIGN_INS && replayRejected && capRefused && rotated === SIGN_INS * ROTATIONS_PER_SESSION &&
      complete,
    ...(complete ? {} : {
      error: "records expired before the measurement ended: machine too busy, raise the expiry",
    }),
    signIns: SIGN_INS,
    records: 2 * SIGN_INS,
    expirySeconds: EXPIRY_SECONDS,
    accepted,
    replayRejected,
    capRefused,
    revokedPastCap,
    spendNsPerCode: Math.round((spendMs * 1e6) / SIGN_INS),
    rotations: rotated,
    rotateNsPerRefresh: Math.round((rotateMs * 1e6) / Math.max(rotated, 1)),
    sizeAfterExpiry: sizeExpired,
    rssBeforeMb: +(before.rss / MB).toFixed(1),
    rssFullMb: +(afterSessions.rss / MB).toFixed(1),
    rssAfterExpiryMb: +(expired.rss / MB).toFixed(1),
    rssGrowthMb: +((afterSessions.rss - before.rss) / MB).toFixed(1),
    rssRetainedAfterExpiryMb: +((expired.rss - before.rss) / MB).toFixed(1),
    heapGrowthMb: +(signInGrowth / MB).toFixed(1),
    rotationHeapGrowthMb: +(rotationGrowth / MB).toFixed(1),
    heapRetainedAfterExpiryMb: +(heapRetained / MB).toFixed(1),
    bytesPerSignIn: Math.round(signInGrowth / SIGN_INS),
    bytesPerCode: Math.round(codeGrowth / SIGN_INS),
    bytesPerSession: Math.round(sessionGrowth / SIGN_INS),
    // Released: every record left the store and the heap came back to within 10% of what the records
    // had taken (resident pages may lag: V8 returns them to the OS lazily).
    released: sizeExpired === 0 && heapRetained <= Math.max(0.1 * signInGrowth, 1 * MB),
  };
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }));
  process.exit(1);
});
