/**
 * Lazy-auth MCP server: public tools answer without a token; protected tools answer `401` +
 * `WWW-Authenticate`, which sends the MCP host through discovery (RFC 9728, RFC 8414) and an OAuth 2.1
 * authorization-code + PKCE flow against the minimal mock authorization server below, in the same process.
 *
 * Read top to bottom, in the order a request flows:
 *   config → token kinds & the single-use memory → /authorize → /token → /register → discovery metadata
 *   → /mcp (tools, the MCP App, URL elicitation) → routing, CORS, body limits → start.
 *
 * Demo only: there is one fixed user, consent is one click on a form, and every token is an HS256 JWT
 * under one shared secret. A real authorization server signs the user in and signs with an asymmetric key.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import process from "node:process";
import { clearTimeout, setTimeout } from "node:timers"; // node:timers so `.unref()` exists under Deno too
import { fileURLToPath } from "node:url";
import { type JWTPayload, jwtVerify, SignJWT } from "jose";

// ─── Config ──────────────────────────────

export interface ServerOptions {
  port?: number; // PORT, default 3097; 0 picks a free port (tests)
  host?: string; // HOST: the interface to listen on; default loopback only
  publicUrl?: string; // PUBLIC_URL: the base URL clients see, mount path included (required off-loopback)
  basePath?: string; // where the handler is mounted, e.g. "/lazy-auth" (Express's req.baseUrl is used when unset)
  jwtSecret?: string; // JWT_SECRET, at least 32 bytes; default a random secret per process
  accessTokenTtlSeconds?: number; // ACCESS_TOKEN_TTL_SECONDS, default 30
  refreshTokenTtlSeconds?: number; // REFRESH_TOKEN_TTL_SECONDS, default 300
  reactiveAuthOnly?: boolean; // REACTIVE_AUTH_ONLY=1: auth is discoverable only through a 401
  store?: SingleUseStore; // where spent IDs, sessions and revocations live; default in memory
  storeMaxEntries?: number; // STORE_MAX_ENTRIES: the in-memory store's cap, default 100,000
  log?: (line: string) => void; // OAuth events (and the request trace); default stdout
  logRequests?: boolean; // one trace line per request; on at the command line unless LOG_REQUESTS=0
  elicitationWaitSeconds?: number; // how long elicit_url waits for an answer, then for the visit; default 60
}

class ConfigError extends Error {}

/** Options win over the environment; a bad value stops startup with one clear line. */
function readConfig(options: ServerOptions) {
  const env = process.env;
  const ttl = (name: string, fallback: number) => numberFrom(name, env[name], fallback, 1, 86400);
  const secret = options.jwtSecret ?? env.JWT_SECRET;
  if (secret !== undefined && Buffer.byteLength(secret) < 32) {
    throw new ConfigError("JWT_SECRET must be at least 32 bytes (try: openssl rand -hex 32)");
  }
  const publicUrl = options.publicUrl ?? env.PUBLIC_URL;
  return {
    port: options.port ?? numberFrom("PORT", env.PORT, 3097, 0, 65535),
    host: options.host ?? env.HOST ?? "127.0.0.1", // loopback: nobody else on the network can reach the demo
    publicUrl: publicUrl === undefined ? undefined : parsePublicUrl(publicUrl),
    basePath: options.basePath?.replace(/\/$/, ""),
    secret,
    accessTtl: options.accessTokenTtlSeconds ?? ttl("ACCESS_TOKEN_TTL_SECONDS", 30),
    refreshTtl: options.refreshTokenTtlSeconds ?? ttl("REFRESH_TOKEN_TTL_SECONDS", 300),
    reactive: options.reactiveAuthOnly ?? env.REACTIVE_AUTH_ONLY === "1",
    storeMaxEntries: options.storeMaxEntries ?? numberFrom("STORE_MAX_ENTRIES", env.STORE_MAX_ENTRIES, 100_000, 1, 1e8),
    logRequests: options.logRequests ?? false, // quiet when imported (tests, benchmarks); see the entry point
    elicitationWaitMs: (options.elicitationWaitSeconds ?? 60) * 1000,
  };
}

function numberFrom(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (Number.isInteger(value) && value >= min && value <= max) return value;
  throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
}

/** PUBLIC_URL is parsed, not pattern-matched: a URL that would fail later fails here, at startup. */
function parsePublicUrl(raw: string): { base: string; host: string; path: string } {
  const url = URL.canParse(raw) ? new URL(raw) : undefined;
  const clean = url && /^https?:$/.test(url.protocol) && url.port !== "0" && !url.username && !url.password &&
    !url.search && !url.hash;
  if (!url || !clean || !/^https?:\/\//i.test(raw)) {
    throw new ConfigError(
      `PUBLIC_URL must be an http(s) URL with a valid host and port, no query or fragment: "${raw}"`,
    );
  }
  const path = url.pathname.replace(/\/$/, ""); // the mount path, when the server sits under one
  return { base: `${url.origin}${path}`, host: url.host, path };
}

// ─── Token kinds ─────────────────────────
// Every token is a JWT under one key, so each kind gets its own `typ` header and is verified against
// exactly that `typ`: a refresh token or a code can never pass as an access token (RFC 8725 §3.11).

const TOKEN_TYPE = {
  access: "at+jwt", // RFC 9068 access token
  refresh: "refresh+jwt",
  code: "code+jwt", // the authorization request itself, signed: no server storage between steps
  consent: "consent+jwt", // the checked authorization request, waiting on the consent page for a click
  client: "client+jwt", // a dynamically registered client, signed (stateless DCR, see /register)
  elicitation: "elicitation+jwt", // a URL elicitation: the callback id, 2025 elicitationId and 2026 requestState
} as const;
type TokenKind = keyof typeof TOKEN_TYPE;

const CODE_TTL_SECONDS = 300;
const CONSENT_TTL_SECONDS = 600; // time for a person to read the page and click
const ELICITATION_TTL_SECONDS = 600;
const SCOPE = "mcp";
const USER = "demo-user"; // demo only: a real server signs a real user in before consent

const nowSeconds = () => Math.floor(Date.now() / 1000);
// Expiry rounds up: `exp` is whole seconds, and a token must live at least the expires_in it promises.
const secondsFromNow = (seconds: number) => Math.ceil(Date.now() / 1000) + seconds;
const randomId = () => randomBytes(16).toString("base64url");

// ─── The single-use memory ───────────────

/** The state every instance must share. Keys are token IDs this server signed, so none outlives its token. */
export interface SingleUseStore {
  /** True when it remembers across restarts (Redis). A store that forgets makes older tokens invalid. */
  readonly durable: boolean;
  /** Records `id` as spent until `expiresAt` (epoch seconds); resolves true for the first caller only. */
  spendOnce(id: string, expiresAt: number): Promise<boolean>;
  /** Records `refreshJti` as session `sid`'s one current refresh token, until the session ends. */
  startSession(sid: string, refreshJti: string, expiresAt: number): Promise<void>;
  /** Atomically moves session `sid` from `usedJti` to `nextJti`; false, changing nothing, if `usedJti` is stale. */
  rotateRefresh(sid: string, usedJti: string, nextJti: string): Promise<boolean>;
  /** Marks session `sid` revoked until `expiresAt`. Never refused: refusing would leave a leaked session alive. */
  revokeSession(sid: string, expiresAt: number): Promise<void>;
  isRevoked(sid: string): Promise<boolean>;
  /** Raises flag `key` until `expiresAt` (a visited elicitation callback). */
  raiseFlag(key: string, expiresAt: number): Promise<void>;
  /** Lowers flag `key`; resolves true only for the caller that found it raised. */
  takeFlag(key: string): Promise<boolean>;
}

/** Thrown when the shared store cannot answer (or is full): callers fail closed with a 503, never a success. */
class StoreUnavailable extends Error {}

type Entry<T> = { value: T; timer: ReturnType<typeof setTimeout> };

/**
 * The default store: Maps whose entries each carry an unref'd timer that deletes them at their token's own
 * expiry. A refresh rotation updates its session's entry in place, so entries are: codes redeemed in the
 * last five minutes, live sessions, revocations and open elicitations. `maxEntries` caps them: past it the
 * store refuses new entries (503) instead of growing without bound.
 */
export class MemoryStore implements SingleUseStore {
  readonly durable = false;
  readonly #maxEntries: number;
  readonly #spent = new Map<string, Entry<true>>();
  readonly #sessions = new Map<string, Entry<string>>();
  readonly #revoked = new Map<string, Entry<true>>();
  readonly #flags = new Map<string, Entry<true>>();

