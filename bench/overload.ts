// Overload and soak scenarios (issue #15): what server.ts does when more arrives than two cores can serve.
// A measurement, not a test: `npm run bench:overload` (see bench/README.md).
//
//   burst       2,000 connections opened at once, each calling once; then 2,000 calling again and again on their
//               keep-alive connections: the listen queue at Node's default backlog (511) beside server.ts's 4096.
//   soak        the full flow (load.ts oneFlow) at 8 and at 32 clients for a while: errors, latency, memory.
//   overload    500 connections on the 401 path while 4 clients run full flows: are the flows still served?
//   malformed   a catalogue of malformed bodies and framings sent to every POST endpoint: each answered (or
//               cut) without a 5xx, an [error] line or a crash.
//
// Options: --runs N (burst runs per server, default 3)  --burst-seconds S (5)  --soak-seconds S (20)
//          --overload-seconds S (15)  --only burst,soak,overload,malformed  --quick (1 run, 2/5/5 s)
//          --out FILE (default bench/results/overload-<timestamp>.json)

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { freePort, HttpConnection } from "./http-client.ts";
import { type FlowTarget, oneFlow, oneUnauthorized, percentile, runWindow, startClientMetadata } from "./load.ts";
import { machineCpuSeconds, rssKb, treeCpuSeconds } from "./proc.ts";

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH_DIR);
const HOST = "127.0.0.1";
const JWT_SECRET = "bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz";

const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const option = (name: string, fallback: number) => {
  const at = argv.indexOf(`--${name}`);
  return at >= 0 ? Number(argv[at + 1]) : fallback;
};
const RUNS = option("runs", quick ? 1 : 3);
const BURST_CONNECTIONS = 2_000;
const BURST_SECONDS = option("burst-seconds", quick ? 2 : 5);
const SOAK_SECONDS = option("soak-seconds", quick ? 5 : 20);
const OVERLOAD_SECONDS = option("overload-seconds", quick ? 5 : 15);
const OVERLOAD_CONNECTIONS = 500;
const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1].split(",") : undefined;
const wanted = (scenario: string) => !only || only.includes(scenario);
const outAt = argv.indexOf("--out");
const log = (line: string) => process.stderr.write(`${line}\n`);

// ─── The servers ─────────────────────────────────────────────────────────────────────────────────

interface Server {
  label: string;
  child: ChildProcess;
  port: number;
  pid: number;
  output: () => string;
}

const SERVERS = {
  "server.ts (backlog 4096)": ["server.ts"],
  "handler, backlog 511 (Node's default)": ["bench/backlog-server.ts", "511"],
  "handler, backlog 4096": ["bench/backlog-server.ts", "4096"],
};
type ServerLabel = keyof typeof SERVERS;

/** One node process (`node --import tsx …`, no launcher in between), stdout kept for its [error] lines. */
async function startTarget(label: ServerLabel): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", ...SERVERS[label]], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), JWT_SECRET, LOG_REQUESTS: "0", NODE_ENV: "production" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk: Buffer) => void (output = (output + chunk).slice(-200_000));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  for (const deadline = performance.now() + 20_000;;) {
    if (child.exitCode !== null) throw new Error(`${label} exited at start: ${output}`);
    const connection = new HttpConnection(HOST, port);
    const ready = await connection.request("GET", "/.well-known/oauth-authorization-server").then(
      (answer) => answer.status === 200,
      () => false,
    );
    connection.close();
    if (ready) break;
    if (performance.now() > deadline) throw new Error(`${label} did not answer within 20 s: ${output}`);
    await sleep(50);
  }
  return { label, child, port, pid: child.pid ?? 0, output: () => output };
}

async function stopTarget(server: Server): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM"); // a draining shutdown: idle connections go at once
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

// ─── Other load on the machine ───────────────────────────────────────────────────────────────────

/** Cores used by neither the server nor this process while `work` ran: others' work on a shared machine. */
async function withOtherLoad<T>(server: Server, work: () => Promise<T>): Promise<T & { otherLoadCores: number }> {
  const [machine, self, serverCpu, started] = [
    machineCpuSeconds(),
    process.cpuUsage(),
    treeCpuSeconds([server.pid]),
    performance.now(),
  ];
  const result = await work();
  const seconds = (performance.now() - started) / 1000;
  const own = process.cpuUsage(self);
  const busy = machineCpuSeconds().busy - machine.busy;
  const other = busy - (treeCpuSeconds([server.pid]) - serverCpu) - (own.user + own.system) / 1e6;
  return { ...result, otherLoadCores: round(Math.max(0, other / seconds), 2) };
}

