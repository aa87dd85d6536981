/**
 * The upstream example's options, black-box over HTTP against real listening servers:
 *   - `/ttl/<seconds>/mcp`: the same MCP endpoint as a resource of its own, whose tokens live <seconds>;
 *   - `reactiveAuthOnly` (`REACTIVE_AUTH_ONLY=1`): auth is found only by following a 401;
 *   - `createHandler`: mounted in Express under /lazy-auth, in a plain node:http server with `basePath`,
 *     and behind a `PUBLIC_URL` that includes the mount;
 *   - the request trace (`logRequests`, on at the command line unless `LOG_REQUESTS=0`) and the event
 *     stream behind it (`onEvent`).
 * For each option that changes discovery or URLs, an official SDK client runs the whole lazy flow.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import express from "express";
import { decodeJwt } from "jose";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type OAuthClientProvider,
  type OAuthDiscoveryState,
  UnauthorizedError,
} from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationMixed, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import { createHandler, type LazyAuthEvent, type LazyAuthHandler, type RunningServer, startServer } from "../server.ts";
import {
  type Answer,
  authorizeUrl,
  CLIENT_ID,
  clientDocuments,
  consentPage,
  decide,
  pkcePair,
  postForm,
  postJson,
  REDIRECT_URI,
  request,
} from "./helpers.ts";
import {
  approveAsUser,
  CLIENT_METADATA_URL,
  describeLazyAuthFlow,
  FetchLog,
  TestOAuthProvider,
  toolText,
} from "./clients.ts";
import { sdkV2Client, type SdkV2Context } from "./sdk-v2-client.ts";

const QUIET = { port: 0, host: "127.0.0.1", log: () => {} };
const SECRET_TEXT = /The secret is: /;

// ─── Small helpers ───────────────────────────────────────────────────────────────────────────────

/** A JSON-RPC request in the 2025 handshake era to any MCP endpoint URL, with a bearer token when given. */
function rpcAt(mcpUrl: string, method: string, params: Record<string, unknown> = {}, token?: string) {
  const authorization = token === undefined ? undefined : `Bearer ${token}`;
  return postJson(mcpUrl, { jsonrpc: "2.0", id: 1, method, params }, { authorization });
}
const callToolAt = (mcpUrl: string, name: string, token?: string) =>
  rpcAt(mcpUrl, "tools/call", { name, arguments: {} }, token);

/** The lazy-auth gate's 401: JSON-RPC -32001, a challenge naming `metadataUrl`, invalid_token iff a token was sent. */
function assertChallenge(answer: Answer, metadataUrl: string, tokenSent: boolean) {
  assert.equal(answer.status, 401, `expected 401 -32001, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error?.code, -32001, answer.text);
  const challenge = answer.headers.get("www-authenticate") ?? "";
  assert.equal(/resource_metadata="([^"]*)"/.exec(challenge)?.[1], metadataUrl, challenge);
  assert.equal(
    challenge.includes(`error="invalid_token"`),
    tokenSent,
    `invalid_token iff a token was sent: ${challenge}`,
  );
}

function assertSecret(answer: Answer) {
  assert.equal(answer.status, 200, `expected 200 with the secret, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error, undefined, answer.text);
  assert.match(answer.json?.result?.content?.[0]?.text ?? "", SECRET_TEXT);
}

