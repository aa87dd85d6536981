// Black-box tests of server.ts: everything goes over HTTP against a server listening on a free port.
// One describe per endpoint; test names read like the specification; every assertion names the
// status and the error code. Runs under Node (`npx tsx --test server.test.ts`) and Deno 2
// (`npx deno test -A server.test.ts`).

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { SignJWT, decodeJwt, type JWTPayload } from "jose";
import { startServer, MemoryStore } from "./server.ts";
import {
  type Answer, CLIENT_ID, REDIRECT_URI, authorizeCode, authorizeUrl, callTool, pkcePair, postForm, postJson, request, rpc, signIn,
} from "./test/helpers.ts";

type Running = Awaited<ReturnType<typeof startServer>>;

// One server for most tests. Its secret is known here only so tests can forge tokens that are right
// in every way but one, and check that the one wrong thing is what gets them refused.
const SECRET = randomBytes(32).toString("hex");
let server: Running;
let base = ""; // http://127.0.0.1:PORT — also the issuer
let resource = ""; // base + "/mcp"

before(async () => {
  server = await startServer({ port: 0, host: "127.0.0.1", jwtSecret: SECRET, log: () => {} });
  base = server.url;
  resource = `${base}/mcp`;
});
after(() => server.close());

// ─── Assertions ──────────────────────────────────────────────────────────────────────────────────