// ─── Burst: 2,000 connections at once ────────────────────────────────────────────────────────────
// Every connection is opened in the same instant and calls the 401 path: once ("one request each"), or
// again and again on its keep-alive connection for BURST_SECONDS ("busy"). A connection the listen queue has
// no room for is dropped by the kernel and waits for its SYN to be sent again (after 1 s, then 3 s, 7 s …);
// the kernel counts both (TcpExt ListenOverflows, TCPSynRetrans: counters of the whole network namespace, so
// others' work may add a few). Connect times include this process issuing 2,000 connects from one thread.
// Busy connections show a second queue: libuv (1.45 on, so Node 20) accepts one connection per event-loop
// iteration (libuv/libuv#3696), and an iteration serving hundreds of busy connections is long, so connections
// already in the kernel's queue are accepted slowly until the load lets up.

const UNAUTHORIZED_CALL = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "tools/call",
  params: { name: "get_secret", arguments: {} },
});
const SLOW_MS = 2_000; // a request slower than this is what a load tool with a 2 s timeout counts as a timeout
const FIRST_ANSWER_TIMEOUT_MS = 30_000;

interface BurstResult {
  connections: number;
  connected: number;
  connectMs: Distribution;
  connectsOver1s: number; // each one waited for at least one SYN retransmission
  firstAnswerMs: Distribution; // from the connect call to the first whole answer
  neverAnswered: number; // no first answer within FIRST_ANSWER_TIMEOUT_MS, or the connection failed
  requests: number;
  requestsPerSec: number;
  latencyMs: Distribution;
  requestsOver2s: number;
  wrongAnswers: number;
  socketErrors: Record<string, number>;
  kernel: Record<string, number>; // TcpExt counters' growth during the burst
  seconds: number;
}

const KERNEL_COUNTERS = ["ListenOverflows", "ListenDrops", "TCPSynRetrans", "SyncookiesSent", "TCPTimeouts"];

/** The TcpExt counters of /proc/net/netstat (Linux); empty elsewhere. */
function tcpCounters(): Record<string, number> {
  const lines = readProc("/proc/net/netstat").split("\n");
  const at = lines.findIndex((line) => line.startsWith("TcpExt:"));
  if (at === -1) return {};
  const [names, values] = [lines[at].split(/\s+/).slice(1), lines[at + 1].split(/\s+/).slice(1)];
  return Object.fromEntries(names.map((name, i) => [name, Number(values[i])]));
}

