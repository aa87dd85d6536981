/**
 * Security regression tests: each attack as it was reported, sent to a real server over HTTP, and the
 * answer that now stops it. One describe per behaviour: consent is a user action; only our own Host is
 * served (and a loopback Host only from a loopback peer); metadata documents are fetched behind a fence
 * (checked, bounded, never a private address, never loopback once the server is public, and a caller
 * learns nothing of why); logs cannot be forged; store records last no longer than what they guard; a
 * revoked session stays revoked; slow requests are cut; malformed bases never start a server.
 * The Redis eviction check lives in test/multi-instance.test.ts, next to the Redis it needs; the browser
 * half of consent in test/browser.test.ts; URL elicitation's in test/elicitation.test.ts.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import process from "node:process";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { MemoryStore, type RunningServer, startServer } from "../server.ts";
import {
  type Authorization,
  authorizeCode,
  authorizeUrl,
  callTool,
  CLIENT_ID,
  clientDocuments,
  consentPage,
  decide,
  eventRecorder,
  pkcePair,
  postForm,
  postJson,
  rawRequest as sendRaw,
  REDIRECT_URI,
  request,
  signIn,
  sleep,
  tick,
  tracked,
  waitFor,
} from "./helpers.ts";

const SECRET = randomBytes(32).toString("hex");
const FORGED_LINE = "[oauth] session ABC revoked: forged";
let server: RunningServer;
let base = "";
let port = "";
const logged: string[] = [];
const recorder = eventRecorder();
/** What a caller is told about any metadata document that cannot be used; the reason goes to the event stream. */
const UNUSABLE_DOCUMENT = "the client's metadata document could not be used";

before(async () => {
  server = await startServer({
    port: 0,
    host: "127.0.0.1",
    jwtSecret: SECRET,
    log: (line) => logged.push(line),
    onEvent: recorder.onEvent,
  });
  base = server.url;
  port = new URL(base).port;
});
after(() => server.close());

// ─── Assertions and small tools ──────────────────────────────────────────────────────────────────

/** An OAuth error: the status, `{error, error_description}` as JSON, never a redirect, never CORS on /authorize. */
function assertOAuthError(answer: { status: number; headers: Headers; text: string }, status: number, error: string) {
  const json = parseJson(answer.text);
  assert.equal(answer.status, status, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(json?.error, error, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(typeof json?.error_description, "string", "error_description is a string");
  assert.equal(answer.headers.get("location"), null, "an error is never a redirect");
}

// deno-lint-ignore no-explicit-any -- tests read JSON fields freely; a wrong guess fails the assertion that reads it
function parseJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** GET /authorize with the defaults replaced (or, when undefined, removed) by `overrides`. */
function authorize(overrides: Record<string, string | undefined> = {}, at = base) {
  const url = authorizeUrl(at);
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) url.searchParams.delete(name);
    else url.searchParams.set(name, value);
  }
  return request(url);
}

/** Any request with any headers, Host included (fetch cannot set Host). */
function rawRequest(
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string },
  at = base,
): Promise<{ status: number; headers: Headers; text: string }> {
  return sendRaw(options, at);
}

/** What a raw socket receives for `data` until the server closes it (or `limitMs` passes: then "timeout"). */
function rawExchange(data: string, limitMs = 5000, at = port): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(Number(at), "127.0.0.1", () => socket.write(data));
    let received = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (received += chunk));
    socket.on("close", () => resolve(received));
    socket.on("error", () => {});
    socket.setTimeout(limitMs, () => {
      resolve(`timeout ${received}`);
      socket.destroy();
    });
  });
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A refused metadata document: 400 invalid_client, and exactly the one description every such refusal has. */
function assertDocumentRefused(answer: { status: number; headers: Headers; text: string }, what: string) {
  assertOAuthError(answer, 400, "invalid_client");
  assert.equal(parseJson(answer.text)?.error_description, UNUSABLE_DOCUMENT, `${what}: only the generic text`);
}

/** The reason the server gave itself (a metadata_document_refused event, named by host+path) for `clientId`. */
function refusalReason(events: ReturnType<typeof eventRecorder>, clientId: string): string {
  const url = new URL(clientId);
  const named = `${url.host}${url.pathname}`;
  const found = events.of("metadata_document_refused").filter((event) => event.url === named);
  assert.ok(
    found.length > 0,
    `a metadata_document_refused event for ${named}; got ${
      JSON.stringify(events.of("metadata_document_refused").map((event) => event.url))
    }`,
  );
  const { reason } = found[found.length - 1];
  assert.equal(typeof reason, "string");
  assert.notEqual(reason, UNUSABLE_DOCUMENT, "the event says why, not the generic text");
  return reason;
}

/** The token endpoint's authorization_code grant for an approved request. */
function exchangeCode(at: string, authorization: Omit<Authorization, "location">, resource = `${at}/mcp`) {
  return postForm(`${at}/token`, {
    grant_type: "authorization_code",
    code: authorization.code,
    code_verifier: authorization.verifier,
    client_id: authorization.clientId,
    redirect_uri: authorization.redirectUri,
    resource,
  });
}

/** The token endpoint's refresh_token grant, for the default client. */
function refreshGrant(at: string, refreshToken: string) {
  return postForm(`${at}/token`, { grant_type: "refresh_token", refresh_token: refreshToken, client_id: CLIENT_ID });
}

// ─── Consent is a user action ────────────────────────────────────────────────────────────────────
// Any web page could fetch /authorize?…&approved=1 for a client it controls and get a code: consent was
// a GET. Now the page is a form whose POST carries a signed consent token; a GET never approves.

