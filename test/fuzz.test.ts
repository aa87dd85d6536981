/**
 * Property-based robustness tests (fast-check): well over ten thousand generated requests per run —
 * odd methods, paths, query strings, headers, bodies and tokens, plus near-valid requests with one field
 * broken — against every endpoint. Whatever arrives, the server must:
 *   - never answer 5xx; send the CORS headers on every answer but /authorize's, and none on those;
 *   - refuse (403) any Host that is neither loopback nor the public URL's;
 *   - answer in the documented shape: JSON {error, error_description} off /mcp (besides the landing text,
 *     the metadata, the consent page, the consent form's 303 redirects and token answers), JSON-RPC on
 *     /mcp, 202 with no body for notifications, 204 for preflights;
 *   - never leak a stack trace;
 *   - never accept a broken credential or a broken authorization/consent/token request, never approve on
 *     a GET or a cross-origin POST, and never redirect to a URI the client did not ask for;
 *   - keep serving: a full sign-in works afterwards, with no unhandled rejection in the process.
 *
 * Runs under Node (tsx --test) and Deno (deno test -A). FUZZ_SEED=<n> replays a run (fast-check prints
 * the seed of a failing property), FUZZ_SHRINK=1 shrinks the counterexample, FUZZ_SCALE=<k> runs k times longer.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Agent, request } from "node:http";
import { connect } from "node:net";
import { createHash, createHmac, randomBytes } from "node:crypto";
import process from "node:process";
import fc from "fast-check";
import { type RunningServer, startServer } from "../server.ts";
import { clientDocuments, consentForm } from "./helpers.ts";

// ─── Process-level watch: nothing may escape the server's own error handling ──────────────────────

const escaped: unknown[] = [];
process.on("unhandledRejection", (reason) => void escaped.push(reason));
process.on("uncaughtException", (error) => void escaped.push(error));

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined; // FUZZ_SHRINK=1 shrinks failures
const SCALE = Number(process.env.FUZZ_SCALE ?? 1) || 1; // FUZZ_SCALE=10: ten times the runs, for a longer hunt
const BATCH = 24; // requests in flight at once
const MIN_REQUESTS = 10_000;
const JWT_SECRET = randomBytes(32).toString("hex");
const KEY = new TextEncoder().encode(JWT_SECRET);
const REDIRECT_URI = "http://127.0.0.1:9/cb";
const MODERN = "2026-07-28";
const FORM = "application/x-www-form-urlencoded";
const META_VERSION = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";
const XSS = [`"><script>alert(1)</script>`, `'><img src=x onerror=alert(1)>`, `</dd><b>bold</b>`];
const XSS_MARKERS = ["<script>alert", "<img src=x", "<b>bold</b>"];
// C0 controls, DEL, line separators and bidi controls: a client_name holding one is refused
// deno-lint-ignore no-control-regex -- finding control characters is the point
const UNSAFE_IN_NAME = /[\u0000-\u001f\u007f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

// ─── Requests and answers ────────────────────────────────────────────────────────────────────────

/**
 * Of an Authorization header: "accept", the server must honour it (while its session lives); "reject", it
 * must refuse it; "maybe", either is fine (a look-alike the RFCs leave open); "none", no header sent.
 */
type Verdict = "none" | "reject" | "maybe" | "accept";
const mayPass = (verdict: Verdict) => verdict === "accept" || verdict === "maybe";

interface Probe {
  client: "fetch" | "http";
  method: string;
  path: string; // path and query, as sent
  headers: Record<string, string>;
  body?: string | Uint8Array;
  note: string; // what the generator meant, for failure messages
  verdict: Verdict; // of the Authorization header
  mustFail?: boolean; // a near-valid request with a field broken so that it must be refused
  json?: Record<string, unknown>; // the JSON the body holds, when known exactly
  slot?: string; // which single-use credential a near-valid /token request spends
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

let server: RunningServer;
let base: string;
let agent: Agent;
let sent = 0;

/** fast-check prints counterexamples; keep them to one readable line instead of 60 KiB bodies. */
function probe(p: Probe): Probe {
  const summary = () => {
    const body = p.body === undefined ? "" : typeof p.body === "string" ? p.body : `<${p.body.length} bytes>`;
    const shown = body.length > 300 ? `${body.slice(0, 300)}…(${body.length} chars)` : body;
    return `${p.client} ${p.method} ${p.path.slice(0, 300)} ${JSON.stringify(p.headers).slice(0, 600)} ${
      JSON.stringify(shown)
    } [${p.note}]`;
  };
  return Object.assign(p, { [fc.toStringMethod]: summary, toString: summary });
}

async function viaFetch(p: Probe): Promise<Reply> {
  const noBody = p.method === "GET" || p.method === "HEAD";
  const res = await fetch(`${base}${p.path}`, {
    method: p.method,
    headers: p.headers,
    body: noBody ? undefined : (p.body as string | undefined),
    redirect: "manual",
  });
  const headers: Record<string, string> = {};
  res.headers.forEach((value, name) => void (headers[name] = value));
  return { status: res.status, headers, body: await res.text() };
}

function viaHttp(p: Probe, options: { agent?: Agent | false } = {}): Promise<Reply> {
  const url = new URL(base);
  const headers = { ...p.headers };
  // node:http frames a GET/OPTIONS/DELETE body with neither Content-Length nor chunking: say the length.
  if (
    p.body !== undefined && !Object.keys(headers).some((name) => /^(content-length|transfer-encoding)$/i.test(name))
  ) {
    headers["content-length"] = String(typeof p.body === "string" ? Buffer.byteLength(p.body) : p.body.length);
  }
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(
      { host: url.hostname, port: url.port, method: p.method, path: p.path, headers, agent: options.agent ?? agent },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => void chunks.push(chunk));
        res.on("end", () => {
          const headers: Record<string, string> = {};
          for (const [name, value] of Object.entries(res.headers)) {
            if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
          }
          resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks).toString("utf8") });
        });
        res.on("error", reject);
      },
    );
    const timer = setTimeout(() => req.destroy(new Error("no answer within 15 s")), 15_000);
    req.on("error", reject);
    // An answer to CONNECT is a tunnel to node:http, which then closes it without 'response' or 'error'.
    req.on("close", () => {
      clearTimeout(timer);
      if (!answered) reject(new Error("connection closed without an answer"));
    });
    req.end(p.body);
  });
}

function send(p: Probe): Promise<Reply> {
  sent++;
  return p.client === "fetch" ? viaFetch(p) : viaHttp(p);
}

/** Sends a batch at once and checks every answer; the error names the request that broke a property. */
async function runBatch(
  probes: Probe[],
  check: (p: Probe, r: Reply) => void,
  after?: (pairs: [Probe, Reply][]) => void,
) {
  const outcomes = await Promise.all(probes.map((p) => send(p).then((r) => ({ r }), (error: unknown) => ({ error }))));
  const pairs: [Probe, Reply][] = [];
  probes.forEach((p, i) => {
    const outcome = outcomes[i];
    if ("error" in outcome) throw new Error(`no answer (${String(outcome.error)}) to ${String(p)}`);
    try {
      if (hostRefused(p)) checkRefusedHost(p, outcome.r); // refused before any route: no route's rules apply
      else {
        checkCommon(p, outcome.r);
        check(p, outcome.r);
      }
    } catch (error) {
      const r = outcome.r;
      throw new Error(
        `${(error as Error).message}\n  request: ${String(p)}\n  answer:  ${r.status} ${JSON.stringify(r.headers)} ${
          r.body.slice(0, 500)
        }`,
      );
    }
    pairs.push([p, outcome.r]);
  });
  after?.(pairs);
}

/** Which client sends a request: mostly node:http (fast), a quarter fetch (undici in Node: slower, browser-like). */
const viaHttpArb = fc.nat({ max: 3 }).map((n) => n > 0);
const batchOf = (arb: fc.Arbitrary<Probe>, size = BATCH) => fc.array(arb, { minLength: size, maxLength: size });
// Every failure message already names the offending request, so shrinking (many more batches) is opt-in.
const runs = (numRuns: number) => ({
  numRuns: Math.ceil(numRuns * SCALE),
  seed: SEED,
  endOnFailure: !process.env.FUZZ_SHRINK,
});

// ─── The oracle every answer must satisfy ────────────────────────────────────────────────────────

const ROUTES: Record<string, string> = {
  "/": "GET",
  "/.well-known/oauth-authorization-server": "GET",
  "/.well-known/oauth-protected-resource": "GET",
  "/.well-known/oauth-protected-resource/mcp": "GET",
  "/authorize": "GET, POST",
  "/token": "POST",
  "/register": "POST",
  "/mcp": "POST",
};

/** The path the server routes on: fetch normalizes the URL first; node:http sends it verbatim. */
function routedPath(p: Probe): string {
  const target = p.client === "fetch"
    ? (() => {
      const u = new URL(`${base}${p.path}`);
      return u.pathname + u.search;
    })()
    : p.path;
  const split = target.indexOf("?");
  return split === -1 ? target : target.slice(0, split);
}

