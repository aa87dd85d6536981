// Sign-in flood: how long one local client needs to fill the single-use memory's cap with sign-ins, and once it
// stops, how long until a new user can sign in again. Run from the repository root: `npm run bench:flood`.
//
//   tsx bench/flood.ts [--max-entries N] [--refresh-ttl S] [--access-ttl S] [--resource-ttl S | --plain-resource]
//                      [--replay] [--sustain S] [--clients N] [--rounds N] [--probe-every S] [--no-trace]
//                      [--out FILE]
//
// Defaults are the server's own: STORE_MAX_ENTRIES 100,000, refresh lifetime 300 s, access lifetime 30 s (the code
// lifetime, 300 s, is fixed in server.ts). A sign-in is what a person's browser and host do after a 401: the
// consent page (GET /authorize), its form (POST /authorize), the code exchange (POST /token). It leaves two
// records in the store: its spent code and its session. The flood asks for `/ttl/<resource-ttl>/mcp` (default
// 86400: the longest access tokens, whose sessions once held their record for a day), or /mcp (--plain-resource).
//
// --replay: each sign-in also POSTs its consent a second time and exchanges that second code, as an attacker
// would to get two sessions from one consent. The second code has the first one's jti, so its exchange must be
// refused (400 invalid_grant) and revokes the first session: a revocation record, which the store takes even
// past its cap and keeps until every token of the session has expired.
//
// --sustain S: the flood goes on for S seconds, refilling whatever frees up, as a patient attacker would.
//
// Each round floods until /token answers 503 (the store is full), stops, then tries one new user's sign-in every
// --probe-every seconds until one succeeds. Everything is bounded: the flood stops at the cap (or after twice
// the cap's worth of sign-ins, or 15 minutes), the wait after it at the code or refresh lifetime plus 60 s.
// Loopback only: the server is started here on 127.0.0.1 and stopped at the end.

import { type ChildProcess, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { freePort, HttpConnection, type HttpResponse } from "./http-client.ts";
import { REDIRECT_URI, startClientMetadata } from "./load.ts";
import { rssKb } from "./proc.ts";

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH_DIR);
const HOST = "127.0.0.1";
const CODE_TTL_SECONDS = 300; // server.ts's code lifetime (not configurable)

const argv = process.argv.slice(2);
function option(name: string, fallback: number): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(argv[i + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`);
  return value;
}
const MAX_ENTRIES = option("max-entries", 100_000);
const REFRESH_TTL = option("refresh-ttl", 300);
const ACCESS_TTL = option("access-ttl", 30);
const PLAIN_RESOURCE = argv.includes("--plain-resource"); // /mcp, whose access tokens live ACCESS_TTL
const RESOURCE_TTL = PLAIN_RESOURCE ? ACCESS_TTL : option("resource-ttl", 86400);
const RESOURCE_PATH = PLAIN_RESOURCE ? "/mcp" : `/ttl/${RESOURCE_TTL}/mcp`;
const CLIENTS = option("clients", 16);
const ROUNDS = option("rounds", 1);
const PROBE_EVERY_SECONDS = option("probe-every", 1);
const REPLAY = argv.includes("--replay");
// --sustain S: flood for S seconds whatever the answers (a worker pauses 250 ms after each 503), then stop
const SUSTAIN_SECONDS = Math.min(option("sustain", 0.001), 3 * 3600);
const SUSTAIN = argv.includes("--sustain");
const TRACE = !argv.includes("--no-trace");
const outAt = argv.indexOf("--out");
const OUT = outAt >= 0 ? path.resolve(argv[outAt + 1]) : null;
// A revocation (--replay) lasts the session's span: until its last token expires.
const SESSION_SPAN = Math.max(REFRESH_TTL, RESOURCE_TTL);
const FLOOD_LIMIT_SECONDS = 15 * 60;
// The wait covers a sign-in's own records; revocations (--replay) may last a day: their effect shows in the
// rounds that follow (fewer sign-ins fill the store each time), not in a day-long wait.
const WAIT_LIMIT_SECONDS = Math.max(CODE_TTL_SECONDS, REFRESH_TTL) + 60;

const log = (line: string) => process.stderr.write(`${line}\n`);
const enc = encodeURIComponent;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- the server under test
interface Server {
  child: ChildProcess;
  port: number;
  stderr: string[];
}

async function startServer(): Promise<Server> {
  const port = await freePort();
  const env: Record<string, string | undefined> = {
    ...process.env,
    PORT: String(port),
    HOST,
    JWT_SECRET: "bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    STORE_MAX_ENTRIES: String(MAX_ENTRIES),
    REFRESH_TOKEN_TTL_SECONDS: String(REFRESH_TTL),
    ACCESS_TOKEN_TTL_SECONDS: String(ACCESS_TTL),
  };
  delete env.PUBLIC_URL;
  if (TRACE) delete env.LOG_REQUESTS; // as `npm start` runs it
  else env.LOG_REQUESTS = "0";
  const child = spawn(process.execPath, ["--import", "tsx", "server.ts"], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"], // stdout (the trace) drained, as a terminal would
  });
  child.stdout!.resume();
  const stderr: string[] = [];
  child.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()));
  const started = performance.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server.ts exited: ${stderr.join("").slice(-600)}`);
    const conn = new HttpConnection(HOST, port);
    try {
      if ((await conn.request("GET", "/.well-known/oauth-authorization-server")).status === 200) break;
    } catch {
      /* not listening yet */
    } finally {
      conn.close();
    }
    if (performance.now() - started > 20_000) throw new Error("server.ts did not start within 20 s");
    await sleep(20);
  }
  return { child, port, stderr };
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM");
  const kill = setTimeout(() => server.child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(kill);
}