function assertOAuthError(answer: Answer, status: number, error: string) {
  assert.equal(answer.status, status, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.match(answer.headers.get("content-type") ?? "", /^application\/json/, answer.text);
  assert.equal(answer.json?.error, error, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(typeof answer.json?.error_description, "string");
}

/** A 200 JSON document (metadata), returned parsed. */
async function getJson(url: string) {
  const answer = await request(url);
  assert.equal(answer.status, 200, `expected 200 from ${url}, got ${answer.status}: ${answer.text}`);
  assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
  return answer.json;
}

/** The RFC 8414 §3 metadata URL of an issuer: the well-known segment inserted before the issuer's path. */
function authorizationServerMetadataUrl(issuer: string): string {
  const url = new URL(issuer);
  return `${url.origin}/.well-known/oauth-authorization-server${url.pathname.replace(/\/$/, "")}`;
}

/**
 * The user approves an authorization request for `resource` (a Client ID Metadata Document client), and
 * the code is exchanged naming the same resource: the callback URL and the token answer.
 */
async function signInFor(base: string, resource: string, exchangeResource = resource) {
  const pkce = pkcePair();
  const url = authorizeUrl(base, { pkce });
  url.searchParams.set("resource", resource);
  const { form } = await consentPage(url);
  assert.equal(form.action.href, `${base}/authorize`, "the consent form posts back to this server's /authorize");
  const approved = await decide(form, "approve");
  assert.equal(approved.status, 303, `approving answers 303: ${approved.text}`);
  const callback = new URL(approved.headers.get("location") ?? "");
  const exchange = await postForm(`${base}/token`, {
    grant_type: "authorization_code",
    code: callback.searchParams.get("code") ?? "",
    code_verifier: pkce.verifier,
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    resource: exchangeResource,
  });
  return { callback, exchange };
}

/** Signs in for `resource` and returns the token answer, which must be a 200. */
async function tokensFor(base: string, resource: string) {
  const { exchange } = await signInFor(base, resource);
  assert.equal(exchange.status, 200, `the code exchange answers 200: ${exchange.text}`);
  return exchange.json;
}

type Provider = TestOAuthProvider<OAuthTokens, OAuthClientInformationMixed, OAuthDiscoveryState>;

/**
 * The official SDK 1.x client against `mcpUrl`: connects and calls whoami with no token, meets the 401 on
 * get_secret, discovers and sends the user to authorize, the user approves, it finishes and retries.
 * With `register`, it registers dynamically; otherwise its client_id is a Client ID Metadata Document URL.
 */
async function sdkLazyFlow(mcpUrl: string, options: { register?: boolean } = {}) {
  const provider: Provider = new TestOAuthProvider(options.register ? {} : { clientId: CLIENT_METADATA_URL });
  const authProvider: OAuthClientProvider = provider;
  const fetchLog = new FetchLog();
  const client = new Client({ name: "options-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider, fetch: fetchLog.fetch });
  try {
    await client.connect(transport);
    assert.match(toolText(await client.callTool({ name: "whoami", arguments: {} })), /anonymous/);
    await assert.rejects(client.callTool({ name: "get_secret", arguments: {} }), UnauthorizedError);
    assert.equal(provider.authorizationUrls.length, 1, "the 401 sent the user to authorize");
    const authorizationUrl = provider.authorizationUrls[0];
    const callback = await approveAsUser(authorizationUrl);
    await transport.finishAuth(callback.searchParams.get("code") ?? "");
    const secret = toolText(await client.callTool({ name: "get_secret", arguments: {} }));
    return { provider, fetchLog, authorizationUrl, callback, secret };
  } finally {
    await client.close();
  }
}

/** Listens on a free loopback port; resolves with the origin and a close that cuts every connection. */
async function listen(server: Server) {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject).listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const origin = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return { origin, close };
}

// ─── /ttl/<seconds>/mcp ──────────────────────────────────────────────────────────────────────────

describe("/ttl/<seconds>/mcp: the same MCP endpoint, its own resource, metadata and token lifetime", () => {
  let server: RunningServer;
  let base = "";
  let ttlMcp = "";
  before(async () => {
    server = await startServer(QUIET);
    base = server.url;
    ttlMcp = `${base}/ttl/600/mcp`;
  });
  after(() => server.close());

  test("POST /ttl/600/mcp initialize, tools/list and the public whoami without a token → 200, as at /mcp", async () => {
    const init = await rpcAt(ttlMcp, "initialize", {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "ttl-test", version: "1" },
    });
    assert.equal(init.status, 200, init.text);
    assert.equal(init.json?.result?.protocolVersion, "2025-06-18");
    const tools = await rpcAt(ttlMcp, "tools/list");
    assert.equal(tools.status, 200, tools.text);
    assert.deepEqual(tools.json?.result, (await rpcAt(`${base}/mcp`, "tools/list")).json?.result, "the same tools");
    const whoami = await callToolAt(ttlMcp, "whoami");
    assert.equal(whoami.status, 200, whoami.text);
    assert.match(whoami.json?.result?.content?.[0]?.text ?? "", /anonymous/);
  });

  test("get_secret at /ttl/600/mcp, no token → 401 naming its own resource metadata (path-inserted)", async () => {
    assertChallenge(
      await callToolAt(ttlMcp, "get_secret"),
      `${base}/.well-known/oauth-protected-resource/ttl/600/mcp`,
      false,
    );
  });

  test("Its RFC 9728 metadata → 200: resource <base>/ttl/600/mcp, this authorization server", async () => {
    const metadata = await getJson(`${base}/.well-known/oauth-protected-resource/ttl/600/mcp`);
    assert.equal(metadata.resource, ttlMcp);
    assert.deepEqual(metadata.authorization_servers, [base]);
    assert.deepEqual(metadata.scopes_supported, ["mcp"]);
  });

  test("The bounds 1 and 86400 seconds are served → 200", async () => {
    for (const seconds of ["1", "86400"]) {
      const answer = await rpcAt(`${base}/ttl/${seconds}/mcp`, "ping");
      assert.equal(answer.status, 200, `ping at /ttl/${seconds}/mcp: ${answer.text}`);
      const metadata = await getJson(`${base}/.well-known/oauth-protected-resource/ttl/${seconds}/mcp`);
      assert.equal(metadata.resource, `${base}/ttl/${seconds}/mcp`);
    }
  });

  test("Zero, negative, non-numeric or out-of-range TTLs → 404 not_found, at the endpoint and metadata", async () => {
    for (const seconds of ["0", "-5", "abc", "1.5", "1e3", "86401", "100000", ""]) {
      assertOAuthError(await rpcAt(`${base}/ttl/${seconds}/mcp`, "ping"), 404, "not_found");
      assertOAuthError(
        await request(`${base}/.well-known/oauth-protected-resource/ttl/${seconds}/mcp`),
        404,
        "not_found",
      );
    }
    assertOAuthError(await rpcAt(`${base}/ttl/600`, "ping"), 404, "not_found");
  });

  test("Authorizing a resource with a TTL out of range → 400 invalid_target", async () => {
    for (const seconds of ["0", "86401", "abc"]) {
      const url = authorizeUrl(base);
      url.searchParams.set("resource", `${base}/ttl/${seconds}/mcp`);
      assertOAuthError(await request(url), 400, "invalid_target");
    }
  });

  test("A token for /ttl/600/mcp: expires_in 600, the access token lives 600 s, the session as long", async () => {
    const tokens = await tokensFor(base, ttlMcp);
    assert.equal(tokens.expires_in, 600);
    const access = decodeJwt(tokens.access_token);
    assert.equal(access.aud, ttlMcp, "its audience is the /ttl/600/mcp resource");
    const lifetime = (access.exp ?? 0) - (access.iat ?? 0);
    assert.ok(lifetime >= 600 && lifetime <= 601, `the access token lives 600 s (exp - iat = ${lifetime})`);
    const refresh = decodeJwt(tokens.refresh_token);
    const refreshLifetime = (refresh.exp ?? 0) - (refresh.iat ?? 0);
    assert.ok(
      refreshLifetime >= 300 && refreshLifetime <= 301,
      `the refresh token lives the refresh lifetime, 300 s (exp - iat = ${refreshLifetime})`,
    );

    const refreshed = await postForm(`${base}/token`, {
      grant_type: "refresh_token",
      refresh_token: tokens.refresh_token,
      client_id: CLIENT_ID,
    });
    assert.equal(refreshed.status, 200, `the refresh grant answers 200: ${refreshed.text}`);
    // The session (600 s here: the longer of the refresh and access lifetimes) began a moment ago, and no
    // access token outlives it: a refreshed one lives as long, up to the second the session has used.
    const expiresIn = refreshed.json?.expires_in;
    assert.ok(expiresIn >= 599 && expiresIn <= 600, `a refreshed token lives as long: expires_in ${expiresIn}`);
    const refreshedAccess = decodeJwt(refreshed.json?.access_token);
    assert.equal(refreshedAccess.aud, ttlMcp);
    assert.ok((refreshedAccess.exp ?? Infinity) <= (access.exp ?? 0), "it ends no later than the session's first");
    assertSecret(await callToolAt(ttlMcp, "get_secret", refreshed.json?.access_token));
  });

  test("A /ttl/600/mcp token works there → 200; at /mcp and other TTL paths → 401 invalid_token", async () => {
    const { access_token: token } = await tokensFor(base, ttlMcp);
    assertSecret(await callToolAt(ttlMcp, "get_secret", token));
    assertChallenge(
      await callToolAt(`${base}/mcp`, "get_secret", token),
      `${base}/.well-known/oauth-protected-resource/mcp`,
      true,
    );
    for (const seconds of ["60", "601", "86400"]) {
      assertChallenge(
        await callToolAt(`${base}/ttl/${seconds}/mcp`, "get_secret", token),
        `${base}/.well-known/oauth-protected-resource/ttl/${seconds}/mcp`,
        true,
      );
    }
  });

  test("A token for /mcp works there → 200, and is refused at /ttl/600/mcp → 401 invalid_token", async () => {
    const { access_token: token } = await tokensFor(base, `${base}/mcp`);
    assertSecret(await callToolAt(`${base}/mcp`, "get_secret", token));
    assertChallenge(
      await callToolAt(ttlMcp, "get_secret", token),
      `${base}/.well-known/oauth-protected-resource/ttl/600/mcp`,
      true,
    );
  });

  test("A code authorized for /ttl/600/mcp, exchanged naming /mcp → 400 invalid_target", async () => {
    const { exchange } = await signInFor(base, ttlMcp, `${base}/mcp`);
    assertOAuthError(exchange, 400, "invalid_target");
  });

  test("The official SDK 1.x client completes the lazy flow against /ttl/600/mcp; its token lives 600 s", async () => {
    const flow = await sdkLazyFlow(ttlMcp);
    assert.match(flow.secret, SECRET_TEXT);
    assert.equal(flow.authorizationUrl.searchParams.get("resource"), ttlMcp, "RFC 8707: the resource is /ttl/600/mcp");
    assert.ok(
      flow.fetchLog.paths().includes("GET /.well-known/oauth-protected-resource/ttl/600/mcp"),
      `discovery started at the /ttl/600/mcp metadata: ${flow.fetchLog.paths().join(", ")}`,
    );
    const tokens = flow.provider.tokens();
    assert.equal(tokens?.expires_in, 600);
    assert.equal(decodeJwt(tokens?.access_token ?? "").aud, ttlMcp);
  });
});

// ─── Reactive-only discovery ─────────────────────────────────────────────────────────────────────

describe("reactiveAuthOnly: auth is discoverable only through a 401", () => {
  let server: RunningServer;
  let base = "";
  let issuer = "";
  before(async () => {
    server = await startServer({ ...QUIET, reactiveAuthOnly: true });
    base = server.url;
    issuer = `${base}/oauth`;
  });
  after(() => server.close());

  /** The MCP endpoints a host may be pointed at, as paths. */
  const MCP_PATHS = ["/mcp", "/ttl/600/mcp", "/ttl/1/mcp"];

  test("Every resource document a host probes (root, /mcp, /ttl/N/mcp) → 200 naming no auth server", async () => {
    const probes = [
      ["/.well-known/oauth-protected-resource", "/mcp"],
      ...MCP_PATHS.map((path) => [`/.well-known/oauth-protected-resource${path}`, path]),
    ];
    for (const [probe, path] of probes) {
      const metadata = await getJson(`${base}${probe}`);
      assert.equal(
        metadata.authorization_servers,
        undefined,
        `${probe} names no authorization server: ${JSON.stringify(metadata)}`,
      );
      assert.equal(metadata.resource, `${base}${path}`, probe);
      assert.deepEqual(metadata.scopes_supported, ["mcp"], probe);
      assert.deepEqual(metadata.bearer_methods_supported, ["header"], probe);
    }
  });

  test("Every authorization-server document a host probes (root, under an MCP path) → 404 not_found", async () => {
    const probes = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"];
    for (const path of MCP_PATHS) {
      probes.push(`/.well-known/oauth-authorization-server${path}`, `/.well-known/openid-configuration${path}`);
      probes.push(`${path}/.well-known/openid-configuration`);
    }
    for (const probe of probes) assertOAuthError(await request(`${base}${probe}`), 404, "not_found");
  });

  test("The 401's resource_metadata, outside /.well-known/ → 200 naming <base>/oauth; its metadata → 200", async () => {
    for (const path of MCP_PATHS) {
      const metadataUrl = `${base}/oauth/protected-resource${path}`;
      assertChallenge(await callToolAt(`${base}${path}`, "get_secret"), metadataUrl, false);
      assertChallenge(await callToolAt(`${base}${path}`, "get_secret", "not-a-token"), metadataUrl, true);
      assert.ok(!new URL(metadataUrl).pathname.startsWith("/.well-known/"), "no host probes there unprompted");
      const resource = await getJson(metadataUrl);
      assert.equal(resource.resource, `${base}${path}`);
      assert.deepEqual(resource.authorization_servers, [issuer], `${metadataUrl} names the issuer`);
      assert.deepEqual(resource.scopes_supported, ["mcp"]);
    }
    const metadataUrl = authorizationServerMetadataUrl(issuer);
    assert.equal(metadataUrl, `${base}/.well-known/oauth-authorization-server/oauth`);
    const metadata = await getJson(metadataUrl);
    assert.equal(metadata.issuer, issuer, "RFC 8414 §3.3: the issuer is the one the document was found for");
    assert.equal(metadata.authorization_endpoint, `${base}/authorize`);
    assert.equal(metadata.token_endpoint, `${base}/token`);
  });

  test("iss in the authorization response and in the tokens is <base>/oauth; the token works at /mcp", async () => {
    const { callback, exchange } = await signInFor(base, `${base}/mcp`);
    assert.equal(callback.searchParams.get("iss"), issuer, "RFC 9207 iss");
    assert.equal(exchange.status, 200, `the code exchange answers 200: ${exchange.text}`);
    assert.equal(decodeJwt(exchange.json?.access_token).iss, issuer);
    assert.equal(decodeJwt(exchange.json?.refresh_token).iss, issuer);
    assertSecret(await callToolAt(`${base}/mcp`, "get_secret", exchange.json?.access_token));
  });

  test("The SDK 1.x client completes the flow: 401 → /oauth/protected-resource/mcp → issuer's metadata", async () => {
    const flow = await sdkLazyFlow(`${base}/mcp`);
    assert.match(flow.secret, SECRET_TEXT);
    const paths = flow.fetchLog.paths();
    assert.ok(paths.includes("GET /oauth/protected-resource/mcp"), paths.join(", "));
    assert.ok(paths.includes("GET /.well-known/oauth-authorization-server/oauth"), paths.join(", "));
    assert.equal(flow.callback.searchParams.get("iss"), issuer);
  });

  test("Without reactiveAuthOnly the root documents name the authorization server; /oauth metadata → 404", async () => {
    const proactive = await startServer(QUIET);
    try {
      const root = await getJson(`${proactive.url}/.well-known/oauth-protected-resource`);
      assert.deepEqual(root.authorization_servers, [proactive.url]);
      assert.equal((await getJson(`${proactive.url}/.well-known/oauth-authorization-server`)).issuer, proactive.url);
      assertOAuthError(
        await request(`${proactive.url}/.well-known/oauth-authorization-server/oauth`),
        404,
        "not_found",
      );
    } finally {
      await proactive.close();
    }
  });
});

// The whole story (public calls, 401, OAuth, retry, silent refresh, revocation, re-authorization) in the
// reactive-only mode, by the 2.x client in the 2026-07-28 era: it finds auth only through the 401.
describeLazyAuthFlow(
  "reactiveAuthOnly: @modelcontextprotocol/client 2.x, 2026-07-28, Client ID Metadata Document: the whole lazy flow",
  {
    cimd: true,
    serverOptions: { reactiveAuthOnly: true },
    issuerPath: "/oauth",
    discovery: {
      resourceMetadata: "GET /oauth/protected-resource/mcp",
      authorizationServerMetadata: "GET /.well-known/oauth-authorization-server/oauth",
    },
    makeClient: (context: SdkV2Context) => sdkV2Client(context, { pin: "2026-07-28" }),
  },
);

// ─── createHandler: mounting in an existing app ──────────────────────────────────────────────────

/** Every advertised URL of a handler whose base is `base`, served at `served` (the mount, as requests reach it). */
async function assertAdvertisedUnder(served: string, base: string) {
  const resource = await getJson(`${served}/.well-known/oauth-protected-resource/mcp`);
  assert.equal(resource.resource, `${base}/mcp`);
  assert.deepEqual(resource.authorization_servers, [base]);
  const metadata = await getJson(`${served}/.well-known/oauth-authorization-server`);
  assert.equal(metadata.issuer, base);
  for (const endpoint of ["authorization", "token", "registration"]) {
    assert.match(metadata[`${endpoint}_endpoint`], new RegExp(`^${base}/`), `${endpoint}_endpoint under ${base}`);
  }
  assertChallenge(
    await callToolAt(`${served}/mcp`, "get_secret"),
    `${base}/.well-known/oauth-protected-resource/mcp`,
    false,
  );
}

describe("createHandler: everything startServer serves, as a request listener to mount", () => {
  test("createHandler resolves to a node:http request listener; in a plain server it serves the flow", async () => {
    const handler: LazyAuthHandler = await createHandler({ log: () => {} });
    assert.equal(typeof handler, "function");
    const { origin, close } = await listen(createServer(handler));
    try {
      await assertAdvertisedUnder(origin, origin);
      const { access_token: token } = await tokensFor(origin, `${origin}/mcp`);
      assertSecret(await callToolAt(`${origin}/mcp`, "get_secret", token));
    } finally {
      await close();
    }
  });

  test("In Express, app.use('/lazy-auth', handler): every advertised URL carries /lazy-auth → 200", async () => {
    const app = express();
    app.use("/lazy-auth", await createHandler({ log: () => {} }));
    const { origin, close } = await listen(createServer(app));
    const base = `${origin}/lazy-auth`;
    try {
      await assertAdvertisedUnder(base, base);
      const { callback, exchange } = await signInFor(base, `${base}/mcp`); // checks the consent form's action
      assert.equal(callback.searchParams.get("iss"), base, "RFC 9207 iss carries the mount");
      assert.equal(exchange.status, 200, `the code exchange answers 200: ${exchange.text}`);
      assert.equal(decodeJwt(exchange.json?.access_token).iss, base);
      assert.equal(decodeJwt(exchange.json?.access_token).aud, `${base}/mcp`);
      assertSecret(await callToolAt(`${base}/mcp`, "get_secret", exchange.json?.access_token));
    } finally {
      await close();
    }
  });

  test("Another framework passes basePath: the handler strips /lazy-auth, answers the root forms → 200", async () => {
    // A plain node:http server hands the handler the full path, as frameworks without a mount do.
    const { origin, close } = await listen(
      createServer(await createHandler({ log: () => {}, basePath: "/lazy-auth" })),
    );
    const base = `${origin}/lazy-auth`;
    try {
      await assertAdvertisedUnder(base, base);
      const issuerMetadata = await getJson(authorizationServerMetadataUrl(base));
      assert.equal(issuerMetadata.issuer, base, "RFC 8414 §3: /.well-known/oauth-authorization-server/lazy-auth");
      const resource = await getJson(`${origin}/.well-known/oauth-protected-resource/lazy-auth/mcp`);
      assert.equal(
        resource.resource,
        `${base}/mcp`,
        "RFC 9728 §3.1: /.well-known/oauth-protected-resource/lazy-auth/mcp",
      );
      const { access_token: token } = await tokensFor(base, `${base}/mcp`);
      assertSecret(await callToolAt(`${base}/mcp`, "get_secret", token));
    } finally {
      await close();
    }
  });

  test("PUBLIC_URL including the mount: every advertised URL, iss and audience use it → 200", async () => {
    const publicBase = "https://mcp.example.com/lazy-auth";
    const app = express();
    app.use("/lazy-auth", await createHandler({ log: () => {}, publicUrl: publicBase }));
    const { origin, close } = await listen(createServer(app));
    try {
      const served = `${origin}/lazy-auth`; // reached on loopback, as a reverse proxy would forward it
      await assertAdvertisedUnder(served, publicBase);
      // Behind a public URL a loopback metadata-document client_id is refused unfetched; the client registers.
      const loopbackDocument = clientDocuments.client("/options/behind-public-url.json", [REDIRECT_URI]);
      const refused = await request(
        `${served}/authorize${authorizeUrl(publicBase, { clientId: loopbackDocument }).search}`,
      );
      assertOAuthError(refused, 400, "invalid_client");
      assert.equal(clientDocuments.fetches("/options/behind-public-url.json"), 0, "the document is never fetched");
      const registered = await postJson(`${served}/register`, { redirect_uris: [REDIRECT_URI], client_name: "Proxy" });
      assert.equal(registered.status, 201, registered.text);
      const clientId: string = registered.json.client_id;
      const pkce = pkcePair();
      const { form } = await consentPage(
        new URL(`${served}/authorize${authorizeUrl(publicBase, { pkce, clientId }).search}`),
      );
      assert.equal(form.action.href, `${publicBase}/authorize`, "the consent form posts to the public URL");
      const approved = await decide({ ...form, action: new URL(`${served}/authorize`) }, "approve");
      assert.equal(approved.status, 303, `approving answers 303: ${approved.text}`);
      const callback = new URL(approved.headers.get("location") ?? "");
      assert.equal(callback.searchParams.get("iss"), publicBase, "RFC 9207 iss is the public URL");
      const exchange = await postForm(`${served}/token`, {
        grant_type: "authorization_code",
        code: callback.searchParams.get("code") ?? "",
        code_verifier: pkce.verifier,
        client_id: clientId,
      });
      assert.equal(exchange.status, 200, `the code exchange answers 200: ${exchange.text}`);
      const access = decodeJwt(exchange.json?.access_token);
      assert.equal(access.iss, publicBase);
      assert.equal(access.aud, `${publicBase}/mcp`);
      assertSecret(await callToolAt(`${served}/mcp`, "get_secret", exchange.json?.access_token));
    } finally {
      await close();
    }
  });
});

describe("createHandler in Express with basePath and the root rewrite: an SDK client's flow at /lazy-auth/mcp", () => {
  let origin = "";
  let base = "";
  let close = () => Promise.resolve();
  before(async () => {
    // As the README shows: the mount, plus the two root documents RFC 8414 §3 and RFC 9728 §3.1 discovery asks for.
    const handler = await createHandler({ log: () => {}, basePath: "/lazy-auth" });
    const app = express();
    app.get(
      ["/.well-known/oauth-authorization-server/lazy-auth", "/.well-known/oauth-protected-resource/lazy-auth/*rest"],
      handler,
    );
    app.use("/lazy-auth", handler);
    ({ origin, close } = await listen(createServer(app)));
    base = `${origin}/lazy-auth`;
  });
  after(() => close());

  test("The root rewrite answers the path-inserted metadata of the mounted issuer and resources → 200", async () => {
    const metadata = await getJson(`${origin}/.well-known/oauth-authorization-server/lazy-auth`);
    assert.equal(metadata.issuer, base);
    assert.equal(metadata.registration_endpoint, `${base}/register`);
    for (const path of ["/mcp", "/ttl/600/mcp"]) {
      const resource = await getJson(`${origin}/.well-known/oauth-protected-resource/lazy-auth${path}`);
      assert.equal(resource.resource, `${base}${path}`);
      assert.deepEqual(resource.authorization_servers, [base]);
    }
    await assertAdvertisedUnder(base, base);
  });

  test("The official SDK 1.x client registers, authorizes and gets the secret at /lazy-auth/mcp", async () => {
    const flow = await sdkLazyFlow(`${base}/mcp`, { register: true });
    assert.match(flow.secret, SECRET_TEXT);
    const paths = flow.fetchLog.paths();
    for (
      const expected of [
        "GET /lazy-auth/.well-known/oauth-protected-resource/mcp", // named by the 401
        "GET /.well-known/oauth-authorization-server/lazy-auth", // RFC 8414 §3, through the root rewrite
        "POST /lazy-auth/register",
        "POST /lazy-auth/token",
      ]
    ) {
      assert.ok(paths.includes(expected), `${expected} in ${paths.join(", ")}`);
    }
    assert.equal(flow.authorizationUrl.origin + flow.authorizationUrl.pathname, `${base}/authorize`);
    assert.equal(flow.authorizationUrl.searchParams.get("resource"), `${base}/mcp`);
    assert.equal(flow.callback.searchParams.get("iss"), base);
  });
});

// ─── The request trace ───────────────────────────────────────────────────────────────────────────

/** What the `log` option received, with a way to wait (without a clock) for a line still to come. */
function logCollector() {
  const lines: string[] = [];
  const waiting: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  return {
    lines,
    log(line: string) {
      lines.push(line);
      for (const waiter of waiting.filter((w) => w.match(line))) {
        waiting.splice(waiting.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    },
    /** The first line that matches, once it has been written (the trace is written when the answer closes). */
    next(match: (line: string) => boolean): Promise<string> {
      const found = lines.find(match);
      return found !== undefined ? Promise.resolve(found) : new Promise((resolve) => waiting.push({ match, resolve }));
    },
  };
}

/** What the `onEvent` option received, with a way to wait (without a clock) for an event still to come. */
function eventCollector() {
  const events: LazyAuthEvent[] = [];
  const waiting: { match: (event: LazyAuthEvent) => boolean; resolve: (event: LazyAuthEvent) => void }[] = [];
  return {
    events,
    onEvent(event: LazyAuthEvent) {
      events.push(event);
      for (const waiter of waiting.filter((w) => w.match(event))) {
        waiting.splice(waiting.indexOf(waiter), 1);
        waiter.resolve(event);
      }
    },
    next(match: (event: LazyAuthEvent) => boolean): Promise<LazyAuthEvent> {
      const found = events.find(match);
      return found !== undefined ? Promise.resolve(found) : new Promise((resolve) => waiting.push({ match, resolve }));
    },
  };
}

/** An event as plain data to compare: its time zeroed, fields left undefined dropped. */
function timeless(event: LazyAuthEvent): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries({ ...event, at: 0 }).filter(([, value]) => value !== undefined),
  );
}

/** Lets the trace's batched lines be written: they go out once per turn of the event loop. */
const linesWritten = () => new Promise<void>((resolve) => setImmediate(resolve));

const TRACE = /^\[request\] (\S+) (\S+) → (\d{3}) bearer=(yes|no) (".*")$/;
/** Every kind of line break and control character a log reader might honour (C0, DEL, C1, U+2028/9). */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const LINE_BREAK_OR_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** Sends one raw HTTP/1.1 request, bytes as given (latin1), and resolves with the answer's status line. */
function rawRequest(port: number, head: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(head));
    let answer = "";
    socket.on("data", (chunk: Buffer) => (answer += chunk.toString("latin1")));
    socket.on("end", () => resolve(answer.split("\r\n")[0]));
    socket.on("error", reject);
  });
}

