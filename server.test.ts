// Black-box tests of server.ts: everything goes over HTTP against a server listening on a free port.
// One describe per endpoint; test names read like the specification; every assertion names the
// status and the error code. Runs under Node (`npx tsx --test server.test.ts`) and Deno 2
// (`npx deno test -A server.test.ts`).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { fileURLToPath } from "node:url";
import { decodeJwt, type JWTPayload, SignJWT } from "jose";
import { MemoryStore, startServer } from "./server.ts";
import {
  type Answer,
  authorizeCode,
  authorizeUrl,
  callTool,
  CLIENT_ID,
  clientDocuments,
  consentPage,
  decide,
  decodeHtmlAttribute,
  pkcePair,
  postForm,
  postJson,
  REDIRECT_URI,
  request,
  rpc,
  signIn,
} from "./test/helpers.ts";

type Running = Awaited<ReturnType<typeof startServer>>;

/** Every tool the server offers, by name in sorted order: what tools/list answers in either protocol era. */
const TOOL_NAMES = ["elicit_by_error", "elicit_url", "get_secret", "revoke_auth_token", "show_auth_button", "whoami"];

// One server for most tests. Its secret is known here only so tests can forge tokens that are right
// in every way but one, and check that the one wrong thing is what gets them refused.
const SECRET = randomBytes(32).toString("hex");
let server: Running;
let base = ""; // http://127.0.0.1:PORT — also the issuer
let resource = ""; // base + "/mcp"
// The in-memory store forgets on restart, so the server binds its codes and tokens to this process with a
// `mem` claim; forgeries right in every way carry it too (read off a real token).
let memoryId: unknown;