// ---------------------------------------------------------------- one sign-in
type Outcome = "signed-in" | "store-full" | "error";
interface SignInResult {
  outcome: Outcome;
  requests: number;
  detail?: string;
  /** --replay: the second code's exchange was refused as a replay (400 invalid_grant) */
  replayRefused?: boolean;
}

const PKCE = Array.from({ length: 64 }, () => {
  const verifier = crypto.randomBytes(32).toString("base64url");
  return { verifier, challenge: crypto.createHash("sha256").update(verifier).digest("base64url") };
});

const form = { "Content-Type": "application/x-www-form-urlencoded" };
const errorCode = (res: HttpResponse) => {
  try {
    return String(JSON.parse(res.body).error);
  } catch {
    return "?";
  }
};

/** The consent page, its Approve, the code exchange; with `replay`, the consent again and its code's exchange. */
async function signIn(conn: HttpConnection, clientId: string, port: number, n: number): Promise<SignInResult> {
  const pkce = PKCE[n % PKCE.length];
  const resource = `http://${HOST}:${port}${RESOURCE_PATH}`;
  const query = `response_type=code&client_id=${enc(clientId)}&redirect_uri=${enc(REDIRECT_URI)}` +
    `&code_challenge=${pkce.challenge}&code_challenge_method=S256&state=s${n}&scope=mcp&resource=${enc(resource)}`;
  let requests = 0;
  const page = await conn.request("GET", `/authorize?${query}`);
  requests++;
  const consent = /name="consent" value="([^"]*)"/.exec(page.body)?.[1];
  if (page.status !== 200 || !consent) return { outcome: "error", requests, detail: `consent page ${page.status}` };
  const approve = async () => {
    const answer = await conn.request("POST", "/authorize", form, `consent=${enc(consent)}&decision=approve`);
    requests++;
    const code = answer.status === 303 ? new URL(answer.headers["location"] ?? "").searchParams.get("code") : null;
    return code;
  };
  const exchange = async (code: string) => {
    const body = `grant_type=authorization_code&code=${enc(code)}&code_verifier=${pkce.verifier}` +
      `&client_id=${enc(clientId)}&redirect_uri=${enc(REDIRECT_URI)}&resource=${enc(resource)}`;
    const answer = await conn.request("POST", "/token", form, body);
    requests++;
    return answer;
  };
  const code = await approve();
  if (!code) return { outcome: "error", requests, detail: "approve: no code" };
  const tokens = await exchange(code);
  if (tokens.status === 503) return { outcome: "store-full", requests };
  if (tokens.status !== 200) {
    return { outcome: "error", requests, detail: `token ${tokens.status} ${errorCode(tokens)}` };
  }
  if (!REPLAY) return { outcome: "signed-in", requests };
  const second = await approve();
  if (!second) return { outcome: "error", requests, detail: "second approve: no code" };
  const replayed = await exchange(second);
  const replayRefused = replayed.status === 400 && errorCode(replayed) === "invalid_grant";
  return { outcome: "signed-in", requests, replayRefused };
}