describe("Consent is a form POST from the server's own page", () => {
  const attackerRedirect = `${clientDocuments.origin}/attacker/cb`;
  const attackerClient = clientDocuments.client("/attacker/client.json", [attackerRedirect], { name: "Attacker" });

  test("The attacker's GET /authorize?…&client_id=<its document>&approved=1 → 200 page: no code, no CORS", async () => {
    const answer = await request(authorizeUrl(base, { clientId: attackerClient, redirectUri: attackerRedirect }), {
      headers: { origin: clientDocuments.origin },
    });
    const withApproved = authorizeUrl(base, { clientId: attackerClient, redirectUri: attackerRedirect });
    withApproved.searchParams.set("approved", "1");
    for (const page of [answer, await request(withApproved, { headers: { origin: clientDocuments.origin } })]) {
      assert.equal(page.status, 200, page.text);
      assert.equal(page.headers.get("location"), null, "a GET never redirects back with a code");
      assert.equal(page.headers.get("access-control-allow-origin"), null, "another origin cannot read the page");
      assert.doesNotMatch(page.text, /[?&]code=/, "no code anywhere on the page");
    }
  });

  test("Another origin's preflight of /authorize or /elicitation-callback → 204, no Access-Control-*", async () => {
    for (const path of ["/authorize", "/elicitation-callback"]) {
      const answer = await request(new URL(path, base), {
        method: "OPTIONS",
        headers: {
          origin: clientDocuments.origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "content-type",
        },
      });
      assert.equal(answer.status, 204, `${path}: ${answer.text}`);
      const granted = [...answer.headers.keys()].filter((name) => name.startsWith("access-control-"));
      assert.deepEqual(granted, [], `${path}: a preflight of a page grants nothing`);
    }
  });

  test("A GET carrying the form's own fields (consent, decision=approve) is still only the consent page", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    const url = authorizeUrl(base);
    url.searchParams.set("consent", form.consent);
    url.searchParams.set("decision", "approve");
    const answer = await request(url);
    assert.ok(answer.status === 200 || answer.status === 400, `${answer.status}: ${answer.text}`);
    assert.equal(answer.headers.get("location"), null, "no redirect");
  });

  test("The consent token is a consent+jwt living 10 minutes", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    assert.equal(decodeProtectedHeader(form.consent).typ, "consent+jwt");
    const { iat, exp } = decodeJwt(form.consent);
    assert.equal(typeof exp, "number");
    const lifetime = (exp as number) - (iat ?? 0);
    assert.ok(lifetime >= 600 && lifetime <= 601, `600 s, its exp rounded up to a whole second: ${lifetime} s`);
  });

  test("The attacker's cross-site POST (Sec-Fetch-Site cross-site, same-site, none) → 403, no code", async () => {
    for (const site of ["cross-site", "same-site", "none"]) {
      const { form } = await consentPage(
        authorizeUrl(base, { clientId: attackerClient, redirectUri: attackerRedirect }),
      );
      const answer = await decide(form, "approve", { "sec-fetch-site": site });
      assertOAuthError(answer, 403, "invalid_request");
      assert.doesNotMatch(answer.text, /code=/);
    }
  });

  test("A POST whose Origin is not the server's own (port, host, null) → 403 invalid_request", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    for (
      const origin of [clientDocuments.origin, "https://evil.example", "null", `http://127.0.0.1:${port}.evil.example`]
    ) {
      assertOAuthError(await decide(form, "approve", { origin }), 403, "invalid_request");
    }
  });

  test("A browser's click (Sec-Fetch-Site: same-origin, the server's own Origin) → 303 with a code", async () => {
    const { form } = await consentPage(authorizeUrl(base, { state: "click" }));
    const answer = await decide(form, "approve", { "sec-fetch-site": "same-origin", origin: base });
    assert.equal(answer.status, 303, answer.text);
    const location = new URL(answer.headers.get("location") ?? "");
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.ok(location.searchParams.get("code"));
    assert.equal(location.searchParams.get("state"), "click");
    assert.equal(location.searchParams.get("iss"), base);
  });

  test("The server's own origin is the one its Host names: Host and Origin localhost:PORT → 303", async () => {
    const host = `localhost:${port}`;
    const url = authorizeUrl(`http://${host}`);
    const page = await rawRequest({ path: url.pathname + url.search, headers: { host } });
    assert.equal(page.status, 200, page.text);
    const consent = /name="consent"[^>]*value="([^"]*)"|value="([^"]*)"[^>]*name="consent"/.exec(page.text);
    assert.ok(consent, "a consent token on the page");
    assert.match(page.text, new RegExp(`action="http://localhost:${port}/authorize"`), "the form posts to that base");
    const answer = await rawRequest({
      method: "POST",
      path: "/authorize",
      headers: {
        host,
        origin: `http://${host}`,
        "sec-fetch-site": "same-origin",
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ consent: consent[1] ?? consent[2], decision: "approve" }).toString(),
    });
    assert.equal(answer.status, 303, answer.text);
  });

  test("A consent token missing, forged, altered, expired or of another kind → 400 invalid_request", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    const claims = decodeJwt(form.consent);
    const sign = (typ: string, key: string, override: Record<string, unknown> = {}) =>
      new SignJWT({ ...claims, ...override }).setProtectedHeader({ alg: "HS256", typ }).sign(
        new TextEncoder().encode(key),
      );
    const { code } = await authorizeCode(base);
    const tokens = await signIn(base);
    const [head, payload, signature] = form.consent.split(".");
    const flipped = signature.startsWith("A") ? `B${signature.slice(1)}` : `A${signature.slice(1)}`;
    const cases: Record<string, string> = {
      empty: "",
      "not a JWT": "not-a-consent-token",
      "another key": await sign("consent+jwt", "another secret that is at least 32 bytes"),
      expired: await sign("consent+jwt", SECRET, { iat: nowSeconds() - 1200, exp: nowSeconds() - 600 }),
      "signature altered": `${head}.${payload}.${flipped}`,
      "a code": code,
      "an access token": tokens.access_token,
      "a refresh token": tokens.refresh_token,
      "our key, typ code+jwt": await sign("code+jwt", SECRET),
    };
    for (const [what, consent] of Object.entries(cases)) {
      const answer = await decide({ ...form, consent }, "approve");
      assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.text}`);
      assertOAuthError(answer, 400, "invalid_request");
    }
    const missing = await postForm(`${base}/authorize`, { decision: "approve" });
    assertOAuthError(missing, 400, "invalid_request");
  });

  test("A decision not approve or deny, missing, or a repeated parameter → 400 invalid_request", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    for (const decision of ["", "APPROVE", "yes", "1", "approve "]) {
      assertOAuthError(await decide(form, decision), 400, "invalid_request");
    }
    assertOAuthError(await postForm(`${base}/authorize`, { consent: form.consent }), 400, "invalid_request");
    for (const repeated of ["consent", "decision"]) {
      const body = new URLSearchParams({ consent: form.consent, decision: "approve" });
      body.append(repeated, repeated === "consent" ? form.consent : "approve");
      const answer = await request(`${base}/authorize`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
      });
      assertOAuthError(answer, 400, "invalid_request");
    }
    // The untouched form still works: nothing above spent it.
    assert.equal((await decide(form, "approve")).status, 303);
  });

  test("A consent POST that is not form-encoded → 4xx, never a code", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    for (const type of ["application/json", "text/plain", "multipart/form-data; boundary=x"]) {
      const body = type === "application/json"
        ? JSON.stringify({ consent: form.consent, decision: "approve" })
        : `consent=${form.consent}&decision=approve`;
      const answer = await request(`${base}/authorize`, { method: "POST", headers: { "content-type": type }, body });
      assert.ok(answer.status === 400 || answer.status === 415, `${type}: ${answer.status} ${answer.text}`);
      assert.equal(answer.headers.get("location"), null);
    }
  });
});

// ─── The Host header ─────────────────────────────────────────────────────────────────────────────
// DNS rebinding: a page on evil.example, rebound to 127.0.0.1, talks to the server with Host: evil.example.
// Malformed Host values passed the loopback check and then made the consent page answer 500.

describe("Only a loopback Host (or PUBLIC_URL's host) is served", () => {
  const refused = [
    "::1:80",
    "127.999.999.999:5101",
    "localhost:99999",
    "evil.example",
    "evil.example:80",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "127.0.0.1:80@evil.example",
    "[::1",
    "[::2]:80",
    "256.0.0.1",
    "a b",
  ];

  test("The attacker's Host values (::1:80, 127.999.999.999:5101, evil.example…) → 403 everywhere", async () => {
    const query = authorizeUrl(base).search;
    for (const host of refused) {
      for (const path of ["/", "/.well-known/oauth-authorization-server", `/authorize${query}`]) {
        const answer = await rawRequest({ path, headers: { host } });
        assert.equal(answer.status, 403, `Host ${JSON.stringify(host)} on ${path}: ${answer.text.slice(0, 200)}`);
        assertOAuthError(answer, 403, "invalid_request");
      }
      const token = await rawRequest({
        method: "POST",
        path: "/token",
        headers: { host, "content-type": "application/x-www-form-urlencoded" },
        body: "grant_type=refresh_token",
      });
      assertOAuthError(token, 403, "invalid_request");
      const mcp = await rawRequest({
        method: "POST",
        path: "/mcp",
        headers: { host, "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami" } }),
      });
      assert.equal(mcp.status, 403, `Host ${JSON.stringify(host)} on /mcp: ${mcp.text}`);
      assert.equal(parseJson(mcp.text)?.error?.code, -32000, `a JSON-RPC error: ${mcp.text}`);
    }
  });

  test("Port 0 is no port: Host localhost:0 or 127.0.0.1:0 → 403", async () => {
    for (const host of ["localhost:0", "127.0.0.1:0", "[::1]:0"]) {
      assertOAuthError(await rawRequest({ path: "/", headers: { host } }), 403, "invalid_request");
    }
  });

  test("A request with no Host at all (HTTP/1.0), or an empty one → 403", async () => {
    for (
      const head of [
        "GET /.well-known/oauth-authorization-server HTTP/1.0\r\n\r\n",
        "GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
      ]
    ) {
      const reply = await rawExchange(head);
      assert.match(reply, /^HTTP\/1\.[01] 403 /, reply);
      assert.match(reply, /"error":"invalid_request"/, reply);
    }
  });

  test("Loopback Host values are served: localhost, 127.x.y.z and [::1], with or without a port", async () => {
    for (
      const host of [
        "localhost",
        `localhost:${port}`,
        `127.0.0.1:${port}`,
        "127.1.2.3",
        "127.255.255.255:1",
        "[::1]",
        `[::1]:${port}`,
      ]
    ) {
      const answer = await rawRequest({ path: "/.well-known/oauth-authorization-server", headers: { host } });
      assert.equal(answer.status, 200, `Host ${host}: ${answer.text}`);
      assert.equal(parseJson(answer.text)?.issuer, `http://${host}`, `Host ${host}`);
    }
  });

  test("With publicUrl set, its host is served and names every URL; another Host → 403", async () => {
    const proxied = await startServer({
      port: 0,
      host: "127.0.0.1",
      publicUrl: "https://mcp.example.com",
      log: () => {},
    });
    try {
      const path = "/.well-known/oauth-authorization-server";
      const own = await rawRequest({ path, headers: { host: "mcp.example.com" } }, proxied.url);
      assert.equal(own.status, 200, own.text);
      assert.equal(parseJson(own.text)?.issuer, "https://mcp.example.com");
      assertOAuthError(
        await rawRequest({ path, headers: { host: "other.example.com" } }, proxied.url),
        403,
        "invalid_request",
      );
    } finally {
      await proxied.close();
    }
  });

  test("By default the server listens on loopback only; HOST names the interface", async () => {
    const plain = await startServer({ port: 0, log: () => {} });
    const saved = process.env.HOST;
    process.env.HOST = "localhost";
    try {
      const address = plain.server.address();
      assert.equal(typeof address === "object" && address?.address, "127.0.0.1", "listens on 127.0.0.1 by default");
      const named = await startServer({ port: 0, log: () => {} });
      try {
        const at = named.server.address();
        assert.ok(typeof at === "object" && ["127.0.0.1", "::1"].includes(at?.address ?? ""), JSON.stringify(at));
      } finally {
        await named.close();
      }
    } finally {
      if (saved === undefined) delete process.env.HOST;
      else process.env.HOST = saved;
      await plain.close();
    }
  });
});