before(async () => {
  server = await startServer({ port: 0, host: "127.0.0.1", jwtSecret: SECRET, log: () => {} });
  base = server.url;
  resource = `${base}/mcp`;
  memoryId = decodeJwt((await signIn(base)).access_token).mem;
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
  assert.equal(
    answer.json?.error?.code,
    code,
    `expected HTTP ${status} with ${code}, got ${answer.status}: ${answer.text}`,
  );
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

/** 401, JSON-RPC error, a Bearer challenge naming the resource metadata; `error="invalid_token"` iff a token came. */
function assertUnauthorized(answer: Answer, tokenSent: boolean) {
  assert.equal(answer.status, 401, `expected 401, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error?.code, -32001, `expected 401 with -32001, got ${answer.text}`);
  const params = challenge(answer);
  assert.equal(params.resource_metadata, `${base}/.well-known/oauth-protected-resource/mcp`);
  assert.equal(
    params.error,
    tokenSent ? "invalid_token" : undefined,
    `error= in "${answer.headers.get("www-authenticate")}"`,
  );
  assert.doesNotMatch(answer.text, /lazy auth works/, "no secret in a refused answer");
}

/** The protected tool answers with the secret. */
async function assertSecretServed(token: string, at = base) {
  const answer = await callTool(at, "get_secret", token);
  assertRpcResult(answer);
  assert.match(answer.json.result.content[0].text, /The secret is/);
}

// ─── Small tools ─────────────────────────────────────────────────────────────────────────────────

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** POST /token, form-encoded. */
const tokenRequest = (params: Record<string, string | undefined>, at = base) => postForm(`${at}/token`, params);

/** The code grant with everything right unless overridden. */
function exchange(
  authorization: { code: string; verifier: string; clientId: string; redirectUri: string },
  overrides: Record<string, string | undefined> = {},
  at = base,
) {
  return tokenRequest({
    grant_type: "authorization_code",
    code: authorization.code,
    code_verifier: authorization.verifier,
    client_id: authorization.clientId,
    redirect_uri: authorization.redirectUri,
    ...overrides,
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

/** An unsigned JWT (`alg: none`) with the given `typ` and claims. */
function unsigned(claims: JWTPayload, typ: string): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none", typ })}.${part(claims)}.`;
}

/** The claims of an access token this server would issue, valid for a minute. */
function accessClaims(overrides: JWTPayload = {}): JWTPayload {
  const now = nowSeconds();
  return {
    iss: base,
    sub: "demo-user",
    aud: resource,
    iat: now,
    exp: now + 60,
    jti: randomBytes(8).toString("hex"),
    client_id: CLIENT_ID,
    scope: "mcp",
    sid: randomBytes(8).toString("hex"),
    mem: memoryId,
    ...overrides,
  };
}

/** The 303 a consent decision answers with: its Location, parsed. */
function assertSeeOther(answer: Answer): URL {
  assert.equal(answer.status, 303, `expected 303 back to the client, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.headers.get("access-control-allow-origin"), null, "no CORS on an /authorize answer");
  return new URL(answer.headers.get("location") ?? "");
}

/** A GET with an explicit Host header (fetch does not let one set it). */
function getWithHost(path: string, host: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const outgoing = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname, headers: { host } },
      (incoming) => {
        let text = "";
        incoming.setEncoding("utf8").on("data", (chunk: string) => (text += chunk)).on("end", () => {
          resolve({ status: incoming.statusCode ?? 0, json: JSON.parse(text) });
        });
      },
    );
    outgoing.on("error", reject).end();
  });
}

// ─── The lazy flow, end to end ───────────────────────────────────────────────────────────────────
// One host's journey, step by step. Each test sets up what its step needs (discovery, registration,
// sign-in) through the helpers below, so any step runs alone.

describe("The lazy flow", () => {
  const state = "<script>alert('state')</script>";
  const clientName = "<script>alert('name')</script>";

  /** Steps 2–3: the 401 names the resource metadata, which names the authorization server and its metadata. */
  async function discover() {
    const refused = await callTool(base, "get_secret");
    assertUnauthorized(refused, false);
    const resourceMetadataUrl = challenge(refused).resource_metadata;
    const resourceMetadata = await request(resourceMetadataUrl);
    assert.equal(resourceMetadata.status, 200, resourceMetadata.text);
    const [issuer] = resourceMetadata.json.authorization_servers;
    const metadata = await request(`${issuer}/.well-known/oauth-authorization-server`);
    assert.equal(metadata.status, 200, metadata.text);
    const authorizationServer: { issuer: string; authorization_endpoint: string; registration_endpoint: string } =
      metadata.json;
    return { resourceMetadataUrl, resourceMetadata: resourceMetadata.json, issuer, authorizationServer };
  }

  /** Step 4: the host registers at the registration_endpoint it discovered → 201 with a client_id. */
  async function register(registrationEndpoint: string) {
    const answer = await postJson(registrationEndpoint, { redirect_uris: [REDIRECT_URI], client_name: clientName });
    assert.equal(answer.status, 201, answer.text);
    assert.equal(answer.json.error, undefined);
    assert.equal(typeof answer.json.client_id, "string");
    return answer.json.client_id as string;
  }

  /** Steps 2–4: a host that has discovered the server and registered. */
  async function registeredHost() {
    const discovered = await discover();
    return { ...discovered, clientId: await register(discovered.authorizationServer.registration_endpoint) };
  }

  /** Steps 2–6: that host, signed in (the user approved; the code was exchanged with its verifier). */
  async function signedInHost() {
    const { clientId } = await registeredHost();
    return { clientId, tokens: await signIn(base, { clientId, state }) };
  }

  test("A public call works with no token: initialize, tools/list and whoami → 200", async () => {
    const initialize = await rpc(base, {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "test", version: "1" } },
    });
    assertRpcResult(initialize);
    assert.equal(initialize.json.result.protocolVersion, "2025-06-18");
    const list = await rpc(base, { jsonrpc: "2.0", id: 2, method: "tools/list" });
    assertRpcResult(list);
    assert.deepEqual(list.json.result.tools.map((tool: { name: string }) => tool.name).sort(), TOOL_NAMES);
    const whoami = await callTool(base, "whoami");
    assertRpcResult(whoami);
    assert.match(whoami.json.result.content[0].text, /anonymous/);
  });

  test("A protected call without a token → 401 whose resource_metadata URL resolves to the metadata", async () => {
    const answer = await callTool(base, "get_secret");
    assertUnauthorized(answer, false);
    const metadata = await request(challenge(answer).resource_metadata);
    assert.equal(metadata.status, 200, metadata.text);
    assert.equal(metadata.json.resource, resource);
  });

  test("The protected-resource metadata leads to the authorization server metadata", async () => {
    const { resourceMetadata, issuer, authorizationServer } = await discover();
    assert.deepEqual(resourceMetadata.authorization_servers, [base]);
    assert.equal(authorizationServer.issuer, issuer);
    assert.equal(authorizationServer.authorization_endpoint, `${base}/authorize`);
    assert.equal(authorizationServer.registration_endpoint, `${base}/register`);
  });

  test("The host registers at the registration_endpoint → 201 with a client_id", async () => {
    const { authorizationServer } = await discover();
    const clientId = await register(authorizationServer.registration_endpoint);
    assert.notEqual(clientId, "");
  });

  test("/authorize → 200 consent page: a form POSTing a consent token, Approve, Deny; markup escaped", async () => {
    const { clientId, authorizationServer } = await registeredHost();
    const url = authorizeUrl(base, { clientId, state });
    assert.equal(`${url.origin}${url.pathname}`, authorizationServer.authorization_endpoint);
    const { page, form } = await consentPage(url);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.ok(!page.text.includes("<script>alert"), "no echoed value is live markup");
    assert.ok(
      page.text.includes("&#60;script&#62;alert(&#39;name&#39;)&#60;/script&#62;"),
      "the client name is shown, escaped",
    );
    assert.equal(form.action.href, authorizationServer.authorization_endpoint, "the form posts back to /authorize");
    assert.equal(typeof decodeJwt(form.consent).exp, "number", "the consent token is a JWT that expires");
    assert.match(page.text, /<button\b[^>]*\bname="decision"[^>]*\bvalue="approve"[^>]*>\s*Approve\s*<\/button>/);
    assert.match(page.text, /<button\b[^>]*\bname="decision"[^>]*\bvalue="deny"[^>]*>\s*Deny\s*<\/button>/);
  });

  test("Approve (the form's POST) → 303 to the redirect_uri with code, state and iss", async () => {
    const { clientId, authorizationServer } = await registeredHost();
    const { form } = await consentPage(authorizeUrl(base, { clientId, state }));
    const location = assertSeeOther(await decide(form, "approve"));
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.equal(location.searchParams.get("state"), state);
    assert.equal(location.searchParams.get("iss"), authorizationServer.issuer);
    assert.equal(location.searchParams.get("error"), null);
    assert.notEqual(location.searchParams.get("code") ?? "", "");
  });

  test("The code and its verifier → 200 with access and refresh tokens", async () => {
    const { clientId } = await registeredHost();
    const pkce = pkcePair();
    const { code } = await authorizeCode(base, { clientId, state, pkce });
    const answer = await exchange({ code, verifier: pkce.verifier, clientId, redirectUri: REDIRECT_URI }, { resource });
    assertTokens(answer);
    assert.equal(answer.json.scope, "mcp");
    assert.equal(answer.json.expires_in, 30);
  });

  test("Retrying the protected call with the access token → 200 with the secret", async () => {
    const { tokens } = await signedInHost();
    await assertSecretServed(tokens.access_token);
    const whoami = await callTool(base, "whoami", tokens.access_token);
    assertRpcResult(whoami);
    assert.equal(
      whoami.json.result.content[0].text,
      `You are demo-user, signed in through ${clientName}.`,
      "whoami names the user and the registered client's name",
    );
  });

  test("The refresh token → 200 with a new access token and a new refresh token", async () => {
    const { clientId, tokens: first } = await signedInHost();
    const answer = await refreshRequest(first.refresh_token, clientId);
    assertTokens(answer);
    assert.notEqual(answer.json.access_token, first.access_token);
    assert.notEqual(answer.json.refresh_token, first.refresh_token);
    await assertSecretServed(answer.json.access_token);
  });

  test("revoke_auth_token → the session's access and refresh tokens stop working", async () => {
    const { clientId, tokens: first } = await signedInHost();
    const refreshed = await refreshRequest(first.refresh_token, clientId);
    assertTokens(refreshed);
    const second: { access_token: string; refresh_token: string } = refreshed.json;
    await assertSecretServed(second.access_token);
    const revoke = await callTool(base, "revoke_auth_token", second.access_token);
    assertRpcResult(revoke);
    assertUnauthorized(await callTool(base, "get_secret", second.access_token), true);
    assertUnauthorized(await callTool(base, "get_secret", first.access_token), true);
    assertOAuthError(await refreshRequest(second.refresh_token, clientId), 400, "invalid_grant");
  });
});

// ─── Discovery metadata ──────────────────────────────────────────────────────────────────────────

describe("Discovery metadata", () => {
  test("Authorization server metadata (RFC 8414) lists every field the design names", async () => {
    const answer = await request(`${base}/.well-known/oauth-authorization-server`);
    assert.equal(answer.status, 200, answer.text);
    assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(answer.json, {
      issuer: base,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      registration_endpoint: `${base}/register`,
      scopes_supported: ["mcp"],
      response_types_supported: ["code"],
      grant_types_supported: ["authorization_code", "refresh_token"],
      code_challenge_methods_supported: ["S256"],
      token_endpoint_auth_methods_supported: ["none"],
      client_id_metadata_document_supported: true,
      authorization_response_iss_parameter_supported: true,
    });
  });

  for (const path of ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]) {
    test(`Protected-resource metadata at ${path} names <base>/mcp and this authorization server`, async () => {
      const answer = await request(`${base}${path}`);
      assert.equal(answer.status, 200, answer.text);
      assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
      assert.deepEqual(answer.json, {
        resource,
        authorization_servers: [base],
        scopes_supported: ["mcp"],
        bearer_methods_supported: ["header"],
      });
    });
  }

  test("URLs follow a loopback Host header; any other Host → 403 invalid_request (DNS rebinding)", async () => {
    const port = new URL(base).port;
    const loopback = await getWithHost("/.well-known/oauth-authorization-server", `localhost:${port}`);
    assert.equal(loopback.status, 200);
    assert.equal(loopback.json.issuer, `http://localhost:${port}`);
    for (const host of ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80", "a b", "["]) {
      const answer = await getWithHost("/.well-known/oauth-protected-resource/mcp", host);
      assert.equal(answer.status, 403, `Host: ${host}`);
      assert.equal(answer.json.error, "invalid_request", `Host: ${host}`);
    }
  });

  test("With publicUrl set, the metadata names it whatever the Host header says", async () => {
    const behindProxy = await startServer({
      port: 0,
      host: "127.0.0.1",
      publicUrl: "https://mcp.example.com",
      log: () => {},
    });
    try {
      const answer = await request(`${behindProxy.url}/.well-known/oauth-authorization-server`);
      assert.equal(answer.status, 200, answer.text);
      assert.equal(answer.json.issuer, "https://mcp.example.com");
      assert.equal(answer.json.token_endpoint, "https://mcp.example.com/token");
      const resourceMetadata = await request(`${behindProxy.url}/.well-known/oauth-protected-resource/mcp`);
      assert.equal(resourceMetadata.json.resource, "https://mcp.example.com/mcp");
    } finally {
      await behindProxy.close();
    }
  });
});

// ─── /authorize ──────────────────────────────────────────────────────────────────────────────────
// Errors before the client is trusted are 400 JSON, never a redirect (assertOAuthError checks there
// is no Location header).

describe("/authorize", () => {
  // A registered client's redirect_uri is checked first for its form (https, or http on loopback), then
  // against what it registered: the form rules below are shown with one.
  let registeredClient = "";
  before(async () => {
    const registered = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI] });
    assert.equal(registered.status, 201, registered.text);
    registeredClient = registered.json.client_id;
  });

  test("Authorize without PKCE → 400", async () => {
    assertOAuthError(
      await authorize({ code_challenge: undefined, code_challenge_method: undefined }),
      400,
      "invalid_request",
    );
  });

  test("Authorize with plain method → 400", async () => {
    const { verifier } = pkcePair(); // with plain, the challenge is the verifier itself
    assertOAuthError(
      await authorize({ code_challenge: verifier, code_challenge_method: "plain" }),
      400,
      "invalid_request",
    );
  });

  test("A well-formed request → 200 consent page (the control for the rejections below)", async () => {
    const answer = await authorize();
    assert.equal(answer.status, 200, answer.text);
    assert.match(answer.headers.get("content-type") ?? "", /^text\/html/);
  });

  test("code_challenge_method S256 without a code_challenge → 400 invalid_request", async () => {
    assertOAuthError(await authorize({ code_challenge: undefined }), 400, "invalid_request");
  });

  test("A code_challenge that is not 43 base64url characters → 400 invalid_request", async () => {
    const good = pkcePair().challenge;
    for (
      const challenge of [
        good.slice(0, 42),
        `${good}A`,
        `${good.slice(0, 42)}+`,
        `${good.slice(0, 42)}=`,
        `${good.slice(0, 42)}/`,
      ]
    ) {
      assertOAuthError(await authorize({ code_challenge: challenge }), 400, "invalid_request");
    }
  });

  test("Missing redirect_uri → 400 invalid_request", async () => {
    assertOAuthError(await authorize({ client_id: registeredClient, redirect_uri: undefined }), 400, "invalid_request");
  });

  test("A redirect_uri that is neither https nor http on a loopback host → 400 invalid_request", async () => {
    for (
      const uri of [
        "http://app.example/callback",
        "http://localhost.evil.example/callback",
        "http://127.0.0.1.evil.example/callback",
        "javascript:alert(1)",
        "com.example.app:/callback",
        "ftp://127.0.0.1/callback",
        "/callback",
      ]
    ) {
      assertOAuthError(await authorize({ client_id: registeredClient, redirect_uri: uri }), 400, "invalid_request");
    }
  });

  test("A redirect_uri with a fragment → 400 invalid_request", async () => {
    for (const uri of ["https://app.example/callback#frag", "http://127.0.0.1:8765/callback#"]) {
      assertOAuthError(await authorize({ client_id: registeredClient, redirect_uri: uri }), 400, "invalid_request");
    }
  });

  test("An https redirect_uri, or http on localhost, 127.x or [::1], listed by the client → 200", async () => {
    const uris = [
      "https://app.example/callback",
      "http://localhost:1234/cb",
      "http://127.0.0.2/cb",
      "http://[::1]:9/cb",
    ];
    const clientId = clientDocuments.client("/authorize/many-redirects.json", uris);
    for (const uri of uris) {
      const answer = await authorize({ client_id: clientId, redirect_uri: uri });
      assert.equal(answer.status, 200, `${uri}: ${answer.text}`);
    }
  });

  test("Registered redirect_uris match exactly: other path, port, query or host → 400 invalid_request", async () => {
    const registered = await postJson(`${base}/register`, { redirect_uris: ["https://app.example/callback"] });
    assert.equal(registered.status, 201, registered.text);
    const clientId = registered.json.client_id;
    assert.equal((await authorize({ client_id: clientId, redirect_uri: "https://app.example/callback" })).status, 200);
    for (
      const uri of [
        "https://app.example/callback/",
        "https://app.example/other",
        "https://app.example:8443/callback",
        "https://app.example/callback?x=1",
        "https://evil.example/callback",
        "http://127.0.0.1:8765/callback",
      ]
    ) {
      assertOAuthError(await authorize({ client_id: clientId, redirect_uri: uri }), 400, "invalid_request");
    }
  });

  test("A registered loopback redirect_uri matches on any port, but not on another path or host", async () => {
    const registered = await postJson(`${base}/register`, { redirect_uris: ["http://127.0.0.1:3000/callback"] });
    assert.equal(registered.status, 201, registered.text);
    const clientId = registered.json.client_id;
    for (
      const uri of ["http://127.0.0.1:3000/callback", "http://127.0.0.1:49152/callback", "http://127.0.0.1/callback"]
    ) {
      assert.equal((await authorize({ client_id: clientId, redirect_uri: uri })).status, 200, uri);
    }
    for (
      const uri of ["http://127.0.0.1:3000/other", "http://localhost:3000/callback", "https://127.0.0.1:3000/callback"]
    ) {
      assertOAuthError(await authorize({ client_id: clientId, redirect_uri: uri }), 400, "invalid_request");
    }
  });

  test("response_type other than code → 400 unsupported_response_type", async () => {
    for (const responseType of ["token", "code token", "id_token", undefined]) {
      assertOAuthError(await authorize({ response_type: responseType }), 400, "unsupported_response_type");
    }
  });

  test("A resource other than this server's /mcp → 400 invalid_target", async () => {
    for (const other of ["https://other.example/mcp", base, `${resource}/`, `${resource}x`, "http://localhost:1/mcp"]) {
      assertOAuthError(await authorize({ resource: other }), 400, "invalid_target");
    }
    assert.equal((await authorize({ resource: undefined })).status, 200, "resource may be left out");
  });

  test("A scope other than mcp → 400 invalid_scope", async () => {
    assertOAuthError(await authorize({ scope: "admin" }), 400, "invalid_scope");
    assertOAuthError(await authorize({ scope: "mcp admin" }), 400, "invalid_scope");
  });

  test("Missing client_id → 400 invalid_request", async () => {
    assertOAuthError(await authorize({ client_id: undefined }), 400, "invalid_request");
  });

  test("An unknown client_id (not a metadata-document URL, not a registered client) → 400 invalid_client", async () => {
    const forgedWithAnotherKey = await forge({ redirect_uris: [REDIRECT_URI] }, {
      typ: "client+jwt",
      key: "another secret that is at least 32 bytes",
    });
    const accessTokenShaped = await forge({ redirect_uris: [REDIRECT_URI] }, { typ: "at+jwt" }); // our key, wrong kind
    for (
      const clientId of [
        "not-a-url",
        "https://client.example",
        "https://client.example/",
        "http://client.example/client.json",
        "https://client.example/client.json#x",
        forgedWithAnotherKey,
        accessTokenShaped,
      ]
    ) {
      assertOAuthError(await authorize({ client_id: clientId }), 400, "invalid_client");
    }
  });

  test("A parameter sent twice → 400 invalid_request", async () => {
    for (const name of ["state", "redirect_uri", "code_challenge", "client_id"]) {
      const url = authorizeUrl(base, { state: "s" });
      url.searchParams.append(name, url.searchParams.get(name) ?? "");
      assertOAuthError(await request(url), 400, "invalid_request");
    }
  });

  test("A client name and a redirect_uri carrying markup are echoed HTML-escaped on the consent page", async () => {
    const redirectUri = `http://127.0.0.1:8765/cb?next="><script>alert(2)</script>`;
    const clientId = clientDocuments.client("/authorize/markup.json", [redirectUri], {
      name: "<script>alert(1)</script>",
    });
    const answer = await authorize({
      client_id: clientId,
      redirect_uri: redirectUri,
      state: `"><script>alert(3)</script>`,
    });
    assert.equal(answer.status, 200, answer.text);
    assert.ok(!/<script>alert/.test(answer.text), "no echoed value is live markup");
    assert.ok(answer.text.includes("&#60;script&#62;alert(1)&#60;/script&#62;"), "the client name is shown, escaped");
    assert.ok(
      answer.text.includes("cb?next=&#34;&#62;&#60;script&#62;alert(2)&#60;/script&#62;"),
      "the redirect is shown, escaped",
    );
  });

  test("The consent page: the client's name first (<strong>), its short id, the full one in <details>", async () => {
    const documentId = clientDocuments.client("/authorize/layout.json", [REDIRECT_URI], { name: "Layout & Co" });
    const registered = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: "Layout App" });
    assert.equal(registered.status, 201, registered.text);
    const document = new URL(documentId);
    const cases = [
      { clientId: documentId, name: "Layout & Co", shortId: `${document.host}${document.pathname}` },
      { clientId: registered.json.client_id as string, name: "Layout App", shortId: /registered:[A-Za-z0-9_-]{8}\b/ },
    ];
    for (const { clientId, name, shortId } of cases) {
      const answer = await authorize({ client_id: clientId });
      assert.equal(answer.status, 200, answer.text);
      const body = answer.text.slice(answer.text.search(/<body\b/i));
      const strong = /<strong>([^<]*)<\/strong>/.exec(body);
      assert.equal(decodeHtmlAttribute(strong?.[1] ?? ""), name, "the first <strong> is the client's name");
      const details = [...body.matchAll(/<details\b[^>]*>([\s\S]*?)<\/details>/gi)].map((m) => m[1]);
      assert.ok(
        details.some((content) => decodeHtmlAttribute(content).includes(clientId)),
        `the full client_id is inside a <details> element: ${details.join(" | ")}`,
      );
      const outside = decodeHtmlAttribute(body.replace(/<details\b[\s\S]*?<\/details>/gi, ""));
      const at = typeof shortId === "string" ? outside.indexOf(shortId) : outside.search(shortId);
      assert.ok(at !== -1, `the short id ${shortId} is shown outside <details>: ${outside}`);
      assert.ok(
        (strong?.index ?? Infinity) < body.indexOf("<details") && outside.indexOf(name) < at,
        "the name comes first, then the short id and the full one",
      );
      assert.ok(!outside.includes(clientId), "the full client_id is shown only inside <details>");
      assert.ok(outside.indexOf(name) < outside.indexOf(REDIRECT_URI), "the name comes before the redirect");
      assert.ok(body.includes("This demo has no sign-in: you approve as demo-user."), "the page says who approves");
    }
  });

  test("The consent page refuses framing and caching: X-Frame-Options, frame-ancestors 'none', no-store", async () => {
    const answer = await authorize();
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.headers.get("x-frame-options"), "DENY");
    assert.match(answer.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    assert.equal(answer.headers.get("cache-control"), "no-store");
  });

  test("Deny (the form's POST) → 303 to the redirect_uri with error=access_denied, state and iss", async () => {
    const { form } = await consentPage(authorizeUrl(base, { state: "xyz" }));
    const deny = assertSeeOther(await decide(form, "deny"));
    assert.equal(`${deny.origin}${deny.pathname}`, REDIRECT_URI);
    assert.equal(deny.searchParams.get("error"), "access_denied");
    assert.equal(deny.searchParams.get("state"), "xyz");
    assert.equal(deny.searchParams.get("iss"), base);
    assert.equal(deny.searchParams.get("code"), null);
  });

  test("Approve → 303 with code, state and iss equal to the metadata issuer (RFC 9207)", async () => {
    const { location } = await authorizeCode(base, { state: "s-1" });
    const metadata = await request(`${base}/.well-known/oauth-authorization-server`);
    assert.equal(location.searchParams.get("iss"), metadata.json.issuer);
    assert.equal(location.searchParams.get("state"), "s-1");
    assert.ok(location.searchParams.get("code"));
    const noState = await authorizeCode(base);
    assert.equal(noState.location.searchParams.has("state"), false, "no state when none was sent");
    assert.equal(noState.location.searchParams.get("iss"), base);
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
    assertOAuthError(
      await exchange(authorization, { redirect_uri: "http://127.0.0.1:8765/other" }),
      400,
      "invalid_grant",
    );
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

  test("Every /token answer, success or error, carries Cache-Control: no-store", async () => {
    const tokens = await signIn(base);
    const answers: Record<string, Answer> = {
      "code grant": await exchange(await authorizeCode(base)),
      "refresh grant": await refreshRequest(tokens.refresh_token),
      "invalid_request (no grant_type)": await tokenRequest({ code: "x" }),
      "invalid_request (content type)": await request(`${base}/token`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "grant_type=authorization_code",
      }),
      "invalid_grant": await tokenRequest({
        grant_type: "authorization_code",
        code: "not-a-code",
        code_verifier: pkcePair().verifier,
        client_id: CLIENT_ID,
      }),
      "invalid_target": await exchange(await authorizeCode(base), { resource: "https://other.example/mcp" }),
      "unsupported_grant_type": await tokenRequest({ grant_type: "client_credentials", client_id: CLIENT_ID }),
    };
    for (const [what, answer] of Object.entries(answers)) {
      assert.equal(
        answer.headers.get("cache-control"),
        "no-store",
        `${what} (${answer.status} ${answer.json?.error}) carries no-store`,
      );
    }
    assert.deepEqual(Object.values(answers).map((answer) => `${answer.status} ${answer.json?.error}`), [
      "200 undefined",
      "200 undefined",
      "400 invalid_request",
      "400 invalid_request",
      "400 invalid_grant",
      "400 invalid_target",
      "400 unsupported_grant_type",
    ]);
  });

  test("413 from /token (an oversized token request) carries Cache-Control: no-store", async () => {
    const oversized = await tokenRequest({ grant_type: "authorization_code", code: "x".repeat(70 * 1024) });
    assertOAuthError(oversized, 413, "invalid_request");
    assert.equal(oversized.headers.get("cache-control"), "no-store", "413 from /token carries no-store");
  });

  test("405 from /token (GET) carries Cache-Control: no-store", async () => {
    const get = await request(`${base}/token`);
    assertOAuthError(get, 405, "method_not_allowed");
    assert.equal(get.headers.get("cache-control"), "no-store", "405 from /token carries no-store");
  });

  test("Token exchange without client_id → invalid_request", async () => {
    assertOAuthError(await exchange(await authorizeCode(base), { client_id: undefined }), 400, "invalid_request");
  });

  test("Token exchange by a client_id other than the code's → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    assertOAuthError(
      await exchange(authorization, { client_id: "https://other-client.example/client.json" }),
      400,
      "invalid_grant",
    );
  });

  test("A code replay revokes the first exchange's session: access → 401, refresh → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    const first = await exchange(authorization);
    assertTokens(first);
    await assertSecretServed(first.json.access_token);
    assertOAuthError(await exchange(authorization), 400, "invalid_grant");
    assertUnauthorized(await callTool(base, "get_secret", first.json.access_token), true);
    assertOAuthError(await refreshRequest(first.json.refresh_token), 400, "invalid_grant");
  });

  test("Auth-code replay racing the first exchange still revokes the session that exchange minted", async () => {
    const authorization = await authorizeCode(base);
    const answers = await Promise.all([exchange(authorization), exchange(authorization)]);
    const winners = answers.filter((answer) => answer.status === 200);
    assert.equal(
      winners.length,
      1,
      `exactly one exchange succeeds: ${answers.map((answer) => answer.text).join(" | ")}`,
    );
    assertOAuthError(answers.find((answer) => answer.status !== 200) as Answer, 400, "invalid_grant");
    assertUnauthorized(await callTool(base, "get_secret", winners[0].json.access_token), true);
    assertOAuthError(await refreshRequest(winners[0].json.refresh_token), 400, "invalid_grant");
  });

  // Each malformed verifier below is given its own S256 challenge, so only the format rule can refuse it.
  test("A code_verifier under 43 characters → invalid_grant, even when its S256 matches the challenge", async () => {
    const pkce = pkcePair(randomBytes(32).toString("base64url").slice(0, 42));
    assertOAuthError(await exchange(await authorizeCode(base, { pkce })), 400, "invalid_grant");
  });

  test("A code_verifier over 128 characters → invalid_grant, even when its S256 matches the challenge", async () => {
    const pkce = pkcePair(randomBytes(100).toString("base64url").slice(0, 129));
    assertOAuthError(await exchange(await authorizeCode(base, { pkce })), 400, "invalid_grant");
  });

  test("A code_verifier with a character outside [A-Za-z0-9-._~] → invalid_grant, though S256 matches", async () => {
    for (const bad of ["+", "/", "=", " ", "%", "é"]) {
      const pkce = pkcePair(`${randomBytes(32).toString("base64url").slice(0, 42)}${bad}`);
      assertOAuthError(await exchange(await authorizeCode(base, { pkce })), 400, "invalid_grant");
    }
  });

  test("A code_verifier of exactly 43 or 128 unreserved characters (with - . _ ~) → success", async () => {
    for (const verifier of [`-._~${"a".repeat(39)}`, `-._~${"Z9".repeat(62)}`]) {
      assertTokens(await exchange(await authorizeCode(base, { pkce: pkcePair(verifier) })));
    }
  });

  test("A well-formed but wrong code_verifier → invalid_grant", async () => {
    const authorization = await authorizeCode(base);
    assertOAuthError(await exchange(authorization, { code_verifier: pkcePair().verifier }), 400, "invalid_grant");
  });

  test("Token exchange naming a resource other than this server's /mcp → invalid_target", async () => {
    for (const other of ["https://other.example/mcp", base]) {
      assertOAuthError(await exchange(await authorizeCode(base), { resource: other }), 400, "invalid_target");
    }
    assertTokens(await exchange(await authorizeCode(base), { resource }));
  });

  test("A code counts only with our signature, code typ, our issuer, a live exp → else invalid_grant", async () => {
    const pkce = pkcePair();
    const claims = (overrides: JWTPayload = {}): JWTPayload => ({
      iss: base,
      iat: nowSeconds(),
      exp: nowSeconds() + 300,
      jti: randomBytes(8).toString("hex"),
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      code_challenge: pkce.challenge,
      scope: "mcp",
      resource,
      mem: memoryId,
      ...overrides,
    });
    const redeem = (code: string) =>
      exchange({ code, verifier: pkce.verifier, clientId: CLIENT_ID, redirectUri: REDIRECT_URI });
    assertTokens(await redeem(await forge(claims(), { typ: "code+jwt" }))); // control: right in every way
    assertOAuthError(
      await redeem(await forge(claims(), { typ: "code+jwt", key: "another secret that is at least 32 bytes" })),
      400,
      "invalid_grant",
    );
    assertOAuthError(await redeem(await forge(claims(), { typ: "at+jwt" })), 400, "invalid_grant");
    assertOAuthError(await redeem(await forge(claims(), { typ: "refresh+jwt" })), 400, "invalid_grant");
    assertOAuthError(
      await redeem(await forge(claims({ iss: "http://localhost:1" }), { typ: "code+jwt" })),
      400,
      "invalid_grant",
    );
    assertOAuthError(
      await redeem(await forge(claims({ exp: nowSeconds() - 5 }), { typ: "code+jwt" })),
      400,
      "invalid_grant",
    );
    assertOAuthError(await redeem(unsigned(claims(), "code+jwt")), 400, "invalid_grant");
  });

  test("Refresh rotation: a new refresh token each time; reusing one → invalid_grant, session revoked", async () => {
    const tokens = await signIn(base);
    const rotated = await refreshRequest(tokens.refresh_token);
    assertTokens(rotated);
    const newest = await refreshRequest(rotated.json.refresh_token);
    assertTokens(newest);
    await assertSecretServed(newest.json.access_token);
    assertOAuthError(await refreshRequest(tokens.refresh_token), 400, "invalid_grant");
    assertUnauthorized(await callTool(base, "get_secret", newest.json.access_token), true);
    assertOAuthError(await refreshRequest(newest.json.refresh_token), 400, "invalid_grant");
  });

  test("Refresh with a client_id other than the token's → invalid_grant", async () => {
    const tokens = await signIn(base);
    assertOAuthError(
      await refreshRequest(tokens.refresh_token, "https://other-client.example/client.json"),
      400,
      "invalid_grant",
    );
  });

  test("Refresh naming a resource other than /mcp → invalid_target; the refresh token is not spent", async () => {
    const tokens = await signIn(base);
    const refresh = { grant_type: "refresh_token", refresh_token: tokens.refresh_token, client_id: CLIENT_ID };
    assertOAuthError(await tokenRequest({ ...refresh, resource: "https://other.example/mcp" }), 400, "invalid_target");
    assertTokens(await tokenRequest({ ...refresh, resource }));
  });

  test("An access token presented as a refresh token → invalid_grant", async () => {
    const tokens = await signIn(base);
    assertOAuthError(await refreshRequest(tokens.access_token), 400, "invalid_grant");
    const foreign = await forge({
      iss: base,
      jti: "j",
      sid: "s",
      client_id: CLIENT_ID,
      scope: "mcp",
      exp: nowSeconds() + 60,
    }, {
      typ: "refresh+jwt",
      key: "another secret that is at least 32 bytes",
    });
    assertOAuthError(await refreshRequest(foreign), 400, "invalid_grant");
  });

  test("Refresh without refresh_token or without client_id → invalid_request", async () => {
    const tokens = await signIn(base);
    assertOAuthError(await tokenRequest({ grant_type: "refresh_token", client_id: CLIENT_ID }), 400, "invalid_request");
    assertOAuthError(
      await tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh_token }),
      400,
      "invalid_request",
    );
  });

  test("Refresh lifetime is absolute (2 s): a late refresh keeps the exp; past the end → invalid_grant", async () => {
    const short = await startServer({ port: 0, host: "127.0.0.1", refreshTokenTtlSeconds: 2, log: () => {} });
    try {
      const asked = Date.now();
      const tokens = await signIn(short.url);
      const answered = Date.now();
      // exp claims are whole seconds, rounded up: the session ends 2 to 3 s after the sign-in.
      const sessionEnd = Number(decodeJwt(tokens.refresh_token).exp) * 1000;
      assert.ok(
        sessionEnd - asked >= 2000 && sessionEnd - answered <= 3000,
        `the session lasts about 2 s: ${sessionEnd - asked} ms`,
      );
      await sleep(sessionEnd - 1000 - Date.now()); // a second before the end: at least a second in
      const rotated = await refreshRequest(tokens.refresh_token, CLIENT_ID, short.url);
      assertTokens(rotated);
      assert.equal(
        decodeJwt(rotated.json.refresh_token).exp,
        decodeJwt(tokens.refresh_token).exp,
        "rotation keeps the session's exp",
      );
      await sleep(sessionEnd + 200 - Date.now());
      assertOAuthError(await refreshRequest(rotated.json.refresh_token, CLIENT_ID, short.url), 400, "invalid_grant");
    } finally {
      await short.close();
    }
  });

  test("Another grant type → unsupported_grant_type", async () => {
    for (
      const grantType of ["client_credentials", "password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"]
    ) {
      assertOAuthError(
        await tokenRequest({ grant_type: grantType, client_id: CLIENT_ID }),
        400,
        "unsupported_grant_type",
      );
    }
  });

  test("Missing grant_type or missing code → invalid_request", async () => {
    const authorization = await authorizeCode(base);
    assertOAuthError(await exchange(authorization, { grant_type: undefined }), 400, "invalid_request");
    assertOAuthError(await exchange(authorization, { code: undefined }), 400, "invalid_request");
  });

  test("A JSON body is accepted → success", async () => {
    const authorization = await authorizeCode(base);
    const answer = await postJson(`${base}/token`, {
      grant_type: "authorization_code",
      code: authorization.code,
      code_verifier: authorization.verifier,
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
    });
    assertTokens(answer);
    await assertSecretServed(answer.json.access_token);
  });

  test("A JSON body that is not an object of strings → 400 invalid_request", async () => {
    for (const body of [["grant_type", "authorization_code"], "grant_type=authorization_code", null]) {
      assertOAuthError(await postJson(`${base}/token`, body), 400, "invalid_request");
    }
    // Everything right but one non-string value, which the exchange itself would ignore.
    const authorization = await authorizeCode(base);
    const almost = {
      grant_type: "authorization_code",
      code: authorization.code,
      code_verifier: authorization.verifier,
      client_id: CLIENT_ID,
      scope: 5,
    };
    assertOAuthError(await postJson(`${base}/token`, almost), 400, "invalid_request");
  });

  test("A body that is neither form-encoded nor JSON → 400 invalid_request", async () => {
    const authorization = await authorizeCode(base);
    const body = new URLSearchParams({
      grant_type: "authorization_code",
      code: authorization.code,
      code_verifier: authorization.verifier,
      client_id: CLIENT_ID,
    }).toString();
    for (const type of ["text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencodedX"]) {
      assertOAuthError(
        await request(`${base}/token`, { method: "POST", headers: { "content-type": type }, body }),
        400,
        "invalid_request",
      );
    }
  });

  test("A form parameter sent twice → invalid_request", async () => {
    const authorization = await authorizeCode(base);
    const body = new URLSearchParams({
      grant_type: "authorization_code",
      code: authorization.code,
      code_verifier: authorization.verifier,
      client_id: CLIENT_ID,
    });
    body.append("client_id", CLIENT_ID); // the same value twice: only the repetition is wrong
    const answer = await request(`${base}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body,
    });
    assertOAuthError(answer, 400, "invalid_request");
  });

  test("Store down → 503 temporarily_unavailable, no-store, never tokens; /mcp never serves the secret", async () => {
    const down = () => Promise.reject(new Error("store down"));
    const failing = await startServer({
      port: 0,
      host: "127.0.0.1",
      jwtSecret: SECRET,
      log: () => {},
      store: { // a shared store (durable, like Redis) that is down: tokens it vouched for earlier reach it
        durable: true,
        spendOnce: down,
        startSession: down,
        rotateRefresh: down,
        revokeSession: down,
        isRevoked: down,
        raiseFlag: down,
        takeFlag: down,
      },
    });
    try {
      const at = failing.url;
      const authorization = await authorizeCode(at);
      const answer = await exchange(authorization, {}, at);
      assertOAuthError(answer, 503, "temporarily_unavailable");
      assert.equal(answer.headers.get("cache-control"), "no-store");
      const refresh = await forge({
        iss: at,
        jti: "j",
        sid: "s",
        client_id: CLIENT_ID,
        scope: "mcp",
        resource: `${at}/mcp`,
        exp: nowSeconds() + 60,
        session_end: nowSeconds() + 60,
      }, { typ: "refresh+jwt" });
      assertOAuthError(await refreshRequest(refresh, CLIENT_ID, at), 503, "temporarily_unavailable");
      const access = await forge(accessClaims({ iss: at, aud: `${at}/mcp` }));
      const call = await callTool(at, "get_secret", access);
      assertRpcError(call, 503, -32000);
      assert.doesNotMatch(call.text, /lazy auth works/);
    } finally {
      await failing.close();
    }
  });
});

// ─── /register ───────────────────────────────────────────────────────────────────────────────────

describe("/register", () => {
  const register = (metadata: unknown) => postJson(`${base}/register`, metadata);

  test("Registration → 201 with client_id, the redirect_uris and the public-client defaults", async () => {
    const answer = await register({ redirect_uris: ["https://app.example/callback"], client_name: "App" });
    assert.equal(answer.status, 201, answer.text);
    assert.equal(answer.json.error, undefined);
    assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(typeof answer.json.client_id, "string");
    assert.deepEqual(answer.json.redirect_uris, ["https://app.example/callback"]);
    assert.equal(answer.json.token_endpoint_auth_method, "none");
    assert.deepEqual(answer.json.grant_types, ["authorization_code", "refresh_token"]);
    assert.deepEqual(answer.json.response_types, ["code"]);
    assert.equal(typeof answer.json.client_id_issued_at, "number");
  });

  test("A registered client_id works at /authorize and /token with its redirect_uri, not with another", async () => {
    const answer = await register({ redirect_uris: [REDIRECT_URI] });
    assert.equal(answer.status, 201, answer.text);
    const clientId = answer.json.client_id;
    const tokens = await signIn(base, { clientId });
    await assertSecretServed(tokens.access_token);
    assertOAuthError(
      await authorize({ client_id: clientId, redirect_uri: "https://app.example/callback" }),
      400,
      "invalid_request",
    );
  });

  test("redirect_uris missing, empty, not URLs, http off loopback, fragment → 400 invalid_redirect_uri", async () => {
    for (
      const uris of [
        undefined,
        [],
        "https://app.example/callback",
        [42],
        ["not a url"],
        ["http://app.example/callback"],
        ["https://app.example/callback#frag"],
        ["https://app.example/ok", "javascript:alert(1)"],
      ]
    ) {
      assertOAuthError(await register({ redirect_uris: uris }), 400, "invalid_redirect_uri");
    }
  });

  test("application_type web with an http loopback redirect_uri → 400 invalid_redirect_uri", async () => {
    assertOAuthError(
      await register({ application_type: "web", redirect_uris: ["http://127.0.0.1:3000/callback"] }),
      400,
      "invalid_redirect_uri",
    );
  });

  test("application_type other than web or native → 400 invalid_client_metadata", async () => {
    for (const type of ["desktop", "", 1]) {
      assertOAuthError(
        await register({ application_type: type, redirect_uris: ["https://app.example/callback"] }),
        400,
        "invalid_client_metadata",
      );
    }
  });

  test("token_endpoint_auth_method other than none (client_secret_basic…) → 400 invalid_client_metadata", async () => {
    for (const method of ["client_secret_basic", "client_secret_post", "private_key_jwt"]) {
      const answer = await register({
        token_endpoint_auth_method: method,
        redirect_uris: ["https://app.example/callback"],
      });
      assertOAuthError(answer, 400, "invalid_client_metadata");
    }
  });

  test("grant_types or response_types beyond the code flow → 400 invalid_client_metadata", async () => {
    for (
      const extra of [
        { grant_types: ["client_credentials"] },
        { grant_types: ["authorization_code", "implicit"] },
        { grant_types: "authorization_code" },
        { response_types: ["token"] },
        { response_types: ["code", "id_token"] },
      ]
    ) {
      assertOAuthError(
        await register({ redirect_uris: ["https://app.example/callback"], ...extra }),
        400,
        "invalid_client_metadata",
      );
    }
    const full = await register({
      redirect_uris: ["https://app.example/callback"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
    });
    assert.equal(full.status, 201, full.text);
  });

  test("A client_name that is not a short string → 400 invalid_client_metadata", async () => {
    for (const name of [42, "x".repeat(201)]) {
      assertOAuthError(
        await register({ client_name: name, redirect_uris: ["https://app.example/callback"] }),
        400,
        "invalid_client_metadata",
      );
    }
  });

  test("A native client registered with a port-less loopback redirect_uri may use it on any port", async () => {
    const answer = await register({ application_type: "native", redirect_uris: ["http://127.0.0.1/callback"] });
    assert.equal(answer.status, 201, answer.text);
    const clientId = answer.json.client_id;
    for (const uri of ["http://127.0.0.1/callback", "http://127.0.0.1:51234/callback"]) {
      assert.equal((await authorize({ client_id: clientId, redirect_uri: uri })).status, 200, uri);
    }
    const tokens = await signIn(base, { clientId, redirectUri: "http://127.0.0.1:40000/callback" });
    await assertSecretServed(tokens.access_token);
  });

  test("A body not a JSON object → 400 invalid_client_metadata; another content type → 415, same error", async () => {
    for (const body of [["https://app.example/callback"], "x", null]) {
      assertOAuthError(await register(body), 400, "invalid_client_metadata");
    }
    const form = await request(`${base}/register`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "redirect_uris=https%3A%2F%2Fapp.example%2Fcb",
    });
    assertOAuthError(form, 415, "invalid_client_metadata");
  });
});

// ─── /mcp ────────────────────────────────────────────────────────────────────────────────────────

describe("/mcp", () => {
  const anotherKey = "another secret that is at least 32 bytes";

  test("A token crafted with every access-token claim right is accepted (the control for the forgeries)", async () => {
    await assertSecretServed(await forge(accessClaims()));
  });

  test("A refresh token as the bearer → 401 invalid_token", async () => {
    const tokens = await signIn(base);
    assertUnauthorized(await callTool(base, "get_secret", tokens.refresh_token), true);
  });

  test("An authorization code as the bearer → 401 invalid_token", async () => {
    const { code } = await authorizeCode(base);
    assertUnauthorized(await callTool(base, "get_secret", code), true);
  });

  test("A token of another kind (typ) carrying every access-token claim → 401 invalid_token", async () => {
    for (const typ of ["refresh+jwt", "code+jwt", "client+jwt", "JWT"]) {
      assertUnauthorized(await callTool(base, "get_secret", await forge(accessClaims(), { typ })), true);
    }
  });

  test("An unsigned (alg: none) token → 401 invalid_token", async () => {
    assertUnauthorized(await callTool(base, "get_secret", unsigned(accessClaims(), "at+jwt")), true);
  });

  test("A token signed with another key → 401 invalid_token", async () => {
    assertUnauthorized(await callTool(base, "get_secret", await forge(accessClaims(), { key: anotherKey })), true);
  });

  test("An expired token → 401 invalid_token", async () => {
    const claims = accessClaims({ iat: nowSeconds() - 60, exp: nowSeconds() - 5 });
    assertUnauthorized(await callTool(base, "get_secret", await forge(claims)), true);
  });

  test("A token for another audience or from another issuer → 401 invalid_token", async () => {
    for (
      const claims of [
        accessClaims({ aud: "https://other.example/mcp" }),
        accessClaims({ aud: base }),
        accessClaims({ aud: undefined }),
        accessClaims({ iss: "https://evil.example" }),
        accessClaims({ iss: undefined }),
      ]
    ) {
      assertUnauthorized(await callTool(base, "get_secret", await forge(claims)), true);
    }
  });

  test("A token without a session id (sid) → 401 invalid_token", async () => {
    assertUnauthorized(await callTool(base, "get_secret", await forge(accessClaims({ sid: undefined }))), true);
  });

  test("An Authorization header that is not a Bearer token → 401 invalid_token", async () => {
    const token = await forge(accessClaims());
    for (const authorization of [`Basic ${token}`, "Bearer", "Bearer ", `Bearer ${token} extra`, `${token}`]) {
      const answer = await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret" } }, {
        headers: { authorization },
      });
      assertUnauthorized(answer, true);
    }
  });

  test("An access token past its lifetime (1 s) → 401 invalid_token; a refresh gives a working one", async () => {
    const short = await startServer({ port: 0, host: "127.0.0.1", accessTokenTtlSeconds: 1, log: () => {} });
    try {
      const asked = Date.now();
      const tokens = await signIn(short.url);
      const answered = Date.now();
      assert.equal(tokens.expires_in, 1);
      await assertSecretServed(tokens.access_token, short.url);
      // exp is whole seconds, rounded up: the token lives at least 1 s and less than 2 s past its issue.
      const expiry = Number(decodeJwt(tokens.access_token).exp) * 1000;
      assert.ok(
        expiry - asked >= 1000 && expiry - answered <= 2000,
        `the token lasts about 1 s: ${expiry - asked} ms after the request`,
      );
      await sleep(expiry + 200 - Date.now());
      const expired = await callTool(short.url, "get_secret", tokens.access_token);
      assert.equal(expired.status, 401, expired.text);
      assert.equal(challenge(expired).error, "invalid_token");
      const refreshed = await refreshRequest(tokens.refresh_token, CLIENT_ID, short.url);
      assertTokens(refreshed);
      await assertSecretServed(refreshed.json.access_token, short.url);
    } finally {
      await short.close();
    }
  });

  test("An access token is honoured for its whole expires_in, even when issued just before a second ends", async () => {
    const short = await startServer({ port: 0, host: "127.0.0.1", accessTokenTtlSeconds: 1, log: () => {} });
    try {
      const authorization = await authorizeCode(short.url);
      // Issue the token 120 ms before the next whole second: the next instant whose milliseconds are 880.
      let lateInSecond = Math.floor(Date.now() / 1000) * 1000 + 880;
      if (lateInSecond < Date.now() + 50) lateInSecond += 1000;
      await sleep(lateInSecond - Date.now());
      const issued = Date.now();
      const answer = await exchange(authorization, {}, short.url);
      assertTokens(answer);
      assert.equal(answer.json.expires_in, 1);
      await sleep(issued + 700 - Date.now()); // well inside the advertised second
      await assertSecretServed(answer.json.access_token, short.url);
    } finally {
      await short.close();
    }
  });

  test('401 without a token has no error= parameter; with a rejected token it says error="invalid_token"', async () => {
    const none = await callTool(base, "get_secret");
    assertUnauthorized(none, false);
    assert.doesNotMatch(none.headers.get("www-authenticate") ?? "", /error=/);
    assertUnauthorized(await callTool(base, "get_secret", "not.a.token"), true);
    assertUnauthorized(await callTool(base, "revoke_auth_token"), false);
  });

  test("whoami reports anonymous without a valid token and the user with one", async () => {
    for (const token of [undefined, "not.a.token", await forge(accessClaims(), { key: anotherKey })]) {
      const answer = await callTool(base, "whoami", token);
      assertRpcResult(answer);
      assert.match(answer.json.result.content[0].text, /anonymous/);
    }
    // A metadata-document client is named by its document's host and path (its short label).
    const tokens = await signIn(base);
    const answer = await callTool(base, "whoami", tokens.access_token);
    assertRpcResult(answer);
    const document = new URL(CLIENT_ID);
    assert.equal(
      answer.json.result.content[0].text,
      `You are demo-user, signed in through ${document.host}${document.pathname}.`,
    );
    // A registered client by its client_name, or, when it gave none, as "a registered client".
    for (const [name, shown] of [["Whoami App", "Whoami App"], [undefined, "a registered client"]]) {
      const registered = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: name });
      assert.equal(registered.status, 201, registered.text);
      const signedIn = await signIn(base, { clientId: registered.json.client_id });
      const whoami = await callTool(base, "whoami", signedIn.access_token);
      assertRpcResult(whoami);
      assert.equal(whoami.json.result.content[0].text, `You are demo-user, signed in through ${shown}.`);
    }
  });

  test("Invalid JSON → 400 -32700", async () => {
    for (const body of ["{not json", "", '{"jsonrpc":"2.0",']) {
      const answer = await request(`${base}/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      assertRpcError(answer, 400, -32700);
    }
  });

  test("A batch (array), a non-object, a missing or wrong jsonrpc, a bad id or method → 400 -32600", async () => {
    for (
      const message of [
        [{ jsonrpc: "2.0", id: 1, method: "ping" }],
        [],
        42,
        "ping",
        null,
        { id: 1, method: "ping" },
        { jsonrpc: "1.0", id: 1, method: "ping" },
        { jsonrpc: "2.0", id: { x: 1 }, method: "ping" },
        { jsonrpc: "2.0", id: 1, method: 7 },
        { jsonrpc: "2.0", id: 1 },
      ]
    ) {
      assertRpcError(await rpc(base, message), 400, -32600);
    }
  });

  test("An id that is not a finite number (1e400 parses to Infinity) → 400 -32600, not an answer to null", async () => {
    const answer = await request(`${base}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"jsonrpc":"2.0","id":1e400,"method":"ping"}',
    });
    assertRpcError(answer, 400, -32600);
  });

  test("An unknown method → -32601", async () => {
    assertRpcError(await rpc(base, { jsonrpc: "2.0", id: 1, method: "prompts/list" }), 200, -32601);
    assertRpcError(await rpc(base, { jsonrpc: "2.0", id: 1, method: "server/discover" }), 200, -32601);
  });

  test("Bad params (tools/call for an unknown tool, with arguments, or params not an object) → -32602", async () => {
    assertRpcError(
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "no_such_tool" } }),
      200,
      -32602,
    );
    assertRpcError(await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: {} }), 200, -32602);
    assertRpcError(
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami", arguments: { a: 1 } } }),
      200,
      -32602,
    );
    assertRpcError(
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami", arguments: [] } }),
      200,
      -32602,
    );
    assertRpcError(await rpc(base, { jsonrpc: "2.0", id: 1, method: "initialize", params: {} }), 200, -32602);
    for (const params of ["x", [1], 3]) {
      assertRpcError(await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params }), 400, -32602);
    }
  });

  test("A JSON-RPC error echoes the request id", async () => {
    const answer = await rpc(base, { jsonrpc: "2.0", id: "abc", method: "nope" });
    assertRpcError(answer, 200, -32601);
    assert.equal(answer.json.id, "abc");
  });

  test("ping → 200 with an empty result", async () => {
    const answer = await rpc(base, { jsonrpc: "2.0", id: 7, method: "ping" });
    assertRpcResult(answer);
    assert.deepEqual(answer.json, { jsonrpc: "2.0", id: 7, result: {} });
  });

  test("resources/templates/list → 200 with an empty resourceTemplates list", async () => {
    const answer = await rpc(base, { jsonrpc: "2.0", id: 8, method: "resources/templates/list" });
    assertRpcResult(answer);
    assert.deepEqual(answer.json, { jsonrpc: "2.0", id: 8, result: { resourceTemplates: [] } });
  });

  test("A notification (and a client's JSON-RPC response) → 202 with an empty body", async () => {
    for (
      const message of [
        { jsonrpc: "2.0", method: "notifications/initialized" },
        // no id: nothing runs, nothing answers
        { jsonrpc: "2.0", method: "tools/call", params: { name: "get_secret" } },
        { jsonrpc: "2.0", id: 5, result: {} },
      ]
    ) {
      const answer = await rpc(base, message);
      assert.equal(answer.status, 202, `${JSON.stringify(message)} → ${answer.status} ${answer.text}`);
      assert.equal(answer.text, "");
    }
  });

  test("GET and DELETE /mcp → 405 with Allow: POST", async () => {
    for (const method of ["GET", "DELETE", "PUT"]) {
      const answer = await request(`${base}/mcp`, { method });
      assertRpcError(answer, 405, -32000);
      assert.equal(answer.headers.get("allow"), "POST");
    }
  });

  test("A content type other than application/json → 415", async () => {
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]) {
      const answer = await request(`${base}/mcp`, {
        method: "POST",
        headers: { "content-type": type },
        body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      });
      assertRpcError(answer, 415, -32600);
    }
  });
});

// ─── /mcp in the 2026-07-28 era ──────────────────────────────────────────────────────────────────
// Stateless requests: the version rides in params._meta, and the MCP-Protocol-Version, Mcp-Method and
// Mcp-Name headers must be present and agree with the body, or the request is refused before the auth gate.

const MODERN = "2026-07-28";
const VERSION_KEY = "io.modelcontextprotocol/protocolVersion";

/** A JSON-RPC request in a 2026-07-28 envelope. */
function envelope(method: string, params: Record<string, unknown> = {}, version = MODERN, id: number | string = 1) {
  const _meta = {
    [VERSION_KEY]: version,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": { name: "test", version: "1" },
  };
  return { jsonrpc: "2.0", id, method, params: { ...params, _meta } };
}

/** POST a 2026-07-28 request with a conforming client's headers; `headers` replaces or (undefined) removes them. */
function modern(
  method: string,
  params: Record<string, unknown> = {},
  options: { token?: string; headers?: Record<string, string | undefined>; version?: string } = {},
) {
  const routing: Record<string, string | undefined> = {
    "mcp-protocol-version": options.version ?? MODERN,
    "mcp-method": method,
  };
  if (method === "tools/call") routing["mcp-name"] = String(params.name);
  if (method === "resources/read") routing["mcp-name"] = String(params.uri);
  return rpc(base, envelope(method, params, options.version), {
    token: options.token,
    headers: { ...routing, ...options.headers },
  });
}

const modernCall = (name: string, options: { token?: string; headers?: Record<string, string | undefined> } = {}) =>
  modern("tools/call", { name, arguments: {} }, options);

/** A session whose revoke_auth_token has run: its access token is refused. */
async function revokedToken(): Promise<string> {
  const tokens = await signIn(base);
  assertRpcResult(await callTool(base, "revoke_auth_token", tokens.access_token));
  return tokens.access_token;
}

describe("/mcp in the 2026-07-28 era", () => {
  test("server/discover → 200: supportedVersions, capabilities, resultType, ttlMs, cacheScope, _meta", async () => {
    const answer = await rpc(base, envelope("server/discover", {}, MODERN, "server-discover-probe-1"), {
      headers: { "mcp-protocol-version": MODERN, "mcp-method": "server/discover" },
    });
    assertRpcResult(answer);
    assert.equal(answer.json.id, "server-discover-probe-1");
    const result = answer.json.result;
    assert.ok(result.supportedVersions.includes(MODERN), JSON.stringify(result.supportedVersions));
    assert.ok(result.supportedVersions.includes("2025-11-25"), JSON.stringify(result.supportedVersions));
    assert.equal(typeof result.capabilities, "object");
    assert.equal(typeof result.capabilities.tools, "object");
    assert.equal(result.resultType, "complete");
    assert.ok(Number.isInteger(result.ttlMs) && result.ttlMs >= 0, `ttlMs ${result.ttlMs}`);
    assert.ok(["public", "private"].includes(result.cacheScope), `cacheScope ${result.cacheScope}`);
    assert.equal(typeof result._meta["io.modelcontextprotocol/serverInfo"].name, "string");
    assert.equal(typeof result._meta["io.modelcontextprotocol/serverInfo"].version, "string");
  });

  test("tools/list → resultType complete, ttlMs, cacheScope, and every tool with an object input schema", async () => {
    const answer = await modern("tools/list");
    assertRpcResult(answer);
    const result = answer.json.result;
    assert.equal(result.resultType, "complete");
    assert.ok(Number.isInteger(result.ttlMs) && result.ttlMs >= 0, `ttlMs ${result.ttlMs}`);
    assert.ok(["public", "private"].includes(result.cacheScope), `cacheScope ${result.cacheScope}`);
    assert.deepEqual(result.tools.map((tool: { name: string }) => tool.name).sort(), TOOL_NAMES);
    for (const tool of result.tools) assert.equal(tool.inputSchema.type, "object");
  });

  test("tools/call → a result with resultType complete", async () => {
    const answer = await modernCall("whoami");
    assertRpcResult(answer);
    assert.equal(answer.json.result.resultType, "complete");
    assert.match(answer.json.result.content[0].text, /anonymous/);
  });

  test("A protected tool with agreeing headers: no token → 401; a valid token → 200 with the secret", async () => {
    assertUnauthorized(await modernCall("get_secret"), false);
    assertUnauthorized(await modernCall("get_secret", { token: "not.a.token" }), true);
    const tokens = await signIn(base);
    const answer = await modernCall("get_secret", { token: tokens.access_token });
    assertRpcResult(answer);
    assert.equal(answer.json.result.resultType, "complete");
    assert.match(answer.json.result.content[0].text, /The secret is/);
  });

  test("The 401 challenge is identical in both eras, with and without a token", async () => {
    for (const token of [undefined, "not.a.token"]) {
      const handshake = await callTool(base, "get_secret", token);
      const stateless = await modernCall("get_secret", { token });
      assert.equal(handshake.status, 401, handshake.text);
      assert.equal(stateless.status, 401, stateless.text);
      assert.equal(stateless.json.error.code, handshake.json.error.code);
      assert.equal(stateless.headers.get("www-authenticate"), handshake.headers.get("www-authenticate"));
    }
  });

  test("No MCP-Protocol-Version header → 400 -32020", async () => {
    assertRpcError(await modern("tools/list", {}, { headers: { "mcp-protocol-version": undefined } }), 400, -32020);
  });

  test("MCP-Protocol-Version disagreeing with the body's _meta version → 400 -32020", async () => {
    assertRpcError(await modern("tools/list", {}, { headers: { "mcp-protocol-version": "2025-11-25" } }), 400, -32020);
    const answer = await rpc(base, envelope("tools/list", {}, "2025-11-25"), {
      headers: { "mcp-protocol-version": MODERN, "mcp-method": "tools/list" },
    });
    assertRpcError(answer, 400, -32020);
  });

  test("A version not spoken here, in header and body alike → 400 -32022 listing the supported versions", async () => {
    const answer = await modern("tools/list", {}, { version: "2099-01-01" });
    assertRpcError(answer, 400, -32022);
    assert.ok(answer.json.error.data.supported.includes(MODERN), answer.text);
    assert.ok(answer.json.error.data.supported.includes("2025-11-25"), answer.text);
    assert.equal(answer.json.id, 1, "the id is echoed, so the client can match the error");
  });

  test("No Mcp-Method header, or one naming another method → 400 -32020", async () => {
    assertRpcError(await modern("tools/list", {}, { headers: { "mcp-method": undefined } }), 400, -32020);
    assertRpcError(await modern("tools/list", {}, { headers: { "mcp-method": "server/discover" } }), 400, -32020);
    assertRpcError(await modern("tools/list", {}, { headers: { "mcp-method": "Tools/List" } }), 400, -32020);
  });

  test("tools/call without Mcp-Name, or with one naming another tool → 400 -32020", async () => {
    assertRpcError(await modernCall("whoami", { headers: { "mcp-name": undefined } }), 400, -32020);
    assertRpcError(await modernCall("whoami", { headers: { "mcp-name": "who" } }), 400, -32020);
  });

  test("resources/read: Mcp-Name naming its URI → 200; without Mcp-Name or naming another → 400 -32020", async () => {
    const uri = "ui://lazy-auth/secret.html";
    const read = await modern("resources/read", { uri });
    assertRpcResult(read);
    assert.equal(read.json.result.contents[0].uri, uri);
    assertRpcError(await modern("resources/read", { uri }, { headers: { "mcp-name": undefined } }), 400, -32020);
    const other = { "mcp-name": "ui://lazy-auth/auth-button.html" };
    assertRpcError(await modern("resources/read", { uri }, { headers: other }), 400, -32020);
  });

  test("A base64 Mcp-Name (=?base64?…?=) is decoded, then compared: same → 200, another → 400 -32020", async () => {
    const encode = (name: string) => `=?base64?${Buffer.from(name).toString("base64")}?=`;
    const same = await modernCall("whoami", { headers: { "mcp-name": encode("whoami") } });
    assertRpcResult(same);
    assert.match(same.json.result.content[0].text, /anonymous/);
    assertRpcError(await modernCall("whoami", { headers: { "mcp-name": encode("get_secret") } }), 400, -32020);
  });

  test("Smuggling: Mcp-Name whoami, body calling get_secret, no token → 400 -32020 (no 401, no secret)", async () => {
    const answer = await modernCall("get_secret", { headers: { "mcp-name": "whoami" } });
    assertRpcError(answer, 400, -32020);
    assert.doesNotMatch(answer.text, /lazy auth works/);
    assert.equal(answer.headers.get("www-authenticate"), null);
  });

  test("Smuggling with a revoked, an invalid or even a valid token → 400 -32020, no secret", async () => {
    const valid = (await signIn(base)).access_token;
    for (
      const token of [
        await revokedToken(),
        "not.a.token",
        await forge(accessClaims(), { key: "another secret that is at least 32 bytes" }),
        valid,
      ]
    ) {
      const answer = await modernCall("get_secret", { token, headers: { "mcp-name": "whoami" } });
      assertRpcError(answer, 400, -32020);
      assert.doesNotMatch(answer.text, /lazy auth works/);
    }
  });

  test("The reverse: Mcp-Name: get_secret over a body calling whoami → 400 -32020", async () => {
    assertRpcError(await modernCall("whoami", { headers: { "mcp-name": "get_secret" } }), 400, -32020);
  });

  test("Mcp-Method: tools/list over a body calling tools/call get_secret → 400 -32020", async () => {
    const answer = await modernCall("get_secret", { headers: { "mcp-method": "tools/list", "mcp-name": undefined } });
    assertRpcError(answer, 400, -32020);
    assert.doesNotMatch(answer.text, /lazy auth works/);
  });

  test("An unknown method → 404 -32601", async () => {
    assertRpcError(await modern("prompts/list"), 404, -32601);
  });

  test("initialize inside a 2026-07-28 envelope → 404 -32601", async () => {
    const answer = await modern("initialize", {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "test", version: "1" },
    });
    assertRpcError(answer, 404, -32601);
  });

  test("An envelope without clientCapabilities → 400 -32602", async () => {
    const message = { jsonrpc: "2.0", id: 1, method: "tools/list", params: { _meta: { [VERSION_KEY]: MODERN } } };
    assertRpcError(
      await rpc(base, message, { headers: { "mcp-protocol-version": MODERN, "mcp-method": "tools/list" } }),
      400,
      -32602,
    );
  });

  test("ping → 404 -32601: the 2026-07-28 era has no ping (SEP-2575), the 2025 era keeps it", async () => {
    assertRpcError(await modern("ping"), 404, -32601);
    assertRpcResult(await rpc(base, { jsonrpc: "2.0", id: 1, method: "ping" }));
  });

  test("resources/templates/list → 200 with an empty resourceTemplates list and resultType complete", async () => {
    const answer = await modern("resources/templates/list");
    assertRpcResult(answer);
    assert.deepEqual(answer.json.result.resourceTemplates, []);
    assert.equal(answer.json.result.resultType, "complete");
  });

  test("2025 era: initialize echoes 2025-06-18/2025-03-26, answers 2025-11-25 to others, no resultType", async () => {
    for (
      const [asked, expected] of [
        ["2025-06-18", "2025-06-18"],
        ["2025-03-26", "2025-03-26"],
        ["2025-11-25", "2025-11-25"],
        ["2024-01-01", "2025-11-25"],
        [MODERN, "2025-11-25"],
      ]
    ) {
      const answer = await rpc(base, {
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: asked, capabilities: {}, clientInfo: { name: "t", version: "1" } },
      });
      assertRpcResult(answer);
      assert.equal(answer.json.result.protocolVersion, expected, `asked ${asked}`);
      assert.equal(answer.json.result.resultType, undefined);
      assert.equal(answer.json.result.serverInfo.name, "lazy-auth-example");
    }
    const list = await rpc(base, { jsonrpc: "2.0", id: 2, method: "tools/list" }, {
      headers: { "mcp-protocol-version": "2025-06-18" },
    });
    assertRpcResult(list);
    assert.equal(list.json.result.resultType, undefined);
    assert.equal(list.json.result.ttlMs, undefined);
  });

  test("MCP-Protocol-Version: 1999-01-01 on a 2025 request → 400 -32022", async () => {
    const answer = await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/list" }, {
      headers: { "mcp-protocol-version": "1999-01-01" },
    });
    assertRpcError(answer, 400, -32022);
    assert.ok(answer.json.error.data.supported.includes("2025-11-25"), answer.text);
  });
});

// ─── CORS ────────────────────────────────────────────────────────────────────────────────────────

describe("CORS", () => {
  test("Answers off /authorize: Allow-Origin *, WWW-Authenticate exposed (200, 401, 404, 405, 413, 415)", async () => {
    const answers: Record<string, Answer> = {
      "GET /": await request(`${base}/`),
      "AS metadata": await request(`${base}/.well-known/oauth-authorization-server`),
      "resource metadata": await request(`${base}/.well-known/oauth-protected-resource/mcp`),
      "200 from /token": await exchange(await authorizeCode(base)),
      "400 from /token": await tokenRequest({}),
      "201 from /register": await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI] }),
      "400 from /register": await postJson(`${base}/register`, {}),
      "200 from /mcp": await callTool(base, "whoami"),
      "401 from /mcp": await callTool(base, "get_secret"),
      "400 from /mcp": await rpc(base, [1]),
      "405 from /mcp": await request(`${base}/mcp`),
      "415 from /mcp": await request(`${base}/mcp`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "x",
      }),
      "413 from /mcp": await rpc(base, { pad: "x".repeat(70 * 1024) }),
      "404 from /nowhere": await request(`${base}/nowhere`),
    };
    for (const [what, answer] of Object.entries(answers)) {
      assert.equal(answer.headers.get("access-control-allow-origin"), "*", `${what} (${answer.status})`);
      assert.match(
        answer.headers.get("access-control-expose-headers") ?? "",
        /(^|,\s*)www-authenticate(\s*,|$)/i,
        `${what} (${answer.status})`,
      );
    }
    assert.deepEqual(Object.values(answers).map((answer) => answer.status), [
      200,
      200,
      200,
      200,
      400,
      201,
      400,
      200,
      401,
      400,
      405,
      415,
      413,
      404,
    ]);
  });

  test("No /authorize answer has CORS headers: the consent page, its 303s, its 400, 403 and 405 errors", async () => {
    const page = await consentPage(authorizeUrl(base));
    const answers: Record<string, Answer> = {
      "consent page": page.page,
      "303 from Approve": await decide(page.form, "approve"),
      "303 from Deny": await decide((await consentPage(authorizeUrl(base))).form, "deny"),
      "400 from GET /authorize": await authorize({ code_challenge: undefined }),
      "400 from POST /authorize": await decide({ ...page.form, consent: "not-a-consent-token" }, "approve"),
      "403 from POST /authorize": await decide(page.form, "approve", { origin: "https://evil.example" }),
      "405 from /authorize": await request(`${base}/authorize`, { method: "PUT" }),
    };
    for (const [what, answer] of Object.entries(answers)) {
      assert.equal(answer.headers.get("access-control-allow-origin"), null, `${what} (${answer.status})`);
    }
    assert.deepEqual(Object.values(answers).map((answer) => answer.status), [200, 303, 303, 400, 400, 403, 405]);
  });

  test("OPTIONS preflight → 204 allowing GET, POST, authorization, content-type and the MCP headers", async () => {
    for (const path of ["/mcp", "/token", "/register", "/.well-known/oauth-authorization-server"]) {
      const answer = await request(`${base}${path}`, {
        method: "OPTIONS",
        headers: {
          origin: "https://host.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      });
      assert.equal(answer.status, 204, `${path}: ${answer.status} ${answer.text}`);
      assert.equal(answer.text, "");
      assert.equal(answer.headers.get("access-control-allow-origin"), "*");
      const methods = (answer.headers.get("access-control-allow-methods") ?? "").split(/\s*,\s*/);
      for (const method of ["GET", "POST"]) assert.ok(methods.includes(method), `${path} allows ${method}: ${methods}`);
      const headers = (answer.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/\s*,\s*/);
      for (
        const header of [
          "authorization",
          "content-type",
          "mcp-protocol-version",
          "mcp-session-id",
          "last-event-id",
          "mcp-method",
          "mcp-name",
        ]
      ) {
        assert.ok(headers.includes(header), `${path} allows the ${header} header: ${headers}`);
      }
    }
  });
});

// ─── Everywhere: unknown paths, body limits, failures ────────────────────────────────────────────

/** An oversized body sent with chunked transfer encoding (no Content-Length). */
function chunkedPost(url: string, totalBytes: number): Promise<Answer> {
  const chunk = new TextEncoder().encode(" ".repeat(16 * 1024));
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= totalBytes) return controller.close();
      sent += chunk.length;
      controller.enqueue(chunk);
    },
  });
  const init = {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    duplex: "half",
    signal: AbortSignal.timeout(10_000),
  };
  return request(url, init as RequestInit);
}

/** Signs of a leaked stack trace or framework page. */
const STACK_TRACE =
  /\n\s+at |\bat [\w.<>]+ \(|node:internal|file:\/\/|\.[cm]?[jt]s:\d+|Error: |<pre>|Cannot (GET|POST)/;

describe("Unknown paths, body limits and failures", () => {
  test("Unknown paths → 404 JSON", async () => {
    for (
      const [method, path] of [["GET", "/nowhere"], ["POST", "/mcp/extra"], [
        "GET",
        "/.well-known/openid-configuration",
      ], ["GET", "/authorize/"]]
    ) {
      const answer = await request(`${base}${path}`, { method });
      assertOAuthError(answer, 404, "not_found");
      assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
    }
  });

  test("GET / → 200 plain-text landing naming the MCP endpoint", async () => {
    const answer = await request(`${base}/`);
    assert.equal(answer.status, 200, answer.text);
    assert.match(answer.headers.get("content-type") ?? "", /^text\/plain/);
    assert.ok(answer.text.includes(resource));
  });

  test("A body of exactly 64 KiB is read and answered → 200", async () => {
    const message = { jsonrpc: "2.0", id: 1, method: "ping", params: { pad: "" } };
    message.params.pad = "x".repeat(64 * 1024 - JSON.stringify(message).length);
    assert.equal(JSON.stringify(message).length, 64 * 1024);
    assertRpcResult(await rpc(base, message));
  });

  test("A body over 64 KiB with Content-Length → 413, and the client gets the answer", async () => {
    for (const size of [64 * 1024 + 1, 1024 * 1024]) {
      const answer = await request(`${base}/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: " ".repeat(size),
        signal: AbortSignal.timeout(10_000),
      });
      assertRpcError(answer, 413, -32600);
    }
    const register = await request(`${base}/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: " ".repeat(100 * 1024),
      signal: AbortSignal.timeout(10_000),
    });
    assertOAuthError(register, 413, "invalid_request");
  });

  test("A Content-Length over 64 KiB → 413 at once, before the body is sent", async () => {
    const { hostname, port } = new URL(base);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname);
      let received = "";
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(`no answer within 5 s: ${received}`);
      }, 5000);
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        received += chunk;
        // A whole answer is in (headers and Content-Length bytes of body): no need to wait for the close.
        const end = received.indexOf("\r\n\r\n");
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(received)?.[1]);
        if (end !== -1 && Number.isInteger(length) && Buffer.byteLength(received.slice(end + 4)) >= length) {
          socket.destroy();
        }
      });
      socket.on("close", () => {
        clearTimeout(timer);
        resolve(received);
      });
      socket.on("error", reject);
      socket.write(
        `POST /mcp HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\n` +
          "Content-Length: 10000000\r\n\r\n{",
      );
    });
    assert.match(reply, /^HTTP\/1\.1 413 /, reply);
    assert.match(reply, /"code":-32600/, reply);
  });

  test("A chunked body over 64 KiB → 413, and the client gets the answer", async () => {
    assertRpcError(await chunkedPost(`${base}/mcp`, 1024 * 1024), 413, -32600);
    assertOAuthError(await chunkedPost(`${base}/token`, 100 * 1024), 413, "invalid_request");
    // The server is still serving.
    assertRpcResult(await rpc(base, { jsonrpc: "2.0", id: 1, method: "ping" }));
  });

  test("A handler that throws → JSON 500 without a stack trace, and the server keeps serving", async () => {
    // An event sink that throws on OAuth errors and challenges is the one way, from outside, to make a
    // handler throw: events reach onEvent as they happen, inside the handler.
    const fragile = await startServer({
      port: 0,
      host: "127.0.0.1",
      log: () => {},
      onEvent: (event) => {
        const refusal = (event.type === "oauth_error" && event.status < 500) || event.type === "challenge";
        if (refusal) throw new Error("boom in the event sink");
      },
    });
    try {
      const oauth = await request(`${fragile.url}/authorize`);
      assertOAuthError(oauth, 500, "server_error");
      assert.doesNotMatch(oauth.text, STACK_TRACE);
      assert.doesNotMatch(oauth.text, /boom/);
      // The 401 challenge is an event too.
      const mcp = await callTool(fragile.url, "get_secret", "not-a-valid-token");
      assertRpcError(mcp, 500, -32000);
      assert.doesNotMatch(mcp.text, STACK_TRACE);
      assert.doesNotMatch(mcp.text, /boom/);
      assert.equal(mcp.headers.get("access-control-allow-origin"), "*");
      assertRpcResult(await callTool(fragile.url, "whoami"));
    } finally {
      await fragile.close();
    }
  });

  test("No answer carries a stack trace or framework page, whatever the input", async () => {
    const answers = [
      await request(`${base}/mcp`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" }),
      await request(`${base}/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "\u0000\uffff",
      }),
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: { toString: 1 } } }),
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret" } }, {
        headers: { authorization: "Bearer a.b.c" },
      }),
      await rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret" } }, {
        headers: { authorization: "Bearer %%%" },
      }),
      await rpc(base, envelope("tools/call", { name: "whoami" }), {
        headers: { "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "=?base64?!!!?=" },
      }),
      await request(`${base}/token`, { method: "POST", headers: { "content-type": "application/json" }, body: "[" }),
      await request(`${base}/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "%E0%A4%A=x&grant_type=%",
      }),
      await tokenRequest({ grant_type: "authorization_code", code: "a.b.c", code_verifier: "x", client_id: "y" }),
      await tokenRequest({ grant_type: "refresh_token", refresh_token: "e30.e30.", client_id: "y" }),
      await request(`${base}/register`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"redirect_uris":[{}]}',
      }),
      await request(`${base}/authorize?client_id=%E0%A4%A&redirect_uri=%`),
      await request(`${base}/authorize?client_id=${encodeURIComponent("http://[::1")}`),
      await request(`${base}/mcp`, { method: "PATCH" }),
      await request(`${base}/%2e%2e/%2e%2e/etc/passwd`),
    ];
    for (const answer of answers) {
      assert.ok(answer.status >= 200 && answer.status < 500, `${answer.status}: ${answer.text}`);
      assert.notEqual(answer.json, undefined, `a JSON answer: ${answer.text}`);
      assert.doesNotMatch(answer.text, STACK_TRACE);
    }
  });
});

// ─── The single-use memory ───────────────────────────────────────────────────────────────────────

describe("MemoryStore (the single-use memory)", () => {
  // Expiries here are a fraction of a second away (epoch seconds need not be whole), and the tests wait
  // just past them: a timer that fires at the entry's own expiry is what is being checked.
  const SHORT_S = 0.25;
  const pastShortExpiry = () => sleep(SHORT_S * 1000 + 150);

  test("spendOnce is true once, false after; the entry is forgotten at its expiry (a timer, not a sweep)", async () => {
    const store = new MemoryStore();
    const expiresAt = Date.now() / 1000 + SHORT_S;
    assert.equal(await store.spendOnce("code-1", expiresAt), true);
    assert.equal(await store.spendOnce("code-1", expiresAt), false);
    assert.equal(store.size, 1);
    await pastShortExpiry();
    assert.equal(store.size, 0);
  });

  test("A session records its current refresh token: rotateRefresh swaps it only from the current one", async () => {
    const store = new MemoryStore();
    const expiresAt = Date.now() / 1000 + 60;
    await store.startSession("sid-1", "jti-1", expiresAt);
    assert.equal(store.size, 1);
    assert.equal(await store.rotateRefresh("sid-1", "jti-1", "jti-2"), true, "the current token rotates");
    assert.equal(await store.rotateRefresh("sid-1", "jti-1", "jti-3"), false, "a spent token never rotates again");
    assert.equal(await store.rotateRefresh("sid-1", "jti-2", "jti-3"), true, "the token that replaced it does");
    assert.equal(await store.rotateRefresh("sid-unknown", "jti-1", "jti-2"), false, "an unknown session does not");
    for (let i = 3; i < 1000; i++) assert.equal(await store.rotateRefresh("sid-1", `jti-${i}`, `jti-${i + 1}`), true);
    assert.equal(store.size, 1, "a thousand rotations leave one record");
  });

  test("startSession keeps an existing record (set only if absent)", async () => {
    const store = new MemoryStore();
    const expiresAt = Date.now() / 1000 + 60;
    await store.startSession("sid-1", "jti-1", expiresAt);
    await store.startSession("sid-1", "jti-other", expiresAt);
    assert.equal(await store.rotateRefresh("sid-1", "jti-other", "jti-2"), false);
    assert.equal(await store.rotateRefresh("sid-1", "jti-1", "jti-2"), true);
  });

  test("A session record is forgotten at its expiry", async () => {
    const store = new MemoryStore();
    await store.startSession("sid-1", "jti-1", Date.now() / 1000 + SHORT_S);
    await pastShortExpiry();
    assert.equal(store.size, 0);
    assert.equal(await store.rotateRefresh("sid-1", "jti-1", "jti-2"), false);
  });

  test("A flag is taken once: takeFlag is true only after raiseFlag, and removes it", async () => {
    const store = new MemoryStore();
    assert.equal(await store.takeFlag("flag-1"), false);
    await store.raiseFlag("flag-1", Date.now() / 1000 + 60);
    assert.equal(store.size, 1);
    assert.equal(await store.takeFlag("flag-1"), true);
    assert.equal(await store.takeFlag("flag-1"), false);
    assert.equal(store.size, 0);
  });

  test("Past maxEntries spendOnce, startSession, raiseFlag reject; revokeSession never; expiry frees", async () => {
    const store = new MemoryStore({ maxEntries: 3 });
    assert.equal(store.durable, false, "the memory store forgets everything on restart");
    const soon = Date.now() / 1000 + SHORT_S;
    assert.equal(await store.spendOnce("code-1", soon), true);
    await store.startSession("sid-1", "jti-1", soon);
    await store.raiseFlag("flag-1", soon);
    assert.equal(store.size, 3);
    await assert.rejects(store.spendOnce("code-2", soon), "a fourth spend is refused, not forgotten");
    await assert.rejects(store.startSession("sid-2", "jti-2", soon));
    await assert.rejects(store.raiseFlag("flag-2", soon));
    assert.equal(await store.spendOnce("code-1", soon), false, "a known code is still known to be spent");
    assert.equal(await store.rotateRefresh("sid-1", "jti-1", "jti-2"), true, "a rotation needs no room");
    await store.revokeSession("sid-1", soon);
    assert.equal(await store.isRevoked("sid-1"), true, "a revocation is never refused");
    await pastShortExpiry();
    assert.equal(store.size, 0);
    assert.equal(await store.spendOnce("code-2", Date.now() / 1000 + 1), true, "expiry made room");
  });

  test("A revoked session stays revoked until its expiry, then is forgotten", async () => {
    const store = new MemoryStore();
    assert.equal(await store.isRevoked("sid-1"), false);
    await store.revokeSession("sid-1", Date.now() / 1000 + SHORT_S);
    assert.equal(await store.isRevoked("sid-1"), true);
    assert.equal(store.size, 1);
    await pastShortExpiry();
    assert.equal(await store.isRevoked("sid-1"), false);
    assert.equal(store.size, 0);
  });

  test("Expiry timers are unref'd: a process that spent an id expiring in an hour exits promptly", async () => {
    const script = `const { MemoryStore } = await import(${
      JSON.stringify(new URL("./server.ts", import.meta.url).href)
    });
      const store = new MemoryStore();
      console.log(await store.spendOnce("far", Date.now() / 1000 + 3600), store.size);`;
    const child = spawn("node", ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL(".", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const limit = 20_000;
    const exited = await new Promise<number | null | "timeout">((resolve) => {
      const timer = setTimeout(() => {
        child.kill();
        resolve("timeout");
      }, limit);
      child.on("exit", (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    assert.equal(exited, 0, `the child exits by itself within ${limit / 1000} s: ${exited} ${output}`);
    assert.equal(output.trim(), "true 1");
  });
});