function assertNoStackTrace(body: string) {
  assert.doesNotMatch(body, /node:internal|node_modules|file:\/\//, "a stack frame or module path leaked");
  assert.doesNotMatch(body, /\(?\/[^\s()"]+\.[cm]?[jt]s:\d+(:\d+)?\)?/, "a source location leaked");
  assert.doesNotMatch(body, /\n\s+at \S/, "stack lines leaked");
  assert.doesNotMatch(body, /\b[A-Z][A-Za-z]*Error: /, "an exception message leaked");
  assert.doesNotMatch(
    body,
    /Maximum call stack|Cannot read propert|is not a function|undefined is not/,
    "an exception message leaked",
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseJsonBody(r: Reply): unknown {
  assert.match(r.headers["content-type"] ?? "", /^application\/json\b/i, "JSON answers say application/json");
  try {
    return JSON.parse(r.body);
  } catch {
    assert.fail("the body is not JSON");
  }
}

/** node:http upper-cases the method it sends. */
const sentMethod = (p: Probe) => (p.client === "http" ? p.method.toUpperCase() : p.method);

/**
 * The Host header values the server serves: loopback (localhost, a dotted 127.x.y.z with octets up to
 * 255, [::1]) with an optional port from 1 to 65535. This server has no PUBLIC_URL, so nothing else.
 */
function isServedHost(host: string): boolean {
  const match = /^(localhost|127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})|\[::1\])(?::(\d{1,5}))?$/.exec(host);
  if (!match) return false;
  const octets = [match[2], match[3], match[4]].filter((octet) => octet !== undefined).map(Number);
  const port = match[5] === undefined ? 1 : Number(match[5]);
  return octets.every((octet) => octet <= 255) && port >= 1 && port <= 65535;
}

/** Whether the probe names a Host the server must refuse (without one, or with "", node:http sends the real one). */
function hostRefused(p: Probe): boolean {
  const host = Object.entries(p.headers).find(([name]) => name.toLowerCase() === "host")?.[1];
  return host !== undefined && host !== "" && !isServedHost(host);
}

/** DNS rebinding: a foreign Host is refused with 403 before routing — JSON-RPC on /mcp, OAuth JSON elsewhere. */
function checkRefusedHost(probe: Probe, r: Reply) {
  const p = { ...probe, method: sentMethod(probe) };
  assert.ok(r.status < 500, `status ${r.status}: never a 5xx`);
  assertNoStackTrace(r.body);
  if (p.method === "OPTIONS" && r.status === 204) return; // a preflight grants nothing by itself
  assert.equal(r.status, 403, "a Host that is neither loopback nor the public URL's is refused");
  if (p.method === "HEAD") return;
  const answer = parseJsonBody(r);
  assert.ok(isObject(answer));
  if (routedPath(p) === "/mcp") {
    assert.equal(answer.jsonrpc, "2.0");
    assert.equal(isObject(answer.error) && answer.error.code, -32000, "a JSON-RPC error on /mcp");
  } else assert.equal(answer.error, "invalid_request");
}

function checkCommon(probe: Probe, r: Reply) {
  const p = { ...probe, method: sentMethod(probe) };
  assert.ok(r.status >= 200 && r.status < 500, `status ${r.status}: never a 5xx (nor 1xx)`);
  assertNoStackTrace(r.body);
  const path = routedPath(p);
  if (path === "/authorize" || path === "/elicitation-callback") {
    // Pages for a person: another origin must not read the consent page (its token), the answers to its form,
    // or the elicitation callback.
    assert.equal(r.headers["access-control-allow-origin"], undefined, `no CORS on a ${path} answer`);
    if (p.method === "OPTIONS") {
      return assert.ok([204, 405].includes(r.status), `a preflight of ${path}: ${r.status}`);
    }
  } else {
    assert.equal(r.headers["access-control-allow-origin"], "*", "CORS Access-Control-Allow-Origin on every answer");
    assert.match(
      r.headers["access-control-expose-headers"] ?? "",
      /www-authenticate/i,
      "CORS exposes WWW-Authenticate",
    );
  }
  if (p.method === "OPTIONS") {
    assert.equal(r.status, 204, "a preflight is answered 204");
    assert.equal(r.body, "");
    assert.match(r.headers["access-control-allow-methods"] ?? "", /POST/);
    for (const name of ["authorization", "content-type", "mcp-protocol-version"]) {
      assert.match(r.headers["access-control-allow-headers"] ?? "", new RegExp(name, "i"));
    }
    return;
  }
  if (p.method === "HEAD") {
    assert.equal(r.body, "", "HEAD answers carry no body");
    assert.equal(r.status, Object.hasOwn(ROUTES, path) ? 405 : 404, "nothing answers HEAD");
    return;
  }
  if (path === "/mcp") checkMcpShape(p, r);
  else checkOAuthShape(p, path, r);
}

/** Off /mcp: the landing text, metadata, consent page, redirects and grants — or {error, error_description}. */
function checkOAuthShape(p: Probe, path: string, r: Reply) {
  const route = Object.hasOwn(ROUTES, path) ? ROUTES[path] : undefined;
  if (path === "/token" && p.method === "POST" && r.status !== 413) {
    assert.equal(r.headers["cache-control"], "no-store", "every /token answer is Cache-Control: no-store");
  }
  if (r.status === 200 && p.method === "GET" && path === "/") {
    assert.match(r.headers["content-type"] ?? "", /^text\/plain/);
    return;
  }
  if (r.status === 200 && p.method === "GET" && path.startsWith("/.well-known/")) {
    const doc = parseJsonBody(r);
    assert.ok(isObject(doc));
    if (path === "/.well-known/oauth-authorization-server") {
      assert.equal(typeof doc.issuer, "string");
      for (const name of ["authorization_endpoint", "token_endpoint", "registration_endpoint"]) {
        assert.ok(String(doc[name]).startsWith(String(doc.issuer)), `${name} lives under the issuer`);
      }
      assert.deepEqual(doc.code_challenge_methods_supported, ["S256"]);
    } else {
      assert.ok(String(doc.resource).endsWith("/mcp"));
      assert.ok(Array.isArray(doc.authorization_servers));
    }
    return;
  }
  if (r.status === 200 && p.method === "GET" && path === "/authorize") {
    assert.match(r.headers["content-type"] ?? "", /^text\/html/);
    assert.equal(r.headers["cache-control"], "no-store", "the consent page is not cached");
    assert.equal(r.headers["x-frame-options"], "DENY", "the consent page refuses framing");
    assert.equal(r.headers.location, undefined, "a GET never redirects back: it only asks");
    assert.ok((r.body.match(/<script/gi) ?? []).length <= 1, "at most the page's own script");
    for (const marker of XSS_MARKERS) assert.ok(!r.body.includes(marker), `echoed input is HTML-escaped (${marker})`);
    return;
  }
  if (r.status === 303 && p.method === "POST" && path === "/authorize") {
    const location = r.headers.location ?? "";
    assert.ok(URL.canParse(location), "a redirect goes to an absolute URL");
    return;
  }
  if (r.status === 200 && p.method === "POST" && path === "/token") {
    const grant = parseJsonBody(r);
    assert.ok(isObject(grant));
    assert.equal(typeof grant.access_token, "string");
    assert.equal(typeof grant.refresh_token, "string");
    assert.equal(grant.token_type, "Bearer");
    assert.equal(typeof grant.expires_in, "number");
    return;
  }
  if (r.status === 201 && p.method === "POST" && path === "/register") {
    const client = parseJsonBody(r);
    assert.ok(isObject(client));
    assert.equal(typeof client.client_id, "string");
    assert.equal(client.token_endpoint_auth_method, "none");
    return;
  }
  assert.ok(r.status >= 400, `status ${r.status} is not one ${p.method} ${path} answers with`);
  const error = parseJsonBody(r);
  assert.ok(isObject(error), "an error is a JSON object");
  assert.equal(typeof error.error, "string", "error is a string");
  assert.equal(typeof error.error_description, "string", "error_description is a string");
  if (r.status === 404) assert.equal(route, undefined, "404 only for paths nothing serves");
  if (r.status === 405) {
    assert.notEqual(route, undefined);
    assert.equal(r.headers.allow, route, "405 names the method in Allow");
  }
}

/** On /mcp: 202 with no body, or one JSON-RPC answer: {jsonrpc:"2.0", id, result} | {…, error:{code, message}}. */
function checkMcpShape(p: Probe, r: Reply) {
  if (r.status === 202) {
    assert.equal(p.method, "POST");
    assert.equal(r.body, "", "202 carries no body");
    return;
  }
  const message = parseJsonBody(r);
  assert.ok(isObject(message), "a JSON-RPC answer is an object");
  assert.equal(message.jsonrpc, "2.0");
  assert.ok("id" in message, "the answer carries an id");
  assert.ok(
    message.id === null || typeof message.id === "string" || typeof message.id === "number",
    "id is a string, number or null",
  );
  assert.ok(("result" in message) !== ("error" in message), "exactly one of result and error");
  if ("result" in message) {
    assert.equal(r.status, 200, "a result comes with 200");
    assert.ok(isObject(message.result));
  } else {
    assert.ok(isObject(message.error));
    assert.ok(Number.isInteger(message.error.code), "error.code is an integer");
    assert.equal(typeof message.error.message, "string", "error.message is a string");
  }
  const sentId = p.json?.id;
  if ((typeof sentId === "string" || typeof sentId === "number") && message.id !== null) {
    assert.ok(message.id === sentId, `the answer echoes the request id (${JSON.stringify(message.id)})`);
  }
  if (r.status === 405) assert.equal(r.headers.allow, "POST");
  if (r.status === 401) {
    const challenge = r.headers["www-authenticate"] ?? "";
    assert.match(challenge, /^Bearer /, "401 carries a Bearer challenge");
    assert.match(challenge, /resource_metadata="http:\/\/[^"]+\/\.well-known\/oauth-protected-resource\/mcp"/);
    const tokenSent = Object.keys(p.headers).some((name) => name.toLowerCase() === "authorization");
    assert.equal(
      /error="invalid_token"/.test(challenge),
      tokenSent,
      'error="invalid_token" exactly when a token was sent',
    );
  }
  // The lazy-auth promise: a protected tool only ever answers with a credential that may be good.
  const params = isObject(p.json?.params) ? p.json.params : {};
  const protectedCall = p.json?.method === "tools/call" &&
    (params.name === "get_secret" || params.name === "revoke_auth_token");
  if (protectedCall && "result" in message) {
    assert.ok(mayPass(p.verdict), "a protected tool answered without a valid token");
  }
  if (!mayPass(p.verdict)) assert.ok(!r.body.includes(secretMarker), "the secret leaked without a valid token");
}

// ─── Real material: clients, sessions, tokens (some forged with the server's own key) ────────────

let secretMarker = "\u0000never";
let dcrClientId = "";
/** A Client ID Metadata Document on the loopback document server (cached by the server for an hour). */
const cimdClientId = clientDocuments.client("/fuzz-client.json", [REDIRECT_URI], {
  name: XSS[1],
  cacheControl: "max-age=3600",
});
/** A metadata-document URL nothing answers at: every request naming it must be refused (invalid_client). */
const unreachableClientId = "http://127.0.0.1:9/client.json";
const s256 = (verifier: string) => createHash("sha256").update(verifier).digest("base64url");
const newVerifier = () => randomBytes(32).toString("base64url");

interface Session {
  access: string;
  refresh: string;
  code: string;
  clientId: string;
  sid: string;
}

function post(
  path: string,
  body: string,
  contentType: string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return viaHttp({
    client: "http",
    method: "POST",
    path,
    headers: { "content-type": contentType, ...headers },
    body,
    note: "setup",
    verdict: "none",
  });
}

/** The consent page for a valid request: its signed consent token. */
async function consentToken(clientId: string, verifier: string, state?: string): Promise<string> {
  const query = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    code_challenge: s256(verifier),
    code_challenge_method: "S256",
    scope: "mcp",
    resource: `${base}/mcp`,
    ...(state !== undefined && { state }),
  });
  sent++;
  const r = await viaHttp({
    client: "http",
    method: "GET",
    path: `/authorize?${query}`,
    headers: {},
    note: "consent page",
    verdict: "none",
  });
  assert.equal(r.status, 200, `the consent page: ${r.status} ${r.body}`);
  const form = consentForm(r.body, base);
  assert.equal(form.action.href, `${base}/authorize`, "the consent form posts back to /authorize");
  return form.consent;
}

/** The consent page, then its Approve: the code from the 303. */
async function mintCode(clientId: string, verifier: string): Promise<string> {
  const consent = await consentToken(clientId, verifier, "s");
  sent++;
  const r = await post("/authorize", new URLSearchParams({ consent, decision: "approve" }).toString(), FORM);
  assert.equal(r.status, 303, `approving: ${r.status} ${r.body}`);
  const code = new URL(r.headers.location ?? "").searchParams.get("code");
  assert.ok(code);
  return code;
}

async function signIn(clientId = dcrClientId): Promise<Session> {
  const verifier = newVerifier();
  const code = await mintCode(clientId, verifier);
  sent++;
  const r = await post(
    "/token",
    new URLSearchParams({ grant_type: "authorization_code", code, code_verifier: verifier, client_id: clientId })
      .toString(),
    "application/x-www-form-urlencoded",
  );
  assert.equal(r.status, 200, `exchanging a code: ${r.body}`);
  const grant = JSON.parse(r.body) as { access_token: string; refresh_token: string };
  const sid = JSON.parse(Buffer.from(grant.access_token.split(".")[1], "base64url").toString()).sid as string;
  return { access: grant.access_token, refresh: grant.refresh_token, code, clientId, sid };
}

function callTool(name: string, token?: string): Promise<Reply> {
  sent++;
  return post(
    "/mcp",
    JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name, arguments: {} } }),
    "application/json",
    token ? { authorization: `Bearer ${token}` } : {},
  );
}

interface Credential {
  token: string;
  verdict: Verdict;
  note: string;
}
let credentials: Credential[] = [];
let revokedSession: Session;