/** `busy`: each connection asks again and again for BURST_SECONDS; otherwise once, then closes. */
async function burst(port: number, busy: boolean): Promise<BurstResult> {
  const request = `POST /mcp HTTP/1.1\r\nHost: ${HOST}:${port}\r\nContent-Type: application/json\r\n` +
    `Accept: application/json, text/event-stream\r\nContent-Length: ${UNAUTHORIZED_CALL.length}\r\n\r\n` +
    UNAUTHORIZED_CALL;
  const connectMs: number[] = [];
  const firstAnswerMs: number[] = [];
  const latencies: number[] = [];
  const socketErrors: Record<string, number> = {};
  let wrongAnswers = 0;
  let neverAnswered = 0;
  const countersBefore = tcpCounters();
  const started = performance.now();
  const loadEnds = busy ? started + BURST_SECONDS * 1000 : 0;

  const one = () =>
    new Promise<void>((resolve) => {
      const opened = performance.now();
      const socket = net.connect({ host: HOST, port, noDelay: true });
      let buffer: Buffer = Buffer.alloc(0);
      let sentAt = 0;
      let answered = false;
      const giveUp = setTimeout(() => socket.destroy(), FIRST_ANSWER_TIMEOUT_MS);
      const send = () => {
        sentAt = performance.now();
        socket.write(request);
      };
      socket.on("connect", () => {
        connectMs.push(performance.now() - opened);
        send();
      });
      socket.on("data", (chunk: Buffer) => {
        buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
        for (;;) {
          const end = buffer.indexOf("\r\n\r\n");
          if (end === -1) return;
          const head = buffer.subarray(0, end).toString("latin1");
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
          if (buffer.length < end + 4 + length) return;
          buffer = buffer.subarray(end + 4 + length);
          const now = performance.now();
          latencies.push(now - sentAt);
          if (!answered) {
            answered = true;
            clearTimeout(giveUp);
            firstAnswerMs.push(now - opened);
          }
          if (!head.startsWith("HTTP/1.1 401")) wrongAnswers++;
          if (now < loadEnds) send();
          else socket.end();
        }
      });
      socket.on("error", (error: NodeJS.ErrnoException) => {
        socketErrors[error.code ?? error.message] = (socketErrors[error.code ?? error.message] ?? 0) + 1;
      });
      socket.on("close", () => {
        clearTimeout(giveUp);
        if (!answered) neverAnswered++;
        resolve();
      });
    });

  await Promise.all(Array.from({ length: BURST_CONNECTIONS }, one));
  const seconds = (performance.now() - started) / 1000;
  const countersAfter = tcpCounters();
  const kernel = Object.fromEntries(
    KERNEL_COUNTERS.map((name) => [name, (countersAfter[name] ?? NaN) - (countersBefore[name] ?? NaN)]),
  );
  return {
    connections: BURST_CONNECTIONS,
    connected: connectMs.length,
    connectMs: distribution(connectMs),
    connectsOver1s: connectMs.filter((ms) => ms > 1000).length,
    firstAnswerMs: distribution(firstAnswerMs),
    neverAnswered,
    requests: latencies.length,
    requestsPerSec: round(latencies.length / seconds),
    latencyMs: distribution(latencies),
    requestsOver2s: latencies.filter((ms) => ms > SLOW_MS).length,
    wrongAnswers,
    socketErrors,
    kernel,
    seconds: round(seconds, 1),
  };
}

async function burstScenario() {
  const labels = Object.keys(SERVERS) as ServerLabel[];
  type Run = { oneRequestEach: BurstResult; busy: BurstResult; otherLoadCores: number };
  const runs: Record<string, Run[]> = {};
  for (let run = 0; run < RUNS; run++) {
    for (const label of rotated(labels, run)) {
      const server = await startTarget(label);
      await sleep(500); // let its start-up settle
      log(`burst: ${label}, run ${run + 1} of ${RUNS}`);
      const measured = await withOtherLoad(server, async () => {
        const oneRequestEach = await burst(server.port, false);
        await sleep(1_000);
        return { oneRequestEach, busy: await burst(server.port, true) };
      });
      (runs[label] ??= []).push(measured);
      await stopTarget(server);
      await sleep(1_000); // the kernel's TIME_WAIT sockets from this run are no business of the next
    }
  }
  return runs;
}

// ─── Soak: the full flow for a while ─────────────────────────────────────────────────────────────

async function soak(server: Server, target: FlowTarget, clients: number) {
  const op = (connection: HttpConnection, n: number) => oneFlow(connection, target, n);
  await runWindow(HOST, server.port, clients, 2, op, false); // warm-up
  const rssBeforeMb = rssKb(server.pid) / 1024;
  const cpuBefore = treeCpuSeconds([server.pid]);
  const result = await withOtherLoad(server, () => runWindow(HOST, server.port, clients, SOAK_SECONDS, op));
  const cpuSeconds = treeCpuSeconds([server.pid]) - cpuBefore;
  return {
    clients,
    seconds: round(result.seconds, 1),
    flows: result.ops,
    flowsPerSec: round(result.ops / result.seconds),
    errors: result.errors,
    errorSamples: result.errorSamples,
    flowMs: distribution(result.latencies),
    serverCpuUsPerFlow: round((cpuSeconds * 1e6) / Math.max(1, result.ops)),
    rssBeforeMb: round(rssBeforeMb, 1),
    rssAfterMb: round(rssKb(server.pid) / 1024, 1),
    otherLoadCores: result.otherLoadCores,
  };
}

// ─── Overload: 500 connections on the 401 path, flows beside them ───────────────────────────────
// The 500 connections open first and run for a second before the flows are measured, so the flow figures
// are those of a server already overloaded (the 401 figures include that first second). The flow clients
// are warm: the client's metadata document is already in the server's cache.