  constructor(options: { maxEntries?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 100_000;
  }
  get size(): number {
    return this.#spent.size + this.#sessions.size + this.#revoked.size + this.#flags.size;
  }

  spendOnce(id: string, expiresAt: number): Promise<boolean> {
    if (this.#spent.has(id)) return Promise.resolve(false);
    return this.#add(this.#spent, id, true, expiresAt).then(() => true);
  }
  startSession(sid: string, refreshJti: string, expiresAt: number): Promise<void> {
    return this.#sessions.has(sid) ? Promise.resolve() : this.#add(this.#sessions, sid, refreshJti, expiresAt);
  }
  rotateRefresh(sid: string, usedJti: string, nextJti: string): Promise<boolean> {
    const session = this.#sessions.get(sid);
    if (session?.value !== usedJti) return Promise.resolve(false);
    session.value = nextJti; // in place: a rotation adds no entry
    return Promise.resolve(true);
  }
  revokeSession(sid: string, expiresAt: number): Promise<void> {
    remember(this.#revoked, sid, true, expiresAt); // past the cap too: see the interface
    return Promise.resolve();
  }
  isRevoked(sid: string): Promise<boolean> {
    return Promise.resolve(this.#revoked.has(sid));
  }
  raiseFlag(key: string, expiresAt: number): Promise<void> {
    return this.#add(this.#flags, key, true, expiresAt);
  }
  takeFlag(key: string): Promise<boolean> {
    const flag = this.#flags.get(key);
    if (flag) clearTimeout(flag.timer);
    return Promise.resolve(this.#flags.delete(key));
  }

  #add<T>(map: Map<string, Entry<T>>, key: string, value: T, expiresAt: number): Promise<void> {
    if (this.size >= this.#maxEntries) return Promise.reject(new StoreUnavailable("the single-use memory is full"));
    remember(map, key, value, expiresAt);
    return Promise.resolve();
  }
}

function remember<T>(map: Map<string, Entry<T>>, key: string, value: T, expiresAt: number) {
  clearTimeout(map.get(key)?.timer);
  // Timers, not a sweep: each entry leaves exactly when its token could no longer be presented anyway.
  const timer = setTimeout(() => map.delete(key), Math.max(0, expiresAt * 1000 - Date.now()));
  timer.unref(); // a pending expiry must not keep the process alive
  map.set(key, { value, timer });
}

/** Every store call goes through here: whatever goes wrong becomes StoreUnavailable, so callers fail closed. */
function failClosed(store: SingleUseStore): SingleUseStore {
  const guard = <T>(call: () => Promise<T>) =>
    Promise.resolve().then(call).catch((error: unknown) => {
      throw error instanceof StoreUnavailable ? error : new StoreUnavailable(String(error));
    });
  return {
    durable: store.durable,
    spendOnce: (id, expiresAt) => guard(() => store.spendOnce(id, expiresAt)),
    startSession: (sid, jti, expiresAt) => guard(() => store.startSession(sid, jti, expiresAt)),
    rotateRefresh: (sid, used, next) => guard(() => store.rotateRefresh(sid, used, next)),
    revokeSession: (sid, expiresAt) => guard(() => store.revokeSession(sid, expiresAt)),
    isRevoked: (sid) => guard(() => store.isRevoked(sid)),
    raiseFlag: (key, expiresAt) => guard(() => store.raiseFlag(key, expiresAt)),
    takeFlag: (key) => guard(() => store.takeFlag(key)),
  };
}

// ─── The handler ─────────────────────────

/** A node:http request listener; mount it in Express (`app.use("/lazy-auth", handler)`) or any server. */
export type LazyAuthHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Builds everything the server answers. Options override the environment. */
export async function createHandler(options: ServerOptions = {}): Promise<LazyAuthHandler> {
  const config = readConfig(options);
  const write = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  // Every log line is escaped here, once: a client-chosen value with a newline cannot forge a line.
  const log = (line: string) => write(escapeControl(line));
  const store = failClosed(options.store ?? new MemoryStore({ maxEntries: config.storeMaxEntries }));
  if (config.secret === undefined) log("JWT_SECRET is not set: signing with a random secret for this process only");
  // Import the key once: handing jose raw bytes would import them again on every sign and verify.
  const keyBytes = config.secret === undefined ? randomBytes(32) : new TextEncoder().encode(config.secret);
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
  // A memory that forgets on restart cannot vouch for tokens issued before it: codes, refresh and access
  // tokens carry this process's id and count only here. A durable store (Redis) vouches across restarts.
  const memoryId = store.durable ? undefined : randomId();
  const remembered = new Set<TokenKind>(["code", "refresh", "access"]);
  const clientMetadata = clientMetadataDocuments();

  /**
   * The base URL for links, `iss` and audiences: PUBLIC_URL, else a loopback Host; undefined means refuse.
   * DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 reaches this server with
   * `Host: evil.example`, so only names that are ours are served (MCP Streamable HTTP: servers must validate).
   */
  function baseUrl(req: IncomingMessage): string | undefined {
    const host = (req.headers.host ?? "").toLowerCase();
    const publicUrl = config.publicUrl;
    if (publicUrl) {
      return host === publicUrl.host.toLowerCase() || isLoopbackHostHeader(host) ? publicUrl.base : undefined;
    }
    return isLoopbackHostHeader(host) ? `http://${host}${mountPath(req)}` : undefined;
  }
  const mountPath = (req: IncomingMessage & { baseUrl?: string }) =>
    config.basePath ?? (req.baseUrl || config.publicUrl?.path || "");

  /** The authorization server's identifier (RFC 8414 §2); in reactive mode on a sub-path of its own. */
  const issuerOf = (base: string) => (config.reactive ? `${base}/oauth` : base);

  function sign(kind: TokenKind, issuer: string, claims: JWTPayload, ttlSeconds?: number): Promise<string> {
    const memory = remembered.has(kind) && memoryId ? { mem: memoryId } : {};
    const jwt = new SignJWT({ ...claims, ...memory }).setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE[kind] })
      .setIssuer(issuer).setIssuedAt();
    return (ttlSeconds === undefined ? jwt : jwt.setExpirationTime(secondsFromNow(ttlSeconds))).sign(key);
  }

  /** Signature, `typ`, issuer, expiry and (when given) audience — or undefined; never a throw for the caller. */
  async function verify(kind: TokenKind, token: string, issuer: string | undefined, audience?: string) {
    const checks = { algorithms: ["HS256"], typ: TOKEN_TYPE[kind], issuer, audience };
    const payload = await jwtVerify(token, key, checks).then((verified) => verified.payload, () => undefined);
    if (payload && remembered.has(kind) && memoryId && payload.mem !== memoryId) return undefined; // see memoryId
    return payload;
  }

  /** Ends a session: every token carrying `sid` stops working (checked on each use) until `until`. */
  async function revokeSession(sid: string, until: number, reason: string) {
    await store.revokeSession(sid, until);
    log(`[oauth] session ${sid} revoked: ${reason}`);
  }

  function oauthError(res: ServerResponse, status: number, error: string, description: string) {
    log(`[oauth] rejected ${error}: ${description}`);
    sendJson(res, status, { error, error_description: description });
  }

  /**
   * RFC 8707 §2: `resource` names what a token is for. This server has one MCP resource per token lifetime:
   * `<base>/mcp` and `<base>/ttl/<seconds>/mcp`. Returns the access-token lifetime for it, or undefined.
   */
  function resourceTtl(resource: string, base: string): number | undefined {
    if (!resource.startsWith(`${base}/`)) return undefined;
    return mcpPathTtl(resource.slice(base.length));
  }
  function mcpPathTtl(path: string): number | undefined {
    if (path === "/mcp") return config.accessTtl;
    const seconds = Number(/^\/ttl\/([1-9]\d{0,4})\/mcp$/.exec(path)?.[1]);
    return seconds <= 86400 ? seconds : undefined; // NaN (no match) is not <= anything
  }
  /** A session lasts the refresh lifetime; for a /ttl/ resource, at least as long as one access token. */
  const sessionSeconds = (resource: string, base: string) =>
    resource === `${base}/mcp` ? config.refreshTtl : Math.max(config.refreshTtl, resourceTtl(resource, base) ?? 0);

  // ─── /authorize ──────────────────────
  // A page for a person, not an API: it carries no CORS headers, so a page on another origin can neither
  // read the consent page nor the redirect that follows. Until client and redirect_uri are trusted, every
  // error is a 400 shown here, never a redirect (RFC 6749 §4.1.2.1): an unchecked redirect is an open one.

  /** GET: check the whole authorization request, then show the consent page. Nothing here approves. */
  async function authorize(res: ServerResponse, base: string, query: URLSearchParams) {
    const param = (name: string) => query.get(name) ?? undefined;
    const repeated = repeatedName(query);
    if (repeated) return oauthError(res, 400, "invalid_request", `${quote(repeated)} is repeated`);
    const clientId = param("client_id");
    if (!clientId) return oauthError(res, 400, "invalid_request", "client_id is required");
    const client = await identifyClient(clientId);
    if (typeof client === "string") return oauthError(res, 400, "invalid_client", client);

    // redirect_uri: required, https or loopback http, no fragment (OAuth 2.1 §2.3.1, RFC 8252 §7.3), and
    // one the client registered or listed in its metadata document (RFC 9700 §4.1.3: exact matching).
    const redirectUri = param("redirect_uri") ?? "";
    const problem = redirectUriProblem(redirectUri);
    if (problem) return oauthError(res, 400, "invalid_request", problem);
    if (!client.redirectUris.some((listed) => redirectUriMatches(listed, redirectUri))) {
      return oauthError(res, 400, "invalid_request", "redirect_uri is not one this client registered");
    }

    // Only the authorization-code flow exists here (OAuth 2.1 §4.1.1: the implicit flow is gone).
    if (param("response_type") !== "code") {
      return oauthError(res, 400, "unsupported_response_type", "response_type must be code");
    }

    // PKCE is mandatory, S256 only (OAuth 2.1 §4.1.1, RFC 7636 §4.2): a code issued without a challenge
    // could be redeemed by whoever intercepts it; `plain` would hand the verifier to that same person.
    const challenge = param("code_challenge");
    if (param("code_challenge_method") !== "S256") {
      return oauthError(res, 400, "invalid_request", "code_challenge_method must be S256 (PKCE is required)");
    }
    if (!challenge || !/^[A-Za-z0-9_-]{43}$/.test(challenge)) {
      return oauthError(res, 400, "invalid_request", "code_challenge must be 43 base64url characters");
    }

    // RFC 8707 §2: the resource the token will be for; unnamed, it is the default MCP endpoint.
    const resource = param("resource") ?? `${base}/mcp`;
    if (resourceTtl(resource, base) === undefined) {
      return oauthError(res, 400, "invalid_target", `resource must be ${base}/mcp or ${base}/ttl/<1-86400>/mcp`);
    }
    const scope = param("scope") ?? SCOPE;
    if (scope.split(" ").some((s) => s !== SCOPE)) {
      return oauthError(res, 400, "invalid_scope", `the only scope is "${SCOPE}"`);
    }

    // The checked request waits on the page, signed, for the person's click: the POST trusts nothing else.
    const request = { client_id: clientId, client_name: client.name, redirect_uri: redirectUri, scope, resource };
    const state = param("state");
    const checked = { ...request, code_challenge: challenge, ...(state !== undefined && { state }) };
    const consent = await sign("consent", issuerOf(base), checked, CONSENT_TTL_SECONDS);
    const page = consentPage({ ...request, action: `${base}/authorize`, consent });
    // No framing: a page that approves in one click must not sit invisibly under another site's button.
    const noFraming = { "x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'" };
    send(res, 200, "text/html; charset=utf-8", page, { "cache-control": "no-store", ...noFraming });
  }

  /**
   * POST: the consent page's form. Approve or Deny → 303 back to the client (RFC 9700 §4.12: never 307,
   * which would replay this form body to the client). Demo only: the fixed user approves with one click;
   * a real server signs the user in first, and binds the consent to that browser session.
   */
  async function decide(req: IncomingMessage, res: ServerResponse, base: string, body: string) {
    // Cross-site requests are refused: a page elsewhere could submit this form, though never read it.
    // Browsers send Sec-Fetch-Site and Origin on a form POST; tools such as curl send neither.
    const site = req.headers["sec-fetch-site"];
    const origin = req.headers.origin;
    if ((site !== undefined && site !== "same-origin") || (origin !== undefined && origin !== new URL(base).origin)) {
      log(`[oauth] consent refused: a cross-site POST from ${quote(origin ?? site)}`);
      return sendJson(res, 403, {
        error: "invalid_request",
        error_description: "consent comes from this server's page",
      });
    }
    if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(req.headers["content-type"] ?? "")) {
      return oauthError(res, 400, "invalid_request", "the consent form is application/x-www-form-urlencoded");
    }
    const form = new URLSearchParams(body);
    const repeated = repeatedName(form);
    if (repeated) return oauthError(res, 400, "invalid_request", `${quote(repeated)} is repeated`);
    const checked = await verify("consent", form.get("consent") ?? "", issuerOf(base));
    if (!checked) return oauthError(res, 400, "invalid_request", "the consent is invalid or expired: start again");
    const decision = form.get("decision");
    if (decision !== "approve" && decision !== "deny") {
      return oauthError(res, 400, "invalid_request", "decision must be approve or deny");
    }
    const { client_id: clientId, client_name: name, redirect_uri: redirectUri, state } = checked;
    // RFC 9207: `iss` tells the client which server answered, against mix-up attacks.
    const back = (extra: Record<string, string>) => {
      const target = new URL(String(redirectUri));
      const answer = { ...extra, ...(typeof state === "string" && { state }), iss: issuerOf(base) };
      for (const [param, value] of Object.entries(answer)) target.searchParams.set(param, value);
      return { location: target.href };
    };
    if (decision === "deny") {
      log(`[oauth] consent denied to ${quote(name)}`);
      return void res.writeHead(303, back({ error: "access_denied", error_description: "The user denied access" }))
        .end();
    }
    // The code is the checked request itself, signed, with its own jti (single use, see /token).
    const { code_challenge, scope, resource } = checked;
    const request = { client_id: clientId, redirect_uri: redirectUri, code_challenge, scope, resource };
    const code = await sign("code", issuerOf(base), { ...request, jti: randomId() }, CODE_TTL_SECONDS);
    log(`[oauth] code issued to ${quote(name ?? clientId)}`);
    res.writeHead(303, back({ code })).end();
  }

  /** A client is a signed DCR client_id (redirect URIs inside) or a metadata-document URL; else why not. */
  async function identifyClient(clientId: string): Promise<{ name: string; redirectUris: string[] } | string> {
    if (hasControlCharacters(clientId)) return "client_id must not contain control characters";
    if (URL.canParse(clientId)) return await clientMetadata.load(clientId);
    const registered = await verify("client", clientId, undefined); // any issuer: the key alone proves it is ours
    const uris = registered?.redirect_uris;
    if (!Array.isArray(uris)) {
      return "client_id must be registered at /register or be a Client ID Metadata Document URL";
    }
    const name = typeof registered?.client_name === "string" ? registered.client_name : "registered client";
    return { name, redirectUris: uris.filter((uri) => typeof uri === "string") };
  }

  /** The consent page: a form whose buttons POST the signed request back, so it works without JavaScript. */
  function consentPage(
    view: Record<"client_id" | "client_name" | "redirect_uri" | "scope" | "resource" | "action" | "consent", string>,
  ) {
    const e = escapeHtml;
    const client = view.client_name === view.client_id
      ? e(view.client_id)
      : `${e(view.client_name)} (${e(view.client_id)})`;
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Authorize access</title>
<style>
body { font: 16px system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem }
dd { margin: 0 0 .8rem; word-break: break-all }
button { font: inherit; padding: .6rem 1.4rem; margin-right: .6rem; border-radius: .4rem; border: 1px solid #1a56db }
#approve { background: #1a56db; color: #fff } #deny { background: #fff; color: #1a56db }
</style></head>
<body><h1>Authorize access?</h1>
<p>An application asks to act as <strong>${USER}</strong> on this MCP server.</p>
<dl><dt>Client</dt><dd>${client}</dd><dt>Scope</dt><dd>${e(view.scope)}</dd>
<dt>Redirect</dt><dd>${e(view.redirect_uri)}</dd><dt>Resource</dt><dd>${e(view.resource)}</dd></dl>
<form method="post" action="${e(view.action)}"><input type="hidden" name="consent" value="${e(view.consent)}">
<button type="submit" name="decision" value="approve" id="approve">Approve</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button></form>
</body></html>`;
  }

  // ─── Client ID Metadata Documents ─────
  // A client_id that is a URL names the client's own metadata document (MCP authorization, CIMD draft).
  // It is fetched and checked, never trusted: its redirect_uris are what stands between a code and a
  // phishing page. Fetching a URL a stranger chose is also a way into the server's network (SSRF), so
  // the fetch is fenced: https (or loopback http, for local development), no redirects, a short timeout,
  // a size cap, and never an address inside a private network other than loopback.

  function clientMetadataDocuments() {
    const cache = new Map<string, { client: { name: string; redirectUris: string[] }; until: number }>();

    async function load(clientId: string): Promise<{ name: string; redirectUris: string[] } | string> {
      const cached = cache.get(clientId);
      if (cached && cached.until > Date.now()) return cached.client;
      const url = new URL(clientId);
      const local = url.protocol === "http:" && isLoopbackHost(url.hostname);
      if (url.protocol !== "https:" && !local) return "a client_id URL must be https (or http on loopback)";
      if (url.pathname === "/" || url.hash || url.username || url.password) {
        return "a client_id URL must have a path and no fragment or credentials";
      }
      const refused = await fetchRefusal(url.hostname);
      if (refused) return `the client's metadata document is not fetched: ${refused}`;
      let response: Response;
      try {
        const signal = AbortSignal.timeout(METADATA_TIMEOUT_MS);
        response = await fetch(url, { redirect: "manual", signal, headers: { accept: "application/json" } });
      } catch (error) {
        const timedOut = error instanceof Error && error.name === "TimeoutError";
        return `the client's metadata document ${timedOut ? "did not answer in time" : "is unreachable"}`;
      }
      if (response.status >= 300 && response.status < 400) {
        void response.body?.cancel();
        return "the client's metadata document redirects; redirects are not followed";
      }
      if (response.status !== 200) {
        void response.body?.cancel();
        return `the client's metadata document answered HTTP ${response.status}`;
      }
      const text = await readCapped(response, METADATA_MAX_BYTES).catch(() => "");
      if (text === undefined) return `the client's metadata document is over ${METADATA_MAX_BYTES} bytes`;
      const checked = checkClientMetadata(parseJson(text), clientId);
      if (typeof checked === "string") return `the client's metadata document ${checked}`;
      const maxAge = Number(/(?:^|,)\s*max-age=(\d+)/i.exec(response.headers.get("cache-control") ?? "")?.[1] ?? 0);
      if (maxAge > 0 && !/no-store|no-cache/i.test(response.headers.get("cache-control") ?? "")) {
        if (cache.size >= METADATA_CACHE_SIZE) cache.delete(cache.keys().next().value ?? ""); // the oldest goes
        cache.set(clientId, { client: checked, until: Date.now() + Math.min(maxAge, 3600) * 1000 });
      }
      return checked;
    }

    /** The document must name itself (client_id equal to its URL), list its redirect URIs, and be a public client. */
    function checkClientMetadata(document: unknown, clientId: string) {
      if (!isObject(document)) return "is not a JSON object";
      if (document.client_id !== clientId) return "names another client_id";
      const uris = document.redirect_uris;
      if (!Array.isArray(uris) || uris.length === 0 || !uris.every((uri) => typeof uri === "string")) {
        return "lists no redirect_uris";
      }
      const problem = uris.map(redirectUriProblem).find((found) => found !== undefined);
      if (problem) return `has a bad redirect_uri: ${problem}`;
      const name = document.client_name ?? clientId;
      if (typeof name !== "string" || name.length > 200 || hasControlCharacters(name)) {
        return "has a client_name that is not plain text of at most 200 characters";
      }
      const method = document.token_endpoint_auth_method;
      if (method !== undefined && method !== "none") return "asks for a client authentication this server lacks";
      return { name, redirectUris: uris };
    }

    return { load };
  }

  /** The redirect_uri rules /authorize, /register and metadata documents share: why a URI is bad, or undefined. */
  function redirectUriProblem(uri: string): string | undefined {
    if (!uri) return "redirect_uri is required";
    if (!URL.canParse(uri)) return "redirect_uri must be an absolute URL";
    const url = new URL(uri);
    if (uri.includes("#")) return "redirect_uri must not contain a fragment"; // RFC 6749 §3.1.2
    // Codes travel in the query: only TLS, or a loopback interface that never leaves the machine, keeps them private.
    if (url.protocol === "https:" || (url.protocol === "http:" && isLoopbackHost(url.hostname))) return undefined;
    return "redirect_uri must be https, or http on a loopback host";
  }

  /** Exact match, except a loopback URI allows any port (RFC 8252 §7.3: native apps pick one per run). */
  function redirectUriMatches(listed: string, requested: string): boolean {
    if (listed === requested) return true;
    const a = new URL(listed);
    const b = new URL(requested);
    return a.protocol === "http:" && isLoopbackHost(a.hostname) &&
      a.protocol === b.protocol && a.hostname === b.hostname && a.pathname === b.pathname && a.search === b.search;
  }

  // ─── /token ──────────────────────────
  // Every answer carries Cache-Control: no-store (RFC 6749 §5.1, set in route() so that 405 and 413 have
  // it too); every error is {error, error_description}.

  function token(req: IncomingMessage, res: ServerResponse, base: string, body: string) {
    const params = parseTokenRequest(req.headers["content-type"], body);
    if (typeof params === "string") return oauthError(res, 400, "invalid_request", params);
    const grantType = params.grant_type;
    if (!grantType) return oauthError(res, 400, "invalid_request", "grant_type is required");
    if (grantType === "authorization_code") return exchangeCode(res, base, params);
    if (grantType === "refresh_token") return refresh(res, base, params);
    return oauthError(res, 400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token");
  }

  async function exchangeCode(res: ServerResponse, base: string, params: Record<string, string>) {
    if (!params.code) return oauthError(res, 400, "invalid_request", "code is required");
    if (!params.client_id) return oauthError(res, 400, "invalid_request", "client_id is required");
    const code = await verify("code", params.code, issuerOf(base));
    const resource = code?.resource;
    if (!code?.jti || typeof code.exp !== "number" || typeof resource !== "string") {
      return oauthError(res, 400, "invalid_grant", "code is invalid or expired");
    }
    const accessTtl = resourceTtl(resource, base) ?? config.accessTtl;

    // Single use (RFC 6749 §4.1.2): the first redemption attempt spends the code, whatever its outcome.
    // A second one means the code leaked, so the session the first one started is revoked too. The
    // session id *is* the code's jti, reserved at this instant: a replay racing the first exchange
    // still revokes the tokens that exchange is about to mint.
    const sid = code.jti;
    if (!(await store.spendOnce(code.jti, code.exp))) {
      await revokeSession(sid, code.exp + sessionSeconds(resource, base), "authorization code replayed");
      return oauthError(res, 400, "invalid_grant", "code was already used; its session is revoked");
    }

    // The code is bound to the client it was issued to (RFC 6749 §4.1.3).
    if (params.client_id !== code.client_id) {
      return oauthError(res, 400, "invalid_grant", "code was issued to another client");
    }

    // PKCE (RFC 7636 §4.1, §4.6): the verifier is 43–128 unreserved characters whose SHA-256 is the challenge.
    const verifier = params.code_verifier ?? "";
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) {
      return oauthError(res, 400, "invalid_grant", "code_verifier is required: 43-128 characters of [A-Za-z0-9-._~]");
    }
    if (typeof code.code_challenge !== "string" || !sameString(s256(verifier), code.code_challenge)) {
      return oauthError(res, 400, "invalid_grant", "code_verifier does not match the code_challenge");
    }

    // redirect_uri, when sent, must be the one the code was issued for (RFC 6749 §4.1.3). OAuth 2.1
    // clients may leave it out: PKCE already binds the code to whoever started the flow.
    if (params.redirect_uri !== undefined && params.redirect_uri !== code.redirect_uri) {
      return oauthError(res, 400, "invalid_grant", "redirect_uri does not match the authorization request");
    }
    // RFC 8707 §2.2: a resource named here must be the one the user consented to.
    if (params.resource !== undefined && params.resource !== resource) {
      return oauthError(res, 400, "invalid_target", `resource must be ${resource}, as authorized`);
    }

    const session = { sid, client_id: params.client_id, scope: SCOPE, resource };
    log(`[oauth] code exchanged: session ${sid} started`);
    // Absolute: rotation never extends it.
    return issueTokens(res, base, session, accessTtl, secondsFromNow(sessionSeconds(resource, base)));
  }

  // Refresh tokens rotate on every use; a spent one presented again means it leaked, so the whole
  // session goes (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2). The store keeps one record per session — its
  // current refresh token — so a long chain of rotations costs no more memory than one sign-in.
  async function refresh(res: ServerResponse, base: string, params: Record<string, string>) {
    if (!params.refresh_token) return oauthError(res, 400, "invalid_request", "refresh_token is required");
    if (!params.client_id) return oauthError(res, 400, "invalid_request", "client_id is required");
    const old = await verify("refresh", params.refresh_token, issuerOf(base));
    const { jti, sid, exp, resource } = old ?? {};
    if (!jti || typeof sid !== "string" || typeof exp !== "number" || typeof resource !== "string") {
      return oauthError(res, 400, "invalid_grant", "refresh_token is invalid or expired");
    }
    if (params.client_id !== old?.client_id) {
      return oauthError(res, 400, "invalid_grant", "refresh_token was issued to another client");
    }
    if (await store.isRevoked(sid)) return oauthError(res, 400, "invalid_grant", "the session was revoked");
    if (params.resource !== undefined && params.resource !== resource) {
      return oauthError(res, 400, "invalid_target", `resource must be ${resource}, as authorized`);
    }
    const nextJti = randomId();
    if (!(await store.rotateRefresh(sid, jti, nextJti))) {
      await revokeSession(sid, exp, "refresh token reused");
      return oauthError(res, 400, "invalid_grant", "refresh_token was already used; its session is revoked");
    }
    log(`[oauth] tokens refreshed for session ${sid}`);
    const session = { sid, client_id: params.client_id, scope: SCOPE, resource };
    return issueTokens(res, base, session, resourceTtl(resource, base) ?? config.accessTtl, exp, nextJti);
  }

  /** An RFC 9068 access token for the session's resource, plus the session's one current refresh token. */
  async function issueTokens(
    res: ServerResponse,
    base: string,
    session: { sid: string; client_id: string; scope: string; resource: string },
    accessTtl: number,
    sessionEnd: number,
    refreshJti?: string, // set by a rotation, which has already recorded it
  ) {
    const { resource, ...claims } = session;
    const jti = refreshJti ?? randomId();
    if (!refreshJti) await store.startSession(session.sid, jti, sessionEnd);
    const [accessToken, refreshToken] = await Promise.all([ // independent signatures: let them overlap
      sign("access", issuerOf(base), { sub: USER, aud: resource, jti: randomId(), ...claims }, accessTtl),
      sign("refresh", issuerOf(base), { jti, ...session, exp: sessionEnd }),
    ]);
    sendJson(res, 200, {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: accessTtl,
      refresh_token: refreshToken,
      scope: session.scope,
    });
  }

  /** Form-encoded as RFC 6749 §4.1.3 says; JSON accepted too. Returns the parameters, or what is wrong. */
  function parseTokenRequest(contentType: string | undefined, body: string): Record<string, string> | string {
    if (isJson(contentType)) {
      const json = parseJson(body);
      if (!isObject(json) || !Object.values(json).every((value) => typeof value === "string")) {
        return "a JSON body must be an object of string parameters";
      }
      return json as Record<string, string>;
    }
    if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType ?? "")) {
      return "Content-Type must be application/x-www-form-urlencoded";
    }
    const form = new URLSearchParams(body);
    const repeated = repeatedName(form);
    return repeated ? `${quote(repeated)} is repeated` : Object.fromEntries(form);
  }