const b64 = (value: unknown) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** Access-token look-alikes signed with the real key, each broken in exactly one way (or not at all). */
function forgeCredentials(live: Session, revoked: Session): Credential[] {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: base,
    sub: "demo-user",
    aud: `${base}/mcp`,
    client_id: dcrClientId,
    scope: "mcp",
    sid: live.sid,
    jti: "forged",
    // The in-memory store forgets on restart, so tokens carry this process's memory id: read off a real one.
    mem: JSON.parse(Buffer.from(live.access.split(".")[1], "base64url").toString()).mem,
  };
  const forge = (
    note: string,
    verdict: Verdict,
    change: { header?: Record<string, unknown>; claims?: Record<string, unknown>; key?: Uint8Array; drop?: string[] } =
      {},
  ) => {
    const body: Record<string, unknown> = { ...claims, iat: now, exp: now + 60, ...change.claims };
    for (const name of change.drop ?? []) delete body[name];
    const header: Record<string, unknown> = { alg: "HS256", typ: "at+jwt", ...change.header };
    const input = `${b64(header)}.${b64(body)}`;
    const hash = { HS256: "sha256", HS384: "sha384", HS512: "sha512" }[String(header.alg)] ?? "sha256";
    const token = `${input}.${createHmac(hash, change.key ?? KEY).update(input).digest("base64url")}`;
    return { token, verdict, note };
  };
  const unsigned = (header: Record<string, unknown>, sig = "") =>
    `${b64(header)}.${b64({ ...claims, iat: now, exp: now + 60 })}.${sig}`;
  return [
    forge("forged, all correct", "accept"),
    forge("typ application/at+jwt (RFC 9068 §4 allows it)", "accept", { header: { typ: "application/at+jwt" } }),
    forge("unknown kid ignored", "accept", { header: { kid: "whatever" } }),
    forge("audience list holding this resource", "accept", {
      claims: { aud: [`${base}/mcp`, "https://other.example/mcp"] },
    }),
    forge("typ JWT", "reject", { header: { typ: "JWT" } }),
    forge("typ refresh+jwt", "reject", { header: { typ: "refresh+jwt" } }),
    forge("typ code+jwt", "reject", { header: { typ: "code+jwt" } }),
    forge("typ client+jwt", "reject", { header: { typ: "client+jwt" } }),
    forge("no typ", "reject", { header: { typ: undefined } }),
    forge("audience is the base", "reject", { claims: { aud: base } }),
    forge("audience elsewhere", "reject", { claims: { aud: "https://other.example/mcp" } }),
    forge("no audience", "reject", { drop: ["aud"] }),
    forge("issuer elsewhere", "reject", { claims: { iss: "https://evil.example" } }),
    forge("no issuer", "reject", { drop: ["iss"] }),
    forge("expired", "reject", { claims: { exp: now - 120 } }),
    forge("not yet valid", "reject", { claims: { nbf: now + 3600 } }),
    forge("no sid", "reject", { drop: ["sid"] }),
    forge("numeric sid", "reject", { claims: { sid: 42 } }),
    forge("revoked sid", "reject", { claims: { sid: revoked.sid } }),
    forge("HS384 with the right key", "reject", { header: { alg: "HS384" } }),
    forge("HS512 with the right key", "reject", { header: { alg: "HS512" } }),
    forge("another key", "reject", { key: randomBytes(32) }),
    forge("unknown crit header", "reject", { header: { crit: ["x-must"], "x-must": 1 } }),
    { token: unsigned({ alg: "none", typ: "at+jwt" }), verdict: "reject", note: "alg none, empty signature" },
    { token: unsigned({ alg: "none", typ: "at+jwt" }).slice(0, -1), verdict: "reject", note: "alg none, two segments" },
    { token: unsigned({ alg: "None", typ: "at+jwt" }, "x"), verdict: "reject", note: "alg None" },
    { token: unsigned({ alg: "HS256", typ: "at+jwt" }, "AAAA"), verdict: "reject", note: "garbage signature" },
    {
      token: `${b64({ alg: "HS256", typ: "at+jwt" })}.${b64("not json")}.${"A".repeat(43)}`,
      verdict: "reject",
      note: "payload not JSON",
    },
    { token: live.access, verdict: "accept", note: "real access token" },
    { token: `${live.access}=`, verdict: "maybe", note: "real access token, padded" },
    { token: revoked.access, verdict: "reject", note: "access token of a revoked session" },
    { token: live.refresh, verdict: "reject", note: "refresh token" },
    { token: live.code, verdict: "reject", note: "authorization code" },
    { token: dcrClientId, verdict: "reject", note: "client_id" },
    { token: live.access.toLowerCase(), verdict: "reject", note: "real access token, lower-cased" },
  ];
}

/** Changes one character somewhere other than the signature's last (whose low bits base64url ignores). */
function mutateToken(token: string, at: number, replacement: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const positions = [...token].map((_, i) => i).filter((i) =>
    token[i] !== "." && i !== token.length - 1 && token[i + 1] !== "."
  );
  const i = positions[at % positions.length];
  let c = alphabet[replacement % alphabet.length];
  if (c === token[i]) c = alphabet[(replacement + 1) % alphabet.length];
  return token.slice(0, i) + c + token.slice(i + 1);
}

// ─── Generators ──────────────────────────────────────────────────────────────────────────────────

const text = (maxLength = 40) => fc.string({ maxLength });
const unicodeText = (maxLength = 40) => fc.string({ maxLength, unit: "grapheme" });
const base64url = (maxLength = 200) => fc.stringMatching(new RegExp(`^[A-Za-z0-9_-]{1,${maxLength}}$`));

const STANDARD_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
/** Methods Node's parser knows but nothing here serves. */
const ODD_METHODS = [
  "TRACE",
  "PROPFIND",
  "PROPPATCH",
  "MKCOL",
  "COPY",
  "MOVE",
  "LOCK",
  "UNLOCK",
  "SEARCH",
  "PURGE",
  "REPORT",
  "MERGE",
  "NOTIFY",
  "SUBSCRIBE",
  "LINK",
  "QUERY",
  "M-SEARCH",
  "ACL",
  "BIND",
];
/** Methods some HTTP stacks refuse at the parser (unknown tokens, other case) or treat specially. */
const PROTOCOL_METHODS = ["get", "Post", "pAtCh", "FOO", "BREW", "X-CUSTOM", "CONNECT"];

const KNOWN_PATHS = Object.keys(ROUTES);
const ODD_PATHS = [
  "/mcp/",
  "//mcp",
  "/MCP",
  "/mcp/../mcp",
  "/%6Dcp",
  "/mcp%00",
  "/mcp;x",
  "/.well-known/",
  "/.well-known/oauth-authorization-server/mcp",
  "/.well-known/openid-configuration",
  "/.well-known/oauth-protected-resource/",
  "/token/",
  "/authorize/",
  "/register/x",
  "/__proto__",
  "/constructor",
  "/toString",
  "/hasOwnProperty",
  "/%ZZ",
  "/%",
  "/?",
  "/index.html",
  `/${"a".repeat(3000)}`,
  "/mcp?x=1",
  "/mcp#frag",
];
const pathArb = fc.oneof(
  { arbitrary: fc.constantFrom(...KNOWN_PATHS), weight: 4 },
  { arbitrary: fc.constantFrom(...ODD_PATHS), weight: 2 },
  { arbitrary: fc.webPath().map((path) => (path.startsWith("/") ? path : `/${path}`)), weight: 1 },
);

const QUERY_KEYS = [
  "response_type",
  "client_id",
  "redirect_uri",
  "code_challenge",
  "code_challenge_method",
  "state",
  "scope",
  "resource",
  "approved",
  "code",
  "grant_type",
  "__proto__",
  "constructor",
];
const queryArb = fc.oneof(
  { arbitrary: fc.constant(""), weight: 3 },
  {
    arbitrary: fc.array(
      fc.tuple(
        fc.oneof(fc.constantFrom(...QUERY_KEYS), text(12)),
        fc.oneof(text(), unicodeText(), fc.constantFrom("code", "S256", "plain", "1", "mcp", "")),
      ),
      { maxLength: 8 },
    )
      .map((pairs) => `?${new URLSearchParams(pairs)}`),
    weight: 3,
  },
  {
    arbitrary: fc.constantFrom(
      "?",
      "?&&&",
      "?=",
      "?a",
      "?%",
      "?a=%E0%A4%A",
      "?a=%00",
      "?a=1&a=2",
      "?+=+",
      `?state=${"x".repeat(4000)}`,
    ),
    weight: 1,
  },
);

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "Application/JSON",
  "application/json;charset=UTF-8",
  "application/json ; charset=utf-8",
  "application/jsonp",
  "application/json-patch+json",
  "application/x-www-form-urlencoded",
  "application/x-www-form-urlencoded; charset=utf-8",
  "APPLICATION/X-WWW-FORM-URLENCODED",
  "application/x-www-form-urlencodedx",
  "text/plain",
  "text/plain;charset=UTF-8",
  "multipart/form-data; boundary=x",
  "text/html",
  "*/*",
  "",
  "application/",
  "json",
  ";",
  "application/json; charset=",
  "application/json;;;",
  "application/json; charset=latin1",
];
const contentTypeArb = fc.oneof({ arbitrary: fc.constantFrom(...CONTENT_TYPES), weight: 4 }, {
  arbitrary: text(),
  weight: 1,
});

const VERSION_VALUES = [
  MODERN,
  "2025-11-25",
  "2025-06-18",
  "2025-03-26",
  "2024-11-05",
  "2026-07-29",
  "",
  "latest",
  "2025-06-18, 2025-03-26",
  "=?base64?MjAyNi0wNy0yOA==?=",
];
const METHOD_VALUES = ["tools/call", "tools/list", "server/discover", "initialize", "ping", "TOOLS/CALL", ""];
const NAME_VALUES = [
  "whoami",
  "get_secret",
  "revoke_auth_token",
  "=?base64?Z2V0X3NlY3JldA==?=",
  "=?base64?d2hvYW1p?=",
  "=?base64?!!!?=",
  "=?base64??=",
  "WHOAMI",
  "",
];

/** Authorization header values over one credential: well-formed, odd scheme case, garbage around it. */
function authorizationArb(): fc.Arbitrary<{ value: string; verdict: Verdict }> {
  const credential = credentialArb();
  return fc.oneof(
    { arbitrary: credential.map((c) => ({ value: `Bearer ${c.token}`, verdict: c.verdict })), weight: 6 },
    // schemes are case-insensitive
    { arbitrary: credential.map((c) => ({ value: `bearer ${c.token}`, verdict: c.verdict })), weight: 1 },
    { arbitrary: credential.map((c) => ({ value: `Bearer   ${c.token}  `, verdict: c.verdict })), weight: 1 },
    {
      arbitrary: credential.map((c) => ({ value: `Bearer ${c.token} extra`, verdict: "reject" as Verdict })),
      weight: 1,
    },
    { arbitrary: credential.map((c) => ({ value: `Basic ${c.token}`, verdict: "reject" as Verdict })), weight: 1 },
    {
      arbitrary: credential.map((c) => ({
        value: `Bearer ${c.token},Bearer ${c.token}`,
        verdict: "reject" as Verdict,
      })),
      weight: 1,
    },
    { arbitrary: credential.map((c) => ({ value: c.token, verdict: "reject" as Verdict })), weight: 1 },
    {
      arbitrary: fc.constantFrom(
        "Bearer",
        "Bearer ",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer =",
        "Bearer a b",
        "Basic dXNlcjpwYXNz",
        "Digest x",
        "Token abc",
        "",
        "Bearer\t" + "x",
        "BEARER x.y.z",
      )
        .map((value) => ({ value, verdict: "reject" as Verdict })),
      weight: 2,
    },
    { arbitrary: text(80).map((value) => ({ value, verdict: "reject" as Verdict })), weight: 1 },
  );
}

/** Credentials: random strings, JWT look-alikes, forged and real tokens, real tokens truncated or altered. */
function credentialArb(): fc.Arbitrary<Credential> {
  const real = credentials.filter((c) => c.note === "real access token")[0];
  const reject = (note: string) => (token: string): Credential => ({ token, verdict: "reject", note });
  return fc.oneof(
    { arbitrary: text(120).map(reject("random string")), weight: 2 },
    { arbitrary: base64url().map(reject("random base64url")), weight: 1 },
    {
      arbitrary: fc.array(base64url(80), { minLength: 3, maxLength: 3 }).map((parts) => parts.join(".")).map(
        reject("three random segments"),
      ),
      weight: 2,
    },
    {
      arbitrary: fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 2 }), base64url(60)).map((
        [h, c, s],
      ) => `${b64(h)}.${b64(c)}.${s}`).map(reject("random JWT")),
      weight: 2,
    },
    {
      arbitrary: fc.constantFrom("a.b.c", "..", ".", "a..b", "eyJhbGciOiJub25lIn0.e30.", "eyJ.eyJ.", "e30.e30.e30").map(
        reject("JWT-ish"),
      ),
      weight: 1,
    },
    { arbitrary: fc.constantFrom(...credentials), weight: 6 },
    {
      arbitrary: fc.integer({ min: 1, max: real.token.length - 1 }).map((n) => real.token.slice(0, -n)).map(
        reject("real access token, truncated"),
      ),
      weight: 1,
    },
    {
      arbitrary: fc.tuple(fc.nat(), fc.nat()).map(([at, c]) => mutateToken(real.token, at, c)).map(
        reject("real access token, one character changed"),
      ),
      weight: 2,
    },
    {
      arbitrary: fc.tuple(fc.nat(), fc.constantFrom("A", "_", ".")).map(([at, c]) => {
        const i = at % real.token.length;
        return real.token.slice(0, i) + c + real.token.slice(i);
      }).map(reject("real access token, one character inserted")),
      weight: 1,
    },
  );
}