async function overload(server: Server, target: FlowTarget) {
  const flow = (connection: HttpConnection, n: number) => oneFlow(connection, target, n);
  const calls = (connection: HttpConnection) => oneUnauthorized(connection);
  await runWindow(HOST, server.port, 4, 1, flow, false);
  const unauthorizedRun = runWindow(HOST, server.port, OVERLOAD_CONNECTIONS, 1 + OVERLOAD_SECONDS, calls);
  await sleep(1_000);
  const flows = await runWindow(HOST, server.port, 4, OVERLOAD_SECONDS, flow);
  const unauthorized = await unauthorizedRun;
  return {
    seconds: round(flows.seconds, 1),
    unauthorized: {
      connections: OVERLOAD_CONNECTIONS,
      requests: unauthorized.ops,
      requestsPerSec: round(unauthorized.ops / unauthorized.seconds),
      errors: unauthorized.errors,
      errorSamples: unauthorized.errorSamples,
      latencyMs: distribution(unauthorized.latencies),
    },
    flowsBeside: {
      clients: 4,
      flows: flows.ops,
      flowsPerSec: round(flows.ops / flows.seconds, 1),
      errors: flows.errors,
      errorSamples: flows.errorSamples,
      flowMs: distribution(flows.latencies),
    },
  };
}

// ─── Malformed bodies and framings ───────────────────────────────────────────────────────────────
// Each case goes to every POST endpoint on a connection of its own, all at once. Node's parser answers
// the framing errors (400, 431); server.ts answers the rest. A body shorter than its Content-Length is
// answered 408 when the 10 s request timeout passes. "cut": the connection closed without an answer.

const POST_PATHS = ["/token", "/register", "/authorize", "/mcp"];
const JSON_TYPE = "application/json";
const FORM_TYPE = "application/x-www-form-urlencoded";

interface Malformed {
  name: string;
  type?: string; // the Content-Type sent, if any
  body: Buffer;
  /** The head's framing lines; default a true Content-Length. */
  framing?: (body: Buffer) => string;
}

const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
const MALFORMED: Malformed[] = [
  { name: "truncated JSON", type: JSON_TYPE, body: Buffer.from('{"jsonrpc":"2.0","id":1,"method":') },
  { name: "JSON null", type: JSON_TYPE, body: Buffer.from("null") },
  { name: "JSON string", type: JSON_TYPE, body: Buffer.from('"tools/call"') },
  {
    name: "a JSON-RPC batch of 500 calls",
    type: JSON_TYPE,
    body: Buffer.from(
      JSON.stringify(Array.from({ length: 500 }, (_, id) => ({ ...JSON.parse(UNAUTHORIZED_CALL), id }))),
    ),
  },
  { name: "JSON nested 30,000 deep", type: JSON_TYPE, body: Buffer.from(nested(30_000)) },
  {
    name: "a lone surrogate escape",
    type: JSON_TYPE,
    body: Buffer.from('{"jsonrpc":"2.0","id":"\\ud800","method":1}'),
  },
  { name: "invalid UTF-8", type: JSON_TYPE, body: Buffer.from([0x7b, 0xff, 0xfe, 0xc3, 0x28, 0x7d]) },
  { name: "NUL bytes", type: FORM_TYPE, body: Buffer.from("grant_type=\0\0&code=\0") },
  {
    name: "random bytes",
    type: FORM_TYPE,
    body: Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
  },
  { name: "bad percent escapes", type: FORM_TYPE, body: Buffer.from("grant_type=%zz&code=%&client_id=%E0%A4%A") },
  { name: "one parameter 5,000 times", type: FORM_TYPE, body: Buffer.from("grant_type=x&".repeat(5000)) },
  {
    name: "__proto__ and constructor keys",
    type: JSON_TYPE,
    body: Buffer.from('{"__proto__":{"polluted":1},"constructor":{"prototype":{"x":1}},"jsonrpc":"2.0","id":1}'),
  },
  { name: "numbers out of range", type: JSON_TYPE, body: Buffer.from('{"jsonrpc":"2.0","id":1e400,"method":"ping"}') },
  { name: "JSON sent as text/plain", type: "text/plain", body: Buffer.from(UNAUTHORIZED_CALL) },
  { name: "no Content-Type", body: Buffer.from(UNAUTHORIZED_CALL) },
  { name: "a Content-Type of 2 KiB", type: `${JSON_TYPE}; x=${"a".repeat(2048)}`, body: Buffer.from("{}") },
  { name: "100 KiB body (over the 64 KiB limit)", type: JSON_TYPE, body: Buffer.alloc(100 * 1024, " ") },
  { name: "9 MiB body (past the 8 MiB read-and-drop)", type: FORM_TYPE, body: Buffer.alloc(9 * 1024 * 1024, "a") },
  {
    name: "Content-Length longer than the body",
    type: JSON_TYPE,
    body: Buffer.from("{}"),
    framing: () => "Content-Length: 100",
  },
  {
    name: "Content-Length shorter than the body",
    type: JSON_TYPE,
    body: Buffer.from("{}GARBAGE / HTTP/1.1\r\n\r\n"),
    framing: () => "Content-Length: 2",
  },
  {
    name: "two different Content-Lengths",
    type: JSON_TYPE,
    body: Buffer.from("{}"),
    framing: () => "Content-Length: 2\r\nContent-Length: 3",
  },
  {
    name: "Content-Length and chunked together",
    type: JSON_TYPE,
    body: Buffer.from("2\r\n{}\r\n0\r\n\r\n"),
    framing: (body) => `Content-Length: ${body.length}\r\nTransfer-Encoding: chunked`,
  },
  {
    name: "a bad chunk size",
    type: JSON_TYPE,
    body: Buffer.from("zz\r\n{}\r\n0\r\n\r\n"),
    framing: () => "Transfer-Encoding: chunked",
  },
  {
    name: "a negative Content-Length",
    type: JSON_TYPE,
    body: Buffer.from("{}"),
    framing: () => "Content-Length: -2",
  },
  {
    name: "headers over 16 KiB",
    type: JSON_TYPE,
    body: Buffer.from("{}"),
    framing: (body) => `Content-Length: ${body.length}\r\nX-Padding: ${"p".repeat(20 * 1024)}`,
  },
];