// ─── Client ID Metadata Documents are fetched and checked ────────────────────────────────────────
// The server took any https URL as a client_id without fetching it, so client_id=https://c.example/m
// with redirect_uri=https://evil.example/phish redirected the user, code in hand, to evil.example.

describe("A metadata-document client_id is fetched and checked before anything else", () => {
  test("The attacker's client_id=https://c.example/m&redirect_uri=<evil> → 400 invalid_client", async () => {
    const answer = await authorize({
      client_id: "https://c.example/m",
      redirect_uri: "https://evil.example/phish",
      approved: "1",
    });
    assertOAuthError(answer, 400, "invalid_client");
  });

  // A redirect_uri the document does not list is refused as a DCR client's unregistered one is:
  // invalid_request (RFC 6749 §4.1.2.1), shown here, never followed.
  test("A document that does not list the redirect_uri → 400 invalid_request saying so, no redirect", async () => {
    const clientId = clientDocuments.client("/cimd/honest.json", ["https://app.example/cb"]);
    for (
      const uri of [
        "https://evil.example/phish",
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://app.example/other",
        "http://127.0.0.1:8765/callback",
      ]
    ) {
      const answer = await authorize({ client_id: clientId, redirect_uri: uri, approved: "1" });
      assertOAuthError(answer, 400, "invalid_request");
      assert.match(parseJson(answer.text).error_description, /redirect_uri/);
    }
    assert.equal((await authorize({ client_id: clientId, redirect_uri: "https://app.example/cb" })).status, 200);
  });

  test("A listed loopback redirect_uri matches on any port, but not on another path, host or scheme", async () => {
    const clientId = clientDocuments.client("/cimd/native.json", ["http://127.0.0.1/callback"]);
    for (const uri of ["http://127.0.0.1/callback", "http://127.0.0.1:49152/callback"]) {
      const answer = await authorize({ client_id: clientId, redirect_uri: uri });
      assert.equal(answer.status, 200, `${uri}: ${answer.text}`);
    }
    for (
      const uri of ["http://127.0.0.1:49152/other", "http://localhost:49152/callback", "https://127.0.0.1/callback"]
    ) {
      assertOAuthError(await authorize({ client_id: clientId, redirect_uri: uri }), 400, "invalid_request");
    }
  });

  test("A document whose client_id is not exactly its URL → 400 invalid_client; the event says so", async () => {
    const path = "/cimd/mismatch.json";
    const url = `${clientDocuments.origin}${path}`;
    for (const claimed of [`${url}x`, `${url}/`, "https://client.example/client.json", url.toUpperCase(), undefined]) {
      clientDocuments.client(path, [REDIRECT_URI], { extra: { client_id: claimed } });
      const answer = await authorize({ client_id: url });
      assertDocumentRefused(answer, `client_id ${claimed}`);
      assert.match(refusalReason(recorder, url), /client_id/);
    }
  });

  test("A redirect to a document is not followed → 400 invalid_client, the target never fetched", async () => {
    const target = clientDocuments.client("/cimd/redirect-target.json", [REDIRECT_URI]);
    for (const status of [301, 302, 303, 307, 308]) {
      const path = `/cimd/redirect-${status}.json`;
      const url = clientDocuments.serve(path, { status, body: "", headers: { location: target } });
      const answer = await authorize({ client_id: url });
      assertDocumentRefused(answer, `HTTP ${status}`);
      assert.match(refusalReason(recorder, url), /redirect/i);
    }
    assert.equal(clientDocuments.fetches("/cimd/redirect-target.json"), 0);
  });

  test("A document not JSON, not an object, over 16 KiB, or an error status → 400 invalid_client", async () => {
    const valid = {
      client_name: "Padded",
      redirect_uris: [REDIRECT_URI],
      token_endpoint_auth_method: "none",
    };
    const cases: Record<string, (url: string) => { body: unknown; status?: number; headers?: Record<string, string> }> =
      {
        "not JSON": () => ({ body: "<html>hello</html>", headers: { "content-type": "text/html" } }),
        "an array": (url) => ({ body: [{ client_id: url, redirect_uris: [REDIRECT_URI] }] }),
        "a string": () => ({ body: JSON.stringify("client") }),
        "over 16 KiB": (url) => ({ body: { client_id: url, ...valid, padding: "x".repeat(17 * 1024) } }),
        "404": (url) => ({ status: 404, body: { client_id: url, ...valid } }),
        "500": (url) => ({ status: 500, body: { client_id: url, ...valid } }),
      };
    for (const [what, make] of Object.entries(cases)) {
      const path = `/cimd/bad-${what.replace(/\W+/g, "-")}.json`;
      const url = `${clientDocuments.origin}${path}`;
      clientDocuments.serve(path, make(url));
      assertOAuthError(await authorize({ client_id: url }), 400, "invalid_client");
    }
    // The control: 15 KiB of padding is fine.
    const path = "/cimd/padded.json";
    const url = `${clientDocuments.origin}${path}`;
    clientDocuments.serve(path, { body: { client_id: url, ...valid, padding: "x".repeat(15 * 1024) } });
    assert.equal((await authorize({ client_id: url })).status, 200);
  });

  test("No usable redirect_uris, a bad client_name, or a client secret method → 400 invalid_client", async () => {
    const cases: Record<string, Record<string, unknown>> = {
      "no redirect_uris": { redirect_uris: undefined },
      "empty redirect_uris": { redirect_uris: [] },
      "redirect_uris a string": { redirect_uris: REDIRECT_URI },
      "a javascript: redirect_uri": { redirect_uris: [REDIRECT_URI, "javascript:alert(1)"] },
      "an http redirect_uri off loopback": { redirect_uris: [REDIRECT_URI, "http://app.example/cb"] },
      "client_name with a newline": { client_name: `App\n${FORGED_LINE}` },
      "client_name with an ANSI escape": { client_name: "App\u001b[2J" },
      "client_name over 200 characters": { client_name: "x".repeat(201) },
      "client_name not a string": { client_name: 42 },
      "client_secret_basic": { token_endpoint_auth_method: "client_secret_basic" },
      "private_key_jwt": { token_endpoint_auth_method: "private_key_jwt" },
    };
    for (const [what, extra] of Object.entries(cases)) {
      const path = `/cimd/invalid-${what.replace(/\W+/g, "-")}.json`;
      const url = clientDocuments.client(path, [REDIRECT_URI], { extra });
      const answer = await authorize({ client_id: url });
      assert.equal(answer.status, 400, `${what}: ${answer.text}`);
      assertOAuthError(answer, 400, "invalid_client");
    }
  });

  test("http off loopback, or a private, link-local, unspecified or multicast address → 400, unfetched", async () => {
    const urls = [
      "http://client.example/client.json",
      "https://10.0.0.1/client.json",
      "https://172.16.0.1/client.json",
      "https://192.168.1.1/client.json",
      "https://100.64.0.1/client.json",
      "https://169.254.169.254/latest/meta-data",
      "https://0x0a.0.0.1/client.json", // 10.0.0.1 spelled in hex
      "https://0.0.0.0/client.json",
      "https://224.0.0.1/client.json",
      "https://[fc00::1]/client.json",
      "https://[fd12:3456::1]/client.json",
      "https://[fe80::1]/client.json",
      "https://[::]/client.json",
      "https://[ff02::1]/client.json",
      "https://[::ffff:10.0.0.1]/client.json",
      "https://[::ffff:169.254.169.254]/client.json",
    ];
    const answers = await Promise.all(urls.map((url) => authorize({ client_id: url })));
    answers.forEach((answer, i) => {
      assertDocumentRefused(answer, urls[i]);
      if (i > 0) {
        const reason = refusalReason(recorder, urls[i]);
        assert.match(reason, ADDRESS_REASON, `${urls[i]}: refused for its address, not after trying it: ${reason}`);
      }
    });
  });

  test("An unreachable document → 400 invalid_client; why goes to the event stream", async () => {
    const url = "http://127.0.0.1:9/client.json";
    assertDocumentRefused(await authorize({ client_id: url }), url);
    refusalReason(recorder, url);
  });

  test("A document that does not arrive within the fetch timeout (3 s) → 400 invalid_client", async () => {
    const path = "/cimd/slow.json";
    const url = `${clientDocuments.origin}${path}`;
    clientDocuments.serve(path, { body: { client_id: url, redirect_uris: [REDIRECT_URI] }, delayMs: 8000 });
    assertOAuthError(await authorize({ client_id: url }), 400, "invalid_client");
  });

  test("Cache-Control max-age=N → fetched once; no-store, no-cache or none → fetched every time", async () => {
    const cases: [string, string | undefined, number][] = [
      ["max-age", "max-age=300", 1],
      ["public-max-age", "public, max-age=60", 1],
      ["no-store", "no-store", 3],
      ["no-cache", "no-cache, max-age=60", 3],
      ["none", undefined, 3],
    ];
    for (const [name, cacheControl, expected] of cases) {
      const path = `/cimd/cache-${name}.json`;
      const clientId = clientDocuments.client(path, [REDIRECT_URI], { cacheControl });
      for (let i = 0; i < 3; i++) {
        const answer = await authorize({ client_id: clientId });
        assert.equal(answer.status, 200, answer.text);
      }
      assert.equal(
        clientDocuments.fetches(path),
        expected,
        `${cacheControl}: fetched ${clientDocuments.fetches(path)}`,
      );
    }
  });

  test("A cached document still decides: a redirect_uri it does not list is refused from the cache too", async () => {
    const path = "/cimd/cached-decides.json";
    const clientId = clientDocuments.client(path, [REDIRECT_URI], { cacheControl: "max-age=300" });
    assert.equal((await authorize({ client_id: clientId })).status, 200);
    assertOAuthError(
      await authorize({ client_id: clientId, redirect_uri: "https://evil.example/phish" }),
      400,
      "invalid_request",
    );
    assert.equal(clientDocuments.fetches(path), 1);
  });

  test("The document cache is bounded (1,000 documents): past it, an early document is fetched again", async () => {
    const first = "/cimd/bound-0.json";
    const last = "/cimd/bound-1000.json";
    for (let i = 0; i <= 1000; i++) {
      clientDocuments.client(`/cimd/bound-${i}.json`, [REDIRECT_URI], { cacheControl: "max-age=3600" });
    }
    for (let i = 0; i <= 1000; i += 16) { // 16 at once: the most loads the server runs together
      const batch = Array.from({ length: Math.min(16, 1001 - i) }, (_, j) => `/cimd/bound-${i + j}.json`);
      const answers = await Promise.all(
        batch.map((path) => authorize({ client_id: `${clientDocuments.origin}${path}` })),
      );
      assert.deepEqual(answers.map((a) => a.status), batch.map(() => 200));
    }
    assert.equal((await authorize({ client_id: `${clientDocuments.origin}${first}` })).status, 200);
    assert.equal((await authorize({ client_id: `${clientDocuments.origin}${last}` })).status, 200);
    const refetched = clientDocuments.fetches(first) + clientDocuments.fetches(last);
    assert.ok(refetched >= 3, `1,001 documents do not all stay cached (refetched: ${refetched - 2})`);
  });
});