  // ─── /register ───────────────────────
  // Stateless dynamic client registration (RFC 7591): the client_id returned is itself a signed token
  // carrying the registered redirect URIs, so /authorize can hold a client to them with nothing stored.
  // MCP 2026-07-28 prefers Client ID Metadata Documents; this stays as the path for hosts that register.

  async function register(req: IncomingMessage, res: ServerResponse, base: string, body: string) {
    if (!isJson(req.headers["content-type"])) {
      return oauthError(res, 415, "invalid_client_metadata", "send the client metadata as application/json");
    }
    const metadata = parseJson(body);
    if (!isObject(metadata)) return oauthError(res, 400, "invalid_client_metadata", "the body must be a JSON object");
    const { redirect_uris: uris, client_name: name } = metadata;
    if (!Array.isArray(uris) || uris.length === 0 || !uris.every((uri) => typeof uri === "string")) {
      return oauthError(res, 400, "invalid_redirect_uri", "redirect_uris must be a non-empty array of URLs");
    }
    const problem = uris.map(redirectUriProblem).find((found) => found !== undefined);
    if (problem) return oauthError(res, 400, "invalid_redirect_uri", problem);
    // application_type (OpenID DCR §2, as MCP 2026-07-28 asks): web clients redirect to https sites;
    // native clients to the loopback interface, where they listen on a port of the moment (RFC 8252 §7.3).
    // Unstated, a client whose redirect URIs are all loopback is taken for a desktop app: native.
    const allLoopback = uris.every((uri) => isLoopbackHost(new URL(uri).hostname));
    const appType = metadata.application_type !== undefined
      ? metadata.application_type
      : (allLoopback ? "native" : "web");
    if (appType !== "web" && appType !== "native") {
      return oauthError(res, 400, "invalid_client_metadata", "application_type must be web or native");
    }
    if (appType === "web" && uris.some((uri) => new URL(uri).protocol !== "https:")) {
      return oauthError(res, 400, "invalid_redirect_uri", "a web client's redirect_uris must be https");
    }
    // The name is shown on the consent page and written to the log: plain text only.
    if (name !== undefined && (typeof name !== "string" || name.length > 200 || hasControlCharacters(name))) {
      return oauthError(
        res,
        400,
        "invalid_client_metadata",
        "client_name must be plain text of at most 200 characters",
      );
    }
    const methods = metadata.token_endpoint_auth_method;
    if (methods !== undefined && methods !== "none") {
      return oauthError(res, 400, "invalid_client_metadata", "only public clients (auth method none) are supported");
    }
    const codeFlowOnly = isSubset(metadata.grant_types, ["authorization_code", "refresh_token"]) &&
      isSubset(metadata.response_types, ["code"]);
    if (!codeFlowOnly) {
      return oauthError(res, 400, "invalid_client_metadata", "only the code flow: grant_types and response_types");
    }
    const client = { redirect_uris: uris, application_type: appType, ...(name !== undefined && { client_name: name }) };
    const clientId = await sign("client", issuerOf(base), client);
    log(`[oauth] client registered: ${name ?? "(unnamed)"}`);
    sendJson(res, 201, {
      client_id: clientId,
      client_id_issued_at: nowSeconds(),
      ...client,
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
    });
  }

