// Load loops for the benchmark: the full lazy-auth flow and the unauthenticated (401) call.

import crypto from "node:crypto";
import http from "node:http";
import type net from "node:net";
import { HttpConnection, type HttpResponse } from "./http-client.ts";

export interface FlowTarget {
  host: string;
  port: number;
  /** scope value the server under test grants (each server names its scope differently) */
  scope: string;
  /**
   * How the user approves: "form" gets the consent page and POSTs its signed consent token back
   * (this server, and the canned floor with the same two requests); "query" is one GET carrying
   * `approved=1` (the upstream example).
   */
  consent: "form" | "query";
  /** The Client ID Metadata Document URL from startClientMetadata(). */
  clientId: string;
}

export interface WindowResult {
  ops: number;
  errors: number;
  errorSamples: string[];
  seconds: number;
  /** per-op latency in milliseconds, unsorted */
  latencies: number[];
}

// A loopback client: a Client ID Metadata Document URL on loopback, with a loopback redirect URI.
// This server fetches the document and keeps it for its Cache-Control max-age (an hour here), so the
// fetch happens once per server process, during warm-up; the upstream accepts the URL unfetched.
export const REDIRECT_URI = "http://127.0.0.1/bench/callback";

/** Serves the client's metadata document on a loopback port; resolves with its URL (the client_id). */
export async function startClientMetadata(): Promise<{ clientId: string; close: () => void }> {
  const server = http.createServer((_request, res) => {
    const document = JSON.stringify({
      client_id: clientId,
      client_name: "lazy-auth bench",
      redirect_uris: [REDIRECT_URI],
      token_endpoint_auth_method: "none",
    });
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "max-age=3600" }).end(document);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const clientId = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/bench/client-metadata.json`;
  server.unref();
  return { clientId, close: () => server.close() };
}

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

/** The user's approval at /authorize, as `consent` says; resolves with the redirect back to the client. */
async function approve(conn: HttpConnection, t: FlowTarget, query: string): Promise<HttpResponse> {
  if (t.consent === "query") {
    const r = await conn.request("GET", `/authorize?${query}&approved=1`);
    expect(r.status === 302, "authorize", r);
    return r;
  }
  const page = await conn.request("GET", `/authorize?${query}`);
  expect(page.status === 200, "consent page", page);
  const consent = /name="consent" value="([^"]*)"/.exec(page.body)?.[1];
  expect(consent, "consent token on the page", page);
  const form = `consent=${enc(consent)}&decision=approve`;
  const r = await conn.request("POST", "/authorize", { "Content-Type": "application/x-www-form-urlencoded" }, form);
  expect(r.status === 303, "approve", r);
  return r;
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
  const query = `response_type=code&client_id=${enc(t.clientId)}&redirect_uri=${enc(REDIRECT_URI)}` +
    `&code_challenge=${pk.challenge}&code_challenge_method=S256&state=${state}` +
    `&scope=${enc(t.scope)}&resource=${enc(resource)}`;
  const r1 = await approve(conn, t, query);
  expect(r1.headers["location"], "authorize redirect", r1);
  const loc = new URL(r1.headers["location"]);
  const code = loc.searchParams.get("code");
  expect(code && loc.searchParams.get("state") === state, "authorize redirect", r1);

  const form = `grant_type=authorization_code&code=${enc(code)}&code_verifier=${pk.verifier}` +
    `&client_id=${enc(t.clientId)}&redirect_uri=${enc(REDIRECT_URI)}&resource=${enc(resource)}`;
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