// ─── Logs cannot be forged ───────────────────────────────────────────────────────────────────────
// A client_id with %0A, a repeated parameter whose name held %0A, or a registered client_name with \n
// and ANSI escapes wrote whole forged lines, such as "[oauth] session ABC revoked: forged".

/** Control characters (C0, DEL, C1): none may reach a log line raw. */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function assertCleanLogs(lines: string[]) {
  for (const line of lines) {
    assert.doesNotMatch(line, CONTROL, `a raw control character in a log line: ${JSON.stringify(line)}`);
    assert.ok(!line.startsWith(FORGED_LINE), `a forged log line: ${JSON.stringify(line)}`);
  }
}

describe("Every logged value is escaped; names with control characters are refused", () => {
  const forgery = `x\n${FORGED_LINE}\r\n\u001b[2K\u001b[1A`;

  test("The attacker's client_id with %0A → 400 invalid_client; the log shows it escaped", async () => {
    const from = logged.length;
    assertOAuthError(await authorize({ client_id: forgery }), 400, "invalid_client");
    const url = `${CLIENT_ID}\n${FORGED_LINE}`; // a URL parser would drop the newline: the server must not
    assertOAuthError(await authorize({ client_id: url }), 400, "invalid_client");
    await tick(); // the trace writes its lines once per event-loop turn
    assert.ok(logged.length > from, "the refusals are logged");
    assertCleanLogs(logged.slice(from));
  });

  test("A client_id URL holding a newline or tab (its document agreeing) → 400, never fetched", async () => {
    // A URL parser drops tabs and newlines, so the fetch would reach the document without them.
    for (const [name, control] of [["lf", "\n"], ["tab", "\t"]]) {
      const path = `/cimd/control-${name}.json`;
      const clientId = `${clientDocuments.origin}/cimd/control-${control}${name}.json`;
      const body = { client_id: clientId, client_name: "Control", redirect_uris: [REDIRECT_URI] };
      clientDocuments.serve(path, { body });
      assertOAuthError(await authorize({ client_id: clientId }), 400, "invalid_client");
      assert.equal(clientDocuments.fetches(path), 0, `${name}: refused before the document is fetched`);
    }
  });

  test("A repeated parameter whose name holds %0A → 400 invalid_request; logged escaped", async () => {
    const from = logged.length;
    const url = authorizeUrl(base);
    url.searchParams.append(`state${forgery}`, "1");
    url.searchParams.append(`state${forgery}`, "2");
    assertOAuthError(await request(url), 400, "invalid_request");
    const body = new URLSearchParams({ grant_type: "refresh_token" });
    body.append(`x${forgery}`, "1");
    body.append(`x${forgery}`, "2");
    const token = await request(`${base}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body,
    });
    assertOAuthError(token, 400, "invalid_request");
    await tick();
    assert.ok(logged.length > from, "the refusals are logged");
    assertCleanLogs(logged.slice(from));
  });

  test("/register with a client_name holding \\n or ANSI escapes → 400 invalid_client_metadata", async () => {
    const from = logged.length;
    for (const name of [forgery, "App\u001b[31m", "App\u0000", "App\u0085", "App\u007f"]) {
      const answer = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: name });
      assertOAuthError(answer, 400, "invalid_client_metadata");
    }
    await tick();
    assertCleanLogs(logged.slice(from));
  });

  test("Every other logged value is escaped too: a state, a scope, a resource, a grant_type, a tool name", async () => {
    const from = logged.length;
    await authorize({ scope: forgery });
    await authorize({ resource: forgery });
    await authorize({ response_type: forgery });
    await postForm(`${base}/token`, { grant_type: forgery });
    await postForm(`${base}/token`, { grant_type: "refresh_token", refresh_token: forgery, client_id: forgery });
    await postForm(`${base}/token`, { grant_type: "authorization_code", code: forgery, client_id: forgery });
    await postJson(`${base}/register`, { redirect_uris: [forgery] });
    await callTool(base, forgery);
    await callTool(base, "get_secret", "not.a.token");
    await tick();
    assertCleanLogs(logged.slice(from));
    assertCleanLogs(logged); // and nothing before either
  });
});

// ─── The single-use memory has a real bound ──────────────────────────────────────────────────────
// Each refresh rotation added an entry that lived as long as the session: 8 refresh chains added
// 120,631 entries in 40 s with REFRESH_TOKEN_TTL_SECONDS=86400. Now a session is one record updated in
// place, and the store has a cap past which it refuses new entries (503) rather than grow.

describe("Refresh rotation adds no store entry; the store has a cap", () => {
  test("8 refresh chains with a one-day refresh lifetime: 320 rotations leave the store's size as it was", async () => {
    const store = new MemoryStore();
    const long = await startServer({ port: 0, host: "127.0.0.1", refreshTokenTtlSeconds: 86400, store, log: () => {} });
    try {
      const chains = await Promise.all(Array.from({ length: 8 }, () => signIn(long.url)));
      const size = store.size;
      assert.equal(size, 16, "each sign-in holds two entries: its spent code and its session");
      const refreshTokens = chains.map((tokens) => tokens.refresh_token);
      for (let round = 0; round < 40; round++) {
        await Promise.all(refreshTokens.map(async (refreshToken, i) => {
          const answer = await postForm(`${long.url}/token`, {
            grant_type: "refresh_token",
            refresh_token: refreshToken,
            client_id: CLIENT_ID,
          });
          assert.equal(answer.status, 200, answer.text);
          refreshTokens[i] = answer.json.refresh_token;
        }));
      }
      assert.equal(store.size, size, "320 rotations, not one more entry");
    } finally {
      await long.close();
    }
  });

  test("A store at its cap → 503 temporarily_unavailable for a new session; refresh and revocation go on", async () => {
    const capped = await startServer({ port: 0, host: "127.0.0.1", storeMaxEntries: 4, log: () => {} });
    try {
      const at = capped.url;
      const sessions = [await signIn(at), await signIn(at)]; // 2 × (spent code + session) = the cap
      const authorization = await authorizeCode(at);
      const refused = await postForm(`${at}/token`, {
        grant_type: "authorization_code",
        code: authorization.code,
        code_verifier: authorization.verifier,
        client_id: authorization.clientId,
      });
      assertOAuthError(refused, 503, "temporarily_unavailable");
      assert.equal(refused.headers.get("cache-control"), "no-store");
      assert.equal(refused.json.access_token, undefined);
      const refreshed = await postForm(`${at}/token`, {
        grant_type: "refresh_token",
        refresh_token: sessions[0].refresh_token,
        client_id: CLIENT_ID,
      });
      assert.equal(refreshed.status, 200, `a rotation needs no room: ${refreshed.text}`);
      const revoke = await callTool(at, "revoke_auth_token", refreshed.json.access_token);
      assert.equal(revoke.status, 200, `a revocation is never refused: ${revoke.text}`);
      const after = await callTool(at, "get_secret", refreshed.json.access_token);
      assert.equal(after.status, 401, "and it took effect");
    } finally {
      await capped.close();
    }
  });

  test("A replayed refresh token still revokes its session at the cap", async () => {
    const capped = await startServer({ port: 0, host: "127.0.0.1", storeMaxEntries: 2, log: () => {} });
    try {
      const at = capped.url;
      const tokens = await signIn(at);
      const refresh = (refreshToken: string) =>
        postForm(`${at}/token`, { grant_type: "refresh_token", refresh_token: refreshToken, client_id: CLIENT_ID });
      const rotated = await refresh(tokens.refresh_token);
      assert.equal(rotated.status, 200, rotated.text);
      assertOAuthError(await refresh(tokens.refresh_token), 400, "invalid_grant");
      assert.equal((await callTool(at, "get_secret", rotated.json.access_token)).status, 401);
      assertOAuthError(await refresh(rotated.json.refresh_token), 400, "invalid_grant");
    } finally {
      await capped.close();
    }
  });

  test("The memory store's default cap is 100,000 entries", async () => {
    const store = new MemoryStore();
    const expiresAt = nowSeconds() + 60;
    for (let i = 0; i < 100_000; i++) await store.spendOnce(`id-${i}`, expiresAt);
    assert.equal(store.size, 100_000);
    await assert.rejects(store.spendOnce("one-more", expiresAt));
    await store.revokeSession("sid", expiresAt);
    assert.equal(await store.isRevoked("sid"), true);
  });
});

// ─── Slow requests are cut ───────────────────────────────────────────────────────────────────────
// 6,000 connections each sent 65,535 of a declared 65,536 bytes, then stalled: memory held ~300 s.

describe("A stalled request is cut after the request timeout", () => {
  test("A body one byte short, and headers that never end: both closed (408 or a close) at the timeout", async () => {
    const strict = await startServer({
      port: 0,
      host: "127.0.0.1",
      headersTimeoutMs: 1000,
      requestTimeoutMs: 1000,
      log: () => {},
    });
    try {
      const at = new URL(strict.url).port;
      const stalledBody = rawExchange(
        `POST /token HTTP/1.1\r\nHost: 127.0.0.1:${at}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
          `Content-Length: 65536\r\n\r\n${"a".repeat(65535)}`,
        20_000,
        at,
      );
      const stalledHeaders = rawExchange(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${at}\r\nX-Slow: `, 20_000, at);
      for (const [what, reply] of [["body", await stalledBody], ["headers", await stalledHeaders]]) {
        assert.ok(
          !reply.startsWith("timeout"),
          `the stalled ${what} was still open after 20 s: ${reply.slice(0, 200)}`,
        );
        if (reply) assert.match(reply, /^HTTP\/1\.1 408 /, `the stalled ${what}: ${reply.slice(0, 200)}`);
      }
    } finally {
      await strict.close();
    }
  });
});

// ─── Malformed bases ─────────────────────────────────────────────────────────────────────────────
// PUBLIC_URL values such as http://exa mple.com started the server; its consent pages then answered 500.

/** startServer must reject, naming PUBLIC_URL; a server that starts anyway is closed before failing. */
async function assertRefusedAtStartup(publicUrl: string) {
  const outcome = await startServer({ port: 0, host: "127.0.0.1", publicUrl, log: () => {} }).then(
    async (started) => {
      await started.close();
      return "started";
    },
    (error: Error) => error.message,
  );
  assert.match(outcome, /PUBLIC_URL/, `PUBLIC_URL ${JSON.stringify(publicUrl)} is refused at startup: ${outcome}`);
}

describe("A malformed PUBLIC_URL stops startup", () => {
  test("PUBLIC_URL http://exa mple.com, http://localhost:99999, http://[::1, … → startup refused", async () => {
    for (
      const publicUrl of [
        "http://exa mple.com",
        "http://localhost:99999",
        "http://[::1",
        "ftp://example.com",
        "example.com",
        "http://",
        "https://example.com/?q=1",
        "https://example.com/#top",
        "https://user:pass@example.com",
      ]
    ) {
      await assertRefusedAtStartup(publicUrl);
    }
  });

  test("PUBLIC_URL http://localhost:0 (port 0, which no client can reach) → startup refused", async () => {
    await assertRefusedAtStartup("http://localhost:0");
  });

  test("A well-formed PUBLIC_URL (a port, a path) starts and names every URL (a trailing / dropped)", async () => {
    for (
      const [publicUrl, issuer] of [
        ["https://mcp.example.com", "https://mcp.example.com"],
        ["http://localhost:8080/", "http://localhost:8080"],
        ["https://mcp.example.com/tenant/", "https://mcp.example.com/tenant"],
      ]
    ) {
      const started = await startServer({ port: 0, host: "127.0.0.1", publicUrl, log: () => {} });
      try {
        const answer = await request(`${started.url}/.well-known/oauth-authorization-server`);
        assert.equal(answer.status, 200, answer.text);
        assert.equal(answer.json.issuer, issuer);
        const page = await request(authorizeUrl(started.url));
        assert.notEqual(page.status, 500, page.text);
      } finally {
        await started.close();
      }
    }
  });

  test("No Host value makes the consent page answer 500", async () => {
    const path = authorizeUrl(base).pathname + authorizeUrl(base).search;
    for (const host of ["::1:80", "127.999.999.999:5101", "localhost:99999", "[", "%", "localhost:", ":80"]) {
      const answer = await rawRequest({ path, headers: { host } });
      assert.ok(answer.status < 500, `Host ${JSON.stringify(host)}: ${answer.status} ${answer.text}`);
      assert.equal(answer.status, 403, `Host ${JSON.stringify(host)}: ${answer.text}`);
    }
  });
});

// ─── Store records last no longer than what they guard ───────────────────────────────────────────
// Sign-ins for /ttl/86400/mcp held a store entry for a day each, and one consent token could be POSTed
// again and again: 1,500 sign-ins filled a cap of 3,000, and every new user got 503 for 24 hours.

describe("No store record outlives what it guards; one consent yields one usable code", () => {
  test("/ttl/86400/mcp sign-ins fill the cap (503), then stop: after the refresh lifetime, one succeeds", async () => {
    const refreshSeconds = 2;
    const capped = await startServer({
      port: 0,
      host: "127.0.0.1",
      refreshTokenTtlSeconds: refreshSeconds,
      storeMaxEntries: 4,
      log: () => {},
    });
    try {
      const at = capped.url;
      const resource = `${at}/ttl/86400/mcp`;
      await signIn(at, { resource });
      await signIn(at, { resource }); // 2 × (spent code + session) = the cap
      const lastSignIn = Date.now();
      const refused = await exchangeCode(at, await authorizeCode(at, { resource }), resource);
      assertOAuthError(refused, 503, "temporarily_unavailable");
      // The flood stops. Its sessions' records go with their refresh tokens (whole seconds, rounded up).
      await sleep(lastSignIn + (refreshSeconds + 1) * 1000 + 300 - Date.now());
      const newcomer = await exchangeCode(at, await authorizeCode(at, { resource }), resource);
      assert.equal(newcomer.status, 200, `a new user signs in after the refresh lifetime: ${newcomer.text}`);
    } finally {
      await capped.close();
    }
  });

  test("One consent POSTed twice: the second code is a replay → invalid_grant, the first session revoked", async () => {
    const pkce = pkcePair();
    const { form } = await consentPage(authorizeUrl(base, { pkce }));
    const codes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const answer = await decide(form, "approve");
      assert.equal(answer.status, 303, `POST ${i + 1} of one consent: ${answer.text}`);
      codes.push(new URL(answer.headers.get("location") ?? "").searchParams.get("code") ?? "");
    }
    const authorization = { verifier: pkce.verifier, clientId: CLIENT_ID, redirectUri: REDIRECT_URI };
    const first = await exchangeCode(base, { ...authorization, code: codes[0] });
    assert.equal(first.status, 200, first.text);
    assert.equal((await callTool(base, "get_secret", first.json.access_token)).status, 200);
    const from = recorder.events.length;
    assertOAuthError(await exchangeCode(base, { ...authorization, code: codes[1] }), 400, "invalid_grant");
    assert.equal((await callTool(base, "get_secret", first.json.access_token)).status, 401, "the session is revoked");
    assertOAuthError(await refreshGrant(base, first.json.refresh_token), 400, "invalid_grant");
    const types = recorder.events.slice(from).map((event) => event.type);
    assert.ok(types.includes("code_replayed") && types.includes("session_revoked"), JSON.stringify(types));
  });
});

// ─── A revoked session stays revoked ─────────────────────────────────────────────────────────────
// A refresh at t+8 s (refresh lifetime 12 s, access 10 s) minted an access token living until t+18 s;
// reusing the old refresh token revoked the session only until t+12 s, and at t+13.5 s the token read
// the secret again.

describe("A revoked session stays revoked: no access token outlives its session", () => {
  test("A late refresh's access token is capped at the session's end and stays revoked past refresh end", async () => {
    const refreshSeconds = 2;
    const accessSeconds = 5;
    const short = await startServer({
      port: 0,
      host: "127.0.0.1",
      refreshTokenTtlSeconds: refreshSeconds,
      accessTokenTtlSeconds: accessSeconds,
      log: () => {},
    });
    try {
      const at = short.url;
      const first = await signIn(at);
      const started = decodeJwt(first.access_token).iat ?? 0;
      const refreshEnds = decodeJwt(first.refresh_token).exp ?? 0;
      await sleep(1300); // late in the session, before its refresh token expires
      const late = await refreshGrant(at, first.refresh_token);
      assert.equal(late.status, 200, late.text);
      const { exp, iat } = decodeJwt(late.json.access_token);
      const sessionEnd = started + Math.max(refreshSeconds, accessSeconds) + 1; // +1: expiry rounds up
      assert.ok((exp ?? Infinity) <= sessionEnd, `the late access token's exp ${exp} is capped at ${sessionEnd}`);
      assert.ok(
        late.json.expires_in <= (exp ?? 0) - (iat ?? 0),
        `expires_in ${late.json.expires_in} is the real remaining time (exp ${exp}, iat ${iat})`,
      );
      assertOAuthError(await refreshGrant(at, first.refresh_token), 400, "invalid_grant"); // the attacker's reuse
      assert.equal((await callTool(at, "get_secret", late.json.access_token)).status, 401, "revoked at once");
      await sleep(refreshEnds * 1000 + 500 - Date.now()); // past the refresh lifetime, where the revocation ended
      const after = await callTool(at, "get_secret", late.json.access_token);
      assert.equal(after.status, 401, `the revocation outlives every token of the session: ${after.text}`);
      assertOAuthError(await refreshGrant(at, late.json.refresh_token), 400, "invalid_grant");
    } finally {
      await short.close();
    }
  });
});