  // ─── Discovery metadata ──────────────
  // REACTIVE_AUTH_ONLY: the root documents, which some hosts probe on connect, carry no authorization
  // server; only the 401's resource_metadata leads to one, so OAuth starts at the first protected call.

  /** RFC 8414 §2: where the endpoints are and what this authorization server insists on. */
  function authorizationServerMetadata(res: ServerResponse, base: string) {
    sendJson(res, 200, {
      issuer: issuerOf(base),
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      registration_endpoint: `${base}/register`,
      scopes_supported: [SCOPE],
      response_types_supported: ["code"],
      grant_types_supported: ["authorization_code", "refresh_token"],
      code_challenge_methods_supported: ["S256"], // PKCE, S256 only
      token_endpoint_auth_methods_supported: ["none"], // public clients: PKCE, not a secret, proves who redeems a code
      client_id_metadata_document_supported: true, // a client_id may be the URL of the client's metadata document
      authorization_response_iss_parameter_supported: true, // RFC 9207: `iss` on every authorization response
    });
  }

  /** RFC 9728 §3: an MCP endpoint is the protected resource, and this server is its authorization server. */
  function protectedResourceMetadata(res: ServerResponse, base: string, resourcePath: string) {
    const hidden = config.reactive && resourcePath === ""; // the root document, in reactive mode
    sendJson(res, 200, {
      resource: `${base}${resourcePath || "/mcp"}`,
      ...(!hidden && { authorization_servers: [issuerOf(base)] }),
      scopes_supported: [SCOPE],
      bearer_methods_supported: ["header"],
    });
  }

  // ─── /mcp ────────────────────────────
  // MCP Streamable HTTP with JSON responses and no sessions: every POST stands alone. `/ttl/<s>/mcp` is the
  // same endpoint as a resource of its own, whose tokens live <s> seconds (RFC 8707 resource indicators).

  const noArguments = { type: "object", properties: {}, additionalProperties: false };
  const tool = (name: string, description: string, resourceUri?: string) => ({
    name,
    description,
    inputSchema: noArguments,
    ...(resourceUri && { _meta: appMeta(resourceUri) }),
  });
  const TOOLS = [
    tool("whoami", "Says who is calling: the signed-in user when a valid token came along, else anonymous."),
    tool(
      "get_secret",
      "Returns the secret. Protected: calling it without a token starts the OAuth flow.",
      SECRET_APP_URI,
    ),
    tool("revoke_auth_token", "Protected: ends the caller's session; its access and refresh tokens stop working."),
    tool("show_auth_button", "Shows an app with Auth me (calls get_secret) and Revoke token.", AUTH_BUTTON_APP_URI),
    tool("elicit_url", "Asks you, during the call, to open a page; finishes once you have been there."),
    tool(
      "elicit_by_error",
      "Fails with a page to open (URL elicitation); the retry succeeds once you have been there.",
    ),
  ];
  const PROTECTED_TOOLS = new Set(["get_secret", "revoke_auth_token"]);
  const HANDSHAKE_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26"];
  const MODERN_VERSION = "2026-07-28";
  const ALL_VERSIONS = [MODERN_VERSION, ...HANDSHAKE_VERSIONS];
  const META_VERSION = "io.modelcontextprotocol/protocolVersion";
  const META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";
  type Rejection = { code: number; message: string; data?: unknown };
  type Outcome = { result: Record<string, unknown> } | { error: Rejection; status?: number };
  type Caller = { claims?: JWTPayload; tokenSent: boolean };