const EXTRA_HEADER_NAMES = [
  "accept",
  "origin",
  "referer",
  "user-agent",
  "x-forwarded-for",
  "x-forwarded-host",
  "forwarded",
  "mcp-session-id",
  "last-event-id",
  "cookie",
  "x-http-method-override",
  "accept-encoding",
  "if-none-match",
  "range",
];

/** Random-but-valid headers (header values must be printable ASCII for both clients). */
function headersArb(
  options: { host?: boolean } = {},
): fc.Arbitrary<{ headers: Record<string, string>; verdict: Verdict }> {
  return fc.record({
    contentType: fc.option(contentTypeArb, { nil: undefined }),
    authorization: fc.option(authorizationArb(), { nil: undefined, freq: 2 }),
    version: fc.option(fc.oneof(fc.constantFrom(...VERSION_VALUES), text(20)), { nil: undefined, freq: 2 }),
    method: fc.option(fc.oneof(fc.constantFrom(...METHOD_VALUES), text(20)), { nil: undefined, freq: 3 }),
    name: fc.option(fc.oneof(fc.constantFrom(...NAME_VALUES), text(20)), { nil: undefined, freq: 3 }),
    extra: fc.dictionary(
      fc.oneof(fc.constantFrom(...EXTRA_HEADER_NAMES), fc.stringMatching(/^x-[a-z0-9-]{1,12}$/)),
      text(60),
      { maxKeys: 3 },
    ),
    host: options.host
      ? fc.option(
        fc.oneof(
          fc.constantFrom(
            "localhost",
            "127.0.0.1",
            "[::1]:1",
            "localhost:99999",
            "a b",
            "[",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost@evil",
            "",
          ),
          text(30),
        ),
        { nil: undefined, freq: 3 },
      )
      : fc.constant(undefined),
  }).map(({ contentType, authorization, version, method, name, extra, host }) => {
    const headers: Record<string, string> = { ...extra };
    if (contentType !== undefined) headers["content-type"] = contentType;
    if (authorization !== undefined) headers.authorization = authorization.value;
    if (version !== undefined) headers["mcp-protocol-version"] = version;
    if (method !== undefined) headers["mcp-method"] = method;
    if (name !== undefined) headers["mcp-name"] = name;
    if (host !== undefined) headers.host = host;
    return { headers, verdict: authorization?.verdict ?? "none" };
  });
}

/** Raw JSON text (deep nesting) to splice into a message where this value sits. */
class Raw {
  constructor(readonly json: string, readonly label: string) {}
}
function serialize(value: unknown): string {
  const raws: Raw[] = [];
  const json = JSON.stringify(value, (_key, v: unknown) => {
    if (!(v instanceof Raw)) return v;
    raws.push(v);
    return `@@raw:${v.label}@@`;
  });
  return raws.reduce((out, raw) => out.replace(`"@@raw:${raw.label}@@"`, raw.json), json);
}

let rawCounter = 0;
// Up to ~60 KB: deep enough to overflow a recursive walk (JSON.stringify) in Node and in Deno, under 64 KiB.
const deepArb = fc.tuple(fc.integer({ min: 1_000, max: 30_000 }), fc.boolean()).map(([depth, arrays]) => {
  const label = `deep${rawCounter++}`;
  if (arrays) return new Raw("[".repeat(depth) + "]".repeat(depth), label);
  const d = Math.min(depth, 10_000);
  return new Raw('{"a":'.repeat(d) + "0" + "}".repeat(d), label);
});
const hugeStringArb = fc.tuple(
  fc.integer({ min: 10_000, max: 30_000 }),
  fc.constantFrom("x", "é", "\u0000", "\\", '"', "🙂"),
)
  .map(([n, c]) =>
    c.repeat(Math.floor(n / Math.max(1, Buffer.byteLength(c) + (c === "\u0000" || c === "\\" || c === '"' ? 5 : 0))))
  );
const weirdValueArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    arbitrary: fc.constantFrom<unknown>(
      null,
      true,
      false,
      0,
      -1,
      1.5,
      1e308,
      -0,
      "",
      "2.0",
      [],
      {},
      [1, 2],
      { a: 1 },
      "tools/call",
      "get_secret",
    ),
    weight: 4,
  },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: text(), weight: 2 },
  { arbitrary: unicodeText(), weight: 1 },
  { arbitrary: deepArb, weight: 1 },
  { arbitrary: hugeStringArb, weight: 1 },
);

const randomBodyArb: fc.Arbitrary<string | Uint8Array | undefined> = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 2048 }), weight: 2 },
  { arbitrary: fc.json({ maxDepth: 4 }), weight: 3 },
  { arbitrary: text(200), weight: 2 },
  {
    arbitrary: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...QUERY_KEYS), text(10)), text(40)), { maxLength: 6 }).map((
      pairs,
    ) => new URLSearchParams(pairs).toString()),
    weight: 2,
  },
  { arbitrary: deepArb.map((raw) => raw.json), weight: 1 },
  { arbitrary: hugeStringArb.map((s) => JSON.stringify({ s })), weight: 1 },
);

/** A request with anything anywhere: method, path, query, headers, body. */
function anythingArb(
  paths: fc.Arbitrary<string>,
  methods: string[] = [...STANDARD_METHODS, ...ODD_METHODS],
): fc.Arbitrary<Probe> {
  return fc.record({
    http: viaHttpArb,
    method: fc.constantFrom(...methods),
    path: paths,
    query: queryArb,
    headers: headersArb({ host: true }),
    body: randomBodyArb,
  }).map(({ http, method, path, query, headers, body }) => {
    // fetch speaks only the standard methods, string bodies and no Host override.
    const client = http || !STANDARD_METHODS.includes(method) || body instanceof Uint8Array || "host" in headers.headers
      ? "http"
      : "fetch";
    return probe({
      client,
      method,
      path: path + query,
      headers: headers.headers,
      body,
      note: "anything",
      verdict: headers.verdict,
    });
  });
}

// ─── /authorize: near-valid requests with one field broken ───────────────────────────────────────

type ClientKind = "dcr" | "cimd" | "cimd-unreachable";
/** fails: "yes", the server must refuse (400 JSON); "no", it must show the consent page. */
type Fails = "yes" | "no";
type Edit = { field: string; value?: string; fails: Fails; note: string };

function authorizeEdits(): fc.Arbitrary<Edit> {
  const set = (field: string, fails: Fails, values: string[]) =>
    fc.constantFrom(...values).map((value): Edit => ({ field, value, fails, note: `${field}=${value.slice(0, 60)}` }));
  const required = ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method"];
  return fc.oneof(
    fc.constant<Edit>({ field: "", fails: "no", note: "unchanged" }),
    fc.constantFrom(...required).map((field): Edit => ({ field, fails: "yes", note: `no ${field}` })),
    fc.constantFrom("state", "scope", "resource", "approved").map((field): Edit => ({
      field,
      fails: "no",
      note: `no ${field}`,
    })),
    set("client_id", "yes", [
      "",
      "https://client.example/",
      "https://client.example",
      "http://evil.example/meta.json",
      "https://client.example/meta.json#x",
      "javascript:alert(1)",
      "not a url",
      unreachableClientId,
      `${cimdClientId}x`, // a document URL nothing is served at
      `${cimdClientId}#x`,
      cimdClientId.toUpperCase(),
      "https://10.0.0.1/client.json", // private addresses are never fetched
      "https://169.254.169.254/latest/meta-data",
      "https://[fe80::1]/client.json",
    ]),
    text(60).filter((s) => !URL.canParse(s)).map((value): Edit => ({
      field: "client_id",
      value,
      fails: "yes",
      note: "client_id random",
    })),
    fc.tuple(fc.nat(), fc.nat()).map(([at, c]): Edit => ({
      field: "client_id",
      value: mutateToken(dcrClientId, at, c),
      fails: "yes",
      note: "client_id altered",
    })),
    fc.constantFrom(
      ...credentials.filter((c) =>
        c.note === "real access token" || c.note === "refresh token" || c.note === "authorization code"
      ),
    )
      .map((c): Edit => ({ field: "client_id", value: c.token, fails: "yes", note: `client_id is a ${c.note}` })),
    set("client_id", "no", [cimdClientId, dcrClientId]),
    set("redirect_uri", "yes", [
      `${REDIRECT_URI}#frag`,
      "javascript:alert(1)",
      "http://evil.example/cb",
      "not a url",
      "",
      "/cb",
      "http://127.0.0.1.evil.example/cb",
      "http://localhost.evil.example/cb",
      "ftp://127.0.0.1/cb",
      "data:text/html,x",
    ]),
    // Both kinds of client are held to the redirect URIs they registered or listed.
    set("redirect_uri", "yes", [
      "https://evil.example/cb",
      "http://localhost:9/cb",
      `${REDIRECT_URI}?x=1`,
      `${REDIRECT_URI}/`,
      "http://[::1]:9/cb",
    ]),
    set("redirect_uri", "no", ["http://127.0.0.1:10/cb", "http://127.0.0.1/cb", "http://127.1:9/cb"]),
    set("response_type", "yes", ["token", "code id_token", "CODE", "", "code ", "id_token"]),
    set("code_challenge_method", "yes", ["plain", "s256", "", "S256 ", "S512"]),
    set("code_challenge", "yes", [
      "a".repeat(42),
      "a".repeat(44),
      `${"a".repeat(42)}=`,
      `${"a".repeat(42)}+`,
      "",
      "a".repeat(128),
    ]),
    set("resource", "yes", ["https://evil.example/mcp", "", "MCP"]),
    fc.constantFrom("base", "base/mcp/").map((which): Edit => ({
      field: "resource",
      value: which === "base" ? base : `${base}/mcp/`,
      fails: "yes",
      note: `resource ${which}`,
    })),
    set("scope", "yes", ["openid", "mcp openid", "", "MCP", " mcp"]),
    set("scope", "no", ["mcp", "mcp mcp"]),
    fc.oneof(fc.constantFrom(...XSS), unicodeText(60), fc.constant("s".repeat(4000))).map((value): Edit => ({
      field: "state",
      value,
      fails: "no",
      note: "state odd",
    })),
    set("approved", "no", ["0", "true", "", "yes", "1"]),
    fc.constantFrom(...required, "state", "scope", "resource").map((field): Edit => ({
      field: `repeat:${field}`,
      fails: "yes",
      note: `${field} repeated`,
    })),
    fc.tuple(fc.stringMatching(/^x[a-z_]{0,10}$/), text(40)).map(([key, value]): Edit => ({
      field: `extra:${key}`,
      value,
      fails: "no",
      note: `extra ${key}`,
    })),
  );
}

