/**
 * Shared pieces for the interop tests with real MCP clients:
 * - `approveAsUser`: the in-process "user" who opens the authorization URL, reads the consent page,
 *   submits its form with Approve and hands back the callback URL the server redirected to;
 * - `FetchLog`: a fetch wrapper that records what a client sent (OAuth grants, registrations, MCP methods);
 * - `TestOAuthProvider`: an OAuth client provider for the official SDKs, storing everything in memory and
 *   counting how often it had to send the user to authorize;
 * - `CLIENT_METADATA_URL`: a Client ID Metadata Document served on loopback, which the server fetches;
 * - `describeLazyAuthFlow`: the whole lazy-auth story (public calls, 401, OAuth, retry, silent refresh,
 *   revocation, re-authorization) as ordered tests, run against any client behind a small adapter.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { type RunningServer, type ServerOptions, startServer } from "../server.ts";
import { clientDocuments, consentForm, decide } from "./helpers.ts";

/** Where the clients say they listen for the callback. Nothing listens: the "user" reads the 303 instead. */
export const REDIRECT_URL = "http://127.0.0.1:8976/callback";
const CLIENT_METADATA_PATH = "/interop-client.json";
/**
 * A Client ID Metadata Document URL on the loopback document server; the server fetches it and checks
 * REDIRECT_URL is listed. It is http: the server accepts http documents on loopback only, for local tests.
 */
export const CLIENT_METADATA_URL = clientDocuments.client(CLIENT_METADATA_PATH, [REDIRECT_URL], {
  name: "Interop test client",
});

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A server for one test suite: random port, loopback, silent, short-lived access tokens; `options` on top. */
export function startTestServer(accessTokenTtlSeconds = 1, options: ServerOptions = {}): Promise<RunningServer> {
  return startServer({ port: 0, host: "127.0.0.1", log: () => {}, accessTokenTtlSeconds, ...options });
}

// ─── The user ────────────────────────────────────────────────────────────────────────────────────

/**
 * Plays the user: opens the authorization URL, checks the consent page, clicks Approve (the page's form
 * POST, carrying its consent token), and returns the URL the server redirected back to (the client's
 * callback with code, state and iss).
 */
export async function approveAsUser(authorizationUrl: URL | string): Promise<URL> {
  const pageUrl = new URL(authorizationUrl);
  const page = await fetch(pageUrl, { redirect: "manual" });
  const html = await page.text();
  assert.equal(page.status, 200, `the authorization URL shows a consent page: ${html}`);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  const form = consentForm(html, pageUrl);
  assert.equal(form.action.href, `${pageUrl.origin}${pageUrl.pathname}`, "the form posts back to /authorize");
  const answer = await decide(form, "approve");
  assert.equal(answer.status, 303, `approving redirects back to the client: ${answer.text}`);
  const location = answer.headers.get("location");
  assert.ok(location, "the redirect has a Location");
  return new URL(location, form.action);
}

// ─── What the client sent ────────────────────────────────────────────────────────────────────────

export interface Exchange {
  method: string;
  url: URL;
  headers: Headers;
  body?: string;
  status: number;
  /** The parsed JSON answer, for /register only (what the server issued). */
  json?: unknown;
}

function bodyText(body: unknown): string | undefined {
  if (typeof body === "string") return body;
  if (body instanceof URLSearchParams) return body.toString();
  return undefined;
}

/** A fetch that records every request a client makes, for assertions about the wire. */
export class FetchLog {
  readonly exchanges: Exchange[] = [];

  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input);
    const method = init?.method ?? (input instanceof Request ? input.method : "GET");
    const headers = new Headers(input instanceof Request ? input.headers : undefined);
    new Headers(init?.headers).forEach((value, name) => headers.set(name, value));
    const response = await fetch(input, init);
    const exchange: Exchange = { method, url, headers, body: bodyText(init?.body), status: response.status };
    if (url.pathname === "/register") exchange.json = await response.clone().json().catch(() => undefined);
    this.exchanges.push(exchange);
    return response;
  };

  /** Token requests, as form parameters, in order. */
  tokenRequests(): { params: URLSearchParams; status: number }[] {
    return this.exchanges
      .filter((e) => e.method === "POST" && e.url.pathname === "/token")
      .map((e) => ({ params: new URLSearchParams(e.body ?? ""), status: e.status }));
  }

  grants(type: "authorization_code" | "refresh_token") {
    return this.tokenRequests().filter((r) => r.params.get("grant_type") === type);
  }

  registrations(): Exchange[] {
    return this.exchanges.filter((e) => e.method === "POST" && e.url.pathname === "/register");
  }

  /** JSON-RPC methods POSTed to /mcp, in order. */
  mcpMethods(): string[] {
    return this.exchanges
      .filter((e) => e.method === "POST" && e.url.pathname === "/mcp" && e.body !== undefined)
      .map((e) => String((JSON.parse(e.body!) as { method?: unknown }).method));
  }

  paths(): string[] {
    return this.exchanges.map((e) => `${e.method} ${e.url.pathname}`);
  }
}