/** An OAuth error: the status, `{error, error_description}` as JSON, and never a redirect. */
function assertOAuthError(answer: Answer, status: number, error: string) {
  assert.equal(answer.status, status, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error, error, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(typeof answer.json.error_description, "string", "error_description is a string");
  assert.equal(answer.headers.get("location"), null, "an error is never a redirect");
}

/** A JSON-RPC error answer: the HTTP status and the error code. */
function assertRpcError(answer: Answer, status: number, code: number) {
  assert.equal(answer.status, status, `expected HTTP ${status} with ${code}, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.jsonrpc, "2.0", `a JSON-RPC answer: ${answer.text}`);
  assert.equal(answer.json?.error?.code, code, `expected HTTP ${status} with ${code}, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json.result, undefined, "an error carries no result");
}

/** A JSON-RPC success: HTTP 200 and a result, no error. */
function assertRpcResult(answer: Answer) {
  assert.equal(answer.status, 200, `expected 200 with a result, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error, undefined, `expected no error, got ${answer.text}`);
  assert.equal(typeof answer.json?.result, "object", `expected a result: ${answer.text}`);
}

/** A token response: 200, no error, both tokens, no-store. */
function assertTokens(answer: Answer) {
  assert.equal(answer.status, 200, `expected 200 with tokens, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error, undefined, `expected no error, got ${answer.text}`);
  assert.equal(answer.json.token_type, "Bearer");
  assert.equal(typeof answer.json.access_token, "string");
  assert.equal(typeof answer.json.refresh_token, "string");
  assert.equal(answer.headers.get("cache-control"), "no-store");
}

/** The parameters of a `WWW-Authenticate: Bearer k="v", …` challenge. */
function challenge(answer: Answer): Record<string, string> {
  const header = answer.headers.get("www-authenticate") ?? "";
  assert.match(header, /^Bearer /, `a Bearer challenge, got "${header}"`);
  return Object.fromEntries([...header.matchAll(/([\w-]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

/** 401, JSON-RPC error, a Bearer challenge naming the resource metadata; `error="invalid_token"` iff a token was sent. */
function assertUnauthorized(answer: Answer, tokenSent: boolean) {
  assert.equal(answer.status, 401, `expected 401, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error?.code, -32001, `expected 401 with -32001, got ${answer.text}`);
  const params = challenge(answer);
  assert.equal(params.resource_metadata, `${base}/.well-known/oauth-protected-resource/mcp`);
  assert.equal(params.error, tokenSent ? "invalid_token" : undefined, `error= in "${answer.headers.get("www-authenticate")}"`);
  assert.doesNotMatch(answer.text, /lazy auth works/, "no secret in a refused answer");
}

/** The protected tool answers with the secret. */
async function assertSecretServed(token: string, at = base) {
  const answer = await callTool(at, "get_secret", token);
  assertRpcResult(answer);
  assert.match(answer.json.result.content[0].text, /The secret is/);
}

// ─── Small tools ─────────────────────────────────────────────────────────────────────────────────

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** POST /token, form-encoded. */
const tokenRequest = (params: Record<string, string | undefined>, at = base) => postForm(`${at}/token`, params);

/** The code grant with everything right unless overridden. */
function exchange(authorization: { code: string; verifier: string; clientId: string; redirectUri: string }, overrides: Record<string, string | undefined> = {}, at = base) {
  return tokenRequest({
    grant_type: "authorization_code", code: authorization.code, code_verifier: authorization.verifier,
    client_id: authorization.clientId, redirect_uri: authorization.redirectUri, ...overrides,
  }, at);
}

const refreshRequest = (refreshToken: string, clientId = CLIENT_ID, at = base) =>
  tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken, client_id: clientId }, at);

/** GET /authorize with the given parameters replacing (or, when undefined, removing) the defaults. */
function authorize(overrides: Record<string, string | undefined> = {}) {
  const url = authorizeUrl(base);
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) url.searchParams.delete(name);
    else url.searchParams.set(name, value);
  }
  return request(url);
}

/** A JWT signed with `key` (the server's secret by default), with the given `typ` and claims. */
function forge(claims: JWTPayload, options: { typ?: string; key?: string } = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: options.typ ?? "at+jwt" })
    .sign(new TextEncoder().encode(options.key ?? SECRET));
}

/** The claims of an access token this server would issue, valid for a minute. */
function accessClaims(overrides: JWTPayload = {}): JWTPayload {
  const now = nowSeconds();
  return {
    iss: base, sub: "demo-user", aud: resource, iat: now, exp: now + 60, jti: randomBytes(8).toString("hex"),
    client_id: CLIENT_ID, scope: "mcp", sid: randomBytes(8).toString("hex"), ...overrides,
  };
}

// ─── /authorize ──────────────────────────────────────────────────────────────────────────────────

describe("/authorize", () => {
  test("Authorize without PKCE → 400", async () => {
    assertOAuthError(await authorize({ code_challenge: undefined, code_challenge_method: undefined }), 400, "invalid_request");
  });

  test("Authorize with plain method → 400", async () => {
    const { verifier } = pkcePair(); // with plain, the challenge is the verifier itself
    assertOAuthError(await authorize({ code_challenge: verifier, code_challenge_method: "plain" }), 400, "invalid_request");
  });
});

// ─── /token ──────────────────────────────────────────────────────────────────────────────────────

describe("/token", () => {
  test("Token exchange without code_verifier → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    assertOAuthError(await exchange(authorization, { code_verifier: undefined }), 400, "invalid_grant");
  });

  test("Auth-code replay (second exchange of the same code) → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    assertTokens(await exchange(authorization));
    assertOAuthError(await exchange(authorization), 400, "invalid_grant");
  });

  test("Token exchange with mismatched redirect_uri → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    assertOAuthError(await exchange(authorization, { redirect_uri: "http://127.0.0.1:8765/other" }), 400, "invalid_grant");
  });

  test("Token exchange with verifier + matching redirect_uri → success", async () => {
    const authorization = await authorizeCode(base);
    const answer = await exchange(authorization);
    assertTokens(answer);
    await assertSecretServed(answer.json.access_token);
  });

  test("Token exchange with verifier and no redirect_uri (OAuth 2.1 style) → success", async () => {
    const authorization = await authorizeCode(base);
    const answer = await exchange(authorization, { redirect_uri: undefined });
    assertTokens(answer);
    await assertSecretServed(answer.json.access_token);
  });
});
