/**
 * Regression tests for issue #11, the security round: each attack as it was reported, sent to a real
 * server over HTTP, and the answer that now stops it. One describe per item:
 *   1. consent is a user action (a form POST with a signed consent token, same origin only); Host check;
 *   2. Client ID Metadata Documents are fetched and checked (no open redirect);
 *   3. logs cannot be forged;
 *   4. the single-use memory has a real bound;
 *   6. slow bodies are cut;
 *   7. malformed bases never start a server, nor make one answer 500.
 * Item 5 (Redis eviction) lives in test/multi-instance.test.ts, next to the Redis it needs; the browser
 * half of item 1 in test/browser.test.ts.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import process from "node:process";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { MemoryStore, type RunningServer, startServer } from "../server.ts";
import {
  authorizeCode,
  authorizeUrl,
  callTool,
  CLIENT_ID,
  clientDocuments,
  consentPage,
  decide,
  postForm,
  postJson,
  REDIRECT_URI,
  request,
  signIn,
} from "./helpers.ts";

const SECRET = randomBytes(32).toString("hex");
const FORGED_LINE = "[oauth] session ABC revoked: forged";
let server: RunningServer;
let base = "";
let port = "";
const logged: string[] = [];

before(async () => {
  server = await startServer({ port: 0, host: "127.0.0.1", jwtSecret: SECRET, log: (line) => logged.push(line) });
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
  const url = new URL(at);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({
      host: url.hostname,
      port: url.port,
      method: options.method ?? "GET",
      path: options.path,
      headers: options.headers,
      agent: false,
    }, (incoming) => {
      let text = "";
      incoming.setEncoding("utf8").on("data", (chunk: string) => (text += chunk)).on("end", () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(incoming.headers)) {
          if (typeof value === "string") headers.set(name, value);
        }
        resolve({ status: incoming.statusCode ?? 0, headers, text });
      });
    });
    outgoing.on("error", reject).end(options.body);
  });
}

/** What a raw socket receives for `data` until the server closes it (or `limitMs` passes: then "timeout"). */
function rawExchange(data: string, limitMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(Number(port), "127.0.0.1", () => socket.write(data));
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

// ─── Item 1: consent is a user action ────────────────────────────────────────────────────────────
// Any web page could fetch /authorize?…&approved=1 for a client it controls and get a code: consent was
// a GET. Now the page is a form whose POST carries a signed consent token; a GET never approves.

describe("Item 1: consent is a form POST from the server's own page", () => {
  const attackerRedirect = `${clientDocuments.origin}/attacker/cb`;
  const attackerClient = clientDocuments.client("/attacker/client.json", [attackerRedirect], { name: "Attacker" });

  test("The attacker's GET /authorize?…&client_id=<its origin>/client.json&redirect_uri=<its origin>/cb&approved=1 → 200 consent page, no Location, no code, no CORS", async () => {
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

  test("Another origin's preflight of /authorize or /elicitation-callback → 204 with no Access-Control-* header at all", async () => {
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

  test("The attacker's cross-site form POST (Sec-Fetch-Site: cross-site, same-site or none) → 403 invalid_request, no code", async () => {
    for (const site of ["cross-site", "same-site", "none"]) {
      const { form } = await consentPage(
        authorizeUrl(base, { clientId: attackerClient, redirectUri: attackerRedirect }),
      );
      const answer = await decide(form, "approve", { "sec-fetch-site": site });
      assertOAuthError(answer, 403, "invalid_request");
      assert.doesNotMatch(answer.text, /code=/);
    }
  });

  test("A POST whose Origin is not the server's own (another port, another host, null) → 403 invalid_request", async () => {
    const { form } = await consentPage(authorizeUrl(base));
    for (
      const origin of [clientDocuments.origin, "https://evil.example", "null", `http://127.0.0.1:${port}.evil.example`]
    ) {
      assertOAuthError(await decide(form, "approve", { origin }), 403, "invalid_request");
    }
  });

  test("What a browser sends on a click (Sec-Fetch-Site: same-origin, the server's own Origin) → 303 with a code", async () => {
    const { form } = await consentPage(authorizeUrl(base, { state: "click" }));
    const answer = await decide(form, "approve", { "sec-fetch-site": "same-origin", origin: base });
    assert.equal(answer.status, 303, answer.text);
    const location = new URL(answer.headers.get("location") ?? "");
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.ok(location.searchParams.get("code"));
    assert.equal(location.searchParams.get("state"), "click");
    assert.equal(location.searchParams.get("iss"), base);
  });

  test("The server's own origin is the one its Host names: via Host localhost:PORT, Origin http://localhost:PORT → 303", async () => {
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

  test("A consent token that is missing, forged, altered, expired or of another kind → 400 invalid_request", async () => {
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

  test("A decision other than approve or deny, a missing one, or a repeated parameter → 400 invalid_request", async () => {
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

// ─── Item 1 and 7: the Host header ───────────────────────────────────────────────────────────────
// DNS rebinding: a page on evil.example, rebound to 127.0.0.1, talks to the server with Host: evil.example.
// Malformed Host values passed the loopback check and then made the consent page answer 500.

describe("Items 1 and 7: only a loopback Host (or PUBLIC_URL's host) is served", () => {
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

  test("The attacker's Host values (::1:80, 127.999.999.999:5101, localhost:99999, evil.example, …) → 403 on every path, never a 500", async () => {
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

// ─── Item 2: Client ID Metadata Documents are fetched and checked ────────────────────────────────
// The server took any https URL as a client_id without fetching it, so client_id=https://c.example/m
// with redirect_uri=https://evil.example/phish redirected the user, code in hand, to evil.example.

describe("Item 2: a metadata-document client_id is fetched and checked before anything else", () => {
  test("The attacker's request: client_id=https://c.example/m&redirect_uri=https://evil.example/phish&approved=1 → 400 invalid_client, no redirect", async () => {
    const answer = await authorize({
      client_id: "https://c.example/m",
      redirect_uri: "https://evil.example/phish",
      approved: "1",
    });
    assertOAuthError(answer, 400, "invalid_client");
  });

  // A redirect_uri the document does not list is refused as a DCR client's unregistered one is:
  // invalid_request (RFC 6749 §4.1.2.1), shown here, never followed.
  test("A fetched document that does not list the redirect_uri → 400 invalid_request saying so, no redirect", async () => {
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

  test("A document whose client_id is not exactly its URL → 400 invalid_client", async () => {
    const path = "/cimd/mismatch.json";
    const url = `${clientDocuments.origin}${path}`;
    for (const claimed of [`${url}x`, `${url}/`, "https://client.example/client.json", url.toUpperCase(), undefined]) {
      clientDocuments.client(path, [REDIRECT_URI], { extra: { client_id: claimed } });
      const answer = await authorize({ client_id: url });
      assertOAuthError(answer, 400, "invalid_client");
      assert.match(parseJson(answer.text).error_description, /client_id/);
    }
  });

  test("A redirect to a document is not followed → 400 invalid_client, the target never fetched", async () => {
    const target = clientDocuments.client("/cimd/redirect-target.json", [REDIRECT_URI]);
    for (const status of [301, 302, 303, 307, 308]) {
      const path = `/cimd/redirect-${status}.json`;
      const url = clientDocuments.serve(path, { status, body: "", headers: { location: target } });
      const answer = await authorize({ client_id: url });
      assertOAuthError(answer, 400, "invalid_client");
      assert.match(parseJson(answer.text).error_description, /redirect/i);
    }
    assert.equal(clientDocuments.fetches("/cimd/redirect-target.json"), 0);
  });

  test("A document that is not JSON, not an object, over 16 KiB, or answered with an error status → 400 invalid_client", async () => {
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

  test("A document with no usable redirect_uris, a bad client_name, or a client secret method → 400 invalid_client", async () => {
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

  test("http off loopback, or an address that is private, link-local, unspecified or multicast → 400 invalid_client, never fetched", async () => {
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
      assertOAuthError(answer, 400, "invalid_client");
      if (i > 0) {
        assert.match(
          parseJson(answer.text).error_description,
          /private|link-local|loopback|address|public|multicast|unspecified/i,
          `${urls[i]}: refused for its address, not after trying it: ${answer.text}`,
        );
      }
    });
  });

  test("An unreachable document → 400 invalid_client saying so", async () => {
    const answer = await authorize({ client_id: "http://127.0.0.1:9/client.json" });
    assertOAuthError(answer, 400, "invalid_client");
  });

  test("A document that does not arrive within the fetch timeout (3 s) → 400 invalid_client", async () => {
    const path = "/cimd/slow.json";
    const url = `${clientDocuments.origin}${path}`;
    clientDocuments.serve(path, { body: { client_id: url, redirect_uris: [REDIRECT_URI] }, delayMs: 8000 });
    assertOAuthError(await authorize({ client_id: url }), 400, "invalid_client");
  });

  test("Cache-Control: max-age=N → fetched once and reused; no-store, no-cache or none → fetched every time", async () => {
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
    for (let i = 0; i <= 1000; i += 50) {
      const batch = Array.from({ length: Math.min(50, 1001 - i) }, (_, j) => `/cimd/bound-${i + j}.json`);
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

// ─── Item 3: logs cannot be forged ───────────────────────────────────────────────────────────────
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

describe("Item 3: every logged value is escaped; names with control characters are refused", () => {
  const forgery = `x\n${FORGED_LINE}\r\n\u001b[2K\u001b[1A`;

  test("The attacker's client_id with %0A → 400 invalid_client; the log shows it escaped", async () => {
    const from = logged.length;
    assertOAuthError(await authorize({ client_id: forgery }), 400, "invalid_client");
    const url = `${CLIENT_ID}\n${FORGED_LINE}`; // a URL parser would drop the newline: the server must not
    assertOAuthError(await authorize({ client_id: url }), 400, "invalid_client");
    assert.ok(logged.length > from, "the refusals are logged");
    assertCleanLogs(logged.slice(from));
  });

  test("A metadata-document client_id holding a newline or tab, its document naming that exact client_id → 400 invalid_client, never fetched", async () => {
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

  test("The attacker's repeated parameter whose name holds %0A → 400 invalid_request; the log shows it escaped", async () => {
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
    assert.ok(logged.length > from, "the refusals are logged");
    assertCleanLogs(logged.slice(from));
  });

  test("The attacker's /register with a client_name holding \\n and ANSI escapes → 400 invalid_client_metadata, logged escaped", async () => {
    const from = logged.length;
    for (const name of [forgery, "App\u001b[31m", "App\u0000", "App\u0085", "App\u007f"]) {
      const answer = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: name });
      assertOAuthError(answer, 400, "invalid_client_metadata");
    }
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
    assertCleanLogs(logged.slice(from));
    assertCleanLogs(logged); // and nothing before either
  });
});

// ─── Item 4: the single-use memory has a real bound ──────────────────────────────────────────────
// Each refresh rotation added an entry that lived as long as the session: 8 refresh chains added
// 120,631 entries in 40 s with REFRESH_TOKEN_TTL_SECONDS=86400. Now a session is one record updated in
// place, and the store has a cap past which it refuses new entries (503) rather than grow.

describe("Item 4: refresh rotation adds no entry; the store has a cap", () => {
  test("The attacker's 8 refresh chains with a one-day refresh lifetime: hundreds of rotations leave the store's size unchanged", async () => {
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

  test("A store at its cap (storeMaxEntries) → 503 temporarily_unavailable for a new session, never tokens; refresh and revocation go on", async () => {
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

// ─── Item 6: slow bodies are cut ─────────────────────────────────────────────────────────────────
// 6,000 connections each sent 65,535 of a declared 65,536 bytes, then stalled: memory held ~300 s.

describe("Item 6: a stalled request is cut after the request timeout", () => {
  test("The attacker's body, one byte short of its Content-Length, and headers that never end: both connections closed within 20 s (408 or a close)", async () => {
    const stalledBody = rawExchange(
      `POST /token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
        `Content-Length: 65536\r\n\r\n${"a".repeat(65535)}`,
      20_000,
    );
    const stalledHeaders = rawExchange(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Slow: `, 20_000);
    for (const [what, reply] of [["body", await stalledBody], ["headers", await stalledHeaders]]) {
      assert.ok(!reply.startsWith("timeout"), `the stalled ${what} was still open after 20 s: ${reply.slice(0, 200)}`);
      if (reply) assert.match(reply, /^HTTP\/1\.1 408 /, `the stalled ${what}: ${reply.slice(0, 200)}`);
    }
  });
});

// ─── Item 7: malformed bases ─────────────────────────────────────────────────────────────────────
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

describe("Item 7: a malformed PUBLIC_URL stops startup", () => {
  test("The attacker's PUBLIC_URL values (http://exa mple.com, http://localhost:99999, http://[::1) → startup refused, naming PUBLIC_URL", async () => {
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

  test("A well-formed PUBLIC_URL, with a port or a path, starts and names every URL (a trailing slash dropped)", async () => {
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
