// CPU profile of this server under the full-flow load.
//
//   tsx bench/profile.ts [seconds=10] [--401] [--keep] [--no-trace] [--floor] [--top N]
//   tsx bench/profile.ts --from FILE.cpuprofile --ops N [--401]     (analyse a kept profile again)
//
// Starts `node --import tsx --cpu-prof server.ts`, drives the same flow load as the bench
// (16 concurrent clients: consent page → approve → token → protected tools/call), stops the server with
// SIGTERM (it writes the profile on its graceful exit). With --401 the load is the
// unauthenticated protected call at 32 connections instead and prints where its CPU time went:
// self time by function, by origin (server.ts, jose, node internals, GC, ...), and the
// inclusive time of the functions defined in server.ts. With --keep the .cpuprofile is kept
// (load it in Chrome DevTools or any cpuprofile viewer). The request trace is on, as `npm start` runs the
// server, and goes to a pipe this process drains; --no-trace sets LOG_REQUESTS=0. --floor profiles the floor the
// bench sets beside the server instead (floor-servers.mjs: the jose floor, or with --401 the bare 401 responder),
// under the same load: the difference between the two profiles is what server.ts adds.

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { freePort, HttpConnection } from "./http-client.ts";
import { oneFlow, oneUnauthorized, runWindow, startClientMetadata } from "./load.ts";

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH_DIR);
const HOST = "127.0.0.1";
const SECONDS = Number(process.argv[2] && /^\d+(\.\d+)?$/.test(process.argv[2]) ? process.argv[2] : 10);
const KEEP = process.argv.includes("--keep");
const UNAUTH = process.argv.includes("--401");
const NO_TRACE = process.argv.includes("--no-trace");
const TOP_FUNCTIONS = process.argv.includes("--top") ? Number(process.argv[process.argv.indexOf("--top") + 1]) : 30;
const JOSE_FLOOR = process.argv.includes("--floor"); // the floor beside it: the jose floor, or with --401 the bare one

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function origin(url: string, fn: string): string {
  if (!url) {
    if (fn === "(garbage collector)") return "GC";
    if (fn === "(idle)") return "idle";
    if (fn === "(program)") return "V8/native (program)";
    return "native";
  }
  if (url.endsWith("/server.ts")) return "server.ts";
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith("node:")) {
    const sub = url.slice(5).split("/")[1] ?? url.slice(5);
    return `node:${sub.startsWith("internal") ? url.slice(5).split("/").slice(0, 2).join("/") : url.slice(5)}`;
  }
  return url;
}