// ---------------------------------------------------------------- one round: flood, then wait for a sign-in
interface Round {
  signIns: number;
  requests: number;
  floodSeconds: number;
  signInsPerSecond: number;
  requestsPerSecond: number;
  storeFullAnswers: number;
  errors: number;
  errorSamples: string[];
  replaysRefused?: number;
  replaysAccepted?: number;
  /** seconds from the flood's end until a new user's sign-in succeeded; null: not within the wait limit */
  lockoutSeconds: number | null;
  /** the same, from the flood's start (records expire by their own clock, which starts there) */
  lockoutFromFloodStartSeconds: number | null;
  probes: number;
  serverRssMb: number;
}

async function round(server: Server, clientId: string, startAt: number): Promise<Round> {
  let counter = startAt;
  let signIns = 0;
  let requests = 0;
  let storeFull = 0;
  let errors = 0;
  let replaysRefused = 0;
  const errorSamples: string[] = [];
  let full = false;
  const maxSignIns = SUSTAIN ? Infinity : MAX_ENTRIES; // a sign-in takes two records: twice what the cap holds
  const started = performance.now();
  const deadline = started + (SUSTAIN ? SUSTAIN_SECONDS : FLOOD_LIMIT_SECONDS) * 1000;
  let lastReport = started;
  const worker = async () => {
    let conn = new HttpConnection(HOST, server.port);
    while (!full && signIns < maxSignIns && performance.now() < deadline && errors < 100) {
      try {
        const result = await signIn(conn, clientId, server.port, counter++);
        requests += result.requests;
        if (result.outcome === "signed-in") signIns++;
        if (result.replayRefused) replaysRefused++;
        if (result.outcome === "store-full") {
          storeFull++;
          if (SUSTAIN) await sleep(250);
          else full = true;
        }
        if (result.outcome === "error") {
          errors++;
          if (errorSamples.length < 3) errorSamples.push(result.detail ?? "?");
        }
      } catch (error) {
        errors++;
        if (errorSamples.length < 3) errorSamples.push(String((error as Error).message ?? error));
        conn.close();
        conn = new HttpConnection(HOST, server.port);
      }
      if (performance.now() - lastReport > 5000) {
        lastReport = performance.now();
        const seconds = (lastReport - started) / 1000;
        log(`flood:   ${signIns} sign-ins, ${requests} requests in ${seconds.toFixed(0)} s`);
      }
    }
    conn.close();
  };
  await Promise.all(Array.from({ length: CLIENTS }, worker));
  const stopped = performance.now();
  const floodSeconds = (stopped - started) / 1000;
  const serverRssMb = +(rssKb(server.child.pid!) / 1024).toFixed(1);
  log(
    `flood: ${signIns} sign-ins, ${requests} requests, ${floodSeconds.toFixed(1)} s; ` +
      (full ? "the store is full (503 at /token)" : "stopped before the store was full") +
      `; waiting for a new user's sign-in (every ${PROBE_EVERY_SECONDS} s, up to ${WAIT_LIMIT_SECONDS} s)`,
  );

  // A new user: one sign-in every PROBE_EVERY_SECONDS until one succeeds.
  let lockoutSeconds: number | null = null;
  let probes = 0;
  const conn = new HttpConnection(HOST, server.port);
  try {
    while ((performance.now() - stopped) / 1000 < WAIT_LIMIT_SECONDS) {
      probes++;
      const result = await signIn(conn, clientId, server.port, counter++).catch((error: Error) => ({
        outcome: "error" as const,
        requests: 0,
        detail: error.message,
      }));
      if (result.outcome === "signed-in") {
        lockoutSeconds = (performance.now() - stopped) / 1000;
        break;
      }
      if (result.outcome === "error") log(`flood:   probe error: ${result.detail}`);
      if (probes % Math.max(1, Math.round(30 / PROBE_EVERY_SECONDS)) === 0) {
        log(`flood:   still locked out after ${((performance.now() - stopped) / 1000).toFixed(0)} s`);
      }
      await sleep(PROBE_EVERY_SECONDS * 1000);
    }
  } finally {
    conn.close();
  }
  return {
    signIns,
    requests,
    floodSeconds: +floodSeconds.toFixed(2),
    signInsPerSecond: +(signIns / floodSeconds).toFixed(1),
    requestsPerSecond: +(requests / floodSeconds).toFixed(1),
    storeFullAnswers: storeFull,
    errors,
    errorSamples,
    ...(REPLAY ? { replaysRefused, replaysAccepted: signIns - replaysRefused } : {}),
    lockoutSeconds: lockoutSeconds === null ? null : +lockoutSeconds.toFixed(1),
    lockoutFromFloodStartSeconds: lockoutSeconds === null ? null : +(lockoutSeconds + floodSeconds).toFixed(1),
    probes,
    serverRssMb,
  };
}