  async function mcp(req: IncomingMessage, res: ServerResponse, base: string, path: string, body: string) {
    if (!isJson(req.headers["content-type"])) {
      return rpcError(res, 415, null, -32600, "Content-Type must be application/json");
    }
    const message = parseJson(body);
    if (message === undefined) return rpcError(res, 400, null, -32700, "Parse error: the body is not JSON");
    if (!isObject(message) || message.jsonrpc !== "2.0") {
      return rpcError(res, 400, null, -32600, "Invalid Request: expected one JSON-RPC 2.0 message");
    }
    const { id, method } = message;
    const badId = id !== undefined && typeof id !== "string" && !Number.isFinite(id); // 1e400 parses to Infinity
    if (badId) return rpcError(res, 400, null, -32600, "Invalid Request: id must be a string or a number");
    // Notifications, and a client's answers to server requests, are accepted with no body (202); an answer
    // someone is waiting for (elicit_url, below) is handed over.
    const isAnswer = method === undefined && id !== undefined && ("result" in message || "error" in message);
    if (isAnswer) awaitedAnswers.get(String(id))?.(message);
    if (isAnswer || (typeof method === "string" && id === undefined)) return void res.writeHead(202).end();
    if (typeof method !== "string") return rpcError(res, 400, null, -32600, "Invalid Request: method must be a string");
    const params = message.params ?? {};
    if (!isObject(params)) return rpcError(res, 400, id, -32602, "Invalid params: params must be an object");

    // Which protocol era: MCP 2026-07-28 requests name their version in params._meta (and the
    // MCP-Protocol-Version header); anything else is served as the 2025 handshake era, unchanged.
    const meta = isObject(params._meta) ? params._meta : {};
    const modern = meta[META_VERSION] !== undefined || req.headers["mcp-protocol-version"] === MODERN_VERSION;
    const rejection = modern ? checkModernRequest(req, method, params, meta) : checkHandshakeRequest(req);
    if (rejection) return rpcError(res, 400, id, rejection.code, rejection.message, {}, rejection.data);

    // The lazy-auth gate. It reads the JSON-RPC body — the method and the tool name — because that is
    // what will run; only a protected tool asks for a token, so discovery and public tools stay open.
    const resource = `${base}${path}`;
    const caller = method === "tools/call" ? await authenticate(req, base, resource) : { tokenSent: false };
    const protectedTool = typeof params.name === "string" && PROTECTED_TOOLS.has(params.name);
    if (method === "tools/call" && protectedTool && !caller.claims) {
      // RFC 9728 §5.1: the challenge names where discovery starts; RFC 6750 §3: invalid_token when a
      // token was sent but did not count.
      const metadata = `${base}/.well-known/oauth-protected-resource${path}`;
      const challenge = [`resource_metadata="${metadata}"`, `scope="${SCOPE}"`];
      if (caller.tokenSent) {
        challenge.push(`error="invalid_token"`, `error_description="The access token is invalid, expired or revoked"`);
        log(`[oauth] ${params.name} refused: the token is invalid, expired or revoked`);
      }
      return rpcError(res, 401, id, -32001, "Authentication required", {
        "www-authenticate": `Bearer ${challenge.join(", ")}`,
      });
    }
    if (method === "tools/call" && params.name === "elicit_url" && !modern) {
      return elicitDuringCall(res, id, base, caller);
    }
    const outcome = await answer(method, params, caller, modern, base);
    if ("error" in outcome) {
      const status = outcome.status ?? (modern && outcome.error.code === -32601 ? 404 : 200);
      return rpcError(res, status, id, outcome.error.code, outcome.error.message, {}, outcome.error.data);
    }
    const resultType = modern && !("resultType" in outcome.result) ? { resultType: "complete" } : {};
    sendJson(res, 200, { jsonrpc: "2.0", id, result: { ...resultType, ...outcome.result } });
  }

  // MCP 2026-07-28 Streamable HTTP: the routing headers must be present and agree with the body, or the
  // request is refused here, before the auth gate and before any tool. This is the lazy-auth lesson: a
  // gateway that let `Mcp-Name: whoami` through unauthenticated while the body called get_secret would
  // leak the secret. The gate above decides on the body; a request whose headers disagree never gets there.
  function checkModernRequest(
    req: IncomingMessage,
    method: string,
    params: Record<string, unknown>,
    meta: Record<string, unknown>,
  ): Rejection | undefined {
    const requested = meta[META_VERSION];
    const header = req.headers["mcp-protocol-version"];
    if (typeof requested !== "string" || !isObject(meta[META_CAPABILITIES])) {
      return { code: -32602, message: `Invalid params: _meta must carry ${META_VERSION} and ${META_CAPABILITIES}` };
    }
    if (header !== requested) {
      return {
        code: -32020,
        message: `Header mismatch: MCP-Protocol-Version is ${quote(header)}, the body says ${quote(requested)}`,
      };
    }
    if (requested !== MODERN_VERSION) {
      return { code: -32022, message: "Unsupported protocol version", data: { supported: ALL_VERSIONS, requested } };
    }
    const methodHeader = req.headers["mcp-method"];
    if (methodHeader !== method) {
      return {
        code: -32020,
        message: `Header mismatch: Mcp-Method is ${quote(methodHeader)}, the body calls ${quote(method)}`,
      };
    }
    // Mcp-Name mirrors the tool name on tools/call and the URI on resources/read.
    const named = method === "tools/call" ? params.name : params.uri;
    const nameHeader = decodeHeaderValue(req.headers["mcp-name"]);
    if ((method === "tools/call" || method === "resources/read") && nameHeader !== named) {
      return {
        code: -32020,
        message: `Header mismatch: Mcp-Name is ${quote(nameHeader)}, the body names ${quote(named)}`,
      };
    }
    return undefined;
  }

  /** 2025 era: a MCP-Protocol-Version header, when sent, must name a version spoken here (2025-06-18 §Transports). */
  function checkHandshakeRequest(req: IncomingMessage): Rejection | undefined {
    const header = req.headers["mcp-protocol-version"];
    if (header === undefined || HANDSHAKE_VERSIONS.includes(String(header))) return undefined;
    return {
      code: -32022,
      message: "Unsupported protocol version",
      data: { supported: ALL_VERSIONS, requested: header },
    };
  }

  /** An access token counts only if signature, typ, issuer, audience (this resource), expiry and session check out. */
  async function authenticate(req: IncomingMessage, base: string, resource: string): Promise<Caller> {
    const header = req.headers.authorization;
    if (header === undefined) return { tokenSent: false };
    const bearer = /^Bearer +([\w.~+/-]+=*) *$/i.exec(header)?.[1]; // RFC 6750 §2.1
    const claims = bearer ? await verify("access", bearer, issuerOf(base), resource) : undefined;
    if (!claims || typeof claims.sid !== "string" || (await store.isRevoked(claims.sid))) return { tokenSent: true };
    return { claims, tokenSent: true };
  }

  function answer(
    method: string,
    params: Record<string, unknown>,
    caller: Caller,
    modern: boolean,
    base: string,
  ): Promise<Outcome> | Outcome {
    // The tool list is the same for every caller and fixed for the life of the process: a modern client
    // may cache it (and the discover answer) for a minute, shared across users.
    const cacheHint = modern && { ttlMs: 60_000, cacheScope: "public" };
    if (method === "server/discover" && modern) {
      const serverInfo = { "io.modelcontextprotocol/serverInfo": SERVER_INFO };
      const discovered = { supportedVersions: ALL_VERSIONS, capabilities: CAPABILITIES, instructions: INSTRUCTIONS };
      return { result: { ...discovered, ...cacheHint, _meta: serverInfo } };
    }
    if (method === "initialize" && !modern) { // the 2025 handshake; 2026-07-28 has none
      const asked = params.protocolVersion;
      if (typeof asked !== "string") {
        return { error: { code: -32602, message: "Invalid params: protocolVersion is required" } };
      }
      // Version negotiation: echo the client's version when supported, else offer the newest we speak.
      const protocolVersion = HANDSHAKE_VERSIONS.includes(asked) ? asked : HANDSHAKE_VERSIONS[0];
      return {
        result: { protocolVersion, capabilities: CAPABILITIES, serverInfo: SERVER_INFO, instructions: INSTRUCTIONS },
      };
    }
    if (method === "ping") return { result: {} };
    if (method === "tools/list") return { result: { tools: TOOLS, ...cacheHint } };
    if (method === "tools/call") return callTool(params, caller, modern, base);
    if (method === "resources/list") return { result: { resources: APP_RESOURCES, ...cacheHint } };
    if (method === "resources/read") return readResource(params, modern);
    return { error: { code: -32601, message: `Method not found: ${method}` } };
  }

  async function callTool(params: Record<string, unknown>, caller: Caller, modern: boolean, base: string) {
    const { name, arguments: args = {} } = params;
    if (typeof name !== "string" || !TOOLS.some((tool) => tool.name === name)) {
      return { error: { code: -32602, message: `Invalid params: unknown tool ${quote(name)}` } };
    }
    if (!isObject(args) || Object.keys(args).length > 0) {
      return { error: { code: -32602, message: "Invalid params: this tool takes no arguments" } };
    }
    const claims = caller.claims;
    if (name === "whoami") {
      return text(claims ? `You are ${claims.sub}, signed in through ${claims.client_id}.` : "You are anonymous.");
    }
    if (name === "show_auth_button") return text("Showing the Auth me button. Click it to call get_secret.");
    if (name === "elicit_by_error" && !modern) return elicitByError(caller, base);
    if (name === "elicit_by_error" || name === "elicit_url") return elicitByInputRequest(name, params, caller, base);
    if (!claims || typeof claims.sid !== "string") {
      return { error: { code: -32001, message: "Authentication required" } };
    }
    if (name === "get_secret") {
      return text(`The secret is: ${SECRET}. (Shown to ${claims.sub}, session ${claims.sid}.)`);
    }
    const until = secondsFromNow(sessionSeconds(String(claims.aud), base));
    await revokeSession(claims.sid, until, "revoke_auth_token called");
    return text("Your session is revoked: its tokens no longer work. The next protected call starts a new sign-in.");
  }

  // ─── The MCP App ─────────────────────
  // Two small views a host renders in a sandboxed iframe (MCP Apps, 2026-01-26): each tool names its view
  // in _meta.ui.resourceUri, and the host reads it with resources/read. The views talk to the host by
  // postMessage and reach this server only through the host's tools/call, so a host's 401 → OAuth → retry
  // happens for them too: that is the lazy-auth demo inside a host.

  const APP_RESOURCES = [
    { uri: AUTH_BUTTON_APP_URI, name: "Auth me button", mimeType: APP_MIME, description: "Calls get_secret" },
    { uri: SECRET_APP_URI, name: "Secret", mimeType: APP_MIME, description: "Shows what get_secret returned" },
  ];
  const APP_DOCUMENTS: Record<string, string> = {
    [AUTH_BUTTON_APP_URI]: AUTH_BUTTON_APP,
    [SECRET_APP_URI]: SECRET_APP,
  };