function authorizeArb(): fc.Arbitrary<Probe> {
  return fc.record({
    client: fc.constantFrom<ClientKind>("dcr", "cimd", "cimd", "cimd-unreachable"),
    approved: fc.boolean(),
    optional: fc.record({ state: fc.boolean(), scope: fc.boolean(), resource: fc.boolean() }),
    edit: authorizeEdits(),
    http: viaHttpArb,
    // XSS in the client name shows on the consent page: register such a client now and then
  }).map(({ client, approved, optional, edit, http }) => {
    const clientId = client === "dcr" ? dcrClientId : client === "cimd" ? cimdClientId : unreachableClientId;
    const pairs: [string, string][] = [
      ["response_type", "code"],
      ["client_id", clientId],
      ["redirect_uri", REDIRECT_URI],
      ["code_challenge", s256(newVerifier())],
      ["code_challenge_method", "S256"],
    ];
    if (optional.state) pairs.push(["state", "st"]);
    if (optional.scope) pairs.push(["scope", "mcp"]);
    if (optional.resource) pairs.push(["resource", `${base}/mcp`]);
    if (approved) pairs.push(["approved", "1"]);
    let edited = pairs;
    if (edit.field.startsWith("repeat:")) {
      const field = edit.field.slice(7);
      const found = pairs.find(([name]) => name === field);
      edited = [...pairs, [field, found?.[1] ?? "x"]];
      if (!found) edited.push([field, "x"]); // a field absent from this request is sent twice
    } else if (edit.field.startsWith("extra:")) {
      edited = [...pairs, [edit.field.slice(6), edit.value ?? ""]];
    } else if (edit.field) {
      edited = pairs.filter(([name]) => name !== edit.field);
      if (edit.value !== undefined) edited.push([edit.field, edit.value]);
    }
    // An unreachable document fails every request, unless the edit swapped in a working client_id.
    const swapped = edit.field === "client_id" && edit.fails === "no";
    const fails = edit.fails === "yes" || (client === "cimd-unreachable" && !swapped);
    const p = probe({
      client: http ? "http" : "fetch",
      method: "GET",
      path: `/authorize?${new URLSearchParams(edited)}`,
      headers: {},
      note: `${client} ${approved ? "approved" : "consent"}: ${edit.note}`,
      verdict: "none",
      mustFail: fails,
    });
    return p;
  });
}

function checkAuthorize(p: Probe, r: Reply) {
  if (p.mustFail) {
    assert.equal(r.status, 400, "a broken authorization request is refused with 400, never redirected");
    return;
  }
  // approved=1 or not: a GET only ever asks. Approving takes the page's form.
  assert.equal(r.status, 200, "a valid request shows the consent page");
  const form = consentForm(r.body, base);
  assert.equal(form.action.href, `${base}/authorize`, "the form posts back to /authorize here");
}

// ─── POST /authorize: the consent form, submitted with one thing broken ──────────────────────────

/** "ok": the decision goes back to the client (303); 400 or 403: refused with that status; "4xx": 400 or 415. */
type ConsentOutcome = "ok" | 400 | 403 | "4xx";
type ConsentEdit = { kind: string; value?: string; outcome: ConsentOutcome; note: string };

interface ConsentPlan {
  client: "dcr" | "cimd";
  state: boolean;
  decision: "approve" | "deny";
  edit: ConsentEdit;
  http: boolean;
}

function consentEditArb(): fc.Arbitrary<ConsentEdit> {
  const set = (kind: string, outcome: ConsentOutcome, values: string[]) =>
    fc.constantFrom(...values).map((value): ConsentEdit => ({
      kind,
      value,
      outcome,
      note: `${kind}=${JSON.stringify(value.slice(0, 60))}`,
    }));
  const other = credentials.filter((c) => c.verdict === "accept" || /token|code|client_id/.test(c.note));
  return fc.oneof(
    { arbitrary: fc.constant<ConsentEdit>({ kind: "", outcome: "ok", note: "unchanged" }), weight: 4 },
    set("decision", 400, ["", "APPROVE", "Approve", "yes", "1", "approve ", " deny", "deny\u0000", "true"]),
    text(20).filter((value) => value !== "approve" && value !== "deny").map((value): ConsentEdit => ({
      kind: "decision",
      value,
      outcome: 400,
      note: "decision random",
    })),
    fc.constantFrom("consent", "decision").map((name): ConsentEdit => ({
      kind: "drop",
      value: name,
      outcome: 400,
      note: `no ${name}`,
    })),
    fc.constantFrom("consent", "decision").map((name): ConsentEdit => ({
      kind: "repeat",
      value: name,
      outcome: 400,
      note: `${name} repeated`,
    })),
    set("consent", 400, ["", "a.b.c", "e30.e30.", "not a token"]),
    text(80).map((value): ConsentEdit => ({ kind: "consent", value, outcome: 400, note: "consent random" })),
    fc.constantFrom(...other).map((c): ConsentEdit => ({
      kind: "consent",
      value: c.token,
      outcome: 400,
      note: `consent is a ${c.note}`,
    })),
    fc.tuple(fc.nat(), fc.nat()).map(([at, c]): ConsentEdit => ({
      kind: "mutate",
      value: `${at}:${c}`,
      outcome: 400,
      note: "consent altered",
    })),
    fc.integer({ min: 1, max: 40 }).map((n): ConsentEdit => ({
      kind: "truncate",
      value: String(n),
      outcome: 400,
      note: "consent truncated",
    })),
    fc.tuple(fc.stringMatching(/^x[a-z_]{0,10}$/), text(40)).map(([key, value]): ConsentEdit => ({
      kind: `extra:${key}`,
      value,
      outcome: "ok",
      note: `extra ${key}`,
    })),
    set("sec-fetch-site", "ok", ["same-origin"]),
    set("sec-fetch-site", 403, ["cross-site", "same-site", "none", "", "Same-Origin", "same-origin, cross-site"]),
    fc.constant<ConsentEdit>({ kind: "origin", value: "", outcome: "ok", note: "origin: this server" }),
    set("origin", 403, [
      "null",
      "https://evil.example",
      clientDocuments.origin,
      `${base}.evil.example`,
      base.replace("127.0.0.1", "localhost"),
      base.replace("http:", "https:"),
    ]),
    set("content-type", "4xx", ["application/json", "text/plain", "multipart/form-data; boundary=x", ""]),
  );
}

function consentPlanArb(): fc.Arbitrary<ConsentPlan> {
  return fc.record({
    client: fc.constantFrom<"dcr" | "cimd">("dcr", "cimd"),
    state: fc.boolean(),
    decision: fc.constantFrom<"approve" | "deny">("approve", "approve", "deny"),
    edit: consentEditArb(),
    http: viaHttpArb,
  });
}

function consentProbe(plan: ConsentPlan, token: string): Probe {
  const { edit } = plan;
  const params: [string, string][] = [["consent", token], ["decision", plan.decision]];
  const headers: Record<string, string> = { "content-type": FORM };
  let edited = params;
  let body: string | undefined;
  if (edit.kind === "decision" || edit.kind === "consent") {
    edited = params.map(([name, value]) => [name, name === edit.kind ? edit.value ?? "" : value]);
  } else if (edit.kind === "drop") edited = params.filter(([name]) => name !== edit.value);
  else if (edit.kind === "repeat") edited = [...params, params.find(([name]) => name === edit.value)!];
  else if (edit.kind === "mutate") {
    const [at, c] = (edit.value ?? "0:0").split(":").map(Number);
    edited = [["consent", mutateToken(token, at, c)], ["decision", plan.decision]];
  } else if (edit.kind === "truncate") edited = [["consent", token.slice(0, -Number(edit.value))], params[1]];
  else if (edit.kind.startsWith("extra:")) edited = [...params, [edit.kind.slice(6), edit.value ?? ""]];
  else if (edit.kind === "sec-fetch-site") headers["sec-fetch-site"] = edit.value ?? "";
  else if (edit.kind === "origin") headers.origin = edit.value || base;
  else if (edit.kind === "content-type") {
    headers["content-type"] = edit.value ?? "";
    if (edit.value === "application/json") body = JSON.stringify(Object.fromEntries(params));
  }
  // Header edits go through node:http, which sends Origin and Sec-Fetch-Site exactly as given.
  const viaHttpOnly = ["sec-fetch-site", "origin", "content-type"].includes(edit.kind);
  return probe({
    client: plan.http || viaHttpOnly ? "http" : "fetch",
    method: "POST",
    path: "/authorize",
    headers,
    body: body ?? new URLSearchParams(edited).toString(),
    note: `consent ${plan.client} ${plan.decision}${plan.state ? " with state" : ""}: ${edit.note}`,
    verdict: "none",
    mustFail: edit.outcome !== "ok",
    json: { outcome: edit.outcome, decision: plan.decision, state: plan.state ? CONSENT_STATE : undefined },
  });
}

const CONSENT_STATE = "consent-state <&>";

function checkConsent(p: Probe, r: Reply) {
  const expected = p.json?.outcome as ConsentOutcome;
  if (expected !== "ok") {
    if (expected === "4xx") assert.ok(r.status === 400 || r.status === 415, `refused with 400 or 415, not ${r.status}`);
    else assert.equal(r.status, expected, `refused with ${expected}`);
    assert.equal(r.headers.location, undefined, "a refused consent never redirects");
    const error = parseJsonBody(r);
    assert.ok(isObject(error));
    if (expected !== "4xx") assert.equal(error.error, "invalid_request");
    return;
  }
  assert.equal(r.status, 303, "the decision goes back to the client with 303 (RFC 9700 §4.12: never 307)");
  const target = new URL(r.headers.location ?? "");
  assert.equal(target.origin + target.pathname, REDIRECT_URI, "back exactly where the client asked");
  assert.equal(target.searchParams.get("iss"), base, "RFC 9207 iss");
  assert.equal(target.searchParams.get("state"), p.json?.state ?? null, "state comes back unchanged");
  if (p.json?.decision === "approve") {
    assert.ok(target.searchParams.get("code"), "approve: a code");
    assert.equal(target.searchParams.get("error"), null);
  } else {
    assert.equal(target.searchParams.get("error"), "access_denied", "deny: access_denied");
    assert.equal(target.searchParams.get("code"), null, "deny: no code");
  }
}

// ─── /token: near-valid grants with one field broken ─────────────────────────────────────────────

interface Material {
  codes: { code: string; verifier: string; clientId: string }[];
  session: Session;
}
type TokenEdit = { field: string; value?: string | number | null; fails: boolean; note: string };

function tokenEditArb(grant: "code" | "refresh"): fc.Arbitrary<TokenEdit> {
  const set = (field: string, fails: boolean, values: (string | number | null)[]) =>
    fc.constantFrom(...values).map((value): TokenEdit => ({
      field,
      value,
      fails,
      note: `${field}=${String(value).slice(0, 50)}`,
    }));
  const credentialField = grant === "code" ? "code" : "refresh_token";
  const required = grant === "code"
    ? ["grant_type", "code", "code_verifier", "client_id"]
    : ["grant_type", "refresh_token", "client_id"];
  const wrongCredentials = credentials; // none of them is a code or a refresh token this request may redeem
  const edits: fc.Arbitrary<TokenEdit>[] = [
    fc.constant({ field: "", fails: false, note: "unchanged" }),
    fc.constantFrom(...required).map((field) => ({ field, fails: true, note: `no ${field}` })),
    fc.constantFrom("resource", ...(grant === "code" ? ["redirect_uri"] : [])).map((field) => ({
      field,
      fails: false,
      note: `no ${field}`,
    })),
    set("grant_type", true, [
      "password",
      "client_credentials",
      "implicit",
      "AUTHORIZATION_CODE",
      "",
      "urn:ietf:params:oauth:grant-type:device_code",
      grant === "code" ? "refresh_token" : "authorization_code",
    ]),
    set(credentialField, true, ["", "a.b.c"]),
    text(80).map((value) => ({ field: credentialField, value, fails: true, note: `${credentialField} random` })),
    fc.constantFrom(...wrongCredentials).map((c) => ({
      field: credentialField,
      value: c.token,
      fails: true,
      note: `${credentialField} is a ${c.note}`,
    })),
    fc.tuple(fc.nat(), fc.nat()).map(([at, c]) => ({
      field: credentialField,
      value: `mutate:${at}:${c}`,
      fails: true,
      note: `${credentialField} altered`,
    })),
    fc.integer({ min: 1, max: 40 }).map((n) => ({
      field: credentialField,
      value: `truncate:${n}`,
      fails: true,
      note: `${credentialField} truncated`,
    })),
    set("client_id", true, ["", "https://client.example/meta.json", "someone-else"]),
    set("resource", true, ["https://evil.example/mcp", "", "mcp"]),
    fc.constant({ field: "resource", value: `${base}/mcp`, fails: false, note: "resource named" }),
    fc.tuple(fc.stringMatching(/^x[a-z_]{0,10}$/), text(40)).map(([key, value]) => ({
      field: `extra:${key}`,
      value,
      fails: false,
      note: `extra ${key}`,
    })),
    fc.constantFrom(...required).map((field) => ({ field: `repeat:${field}`, fails: true, note: `${field} repeated` })),
    fc.constantFrom(...required, "resource").map((field) => ({
      field: `nonstring:${field}`,
      fails: true,
      note: `${field} not a string (JSON)`,
    })),
    set("content-type", true, [
      "text/plain",
      "application/jsonx",
      "application/x-www-form-urlencodedx",
      "multipart/form-data",
      "",
    ]),
    fc.constant({ field: "content-type:swap", fails: true, note: "body encoded one way, labelled the other" }),
  ];
  if (grant === "code") {
    edits.push(
      set("code_verifier", true, ["a".repeat(42), "a".repeat(129), `${"a".repeat(42)}!`, "", `${"a".repeat(43)} `]),
      fc.constant({ field: "code_verifier", value: "other", fails: true, note: "another valid verifier" }),
      set("redirect_uri", true, ["http://127.0.0.1:10/cb", `${REDIRECT_URI}/`, "https://evil.example/cb", ""]),
      fc.constant({ field: "redirect_uri", value: REDIRECT_URI, fails: false, note: "redirect_uri named" }),
    );
  }
  return fc.oneof(...edits);
}

