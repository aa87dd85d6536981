/**
 * Lazy-auth MCP server: public tools answer without a token; protected tools answer `401` +
 * `WWW-Authenticate`, which sends the MCP host through discovery (RFC 9728, RFC 8414) and an OAuth 2.1
 * authorization-code + PKCE flow against the minimal mock authorization server below, in the same process.
 *
 * Reading map, top to bottom, in the order a request flows:
 *   config → events → token kinds → the single-use memory → /authorize and the consent page → /token →
 *   /register → discovery metadata → /mcp (the lazy-auth gate, then the tools) → routing, CORS, limits → start.
 * Then parts a reader may skip, each self-contained: the console trace, Client ID Metadata Documents (the
 * fetch fence), the 2026-07-28 transport checks, the MCP App, URL elicitation, and the shared helpers.
 *
 * Lifting PKCE and the single-use code into a tutorial: the /token section from `s256` to `exchangeCode`
 * is one run of functions; it needs `sign`/`verify` (token kinds) and a `SingleUseStore`, plus jose.
 *
 * Demo only: there is one fixed user, consent is one click on a form, and every token is an HS256 JWT
 * under one shared secret. A real authorization server signs the user in and signs with an asymmetric key.
 */
import {
  createServer,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import { request as httpsRequest } from "node:https";
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";
import process from "node:process";
import { clearTimeout, setImmediate, setTimeout } from "node:timers"; // node:timers: `.unref()` exists under Deno too
import { fileURLToPath } from "node:url";
import { decodeJwt, type JWTPayload, jwtVerify, SignJWT } from "jose";

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
  onEvent?: (event: LazyAuthEvent) => void; // everything that happens, as data (see Events)
  log?: (line: string) => void; // where the console trace writes; default stdout
  logRequests?: boolean; // one trace line per request; on at the command line unless LOG_REQUESTS=0
  elicitationWaitSeconds?: number; // how long elicit_url waits for an answer, then for the visit; default 60
  headersTimeoutMs?: number; // a client must send its headers within this; default 10 s
  requestTimeoutMs?: number; // ...and its whole request; default 10 s
  shutdownGraceMs?: number; // SHUTDOWN_GRACE_MS: close() lets requests in flight finish this long; default 8 s
  metadataTimeoutMs?: number; // one deadline over a client metadata document's whole load; default 3 s
  /** Test stand-in for the DNS lookup a metadata document's host needs; default the system's resolver. */
  resolveHost?: (hostname: string, signal: AbortSignal) => Promise<string[]>;
}

class ConfigError extends Error {}

const SHUTDOWN_GRACE_MS = 8_000; // inside the 10 s a container runtime waits after SIGTERM before SIGKILL

type Config = ReturnType<typeof readConfig>;

/** Options win over the environment; a bad value stops startup with one clear line. */
function readConfig(options: ServerOptions) {
  const env = process.env;
  const ttl = (name: string, fallback: number) => numberFrom(name, env[name], fallback, 1, 86400);
  const secret = options.jwtSecret ?? env.JWT_SECRET;
  if (secret !== undefined && Buffer.byteLength(secret) < 32) {
    throw new ConfigError("JWT_SECRET must be at least 32 bytes (try: openssl rand -hex 32)");
  }
  const publicUrl = options.publicUrl ?? env.PUBLIC_URL;
  const parsed = publicUrl === undefined ? undefined : parsePublicUrl(publicUrl);
  const host = options.host ?? env.HOST ?? "127.0.0.1"; // loopback: nobody else on the network can reach the demo
  return {
    port: options.port ?? numberFrom("PORT", env.PORT, 3097, 0, 65535),
    host,
    publicUrl: parsed,
    // Only a server nobody else can reach may fetch loopback URLs for a client: otherwise that is SSRF.
    loopbackOnly: isLoopbackHost(host) && (!parsed || isLoopbackHost(new URL(parsed.base).hostname)),
    basePath: options.basePath?.replace(/\/$/, ""),
    secret,
    accessTtl: options.accessTokenTtlSeconds ?? ttl("ACCESS_TOKEN_TTL_SECONDS", 30),
    refreshTtl: options.refreshTokenTtlSeconds ?? ttl("REFRESH_TOKEN_TTL_SECONDS", 300),
    reactive: options.reactiveAuthOnly ?? env.REACTIVE_AUTH_ONLY === "1",
    storeMaxEntries: options.storeMaxEntries ?? numberFrom("STORE_MAX_ENTRIES", env.STORE_MAX_ENTRIES, 100_000, 1, 1e8),
    logRequests: options.logRequests ?? false, // quiet when imported (tests, benchmarks); on at the command line
    elicitationWaitMs: (options.elicitationWaitSeconds ?? 60) * 1000,
    headersTimeoutMs: options.headersTimeoutMs ?? 10_000,
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    shutdownGraceMs: options.shutdownGraceMs ??
      numberFrom("SHUTDOWN_GRACE_MS", env.SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_MS, 0, 600_000),
    metadataTimeoutMs: options.metadataTimeoutMs ?? 3_000,
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
  return { base: `${url.origin}${path}`, host: url.host.toLowerCase(), path };
}

// ─── Events ──────────────────────────────
// Everything that happens is one typed event. The console trace (further down) is one reader of the
// stream; `onEvent` hands it to another (a test, the live flow page). No event carries a token, a code,
// a consent token, a secret or a whole client_id: a client is its name and a short label.

/** A client as a person can compare it: its name, and its metadata document's host and path or a fingerprint. */
export type ClientLabel = { name: string; id: string };

type EventBody =
  | {
    type: "request";
    method: string;
    path: string;
    rpc?: string; // on MCP endpoints: the JSON-RPC method, and the tool a tools/call names
    status?: number;
    bearer: boolean;
    agent: string;
    client?: ClientLabel;
  }
  | { type: "challenge"; path: string; tool: string; tokenSent: boolean }
  | { type: "client_registered"; client: ClientLabel }
  | { type: "consent_shown"; client: ClientLabel; resource: string }
  | { type: "consent_approved" | "consent_denied"; client: ClientLabel }
  | { type: "consent_refused"; reason: string }
  | {
    type: "code_exchanged" | "code_replayed" | "tokens_refreshed" | "refresh_reused";
    client: ClientLabel;
    session: string;
  }
  | { type: "session_revoked"; session: string; reason: string }
  | { type: "oauth_error"; path: string; status: number; error: string; description: string }
  | { type: "rpc_error"; path: string; status: number; code: number; message: string }
  | { type: "host_refused"; host: string }
  | { type: "metadata_document_refused"; url: string; reason: string }
  | { type: "store_unavailable"; detail: string }
  | { type: "elicitation_visited"; tool: string }
  | { type: "server_error"; method: string; path: string; detail: string }
  | { type: "notice"; message: string };

/** One event: what happened, and when (epoch milliseconds). `status` is absent when the client left first. */
export type LazyAuthEvent = EventBody & { at: number };

type Emit = (event: EventBody) => void;

/** Sessions appear in events by a short prefix: enough to follow one, and not an identifier to act on. */
const sessionLabel = (sid: string) => sid.slice(0, 8);

// ─── Token kinds ─────────────────────────
// Every token is a JWT under one key, so each kind gets its own `typ` header and is verified against
// exactly that `typ`: a refresh token or a code can never pass as an access token (RFC 8725 §3.11).

const TOKEN_TYPE = {
  access: "at+jwt", // RFC 9068 access token
  refresh: "refresh+jwt",
  code: "code+jwt", // the authorization request itself, signed: no server storage between steps
  consent: "consent+jwt", // the checked authorization request, waiting on the consent page for a click
  client: "client+jwt", // a dynamically registered client, signed (stateless DCR, see /register)
  elicitation: "elicitation+jwt", // a URL elicitation: the page's id, 2025 elicitationId and 2026 requestState
} as const;
type TokenKind = keyof typeof TOKEN_TYPE;

const CODE_TTL_SECONDS = 300;
const CONSENT_TTL_SECONDS = 600; // time for a person to read the page and click
const SCOPE = "mcp";
const USER = "demo-user"; // demo only: a real server signs a real user in before consent

const nowSeconds = () => Math.floor(Date.now() / 1000);
// Expiry rounds up: `exp` is whole seconds, and a token must live at least the expires_in it promises.
const secondsFromNow = (seconds: number) => Math.ceil(Date.now() / 1000) + seconds;
const randomId = () => randomUUID(); // 122 random bits; Node hands them out from a buffered pool, cheaply

/** What every endpoint needs, built once by createHandler and handed down: no closure holds the server. */
interface Context {
  config: Config;
  key: CryptoKey; // imported once: raw bytes would make jose import them again on every sign and verify
  store: SingleUseStore;
  emit: Emit;
  /** Set when the store forgets on restart: see `sign`. */
  memoryEpoch: string | undefined;
  documents: DocumentLoads; // Client ID Metadata Documents: the cache and the loads in flight
  elicitations: Map<string, (answer: Record<string, unknown>) => void>; // 2025 elicit_url streams, waiting
  requestEvents: boolean; // whether anyone listens for request events (the trace, or onEvent)
}

/** One HTTP request as a handler sees it: routing has found the base URL and read the body. */
interface HttpCall {
  req: IncomingMessage;
  res: ServerResponse;
  base: string; // the base URL links, issuers and audiences are built from
  path: string; // inside the mount: "/token", "/ttl/600/mcp", …
  query: URLSearchParams;
  body: string; // "" for a GET
  client?: ClientLabel; // set once a handler knows the client: the request event names it
  rpc?: string; // set by /mcp: what the request asked, for the request event
}

/** Signs a token of one kind. Kinds that lean on the single-use memory also carry the memory's epoch. */
function sign(ctx: Context, kind: TokenKind, issuer: string, claims: JWTPayload, ttlSeconds?: number) {
  // A memory that forgets on restart cannot vouch for tokens issued before it: a code spent before the
  // restart would be spendable again. So those tokens name this memory (`mem`) and count only here.
  // Registered clients are the exception: they hold no single-use state. A durable store (Redis) needs none.
  const epoch = ctx.memoryEpoch && kind !== "client" ? { mem: ctx.memoryEpoch } : {};
  const jwt = new SignJWT({ ...claims, ...epoch }).setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE[kind] })
    .setIssuer(issuer).setIssuedAt();
  return (ttlSeconds === undefined ? jwt : jwt.setExpirationTime(secondsFromNow(ttlSeconds))).sign(ctx.key);
}

/** Signature, `typ`, issuer, expiry, (when given) audience, and memory epoch — or undefined, never a throw. */
async function verify(ctx: Context, kind: TokenKind, token: string, issuer: string | undefined, audience?: string) {
  const checks = { algorithms: ["HS256"], typ: TOKEN_TYPE[kind], issuer, audience };
  const payload = await jwtVerify(token, ctx.key, checks).then((verified) => verified.payload, () => undefined);
  if (payload && ctx.memoryEpoch && kind !== "client" && payload.mem !== ctx.memoryEpoch) return undefined;
  return payload;
}

// ─── The single-use memory ───────────────
// Codes are spent once, refresh tokens rotate, revoked sessions stay revoked: that is state, and every
// instance must share it. Keys are IDs of tokens this server signed, so no record outlives its token.