  function readResource(params: Record<string, unknown>, modern: boolean): Outcome {
    const { uri } = params;
    if (typeof uri !== "string") return { error: { code: -32602, message: "Invalid params: uri is required" } };
    if (!Object.hasOwn(APP_DOCUMENTS, uri)) {
      // Resource not found: -32002 in the 2025 specifications, -32602 from 2026-07-28 (SEP-2164).
      return { error: { code: modern ? -32602 : -32002, message: `Resource not found: ${quote(uri)}`, data: { uri } } };
    }
    return { result: { contents: [{ uri, mimeType: APP_MIME, text: APP_DOCUMENTS[uri] }] } };
  }

  // ─── URL elicitation ─────────────────
  // Sending the user to a page (say, a third party's sign-in) before a tool can finish. The elicitation is a
  // signed token — the page's id, the 2025 elicitationId and the 2026 requestState at once — so no instance
  // has to remember it; the visit is recorded in the single-use store (shared, with Redis). Demo only: with
  // no cookies, nothing proves that the browser visiting is the caller's. A real server signs the user in on
  // that page and records the visit for that user alone. Here the caller is the token's user, or anonymous.

  const visitedKey = (caller: Caller) => `elicitation-visited:${caller.claims?.sub ?? "anonymous"}`;
  const awaitedAnswers = new Map<string, (answer: Record<string, unknown>) => void>();

  async function newElicitation(tool: string, caller: Caller, base: string) {
    const claims = { jti: randomId(), tool, sub: caller.claims?.sub ?? "anonymous" };
    const id = await sign("elicitation", issuerOf(base), claims, ELICITATION_TTL_SECONDS);
    const url = `${base}/elicitation-callback?id=${id}`;
    return { id, url, message: "Open this page to go on: it stands in for a third party's sign-in." };
  }

  /** Takes the caller's visit when there is one, looking again every 200 ms for up to `waitMs`. */
  async function visited(caller: Caller, waitMs: number): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    while (!(await store.takeFlag(visitedKey(caller)))) {
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return true;
  }

  /**
   * 2025 era, error form: the call fails with -32042 naming the page; the host opens it and retries. Any
   * unexpired visit of the caller's counts, so a host that retried too early and got a second page is fine.
   */
  async function elicitByError(caller: Caller, base: string): Promise<Outcome> {
    if (await visited(caller, 0)) return text("You have been to the page: elicit_by_error is done.");
    const { id, url, message } = await newElicitation("elicit_by_error", caller, base);
    const elicitations = [{ mode: "url", elicitationId: id, url, message }];
    return { error: { code: -32042, message: "This tool needs you to open a page first", data: { elicitations } } };
  }

  /**
   * 2026-07-28: no server-to-client requests and no -32042. The tool answers `input_required` with a URL
   * elicitation and a signed requestState; the client asks the user, then retries with both. A state is
   * good once, for its tool and caller, until it expires.
   */
  async function elicitByInputRequest(
    tool: string,
    params: Record<string, unknown>,
    caller: Caller,
    base: string,
  ): Promise<Outcome> {
    const capabilities = isObject(params._meta) ? params._meta[META_CAPABILITIES] : undefined;
    const elicitation = isObject(capabilities) ? capabilities.elicitation : undefined;
    if (!isObject(elicitation) || !isObject(elicitation.url)) {
      const data = { requiredCapabilities: { elicitation: { url: {} } } };
      const message = "Missing required client capability: elicitation.url";
      return { status: 400, error: { code: -32021, message, data } };
    }
    if (params.requestState !== undefined) {
      const state = typeof params.requestState === "string"
        ? await verify("elicitation", params.requestState, issuerOf(base))
        : undefined;
      const sub = caller.claims?.sub ?? "anonymous";
      if (!state?.jti || !state.exp || state.tool !== tool || state.sub !== sub) {
        return { error: { code: -32602, message: "Invalid params: requestState is invalid or expired" } };
      }
      const response = isObject(params.inputResponses) ? params.inputResponses.visit : undefined;
      if (isObject(response) && response.action !== "accept") {
        return text("You declined to open the page: nothing done.");
      }
      if (!(await store.spendOnce(state.jti, state.exp))) {
        return { error: { code: -32602, message: "Invalid params: this requestState was already used" } };
      }
      // The client retries as soon as the user agrees, usually before the page is open: wait a moment.
      if (await visited(caller, 3000)) return text(`You have been to the page: ${tool} is done.`);
    }
    const { id, url, message } = await newElicitation(tool, caller, base);
    const inputRequests = { visit: { method: "elicitation/create", params: { mode: "url", message, url } } };
    return { result: { resultType: "input_required", inputRequests, requestState: id } };
  }

  /**
   * 2025 era, during the call: the tools/call answer becomes an SSE stream carrying an elicitation/create
   * request; the client's answer arrives as a POST of its own (202 above), matched by an unguessable id.
   * That POST must reach this instance: behind a balancer, this tool needs sticky routing.
   */
  async function elicitDuringCall(res: ServerResponse, id: unknown, base: string, caller: Caller) {
    const elicitation = await newElicitation("elicit_url", caller, base);
    const requestId = `elicit-${randomId()}`;
    const answered = new Promise<Record<string, unknown> | undefined>((resolve) => {
      awaitedAnswers.set(requestId, resolve);
      setTimeout(() => resolve(undefined), config.elicitationWaitMs).unref();
      res.once("close", () => resolve(undefined)); // the client went away (or the stream ended)
    }).finally(() => awaitedAnswers.delete(requestId));
    // No `id:` lines: with event ids a client would treat the stream as resumable and come back with GET.
    const event = (message: Record<string, unknown>) => res.write(`data: ${JSON.stringify(message)}\n\n`);
    const finish = (line: string) => {
      event({ jsonrpc: "2.0", id, result: { content: [{ type: "text", text: line }], isError: false } });
      res.end();
    };
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    const { url, message } = elicitation;
    event({
      jsonrpc: "2.0",
      id: requestId,
      method: "elicitation/create",
      params: { mode: "url", message, url, elicitationId: elicitation.id },
    });
    const reply = await answered;
    if (!reply) return finish("No answer came in time: call elicit_url again when you are ready.");
    if (isObject(reply.error)) {
      const unsupported = reply.error.code === -32602 || reply.error.code === -32601;
      return finish(
        unsupported
          ? "Your client cannot open pages for a server (no URL elicitation)."
          : "Your client could not ask you.",
      );
    }
    if (!isObject(reply.result) || reply.result.action !== "accept") {
      return finish("You declined to open the page: nothing done.");
    }
    if (!(await visited(caller, config.elicitationWaitMs))) return finish("The page was not visited in time.");
    event({ jsonrpc: "2.0", method: "notifications/elicitation/complete", params: { elicitationId: elicitation.id } });
    finish("You have been to the page: elicit_url is done.");
  }

  /** The page the elicitation sends the user to: a signed, unexpired id records the visit until it expires. */
  async function elicitationCallback(res: ServerResponse, base: string, query: URLSearchParams) {
    const elicitation = await verify("elicitation", query.get("id") ?? "", issuerOf(base));
    if (!elicitation?.exp || typeof elicitation.sub !== "string") {
      return send(
        res,
        400,
        "text/html; charset=utf-8",
        callbackPage("This link is invalid or expired. Nothing was recorded."),
      );
    }
    await store.raiseFlag(`elicitation-visited:${elicitation.sub}`, elicitation.exp);
    log(`[elicitation] page visited for ${elicitation.sub} (${elicitation.tool})`);
    send(
      res,
      200,
      "text/html; charset=utf-8",
      callbackPage("Done: go back to your MCP host, which can now finish the tool."),
    );
  }

  // ─── Routing, CORS, body limits ──────

  type Handler = (
    req: IncomingMessage,
    res: ServerResponse,
    base: string,
    query: URLSearchParams,
    body: string,
  ) => Promise<void> | void;
  const routes: Record<string, Record<string, Handler>> = {
    "/": { GET: (_req, res, base) => send(res, 200, "text/plain; charset=utf-8", landingText(base)) },
    "/authorize": {
      GET: (_req, res, base, query) => authorize(res, base, query),
      POST: (req, res, base, _query, body) => decide(req, res, base, body),
    },
    "/token": { POST: (req, res, base, _query, body) => token(req, res, base, body) },
    "/mcp": { POST: (req, res, base, _query, body) => mcp(req, res, base, "/mcp", body) },
    "/register": { POST: (req, res, base, _query, body) => register(req, res, base, body) },
    "/elicitation-callback": { GET: (_req, res, base, query) => elicitationCallback(res, base, query) },
  };
  const PAGES = new Set(["/authorize", "/elicitation-callback"]); // for people in a browser, not for APIs

  /** The handlers for a path: a fixed route, an MCP endpoint, or a discovery document. */
  function findRoute(path: string, mount: string): Record<string, Handler> | undefined {
    if (Object.hasOwn(routes, path)) return routes[path];
    // /ttl/<seconds>/mcp: the MCP endpoint again, as a resource of its own.
    if (mcpPathTtl(path) !== undefined) return { POST: (req, res, base, _q, body) => mcp(req, res, base, path, body) };
    // RFC 8414 §3 and RFC 9728 §3.1 insert the well-known segment before the issuer's or resource's path.
    // Mounted at /lazy-auth, that path starts with the mount: the README's root rewrite sends those here.
    const wellKnown = /^\/\.well-known\/(oauth-protected-resource|oauth-authorization-server)(\/.*)?$/.exec(path);
    if (!wellKnown) return undefined;
    let rest = wellKnown[2] ?? ""; // the issuer's or resource's path, inside this handler
    if (mount && (rest === mount || rest.startsWith(`${mount}/`))) rest = rest.slice(mount.length);
    if (wellKnown[1] === "oauth-protected-resource") {
      if (rest !== "" && mcpPathTtl(rest) === undefined) return undefined;
      return { GET: (_req, res, base) => protectedResourceMetadata(res, base, rest) };
    }
    if (rest !== (config.reactive ? "/oauth" : "")) return undefined; // reactive: only at the issuer's own path
    return { GET: (_req, res, base) => authorizationServerMetadata(res, base) };
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams) {
    // Wildcard CORS is safe *here*: nothing rides on cookies or other ambient credentials — every
    // credential is an explicit Authorization header or request parameter — and browser-based hosts on
    // any origin must be able to read WWW-Authenticate to start the flow. The pages are left out: another
    // origin has no business reading a consent page or the redirect after it. Demo only: a real server
    // lists its allowed origins.
    if (!PAGES.has(path)) {
      res.setHeader("access-control-allow-origin", "*");
      res.setHeader("access-control-expose-headers", "WWW-Authenticate");
    }
    if (path === "/token") res.setHeader("cache-control", "no-store"); // RFC 6749 §5.1: tokens must not be cached
    const base = baseUrl(req);
    if (base === undefined) {
      log(`[http] refused Host ${quote(req.headers.host)}`);
      return httpError(res, path, 403, "invalid_request", `Host ${quote(req.headers.host)} is not served here`);
    }
    if (req.method === "OPTIONS") {
      if (PAGES.has(path)) return void res.writeHead(204).end(); // no CORS headers: the preflight fails
      const allowHeaders = "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, " +
        "mcp-method, mcp-name";
      const preflight = {
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": allowHeaders,
      };
      return void res.writeHead(204, preflight).end();
    }
    const handlers = findRoute(path, mountPath(req));
    if (!handlers) return httpError(res, path, 404, "not_found", `Nothing at ${path}`);
    const handler = Object.hasOwn(handlers, req.method ?? "") ? handlers[req.method ?? ""] : undefined;
    if (!handler) {
      const allow = Object.keys(handlers).join(", ");
      return httpError(res, path, 405, "method_not_allowed", `${path} answers ${allow} only`, { allow });
    }
    if (req.method !== "POST") return handler(req, res, base, query, "");
    const body = await readBody(req, BODY_LIMIT_BYTES);
    if (body === undefined) {
      return httpError(res, path, 413, "invalid_request", `The body is over ${BODY_LIMIT_BYTES} bytes`);
    }
    return handler(req, res, base, query, body);
  }