describe("The request trace: one line per request through the log option", () => {
  let server: RunningServer;
  let base = "";
  const collected = logCollector();
  const marker = () => `trace-${randomBytes(4).toString("hex")}`;
  const traceOf = (agent: string) => collected.next((line) => line.startsWith("[request] ") && line.includes(agent));
  const seen = eventCollector();
  const eventOf = (agent: string) => seen.next((event) => event.type === "request" && event.agent === agent);
  before(async () => {
    server = await startServer({ ...QUIET, log: collected.log, logRequests: true, onEvent: seen.onEvent });
    base = server.url;
  });
  after(() => server.close());

  test("A request → one line: method, path without the query, status, bearer=no, the quoted user agent", async () => {
    const agent = marker();
    const answer = await request(`${base}/.well-known/oauth-protected-resource/mcp?code=secret-in-query`, {
      headers: { "user-agent": agent },
    });
    assert.equal(answer.status, 200, answer.text);
    const line = await traceOf(agent);
    assert.equal(line, `[request] GET /.well-known/oauth-protected-resource/mcp → 200 bearer=no "${agent}"`);
    assert.ok(!line.includes("secret-in-query"), "query values stay out of the trace");
    // One line per request: a later request's line is written, and this one's is still alone.
    const later = marker();
    assert.equal((await request(`${base}/`, { headers: { "user-agent": later } })).status, 200);
    await traceOf(later);
    assert.equal(collected.lines.filter((l) => l.includes(agent)).length, 1, "exactly one line for the request");
  });

  test("A protected call with a bearer token → its 401 traced with bearer=yes, the token itself left out", async () => {
    const agent = marker();
    const token = `not-a-valid-token-${agent}`;
    const message = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret", arguments: {} } };
    const answer = await postJson(`${base}/mcp`, message, { authorization: `Bearer ${token}`, "user-agent": agent });
    assertChallenge(answer, `${base}/.well-known/oauth-protected-resource/mcp`, true);
    const line = await traceOf(agent);
    assert.equal(line, `[request] POST /mcp → 401 bearer=yes "${agent}"`);
    assert.match(line, TRACE);
    assert.ok(collected.lines.every((l) => !l.includes(token)), "the token is never logged");
    const other = marker();
    const refused = await request(`${base}/nowhere?x=1`, { headers: { "user-agent": other } });
    assertOAuthError(refused, 404, "not_found");
    assert.equal(await traceOf(other), `[request] GET /nowhere → 404 bearer=no "${other}"`);
  });

  test('A user agent is cut to 60 characters; a missing one is traced as "-"', async () => {
    const agent = `${marker()}-${"a".repeat(100)}`;
    assert.equal((await request(`${base}/`, { headers: { "user-agent": agent } })).status, 200);
    assert.equal(await traceOf(agent.slice(0, 60)), `[request] GET / → 200 bearer=no "${agent.slice(0, 60)}"`);
    const path = `/${marker()}`;
    const status = await rawRequest(
      Number(new URL(base).port),
      Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${new URL(base).host}\r\nConnection: close\r\n\r\n`, "latin1"),
    );
    assert.match(status, /^HTTP\/1\.1 404 /);
    assert.equal(await collected.next((l) => l.includes(path)), `[request] GET ${path} → 404 bearer=no "-"`);
  });

  test("A user agent carrying control characters, quotes and a fake line cannot forge a trace line", async () => {
    // Raw bytes, as an attacker sends them: NEL (0x85) and CSI (0x9b) are C1 controls, a tab is allowed by
    // HTTP; the "fake line" after them claims a bearer-authenticated 200.
    const agent = marker();
    const forged = Buffer.concat([
      Buffer.from(`GET /forge HTTP/1.1\r\nHost: ${new URL(base).host}\r\nConnection: close\r\nUser-Agent: ${agent}`),
      Buffer.from([0x85]),
      Buffer.from(`[request] GET /admin → 200 bearer=yes "x`, "utf8"),
      Buffer.from([0x09, 0x9b]),
      Buffer.from("2K\r\n\r\n"),
    ]);
    const status = await rawRequest(Number(new URL(base).port), forged);
    assert.match(status, /^HTTP\/1\.1 404 /);
    const line = await traceOf(agent);
    assert.doesNotMatch(line, LINE_BREAK_OR_CONTROL, `a raw control character in ${JSON.stringify(line)}`);
    assert.ok(line.includes("\\u0085") && line.includes("\\u009b"), `C1 controls shown as \\u escapes: ${line}`);
    const fields = TRACE.exec(line);
    assert.ok(fields, `the line keeps the trace format: ${line}`);
    assert.deepEqual(
      fields.slice(1, 5),
      ["GET", "/forge", "404", "no"],
      "method, path, status and bearer are the real ones",
    );
    assert.ok(JSON.parse(fields[5]).startsWith(agent), "the user agent is one quoted, escaped string");
    assert.ok(!collected.lines.some((l) => l.startsWith("[request] GET /admin")), "no forged line");
  });

  test("A client that leaves mid-upload is traced as closed before an answer, never as a 200", async () => {
    const agent = marker();
    const socket = connect(Number(new URL(base).port), "127.0.0.1");
    await new Promise<void>((resolve) => socket.once("connect", resolve));
    socket.write(
      `POST /token HTTP/1.1\r\nHost: ${new URL(base).host}\r\nUser-Agent: ${agent}\r\n` +
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\ngrant_type=refr",
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.destroy();
    assert.equal(await traceOf(agent), `[request] POST /token → (closed before an answer) bearer=no "${agent}"`);
    const event = await eventOf(agent);
    assert.equal(event.type === "request" && event.status, undefined, "the request event says the client left");
    assert.deepEqual(
      timeless(event),
      { type: "request", at: 0, method: "POST", path: "/token", bearer: false, agent },
    );
  });

  test("Imported, startServer writes no trace line without logRequests", async () => {
    const collected = logCollector();
    const server = await startServer({ ...QUIET, log: collected.log });
    assert.equal((await request(`${server.url}/`)).status, 200);
    assertOAuthError(await request(`${server.url}/nowhere`), 404, "not_found");
    await server.close(); // every answer has closed: a trace line would have been written by now
    await linesWritten();
    assert.deepEqual(collected.lines.filter((line) => line.startsWith("[request]")), []);
  });

  test("Every request reaches onEvent as one request event, logRequests or not; never the token", async () => {
    const quiet = logCollector();
    const seen = eventCollector();
    const server = await startServer({ ...QUIET, log: quiet.log, onEvent: seen.onEvent });
    try {
      const agent = marker();
      const before = Date.now();
      const metadata = await request(`${server.url}/.well-known/oauth-protected-resource/mcp?code=secret-in-query`, {
        headers: { "user-agent": agent },
      });
      assert.equal(metadata.status, 200, metadata.text);
      const event = await seen.next((e) => e.type === "request" && e.agent === agent);
      assert.ok(event.at >= before && event.at <= Date.now(), `at is the time of the event: ${event.at}`);
      assert.deepEqual(timeless(event), {
        type: "request",
        at: 0,
        method: "GET",
        path: "/.well-known/oauth-protected-resource/mcp",
        status: 200,
        bearer: false,
        agent,
      });

      const tokenAgent = marker();
      const token = `not-a-valid-token-${tokenAgent}`;
      const message = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret", arguments: {} } };
      const refused = await postJson(`${server.url}/mcp`, message, {
        authorization: `Bearer ${token}`,
        "user-agent": tokenAgent,
      });
      assertChallenge(refused, `${server.url}/.well-known/oauth-protected-resource/mcp`, true);
      const call = await seen.next((e) => e.type === "request" && e.agent === tokenAgent);
      assert.deepEqual(
        timeless(call),
        {
          type: "request",
          at: 0,
          method: "POST",
          path: "/mcp",
          rpc: "tools/call get_secret",
          status: 401,
          bearer: true,
          agent: tokenAgent,
        },
      );
      const challenged = await seen.next((e) => e.type === "challenge");
      assert.deepEqual(
        timeless(challenged),
        { type: "challenge", at: 0, path: "/mcp", tool: "get_secret", tokenSent: true },
      );
      assert.ok(!JSON.stringify(seen.events).includes(token), "no event carries the token");
      assert.ok(!JSON.stringify(seen.events).includes("secret-in-query"), "nor a query value");
      await linesWritten();
      assert.deepEqual(quiet.lines.filter((line) => line.startsWith("[request]")), [], "and the trace stays quiet");
    } finally {
      await server.close();
    }
  });

  test("A sign-in is told as events naming the client by its label, none carrying a token or code", async () => {
    const seen = eventCollector();
    const server = await startServer({ ...QUIET, onEvent: seen.onEvent });
    try {
      const base = server.url;
      const pkce = pkcePair();
      const { form } = await consentPage(authorizeUrl(base, { pkce }));
      const approved = await decide(form, "approve");
      assert.equal(approved.status, 303, approved.text);
      const code = new URL(approved.headers.get("location") ?? "").searchParams.get("code") ?? "";
      const exchange = await postForm(`${base}/token`, {
        grant_type: "authorization_code",
        code,
        code_verifier: pkce.verifier,
        client_id: CLIENT_ID,
      });
      assert.equal(exchange.status, 200, exchange.text);
      const refresh = { grant_type: "refresh_token", refresh_token: exchange.json.refresh_token, client_id: CLIENT_ID };
      const rotated = await postForm(`${base}/token`, refresh);
      assert.equal(rotated.status, 200, rotated.text);
      assertOAuthError(await postForm(`${base}/token`, refresh), 400, "invalid_grant"); // reuse

      // The consent events know the document's client_name; at /token the client is known by its id.
      const document = new URL(CLIENT_ID);
      const id = `${document.host}${document.pathname}`;
      const session = String(decodeJwt(exchange.json.access_token).sid).slice(0, 8);
      const told = seen.events.filter((e) => e.type !== "request").map(timeless);
      const named = { name: "Test client", id };
      const expected = [
        { type: "consent_shown", at: 0, client: named, resource: `${base}/mcp` },
        { type: "consent_approved", at: 0, client: named },
      ];
      for (const event of expected) {
        assert.ok(told.some((e) => isDeepStrictEqual(e, event)), `${JSON.stringify(event)} in ${JSON.stringify(told)}`);
      }
      for (const type of ["code_exchanged", "tokens_refreshed", "refresh_reused", "session_revoked"]) {
        const event = told.find((e) => e.type === type);
        assert.equal(event?.session, session, `${type} names the session by its first 8 characters`);
        if (type !== "session_revoked") assert.equal((event?.client as { id?: string })?.id, id, `${type}'s client`);
      }
      const all = JSON.stringify(seen.events);
      for (
        const secret of [
          exchange.json.access_token,
          exchange.json.refresh_token,
          rotated.json.access_token,
          rotated.json.refresh_token,
          code,
          form.consent,
          CLIENT_ID,
        ]
      ) {
        assert.ok(!all.includes(secret), `no event carries ${secret.slice(0, 24)}…`);
      }
    } finally {
      await server.close();
    }
  });
});