interface TokenPlan {
  grant: "code" | "refresh";
  slot: number;
  edit: TokenEdit;
  json: boolean;
  charset: boolean;
  http: boolean;
}

function tokenPlanArb(): fc.Arbitrary<TokenPlan> {
  const plan = (grant: "code" | "refresh") =>
    fc.record({
      grant: fc.constant(grant),
      slot: fc.nat({ max: 2 }),
      edit: tokenEditArb(grant),
      json: fc.boolean(),
      charset: fc.boolean(),
      http: viaHttpArb,
    });
  return fc.oneof({ arbitrary: plan("code"), weight: 2 }, { arbitrary: plan("refresh"), weight: 1 });
}

function tokenProbe(plan: TokenPlan, material: Material): Probe {
  const { edit } = plan;
  const code = material.codes[plan.slot];
  const params: Record<string, string> = plan.grant === "code"
    ? {
      grant_type: "authorization_code",
      code: code.code,
      code_verifier: code.verifier,
      client_id: code.clientId,
      redirect_uri: REDIRECT_URI,
      resource: `${base}/mcp`,
    }
    : {
      grant_type: "refresh_token",
      refresh_token: material.session.refresh,
      client_id: material.session.clientId,
      resource: `${base}/mcp`,
    };
  if (plan.grant === "code" && plan.slot === 2) delete params.redirect_uri; // OAuth 2.1 clients may leave it out
  let contentType = plan.json ? "application/json" : "application/x-www-form-urlencoded";
  if (plan.charset) contentType += "; charset=utf-8";
  const repeated: string[] = [];
  const nonString: Record<string, unknown> = {};
  let swap = false;
  if (edit.field === "content-type") contentType = String(edit.value);
  else if (edit.field === "content-type:swap") swap = true;
  else if (edit.field.startsWith("repeat:")) repeated.push(edit.field.slice(7));
  else if (edit.field.startsWith("nonstring:")) nonString[edit.field.slice(10)] = [params[edit.field.slice(10)] ?? "x"];
  else if (edit.field.startsWith("extra:")) params[edit.field.slice(6)] = String(edit.value);
  else if (edit.field && edit.value === undefined) delete params[edit.field];
  else if (edit.field) {
    let value = String(edit.value);
    const original = params[edit.field] ?? "";
    if (value.startsWith("mutate:")) {
      value = mutateToken(original, Number(value.split(":")[1]), Number(value.split(":")[2]));
    } else if (value.startsWith("truncate:")) value = original.slice(0, -Number(value.split(":")[1]));
    else if (edit.field === "code_verifier" && value === "other") value = newVerifier();
    params[edit.field] = value;
  }
  const asJson = plan.json !== swap;
  const repeatedJson = plan.json && repeated.length > 0; // JSON cannot repeat a key: send it as a form instead
  let body: string;
  if (asJson && !repeatedJson) body = JSON.stringify({ ...params, ...nonString });
  else {
    const form = new URLSearchParams(params);
    for (const name of repeated) form.append(name, params[name] ?? "x");
    // a form has only strings: still valid
    for (const [name, value] of Object.entries(nonString)) form.set(name, String(value));
    body = form.toString();
  }
  if (repeatedJson) contentType = "application/x-www-form-urlencoded";
  // A form cannot carry a non-string: that edit only breaks JSON bodies.
  const fails = edit.fails && !(edit.field.startsWith("nonstring:") && !asJson);
  const slot = plan.grant === "code" ? `code${plan.slot}` : "refresh";
  return probe({
    client: plan.http ? "http" : "fetch",
    method: "POST",
    path: "/token",
    headers: { "content-type": contentType },
    body,
    note: `${plan.grant} grant (${asJson ? "json" : "form"}): ${edit.note}`,
    verdict: "none",
    mustFail: fails,
    slot,
  });
}

const TOKEN_ERRORS = ["invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_target"];

function checkToken(p: Probe, r: Reply) {
  assert.ok(r.status === 200 || r.status === 400, `a token request answers 200 or 400, not ${r.status}`);
  if (r.status === 400) {
    const error = JSON.parse(r.body) as { error: string };
    assert.ok(TOKEN_ERRORS.includes(error.error), `unexpected error code ${error.error}`);
  }
  if (p.mustFail) assert.equal(r.status, 400, "a broken token request is refused");
  else if (r.status === 400) {
    assert.equal(
      (JSON.parse(r.body) as { error: string }).error,
      "invalid_grant",
      "a valid request fails only because its credential was spent",
    );
  }
}

/** Within one batch a code, or a refresh token, buys tokens at most once. */
function checkSingleUse(pairs: [Probe, Reply][]) {
  const wins = new Map<string, number>();
  for (const [p, r] of pairs) if (p.slot && r.status === 200) wins.set(p.slot, (wins.get(p.slot) ?? 0) + 1);
  for (const [slot, count] of wins) assert.ok(count <= 1, `${slot} was redeemed ${count} times`);
}

// ─── /register: near-valid metadata with one field broken ────────────────────────────────────────

function registerArb(): fc.Arbitrary<Probe> {
  type RegEdit = { field: string; value?: unknown; fails: boolean | "web"; note: string };
  const set = (field: string, fails: boolean | "web", values: unknown[]) =>
    fc.constantFrom(...values).map((value): RegEdit => ({
      field,
      value,
      fails,
      note: `${field}=${JSON.stringify(value).slice(0, 60)}`,
    }));
  const edit: fc.Arbitrary<RegEdit> = fc.oneof(
    fc.constant<RegEdit>({ field: "", fails: false, note: "unchanged" }),
    fc.constant<RegEdit>({ field: "redirect_uris", fails: true, note: "no redirect_uris" }),
    fc.constantFrom("client_name", "application_type", "grant_types", "response_types", "token_endpoint_auth_method")
      .map((field): RegEdit => ({ field, fails: false, note: `no ${field}` })),
    set("redirect_uris", true, [
      [],
      REDIRECT_URI,
      [1],
      [null],
      ["javascript:alert(1)"],
      ["http://evil.example/cb"],
      [`${REDIRECT_URI}#f`],
      ["not a url"],
      [[REDIRECT_URI]],
      {},
      null,
    ]),
    set("redirect_uris", false, [["https://app.example/cb"], [
      REDIRECT_URI,
      "http://[::1]/cb",
      "http://localhost:8/x?y=1",
    ]]),
    set("redirect_uris", "web", [["https://app.example/cb", REDIRECT_URI]]),
    deepArb.map((raw): RegEdit => ({
      field: "redirect_uris",
      value: raw,
      fails: true,
      note: "redirect_uris deeply nested",
    })),
    fc.integer({ min: 50, max: 1500 }).map((n): RegEdit => ({
      field: "redirect_uris",
      value: Array.from({ length: n }, (_, i) => `http://127.0.0.1:9/cb${i}`),
      fails: false,
      note: `${n} redirect_uris`,
    })),
    set("client_name", true, ["x".repeat(201), 5, null, [], {}, "a\nb", "\u001b[2J", "tab\there", "\u007f"]),
    set("client_name", false, ["x".repeat(200), "", ...XSS, "名前 🙂"]),
    // C1 controls (U+0080–U+009F) are left to the explicit tests: here a name either has an unsafe character or not.
    unicodeText(100).filter((value) => !/[\u0080-\u009f]/.test(value)).map((value): RegEdit => ({
      field: "client_name",
      value,
      fails: [...value].length > 200 || value.length > 200 || UNSAFE_IN_NAME.test(value),
      note: "client_name random",
    })),
    set("application_type", true, ["WEB", "", 1, null, "browser"]),
    set("application_type", "web", ["web"]),
    set("application_type", false, ["native"]),
    set("token_endpoint_auth_method", true, ["client_secret_basic", "client_secret_post", "", null, "private_key_jwt"]),
    set("token_endpoint_auth_method", false, ["none"]),
    set("grant_types", true, [["implicit"], "authorization_code", ["authorization_code", "password"], [1]]),
    set("grant_types", false, [["authorization_code"], [], ["refresh_token", "authorization_code"]]),
    set("response_types", true, [["token"], ["code", "token"], "code"]),
    set("response_types", false, [["code"], []]),
    fc.tuple(fc.stringMatching(/^x[a-z_]{0,12}$/), weirdValueArb).map(([key, value]): RegEdit => ({
      field: `extra:${key}`,
      value,
      fails: false,
      note: `extra ${key}`,
    })),
    set("body", true, ["[]", "null", '"x"', "{", "", '{"redirect_uris":["http://127.0.0.1:9/cb"]} x']),
    set("content-type", true, ["text/plain", "", "application/x-www-form-urlencoded", "application/jsonx"]),
  );
  return fc.record({ edit, named: fc.boolean(), http: viaHttpArb, charset: fc.boolean() }).map(
    ({ edit, named, http, charset }) => {
      const metadata: Record<string, unknown> = {
        redirect_uris: [REDIRECT_URI],
        application_type: "native",
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
      };
      if (named) metadata.client_name = "fuzz client";
      let contentType = charset ? "application/json; charset=utf-8" : "application/json";
      let body: string | undefined;
      if (edit.field === "body") body = String(edit.value);
      else if (edit.field === "content-type") contentType = String(edit.value);
      else if (edit.field.startsWith("extra:")) metadata[edit.field.slice(6)] = edit.value;
      else if (edit.field && edit.value === undefined) delete metadata[edit.field];
      else if (edit.field) metadata[edit.field] = edit.value;
      // OpenID DCR: a web client (stated, or inferred when a redirect URI is not loopback) redirects over https only.
      const uris = Array.isArray(metadata.redirect_uris) ? metadata.redirect_uris : [];
      const loopback = (uri: unknown) =>
        typeof uri === "string" && URL.canParse(uri) &&
        /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(new URL(uri).hostname);
      const appType = metadata.application_type ?? (uris.length > 0 && uris.every(loopback) ? "native" : "web");
      const webWithHttp = appType === "web" &&
        uris.some((uri) => typeof uri === "string" && URL.canParse(uri) && new URL(uri).protocol !== "https:");
      const fails = edit.fails === true || webWithHttp;
      return probe({
        client: http ? "http" : "fetch",
        method: "POST",
        path: "/register",
        headers: { "content-type": contentType },
        body: body ?? serialize(metadata),
        note: `register: ${edit.note}`,
        verdict: "none",
        mustFail: fails,
        json: fails ? undefined : metadata, // what a 201 must echo
      });
    },
  );
}