  /** Errors outside a handler's own checks, in the shape the path speaks: JSON-RPC on MCP, OAuth elsewhere. */
  function httpError(
    res: ServerResponse,
    path: string,
    status: number,
    error: string,
    description: string,
    headers: Record<string, string> = {},
  ) {
    if (mcpPathTtl(path) !== undefined) {
      return rpcError(res, status, null, status === 413 ? -32600 : -32000, description, headers);
    }
    sendJson(res, status, { error, error_description: description }, headers);
  }

  return (req, res) => {
    const url = req.url ?? "/";
    const split = url.indexOf("?");
    let path = split === -1 ? url : url.slice(0, split);
    // A framework that hands over the full path (no req.baseUrl) has it stripped of the mount here.
    if (config.basePath && path.startsWith(`${config.basePath}/`)) path = path.slice(config.basePath.length);
    if (config.logRequests) {
      // The request trace: what a host probes while it connects. Query values stay out (codes travel there).
      res.once("close", () => {
        const agent = quote((req.headers["user-agent"] ?? "-").slice(0, 60));
        const bearer = req.headers.authorization === undefined ? "no" : "yes";
        const status = res.writableFinished ? res.statusCode : "(closed before an answer)";
        log(`[request] ${req.method} ${path} → ${status} bearer=${bearer} ${agent}`);
      });
    }
    route(req, res, path, new URLSearchParams(split === -1 ? "" : url.slice(split + 1))).catch((error: unknown) => {
      // Every failure becomes a JSON answer and the process lives; no stack trace leaves the server.
      if (error instanceof ClientGone) return void res.destroy(); // the client left: nobody to answer, nothing wrong
      if (res.headersSent) return void res.destroy();
      if (error instanceof StoreUnavailable) {
        log(`[oauth] store unavailable: ${error.message}`);
        return httpError(res, path, 503, "temporarily_unavailable", "The token store cannot answer; try again shortly");
      }
      log(`[error] ${req.method} ${path}: ${String(error)}`);
      httpError(res, path, 500, "server_error", "Internal error");
    });
  };
}

// ─── Start ───────────────────────────────

export interface RunningServer {
  url: string; // base URL on loopback, e.g. http://127.0.0.1:3097
  server: Server;
  /** Stops accepting, lets requests in flight finish for up to `graceMs`, then cuts what remains. */
  close(graceMs?: number): Promise<void>;
}

/** Creates the handler and listens. Options override the environment (tests listen on port 0). */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const { port, host } = readConfig(options);
  const handler = await createHandler(options);
  let draining = false;
  const inFlight = new Map<ServerResponse, IncomingMessage>();
  const server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    inFlight.set(res, req);
    res.once("close", () => inFlight.delete(res));
    if (draining) res.setHeader("connection", "close");
    handler(req, res);
  });
  // Slow clients are cut in seconds, not Node's minutes: 10 s for the headers and for the whole request
  // (a 64 KiB body at 6.5 KB/s). A client that stalls mid-body no longer holds its buffer for five minutes.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  // A deep listen queue: a burst of connections waits in the kernel, not in SYN retries that take seconds.
  // 4096 is Linux's default somaxconn, the cap the kernel applies anyway; Node's own default is 511.
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, backlog: 4096 }, () => resolve());
  });
  const address = server.address();
  const listeningPort = typeof address === "object" && address ? address.port : port;
  const loopbackName = host === "localhost" ? "localhost" : host.includes(":") ? "[::1]" : "127.0.0.1";
  return {
    url: `http://${loopbackName}:${listeningPort}`,
    server,
    // A drain, not a cut: stop accepting; every answer from now on says Connection: close, and each
    // keep-alive connection closes after its current answer; what still runs after the grace period is cut.
    close: (graceMs = SHUTDOWN_GRACE_MS) =>
      new Promise<void>((resolve) => {
        draining = true;
        for (const [res, req] of inFlight) {
          if (!res.headersSent) res.setHeader("connection", "close");
          else res.once("finish", () => req.socket.end()); // already answering with keep-alive: end after it
        }
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), graceMs).unref();
      }),
  };
}

// ─── Small helpers ───────────────────────

const BODY_LIMIT_BYTES = 64 * 1024;
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;
const SHUTDOWN_GRACE_MS = 8_000; // inside the 10 s a container runtime waits after SIGTERM before SIGKILL
const METADATA_TIMEOUT_MS = 3_000;
const METADATA_MAX_BYTES = 16 * 1024;
const METADATA_CACHE_SIZE = 1_000;
const SERVER_INFO = { name: "lazy-auth-example", version: "0.1.0" };
const CAPABILITIES = { tools: {}, resources: {} }; // resources: the MCP App's views are read as resources
const SECRET = "lazy auth works"; // what get_secret guards
const INSTRUCTIONS =
  "whoami, show_auth_button, elicit_url and elicit_by_error are public. get_secret and revoke_auth_token need you " +
  "to sign in: calling one starts OAuth.";

const landingText = (base: string) =>
  `Lazy-auth MCP server
  MCP endpoint (Streamable HTTP, MCP 2025-03-26 to 2026-07-28): ${base}/mcp
  Discovery: ${base}/.well-known/oauth-protected-resource/mcp, ${base}/.well-known/oauth-authorization-server
  Same endpoint with tokens that live N seconds (1-86400): ${base}/ttl/N/mcp
  OAuth: ${base}/authorize ${base}/token ${base}/register
  Tools: get_secret and revoke_auth_token (protected); whoami, show_auth_button, elicit_url, elicit_by_error
`;

const text = (value: string) => ({ result: { content: [{ type: "text", text: value }], isError: false } });

/** The elicitation callback's answer: a small page, its one message escaped. */
const callbackPage = (message: string) =>
  `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Elicitation</title></head>
<body style="font: 16px system-ui, sans-serif; max-width: 34rem; margin: 3rem auto"><p>${escapeHtml(message)}</p>
<p><small>Demo only: a real server would sign you in on this page, so that only you can finish your request.</small></p>
</body></html>`;

/** Thrown when the client closes its connection mid-request: its business, not an error of ours. */
class ClientGone extends Error {}

/**
 * Reads a request body up to `limit` bytes; undefined (answer 413) as soon as it is larger. The rest is
 * read and dropped, so a client still sending can read the 413 instead of a reset connection — but only
 * up to DRAIN_LIMIT_BYTES, and for a second: then the connection is cut, never left hanging.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    // Mounted behind a body parser (express.json() before app.use), the stream was read already.
    if (req.readableEnded) return reject(new Error("the body was read before this handler: mount it before parsers"));
    let refused = false;
    const refuse = () => {
      if (!refused) setTimeout(() => req.complete || req.destroy(), 1000).unref();
      refused = true;
      resolve(undefined);
    };
    if (Number(req.headers["content-length"]) > limit) refuse();
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      refuse();
      if (size > DRAIN_LIMIT_BYTES) req.destroy();
    });
    req.on("end", () => resolve(size > limit ? undefined : Buffer.concat(chunks).toString("utf8")));
    // A client that hangs up mid-body: its buffer goes with it, and the log stays quiet.
    req.on("error", () => reject(new ClientGone()));
    req.on("close", () => req.complete || reject(new ClientGone()));
  });
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), ...headers }).end(body);
}
const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
  send(res, status, "application/json", JSON.stringify(body), headers);

/** Every JSON-RPC error has one shape: {jsonrpc, id, error: {code, message, data?}}. */
function rpcError(
  res: ServerResponse,
  status: number,
  id: unknown,
  code: number,
  message: string,
  headers: Record<string, string> = {},
  data?: unknown,
) {
  sendJson(res, status, {
    jsonrpc: "2.0",
    id: id ?? null,
    error: { code, message, ...(data !== undefined && { data }) },
  }, headers);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  } // not JSON: each caller answers in its own shape
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const isJson = (contentType: string | undefined) => /^application\/json\s*(;|$)/i.test(contentType ?? "");
/** Absent, or an array holding only allowed strings. */
const isSubset = (value: unknown, allowed: string[]) =>
  value === undefined || (Array.isArray(value) && value.every((item) => allowed.includes(item)));