describe("At the command line: the trace on unless LOG_REQUESTS=0; REACTIVE_AUTH_ONLY=1", () => {
  test("Without LOG_REQUESTS the trace is on → a [request] line on stdout for the request", async () => {
    const running = await startCommandLine({});
    try {
      const answer = await request(`${running.url}/.well-known/oauth-protected-resource?x=1`, {
        headers: { "user-agent": "command-line-probe" },
      });
      assert.equal(answer.status, 200, answer.text);
      const line = await running.waitFor(/\[request\] GET \/\.well-known\/oauth-protected-resource → 200 .*\n/);
      assert.equal(
        line.trim(),
        `[request] GET /.well-known/oauth-protected-resource → 200 bearer=no "command-line-probe"`,
      );
    } finally {
      await running.stop();
    }
  });

  test("LOG_REQUESTS=0 → no [request] line", async () => {
    const running = await startCommandLine({ LOG_REQUESTS: "0" });
    try {
      assert.equal((await request(`${running.url}/`)).status, 200);
      assertOAuthError(await request(`${running.url}/nowhere`), 404, "not_found");
    } finally {
      await running.stop(); // the server drains, then exits: everything it would log is written
    }
    assert.doesNotMatch(running.output(), /\[request\]/);
  });

  test("REACTIVE_AUTH_ONLY=1 → root authorization-server metadata 404, the issuer's own → 200", async () => {
    const running = await startCommandLine({ REACTIVE_AUTH_ONLY: "1", LOG_REQUESTS: "0" });
    try {
      assertOAuthError(await request(`${running.url}/.well-known/oauth-authorization-server`), 404, "not_found");
      const metadata = await getJson(`${running.url}/.well-known/oauth-authorization-server/oauth`);
      assert.equal(metadata.issuer, `${running.url}/oauth`);
    } finally {
      await running.stop();
    }
  });

  test("SHUTDOWN_GRACE_MS=1500 → a stop announces and keeps a 1.5 s grace", async () => {
    const running = await startCommandLine({ SHUTDOWN_GRACE_MS: "1500", LOG_REQUESTS: "0" });
    await running.stop();
    assert.match(running.output(), /^SIGTERM: finishing the requests in flight \(up to 1\.5 s\)/m);
  });

  test("SHUTDOWN_GRACE_MS=soon → startup refused with one line naming the variable", async () => {
    await assert.rejects(
      startCommandLine({ SHUTDOWN_GRACE_MS: "soon", LOG_REQUESTS: "0" }),
      /SHUTDOWN_GRACE_MS must be a whole number from 0 to 600000, got "soon"/,
    );
  });
});

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * `server.ts` started as at the command line (node + tsx) on a free port, with `env` on top of a
 * clean environment; resolves once it has printed its URL. `stop` sends SIGTERM and waits for the exit.
 */