// ─── A metadata document's load is bounded ───────────────────────────────────────────────────────
// The address check resolved the document's host with no timeout, outside the fetch deadline: six
// requests naming hosts whose DNS never answered made a legitimate loopback document client wait 23.7 s.

/**
 * A stand-in for the resolver (the `resolveHost` option): names starting "stall-" never answer; the others
 * answer from `answers`, or fail. It records every name asked and every resolution the server cancelled.
 */
function standInResolver(answers: Record<string, string[]> = {}) {
  const calls: string[] = [];
  const cancelled: string[] = [];
  const resolveHost = (hostname: string, signal: AbortSignal): Promise<string[]> => {
    calls.push(hostname);
    signal.addEventListener("abort", () => cancelled.push(hostname), { once: true });
    if (hostname.startsWith("stall-")) return new Promise<string[]>(() => {}); // never answers, never fails
    const found = answers[hostname];
    return found ? Promise.resolve(found) : Promise.reject(new Error(`${hostname} does not resolve`));
  };
  return { resolveHost, calls, cancelled };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("A document load is bounded: one deadline, at most 16 at once, one fetch per URL", () => {
  const resolver = standInResolver();
  const events = eventRecorder();
  let quick: RunningServer; // a 300 ms deadline
  let patient: RunningServer; // a 2 s deadline: long enough to watch what happens while loads hang
  before(async () => {
    const options = { port: 0, host: "127.0.0.1", log: () => {}, resolveHost: resolver.resolveHost };
    quick = await startServer({ ...options, metadataTimeoutMs: 300, onEvent: events.onEvent });
    patient = await startServer({ ...options, metadataTimeoutMs: 2000 });
  });
  after(async () => {
    await quick.close();
    await patient.close();
  });

  test(
    "Six hosts whose DNS never answers → each 400 invalid_client at the deadline, lookup cancelled",
    {
      timeout: 20_000,
    },
    async () => {
      const hosts = range(6).map((i) => `stall-${i}.example`);
      const answers = await Promise.all(
        hosts.map((host) => authorize({ client_id: `https://${host}/client.json` }, quick.url)),
      );
      answers.forEach((answer, i) => assertDocumentRefused(answer, hosts[i]));
      assert.deepEqual([...resolver.calls].sort(), hosts, "the stand-in resolver was asked, once per host");
      await waitFor(() => resolver.cancelled.length >= hosts.length, 2000);
      assert.deepEqual([...resolver.cancelled].sort(), hosts, "the server cancels the resolutions it gave up on");
      for (const host of hosts) refusalReason(events, `https://${host}/client.json`);
    },
  );

  test("While six loads stall, a loopback document client is served before any of them is answered", {
    timeout: 20_000,
  }, async () => {
    const before = resolver.calls.length;
    const stalled = range(6).map((i) =>
      tracked(authorize({ client_id: `https://stall-order-${i}.example/client.json` }, patient.url))
    );
    assert.ok(await waitFor(() => resolver.calls.length >= before + 6), "the six loads are resolving");
    // A local development client, as in the report: http://localhost:PORT/… (localhost is never asked of DNS).
    const local = `http://localhost:${new URL(clientDocuments.origin).port}/cimd/local-dev.json`;
    clientDocuments.serve("/cimd/local-dev.json", {
      body: { client_id: local, client_name: "Local", redirect_uris: [REDIRECT_URI] },
    });
    const legitimate = await authorize({ client_id: local }, patient.url);
    assert.equal(legitimate.status, 200, legitimate.text);
    assert.equal(resolver.calls.includes("localhost"), false, "localhost is not resolved");
    assert.deepEqual(stalled.map((load) => load.settled()), range(6).map(() => false), "the stalled ones still wait");
    for (const load of stalled) assertDocumentRefused(await load.promise, "stalled");
  });

  test("Concurrent loads of one document URL share one fetch; a load after they end fetches again", async () => {
    const path = "/cimd/shared-load.json";
    const url = clientDocuments.client(path, [REDIRECT_URI]); // no Cache-Control: never cached
    clientDocuments.serve(path, {
      body: { client_id: url, client_name: "Shared", redirect_uris: [REDIRECT_URI] },
      delayMs: 1000,
    });
    const answers = await Promise.all(range(6).map(() => authorize({ client_id: url }, patient.url)));
    assert.deepEqual(answers.map((answer) => answer.status), range(6).map(() => 200));
    assert.equal(clientDocuments.fetches(path), 1, "six requests in flight together, one fetch");
    assert.equal((await authorize({ client_id: url }, patient.url)).status, 200);
    assert.equal(clientDocuments.fetches(path), 2, "only loads in flight are shared: no caching without max-age");
  });

  test(
    "16 loads stalled at once: a 17th is refused at once, never resolved; after them, loads work",
    {
      timeout: 20_000,
    },
    async () => {
      const before = resolver.calls.length;
      const stalled = range(16).map((i) =>
        tracked(authorize({ client_id: `https://stall-cap-${i}.example/client.json` }, patient.url))
      );
      assert.ok(await waitFor(() => resolver.calls.length >= before + 16), "sixteen loads are resolving");
      const seventeenth = await authorize({ client_id: "https://stall-cap-16.example/client.json" }, patient.url);
      assertDocumentRefused(seventeenth, "the 17th load");
      assert.deepEqual(stalled.map((load) => load.settled()), range(16).map(() => false), "refused before any ends");
      assert.equal(resolver.calls.includes("stall-cap-16.example"), false, "the 17th is never resolved");
      for (const load of stalled) assertDocumentRefused(await load.promise, "stalled");
      const legitimate = await authorize({ client_id: CLIENT_ID }, patient.url);
      assert.equal(legitimate.status, 200, `room again once the stalled loads ended: ${legitimate.text}`);
    },
  );
});

// ─── With PUBLIC_URL, no loopback document; a caller learns nothing of why ───────────────────────
// With PUBLIC_URL=https://tunnel.example, a remote caller sending that Host could name
// http://127.0.0.1:<any port>/<any path> as a client_id; the server fetched it, and the error told the
// result ("unreachable", "answered HTTP 401", "names another client_id", "over 16384 bytes").

describe("With PUBLIC_URL, no loopback document is fetched; a caller learns only that it could not be used", () => {
  test("Host tunnel.example, client_id a loopback URL → 400 invalid_client, generic text, zero fetches", async () => {
    const events = eventRecorder();
    const tunnel = await startServer({
      port: 0,
      host: "127.0.0.1",
      publicUrl: "https://tunnel.example",
      log: () => {},
      onEvent: events.onEvent,
    });
    try {
      const docPort = new URL(clientDocuments.origin).port;
      const ownPort = new URL(tunnel.url).port;
      const valid = clientDocuments.client("/ssrf/client.json", [REDIRECT_URI]);
      clientDocuments.serve("/ssrf/admin.json", { status: 401, body: { error: "who are you" } });
      const clientIds = [
        valid,
        `${clientDocuments.origin}/ssrf/admin.json`,
        `http://localhost:${docPort}/ssrf/client.json`,
        `http://[::1]:${docPort}/ssrf/client.json`,
        `http://127.1.2.3:${docPort}/ssrf/client.json`,
        `http://2130706433:${docPort}/ssrf/client.json`, // 127.0.0.1 as one number
        `http://[::ffff:127.0.0.1]:${docPort}/ssrf/client.json`,
        `https://127.0.0.1:${docPort}/ssrf/client.json`,
        "http://127.0.0.1:9/ssrf/closed-port.json",
        `http://127.0.0.1:${ownPort}/.well-known/oauth-authorization-server`,
      ];
      const texts = new Set<string>();
      for (const clientId of clientIds) {
        const url = authorizeUrl("https://tunnel.example", { clientId });
        const answer = await rawRequest(
          { path: url.pathname + url.search, headers: { host: "tunnel.example" } },
          tunnel.url,
        );
        assertDocumentRefused(answer, clientId);
        texts.add(answer.text);
        refusalReason(events, clientId);
      }
      assert.equal(texts.size, 1, `every refusal reads the same: ${[...texts].join(" | ")}`);
      assert.equal(clientDocuments.fetches("/ssrf/client.json"), 0, "the loopback document was never fetched");
      assert.equal(clientDocuments.fetches("/ssrf/admin.json"), 0);
    } finally {
      await tunnel.close();
    }
  });

  test("Without PUBLIC_URL too, the answer is the generic text; why is in metadata_document_refused", async () => {
    const padded = "/detail/padded.json";
    const other = "/detail/other.json";
    const cases: Record<string, string> = {
      unreachable: "http://127.0.0.1:9/detail/closed.json",
      "HTTP 401": clientDocuments.serve("/detail/401.json", { status: 401, body: { error: "no" } }),
      "another client_id": clientDocuments.client(other, [REDIRECT_URI], {
        extra: { client_id: "https://other.example/client.json" },
      }),
      "over 16 KiB": clientDocuments.serve(padded, {
        body: { client_id: `${clientDocuments.origin}${padded}`, redirect_uris: [REDIRECT_URI], pad: "x".repeat(17e3) },
      }),
      redirect: clientDocuments.serve("/detail/moved.json", {
        status: 302,
        body: "",
        headers: { location: CLIENT_ID },
      }),
    };
    const reasons = new Set<string>();
    for (const [what, clientId] of Object.entries(cases)) {
      const answer = await authorize({ client_id: clientId });
      assertDocumentRefused(answer, what);
      reasons.add(refusalReason(recorder, clientId));
    }
    assert.equal(reasons.size, Object.keys(cases).length, `each event says its own why: ${[...reasons].join(" | ")}`);
  });
});

// ─── Line separators and bidi controls ───────────────────────────────────────────────────────────
// U+2028, U+2029 and U+202E in client_name were accepted, written raw into the log, and shown raw on
// the consent page, where a right-to-left override disguises the client's name.

const INVISIBLE: Record<string, string> = {
  "U+2028": "\u2028",
  "U+2029": "\u2029",
  "U+200E": "\u200e",
  "U+200F": "\u200f",
  "U+202A": "\u202a",
  "U+202E": "\u202e",
  "U+2066": "\u2066",
  "U+2069": "\u2069",
};
const INVISIBLE_CHARACTER = /[\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

describe("Line separators and bidi controls are refused in client names and ids, and never logged raw", () => {
  test("/register, client_name holding U+2028, U+2029, U+202E, U+200E, U+2066… → invalid_client_metadata", async () => {
    for (const [name, character] of Object.entries(INVISIBLE)) {
      const answer = await postJson(`${base}/register`, {
        redirect_uris: [REDIRECT_URI],
        client_name: `Pay${character}laP Wallet`,
      });
      assert.equal(answer.status, 400, `${name}: ${answer.text}`);
      assertOAuthError(answer, 400, "invalid_client_metadata");
    }
  });

  test("A metadata document whose client_name holds one → 400 invalid_client", async () => {
    for (const [name, character] of Object.entries(INVISIBLE)) {
      const clientId = clientDocuments.client(`/cimd/name-${name}.json`, [REDIRECT_URI], {
        name: `Pay${character}laP Wallet`,
      });
      const answer = await authorize({ client_id: clientId });
      assert.equal(answer.status, 400, `${name}: ${answer.text.slice(0, 200)}`);
      assertDocumentRefused(answer, name);
    }
  });

  test("A client_id holding one (its document agreeing) → 400 invalid_client, never fetched", async () => {
    for (const [name, character] of Object.entries(INVISIBLE)) {
      const clientId = `${clientDocuments.origin}/cimd/id-${character}${name}.json`;
      const path = new URL(clientId).pathname; // where a fetch would go: the character percent-encoded
      clientDocuments.serve(path, { body: { client_id: clientId, client_name: "Id", redirect_uris: [REDIRECT_URI] } });
      const answer = await authorize({ client_id: clientId });
      assert.equal(answer.status, 400, `${name}: ${answer.text.slice(0, 200)}`);
      assertOAuthError(answer, 400, "invalid_client");
      assert.equal(clientDocuments.fetches(path), 0, `${name}: refused before the document is fetched`);
    }
  });

  test("No log line holds one raw: a client_id, a parameter name, a client_name, a tool name", async () => {
    const from = logged.length;
    const all = Object.values(INVISIBLE).join("");
    await authorize({ client_id: `${CLIENT_ID}${all}` });
    await authorize({ client_id: `x${all}` });
    const url = authorizeUrl(base);
    url.searchParams.append(`state${all}`, "1");
    url.searchParams.append(`state${all}`, "2");
    assertOAuthError(await request(url), 400, "invalid_request");
    await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: `App${all}` });
    await callTool(base, `tool${all}`);
    await postForm(`${base}/token`, { grant_type: `refresh_token${all}` });
    await tick();
    assert.ok(logged.length > from, "the refusals are logged");
    for (const line of logged.slice(from)) {
      assert.doesNotMatch(line, INVISIBLE_CHARACTER, `raw in a log line: ${JSON.stringify(line)}`);
    }
    const escaped = logged.slice(from).filter((line) => /\\u2028.*\\u202e/i.test(line));
    assert.ok(escaped.length > 0, `logged escaped (\\u2028 … \\u202e): ${JSON.stringify(logged.slice(from))}`);
  });
});