/** Sends one malformed request on a fresh connection; resolves with the answer's status, or "cut". */
function sendMalformed(port: number, requestPath: string, malformed: Malformed): Promise<number | "cut"> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    let received = "";
    const framing = malformed.framing?.(malformed.body) ?? `Content-Length: ${malformed.body.length}`;
    const type = malformed.type === undefined ? "" : `Content-Type: ${malformed.type}\r\n`;
    const head = `POST ${requestPath} HTTP/1.1\r\nHost: ${HOST}:${port}\r\n${type}${framing}\r\n` +
      `Accept: application/json, text/event-stream\r\nConnection: close\r\n\r\n`;
    const timer = setTimeout(() => socket.destroy(), 30_000);
    socket.on("connect", () => socket.write(Buffer.concat([Buffer.from(head), malformed.body])));
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1", 0, Math.min(chunk.length, 64));
      const status = /^HTTP\/1\.1 (\d{3})/.exec(received)?.[1];
      if (status) {
        clearTimeout(timer);
        socket.destroy();
        resolve(Number(status));
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve("cut");
    });
  });
}

async function malformedScenario(target: FlowTarget & { server: Server }) {
  const { server } = target;
  const errorLinesBefore = (server.output().match(/^\[error\]/gm) ?? []).length;
  const cases = await Promise.all(MALFORMED.map(async (malformed) => {
    const answers: Record<string, number | "cut"> = {};
    await Promise.all(POST_PATHS.map(async (requestPath) => {
      answers[requestPath] = await sendMalformed(server.port, requestPath, malformed);
    }));
    return { name: malformed.name, answers };
  }));
  const all = cases.flatMap((item) => Object.values(item.answers));
  const byStatus: Record<string, number> = {};
  for (const answer of all) byStatus[String(answer)] = (byStatus[String(answer)] ?? 0) + 1;
  const connection = new HttpConnection(HOST, server.port);
  const flowAfter = await oneFlow(connection, target, 0).then(() => "completed", (error: Error) => error.message);
  connection.close();
  return {
    requests: all.length,
    byStatus,
    serverErrors5xx: all.filter((answer) => typeof answer === "number" && answer >= 500).length,
    errorLines: (server.output().match(/^\[error\]/gm) ?? []).length - errorLinesBefore,
    processAlive: server.child.exitCode === null && server.child.signalCode === null,
    flowAfter,
    cases,
  };
}