const shortUrl = (url: string) =>
  url.replace(/^file:\/\//, "").replace(ROOT + "/", "").replace(/^.*node_modules\//, "");

// tsx hands V8 whitespace-minified code (esbuild with minifyWhitespace and keepNames), so profile
// positions do not match server.ts. The same transform, with a source map, maps them back; if
// esbuild cannot be loaded, named functions are located by name in the source instead.
const SERVER_FILE = path.join(ROOT, "server.ts");
const serverSource = fs.existsSync(SERVER_FILE) ? fs.readFileSync(SERVER_FILE, "utf8") : "";
const serverLines = serverSource.split("\n");

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** Source-map "mappings" → per generated line, sorted [generatedColumn, originalLine] pairs (0-based). */
function decodeMappings(mappings: string): Array<Array<[number, number]>> {
  const out: Array<Array<[number, number]>> = [];
  let origLine = 0;
  for (const line of mappings.split(";")) {
    const segs: Array<[number, number]> = [];
    let genCol = 0;
    for (const seg of line.split(",")) {
      if (!seg) continue;
      const v: number[] = [];
      let shift = 0;
      let acc = 0;
      for (const ch of seg) {
        const d = B64.indexOf(ch);
        acc += (d & 31) << shift;
        if (d & 32) shift += 5;
        else {
          v.push(acc & 1 ? -(acc >>> 1) : acc >>> 1);
          acc = 0;
          shift = 0;
        }
      }
      genCol += v[0];
      if (v.length >= 4) {
        origLine += v[2];
        segs.push([genCol, origLine]);
      }
    }
    out.push(segs);
  }
  return out;
}

let generatedMap: Array<Array<[number, number]>> | null = null;
try {
  const esbuild = createRequire(pathToFileURL(path.join(ROOT, "node_modules/tsx/package.json")))("esbuild") as {
    transformSync(code: string, options: Record<string, unknown>): { map: string };
  };
  const out = esbuild.transformSync(serverSource, {
    loader: "ts",
    format: "esm",
    minifyWhitespace: true,
    keepNames: true,
    sourcemap: "external",
    sourcefile: "server.ts",
  });
  generatedMap = decodeMappings(JSON.parse(out.map).mappings);
} catch {
  generatedMap = null;
}

/** server.ts line (1-based) of a profile position, via the source map. */
function mappedLine(lineNumber: number, columnNumber: number): number | undefined {
  const segs = generatedMap?.[lineNumber];
  if (!segs?.length) return undefined;
  let best: [number, number] | undefined;
  for (const sgm of segs) {
    if (sgm[0] <= columnNumber) best = sgm;
    else break;
  }
  return (best ?? segs[0])[1] + 1;
}

const lineCache = new Map<string, string>();
function lineByName(name: string): string {
  if (!name) return "?";
  const hit = lineCache.get(name);
  if (hit) return hit;
  const esc = name.replace(/[$]/g, "\\$");
  const patterns = [
    new RegExp(`function\\s+${esc}\\b`),
    new RegExp(`\\b(const|let|var)\\s+${esc}\\s*=`),
    new RegExp(`^\\s*(static\\s+)?(async\\s+)?(get\\s+)?#?${esc}\\s*\\(`),
    new RegExp(`\\b${esc}\\s*[:=]\\s*(async\\s*)?\\(`),
  ];
  let found = "?";
  for (const re of patterns) {
    const i = serverLines.findIndex((l) => re.test(l));
    if (i >= 0) {
      found = String(i + 1);
      break;
    }
  }
  lineCache.set(name, found);
  return found;
}

function serverFrame(cf: CallFrame): string {
  const line = mappedLine(cf.lineNumber, cf.columnNumber);
  if (line !== undefined) {
    const text = (serverLines[line - 1] ?? "").trim().slice(0, 60);
    return `${cf.functionName || "(anonymous)"}  server.ts:${line}${cf.functionName ? "" : `  «${text}»`}`;
  }
  return `${cf.functionName || "(anonymous)"}  server.ts:${cf.functionName ? lineByName(cf.functionName) : "?"}`;
}

function analyse(p: CpuProfile, flows: number, unit: string): string {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  // Start-up (module loading, the tsx loader's compilation) is left out: samples count from the first one taken
  // inside node:http's request handling, the first request the server answered.
  const inRequest = (id: number) => {
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      if (byId.get(cur)!.callFrame.url === "node:_http_server") return true;
    }
    return false;
  };
  const first = Math.max(0, p.samples.findIndex(inRequest));
  const skippedMs = p.timeDeltas.slice(0, first).reduce((a, b) => a + b, 0) / 1000;
  const self = new Map<number, number>(); // µs per node
  for (let i = first; i < p.samples.length; i++) {
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    total += us;
    if (byId.get(id)!.callFrame.functionName === "(idle)") idle += us;
  }
  const busy = total - idle;

  const fnKey = (cf: CallFrame) =>
    cf.url.endsWith("/server.ts")
      ? serverFrame(cf)
      : `${cf.functionName || "(anonymous)"}  ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ""}`;
  const selfByFn = new Map<string, number>();
  const selfByOrigin = new Map<string, number>();
  // inclusive time of server.ts functions: each sample counts once per distinct function on its stack
  const inclusiveServer = new Map<string, number>();
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    if (cf.functionName === "(idle)") continue;
    selfByFn.set(fnKey(cf), (selfByFn.get(fnKey(cf)) ?? 0) + us);
    const o = origin(cf.url, cf.functionName);
    selfByOrigin.set(o, (selfByOrigin.get(o) ?? 0) + us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      if (!f.url.endsWith("/server.ts")) continue;
      const k = fnKey(f);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusiveServer.set(k, (inclusiveServer.get(k) ?? 0) + us);
    }
  }
  const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
  const top = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => `  ${pct(us)}  ${(us / flows).toFixed(1).padStart(7)} µs/${unit}  ${k}`);
  return [
    `profile: ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s wall, ${
      (busy / 1000).toFixed(0)
    } ms on CPU in the main thread ` +
    `= ${(busy / flows).toFixed(0)} µs per ${unit} (idle excluded; % of busy time; the first ${
      skippedMs.toFixed(0)
    } ms, start-up until the first request, left out)`,
    "",
    "self time by origin:",
    ...top(selfByOrigin, 15),
    "",
    `self time by function (top ${TOP_FUNCTIONS}):`,
    ...top(selfByFn, TOP_FUNCTIONS),
    "",
    "inclusive time of server.ts functions (top 20):",
    ...top(inclusiveServer, 20),
  ].join("\n");
}