export interface SingleUseStore {
  /** True when it remembers across restarts (Redis). A store that forgets makes older tokens invalid. */
  readonly durable: boolean;
  /** Records `id` as spent until `expiresAt` (epoch seconds); resolves true for the first caller only. */
  spendOnce(id: string, expiresAt: number): Promise<boolean>;
  /** Records `refreshJti` as session `sid`'s one current refresh token, until `expiresAt`. */
  startSession(sid: string, refreshJti: string, expiresAt: number): Promise<void>;
  /** Atomically moves session `sid` from `usedJti` to `nextJti`; false, changing nothing, if `usedJti` is stale. */
  rotateRefresh(sid: string, usedJti: string, nextJti: string): Promise<boolean>;
  /** Marks session `sid` revoked until `expiresAt`. Never refused: refusing would leave a leaked session alive. */
  revokeSession(sid: string, expiresAt: number): Promise<void>;
  isRevoked(sid: string): Promise<boolean>;
  /** Raises flag `key` until `expiresAt`: URL elicitation records a visited page this way. */
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
 * last five minutes, live sessions, revocations and visited elicitation pages. `maxEntries` caps them: past
 * it the store refuses new entries (503) instead of growing without bound.
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
    setWithExpiry(this.#revoked, sid, true, expiresAt); // past the cap too: a leaked session must end
    return Promise.resolve();
  }
  isRevoked(sid: string): Promise<boolean> {
    return Promise.resolve(this.#revoked.has(sid));
  }
  raiseFlag(key: string, expiresAt: number): Promise<void> {
    return this.#add(this.#flags, key, true, expiresAt);
  }
  takeFlag(key: string): Promise<boolean> {
    clearTimeout(this.#flags.get(key)?.timer);
    return Promise.resolve(this.#flags.delete(key));
  }

  #add<T>(map: Map<string, Entry<T>>, key: string, value: T, expiresAt: number): Promise<void> {
    if (this.size >= this.#maxEntries) return Promise.reject(new StoreUnavailable("the single-use memory is full"));
    setWithExpiry(map, key, value, expiresAt);
    return Promise.resolve();
  }
}

function setWithExpiry<T>(map: Map<string, Entry<T>>, key: string, value: T, expiresAt: number) {
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

/** Ends a session: every token carrying `sid` stops working (checked on each use) until `until`. */
async function revokeSession(ctx: Context, sid: string, until: number, reason: string) {
  await ctx.store.revokeSession(sid, until);
  ctx.emit({ type: "session_revoked", session: sessionLabel(sid), reason });
}

// ─── /authorize and the consent page ─────
// A page for a person, not an API: it carries no CORS headers, so a page on another origin can read
// neither the consent page nor the redirect that follows. Until client and redirect_uri are trusted, every
// error is a 400 shown here, never a redirect (RFC 6749 §4.1.2.1): an unchecked redirect is an open one.

/** The authorization server's identifier (RFC 8414 §2); in reactive mode on a sub-path of its own. */
const issuerOf = (ctx: Context, base: string) => (ctx.config.reactive ? `${base}/oauth` : base);

type Client = { name: string; redirectUris: string[]; label: ClientLabel };
/** An OAuth error as data (RFC 6749 §5.2): checks return one, and the handler answers it with oauthError. */
type OAuthFailure = { error: string; description: string };
type AuthorizationRequest = {
  client_id: string;
  client_name: string;
  redirect_uri: string;
  scope: string;
  resource: string;
  code_challenge: string;
  state?: string;
};

/** GET: check the whole authorization request, then show the consent page. Nothing here approves. */
async function authorize(ctx: Context, call: HttpCall) {
  const checked = await checkAuthorizationRequest(ctx, call);
  if ("error" in checked) return oauthError(ctx, call, 400, checked.error, checked.description);
  const { request, client } = checked;
  // The checked request waits on the page, signed, for the person's click: the POST trusts nothing else.
  // Its jti becomes the code's, so one consent yields at most one usable code (see /token).
  const claims = { ...request, jti: randomId() };
  const consent = await sign(ctx, "consent", issuerOf(ctx, call.base), claims, CONSENT_TTL_SECONDS);
  ctx.emit({ type: "consent_shown", client: client.label, resource: request.resource });
  const page = consentPage(request, client.label, `${call.base}/authorize`, consent);
  // No framing: a page that approves in one click must not sit invisibly under another site's button.
  const noFraming = { "x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'" };
  send(call.res, 200, "text/html; charset=utf-8", page, { "cache-control": "no-store", ...noFraming });
}

async function checkAuthorizationRequest(
  ctx: Context,
  call: HttpCall,
): Promise<{ request: AuthorizationRequest; client: Client } | OAuthFailure> {
  const param = (name: string) => call.query.get(name) ?? undefined;
  const repeated = repeatedName(call.query);
  if (repeated) return { error: "invalid_request", description: `${quoteInput(repeated)} is repeated` };
  const clientId = param("client_id");
  if (!clientId) return { error: "invalid_request", description: "client_id is required" };
  const client = await identifyClient(ctx, clientId);
  if ("error" in client) return client;
  call.client = client.label;

  // redirect_uri: required, https or loopback http, no fragment (OAuth 2.1 §2.3.1, RFC 8252 §7.3), and
  // one the client registered or listed in its metadata document (RFC 9700 §4.1.3: exact matching).
  const redirectUri = param("redirect_uri") ?? "";
  const problem = redirectUriProblem(redirectUri);
  if (problem) return { error: "invalid_request", description: problem };
  if (!client.redirectUris.some((listed) => redirectUriMatches(listed, redirectUri))) {
    return { error: "invalid_request", description: "redirect_uri is not one this client registered" };
  }

  // Only the authorization-code flow exists here (OAuth 2.1 §4.1.1: the implicit flow is gone).
  if (param("response_type") !== "code") {
    return { error: "unsupported_response_type", description: "response_type must be code" };
  }

  // PKCE is mandatory, S256 only (OAuth 2.1 §4.1.1, RFC 7636 §4.2): a code issued without a challenge
  // could be redeemed by whoever intercepts it; `plain` would hand the verifier to that same person.
  const challenge = param("code_challenge");
  if (param("code_challenge_method") !== "S256") {
    return { error: "invalid_request", description: "code_challenge_method must be S256 (PKCE is required)" };
  }
  if (!challenge || !/^[A-Za-z0-9_-]{43}$/.test(challenge)) {
    return { error: "invalid_request", description: "code_challenge must be 43 base64url characters" };
  }

  // RFC 8707 §2: the resource the token will be for; unnamed, it is the default MCP endpoint.
  const resource = param("resource") ?? `${call.base}/mcp`;
  if (resourceTtl(ctx.config, resource, call.base) === undefined) {
    const description = `resource must be ${call.base}/mcp or ${call.base}/ttl/<1-86400>/mcp`;
    return { error: "invalid_target", description };
  }
  const scope = param("scope") ?? SCOPE;
  if (scope.split(" ").some((asked) => asked !== SCOPE)) {
    return { error: "invalid_scope", description: `the only scope is "${SCOPE}"` };
  }
  const state = param("state");
  const request = { client_id: clientId, client_name: client.name, redirect_uri: redirectUri, scope, resource };
  return { request: { ...request, code_challenge: challenge, ...(state !== undefined && { state }) }, client };
}

/** A client is a signed DCR client_id (redirect URIs inside) or a metadata-document URL; else a failure. */
async function identifyClient(ctx: Context, clientId: string): Promise<Client | OAuthFailure> {
  // Shown on the page and written to the log: a line break or a bidi override could disguise it.
  if (hasUnsafeCharacters(clientId)) {
    return { error: "invalid_client", description: "client_id must be plain text (no control or bidi characters)" };
  }
  if (URL.canParse(clientId)) {
    const client = await loadClientDocument(ctx, clientId); // see Client ID Metadata Documents
    return client ?? { error: "invalid_client", description: "the client's metadata document could not be used" };
  }
  const registered = await verify(ctx, "client", clientId, undefined); // any issuer: the key alone proves it is ours
  const uris = registered?.redirect_uris;
  if (!Array.isArray(uris)) {
    const description = "client_id must be registered at /register or be a Client ID Metadata Document URL";
    return { error: "invalid_client", description };
  }
  const label = clientLabel(clientId);
  return { name: label.name, redirectUris: uris.filter((uri) => typeof uri === "string"), label };
}

/**
 * How a client appears on the consent page and in events. A metadata document's URL is its own short id;
 * a registered client_id is a few hundred characters of JWT, so a person compares a fingerprint instead.
 */
function clientLabel(clientId: string, documentName?: string): ClientLabel {
  if (URL.canParse(clientId)) {
    const url = new URL(clientId);
    const id = `${url.host}${url.pathname}`;
    return { name: documentName ?? id, id };
  }
  const fingerprint = createHash("sha256").update(clientId).digest("hex").slice(0, 8); // hex: easy to read aloud
  let name: unknown;
  try {
    name = decodeJwt(clientId).client_name; // only ever called on a client_id this server signed
  } catch {
    name = undefined;
  }
  return { name: typeof name === "string" ? name : "a registered client", id: `registered:${fingerprint}` };
}

/** The consent page: a form whose buttons POST the signed request back, so it works without JavaScript. */
function consentPage(request: AuthorizationRequest, client: ClientLabel, action: string, consent: string) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Authorize access</title>
<style>
body { font: 16px system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem }
dd { margin: 0 0 .8rem; overflow-wrap: anywhere }
details { font-size: .85rem; color: #555 }
.demo { background: #fff8e1; border: 1px solid #f0c36d; border-radius: .4rem; padding: .5rem .8rem }
button { font: inherit; padding: .6rem 1.4rem; margin-right: .6rem; border-radius: .4rem; border: 1px solid #1a56db }
#approve { background: #1a56db; color: #fff } #deny { background: #fff; color: #1a56db }
</style></head>
<body><h1>Authorize access?</h1>
<p><strong>${escapeHtml(client.name)}</strong> asks to act as <strong>${USER}</strong> on this MCP server.</p>
<p class="demo">This demo has no sign-in: you approve as ${USER}.</p>
<form method="post" action="${escapeHtml(action)}"><input type="hidden" name="consent" value="${escapeHtml(consent)}">
<button type="submit" name="decision" value="approve" id="approve">Approve</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button></form>
<dl><dt>Client</dt><dd>${escapeHtml(client.id)}
<details><summary>Full client_id</summary>${escapeHtml(request.client_id)}</details></dd>
<dt>Scope</dt><dd>${escapeHtml(request.scope)}</dd>
<dt>Redirect</dt><dd>${escapeHtml(request.redirect_uri)}</dd>
<dt>Resource</dt><dd>${escapeHtml(request.resource)}</dd></dl>
</body></html>`;
}

/**
 * POST: the consent page's form. Approve or Deny → 303 back to the client (RFC 9700 §4.12: never 307,
 * which would replay this form body to the client). Demo only: the fixed user approves with one click;
 * a real server signs the user in first, and binds the consent to that browser session.
 */
async function approveOrDeny(ctx: Context, call: HttpCall) {
  // Cross-site requests are refused: a page elsewhere could submit this form, though never read it.
  // Browsers send Sec-Fetch-Site and Origin on a form POST; tools such as curl send neither.
  const site = call.req.headers["sec-fetch-site"];
  const origin = call.req.headers.origin;
  if (
    (site !== undefined && site !== "same-origin") || (origin !== undefined && origin !== new URL(call.base).origin)
  ) {
    ctx.emit({ type: "consent_refused", reason: `a cross-site POST from ${quoteInput(origin ?? site)}` });
    return oauthError(ctx, call, 403, "invalid_request", "consent comes from this server's page");
  }
  if (!isForm(call.req.headers["content-type"])) {
    return oauthError(ctx, call, 400, "invalid_request", "the consent form is application/x-www-form-urlencoded");
  }
  const form = new URLSearchParams(call.body);
  const repeated = repeatedName(form);
  if (repeated) return oauthError(ctx, call, 400, "invalid_request", `${quoteInput(repeated)} is repeated`);
  const consent = await verify(ctx, "consent", form.get("consent") ?? "", issuerOf(ctx, call.base));
  if (!consent?.jti || typeof consent.client_id !== "string") {
    return oauthError(ctx, call, 400, "invalid_request", "the consent is invalid or expired: start again");
  }
  const decision = form.get("decision");
  if (decision !== "approve" && decision !== "deny") {
    return oauthError(ctx, call, 400, "invalid_request", "decision must be approve or deny");
  }
  call.client = clientLabel(consent.client_id, String(consent.client_name));
  if (decision === "deny") {
    ctx.emit({ type: "consent_denied", client: call.client });
    return redirectBack(ctx, call, consent, { error: "access_denied", error_description: "The user denied access" });
  }
  // The code is the checked request itself, signed. Its jti is the consent's: the same consent POSTed
  // twice gives two codes with one jti, and the second exchange is a replay of the first (see /token).
  const { client_id, redirect_uri, code_challenge, scope, resource, jti } = consent;
  const request = { client_id, redirect_uri, code_challenge, scope, resource, jti };
  const code = await sign(ctx, "code", issuerOf(ctx, call.base), request, CODE_TTL_SECONDS);
  ctx.emit({ type: "consent_approved", client: call.client });
  redirectBack(ctx, call, consent, { code });
}

/** 303 to the client's redirect_uri with the answer, its state, and `iss` (RFC 9207: against mix-up attacks). */
function redirectBack(ctx: Context, call: HttpCall, consent: JWTPayload, answer: Record<string, string>) {
  const target = new URL(String(consent.redirect_uri));
  const state = typeof consent.state === "string" ? { state: consent.state } : {};
  for (const [name, value] of Object.entries({ ...answer, ...state, iss: issuerOf(ctx, call.base) })) {
    target.searchParams.set(name, value);
  }
  call.res.writeHead(303, { location: target.href }).end();
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

function isLoopbackHost(hostname: string): boolean {
  return /^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)$/.test(hostname);
}

// ─── /token ──────────────────────────────
// Every answer carries Cache-Control: no-store (RFC 6749 §5.1; routing sets it, so that 405 and 413 have
// it too); every error is {error, error_description}.

/**
 * RFC 8707 §2: `resource` names what a token is for. This server has one MCP resource per token lifetime:
 * `<base>/mcp` and `<base>/ttl/<seconds>/mcp`. Returns the access-token lifetime for it, or undefined.
 */
function resourceTtl(config: Config, resource: string, base: string): number | undefined {
  return resource.startsWith(`${base}/`) ? mcpPathTtl(config, resource.slice(base.length)) : undefined;
}
/** The access-token lifetime of an MCP endpoint's path, or undefined when the path is not one. */
function mcpPathTtl(config: Config, path: string): number | undefined {
  if (path === "/mcp") return config.accessTtl;
  const seconds = Number(/^\/ttl\/([1-9]\d{0,4})\/mcp$/.exec(path)?.[1]);
  return seconds <= 86400 ? seconds : undefined; // NaN (no match) is not <= anything
}

/**
 * A session starts at the code exchange. Its refresh tokens live `refreshTtl` from then (rotation never
 * extends it), and no token of it outlives its span: the longer of that and the resource's access lifetime.
 */
const sessionSpan = (config: Config, resource: string, base: string) =>
  Math.max(config.refreshTtl, resourceTtl(config, resource, base) ?? config.accessTtl);

function tokenEndpoint(ctx: Context, call: HttpCall) {
  const params = parseTokenRequest(call.req.headers["content-type"], call.body);
  if (typeof params === "string") return oauthError(ctx, call, 400, "invalid_request", params);
  const grantType = params.grant_type;
  if (!grantType) return oauthError(ctx, call, 400, "invalid_request", "grant_type is required");
  if (grantType === "authorization_code") return exchangeCode(ctx, call, params);
  if (grantType === "refresh_token") return refreshGrant(ctx, call, params);
  return oauthError(ctx, call, 400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token");
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
  if (!isForm(contentType)) return "Content-Type must be application/x-www-form-urlencoded";
  const form = new URLSearchParams(body);
  const repeated = repeatedName(form);
  return repeated ? `${quoteInput(repeated)} is repeated` : Object.fromEntries(form);
}

/** PKCE S256 (RFC 7636 §4.2): base64url(SHA-256(verifier)). */
function s256(verifier: string): string {
  return createHash("sha256").update(verifier).digest("base64url");
}

/** Constant-time comparison, so response timing does not reveal how much of a secret matched. */
function sameString(a: string, b: string): boolean {
  const [left, right] = [Buffer.from(a), Buffer.from(b)];
  return left.length === right.length && timingSafeEqual(left, right);
}

/** The authorization_code grant (RFC 6749 §4.1.3, OAuth 2.1 §4.1.3): a code, once, by its client, with PKCE. */
async function exchangeCode(ctx: Context, call: HttpCall, params: Record<string, string>) {
  if (!params.code) return oauthError(ctx, call, 400, "invalid_request", "code is required");
  if (!params.client_id) return oauthError(ctx, call, 400, "invalid_request", "client_id is required");
  const code = await verify(ctx, "code", params.code, issuerOf(ctx, call.base));
  const { jti, exp, resource, client_id: clientId } = code ?? {};
  if (!jti || typeof exp !== "number" || typeof resource !== "string" || typeof clientId !== "string") {
    return oauthError(ctx, call, 400, "invalid_grant", "code is invalid or expired");
  }
  call.client = clientLabel(clientId);

  // Single use (RFC 6749 §4.1.2): the first redemption attempt spends the code, whatever its outcome.
  // A second one means the code leaked, so the session the first one started is revoked too. The
  // session id *is* the code's jti, reserved at this instant: a replay racing the first exchange
  // still revokes the tokens that exchange is about to mint.
  const sid = jti;
  if (!(await ctx.store.spendOnce(jti, exp))) {
    ctx.emit({ type: "code_replayed", client: call.client, session: sessionLabel(sid) });
    const until = secondsFromNow(sessionSpan(ctx.config, resource, call.base));
    await revokeSession(ctx, sid, until, "authorization code replayed");
    return oauthError(ctx, call, 400, "invalid_grant", "code was already used; its session is revoked");
  }

  // The code is bound to the client it was issued to (RFC 6749 §4.1.3).
  if (params.client_id !== clientId) {
    return oauthError(ctx, call, 400, "invalid_grant", "code was issued to another client");
  }

  // PKCE (RFC 7636 §4.1, §4.6): the verifier is 43–128 unreserved characters whose SHA-256 is the challenge.
  const verifier = params.code_verifier ?? "";
  if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) {
    const description = "code_verifier is required: 43-128 characters of [A-Za-z0-9-._~]";
    return oauthError(ctx, call, 400, "invalid_grant", description);
  }
  if (typeof code?.code_challenge !== "string" || !sameString(s256(verifier), code.code_challenge)) {
    return oauthError(ctx, call, 400, "invalid_grant", "code_verifier does not match the code_challenge");
  }

  // redirect_uri, when sent, must be the one the code was issued for (RFC 6749 §4.1.3). OAuth 2.1
  // clients may leave it out: PKCE already binds the code to whoever started the flow.
  if (params.redirect_uri !== undefined && params.redirect_uri !== code.redirect_uri) {
    return oauthError(ctx, call, 400, "invalid_grant", "redirect_uri does not match the authorization request");
  }
  // RFC 8707 §2.2: a resource named here must be the one the user consented to.
  if (params.resource !== undefined && params.resource !== resource) {
    return oauthError(ctx, call, 400, "invalid_target", `resource must be ${resource}, as authorized`);
  }

  ctx.emit({ type: "code_exchanged", client: call.client, session: sessionLabel(sid) });
  const session = { sid, client_id: clientId, scope: SCOPE, resource };
  const sessionEnd = secondsFromNow(sessionSpan(ctx.config, resource, call.base));
  return issueTokens(ctx, call, session, sessionEnd);
}

/**
 * The refresh_token grant. Refresh tokens rotate on every use; a spent one presented again means it
 * leaked, so the whole session goes (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2). The store keeps one record per
 * session, its current refresh token, so a long chain of rotations costs no more memory than one sign-in.
 */
async function refreshGrant(ctx: Context, call: HttpCall, params: Record<string, string>) {
  if (!params.refresh_token) return oauthError(ctx, call, 400, "invalid_request", "refresh_token is required");
  if (!params.client_id) return oauthError(ctx, call, 400, "invalid_request", "client_id is required");
  const old = await verify(ctx, "refresh", params.refresh_token, issuerOf(ctx, call.base));
  const { jti, sid, exp, resource, session_end: sessionEnd, client_id: clientId } = old ?? {};
  const valid = jti && typeof sid === "string" && typeof exp === "number" && typeof resource === "string" &&
    typeof sessionEnd === "number" && typeof clientId === "string";
  if (!valid) return oauthError(ctx, call, 400, "invalid_grant", "refresh_token is invalid or expired");
  call.client = clientLabel(clientId);
  if (params.client_id !== clientId) {
    return oauthError(ctx, call, 400, "invalid_grant", "refresh_token was issued to another client");
  }
  if (await ctx.store.isRevoked(sid)) return oauthError(ctx, call, 400, "invalid_grant", "the session was revoked");
  if (params.resource !== undefined && params.resource !== resource) {
    return oauthError(ctx, call, 400, "invalid_target", `resource must be ${resource}, as authorized`);
  }
  const nextJti = randomId();
  if (!(await ctx.store.rotateRefresh(sid, jti, nextJti))) {
    ctx.emit({ type: "refresh_reused", client: call.client, session: sessionLabel(sid) });
    await revokeSession(ctx, sid, sessionEnd, "refresh token reused");
    return oauthError(ctx, call, 400, "invalid_grant", "refresh_token was already used; its session is revoked");
  }
  ctx.emit({ type: "tokens_refreshed", client: call.client, session: sessionLabel(sid) });
  const session = { sid, client_id: clientId, scope: SCOPE, resource };
  return issueTokens(ctx, call, session, sessionEnd, { jti: nextJti, exp });
}

/**
 * An RFC 9068 access token for the session's resource, plus the session's one current refresh token.
 * A new session (no `rotated`) records its refresh token in the store until the refresh lifetime ends;
 * no access token outlives the session's end, so a revocation that lasts until then ends them all.
 */
async function issueTokens(
  ctx: Context,
  call: HttpCall,
  session: { sid: string; client_id: string; scope: string; resource: string },
  sessionEnd: number,
  rotated?: { jti: string; exp: number }, // a rotation has recorded its refresh jti already
) {
  const { resource, ...claims } = session;
  const refresh = rotated ?? { jti: randomId(), exp: secondsFromNow(ctx.config.refreshTtl) };
  if (!rotated) await ctx.store.startSession(session.sid, refresh.jti, refresh.exp);
  const accessTtl = resourceTtl(ctx.config, resource, call.base) ?? ctx.config.accessTtl;
  const expiresIn = Math.min(accessTtl, sessionEnd - secondsFromNow(0));
  const issuer = issuerOf(ctx, call.base);
  const [accessToken, refreshToken] = await Promise.all([ // independent signatures: let them overlap
    sign(ctx, "access", issuer, { sub: USER, aud: resource, jti: randomId(), ...claims }, expiresIn),
    sign(ctx, "refresh", issuer, { ...session, ...refresh, session_end: sessionEnd }),
  ]);
  sendJson(call.res, 200, {
    access_token: accessToken,
    token_type: "Bearer",
    expires_in: expiresIn,
    refresh_token: refreshToken,
    scope: session.scope,
  });
}

// ─── /register ───────────────────────────
// Stateless dynamic client registration (RFC 7591): the client_id returned is itself a signed token
// carrying the registered redirect URIs, so /authorize can hold a client to them with nothing stored.
// MCP 2026-07-28 prefers Client ID Metadata Documents; this stays as the path for hosts that register.

/**
 * The client metadata rules /register and metadata documents share (RFC 7591 §2): redirect URIs that
 * pass the redirect_uri rules, a plain-text name, a public client, the code flow only.
 */
function checkClientMetadata(metadata: unknown): { name?: string; redirectUris: string[] } | OAuthFailure {
  if (!isObject(metadata)) return { error: "invalid_client_metadata", description: "it must be a JSON object" };
  const { redirect_uris: uris, client_name: name } = metadata;
  if (!Array.isArray(uris) || uris.length === 0 || !uris.every((uri) => typeof uri === "string")) {
    return { error: "invalid_redirect_uri", description: "redirect_uris must be a non-empty array of URLs" };
  }
  const problem = uris.map(redirectUriProblem).find((found) => found !== undefined);
  if (problem) return { error: "invalid_redirect_uri", description: problem };
  // The name is shown on the consent page and written to the log: plain text only, nothing that could
  // start a line or reverse the text around it.
  if (name !== undefined && (typeof name !== "string" || name.length > 200 || hasUnsafeCharacters(name))) {
    return {
      error: "invalid_client_metadata",
      description: "client_name must be plain text of at most 200 characters",
    };
  }
  if (metadata.token_endpoint_auth_method !== undefined && metadata.token_endpoint_auth_method !== "none") {
    return { error: "invalid_client_metadata", description: "only public clients (auth method none) are supported" };
  }
  const codeFlowOnly = isSubset(metadata.grant_types, ["authorization_code", "refresh_token"]) &&
    isSubset(metadata.response_types, ["code"]);
  if (!codeFlowOnly) {
    return { error: "invalid_client_metadata", description: "only the code flow: grant_types and response_types" };
  }
  return { name, redirectUris: uris };
}

/** Absent, or an array holding only allowed strings. */
function isSubset(value: unknown, allowed: string[]): boolean {
  return value === undefined || (Array.isArray(value) && value.every((item) => allowed.includes(item)));
}

async function register(ctx: Context, call: HttpCall) {
  if (!isJson(call.req.headers["content-type"])) {
    return oauthError(ctx, call, 415, "invalid_client_metadata", "send the client metadata as application/json");
  }
  const metadata = parseJson(call.body);
  const checked = checkClientMetadata(metadata);
  if ("error" in checked) return oauthError(ctx, call, 400, checked.error, checked.description);
  const { name, redirectUris: uris } = checked;
  // application_type (OpenID DCR §2, as MCP 2026-07-28 asks): web clients redirect to https sites;
  // native clients to the loopback interface, where they listen on a port of the moment (RFC 8252 §7.3).
  // Unstated, a client whose redirect URIs are all loopback is taken for a desktop app: native.
  const stated = isObject(metadata) ? metadata.application_type : undefined;
  const appType = stated !== undefined
    ? stated
    : (uris.every((uri) => isLoopbackHost(new URL(uri).hostname)) ? "native" : "web");
  if (appType !== "web" && appType !== "native") {
    return oauthError(ctx, call, 400, "invalid_client_metadata", "application_type must be web or native");
  }
  if (appType === "web" && uris.some((uri) => new URL(uri).protocol !== "https:")) {
    return oauthError(ctx, call, 400, "invalid_redirect_uri", "a web client's redirect_uris must be https");
  }
  const client = { redirect_uris: uris, application_type: appType, ...(name !== undefined && { client_name: name }) };
  const clientId = await sign(ctx, "client", issuerOf(ctx, call.base), client);
  call.client = clientLabel(clientId);
  ctx.emit({ type: "client_registered", client: call.client });
  sendJson(call.res, 201, {
    client_id: clientId,
    client_id_issued_at: nowSeconds(),
    ...client,
    token_endpoint_auth_method: "none",
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
  });
}

// ─── Discovery metadata ──────────────────
// REACTIVE_AUTH_ONLY: no well-known document a host probes on connect names an authorization server; only
// the 401's resource_metadata, outside /.well-known/, leads to one, so OAuth starts at the first protected call.

/** RFC 8414 §2: where the endpoints are and what this authorization server insists on. */
function authorizationServerMetadata(ctx: Context, call: HttpCall) {
  const base = call.base;
  sendJson(call.res, 200, {
    issuer: issuerOf(ctx, base),
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
function protectedResourceMetadata(ctx: Context, call: HttpCall, resourcePath: string, namesIssuer: boolean) {
  sendJson(call.res, 200, {
    resource: `${call.base}${resourcePath || "/mcp"}`,
    ...(namesIssuer && { authorization_servers: [issuerOf(ctx, call.base)] }),
    scopes_supported: [SCOPE],
    bearer_methods_supported: ["header"],
  });
}

/** Where a 401 sends the host for discovery (RFC 9728 §5.1): the resource's metadata. */
function resourceMetadataUrl(ctx: Context, base: string, mcpPath: string): string {
  // Reactive mode keeps it outside /.well-known/, where hosts probe on their own: only a 401 leads there.
  return ctx.config.reactive
    ? `${base}/oauth/protected-resource${mcpPath}`
    : `${base}/.well-known/oauth-protected-resource${mcpPath}`;
}

// ─── /mcp ────────────────────────────────
// MCP Streamable HTTP with JSON responses and no sessions: every POST stands alone. `/ttl/<s>/mcp` is the
// same endpoint as a resource of its own, whose tokens live <s> seconds (RFC 8707 resource indicators).

const PROTECTED_TOOLS = new Set(["get_secret", "revoke_auth_token"]);
type Caller = { claims?: JWTPayload; tokenSent: boolean };

/**
 * The lazy-auth gate. It reads the JSON-RPC body — the method and the tool name — because that is what
 * will run: only a protected tool asks for a token, so discovery and public tools stay open. Returns the
 * caller, or undefined once it has answered 401.
 */
async function lazyAuthGate(ctx: Context, call: HttpCall, request: RpcRequest): Promise<Caller | undefined> {
  if (request.method !== "tools/call") return { tokenSent: false };
  const caller = await authenticate(ctx, call);
  const tool = request.params.name;
  if (caller.claims || typeof tool !== "string" || !PROTECTED_TOOLS.has(tool)) return caller;
  // RFC 9728 §5.1: the challenge names where discovery starts; RFC 6750 §3: invalid_token when a
  // token was sent but did not count.
  const challenge = [`resource_metadata="${resourceMetadataUrl(ctx, call.base, call.path)}"`, `scope="${SCOPE}"`];
  if (caller.tokenSent) {
    challenge.push(`error="invalid_token"`, `error_description="The access token is invalid, expired or revoked"`);
  }
  ctx.emit({ type: "challenge", path: call.path, tool, tokenSent: caller.tokenSent });
  const headers = { "www-authenticate": `Bearer ${challenge.join(", ")}` };
  rpcError(ctx, call, { status: 401, id: request.id, code: -32001, message: "Authentication required", headers });
  return undefined;
}

/** An access token counts only if signature, typ, issuer, audience (this resource), expiry and session check out. */
async function authenticate(ctx: Context, call: HttpCall): Promise<Caller> {
  const header = call.req.headers.authorization;
  if (header === undefined) return { tokenSent: false };
  const bearer = /^Bearer +([\w.~+/-]+=*) *$/i.exec(header)?.[1]; // RFC 6750 §2.1
  const resource = `${call.base}${call.path}`;
  const claims = bearer ? await verify(ctx, "access", bearer, issuerOf(ctx, call.base), resource) : undefined;
  if (!claims || typeof claims.sid !== "string" || (await ctx.store.isRevoked(claims.sid))) return { tokenSent: true };
  call.client = clientLabel(String(claims.client_id));
  return { claims, tokenSent: true };
}

/** The 2025 handshake era (2025-03-26 to 2025-11-25), or the stateless 2026-07-28 era: chosen per request. */
type Era = "2025" | "2026-07-28";
type RpcRequest = { id: string | number | undefined; method: string; params: Record<string, unknown> };
type Rejection = { code: number; message: string; data?: unknown };
type Outcome = { result: Record<string, unknown> } | { error: Rejection; status?: number } | { streamed: true };

async function mcp(ctx: Context, call: HttpCall) {
  const request = readRpcRequest(ctx, call);
  if (!request) return; // answered already: an error, or 202 for a notification
  const { id, params } = request;
  const tool = typeof params.name === "string" ? ` ${params.name.slice(0, 60)}` : "";
  call.rpc = `${request.method.slice(0, 60)}${request.method === "tools/call" ? tool : ""}`;
  // MCP 2026-07-28 requests name their version in params._meta (and the MCP-Protocol-Version header);
  // anything else is served as the 2025 handshake era, unchanged.
  const meta = isObject(params._meta) ? params._meta : {};
  const era: Era = meta[META_VERSION] !== undefined || call.req.headers["mcp-protocol-version"] === MODERN_VERSION
    ? "2026-07-28"
    : "2025";
  const rejection = era === "2026-07-28"
    ? checkModernRequest(call.req, request, meta)
    : checkHandshakeRequest(call.req);
  if (rejection) return rpcError(ctx, call, { status: 400, id, ...rejection });

  const caller = await lazyAuthGate(ctx, call, request);
  if (!caller) return;
  const outcome = await dispatch(ctx, call, request, caller, era);
  if ("streamed" in outcome) return;
  if ("error" in outcome) {
    const status = outcome.status ?? (era === "2026-07-28" && outcome.error.code === -32601 ? 404 : 200);
    return rpcError(ctx, call, { status, id, ...outcome.error });
  }
  const resultType = era === "2026-07-28" && !("resultType" in outcome.result) ? { resultType: "complete" } : {};
  sendJson(call.res, 200, { jsonrpc: "2.0", id, result: { ...resultType, ...outcome.result } });
}

/** One JSON-RPC 2.0 request from the body; anything else is answered here (an error, or 202) → undefined. */
function readRpcRequest(ctx: Context, call: HttpCall): RpcRequest | undefined {
  if (!isJson(call.req.headers["content-type"])) {
    return invalid(ctx, call, 415, -32600, "Content-Type must be application/json");
  }
  const message = parseJson(call.body);
  if (message === undefined) return invalid(ctx, call, 400, -32700, "Parse error: the body is not JSON");
  if (!isObject(message) || message.jsonrpc !== "2.0") {
    return invalid(ctx, call, 400, -32600, "Invalid Request: expected one JSON-RPC 2.0 message");
  }
  const { id, method } = message;
  const badId = id !== undefined && typeof id !== "string" && !Number.isFinite(id); // 1e400 parses to Infinity
  if (badId) return invalid(ctx, call, 400, -32600, "Invalid Request: id must be a string or a number");
  // Notifications, and a client's answers to server requests, are accepted with no body (202); an answer
  // that a 2025 elicit_url stream waits for is handed over.
  const isAnswer = method === undefined && id !== undefined && ("result" in message || "error" in message);
  if (isAnswer) ctx.elicitations.get(String(id))?.(message);
  if (isAnswer || (typeof method === "string" && id === undefined)) return void call.res.writeHead(202).end();
  if (typeof method !== "string") return invalid(ctx, call, 400, -32600, "Invalid Request: method must be a string");
  const params = message.params ?? {};
  if (!isObject(params)) {
    return void rpcError(ctx, call, {
      status: 400,
      id,
      code: -32602,
      message: "Invalid params: params must be an object",
    });
  }
  return { id: id as string | number | undefined, method, params };
}

/** A request that is not one JSON-RPC request: answered here, with no id to echo. */
function invalid(ctx: Context, call: HttpCall, status: number, code: number, message: string): undefined {
  rpcError(ctx, call, { status, code, message });
  return undefined;
}

const HANDSHAKE_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26"];
const MODERN_VERSION = "2026-07-28";
const ALL_VERSIONS = [MODERN_VERSION, ...HANDSHAKE_VERSIONS];
const META_VERSION = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";
const SERVER_INFO = { name: "lazy-auth-example", version: "0.1.0" };
const CAPABILITIES = { tools: {}, resources: {} }; // resources: the MCP App's views are read as resources
const INSTRUCTIONS = "whoami, show_auth_button, elicit_url and elicit_by_error are public. get_secret and " +
  "revoke_auth_token need you to sign in: calling one starts OAuth.";
const SECRET = "lazy auth works"; // what get_secret guards

// Two tools render an MCP App view (the MCP App section serves them): a tool names its view's URI.
const AUTH_BUTTON_VIEW_URI = "ui://lazy-auth/auth-button.html";
const SECRET_VIEW_URI = "ui://lazy-auth/secret.html";
/** A tool's link to its view; the flat key is the older spelling some hosts still read. */
const viewMeta = (resourceUri: string) => ({ _meta: { ui: { resourceUri }, "ui/resourceUri": resourceUri } });

const noArguments = { type: "object", properties: {}, additionalProperties: false };
const tool = (name: string, description: string, viewUri?: string) => ({
  name,
  description,
  inputSchema: noArguments,
  ...(viewUri && viewMeta(viewUri)),
});
const TOOLS = [
  tool("whoami", "Says who is calling: the signed-in user when a valid token came along, else anonymous."),
  tool("get_secret", "Returns the secret. Protected: calling it without a token starts OAuth.", SECRET_VIEW_URI),
  tool("revoke_auth_token", "Protected: ends the caller's session; its access and refresh tokens stop working."),
  tool("show_auth_button", "Shows an app with Auth me (calls get_secret) and Revoke token.", AUTH_BUTTON_VIEW_URI),
  tool("elicit_url", "Asks you, during the call, to open a page; finishes once you have been there."),
  tool("elicit_by_error", "Fails with a page to open (URL elicitation); the retry succeeds once you were there."),
];

/** Answers one request of either era. */
function dispatch(ctx: Context, call: HttpCall, request: RpcRequest, caller: Caller, era: Era) {
  const { method, params } = request;
  // The tool list is the same for every caller and fixed for the life of the process: a 2026-07-28 client
  // may cache it (and the discover answer) for a minute, shared across users.
  const cacheHint = era === "2026-07-28" ? { ttlMs: 60_000, cacheScope: "public" } : {};
  if (method === "server/discover" && era === "2026-07-28") {
    const serverInfo = { "io.modelcontextprotocol/serverInfo": SERVER_INFO };
    const discovered = { supportedVersions: ALL_VERSIONS, capabilities: CAPABILITIES, instructions: INSTRUCTIONS };
    return { result: { ...discovered, ...cacheHint, _meta: serverInfo } };
  }
  if (method === "initialize" && era === "2025") return initialize(params); // 2026-07-28 has no handshake
  if (method === "ping" && era === "2025") return { result: {} }; // 2026-07-28 dropped ping (SEP-2575)
  if (method === "tools/list") return { result: { tools: TOOLS, ...cacheHint } };
  if (method === "tools/call") return callTool(ctx, call, request, caller, era);
  if (method === "resources/list") return { result: { resources: VIEW_RESOURCES, ...cacheHint } };
  if (method === "resources/templates/list") return { result: { resourceTemplates: [], ...cacheHint } };
  if (method === "resources/read") return readResource(params, era, cacheHint);
  return { error: { code: -32601, message: `Method not found: ${method}` } };
}

/** The 2025 handshake: echo the client's version when supported, else offer the newest spoken here. */
function initialize(params: Record<string, unknown>): Outcome {
  const asked = params.protocolVersion;
  if (typeof asked !== "string") {
    return { error: { code: -32602, message: "Invalid params: protocolVersion is required" } };
  }
  const protocolVersion = HANDSHAKE_VERSIONS.includes(asked) ? asked : HANDSHAKE_VERSIONS[0];
  return {
    result: { protocolVersion, capabilities: CAPABILITIES, serverInfo: SERVER_INFO, instructions: INSTRUCTIONS },
  };
}

const toolText = (text: string): Outcome => ({ result: { content: [{ type: "text", text }], isError: false } });

async function callTool(ctx: Context, call: HttpCall, request: RpcRequest, caller: Caller, era: Era): Promise<Outcome> {
  const { name, arguments: args = {} } = request.params;
  if (typeof name !== "string" || !TOOLS.some((tool) => tool.name === name)) {
    return { error: { code: -32602, message: `Invalid params: unknown tool ${quoteInput(name)}` } };
  }
  if (!isObject(args) || Object.keys(args).length > 0) {
    return { error: { code: -32602, message: "Invalid params: this tool takes no arguments" } };
  }
  const claims = caller.claims;
  if (name === "whoami") {
    return toolText(claims ? `You are ${claims.sub}, signed in through ${call.client?.name}.` : "You are anonymous.");
  }
  if (name === "show_auth_button") return toolText("Showing the Auth me button. Click it to call get_secret.");
  if (name === "elicit_url" || name === "elicit_by_error") return elicit(ctx, call, request, caller, era);
  // The gate let only a valid token through to the protected tools; this check keeps that visible here.
  if (!claims || typeof claims.sid !== "string") return { error: { code: -32001, message: "Authentication required" } };
  if (name === "get_secret") {
    return toolText(`The secret is: ${SECRET}. (Shown to ${claims.sub}, session ${sessionLabel(claims.sid)}.)`);
  }
  const until = secondsFromNow(sessionSpan(ctx.config, String(claims.aud), call.base));
  await revokeSession(ctx, claims.sid, until, "revoke_auth_token called");
  return toolText("Your session is revoked: its tokens no longer work. The next protected call starts a new sign-in.");
}

// ─── Routing, CORS, limits ───────────────

type RouteHandler = (ctx: Context, call: HttpCall) => Promise<void> | void;
type Route = { GET?: RouteHandler; POST?: RouteHandler };

const ROUTES: Record<string, Route> = {
  "/": { GET: landing },
  "/authorize": { GET: authorize, POST: approveOrDeny },
  "/token": { POST: tokenEndpoint },
  "/register": { POST: register },
  "/mcp": { POST: mcp },
  "/elicitation-callback": { GET: elicitationCallback },
};
const PAGES = new Set(["/authorize", "/elicitation-callback"]); // for people in a browser, not for APIs
const BODY_LIMIT_BYTES = 64 * 1024;
const PREFLIGHT = {
  "access-control-allow-methods": "GET, POST, OPTIONS",
  "access-control-allow-headers":
    "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name",
};

/** The handlers for a path: a fixed route, an MCP endpoint, or a discovery document. */
function findRoute(ctx: Context, path: string, mount: string): Route | undefined {
  if (Object.hasOwn(ROUTES, path)) return ROUTES[path];
  const config = ctx.config;
  if (mcpPathTtl(config, path) !== undefined) return { POST: mcp }; // /ttl/<seconds>/mcp: its own resource
  // Reactive mode: the resource metadata a 401 points to, outside /.well-known/.
  const reactiveMetadata = /^\/oauth\/protected-resource(\/.*)$/.exec(path)?.[1];
  if (config.reactive && reactiveMetadata && mcpPathTtl(config, reactiveMetadata) !== undefined) {
    return { GET: (ctx, call) => protectedResourceMetadata(ctx, call, reactiveMetadata, true) };
  }
  const wellKnown = /^\/\.well-known\/(oauth-protected-resource|oauth-authorization-server)(\/.*)?$/.exec(path);
  if (!wellKnown) return undefined;
  // RFC 8414 §3 and RFC 9728 §3.1 insert the well-known segment before the issuer's or resource's path.
  // Mounted at /lazy-auth, that path starts with the mount: the README's root rewrite sends those here.
  let inside = wellKnown[2] ?? "";
  if (mount && (inside === mount || inside.startsWith(`${mount}/`))) inside = inside.slice(mount.length);
  if (wellKnown[1] === "oauth-protected-resource") {
    if (inside !== "" && mcpPathTtl(config, inside) === undefined) return undefined;
    return { GET: (ctx, call) => protectedResourceMetadata(ctx, call, inside, !config.reactive) };
  }
  if (inside !== (config.reactive ? "/oauth" : "")) return undefined; // only at the issuer's own path
  return { GET: authorizationServerMetadata };
}

async function route(ctx: Context, call: HttpCall) {
  const { req, res, path } = call;
  // Wildcard CORS is safe *here*: nothing rides on cookies or other ambient credentials — every
  // credential is an explicit Authorization header or request parameter — and browser-based hosts on
  // any origin must be able to read WWW-Authenticate to start the flow. The pages are left out: another
  // origin has no business reading a consent page or the redirect after it. Demo only: a real server
  // lists its allowed origins, and checks Origin against DNS rebinding as the MCP transport asks.
  if (!PAGES.has(path)) {
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("access-control-expose-headers", "WWW-Authenticate");
  }
  if (path === "/token") res.setHeader("cache-control", "no-store"); // RFC 6749 §5.1: tokens must not be cached
  const base = baseUrl(ctx, req);
  if (base === undefined) {
    ctx.emit({ type: "host_refused", host: quoteInput(req.headers.host) });
    return httpError(ctx, call, 403, "invalid_request", `Host ${quoteInput(req.headers.host)} is not served here`);
  }
  call.base = base;
  if (req.method === "OPTIONS") {
    return void res.writeHead(204, PAGES.has(path) ? {} : PREFLIGHT).end(); // pages: no CORS, the preflight fails
  }
  const routeFound = findRoute(ctx, path, mountPath(ctx, req));
  if (!routeFound) return httpError(ctx, call, 404, "not_found", `Nothing at ${path}`);
  const handler = req.method === "GET" || req.method === "POST" ? routeFound[req.method] : undefined;
  if (!handler) {
    const allow = Object.keys(routeFound).join(", ");
    return httpError(ctx, call, 405, "method_not_allowed", `${path} answers ${allow} only`, { allow });
  }
  if (req.method === "POST") {
    const body = await readBody(req, BODY_LIMIT_BYTES);
    if (body === undefined) {
      return httpError(ctx, call, 413, "invalid_request", `The body is over ${BODY_LIMIT_BYTES} bytes`);
    }
    call.body = body;
  }
  return handler(ctx, call);
}

/**
 * The base URL for links, `iss` and audiences: PUBLIC_URL, or a loopback Host; undefined means refuse.
 * DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 reaches this server with
 * `Host: evil.example`, so only names that are ours are served (MCP Streamable HTTP: servers must validate).
 * A loopback Host is believed only from a loopback peer: another machine saying "localhost" is lying.
 */
function baseUrl(ctx: Context, req: IncomingMessage): string | undefined {
  const host = (req.headers.host ?? "").toLowerCase();
  const publicUrl = ctx.config.publicUrl;
  if (publicUrl && host === publicUrl.host) return publicUrl.base;
  if (!isLoopbackHostHeader(host) || !isLoopbackAddress(req.socket?.remoteAddress)) return undefined;
  return publicUrl ? publicUrl.base : `http://${host}${mountPath(ctx, req)}`;
}

/** Where the handler is mounted: the basePath option, Express's req.baseUrl, or PUBLIC_URL's path. */
function mountPath(ctx: Context, req: IncomingMessage & { baseUrl?: string }): string {
  return ctx.config.basePath ?? (req.baseUrl || ctx.config.publicUrl?.path || "");
}

/** A Host header naming loopback, checked part by part: valid IPv4 octets, a bracketed IPv6, a port in range. */
const LOOPBACK_HOST = /^(?:localhost|127(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}|\[::1\])(?::([1-9]\d{0,4}))?$/;
function isLoopbackHostHeader(host: string): boolean {
  const match = LOOPBACK_HOST.exec(host);
  return match !== null && Number(match[1] ?? 80) <= 65535;
}
function isLoopbackAddress(address: string | undefined): boolean {
  return address !== undefined && /^(?:127\.|::ffff:127\.|::1$)/.test(address);
}

/** Errors outside a handler's own checks, in the shape the path speaks: JSON-RPC on MCP, OAuth elsewhere. */
function httpError(
  ctx: Context,
  call: HttpCall,
  status: number,
  error: string,
  description: string,
  headers: Record<string, string> = {},
) {
  if (mcpPathTtl(ctx.config, call.path) !== undefined) {
    return rpcError(ctx, call, { status, code: status === 413 ? -32600 : -32000, message: description, headers });
  }
  sendJson(call.res, status, { error, error_description: description }, headers);
}

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
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;

/** A node:http request listener; mount it in Express (`app.use("/lazy-auth", handler)`) or any server. */
export type LazyAuthHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Builds everything the server answers. Options override the environment. */
export async function createHandler(options: ServerOptions = {}): Promise<LazyAuthHandler> {
  const ctx = await createContext(readConfig(options), options);
  return (req, res) => handleRequest(ctx, req, res);
}

async function createContext(config: Config, options: ServerOptions): Promise<Context> {
  const write = options.log;
  const trace = consoleTrace(
    write ? (lines) => lines.forEach(write) : (lines) => void process.stdout.write(`${lines.join("\n")}\n`),
    config.logRequests,
  );
  const listener = options.onEvent;
  const emit: Emit = (body) => {
    const event: LazyAuthEvent = Object.assign(body, { at: Date.now() }); // each body is a fresh literal
    trace(event);
    listener?.(event);
  };
  if (config.secret === undefined) {
    emit({ type: "notice", message: "JWT_SECRET is not set: signing with a random secret for this process only" });
  }
  const keyBytes = config.secret === undefined ? randomBytes(32) : new TextEncoder().encode(config.secret);
  const usages: KeyUsage[] = ["sign", "verify"];
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, usages);
  const store = options.store ?? new MemoryStore({ maxEntries: config.storeMaxEntries });
  return {
    config,
    key,
    store: failClosed(store),
    emit,
    memoryEpoch: store.durable ? undefined : randomId(),
    documents: { cache: new Map(), loading: new Map(), resolveHost: options.resolveHost ?? resolveWithDeadline },
    elicitations: new Map(),
    requestEvents: config.logRequests || listener !== undefined,
  };
}

function handleRequest(ctx: Context, req: IncomingMessage, res: ServerResponse) {
  const url = req.url ?? "/";
  const split = url.indexOf("?");
  let path = split === -1 ? url : url.slice(0, split);
  // A framework that hands over the full path (no req.baseUrl) has it stripped of the mount here.
  const mount = ctx.config.basePath;
  if (mount && path.startsWith(`${mount}/`)) path = path.slice(mount.length);
  const query = new URLSearchParams(split === -1 ? "" : url.slice(split + 1));
  const call: HttpCall = { req, res, base: "", path, query, body: "" };
  if (ctx.requestEvents) res.once("close", () => emitRequestEvent(ctx, call));
  route(ctx, call).catch((error: unknown) => {
    // Every failure becomes a JSON answer and the process lives; no stack trace leaves the server.
    if (error instanceof ClientGone || res.headersSent) return void res.destroy(); // nobody to answer
    if (error instanceof StoreUnavailable) {
      ctx.emit({ type: "store_unavailable", detail: error.message });
      return httpError(ctx, call, 503, "temporarily_unavailable", "The token store cannot answer; try again shortly");
    }
    ctx.emit({ type: "server_error", method: req.method ?? "", path, detail: String(error) });
    httpError(ctx, call, 500, "server_error", "Internal error");
  });
}

/** What was asked and answered, once the answer went out (or the client left). No query values: codes travel there. */
function emitRequestEvent(ctx: Context, call: HttpCall) {
  const { req, res } = call;
  try {
    ctx.emit({
      type: "request",
      method: req.method ?? "",
      path: call.path,
      rpc: call.rpc,
      status: res.writableFinished ? res.statusCode : undefined,
      bearer: req.headers.authorization !== undefined,
      agent: (req.headers["user-agent"] ?? "-").slice(0, 60),
      client: call.client,
    });
  } catch {
    // A listener that throws after the answer went out has nobody left to answer: the process lives on.
  }
}

/** GET /: what is here, in plain text. */
function landing(ctx: Context, call: HttpCall) {
  send(call.res, 200, "text/plain; charset=utf-8", landingText(call.base, ctx.config.reactive));
}

function landingText(base: string, reactive: boolean): string {
  const discovery = reactive
    ? "only through a protected tool's 401 (REACTIVE_AUTH_ONLY)"
    : `${base}/.well-known/oauth-protected-resource/mcp, ${base}/.well-known/oauth-authorization-server`;
  return `Lazy-auth MCP server
  MCP endpoint (Streamable HTTP, MCP 2025-03-26 to 2026-07-28): ${base}/mcp
  Discovery: ${discovery}
  Same endpoint with tokens that live N seconds (1-86400): ${base}/ttl/N/mcp
  OAuth: ${base}/authorize ${base}/token ${base}/register
  Tools: get_secret and revoke_auth_token (protected); whoami, show_auth_button, elicit_url, elicit_by_error
`;
}

// ─── Start ───────────────────────────────

export interface RunningServer {
  url: string; // base URL on loopback, e.g. http://127.0.0.1:3097
  server: Server;
  graceMs: number; // how long close() lets requests in flight finish unless told otherwise
  /** Stops accepting, lets requests in flight finish for up to `graceMs`, then cuts what remains. */
  close(graceMs?: number): Promise<void>;
}

/** Creates the handler and listens. Options override the environment (tests listen on port 0). */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const config = readConfig(options);
  const handler = await createHandler(options);
  const { port, host, headersTimeoutMs, requestTimeoutMs } = config;
  let draining = false;
  const inFlight = new Map<ServerResponse, IncomingMessage>();
  // Timeouts are checked this often: short ones (tests) must bite soon after they pass.
  const connectionsCheckingInterval = Math.min(1000, Math.ceil(Math.min(headersTimeoutMs, requestTimeoutMs) / 4));
  const server = createServer({ connectionsCheckingInterval }, (req, res) => {
    inFlight.set(res, req);
    res.once("close", () => inFlight.delete(res));
    if (draining) res.setHeader("connection", "close");
    handler(req, res);
  });
  // Slow clients are cut in seconds, not Node's minutes: 10 s for the headers and for the whole request
  // (a 64 KiB body at 6.5 KB/s). A client that stalls mid-body no longer holds its buffer for five minutes.
  server.headersTimeout = headersTimeoutMs;
  server.requestTimeout = requestTimeoutMs;
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
    graceMs: config.shutdownGraceMs,
    // A drain, not a cut: stop accepting; every answer from now on says Connection: close, and each
    // keep-alive connection closes after its current answer; what still runs after the grace period is cut.
    close: (graceMs = config.shutdownGraceMs) =>
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

// ─── The console trace ───────────────────
// The default reader of the event stream: one line per event, as a person watching a demo wants it.
// Lines are gathered and written once per event-loop turn, and formatted only then, off the request path.

type TraceFormats = {
  [T in LazyAuthEvent["type"]]: (event: LazyAuthEvent & { type: T }) => string | undefined;
};
const named = (client: ClientLabel) => `${JSON.stringify(client.name)} (${client.id})`;
const TRACE_FORMATS: TraceFormats = {
  request: (e) => `[request] ${e.method} ${e.path} → ${e.status ?? "(closed before an answer)"} ${bearerAndAgent(e)}`,
  challenge: (e) => (e.tokenSent ? `[oauth] ${e.tool} refused: the token is invalid, expired or revoked` : undefined),
  client_registered: (e) => `[oauth] client registered: ${named(e.client)}`,
  consent_shown: (e) => `[oauth] consent page shown for ${named(e.client)}`,
  consent_approved: (e) => `[oauth] code issued to ${named(e.client)}`,
  consent_denied: (e) => `[oauth] consent denied to ${named(e.client)}`,
  consent_refused: (e) => `[oauth] consent refused: ${e.reason}`,
  code_exchanged: (e) => `[oauth] code exchanged: session ${e.session} started for ${named(e.client)}`,
  code_replayed: (e) => `[oauth] code replayed: session ${e.session}`,
  tokens_refreshed: (e) => `[oauth] tokens refreshed for session ${e.session}`,
  refresh_reused: (e) => `[oauth] refresh token reused: session ${e.session}`,
  session_revoked: (e) => `[oauth] session ${e.session} revoked: ${e.reason}`,
  oauth_error: (e) => `[oauth] rejected ${e.error}: ${e.description}`,
  rpc_error: () => undefined, // the request line says it
  host_refused: (e) => `[http] refused Host ${e.host}`,
  metadata_document_refused: (e) => `[oauth] metadata document ${e.url} not used: ${e.reason}`,
  store_unavailable: (e) => `[oauth] store unavailable: ${e.detail}`,
  elicitation_visited: (e) => `[elicitation] page visited for ${e.tool}`,
  server_error: (e) => `[error] ${e.method} ${e.path}: ${e.detail}`,
  notice: (e) => e.message,
};
const bearerAndAgent = (e: { bearer: boolean; agent: string }) =>
  `bearer=${e.bearer ? "yes" : "no"} ${JSON.stringify(e.agent)}`;

/** The trace line for one event, escaped; undefined for events the trace leaves out. */
export function traceLine(event: LazyAuthEvent): string | undefined {
  const format = TRACE_FORMATS[event.type] as (event: LazyAuthEvent) => string | undefined;
  const line = format(event);
  return line === undefined ? undefined : escapeForLog(line);
}

/** A trace that writes its lines in one batch per event-loop turn. */
function consoleTrace(writeLines: (lines: string[]) => void, logRequests: boolean): (event: LazyAuthEvent) => void {
  let pending: LazyAuthEvent[] = [];
  const flush = () => {
    const events = pending;
    pending = [];
    const lines = events.map(traceLine).filter((line) => line !== undefined);
    try {
      if (lines.length > 0) writeLines(lines);
    } catch {
      // A log sink that throws loses its lines; it must not take the server down with it.
    }
  };
  return (event) => {
    if (event.type === "request" && !logRequests) return;
    if (pending.length === 0) setImmediate(flush);
    pending.push(event);
  };
}

// Control characters, line separators and bidi controls: in a log line they could start a forged line or
// reverse the text around them; on the consent page they could disguise a client's name.
// deno-lint-ignore no-control-regex -- finding control characters is the point
const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
function hasUnsafeCharacters(text: string): boolean {
  return text.search(UNSAFE_CHARACTERS) !== -1;
}
/** The one escaping point for logs: unsafe characters become \u escapes, so no value can forge a line. */
function escapeForLog(line: string): string {
  return line.replace(UNSAFE_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// ─── Client ID Metadata Documents ────────
// A client_id that is a URL names the client's own metadata document (MCP authorization, CIMD draft).
// It is fetched and checked, never trusted: its redirect_uris are what stands between a code and a
// phishing page. Fetching a URL a stranger chose is also a way into the server's network (SSRF), so the
// fetch is fenced: https (loopback http only while the server itself is loopback-only), no redirects,
// one deadline over name resolution and fetch, a size cap, a bound on loads at once, never an address
// inside a private or special-purpose network, and the connection made to the very address checked.
// A remote caller learns only that the document could not be used; the reason goes to the event stream.

const METADATA_MAX_BYTES = 16 * 1024;
const METADATA_CACHE_SIZE = 1_000;
const METADATA_LOADS_AT_ONCE = 16;

interface DocumentLoads {
  cache: Map<string, { client: Client; until: number }>;
  loading: Map<string, Promise<Client | undefined>>; // one load per URL, however many requests wait on it
  resolveHost: (hostname: string, signal: AbortSignal) => Promise<string[]>;
}

/** The checked client, or undefined (the reason is in a `metadata_document_refused` event). */
function loadClientDocument(ctx: Context, clientId: string): Promise<Client | undefined> {
  const { cache, loading } = ctx.documents;
  const cached = cache.get(clientId);
  if (cached && cached.until > Date.now()) return Promise.resolve(cached.client);
  const waiting = loading.get(clientId);
  if (waiting) return waiting;
  const refuse = (reason: string) => {
    ctx.emit({ type: "metadata_document_refused", url: clientLabel(clientId).id, reason });
    return undefined;
  };
  if (loading.size >= METADATA_LOADS_AT_ONCE) return Promise.resolve(refuse("too many documents loading at once"));
  const load = fetchClientDocument(ctx, clientId).then((outcome) => {
    if (typeof outcome === "string") return refuse(outcome);
    if (outcome.maxAge > 0) {
      if (cache.size >= METADATA_CACHE_SIZE) cache.delete(cache.keys().next().value ?? ""); // the oldest goes
      cache.set(clientId, { client: outcome.client, until: Date.now() + Math.min(outcome.maxAge, 3600) * 1000 });
    }
    return outcome.client;
  }).finally(() => loading.delete(clientId));
  loading.set(clientId, load);
  return load;
}

/** Fetches and checks one document under one deadline; returns the client and its cache lifetime, or why not. */
async function fetchClientDocument(
  ctx: Context,
  clientId: string,
): Promise<{ client: Client; maxAge: number } | string> {
  const url = new URL(clientId);
  const loopbackAllowed = ctx.config.loopbackOnly;
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopbackAllowed && isLoopbackHost(url.hostname))) {
    return "a client_id URL must be https (http only on loopback, while this server is loopback-only)";
  }
  if (url.pathname === "/" || url.hash || url.username || url.password) {
    return "a client_id URL must have a path and no fragment or credentials";
  }
  const deadline = AbortSignal.timeout(ctx.config.metadataTimeoutMs);
  const address = await checkedAddress(ctx, url.hostname, loopbackAllowed, deadline);
  if ("problem" in address) return address.problem;
  const response = await getPinned(url, address.ip, deadline);
  if (typeof response === "string") return response;
  const document = parseJson(response.text);
  if (!isObject(document) || document.client_id !== clientId) return "does not name this URL as its client_id";
  const checked = checkClientMetadata(document);
  if ("error" in checked) return checked.description;
  const client = { name: checked.name ?? clientId, redirectUris: checked.redirectUris };
  const cacheControl = response.cacheControl;
  const maxAge = /no-store|no-cache/i.test(cacheControl)
    ? 0
    : Number(/(?:^|,)\s*max-age=(\d+)/i.exec(cacheControl)?.[1] ?? 0);
  return { client: { ...client, label: clientLabel(clientId, client.name) }, maxAge };
}

/** The one address to connect to, once every address the name resolves to has passed the fence. */
async function checkedAddress(
  ctx: Context,
  hostname: string,
  loopbackAllowed: boolean,
  deadline: AbortSignal,
): Promise<{ ip: string } | { problem: string }> {
  const bare = hostname.replace(/^\[|\]$/g, "");
  let addresses: string[];
  if (isIP(bare)) addresses = [bare];
  else if (bare === "localhost") addresses = ["127.0.0.1"]; // never asked of DNS
  else {
    const resolved = await abortable(ctx.documents.resolveHost(bare, deadline), deadline).catch(() => undefined);
    if (!resolved || resolved.length === 0) return { problem: `its host does not resolve (in time)` };
    addresses = resolved;
  }
  for (const address of addresses) {
    const problem = addressProblem(address, loopbackAllowed);
    if (problem) return { problem: `its host resolves to ${address}: ${problem}` };
  }
  return { ip: addresses[0] };
}

/** The system's DNS through c-ares (not the thread pool getaddrinfo uses), cancelled at the deadline. */
async function resolveWithDeadline(hostname: string, deadline: AbortSignal): Promise<string[]> {
  const resolver = new Resolver({ timeout: 1000, tries: 2 });
  deadline.addEventListener("abort", () => resolver.cancel(), { once: true });
  const answers = await Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
  return answers.flatMap((answer) => (answer.status === "fulfilled" ? answer.value : []));
}

/** The promise, or a rejection as soon as `signal` aborts: no stand-in resolver outlives the deadline. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    promise.then(resolve, reject);
  });
}

/**
 * GET the document from `ip` itself, not from a second name lookup (which could answer differently:
 * DNS rebinding). TLS still checks the certificate against the URL's host name (`servername`).
 */
function getPinned(
  url: URL,
  ip: string,
  deadline: AbortSignal,
): Promise<{ text: string; cacheControl: string } | string> {
  return new Promise((resolve) => {
    const https = url.protocol === "https:";
    const options = {
      host: ip,
      port: url.port || (https ? 443 : 80),
      path: `${url.pathname}${url.search}`,
      headers: { host: url.host, accept: "application/json" },
      agent: false as const,
      ...(https && !isIP(url.hostname.replace(/^\[|\]$/g, "")) && { servername: url.hostname }),
    };
    const request = (https ? httpsRequest : httpRequest)(options, (response) => {
      const status = response.statusCode ?? 0;
      if (status !== 200) {
        response.destroy();
        return resolve(status >= 300 && status < 400 ? "it redirects; redirects are not followed" : `HTTP ${status}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > METADATA_MAX_BYTES) {
          response.destroy();
          return resolve(`it is over ${METADATA_MAX_BYTES} bytes`);
        }
        chunks.push(chunk);
      });
      response.on("end", () => {
        const cacheControl = String(response.headers["cache-control"] ?? "");
        resolve({ text: Buffer.concat(chunks).toString("utf8"), cacheControl });
      });
      response.on("error", () => resolve("the connection broke"));
    });
    const onAbort = () => request.destroy(new Error("deadline"));
    deadline.addEventListener("abort", onAbort, { once: true });
    request.on("error", () => resolve(deadline.aborted ? "it did not arrive in time" : "it is unreachable"));
    request.on("close", () => deadline.removeEventListener("abort", onAbort));
    request.end();
  });
}

// Special-purpose IPv4 ranges (RFC 6890 and its registry): this network, private, shared (CGNAT), loopback,
// link-local, private, IETF assignments, documentation, 6to4 relay, private, benchmarking, documentation ×2,
// multicast, reserved. None of them is a public web server.
const IPV4_SPECIAL = ("0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 " +
  "192.0.2.0/24 192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 240.0.0.0/4")
  .split(" ");

/** Why a server-side fetch must not connect to `address`, or undefined when it is a public address. */
function addressProblem(address: string, loopbackAllowed: boolean): string | undefined {
  const v4 = ipv4Number(address);
  if (v4 !== undefined) return ipv4Problem(v4, loopbackAllowed);
  const groups = ipv6Groups(address);
  if (!groups) return "not an IP address";
  const [g0, g1] = groups;
  const zeros = (from: number, to: number) => groups.slice(from, to).every((group) => group === 0);
  // An address that embeds an IPv4 address is judged by it: mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
  // NAT64 64:ff9b::a.b.c.d (RFC 6052), 6to4 2002:AABB:CCDD:: (RFC 3056).
  const low = groups[6] * 65536 + groups[7];
  if (zeros(0, 5) && groups[5] === 0xffff) return ipv4Problem(low, loopbackAllowed);
  if (zeros(0, 6) && low > 1) return ipv4Problem(low, loopbackAllowed);
  if (g0 === 0x64 && g1 === 0xff9b && zeros(2, 6)) return ipv4Problem(low, loopbackAllowed);
  if (g0 === 0x2002) return ipv4Problem(g1 * 65536 + groups[2], loopbackAllowed);
  if (zeros(0, 7) && groups[7] === 1) return loopbackAllowed ? undefined : "loopback";
  // Only global unicast 2000::/3 is public; inside it, 2001::/23 (Teredo among others) and the
  // documentation ranges are special-purpose. Outside it: unspecified, unique-local, link-local, the
  // deprecated site-local fec0::/10, multicast, …
  if ((g0 & 0xe000) !== 0x2000) return "not a global unicast address";
  if (g0 === 0x2001 && g1 < 0x200) return "special-purpose (2001::/23, Teredo among them)";
  if ((g0 === 0x2001 && g1 === 0xdb8) || (g0 === 0x3fff && g1 < 0x1000)) return "documentation";
  return undefined;
}

function ipv4Problem(address: number, loopbackAllowed: boolean): string | undefined {
  const range = IPV4_SPECIAL.find((cidr) => {
    const [start, bits] = cidr.split("/");
    const first = ipv4Number(start) ?? 0;
    return address >= first && address < first + 2 ** (32 - Number(bits));
  });
  if (range === undefined || (range === "127.0.0.0/8" && loopbackAllowed)) return undefined;
  return `in the special-purpose range ${range}`;
}

/** Dotted IPv4 as one number, or undefined. */
function ipv4Number(address: string): number | undefined {
  const parts = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address)?.slice(1).map(Number);
  if (!parts || parts.some((part) => part > 255)) return undefined;
  return ((parts[0] * 256 + parts[1]) * 256 + parts[2]) * 256 + parts[3];
}

/** An IPv6 address as its eight 16-bit groups ("::" expanded, a dotted IPv4 tail converted), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address.toLowerCase();
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const v4 = ipv4Number(tail[1]);
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, tail.index)}${Math.floor(v4 / 65536).toString(16)}:${(v4 % 65536).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (half: string) => (half === "" ? [] : half.split(":"));
  const [head, rest] = [groupsOf(halves[0]), halves.length === 2 ? groupsOf(halves[1]) : []];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  if (!all.every((group) => /^[0-9a-f]{1,4}$/.test(group))) return undefined;
  return all.map((group) => parseInt(group, 16));
}

// ─── The 2026-07-28 transport checks ─────
// MCP 2026-07-28 Streamable HTTP: the routing headers must be present and agree with the body, or the
// request is refused before the lazy-auth gate and before any tool. This is part of the lazy-auth lesson:
// a gateway that let `Mcp-Name: whoami` through unauthenticated while the body called get_secret would
// leak the secret. The gate decides on the body; a request whose headers disagree never reaches it.

function checkModernRequest(
  req: IncomingMessage,
  request: RpcRequest,
  meta: Record<string, unknown>,
): Rejection | undefined {
  const { method, params } = request;
  const requested = meta[META_VERSION];
  const header = req.headers["mcp-protocol-version"];
  if (typeof requested !== "string" || !isObject(meta[META_CAPABILITIES])) {
    return { code: -32602, message: `Invalid params: _meta must carry ${META_VERSION} and ${META_CAPABILITIES}` };
  }
  if (header !== requested) {
    const message = `Header mismatch: MCP-Protocol-Version is ${quoteInput(header)}, the body says ${
      quoteInput(requested)
    }`;
    return { code: -32020, message };
  }
  if (requested !== MODERN_VERSION) {
    return { code: -32022, message: "Unsupported protocol version", data: { supported: ALL_VERSIONS, requested } };
  }
  const methodHeader = req.headers["mcp-method"];
  if (methodHeader !== method) {
    const message = `Header mismatch: Mcp-Method is ${quoteInput(methodHeader)}, the body calls ${quoteInput(method)}`;
    return { code: -32020, message };
  }
  // Mcp-Name mirrors the tool name on tools/call and the URI on resources/read.
  const named = method === "tools/call" ? params.name : params.uri;
  const nameHeader = decodeHeaderValue(req.headers["mcp-name"]);
  if ((method === "tools/call" || method === "resources/read") && nameHeader !== named) {
    const message = `Header mismatch: Mcp-Name is ${quoteInput(nameHeader)}, the body names ${quoteInput(named)}`;
    return { code: -32020, message };
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

/** MCP headers carry non-ASCII values as =?base64?…?= (2026-07-28 transport); decode before comparing. */
function decodeHeaderValue(value: string | string[] | undefined): string | undefined {
  if (typeof value !== "string") return undefined;
  const encoded = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/.exec(value)?.[1];
  return encoded === undefined ? value : Buffer.from(encoded, "base64").toString("utf8");
}

// ─── The MCP App ─────────────────────────
// Two small views a host renders in a sandboxed iframe (MCP Apps, 2026-01-26): each tool names its view
// in _meta.ui.resourceUri (see the tool list), and the host reads it with resources/read. The views talk
// to the host by postMessage and reach this server only through the host's tools/call, so a host's 401 →
// OAuth → retry happens for them too: that is the lazy-auth demo inside a host. They are plain HTML with a
// short inline script each: no build step, and no external script or font, which a host's default
// Content-Security-Policy would block anyway.

const VIEW_MIME = "text/html;profile=mcp-app"; // the exact type MCP Apps hosts look for
const VIEW_RESOURCES = [
  { uri: AUTH_BUTTON_VIEW_URI, name: "Auth me button", mimeType: VIEW_MIME, description: "Calls get_secret" },
  { uri: SECRET_VIEW_URI, name: "Secret", mimeType: VIEW_MIME, description: "Shows what get_secret returned" },
];

function readResource(params: Record<string, unknown>, era: Era, cacheHint: Record<string, unknown>): Outcome {
  const { uri } = params;
  if (typeof uri !== "string") return { error: { code: -32602, message: "Invalid params: uri is required" } };
  const text = uri === AUTH_BUTTON_VIEW_URI ? AUTH_BUTTON_VIEW : uri === SECRET_VIEW_URI ? SECRET_VIEW : undefined;
  if (text === undefined) {
    // Resource not found: -32002 in the 2025 specifications, -32602 from 2026-07-28 (SEP-2164).
    const code = era === "2026-07-28" ? -32602 : -32002;
    return { error: { code, message: `Resource not found: ${quoteInput(uri)}`, data: { uri } } };
  }
  return { result: { contents: [{ uri, mimeType: VIEW_MIME, text }], ...cacheHint } };
}

/** What both views share: the host's theme (else the system's), and the view side of the protocol. */
const VIEW_STYLE = `
  /* The host's theme when it names one (data-theme), else the system's: color-scheme picks light-dark(). */
  :root { color-scheme: light dark; font: 15px/1.4 system-ui, sans-serif; }
  :root[data-theme="light"] { color-scheme: light; }
  :root[data-theme="dark"] { color-scheme: dark; }
  body { margin: 0; padding: 12px; background: light-dark(#fff, #1f1f1f); color: light-dark(#1f1f1f, #ececec); }
  .error { color: light-dark(#b3261e, #ff8a80); }`;
const VIEW_SCRIPT = `"use strict";
// The view side of MCP Apps (2026-01-26), by hand: JSON-RPC 2.0 with the host over postMessage.
const send = (message) => window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*");
const pending = new Map(); // request id → its promise; no timeout: the host may run a sign-in that takes minutes
let lastId = 0;
function request(method, params) {
  const id = ++lastId;
  send({ id: id, method: method, params: params });
  return new Promise((resolve, reject) => pending.set(id, { resolve: resolve, reject: reject }));
}
function show(text, isError) {
  const output = document.querySelector("[role=status]");
  output.textContent = text; // always as text: a tool's answer is never HTML here
  output.className = isError ? "error" : "";
}
const firstText = (result) => (result.content || []).find((block) => block.type === "text");
function followTheme(context) {
  const theme = context && context.theme;
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
}
let onToolResult = () => {}; // the secret view shows the result the host sends it
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
  } else if (message.method === "ui/notifications/tool-result") onToolResult(message.params);
  else if (message.method === "ui/notifications/tool-cancelled") show("The call was cancelled.", true);
  else if (message.method === "ui/notifications/host-context-changed") followTheme(message.params);
});
function reportSize() { // how much room the view needs: sent once initialized, then on every change
  const box = document.documentElement.getBoundingClientRect();
  const size = { width: Math.ceil(box.width), height: Math.ceil(box.height) };
  send({ method: "ui/notifications/size-changed", params: size });
}
/** The handshake: ui/initialize, then initialized and size reports. Resolves true once the host started the view. */
function start(name) {
  const params = { appInfo: { name: name, version: "1.0.0" }, appCapabilities: {}, protocolVersion: "2026-01-26" };
  return request("ui/initialize", params).then((result) => {
    followTheme(result.hostContext);
    send({ method: "ui/notifications/initialized", params: {} });
    new ResizeObserver(reportSize).observe(document.documentElement);
    return true;
  }, (error) => show("The host did not start this view: " + error.message, true));
}`;

const AUTH_BUTTON_VIEW = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Auth me</title>
<style>
${VIEW_STYLE}
  button { font: inherit; padding: 6px 14px; border-radius: 6px; cursor: pointer; color: inherit;
    border: 1px solid light-dark(#bbb, #555); background: light-dark(#f3f3f3, #2c2c2c); }
  #auth { background: light-dark(#2457d6, #4a78ee); border-color: transparent; color: #fff; }
  button:disabled { opacity: 0.6; cursor: default; }
  #answer { margin: 12px 0 0; overflow-wrap: anywhere; }
</style></head>
<body>
<button id="auth" type="button" disabled>Auth me</button>
<button id="revoke" type="button" disabled>Revoke token</button>
<p id="answer" role="status"></p>
<script>
${VIEW_SCRIPT}
const buttons = document.querySelectorAll("button");
async function callTool(name) { // through the host, which runs the sign-in when the server answers 401
  for (const button of buttons) button.disabled = true;
  show("Calling " + name + "…", false);
  try {
    const result = await request("tools/call", { name: name, arguments: {} });
    const text = firstText(result);
    show(text ? text.text : "(no text in the answer)", result.isError === true);
  } catch (error) { // the host's call failed: the user abandoned the sign-in, the server is gone, …
    show(name + " failed: " + error.message, true);
  }
  for (const button of buttons) button.disabled = false;
}
document.getElementById("auth").onclick = () => callTool("get_secret");
document.getElementById("revoke").onclick = () => callTool("revoke_auth_token");
start("lazy-auth-button").then((started) => started && buttons.forEach((button) => (button.disabled = false)));
</script>
</body></html>
`;

const SECRET_VIEW = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Secret</title>
<style>
${VIEW_STYLE}
  #secret { margin: 0; overflow-wrap: anywhere; }
  #secret.waiting { opacity: 0.7; font-style: italic; }
</style></head>
<body><p id="secret" class="waiting" role="status">Waiting for secret data…</p>
<script>
${VIEW_SCRIPT}
// The host sends get_secret's result as a notification once the call is done.
onToolResult = (result) => {
  const text = firstText(result);
  show(text ? text.text : "(no text in the result)", result.isError === true);
};
start("lazy-auth-secret");
</script>
</body></html>
`;

// ─── URL elicitation ─────────────────────
// Sending the user to a page (say, a third party's sign-in) before a tool can finish. The elicitation is a
// signed token — the page's id, the 2025 elicitationId and the 2026 requestState at once — so no instance
// has to remember it. A link counts on its first visit only, and that visit completes one call of the tool
// it was shown for; both are recorded in the single-use store (shared, with Redis). Demo only: with no
// cookies, nothing proves that the browser visiting is the caller's. A real server signs the user in on
// that page and records the visit for that user alone. Here the caller is the token's user, or anonymous.

const ELICITATION_TTL_SECONDS = 600;
const OPEN_ELICITATION_STREAMS = 32; // 2025 elicit_url holds a connection open while it waits

const callerName = (caller: Caller) => String(caller.claims?.sub ?? "anonymous");
const visitKey = (tool: unknown, sub: unknown) => `elicitation-visited:${tool}:${sub}`;

/** The two elicitation tools: the 2025 era and 2026-07-28 ask the user in different ways. */
function elicit(ctx: Context, call: HttpCall, request: RpcRequest, caller: Caller, era: Era): Promise<Outcome> {
  const tool = String(request.params.name);
  if (era === "2026-07-28") return elicitByInputRequest(ctx, call, tool, request.params, caller);
  if (tool === "elicit_by_error") return elicitByError(ctx, call, caller);
  return elicitDuringCall(ctx, call, request.id, caller);
}

async function newElicitation(ctx: Context, base: string, tool: string, caller: Caller) {
  const claims = { jti: randomId(), tool, sub: callerName(caller) };
  const id = await sign(ctx, "elicitation", issuerOf(ctx, base), claims, ELICITATION_TTL_SECONDS);
  const message = "Open this page to go on: it stands in for a third party's sign-in.";
  return { id, url: `${base}/elicitation-callback?id=${id}`, message };
}

/** Takes one visit of the caller's for `tool`, looking again every 200 ms for up to `waitMs`. */
async function visited(ctx: Context, tool: string, caller: Caller, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  while (!(await ctx.store.takeFlag(visitKey(tool, callerName(caller))))) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return true;
}

/**
 * 2025 era, error form: the call fails with -32042 naming the page; the host opens it and retries. Any
 * unspent visit of the caller's for this tool counts, so a host that retried too early and got a second
 * page is fine.
 */
async function elicitByError(ctx: Context, call: HttpCall, caller: Caller): Promise<Outcome> {
  if (await visited(ctx, "elicit_by_error", caller, 0)) {
    return toolText("You have been to the page: elicit_by_error is done.");
  }
  const { id, url, message } = await newElicitation(ctx, call.base, "elicit_by_error", caller);
  const elicitations = [{ mode: "url", elicitationId: id, url, message }];
  return { error: { code: -32042, message: "This tool needs you to open a page first", data: { elicitations } } };
}

/**
 * 2026-07-28: no server-to-client requests and no -32042. The tool answers `input_required` with a URL
 * elicitation and a signed requestState; the client asks the user, then retries with both. A state is
 * good once, for its tool and caller, until it expires.
 */
async function elicitByInputRequest(
  ctx: Context,
  call: HttpCall,
  tool: string,
  params: Record<string, unknown>,
  caller: Caller,
): Promise<Outcome> {
  const capabilities = isObject(params._meta) ? params._meta[META_CAPABILITIES] : undefined;
  const elicitation = isObject(capabilities) ? capabilities.elicitation : undefined;
  if (!isObject(elicitation) || !isObject(elicitation.url)) {
    const data = { requiredCapabilities: { elicitation: { url: {} } } };
    return {
      status: 400,
      error: { code: -32021, message: "Missing required client capability: elicitation.url", data },
    };
  }
  if (params.requestState !== undefined) {
    const state = typeof params.requestState === "string"
      ? await verify(ctx, "elicitation", params.requestState, issuerOf(ctx, call.base))
      : undefined;
    if (!state?.jti || !state.exp || state.tool !== tool || state.sub !== callerName(caller)) {
      return { error: { code: -32602, message: "Invalid params: requestState is invalid or expired" } };
    }
    const response = isObject(params.inputResponses) ? params.inputResponses.visit : undefined;
    if (isObject(response) && response.action !== "accept") {
      return toolText("You declined to open the page: nothing done.");
    }
    if (!(await ctx.store.spendOnce(state.jti, state.exp))) {
      return { error: { code: -32602, message: "Invalid params: this requestState was already used" } };
    }
    // The client retries as soon as the user agrees, usually before the page is open: wait a moment.
    if (await visited(ctx, tool, caller, 3000)) return toolText(`You have been to the page: ${tool} is done.`);
  }
  const { id, url, message } = await newElicitation(ctx, call.base, tool, caller);
  const inputRequests = { visit: { method: "elicitation/create", params: { mode: "url", message, url } } };
  return { result: { resultType: "input_required", inputRequests, requestState: id } };
}

/**
 * 2025 era, during the call: the tools/call answer becomes an SSE stream carrying an elicitation/create
 * request; the client's answer arrives as a POST of its own (202, see readRpcRequest), matched by an
 * unguessable id. That POST must reach this instance: behind a balancer, this tool needs sticky routing.
 */
async function elicitDuringCall(ctx: Context, call: HttpCall, id: unknown, caller: Caller): Promise<Outcome> {
  // Each stream holds a connection for up to a minute, and anyone may open one: they are bounded.
  if (ctx.elicitations.size >= OPEN_ELICITATION_STREAMS) {
    return { status: 503, error: { code: -32000, message: "Too many elicitations are waiting; try again shortly" } };
  }
  const { res } = call;
  const elicitation = await newElicitation(ctx, call.base, "elicit_url", caller);
  const requestId = `elicit-${randomId()}`;
  const waitMs = ctx.config.elicitationWaitMs;
  const answered = new Promise<Record<string, unknown> | undefined>((resolve) => {
    ctx.elicitations.set(requestId, resolve);
    setTimeout(() => resolve(undefined), waitMs).unref();
    res.once("close", () => resolve(undefined)); // the client went away (or the stream ended)
  }).finally(() => ctx.elicitations.delete(requestId));
  // No `id:` lines: with event ids a client would treat the stream as resumable and come back with GET.
  const event = (message: Record<string, unknown>) => res.write(`data: ${JSON.stringify(message)}\n\n`);
  const finish = (text: string) => {
    event({ jsonrpc: "2.0", id, result: { content: [{ type: "text", text }], isError: false } });
    res.end();
    return { streamed: true } as const;
  };
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
  const { url, message } = elicitation;
  const params = { mode: "url", message, url, elicitationId: elicitation.id };
  event({ jsonrpc: "2.0", id: requestId, method: "elicitation/create", params });
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
  if (!(await visited(ctx, "elicit_url", caller, waitMs))) return finish("The page was not visited in time.");
  event({ jsonrpc: "2.0", method: "notifications/elicitation/complete", params: { elicitationId: elicitation.id } });
  return finish("You have been to the page: elicit_url is done.");
}

/** The page the elicitation sends the user to: its first visit records one completion for its tool and caller. */
async function elicitationCallback(ctx: Context, call: HttpCall) {
  const page = (status: number, message: string) =>
    send(call.res, status, "text/html; charset=utf-8", callbackPage(message));
  const link = await verify(ctx, "elicitation", call.query.get("id") ?? "", issuerOf(ctx, call.base));
  if (!link?.jti || !link.exp || typeof link.sub !== "string") {
    return page(400, "This link is invalid or expired. Nothing was recorded.");
  }
  // One visit of one link completes one call: a second visit of the same link records nothing.
  if (!(await ctx.store.spendOnce(`elicitation-link:${link.jti}`, link.exp))) {
    return page(400, "This link was already used. Nothing more was recorded.");
  }
  await ctx.store.raiseFlag(visitKey(link.tool, link.sub), link.exp);
  ctx.emit({ type: "elicitation_visited", tool: String(link.tool) });
  page(200, "Done: go back to your MCP host, which can now finish the tool.");
}

/** The elicitation callback's answer: a small page, its one message escaped. */
function callbackPage(message: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Elicitation</title></head>
<body style="font: 16px system-ui, sans-serif; max-width: 34rem; margin: 3rem auto"><p>${escapeHtml(message)}</p>
<p><small>Demo only: a real server would sign you in on this page, so that only you can finish your request.</small></p>
</body></html>`;
}

// ─── Shared helpers ──────────────────────
// Answers and small parsers every section uses.

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), ...headers }).end(body);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  send(res, status, "application/json", JSON.stringify(body), headers);
}

/** Every OAuth error has one shape (RFC 6749 §5.2): {error, error_description}, and an event saying why. */
function oauthError(ctx: Context, call: HttpCall, status: number, error: string, description: string) {
  ctx.emit({ type: "oauth_error", path: call.path, status, error, description });
  sendJson(call.res, status, { error, error_description: description });
}

/** Every JSON-RPC error has one shape: {jsonrpc, id, error: {code, message, data?}}. */
function rpcError(
  ctx: Context,
  call: HttpCall,
  answer: {
    status: number;
    id?: unknown;
    code: number;
    message: string;
    data?: unknown;
    headers?: Record<string, string>;
  },
) {
  const { status, id, code, message, data, headers } = answer;
  // A 401 has its own event (the challenge): the 401 path stays as light as it can.
  if (status !== 401) ctx.emit({ type: "rpc_error", path: call.path, status, code, message });
  const error = { code, message, ...(data !== undefined && { data }) };
  sendJson(call.res, status, { jsonrpc: "2.0", id: id ?? null, error }, headers);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not JSON: each caller answers in its own shape
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isJson(contentType: string | undefined): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType ?? "");
}
function isForm(contentType: string | undefined): boolean {
  return /^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType ?? "");
}

/** RFC 6749 §3.1, §3.2: a parameter sent twice is ambiguous, so requests must not repeat one. */
function repeatedName(params: URLSearchParams): string | undefined {
  const names = [...params.keys()];
  return names.find((name, index) => names.indexOf(name) !== index);
}

/** Client input echoed in a message: a string quoted and cut to 100 characters, anything else only named. */
function quoteInput(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value.slice(0, 100)) : `(${typeof value})`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Started directly (`tsx server.ts`, `node server.ts`, `deno run server.ts`, `bun server.ts`) rather than
// imported? Deno and Bun say so with import.meta.main; under Node, compare the script path with this module's.
const isEntryPoint = (import.meta as ImportMeta & { main?: boolean }).main ??
  process.argv[1] === fileURLToPath(import.meta.url);
if (isEntryPoint) {
  startServer({ logRequests: process.env.LOG_REQUESTS !== "0" }).then((running) => {
    // The stop handlers go in before the server says it is ready: a signal sent on seeing that line must find them.
    const stop = (signal: string) => {
      console.log(`${signal}: finishing the requests in flight (up to ${running.graceMs / 1000} s), then exiting`);
      void running.close().then(() => process.exit(0));
    };
    process.once("SIGINT", stop).once("SIGTERM", stop);
    const reactive = process.env.REACTIVE_AUTH_ONLY === "1";
    console.log(landingText(process.env.PUBLIC_URL ?? running.url.replace("127.0.0.1", "localhost"), reactive));
    if (process.env.HOST && !process.env.PUBLIC_URL) {
      console.log(`HOST is ${process.env.HOST} but PUBLIC_URL is unset: only a loopback Host header is served`);
    }
  }, (error: unknown) => {
    console.error(error instanceof ConfigError ? error.message : `Could not start: ${String(error)}`);
    process.exit(1);
  });
}