// ─── The address check ───────────────────────────────────────────────────────────────────────────
// Treated as public: IPv4-compatible IPv6 (::a00:1), site-local fec0::/10, 6to4 2002::/16 wrapping
// 10.0.0.1 or 169.254.169.254, Teredo 2001::/32, NAT64 64:ff9b::/96.

/** How an event names a refusal for the address itself (not for a failed fetch). */
const ADDRESS_REASON = /address|private|reserved|special|loopback|link-local|multicast|documentation|embed|range/i;

/** Every refused range: [the host as a URL names it, the address a resolver would answer, what it is]. */
const REFUSED_ADDRESSES: [string, string, string][] = [
  ["[::a00:1]", "::a00:1", "IPv4-compatible ::10.0.0.1"],
  ["[::10.0.0.1]", "::10.0.0.1", "IPv4-compatible, dotted"],
  ["[::ffff:10.0.0.1]", "::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1"],
  ["[::ffff:169.254.169.254]", "::ffff:169.254.169.254", "IPv4-mapped link-local"],
  ["[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254"],
  ["[64:ff9b::10.0.0.1]", "64:ff9b::10.0.0.1", "NAT64 10.0.0.1"],
  ["[2002:a00:1::1]", "2002:a00:1::1", "6to4 10.0.0.1"],
  ["[2002:a9fe:a9fe::]", "2002:a9fe:a9fe::", "6to4 169.254.169.254"],
  ["[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"],
  ["[2001::1]", "2001::1", "Teredo"],
  ["[fec0::1]", "fec0::1", "site-local"],
  ["[feff::1]", "feff::1", "site-local, last block"],
  ["[2001:db8::1]", "2001:db8::1", "documentation"],
  ["[fc00::1]", "fc00::1", "unique local"],
  ["[fd12:3456::1]", "fd12:3456::1", "unique local"],
  ["[fe80::1]", "fe80::1", "link-local"],
  ["[ff02::1]", "ff02::1", "multicast"],
  ["[::]", "::", "unspecified"],
  ["[100::1]", "100::1", "discard-only, outside 2000::/3"],
  ["[4000::1]", "4000::1", "outside 2000::/3"],
  ["0.1.2.3", "0.1.2.3", "0.0.0.0/8"],
  ["10.1.2.3", "10.1.2.3", "10/8"],
  ["100.64.0.1", "100.64.0.1", "shared address space 100.64/10"],
  ["100.127.255.254", "100.127.255.254", "100.64/10, its end"],
  ["169.254.169.254", "169.254.169.254", "link-local"],
  ["0xa9fea9fe", "169.254.169.254", "link-local, one hex number"],
  ["172.16.0.1", "172.16.0.1", "172.16/12"],
  ["172.31.255.254", "172.31.255.254", "172.16/12, its end"],
  ["192.0.0.8", "192.0.0.8", "IETF protocol assignments 192.0.0/24"],
  ["192.0.2.1", "192.0.2.1", "TEST-NET-1"],
  ["192.88.99.1", "192.88.99.1", "6to4 relay anycast"],
  ["192.168.0.1", "192.168.0.1", "192.168/16"],
  ["198.18.0.1", "198.18.0.1", "benchmarking 198.18/15"],
  ["198.19.255.254", "198.19.255.254", "198.18/15, its end"],
  ["198.51.100.1", "198.51.100.1", "TEST-NET-2"],
  ["203.0.113.1", "203.0.113.1", "TEST-NET-3"],
  ["224.0.0.1", "224.0.0.1", "multicast"],
  ["239.255.255.250", "239.255.255.250", "multicast, its end"],
  ["240.0.0.1", "240.0.0.1", "reserved 240/4"],
  ["255.255.255.255", "255.255.255.255", "broadcast"],
];