// ---------------------------------------------------------------- main
async function main(): Promise<void> {
  const settings = {
    storeMaxEntries: MAX_ENTRIES,
    codeTtlSeconds: CODE_TTL_SECONDS,
    refreshTtlSeconds: REFRESH_TTL,
    accessTtlSeconds: ACCESS_TTL,
    resource: RESOURCE_PATH,
    resourceTtlSeconds: RESOURCE_TTL,
    replay: REPLAY,
    sustainSeconds: SUSTAIN ? SUSTAIN_SECONDS : null,
    clients: CLIENTS,
    requestTrace: TRACE,
    probeEverySeconds: PROBE_EVERY_SECONDS,
  };
  log(`flood: settings ${JSON.stringify(settings)}`);
  const server = await startServer();
  const metadata = await startClientMetadata();
  const rounds: Round[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      rounds.push(await round(server, metadata.clientId, i * 10_000_000));
      if (rounds[i].lockoutSeconds === null) break; // still locked out: a further round would learn nothing
    }
  } finally {
    metadata.close();
    await stopServer(server);
  }

  const lines = [
    `sign-in flood — STORE_MAX_ENTRIES ${MAX_ENTRIES}, code ${CODE_TTL_SECONDS} s, refresh ${REFRESH_TTL} s, ` +
    `access ${ACCESS_TTL} s, resource ${RESOURCE_PATH}, ${CLIENTS} connections, request trace ` +
    `${TRACE ? "on" : "off"}${REPLAY ? ", each consent POSTed twice and both codes exchanged" : ""}`,
  ];
  rounds.forEach((r, i) => {
    const perSignIn = r.signIns ? (r.requests / r.signIns).toFixed(1) : "—";
    lines.push(
      `round ${i + 1}: ${r.signIns} sign-ins (${r.requests} requests, ${perSignIn} per sign-in) ` +
        `${SUSTAIN ? "went in over" : "filled the store in"} ` +
        `${r.floodSeconds} s (${r.signInsPerSecond} sign-ins/s, ${r.requestsPerSecond} req/s); ` +
        `${r.storeFullAnswers ? `/token answered 503 ${r.storeFullAnswers} times` : "the store never answered 503"}` +
        (r.errors ? `; ${r.errors} errors (${r.errorSamples[0]})` : ""),
    );
    if (REPLAY) {
      lines.push(
        `  second codes from one consent: ${r.replaysRefused} refused as replays (400 invalid_grant), ` +
          `${r.replaysAccepted} accepted`,
      );
    }
    lines.push(
      r.lockoutSeconds === null
        ? `  a new user could not sign in within ${WAIT_LIMIT_SECONDS} s after the flood stopped (${r.probes} tries)`
        : `  a new user signed in ${r.lockoutSeconds} s after the flood stopped ` +
          `(${r.lockoutFromFloodStartSeconds} s after it started; ${r.probes} tries); server RSS ${r.serverRssMb} MiB`,
    );
  });
  lines.push(
    `expected: new sign-ins within the first records' lifetime after the flood started ` +
      `(min(code ${CODE_TTL_SECONDS} s, refresh ${REFRESH_TTL} s) = ${Math.min(CODE_TTL_SECONDS, REFRESH_TTL)} s)` +
      (REPLAY ? `; revocations last the session span (${SESSION_SPAN} s) and count toward the cap` : ""),
  );
  process.stdout.write(`${lines.join("\n")}\n`);
  const result = { date: new Date().toISOString(), settings, rounds, table: lines };
  const outFile = OUT ?? path.join(BENCH_DIR, "results", `flood-${result.date.replace(/[:.]/g, "-")}.json`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  log(`flood: wrote ${path.relative(process.cwd(), outFile)}`);
}

main().catch((error) => {
  log(`flood: ${error?.stack ?? error}`);
  process.exit(1);
});