async function startCommandLine(env: Record<string, string>) {
  const clean: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    const ours = ["PORT", "HOST", "PUBLIC_URL", "LOG_REQUESTS", "REACTIVE_AUTH_ONLY", "SHUTDOWN_GRACE_MS"].includes(
      name,
    );
    if (value !== undefined && !ours) clean[name] = value;
  }
  const child = spawn("node", ["--import", "tsx", "server.ts"], {
    cwd: ROOT,
    env: { ...clean, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const listeners = new Set<() => void>();
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve())); // after the last output
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      output += chunk;
      for (const listener of listeners) listener();
    });
  }
  /** The first match of `pattern` in the output so far or to come; rejects if the process exits first. */
  const waitFor = (pattern: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const found = pattern.exec(output)?.[0];
        if (found === undefined) return;
        listeners.delete(check);
        resolve(found);
      };
      listeners.add(check);
      check();
      void exited.then(() => reject(new Error(`server.ts exited: ${output}`)));
    });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  try {
    const printed = await waitFor(/MCP endpoint[^\n]*: (http:\/\/\S+)\/mcp/);
    const url = /(http:\/\/\S+)\/mcp/.exec(printed)?.[1] ?? "";
    return { url: url.replace("//localhost:", "//127.0.0.1:"), waitFor, stop, output: () => output };
  } catch (error) {
    await stop();
    throw error;
  }
}