function checkRegister(p: Probe, r: Reply) {
  if (p.mustFail) {
    assert.ok(r.status === 400 || r.status === 415, `broken metadata is refused (got ${r.status})`);
    const error = JSON.parse(r.body) as { error: string };
    assert.ok(
      ["invalid_client_metadata", "invalid_redirect_uri"].includes(error.error),
      `RFC 7591 error code, got ${error.error}`,
    );
    return;
  }
  assert.equal(r.status, 201, "valid metadata registers");
  const client = JSON.parse(r.body) as Record<string, unknown>;
  assert.deepEqual(client.redirect_uris, p.json?.redirect_uris, "the registered redirect URIs are the ones sent");
  if (p.json?.client_name !== undefined) assert.equal(client.client_name, p.json.client_name);
}

// ─── /mcp: near-valid JSON-RPC in both protocol eras ─────────────────────────────────────────────

interface RpcSeed {
  method: string;
  params?: Record<string, unknown>;
  notification?: boolean;
}
const RPC_SEEDS: RpcSeed[] = [
  {
    method: "initialize",
    params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "fuzz", version: "0" } },
  },
  {
    method: "initialize",
    params: { protocolVersion: "1999-01-01", capabilities: {}, clientInfo: { name: "fuzz", version: "0" } },
  },
  { method: "notifications/initialized", notification: true },
  { method: "notifications/cancelled", params: { requestId: 1 }, notification: true },
  { method: "ping" },
  { method: "tools/list" },
  { method: "tools/list", params: { cursor: "abc" } },
  { method: "tools/call", params: { name: "whoami", arguments: {} } },
  { method: "tools/call", params: { name: "get_secret", arguments: {} } },
  { method: "tools/call", params: { name: "get_secret" } },
  { method: "tools/call", params: { name: "revoke_auth_token", arguments: {} } },
  { method: "server/discover" },
  { method: "resources/list" },
  { method: "prompts/get", params: { name: "x" } },
];
const RPC_TARGETS = [
  "jsonrpc",
  "id",
  "method",
  "params",
  "params.name",
  "params.arguments",
  "params._meta",
  "meta.version",
  "meta.capabilities",
  "params.protocolVersion",
  "header:mcp-protocol-version",
  "header:mcp-method",
  "header:mcp-name",
  "header:content-type",
];