// ─── An OAuth client provider for the official SDKs ──────────────────────────────────────────────

/**
 * Everything in memory. Typed by each SDK generation's own token, client-information and
 * discovery-state types, so the same class satisfies both `OAuthClientProvider` interfaces.
 */
export class TestOAuthProvider<
  Tokens extends { access_token: string },
  ClientInfo extends { client_id: string },
  Discovery,
> {
  /** Every authorization URL the client sent the user to. */
  readonly authorizationUrls: URL[] = [];
  readonly redirectUrl = REDIRECT_URL;
  lastState?: string;
  #tokens?: Tokens;
  #client?: ClientInfo;
  #configuredClientId?: string;
  #verifier?: string;
  #discovery?: Discovery;

  /**
   * `clientId`: a client_id the host is configured with, used without registering. The SDKs take a
   * metadata-document URL as `clientMetadataUrl` only when it is https; the loopback document server
   * speaks http, so the document URL comes in this way instead — the server fetches and checks it all the same.
   */
  constructor(options: { clientId?: string } = {}) {
    this.#configuredClientId = options.clientId;
  }

  get clientMetadata() {
    return {
      client_name: "Interop test client",
      redirect_uris: [REDIRECT_URL],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }

  state(): string {
    this.lastState = randomBytes(16).toString("base64url");
    return this.lastState;
  }

  clientInformation(): ClientInfo | undefined {
    if (this.#client || !this.#configuredClientId) return this.#client;
    return { client_id: this.#configuredClientId } as ClientInfo;
  }
  saveClientInformation(info: ClientInfo): void {
    this.#client = info;
  }
  tokens(): Tokens | undefined {
    return this.#tokens;
  }
  saveTokens(tokens: Tokens): void {
    this.#tokens = tokens;
  }
  redirectToAuthorization(url: URL): void {
    this.authorizationUrls.push(url);
  }
  saveCodeVerifier(verifier: string): void {
    this.#verifier = verifier;
  }
  codeVerifier(): string {
    assert.ok(this.#verifier, "a code verifier was saved before the code exchange");
    return this.#verifier;
  }
  saveDiscoveryState(state: Discovery): void {
    this.#discovery = state;
  }
  discoveryState(): Discovery | undefined {
    return this.#discovery;
  }
  invalidateCredentials(scope: "all" | "client" | "tokens" | "verifier" | "discovery"): void {
    if (scope === "all" || scope === "tokens") this.#tokens = undefined;
    if (scope === "all" || scope === "client") this.#client = undefined;
    if (scope === "all" || scope === "verifier") this.#verifier = undefined;
    if (scope === "all" || scope === "discovery") this.#discovery = undefined;
  }

  /** The client_id the SDK settled on (the metadata-document URL, or the one the server registered). */
  get clientId(): string | undefined {
    return this.clientInformation()?.client_id;
  }
}

/**
 * Sleeps until an access token has surely expired. The server's tokens are RFC 9068 JWTs, so the exp
 * claim says when; this avoids guessing how the server rounds a 1-second lifetime.
 */
export async function waitForExpiry(accessToken: string | undefined) {
  assert.ok(accessToken, "the client holds an access token");
  const { exp } = JSON.parse(Buffer.from(accessToken.split(".")[1] ?? "", "base64url").toString("utf8")) as {
    exp?: unknown;
  };
  assert.equal(typeof exp, "number", "the access token has an exp claim");
  const wait = (exp as number) * 1000 - Date.now() + 50;
  assert.ok(wait < 2500, `the access token lives about accessTokenTtlSeconds (here ${wait} ms more)`);
  await sleep(Math.max(0, wait));
}

/** The text of a tool result; a tool error fails the test. */
export function toolText(result: unknown): string {
  const { content, isError } = result as { content?: { type: string; text?: string }[]; isError?: boolean };
  assert.ok(Array.isArray(content), "a tool result has content");
  const text = content.filter((block) => block.type === "text").map((block) => block.text).join("\n");
  assert.notEqual(isError, true, `the tool reported an error: ${text}`);
  return text;
}

// ─── The lazy-auth flow, against any client ──────────────────────────────────────────────────────

/** What the flow needs from a client under test. */
export interface ClientUnderTest {
  connect(): Promise<void>;
  toolNames(): Promise<string[]>;
  /** Calls a no-argument tool and returns its text. */
  call(name: string): Promise<string>;
  /** Completes authorization from the callback URL the user was redirected to. */
  finishAuth(callback: URL): Promise<void>;
  isUnauthorized(error: unknown): boolean;
  close(): Promise<void>;
  /** Whether the client checks the RFC 9207 `iss` of the callback (then tampered and missing iss are tried). */
  validatesIss?: {
    withTamperedIss(callback: URL): Promise<void>;
    withoutIss(callback: URL): Promise<void>;
    isIssuerMismatch(error: unknown): boolean;
  };
}

export interface ClientContext<
  Tokens extends { access_token: string },
  ClientInfo extends { client_id: string },
  Discovery,
> {
  mcpUrl: URL;
  provider: TestOAuthProvider<Tokens, ClientInfo, Discovery>;
  fetchLog: FetchLog;
}

export interface FlowOptions<
  Tokens extends { access_token: string },
  ClientInfo extends { client_id: string },
  Discovery,
> {
  /** Use a Client ID Metadata Document URL as client_id; otherwise register dynamically. */
  cimd: boolean;
  /** Builds the client for this server. */
  makeClient(context: ClientContext<Tokens, ClientInfo, Discovery>): ClientUnderTest;
  /** Extra checks right after connecting (protocol era, first method sent). */
  afterConnect?(client: ClientUnderTest, fetchLog: FetchLog): void | Promise<void>;
  /** More options for the server under test (reactiveAuthOnly, …). */
  serverOptions?: ServerOptions;
  /**
   * The discovery requests the client must make after the 401, as "METHOD /path": by default a
   * protected-resource document under /.well-known/oauth-protected-resource, and the root RFC 8414 metadata.
   */
  discovery?: { resourceMetadata: string; authorizationServerMetadata: string };
  /** The issuer's path under the server's origin ("" by default; "/oauth" when reactiveAuthOnly). */
  issuerPath?: string;
}

const SECRET_TEXT = /The secret is: .+/;

/**
 * Declares the lazy-auth flow as ordered tests in a suite; each step builds on the previous one, so the
 * suite runs its steps one at a time even inside a group whose suites run side by side.
 */
export function describeLazyAuthFlow<
  Tokens extends { access_token: string },
  ClientInfo extends { client_id: string },
  Discovery,
>(
  name: string,
  options: FlowOptions<Tokens, ClientInfo, Discovery>,
) {
  describe(name, { concurrency: false }, () => {
    let srv: RunningServer;
    let client: ClientUnderTest;
    const fetchLog = new FetchLog();
    const provider = new TestOAuthProvider<Tokens, ClientInfo, Discovery>(
      options.cimd ? { clientId: CLIENT_METADATA_URL } : {},
    );

    before(async () => {
      srv = await startTestServer(1, options.serverOptions);
      client = options.makeClient({ mcpUrl: new URL(`${srv.url}/mcp`), provider, fetchLog });
    });
    after(async () => {
      await client?.close();
      await srv?.close();
    });

    /** Gets a protected tool refused, checks the client sent the user to authorize, approves, finishes. */
    async function authorizeThroughUnauthorized(tool: string, expectedRedirects: number) {
      await assert.rejects(
        client.call(tool),
        (error) => client.isUnauthorized(error),
        `${tool} without a valid token is refused`,
      );
      assert.equal(provider.authorizationUrls.length, expectedRedirects, "the client sent the user to authorize");
      const authorizationUrl = provider.authorizationUrls.at(-1)!;
      assert.equal(authorizationUrl.origin + authorizationUrl.pathname, `${srv.url}/authorize`);
      assert.equal(authorizationUrl.searchParams.get("response_type"), "code");
      assert.equal(authorizationUrl.searchParams.get("code_challenge_method"), "S256");
      assert.match(authorizationUrl.searchParams.get("code_challenge") ?? "", /^[A-Za-z0-9_-]{43}$/);
      assert.equal(
        authorizationUrl.searchParams.get("resource"),
        `${srv.url}/mcp`,
        "RFC 8707 resource is the MCP endpoint",
      );
      assert.equal(authorizationUrl.searchParams.get("redirect_uri"), REDIRECT_URL);

      const callback = await approveAsUser(authorizationUrl);
      assert.equal(callback.origin + callback.pathname, REDIRECT_URL);
      assert.ok(callback.searchParams.get("code"), "the callback carries a code");
      assert.equal(
        callback.searchParams.get("iss"),
        `${srv.url}${options.issuerPath ?? ""}`,
        "RFC 9207: the callback names the issuer",
      );
      assert.equal(callback.searchParams.get("state"), provider.lastState, "the state comes back unchanged");
      const codeGrantsBefore = fetchLog.grants("authorization_code").length;
      if (client.validatesIss) {
        // Neither attempt may reach the token endpoint: the code stays unspent for the real finish below.
        const { withTamperedIss, withoutIss, isIssuerMismatch } = client.validatesIss;
        await assert.rejects(
          withTamperedIss(callback),
          isIssuerMismatch,
          "a callback with another issuer's iss is rejected",
        );
        await assert.rejects(
          withoutIss(callback),
          isIssuerMismatch,
          "a callback without iss is rejected (the server advertises iss)",
        );
        assert.equal(fetchLog.grants("authorization_code").length, codeGrantsBefore, "no code exchange was attempted");
      }
      await client.finishAuth(callback);
      const grants = fetchLog.grants("authorization_code");
      assert.equal(grants.length, codeGrantsBefore + 1, "exactly one code exchange");
      const grant = grants.at(-1)!;
      assert.equal(grant.status, 200);
      assert.equal(
        grant.params.get("client_id"),
        authorizationUrl.searchParams.get("client_id"),
        "the token request uses the authorizing client_id",
      );
      assert.match(grant.params.get("code_verifier") ?? "", /^[A-Za-z0-9._~-]{43,128}$/, "PKCE verifier sent");
    }

    it("connects and lists the tools without a token", async () => {
      await client.connect();
      await options.afterConnect?.(client, fetchLog);
      const tools = await client.toolNames();
      for (const tool of ["whoami", "get_secret", "revoke_auth_token"]) {
        assert.ok(tools.includes(tool), `lists ${tool}`);
      }
      assert.equal(provider.authorizationUrls.length, 0, "no authorization was needed");
      assert.ok(fetchLog.exchanges.every((e) => !e.headers.has("authorization")), "no token was sent");
    });

    it("calls the public whoami without a token", async () => {
      assert.match(await client.call("whoami"), /anonymous/);
      assert.equal(provider.authorizationUrls.length, 0);
    });

    it("get_secret meets 401; the client discovers, the user approves, and the retry gets the secret", async () => {
      await authorizeThroughUnauthorized("get_secret", 1);
      const paths = fetchLog.paths();
      if (options.discovery) {
        assert.ok(
          paths.includes(options.discovery.resourceMetadata),
          `${options.discovery.resourceMetadata}: ${paths}`,
        );
        assert.ok(
          paths.includes(options.discovery.authorizationServerMetadata),
          `${options.discovery.authorizationServerMetadata}: ${paths}`,
        );
      } else {
        assert.ok(
          paths.some((p) => p.startsWith("GET /.well-known/oauth-protected-resource")),
          "fetched the protected-resource metadata",
        );
        assert.ok(
          paths.includes("GET /.well-known/oauth-authorization-server"),
          "fetched the authorization-server metadata",
        );
      }

      const clientId = provider.authorizationUrls[0]!.searchParams.get("client_id");
      if (options.cimd) {
        assert.equal(clientId, CLIENT_METADATA_URL, "the metadata-document URL is the client_id");
        assert.equal(fetchLog.registrations().length, 0, "no dynamic registration");
        assert.ok(clientDocuments.fetches(CLIENT_METADATA_PATH) >= 1, "the server fetched the metadata document");
      } else {
        const registrations = fetchLog.registrations();
        assert.equal(registrations.length, 1, "registered once");
        assert.equal(registrations[0]!.status, 201);
        const issued = (registrations[0]!.json as { client_id?: string }).client_id;
        assert.ok(issued, "the server issued a client_id");
        assert.equal(clientId, issued, "the client uses the client_id the server issued");
      }
      assert.equal(provider.clientId, clientId);

      assert.match(await client.call("get_secret"), SECRET_TEXT);
      assert.match(await client.call("whoami"), /demo-user/, "whoami now sees the signed-in user");
    });

    it("refreshes an expired access token silently", async () => {
      const refreshesBefore = fetchLog.grants("refresh_token").length;
      await waitForExpiry(provider.tokens()?.access_token); // the access token lives about 1 s
      assert.match(await client.call("get_secret"), SECRET_TEXT);
      assert.equal(provider.authorizationUrls.length, 1, "no second authorization");
      const refreshes = fetchLog.grants("refresh_token").slice(refreshesBefore);
      assert.ok(refreshes.length >= 1, "a refresh_token grant was made");
      assert.ok(refreshes.every((r) => r.status === 200), "and accepted");
      assert.equal(refreshes[0]!.params.get("client_id"), provider.clientId, "the refresh names the same client");
    });

    it("revoke_auth_token ends the session; the next protected call re-authorizes, and that succeeds", async () => {
      assert.match(await client.call("revoke_auth_token"), /revoked/i);
      const refreshesBefore = fetchLog.grants("refresh_token").length;
      await authorizeThroughUnauthorized("get_secret", 2);
      const refused = fetchLog.grants("refresh_token").slice(refreshesBefore);
      assert.ok(refused.length >= 1, "the client tried its refresh token first");
      assert.ok(refused.every((r) => r.status === 400), "the revoked session's refresh token does not work");
      assert.match(await client.call("get_secret"), SECRET_TEXT);
      assert.equal(provider.authorizationUrls.length, 2);
    });
  });
}