describe("The address check judges an embedded IPv4 address by itself and refuses every special-purpose range", () => {
  const resolver = standInResolver(
    Object.fromEntries(REFUSED_ADDRESSES.map(([, address], i) => [`resolves-${i}.example`, [address]])),
  );
  const events = eventRecorder();
  let checked: RunningServer;
  before(async () => {
    checked = await startServer({
      port: 0,
      host: "127.0.0.1",
      log: () => {},
      resolveHost: resolver.resolveHost,
      onEvent: events.onEvent,
    });
  });
  after(() => checked.close());

  test("Each range as an https client_id literal → 400, nothing resolved, the event names the address", async () => {
    for (const [i, [host, , what]] of REFUSED_ADDRESSES.entries()) {
      const clientId = `https://${host}/range-${i}/client.json`;
      const answer = await authorize({ client_id: clientId }, checked.url);
      assertDocumentRefused(answer, `${host} (${what})`);
      const reason = refusalReason(events, clientId);
      assert.match(reason, ADDRESS_REASON, `${host} (${what}) is refused for its address: ${reason}`);
    }
    assert.deepEqual(resolver.calls, [], "an address literal is never resolved");
  });

  test("A host name that resolves to any of them → 400 invalid_client, an event naming the address", async () => {
    for (const [i, [, address, what]] of REFUSED_ADDRESSES.entries()) {
      const clientId = `https://resolves-${i}.example/client.json`;
      const answer = await authorize({ client_id: clientId }, checked.url);
      assertDocumentRefused(answer, `${address} (${what})`);
      assert.ok(resolver.calls.includes(`resolves-${i}.example`), `resolves-${i}.example was resolved`);
      const reason = refusalReason(events, clientId);
      assert.match(reason, ADDRESS_REASON, `a name resolving to ${address} (${what}): ${reason}`);
    }
  });
});