const isLoopbackHost = (hostname: string) => /^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)$/.test(hostname);
/** A Host header naming loopback, checked part by part: valid IPv4 octets, a bracketed IPv6, a port in range. */
const LOOPBACK_HOST = /^(?:localhost|127(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}|\[::1\])(?::([1-9]\d{0,4}))?$/;
const isLoopbackHostHeader = (host: string) => {
  const match = LOOPBACK_HOST.exec(host);
  return match !== null && Number(match[1] ?? 80) <= 65535;
};
// deno-lint-ignore no-control-regex -- finding control characters is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;
const hasControlCharacters = (text: string) => text.search(CONTROL_CHARACTERS) !== -1;
/** A log line shows control characters as \u escapes, so no value inside it can start a line of its own. */
const escapeControl = (line: string) =>
  line.replace(CONTROL_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
/** Client input echoed in an error message: strings quoted and cut short, anything else only named. */
const quote = (
  value: unknown,
) => (typeof value === "string" ? JSON.stringify(value.slice(0, 100)) : `(${typeof value})`);
const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** RFC 6749 §3.1, §3.2: a parameter sent twice is ambiguous, so requests must not repeat one. */
function repeatedName(params: URLSearchParams): string | undefined {
  const names = [...params.keys()];
  return names.find((name, index) => names.indexOf(name) !== index);
}

/** PKCE S256 (RFC 7636 §4.2): base64url(SHA-256(verifier)). */
const s256 = (verifier: string) => createHash("sha256").update(verifier).digest("base64url");

/** Constant-time comparison, so response timing does not reveal how much of a secret matched. */
function sameString(a: string, b: string): boolean {
  const [left, right] = [Buffer.from(a), Buffer.from(b)];
  return left.length === right.length && timingSafeEqual(left, right);
}

/**
 * Why a server-side fetch must not go to `hostname`, or undefined: every address it resolves to must be
 * public or loopback — never a private network, link-local, or reserved one (SSRF). Demo only: a production
 * server also pins the connection to the address it checked, so a second DNS answer cannot differ.
 */
async function fetchRefusal(hostname: string): Promise<string | undefined> {
  const bare = hostname.replace(/^\[|\]$/g, "");
  const addresses = isIP(bare)
    ? [bare]
    : await lookup(bare, { all: true }).then((found) => found.map((entry) => entry.address), () => undefined);
  if (!addresses) return `its host ${quote(hostname)} does not resolve`;
  const inside = addresses.find((address) => !isPublicOrLoopback(address));
  return inside && `its host resolves to a private or reserved address (${inside})`;
}

function isPublicOrLoopback(address: string): boolean {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(address)?.slice(1).map(Number);
  if (v4) {
    const [a, b, c] = v4;
    if (a === 127) return true;
    const inside = a === 0 || a === 10 || a >= 224 || (a === 100 && b >= 64 && b < 128) || (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) || (a === 192 && b === 0 && c === 0) ||
      (a === 198 && (b === 18 || b === 19));
    return !inside;
  }
  const v6 = address.toLowerCase();
  if (v6 === "::1") return true;
  // unspecified, unique-local fc00::/7, link-local fe80::/10, multicast, other IPv4-mapped or NAT64 forms
  return !(v6 === "::" || /^f[cd]/.test(v6) || /^fe[89ab]/.test(v6) || /^ff/.test(v6) || /^::ffff:|^64:ff9b:/.test(v6));
}

/** A response body up to `limit` bytes, or undefined past it (the rest is not read). */
async function readCapped(response: Response, limit: number): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.length;
    if (size > limit) return undefined; // leaving the loop cancels the stream
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** MCP headers carry non-ASCII values as =?base64?…?= (2026-07-28 transport); decode before comparing. */
function decodeHeaderValue(value: string | string[] | undefined): string | undefined {
  if (typeof value !== "string") return undefined;
  const encoded = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/.exec(value)?.[1];
  return encoded === undefined ? value : Buffer.from(encoded, "base64").toString("utf8");
}

// ─── The MCP App's documents ───────────
// The views the App section serves, as plain HTML with a short inline script each: no build step, and no
// external script or font, which a host's default Content-Security-Policy would block anyway.

const APP_MIME = "text/html;profile=mcp-app"; // the exact type MCP Apps hosts look for
const AUTH_BUTTON_APP_URI = "ui://lazy-auth/auth-button.html";
const SECRET_APP_URI = "ui://lazy-auth/secret.html";
/** A tool's link to its view; the flat key is the older spelling some hosts still read. */
const appMeta = (resourceUri: string) => ({ ui: { resourceUri }, "ui/resourceUri": resourceUri });

/** What both views share: the host's theme (else the system's), and three small helpers for their scripts. */
const VIEW_STYLE = `
  /* The host's theme when it names one (data-theme), else the system's: color-scheme picks light-dark(). */
  :root { color-scheme: light dark; font: 15px/1.4 system-ui, sans-serif; }
  :root[data-theme="light"] { color-scheme: light; }
  :root[data-theme="dark"] { color-scheme: dark; }
  body { margin: 0; padding: 12px; background: light-dark(#fff, #1f1f1f); color: light-dark(#1f1f1f, #ececec); }`;
const VIEW_SCRIPT = `"use strict";
const send = (message) => window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*");
function reportSize() { // how much room the view needs: sent once initialized, then on every change
  const box = document.documentElement.getBoundingClientRect();
  const size = { width: Math.ceil(box.width), height: Math.ceil(box.height) };
  send({ method: "ui/notifications/size-changed", params: size });
}
function followTheme(context) {
  const theme = context && context.theme;
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
}`;

const AUTH_BUTTON_APP = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Auth me</title>
<style>
${VIEW_STYLE}
  button { font: inherit; padding: 6px 14px; border-radius: 6px; cursor: pointer; color: inherit;
    border: 1px solid light-dark(#bbb, #555); background: light-dark(#f3f3f3, #2c2c2c); }
  #auth { background: light-dark(#2457d6, #4a78ee); border-color: transparent; color: #fff; }
  button:disabled { opacity: 0.6; cursor: default; }
  #answer { margin: 12px 0 0; overflow-wrap: anywhere; }
  #answer.error { color: light-dark(#b3261e, #ff8a80); }
</style></head>
<body>
<button id="auth" type="button" disabled>Auth me</button>
<button id="revoke" type="button" disabled>Revoke token</button>
<p id="answer" role="status"></p>
<script>
${VIEW_SCRIPT}
// The view side of MCP Apps (2026-01-26), by hand: JSON-RPC 2.0 with the host over postMessage.
const pending = new Map(); // request id → its promise; no timeout: the host may run a sign-in that takes minutes
let lastId = 0;
function request(method, params) {
  const id = ++lastId;
  send({ id: id, method: method, params: params });
  return new Promise((resolve, reject) => pending.set(id, { resolve: resolve, reject: reject }));
}
window.addEventListener("message", (event) => {
  const message = event.data;
  if (event.source !== window.parent || !message || message.jsonrpc !== "2.0") return; // only the host speaks
  if (message.method === undefined) { // an answer to one of our requests
    const waiting = pending.get(message.id);
    pending.delete(message.id);
    if (waiting && message.error) waiting.reject(new Error(message.error.message));
    else if (waiting) waiting.resolve(message.result);
  } else if (message.id !== undefined) { // the host's requests: teardown and ping want an empty answer
    const known = message.method === "ui/resource-teardown" || message.method === "ping";
    send(known ? { id: message.id, result: {} } : { id: message.id, error: { code: -32601, message: "Not found" } });
  } else if (message.method === "ui/notifications/host-context-changed") {
    followTheme(message.params);
  }
});
function show(text, isError) {
  const answer = document.getElementById("answer");
  answer.textContent = text; // always as text: a tool's answer is never HTML here
  answer.classList.toggle("error", isError);
}
const buttons = document.querySelectorAll("button");
async function callTool(name) {
  for (const button of buttons) button.disabled = true;
  show("Calling " + name + "…", false);
  try {
    const result = await request("tools/call", { name: name, arguments: {} });
    const first = (result.content || []).find((block) => block.type === "text");
    show(first ? first.text : "(no text in the answer)", result.isError === true);
  } catch (error) { // the host's call failed: the user abandoned the sign-in, the server is gone, …
    show(name + " failed: " + error.message, true);
  }
  for (const button of buttons) button.disabled = false;
}
document.getElementById("auth").onclick = () => callTool("get_secret");
document.getElementById("revoke").onclick = () => callTool("revoke_auth_token");
request("ui/initialize", {
  appInfo: { name: "lazy-auth-button", version: "1.0.0" },
  appCapabilities: {},
  protocolVersion: "2026-01-26",
}).then((result) => {
  followTheme(result.hostContext);
  send({ method: "ui/notifications/initialized", params: {} });
  for (const button of buttons) button.disabled = false;
  new ResizeObserver(reportSize).observe(document.documentElement);
}, (error) => show("The host did not start this view: " + error.message, true));
</script>
</body></html>
`;

const SECRET_APP = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Secret</title>
<style>
${VIEW_STYLE}
  #secret { margin: 0; overflow-wrap: anywhere; }
  #secret.waiting { opacity: 0.7; font-style: italic; }
  #secret.error { color: light-dark(#b3261e, #ff8a80); }
</style></head>
<body><p id="secret" class="waiting" role="status">Waiting for secret data…</p>
<script>
${VIEW_SCRIPT}
// The view side of MCP Apps (2026-01-26), by hand. Its one request is ui/initialize (id 1); the host then
// sends get_secret's result as a notification.
function show(text, className) {
  const secret = document.getElementById("secret");
  secret.textContent = text; // always as text: a tool's answer is never HTML here
  secret.className = className;
}
window.addEventListener("message", (event) => {
  const message = event.data;
  if (event.source !== window.parent || !message || message.jsonrpc !== "2.0") return; // only the host speaks
  if (message.id === 1 && message.method === undefined) { // the answer to ui/initialize
    if (message.error) return show("The host did not start this view: " + message.error.message, "error");
    followTheme(message.result.hostContext);
    send({ method: "ui/notifications/initialized", params: {} });
    new ResizeObserver(reportSize).observe(document.documentElement);
  } else if (message.id !== undefined) { // the host's requests: teardown and ping want an empty answer
    const known = message.method === "ui/resource-teardown" || message.method === "ping";
    send(known ? { id: message.id, result: {} } : { id: message.id, error: { code: -32601, message: "Not found" } });
  } else if (message.method === "ui/notifications/tool-result") {
    const first = (message.params.content || []).find((block) => block.type === "text");
    show(first ? first.text : "(no text in the result)", message.params.isError === true ? "error" : "");
  } else if (message.method === "ui/notifications/tool-cancelled") {
    show("The call was cancelled.", "error");
  } else if (message.method === "ui/notifications/host-context-changed") {
    followTheme(message.params);
  }
});
send({
  id: 1,
  method: "ui/initialize",
  params: {
    appInfo: { name: "lazy-auth-secret", version: "1.0.0" },
    appCapabilities: {},
    protocolVersion: "2026-01-26",
  },
});
</script>
</body></html>
`;

// Started directly (`tsx server.ts`, `node server.ts`, `deno run server.ts`, `bun server.ts`) rather than
// imported? Deno and Bun say so with import.meta.main; under Node, compare the script path with this module's.
const isEntryPoint = (import.meta as ImportMeta & { main?: boolean }).main ??
  process.argv[1] === fileURLToPath(import.meta.url);
if (isEntryPoint) {
  startServer({ logRequests: process.env.LOG_REQUESTS !== "0" }).then((running) => {
    console.log(landingText(process.env.PUBLIC_URL ?? running.url.replace("127.0.0.1", "localhost")));
    if (process.env.HOST && !process.env.PUBLIC_URL) {
      console.log(`HOST is ${process.env.HOST} but PUBLIC_URL is unset: only a loopback Host header is served`);
    }
    const stop = (signal: string) => {
      console.log(`${signal}: finishing the requests in flight (up to ${SHUTDOWN_GRACE_MS / 1000} s), then exiting`);
      void running.close().then(() => process.exit(0));
    };
    process.once("SIGINT", stop).once("SIGTERM", stop);
  }, (error: unknown) => {
    console.error(error instanceof ConfigError ? error.message : `Could not start: ${String(error)}`);
    process.exit(1);
  });
}
