// Load loops for the benchmark: the full lazy-auth flow and the unauthenticated (401) call.

import crypto from "node:crypto";
import { HttpConnection, type HttpResponse } from "./http-client.ts";

export interface FlowTarget {
  host: string;
  port: number;
  /** scope value the server under test grants (each server names its scope differently) */
  scope: string;
}

export interface WindowResult {
  ops: number;
  errors: number;
  errorSamples: string[];
  seconds: number;
  /** per-op latency in milliseconds, unsorted */
  latencies: number[];
}

// A loopback client: a Client ID Metadata Document URL on loopback, with a loopback
// redirect URI. Both servers accept it (neither fetches the document).
export const CLIENT_ID = "http://127.0.0.1/bench/client-metadata.json";
export const REDIRECT_URI = "http://127.0.0.1/bench/callback";

interface Pkce {
  verifier: string;
  challenge: string;
}

// PKCE pairs are prepared up front so the load generator spends its CPU on requests,
// not on hashing; the servers still verify every verifier.
const PKCE_POOL: Pkce[] = Array.from({ length: 512 }, () => {
  const verifier = crypto.randomBytes(32).toString("base64url");
  return { verifier, challenge: crypto.createHash("sha256").update(verifier).digest("base64url") };
});

const enc = encodeURIComponent;

const TOOL_CALL = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "tools/call",
  params: { name: "get_secret", arguments: {} },
});

const MCP_HEADERS = {
  "Content-Type": "application/json",
  Accept: "application/json, text/event-stream",
  "MCP-Protocol-Version": "2025-11-25",
};

/** The fields of a JSON-RPC answer that the load checks read. */
export interface JsonRpcAnswer {
  id?: unknown;
  result?: { isError?: boolean; content?: unknown };
}

/** The JSON-RPC message of an MCP answer, sent either as plain JSON or as one SSE event. */
export function jsonRpcMessage(res: HttpResponse): JsonRpcAnswer {
  const type = res.headers["content-type"] ?? "";
  if (type.startsWith("text/event-stream")) {
    for (const line of res.body.split("\n")) if (line.startsWith("data:")) return JSON.parse(line.slice(5));
    throw new Error("SSE answer without a data line");
  }
  return JSON.parse(res.body);
}

function expect(cond: unknown, what: string, res: HttpResponse): asserts cond {
  if (!cond) throw new Error(`${what}: HTTP ${res.status} ${res.body.slice(0, 160)}`);
}

/**
 * One lazy-auth flow as a client performs it after the 401 challenge:
 * approve at /authorize (code from Location) → redeem at /token with the PKCE verifier →
 * call the protected tool with the Bearer token. Every answer is checked.
 */
export async function oneFlow(conn: HttpConnection, t: FlowTarget, n: number): Promise<void> {
  const pk = PKCE_POOL[n % PKCE_POOL.length];
  const base = `http://${t.host}:${t.port}`;
  const resource = `${base}/mcp`;
  const state = `st${n}`;
  const authorize = `/authorize?response_type=code&client_id=${enc(CLIENT_ID)}&redirect_uri=${enc(REDIRECT_URI)}` +
    `&code_challenge=${pk.challenge}&code_challenge_method=S256&state=${state}` +
    `&scope=${enc(t.scope)}&resource=${enc(resource)}&approved=1`;
  const r1 = await conn.request("GET", authorize);
  expect(r1.status === 302 && r1.headers["location"], "authorize", r1);
  const loc = new URL(r1.headers["location"]);
  const code = loc.searchParams.get("code");
  expect(code && loc.searchParams.get("state") === state, "authorize redirect", r1);

  const form = `grant_type=authorization_code&code=${enc(code)}&code_verifier=${pk.verifier}` +
    `&client_id=${enc(CLIENT_ID)}&redirect_uri=${enc(REDIRECT_URI)}&resource=${enc(resource)}`;
  const r2 = await conn.request("POST", "/token", { "Content-Type": "application/x-www-form-urlencoded" }, form);
  expect(r2.status === 200, "token", r2);
  const tok = JSON.parse(r2.body);
  expect(typeof tok.access_token === "string" && tok.access_token.length > 0, "token body", r2);

  const r3 = await conn.request(
    "POST",
    "/mcp",
    { ...MCP_HEADERS, Authorization: `Bearer ${tok.access_token}` },
    TOOL_CALL,
  );
  expect(r3.status === 200, "tools/call get_secret", r3);
  const msg = jsonRpcMessage(r3);
  expect(
    msg.id === 1 && msg.result && !msg.result.isError && Array.isArray(msg.result.content),
    "get_secret result",
    r3,
  );
}

/** The protected tool called with no token: the server must challenge with 401 + WWW-Authenticate. */
export async function oneUnauthorized(conn: HttpConnection): Promise<void> {
  const r = await conn.request("POST", "/mcp", MCP_HEADERS, TOOL_CALL);
  expect(r.status === 401 && /^Bearer /.test(r.headers["www-authenticate"] ?? ""), "401 challenge", r);
}

/**
 * Runs `op` in `concurrency` loops, each on its own keep-alive connection, for `seconds`.
 * A failed op closes its connection (a fresh one is opened) and counts as an error.
 */
export async function runWindow(
  host: string,
  port: number,
  concurrency: number,
  seconds: number,
  op: (conn: HttpConnection, n: number) => Promise<void>,
  recordLatency = true,
): Promise<WindowResult> {
  const res: WindowResult = { ops: 0, errors: 0, errorSamples: [], seconds: 0, latencies: [] };
  let counter = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async () => {
    let conn = new HttpConnection(host, port);
    while (performance.now() < deadline) {
      const n = counter++;
      const s = performance.now();
      try {
        await op(conn, n);
        res.ops++;
        if (recordLatency) res.latencies.push(performance.now() - s);
      } catch (e) {
        res.errors++;
        if (res.errorSamples.length < 3) res.errorSamples.push(String((e as Error).message ?? e));
        conn.close();
        conn = new HttpConnection(host, port);
        if (res.errors > 1000) break; // the target is broken; stop hammering it
      }
    }
    conn.close();
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  res.seconds = (performance.now() - t0) / 1000;
  return res;
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