// ─── A loopback Host only from a loopback peer ───────────────────────────────────────────────────
// With HOST=0.0.0.0 and no PUBLIC_URL, any remote peer that sent `Host: localhost` was served.

const nonLoopback = Object.values(networkInterfaces()).flat().find((found) =>
  found?.family === "IPv4" && !found.internal
)?.address;

describe("A loopback Host is believed only from a loopback peer", () => {
  const skip = nonLoopback ? false : "this machine has no non-loopback IPv4 address to be a remote peer from";
  const path = "/.well-known/oauth-authorization-server";

  test(
    "On 0.0.0.0, from a non-loopback address, Host localhost, 127.0.0.1, [::1] → 403; from loopback 200",
    {
      skip,
    },
    async () => {
      const wide = await startServer({ port: 0, host: "0.0.0.0", log: () => {} });
      try {
        const at = new URL(wide.url).port;
        const remote = { connectTo: nonLoopback, localAddress: nonLoopback };
        for (const host of ["localhost", `localhost:${at}`, `127.0.0.1:${at}`, `[::1]:${at}`]) {
          const answer = await sendRaw({ path, headers: { host }, ...remote }, wide.url);
          assertOAuthError(answer, 403, "invalid_request");
          const mcp = await sendRaw({
            method: "POST",
            path: "/mcp",
            headers: { host, "content-type": "application/json", accept: "application/json, text/event-stream" },
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami" } }),
            ...remote,
          }, wide.url);
          assert.equal(mcp.status, 403, `Host ${host} on /mcp from ${nonLoopback}: ${mcp.text}`);
          assert.equal(parseJson(mcp.text)?.error?.code, -32000, mcp.text);
        }
        const local = await sendRaw({ path, headers: { host: `localhost:${at}` } }, wide.url);
        assert.equal(local.status, 200, `the same request from loopback: ${local.text}`);
      } finally {
        await wide.close();
      }
    },
  );

  test("With PUBLIC_URL set, a remote peer is served under PUBLIC_URL's host only: Host localhost → 403", {
    skip,
  }, async () => {
    const wide = await startServer({ port: 0, host: "0.0.0.0", publicUrl: "https://mcp.example.com", log: () => {} });
    try {
      const remote = { connectTo: nonLoopback, localAddress: nonLoopback };
      const own = await sendRaw({ path, headers: { host: "mcp.example.com" }, ...remote }, wide.url);
      assert.equal(own.status, 200, own.text);
      assert.equal(parseJson(own.text)?.issuer, "https://mcp.example.com");
      for (const host of ["localhost", `127.0.0.1:${new URL(wide.url).port}`]) {
        assertOAuthError(await sendRaw({ path, headers: { host }, ...remote }, wide.url), 403, "invalid_request");
      }
    } finally {
      await wide.close();
    }
  });
});