async function main(): Promise<void> {
  // --from FILE --ops N: analyse a kept profile again (N = flows or requests it covered)
  const from = process.argv.indexOf("--from");
  if (from >= 0) {
    const ops = Number(process.argv[process.argv.indexOf("--ops") + 1]) || 1;
    console.log(
      analyse(
        JSON.parse(fs.readFileSync(process.argv[from + 1], "utf8")) as CpuProfile,
        ops,
        UNAUTH ? "request" : "flow",
      ),
    );
    return;
  }
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lazy-auth-prof-"));
  const env: Record<string, string | undefined> = {
    ...process.env,
    PORT: String(port),
    JWT_SECRET: "bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz",
  };
  if (NO_TRACE) env.LOG_REQUESTS = "0";
  else delete env.LOG_REQUESTS; // the request trace on, as `npm start` runs the server
  const program = JOSE_FLOOR
    ? [path.join(BENCH_DIR, "floor-servers.mjs"), UNAUTH ? "401" : "jose", String(port)]
    : ["--import", "tsx", "server.ts"];
  const child = spawn(process.execPath, ["--cpu-prof", `--cpu-prof-dir=${dir}`, ...program], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "inherit"], // the trace goes to a pipe drained here, as to a terminal
  });
  let traceBytes = 0;
  child.stdout!.on("data", (chunk: Buffer) => void (traceBytes += chunk.length));
  const t0 = performance.now();
  for (;;) {
    const c = new HttpConnection(HOST, port);
    try {
      if ((await c.request("GET", "/.well-known/oauth-authorization-server")).status === 200) break;
    } catch {
      /* not up yet */
    } finally {
      c.close();
    }
    if (performance.now() - t0 > 20000) throw new Error("server did not start");
    await new Promise((r) => setTimeout(r, 10));
  }
  const client = await startClientMetadata();
  const target = { host: HOST, port, scope: "mcp", consent: "form" as const, clientId: client.clientId };
  const op = UNAUTH
    ? (conn: HttpConnection) => oneUnauthorized(conn)
    : (conn: HttpConnection, n: number) => oneFlow(conn, target, n);
  const w = await runWindow(HOST, port, UNAUTH ? 32 : 16, SECONDS, op, false);
  process.stderr.write(
    `profile: ${w.ops} ${UNAUTH ? "401 answers" : "flows"} in ${w.seconds.toFixed(1)} s, ${w.errors} errors${
      w.errors ? ` (${w.errorSamples[0]})` : ""
    }; request trace ${NO_TRACE ? "off" : `on: ${traceBytes} bytes`}\n`,
  );
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
  // one profile per thread: the main thread's has thread id 0 (the tsx loader's hooks thread is another)
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).sort();
  const file = files.find((f) => /\.0\.\d+\.cpuprofile$/.test(f)) ?? files[0];
  if (!file) throw new Error("no .cpuprofile written (did the server exit gracefully?)");
  const profile = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as CpuProfile;
  console.log(analyse(profile, w.ops, UNAUTH ? "request" : "flow"));
  if (KEEP) console.log(`\nprofile kept: ${path.join(dir, file)}`);
  else fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