// ─── Run ─────────────────────────────────────────────────────────────────────────────────────────

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    somaxconn: readProc("/proc/sys/net/core/somaxconn"),
    tcpMaxSynBacklog: readProc("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
    tcpSyncookies: readProc("/proc/sys/net/ipv4/tcp_syncookies"),
    openFiles: /Max open files\s+(\d+)/.exec(readProc("/proc/self/limits"))?.[1] ?? "unknown", // 2,000 a side
  },
  settings: { runs: RUNS, burstSeconds: BURST_SECONDS, soakSeconds: SOAK_SECONDS, overloadSeconds: OVERLOAD_SECONDS },
};

const metadata = await startClientMetadata();
try {
  if (wanted("burst")) results.burst = await burstScenario();
  if (wanted("soak") || wanted("overload") || wanted("malformed")) {
    const server = await startTarget("server.ts (backlog 4096)");
    const target: FlowTarget = {
      host: HOST,
      port: server.port,
      scope: "mcp",
      consent: "form",
      clientId: metadata.clientId,
    };
    try {
      if (wanted("soak")) {
        log(`soak: 8 clients, ${SOAK_SECONDS} s`);
        const eight = await soak(server, target, 8);
        log(`soak: 32 clients, ${SOAK_SECONDS} s`);
        results.soak = [eight, await soak(server, target, 32)];
      }
      if (wanted("overload")) {
        log(`overload: ${OVERLOAD_CONNECTIONS} connections on the 401 path, 4 flow clients, ${OVERLOAD_SECONDS} s`);
        results.overload = await withOtherLoad(server, () => overload(server, target));
      }
      if (wanted("malformed")) {
        log(`malformed: ${MALFORMED.length} cases × ${POST_PATHS.length} endpoints`);
        results.malformed = await malformedScenario({ ...target, server });
      }
      results.serverErrorLines = (server.output().match(/^\[error\].*$/gm) ?? []).slice(0, 20);
    } finally {
      await stopTarget(server);
    }
  }
} finally {
  metadata.close();
}

const out = outAt >= 0
  ? path.resolve(argv[outAt + 1])
  : path.join(BENCH_DIR, "results", `overload-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
printSummary();
log(`results written to ${path.relative(ROOT, out)}`);

// ─── Small helpers ───────────────────────────────────────────────────────────────────────────────

interface Distribution {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function distribution(values: number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => round(percentile(sorted, p), 1);
  return { p50: at(50), p90: at(90), p99: at(99), max: round(sorted[sorted.length - 1] ?? NaN, 1) };
}

function round(value: number, digits = 0): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function rotated<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function readProc(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    return "unknown";
  }
}

function printSummary() {
  const lines: string[] = [];
  type Run = { oneRequestEach: BurstResult; busy: BurstResult; otherLoadCores: number };
  const burstRuns = results.burst as Record<string, Run[]> | undefined;
  for (const [label, runs] of Object.entries(burstRuns ?? {})) {
    lines.push(`burst, ${label}:`);
    for (const run of runs) {
      for (const [name, figures] of [["one request each", run.oneRequestEach], ["busy", run.busy]] as const) {
        lines.push(
          `  ${name}: connect p50/p99/max ${figures.connectMs.p50}/${figures.connectMs.p99}/` +
            `${figures.connectMs.max} ms, ` +
            `${figures.connectsOver1s} over 1 s; first answer p50/p99/max ${figures.firstAnswerMs.p50}/` +
            `${figures.firstAnswerMs.p99}/${figures.firstAnswerMs.max} ms; ${figures.neverAnswered} never answered; ` +
            `${figures.requests} requests, ${figures.requestsOver2s} over 2 s, ${figures.wrongAnswers} wrong; ` +
            `socket errors ${JSON.stringify(figures.socketErrors)}; kernel ${JSON.stringify(figures.kernel)}`,
        );
      }
      lines.push(`  other load ${run.otherLoadCores} cores`);
    }
  }
  lines.push(JSON.stringify({ soak: results.soak, overload: results.overload }, null, 1));
  const malformed = results.malformed as { requests: number; byStatus: unknown; serverErrors5xx: number } | undefined;
  if (malformed) lines.push(`malformed: ${malformed.requests} requests → ${JSON.stringify(malformed.byStatus)}`);
  process.stdout.write(`${lines.join("\n")}\n`);
}