function rpcArb(): fc.Arbitrary<Probe> {
  const mutation = fc.oneof(
    {
      arbitrary: fc.record({ target: fc.constantFrom(...RPC_TARGETS), remove: fc.boolean(), value: weirdValueArb }),
      weight: 5,
    },
    // Deep nesting where the server looks: the tool name, its arguments, _meta, params itself.
    {
      arbitrary: fc.record({
        target: fc.constantFrom("params.name", "params.arguments", "params._meta", "meta.capabilities", "params", "id"),
        remove: fc.constant(false),
        value: deepArb as fc.Arbitrary<unknown>,
      }),
      weight: 1,
    },
  );
  return fc.record({
    seed: fc.constantFrom(...RPC_SEEDS),
    modern: fc.boolean(),
    legacyHeader: fc.option(fc.constantFrom(...VERSION_VALUES), { nil: undefined }),
    id: fc.oneof(fc.integer(), text(20), fc.constant(0), fc.constant("")),
    mutations: fc.array(mutation, { maxLength: 2 }),
    authorization: fc.option(authorizationArb(), { nil: undefined }),
    encoding: fc.oneof({ arbitrary: fc.constant("plain"), weight: 8 }, {
      arbitrary: fc.constantFrom("array", "trailing", "bom", "truncate", "whitespace", "duplicate-key", "empty-array"),
      weight: 2,
    }),
    http: viaHttpArb,
  }).map(({ seed, modern, legacyHeader, id, mutations: generated, authorization, encoding, http }) => {
    // One large value per message at most, so the body stays under the 64 KiB limit.
    const large = (value: unknown) => value instanceof Raw || (typeof value === "string" && value.length > 5_000);
    const mutations = generated.filter((m, i) =>
      !large(m.value) || !generated.slice(0, i).some((earlier) => large(earlier.value))
    );
    const params: Record<string, unknown> = structuredClone(seed.params ?? {});
    const message: Record<string, unknown> = {
      jsonrpc: "2.0",
      ...(seed.notification ? {} : { id }),
      method: seed.method,
    };
    if (seed.params || modern) message.params = params;
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (modern) {
      params._meta = { [META_VERSION]: MODERN, [META_CAPABILITIES]: {} };
      headers["mcp-protocol-version"] = MODERN;
      headers["mcp-method"] = seed.method;
      if (typeof params.name === "string") headers["mcp-name"] = params.name;
    } else if (legacyHeader !== undefined) headers["mcp-protocol-version"] = legacyHeader;
    if (authorization) headers.authorization = authorization.value;
    for (const { target, remove, value } of mutations) {
      const headerValue = typeof value === "string" && /^[\x20-\x7e]*$/.test(value) && value.length < 200
        ? value
        : JSON.stringify(value)?.slice(0, 100) ?? "";
      if (target.startsWith("header:")) {
        const name = target.slice(7);
        if (remove) delete headers[name];
        else headers[name] = /^[\x20-\x7e]*$/.test(headerValue) ? headerValue : "x";
        continue;
      }
      const meta = () => (isObject(params._meta) ? params._meta : (params._meta = {}));
      const [holder, key] = target === "meta.version"
        ? [meta(), META_VERSION]
        : target === "meta.capabilities"
        ? [meta(), META_CAPABILITIES]
        : target.startsWith("params.")
        ? [params, target.slice(7)]
        : [message, target];
      if (remove) delete holder[key];
      else holder[key] = value;
      if (target !== "params" && holder !== message && !("params" in message)) message.params = params;
    }
    let body = serialize(message);
    let exact = true;
    switch (encoding) {
      case "array":
        body = `[${body}]`;
        exact = false;
        break;
      case "empty-array":
        body = "[]";
        exact = false;
        break;
      case "trailing":
        body += "}";
        exact = false;
        break;
      case "bom":
        body = `\uFEFF${body}`;
        exact = false;
        break;
      case "truncate":
        body = body.slice(0, Math.max(0, body.length - 3));
        exact = false;
        break;
      case "whitespace":
        body = `\n\t ${body} \r\n`;
        break;
      case "duplicate-key":
        body = body.replace(/^\{/, `{"method":"tools/call","params":{"name":"get_secret"},`);
        exact = false;
        break;
    }
    return probe({
      client: http ? "http" : "fetch",
      method: "POST",
      path: "/mcp",
      headers,
      body,
      note: `${modern ? "modern" : "2025"} ${seed.method} ${
        mutations.map((m) => `${m.remove ? "-" : "~"}${m.target}`).join(" ")
      } ${encoding}`,
      verdict: authorization?.verdict ?? "none",
      // The body is exactly this message's JSON (or, with duplicate keys, what JSON.parse keeps: the last).
      json: exact
        ? message
        : encoding === "duplicate-key"
        ? { method: "tools/call", params: { name: "get_secret" }, ...message }
        : undefined,
    });
  });
}

/** A protected or public tool called with every sort of credential, in both eras. */
function credentialCallArb(): fc.Arbitrary<Probe> {
  return fc.record({
    tool: fc.constantFrom("get_secret", "whoami", "revoke_auth_token", "get_secret"),
    modern: fc.boolean(),
    authorization: fc.option(authorizationArb(), { nil: undefined, freq: 8 }),
    http: viaHttpArb,
    id: fc.nat(),
  }).map(({ tool: asked, modern, authorization, http, id }) => {
    // A good token must not end the session the other probes rely on: it calls get_secret instead.
    const tool = asked === "revoke_auth_token" && mayPass(authorization?.verdict ?? "none") ? "get_secret" : asked;
    const params: Record<string, unknown> = { name: tool, arguments: {} };
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (modern) {
      params._meta = { [META_VERSION]: MODERN, [META_CAPABILITIES]: {} };
      Object.assign(headers, { "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": tool });
    }
    if (authorization) headers.authorization = authorization.value;
    const rpc = { jsonrpc: "2.0", id, method: "tools/call", params };
    return probe({
      client: http ? "http" : "fetch",
      method: "POST",
      path: "/mcp",
      headers,
      body: JSON.stringify(rpc),
      note: `${tool} with a credential`,
      verdict: authorization?.verdict ?? "none",
      json: rpc,
    });
  });
}

function checkCredentialCall(p: Probe, r: Reply) {
  const tool = (p.json?.params as { name: string }).name;
  if (p.verdict === "maybe") return;
  if (p.verdict === "accept") {
    assert.equal(r.status, 200, `${tool} honours a valid token`);
    assert.ok(r.body.includes(tool === "whoami" ? "demo-user" : secretMarker), `${tool} answers as the signed-in user`);
  } else if (tool === "whoami") {
    assert.equal(r.status, 200, "a bad token never breaks a public tool");
    assert.match(r.body, /anonymous/, "a bad token counts as no token");
  } else {
    assert.equal(r.status, 401, `${tool} refuses a ${p.verdict === "none" ? "missing" : "bad"} token`);
  }
}

// ─── Protocol-level oddities (node:http only) ────────────────────────────────────────────────────

function protocolArb(): fc.Arbitrary<Probe> {
  return fc.record({
    method: fc.constantFrom(...PROTOCOL_METHODS, ...ODD_METHODS, "GET", "POST"),
    path: pathArb,
    headers: headersArb({ host: true }),
    oddity: fc.constantFrom(
      "none",
      "expect-continue",
      "expect-other",
      "big-header",
      "latin1-header",
      "chunked",
      "absolute-form",
      "many-headers",
    ),
    body: randomBodyArb,
  }).map(({ method, path, headers, oddity, body }) => {
    const h: Record<string, string> = { ...headers.headers };
    let target = path;
    switch (oddity) {
      case "expect-continue":
        h.expect = "100-continue";
        break;
      case "expect-other":
        h.expect = "x-teapot";
        break;
      case "big-header":
        h["x-big"] = "b".repeat(20_000);
        break;
      case "latin1-header":
        h["mcp-name"] = "caf\u00e9";
        h["x-latin"] = "\u00ff\u00fe";
        break;
      case "chunked":
        h["transfer-encoding"] = "chunked";
        break;
      case "absolute-form":
        target = `http://evil.example${path}`;
        break;
      case "many-headers":
        for (let i = 0; i < 150; i++) h[`x-h${i}`] = String(i);
        break;
    }
    return probe({
      client: "http",
      method,
      path: target,
      headers: h,
      body,
      note: `protocol: ${oddity}`,
      verdict: headers.verdict,
    });
  });
}

// ─── The tests ───────────────────────────────────────────────────────────────────────────────────

describe("fuzz: malformed requests against every endpoint", () => {
  before(async () => {
    // Access tokens outlive the run (slow machines), so a token's verdict never changes by expiry.
    server = await startServer({
      port: 0,
      host: "127.0.0.1",
      jwtSecret: JWT_SECRET,
      accessTokenTtlSeconds: 3600,
      log: () => {},
    });
    base = server.url;
    agent = new Agent({ keepAlive: true, maxSockets: BATCH });
    sent++;
    const registered = await post(
      "/register",
      JSON.stringify({ redirect_uris: [REDIRECT_URI], client_name: XSS[0] }),
      "application/json",
    );
    assert.equal(registered.status, 201, registered.body);
    dcrClientId = (JSON.parse(registered.body) as { client_id: string }).client_id;
    const live = await signIn();
    const secret = await callTool("get_secret", live.access);
    assert.equal(secret.status, 200, secret.body);
    const answer = JSON.parse(secret.body) as { result: { content: { text: string }[] } };
    secretMarker = answer.result.content[0].text.split("(")[0].trim();
    assert.ok(secretMarker.length >= 10, `a recognizable secret: ${secretMarker}`);
    revokedSession = await signIn();
    assert.equal((await callTool("revoke_auth_token", revokedSession.access)).status, 200);
    credentials = forgeCredentials(live, revokedSession);
  });

  after(async () => {
    agent?.destroy();
    await server?.close();
  });

  it("the landing page, both metadata documents and unknown paths survive anything", async () => {
    const paths = fc.oneof(
      {
        arbitrary: fc.constantFrom(
          "/",
          "/.well-known/oauth-authorization-server",
          "/.well-known/oauth-protected-resource",
          "/.well-known/oauth-protected-resource/mcp",
        ),
        weight: 3,
      },
      { arbitrary: fc.constantFrom(...ODD_PATHS), weight: 2 },
      { arbitrary: pathArb, weight: 2 },
    );
    await fc.assert(fc.asyncProperty(batchOf(anythingArb(paths)), (batch) => runBatch(batch, () => {})), runs(60));
  });

  it("/authorize: random queries and near-valid requests with one field broken; a GET never approves", async () => {
    const random = anythingArb(fc.constant("/authorize"), ["GET", "GET", "GET", "POST", "POST", "HEAD", "OPTIONS"]);
    await fc.assert(
      fc.asyncProperty(batchOf(random), (batch) =>
        runBatch(batch, (_p, r) => {
          assert.notEqual(r.status, 303, "random requests never get a decision through");
          assert.ok(!/[?&]code=/.test(r.headers.location ?? ""), "random requests never get a code");
        })),
      runs(20),
    );
    await fc.assert(fc.asyncProperty(batchOf(authorizeArb()), (batch) => runBatch(batch, checkAuthorize)), runs(60));
  });

  it("POST /authorize: consent forms with one thing broken; only a same-origin, intact form decides", async () => {
    // Each batch gets fresh consent tokens, one per request, so no request depends on another's.
    await fc.assert(
      fc.asyncProperty(fc.array(consentPlanArb(), { minLength: BATCH, maxLength: BATCH }), async (plans) => {
        const tokens = await Promise.all(plans.map((plan) =>
          consentToken(
            plan.client === "dcr" ? dcrClientId : cimdClientId,
            newVerifier(),
            plan.state ? CONSENT_STATE : undefined,
          )
        ));
        await runBatch(plans.map((plan, i) => consentProbe(plan, tokens[i])), checkConsent);
      }),
      runs(40),
    );
  });

  it("/token: random bodies and near-valid grants with one field broken; each credential spent once", async () => {
    const random = anythingArb(fc.constant("/token"), ["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]);
    await fc.assert(
      fc.asyncProperty(batchOf(random), (batch) =>
        runBatch(batch, (p, r) => {
          if (p.method === "POST") assert.ok(r.status === 400 || r.status === 413, "random bodies never buy tokens");
        })),
      runs(25),
    );
    // Each batch gets fresh material: three codes (one without redirect_uri at exchange) and one session.
    await fc.assert(
      fc.asyncProperty(fc.array(tokenPlanArb(), { minLength: BATCH - 5, maxLength: BATCH - 5 }), async (plans) => {
        const codes = await Promise.all([dcrClientId, cimdClientId, dcrClientId].map(async (clientId) => {
          const verifier = newVerifier();
          return { code: await mintCode(clientId, verifier), verifier, clientId };
        }));
        const material: Material = { codes, session: await signIn(cimdClientId) };
        await runBatch(plans.map((plan) => tokenProbe(plan, material)), checkToken, checkSingleUse);
      }),
      runs(50),
    );
  });

  it("/register: random bodies and near-valid metadata with one field broken", async () => {
    const random = anythingArb(fc.constant("/register"), ["POST", "POST", "POST", "GET", "DELETE"]);
    await fc.assert(
      fc.asyncProperty(batchOf(random), (batch) =>
        runBatch(batch, (p, r) => {
          if (p.method === "POST") assert.notEqual(r.status, 201, "random bodies never register");
        })),
      runs(15),
    );
    await fc.assert(fc.asyncProperty(batchOf(registerArb()), (batch) => runBatch(batch, checkRegister)), runs(30));
  });

  it("/mcp: random bodies and headers, near-valid JSON-RPC in both eras", async () => {
    const random = anythingArb(fc.constant("/mcp"), [
      "POST",
      "POST",
      "POST",
      "POST",
      "GET",
      "DELETE",
      "PUT",
      "HEAD",
      "OPTIONS",
    ]);
    await fc.assert(fc.asyncProperty(batchOf(random), (batch) => runBatch(batch, () => {})), runs(40));
    await fc.assert(fc.asyncProperty(batchOf(rpcArb()), (batch) => runBatch(batch, () => {})), runs(100));
  });

  it("/mcp: no broken, forged, foreign or revoked credential opens a protected tool, or breaks a public", async () => {
    // Earlier probes may have revoked the live session: forge against a fresh one, kept alive throughout.
    credentials = forgeCredentials(await signIn(), revokedSession);
    await fc.assert(
      fc.asyncProperty(batchOf(credentialCallArb()), (batch) => runBatch(batch, checkCredentialCall)),
      runs(40),
    );
  });

  it("odd methods and raw protocol oddities: no 5xx, and whatever carries CORS has the documented shape", async () => {
    await fc.assert(
      fc.asyncProperty(batchOf(protocolArb()), async (batch) => {
        // A connection of its own each: a CONNECT, a refused Expect or an oversized header leaves it unusable.
        const outcomes = await Promise.all(batch.map((p) => {
          sent++;
          return viaHttp(p, { agent: false }).then((r) => ({ r }), (error: unknown) => ({ error }));
        }));
        batch.forEach((p, i) => {
          const outcome = outcomes[i];
          if ("error" in outcome) {
            // Only two may go unanswered: a CONNECT (node:http hands it to a 'connect' listener, and there is
            // none), and oversized headers (refused with 431 and a close, which can reset the connection
            // while the client is still sending its body).
            assert.ok(
              p.method === "CONNECT" || p.note.endsWith("big-header"),
              `no answer (${String(outcome.error)}) to ${String(p)}`,
            );
            return;
          }
          const r = outcome.r;
          try {
            assert.ok(r.status < 500, `status ${r.status}`);
            // node:http answers what it cannot parse itself (no CORS, no content type); the rest is the server's.
            const fromNode = r.headers["access-control-allow-origin"] === undefined && !r.headers["content-type"];
            if (fromNode && [400, 413, 417, 431].includes(r.status)) return;
            if (hostRefused(p)) checkRefusedHost(p, r);
            else checkCommon(p, r);
          } catch (error) {
            throw new Error(
              `${(error as Error).message}\n  request: ${String(p)}\n  answer:  ${r.status} ${
                JSON.stringify(r.headers)
              } ${r.body.slice(0, 300)}`,
            );
          }
        });
      }),
      runs(20),
    );
  });

  it("malformed HTTP on a raw socket gets a 4xx or a closed connection, never a 5xx", async () => {
    const url = new URL(base);
    const raw = (data: string) =>
      new Promise<string>((resolve) => {
        sent++;
        const socket = connect(Number(url.port), url.hostname, () => socket.end(data));
        let received = "";
        socket.setEncoding("latin1");
        socket.on("data", (chunk: string) => void (received += chunk));
        socket.on("close", () => resolve(received));
        socket.on("error", () => resolve(received));
        socket.setTimeout(5000, () => socket.destroy());
      });
    const requests = [
      "GET / HTTP/1.1\r\n\r\n", // no Host
      "GET / HTTP/1.0\r\n\r\n",
      "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/9.9\r\nHost: x\r\n\r\n",
      "GET\r\n\r\n",
      "\r\n\r\n",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
      "zz\r\n{}\r\n0\r\n\r\n",
      "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
      "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
      "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n",
      "GET /mcp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for (const data of requests) {
      const answer = await raw(data);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1];
      if (status !== undefined) assert.ok(Number(status) < 500, `${JSON.stringify(data)} → ${answer.slice(0, 200)}`);
    }
  });

  it("bodies over 64 KiB get 413 in each endpoint's error shape", async () => {
    const big = "x".repeat(64 * 1024 + 1);
    for (const path of ["/token", "/register", "/mcp"]) {
      for (const chunked of [false, true]) {
        sent++;
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (chunked) headers["transfer-encoding"] = "chunked";
        let r: Reply;
        try {
          r = await viaHttp({
            client: "http",
            method: "POST",
            path,
            headers,
            body: big,
            note: "over the limit",
            verdict: "none",
          }, { agent: false });
        } catch (error) {
          // The server may close before the client has written everything; then the answer can be lost.
          assert.match(String(error), /ECONNRESET|EPIPE|socket hang up/);
          continue;
        }
        assert.equal(r.status, 413, `${path}${chunked ? " (chunked)" : ""}: ${r.status}`);
        assert.equal(r.headers["access-control-allow-origin"], "*");
        const error = JSON.parse(r.body) as Record<string, unknown>;
        if (path === "/mcp") assert.equal((error.error as { code: number }).code, -32600);
        else assert.equal(typeof error.error_description, "string");
      }
    }
    // Exactly at the limit is still read.
    sent++;
    const fits = await viaHttp({
      client: "http",
      method: "POST",
      path: "/mcp",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pad: "x".repeat(64 * 1024 - 10) }),
      note: "at the limit",
      verdict: "none",
    });
    assert.notEqual(fits.status, 413);
  });

  it("afterwards the server still completes a full flow: authorize → token → protected call → refresh", async () => {
    sent++;
    const landing = await viaFetch({
      client: "fetch",
      method: "GET",
      path: "/",
      headers: {},
      note: "landing",
      verdict: "none",
    });
    assert.equal(landing.status, 200);
    const verifier = newVerifier();
    const query = new URLSearchParams({
      response_type: "code",
      client_id: dcrClientId,
      redirect_uri: REDIRECT_URI,
      code_challenge: s256(verifier),
      code_challenge_method: "S256",
      state: "after",
      resource: `${base}/mcp`,
    });
    sent++;
    const consent = await viaFetch({
      client: "fetch",
      method: "GET",
      path: `/authorize?${query}`,
      headers: {},
      note: "consent",
      verdict: "none",
    });
    assert.equal(consent.status, 200);
    const form = consentForm(consent.body, base);
    assert.equal(form.action.href, `${base}/authorize`);
    sent++;
    const redirect = await viaFetch({
      client: "fetch",
      method: "POST",
      path: "/authorize",
      headers: { "content-type": FORM, origin: base, "sec-fetch-site": "same-origin" },
      body: new URLSearchParams({ consent: form.consent, decision: "approve" }).toString(),
      note: "approve",
      verdict: "none",
    });
    assert.equal(redirect.status, 303, redirect.body);
    const back = new URL(redirect.headers.location ?? "");
    assert.equal(back.searchParams.get("state"), "after");
    const code = back.searchParams.get("code") ?? "";
    sent++;
    const grant = await post(
      "/token",
      new URLSearchParams({
        grant_type: "authorization_code",
        code,
        code_verifier: verifier,
        client_id: dcrClientId,
        redirect_uri: REDIRECT_URI,
      }).toString(),
      "application/x-www-form-urlencoded",
    );
    assert.equal(grant.status, 200, grant.body);
    const tokens = JSON.parse(grant.body) as { access_token: string; refresh_token: string };
    const secret = await callTool("get_secret", tokens.access_token);
    assert.equal(secret.status, 200, secret.body);
    assert.ok(secret.body.includes(secretMarker));
    sent++;
    const refreshed = await post(
      "/token",
      new URLSearchParams({ grant_type: "refresh_token", refresh_token: tokens.refresh_token, client_id: dcrClientId })
        .toString(),
      "application/x-www-form-urlencoded",
    );
    assert.equal(refreshed.status, 200, refreshed.body);
    const again = await callTool("get_secret", (JSON.parse(refreshed.body) as { access_token: string }).access_token);
    assert.equal(again.status, 200, again.body);
  });

  it(`sent at least ${MIN_REQUESTS} requests, and nothing escaped as an unhandled rejection or exception`, () => {
    console.log(`fuzz: ${sent} requests sent`);
    assert.ok(sent >= MIN_REQUESTS, `only ${sent} requests`);
    assert.deepEqual(escaped.map(String), []);
  });
});
