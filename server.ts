/**
 * Lazy-auth MCP server: public tools answer without a token; protected tools answer `401` +
 * `WWW-Authenticate`, which sends the MCP host through discovery (RFC 9728, RFC 8414) and an OAuth 2.1
 * authorization-code + PKCE flow against the minimal mock authorization server below, in the same process.
 *
 * Read top to bottom, in the order a request flows:
 *   config → token kinds & the single-use memory → /authorize → /token → /register → discovery metadata
 *   → /mcp → routing, CORS, body limits → start.
 *
 * Demo only: there is one fixed user, consent is one click, and every token is an HS256 JWT under one
 * shared secret. A real authorization server authenticates the user and signs with an asymmetric key.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import process from "node:process";
import { clearTimeout, setTimeout } from "node:timers"; // node:timers so `.unref()` exists under Deno too
import { fileURLToPath } from "node:url";
import { type JWTPayload, jwtVerify, SignJWT } from "jose";

// ─── Config ──────────────────────────────

export interface ServerOptions {
  port?: number; // PORT, default 3097; 0 picks a free port (tests)
  host?: string; // interface to listen on; default all
  publicUrl?: string; // PUBLIC_URL: the base URL clients see (required off-loopback)
  jwtSecret?: string; // JWT_SECRET, at least 32 bytes; default a random secret per process
  accessTokenTtlSeconds?: number; // ACCESS_TOKEN_TTL_SECONDS, default 30
  refreshTokenTtlSeconds?: number; // REFRESH_TOKEN_TTL_SECONDS, default 300
  store?: SingleUseStore; // where spent IDs and revoked sessions live; default in memory
  log?: (line: string) => void; // one line per OAuth event; default console.log
}

class ConfigError extends Error {}

/** Options win over the environment; a bad value stops startup with one clear line. */
function readConfig(options: ServerOptions) {
  const env = process.env;
  const port = options.port ?? numberFrom("PORT", env.PORT, 3097, 0, 65535);
  const accessTtl = options.accessTokenTtlSeconds ??
    numberFrom("ACCESS_TOKEN_TTL_SECONDS", env.ACCESS_TOKEN_TTL_SECONDS, 30, 1, 86400);
  const refreshTtl = options.refreshTokenTtlSeconds ??
    numberFrom("REFRESH_TOKEN_TTL_SECONDS", env.REFRESH_TOKEN_TTL_SECONDS, 300, 1, 86400);
  const publicUrl = options.publicUrl ?? env.PUBLIC_URL;
  const urlProblem = publicUrl !== undefined && !/^https?:\/\/[^/?#]+(\/[^?#]*)?$/.test(publicUrl);
  if (urlProblem) {
    throw new ConfigError(`PUBLIC_URL must be an http(s) URL with no query or fragment, got "${publicUrl}"`);
  }
  const secret = options.jwtSecret ?? env.JWT_SECRET;
  if (secret !== undefined && Buffer.byteLength(secret) < 32) {
    throw new ConfigError("JWT_SECRET must be at least 32 bytes (try: openssl rand -hex 32)");
  }
  return { port, accessTtl, refreshTtl, publicUrl: publicUrl?.replace(/\/$/, ""), secret };
}

function numberFrom(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (Number.isInteger(value) && value >= min && value <= max) return value;
  throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
}

// ─── Token kinds ─────────────────────────
// Every token is a JWT under one key, so each kind gets its own `typ` header and is verified against
// exactly that `typ`: a refresh token or a code can never pass as an access token (RFC 8725 §3.11).

const TOKEN_TYPE = {
  access: "at+jwt", // RFC 9068 access token
  refresh: "refresh+jwt",
  code: "code+jwt", // the authorization request itself, signed: no server storage between steps
  client: "client+jwt", // a dynamically registered client, signed (stateless DCR, see /register)
} as const;
type TokenKind = keyof typeof TOKEN_TYPE;

const CODE_TTL_SECONDS = 300;
const SCOPE = "mcp";
const USER = "demo-user"; // demo only: a real server signs a real user in before consent

const nowSeconds = () => Math.floor(Date.now() / 1000);
// Expiry rounds up: `exp` is whole seconds, and a token must live at least the expires_in it promises.
const secondsFromNow = (seconds: number) => Math.ceil(Date.now() / 1000) + seconds;
const randomId = () => randomBytes(16).toString("base64url");

// ─── The single-use memory ───────────────

/** The state every instance must share: spent code / refresh-token IDs and revoked sessions. */
export interface SingleUseStore {
  /** Records `id` as spent until `expiresAt` (epoch seconds); resolves true for the first caller only. */
  spendOnce(id: string, expiresAt: number): Promise<boolean>;
  /** Marks session `sid` revoked until `expiresAt` (epoch seconds). */
  revokeSession(sid: string, expiresAt: number): Promise<void>;
  isRevoked(sid: string): Promise<boolean>;
}

/**
 * The default store: two Maps, one unref'd timer per entry that deletes it at the token's own expiry.
 * Memory is bounded by expiry alone: every entry is a token this server signed, and none outlives it.
 */
export class MemoryStore implements SingleUseStore {
  readonly #spent = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #revoked = new Map<string, ReturnType<typeof setTimeout>>();

  async spendOnce(id: string, expiresAt: number): Promise<boolean> {
    if (this.#spent.has(id)) return false;
    rememberUntil(this.#spent, id, expiresAt);
    return true;
  }
  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    rememberUntil(this.#revoked, sid, expiresAt);
  }
  async isRevoked(sid: string): Promise<boolean> {
    return this.#revoked.has(sid);
  }
  get size(): number {
    return this.#spent.size + this.#revoked.size;
  }
}

function rememberUntil(map: Map<string, ReturnType<typeof setTimeout>>, key: string, expiresAt: number) {
  clearTimeout(map.get(key));
  // Timers, not a sweep: each entry leaves exactly when its token could no longer be presented anyway.
  const timer = setTimeout(() => map.delete(key), Math.max(0, expiresAt * 1000 - Date.now()));
  timer.unref(); // a pending expiry must not keep the process alive
  map.set(key, timer);
}

/** Thrown when the shared store cannot answer: callers fail closed with a 503, never a success. */
class StoreUnavailable extends Error {}

function failClosed(store: SingleUseStore): SingleUseStore {
  const guard = <T>(call: () => Promise<T>) =>
    Promise.resolve().then(call).catch((error: unknown) => {
      throw new StoreUnavailable(String(error));
    });
  return {
    spendOnce: (id, expiresAt) => guard(() => store.spendOnce(id, expiresAt)),
    revokeSession: (sid, expiresAt) => guard(() => store.revokeSession(sid, expiresAt)),
    isRevoked: (sid) => guard(() => store.isRevoked(sid)),
  };
}

// ─── The server ──────────────────────────

export interface RunningServer {
  url: string; // base URL on loopback, e.g. http://127.0.0.1:3097
  server: Server;
  close(): Promise<void>;
}

/** Builds the server and starts listening. Options override the environment (tests listen on port 0). */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const config = readConfig(options);
  const log = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const store = failClosed(options.store ?? new MemoryStore());
  if (config.secret === undefined) log("JWT_SECRET is not set: signing with a random secret for this process only");
  // Import the key once: handing jose raw bytes would import them again on every sign and verify.
  const keyBytes = config.secret === undefined ? randomBytes(32) : new TextEncoder().encode(config.secret);
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
  const longestTtl = Math.max(config.accessTtl, config.refreshTtl);
  let listeningPort = config.port;

  /** The base URL for links and `iss`: PUBLIC_URL, else the Host header only when it names loopback. */
  function baseUrl(req: IncomingMessage): string {
    if (config.publicUrl) return config.publicUrl;
    const host = req.headers.host ?? "";
    return isLoopbackHost(host.replace(/:\d{1,5}$/, "")) ? `http://${host}` : `http://localhost:${listeningPort}`;
  }

  function sign(kind: TokenKind, issuer: string, claims: JWTPayload, ttlSeconds?: number): Promise<string> {
    const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE[kind] }).setIssuer(issuer)
      .setIssuedAt();
    return (ttlSeconds === undefined ? jwt : jwt.setExpirationTime(secondsFromNow(ttlSeconds))).sign(key);
  }

  /** Signature, `typ`, issuer, expiry and (when given) audience — or undefined; never a throw for the caller. */
  function verify(
    kind: TokenKind,
    token: string,
    issuer: string | undefined,
    audience?: string,
  ): Promise<JWTPayload | undefined> {
    const checks = { algorithms: ["HS256"], typ: TOKEN_TYPE[kind], issuer, audience };
    return jwtVerify(token, key, checks).then((verified) => verified.payload, () => undefined);
  }

  /** Ends a session: every access and refresh token carrying `sid` stops working (checked on each use). */
  async function revokeSession(sid: string, from: number, reason: string) {
    await store.revokeSession(sid, from + longestTtl);
    log(`[oauth] session ${sid} revoked: ${reason}`);
  }

  /** RFC 8707 §2: `resource` names the server a token is for; only this server's MCP endpoint may be asked for. */
  const namesOtherResource = (resource: string | undefined, base: string) =>
    resource !== undefined && resource !== `${base}/mcp`;

  function oauthError(res: ServerResponse, status: number, error: string, description: string) {
    log(`[oauth] rejected ${error}: ${description}`);
    sendJson(res, status, { error, error_description: description });
  }

  // ─── /authorize ────────────────────────
  // Until client and redirect_uri are trusted, every error is a 400 shown here, never a redirect
  // (RFC 6749 §4.1.2.1): redirecting to an unchecked URI would make this server an open redirector.

  async function authorize(req: IncomingMessage, res: ServerResponse, query: URLSearchParams) {
    const base = baseUrl(req);
    const param = (name: string) => query.get(name) ?? undefined;
    const repeated = repeatedName(query);
    if (repeated) return oauthError(res, 400, "invalid_request", `${repeated} is repeated`);
    const clientId = param("client_id");
    if (!clientId) return oauthError(res, 400, "invalid_request", "client_id is required");
    const client = await identifyClient(clientId);
    if (!client) {
      return oauthError(
        res,
        400,
        "invalid_client",
        "client_id must be registered at /register or be a Client ID Metadata Document URL",
      );
    }

    // redirect_uri: required, https or loopback http, no fragment (OAuth 2.1 §2.3.1, RFC 8252 §7.3);
    // a registered client may only use what it registered.
    const redirectUri = param("redirect_uri") ?? "";
    const problem = redirectUriProblem(redirectUri);
    if (problem) return oauthError(res, 400, "invalid_request", problem);
    if (client.redirectUris && !client.redirectUris.some((registered) => redirectUriMatches(registered, redirectUri))) {
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

    const resource = param("resource");
    if (namesOtherResource(resource, base)) {
      return oauthError(res, 400, "invalid_target", `resource must be ${base}/mcp`);
    }
    const scope = param("scope") ?? SCOPE;
    if (scope.split(" ").some((s) => s !== SCOPE)) {
      return oauthError(res, 400, "invalid_scope", `the only scope is "${SCOPE}"`);
    }
    const state = param("state");

    // Deny goes straight back to the client; RFC 9207 `iss` tells it which server answered.
    const back = (extra: Record<string, string>) => {
      const target = new URL(redirectUri);
      Object.entries({ ...extra, ...(state !== undefined && { state }), iss: base }).forEach(([name, value]) =>
        target.searchParams.set(name, value)
      );
      return target.href;
    };
    // Demo only: consent is one click on a link, for the fixed user. A real server signs the user in first
    // and takes the decision as a POST carrying a CSRF token.
    if (param("approved") !== "1") {
      const approve = new URL(`${base}/authorize?${query}`);
      approve.searchParams.set("approved", "1");
      const deny = back({ error: "access_denied", error_description: "The user denied the request" });
      const page = consentPage({ client: client.name, scope, redirectUri, resource, approve: approve.href, deny });
      // No framing: a page that approves in one click must not sit invisibly under another site's button.
      const noFraming = { "x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'" };
      return send(res, 200, "text/html; charset=utf-8", page, { "cache-control": "no-store", ...noFraming });
    }

    // The code is the authorization request itself, signed, with its own jti (single use, see /token).
    const request = { client_id: clientId, redirect_uri: redirectUri, code_challenge: challenge, scope, resource };
    const code = await sign("code", base, { jti: randomId(), ...request }, CODE_TTL_SECONDS);
    log(`[oauth] code issued to ${client.name}`);
    res.writeHead(302, { location: back({ code }) }).end();
  }

  /** A client is either a signed DCR client_id (its redirect URIs inside) or a metadata-document URL. */
  async function identifyClient(clientId: string): Promise<{ name: string; redirectUris?: string[] } | undefined> {
    // Client ID Metadata Document: an https URL with a path (or loopback http, for local tests).
    // Demo only: a real server fetches the document and requires redirect_uri to be listed in it.
    if (URL.canParse(clientId)) {
      const url = new URL(clientId);
      const secure = url.protocol === "https:" || (url.protocol === "http:" && isLoopbackHost(url.hostname));
      return secure && url.pathname !== "/" && !url.hash ? { name: clientId } : undefined;
    }
    const registered = await verify("client", clientId, undefined); // any issuer: the key alone proves it is ours
    if (!registered || !Array.isArray(registered.redirect_uris)) return undefined;
    const name = typeof registered.client_name === "string" ? registered.client_name : "registered client";
    return { name, redirectUris: registered.redirect_uris.filter((uri) => typeof uri === "string") };
  }

  /** The redirect_uri rules /authorize and /register share: why a URI is unacceptable, or undefined. */
  function redirectUriProblem(uri: string): string | undefined {
    if (!uri) return "redirect_uri is required";
    if (!URL.canParse(uri)) return "redirect_uri must be an absolute URL";
    const url = new URL(uri);
    if (uri.includes("#")) return "redirect_uri must not contain a fragment"; // RFC 6749 §3.1.2
    // Codes travel in the query: only TLS, or a loopback interface that never leaves the machine, keeps them private.
    if (url.protocol === "https:" || (url.protocol === "http:" && isLoopbackHost(url.hostname))) return undefined;
    return "redirect_uri must be https, or http on a loopback host";
  }

  /** Exact match, except a registered loopback URI allows any port (RFC 8252 §7.3: native apps pick one per run). */
  function redirectUriMatches(registered: string, requested: string): boolean {
    if (registered === requested) return true;
    const a = new URL(registered);
    const b = new URL(requested);
    return a.protocol === "http:" && isLoopbackHost(a.hostname) &&
      a.protocol === b.protocol && a.hostname === b.hostname && a.pathname === b.pathname && a.search === b.search;
  }

  /**
   * Two plain links styled as buttons, so consent works without JavaScript in any popup or embedded
   * browser; where scripts run, Space activates them as it would a button. Every echoed value is escaped.
   */
  function consentPage(
    view: { client: string; scope: string; redirectUri: string; resource?: string; approve: string; deny: string },
  ) {
    const e = escapeHtml;
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>Authorize access</title>
<style>body{font:16px system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}dd{margin:0 0 .8rem;word-break:break-all}
a[role=button]{display:inline-block;padding:.6rem 1.4rem;margin-right:.6rem;border-radius:.4rem;text-decoration:none;border:1px solid #1a56db}
#approve{background:#1a56db;color:#fff}#deny{color:#1a56db}</style></head>
<body><h1>Authorize access?</h1>
<p>An application asks to act as <strong>${USER}</strong> on this MCP server.</p>
<dl><dt>Client</dt><dd>${e(view.client)}</dd><dt>Scope</dt><dd>${e(view.scope)}</dd>
<dt>Redirect</dt><dd>${e(view.redirectUri)}</dd><dt>Resource</dt><dd>${e(view.resource ?? "(not named)")}</dd></dl>
<p><a id="approve" role="button" href="${e(view.approve)}">Approve</a><a id="deny" role="button" href="${
      e(view.deny)
    }">Deny</a></p>
<script>for (const a of document.querySelectorAll("[role=button]")) a.onkeydown = (k) => { if (k.key === " ") { k.preventDefault(); a.click(); } };</script></body></html>`;
  }

  // ─── /token ────────────────────────────
  // Every answer carries Cache-Control: no-store (RFC 6749 §5.1, set in route() so that 405 and 413 have
  // it too); every error is {error, error_description}.

  async function token(req: IncomingMessage, res: ServerResponse, body: string) {
    const params = parseTokenRequest(req.headers["content-type"], body);
    if (typeof params === "string") return oauthError(res, 400, "invalid_request", params);
    const grantType = params.grant_type;
    if (!grantType) return oauthError(res, 400, "invalid_request", "grant_type is required");
    if (grantType === "authorization_code") return exchangeCode(req, res, params);
    if (grantType === "refresh_token") return refresh(req, res, params);
    return oauthError(res, 400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token");
  }

  async function exchangeCode(req: IncomingMessage, res: ServerResponse, params: Record<string, string>) {
    const base = baseUrl(req);
    if (!params.code) return oauthError(res, 400, "invalid_request", "code is required");
    if (!params.client_id) return oauthError(res, 400, "invalid_request", "client_id is required");
    const code = await verify("code", params.code, base);
    if (!code?.jti || typeof code.exp !== "number") {
      return oauthError(res, 400, "invalid_grant", "code is invalid or expired");
    }

    // Single use (RFC 6749 §4.1.2): the first redemption attempt spends the code, whatever its outcome.
    // A second one means the code leaked, so the session the first one started is revoked too. The
    // session id *is* the code's jti, reserved at this instant: a replay racing the first exchange
    // still revokes the tokens that exchange is about to mint.
    const sid = code.jti;
    if (!(await store.spendOnce(code.jti, code.exp))) {
      await revokeSession(sid, code.exp, "authorization code replayed");
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
    if (namesOtherResource(params.resource, base)) {
      return oauthError(res, 400, "invalid_target", `resource must be ${base}/mcp`);
    }

    const scope = typeof code.scope === "string" ? code.scope : SCOPE;
    const sessionExpiresAt = secondsFromNow(config.refreshTtl); // absolute: rotation never extends it
    log(`[oauth] code exchanged: session ${sid} started`);
    return issueTokens(res, base, { sid, client_id: params.client_id, scope }, sessionExpiresAt);
  }

  // Refresh tokens rotate on every use; a spent one presented again means it leaked, so the whole
  // session goes (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
  async function refresh(req: IncomingMessage, res: ServerResponse, params: Record<string, string>) {
    const base = baseUrl(req);
    if (!params.refresh_token) return oauthError(res, 400, "invalid_request", "refresh_token is required");
    if (!params.client_id) return oauthError(res, 400, "invalid_request", "client_id is required");
    const old = await verify("refresh", params.refresh_token, base);
    if (!old?.jti || typeof old.sid !== "string" || typeof old.exp !== "number") {
      return oauthError(res, 400, "invalid_grant", "refresh_token is invalid or expired");
    }
    if (params.client_id !== old.client_id) {
      return oauthError(res, 400, "invalid_grant", "refresh_token was issued to another client");
    }
    if (await store.isRevoked(old.sid)) return oauthError(res, 400, "invalid_grant", "the session was revoked");
    if (namesOtherResource(params.resource, base)) {
      return oauthError(res, 400, "invalid_target", `resource must be ${base}/mcp`);
    }
    if (!(await store.spendOnce(old.jti, old.exp))) {
      await revokeSession(old.sid, nowSeconds(), "refresh token reused");
      return oauthError(res, 400, "invalid_grant", "refresh_token was already used; its session is revoked");
    }
    log(`[oauth] tokens refreshed for session ${old.sid}`);
    const scope = typeof old.scope === "string" ? old.scope : SCOPE;
    return issueTokens(res, base, { sid: old.sid, client_id: params.client_id, scope }, old.exp);
  }

  /** An RFC 9068 access token for this resource, plus a fresh refresh token ending with the session. */
  async function issueTokens(
    res: ServerResponse,
    base: string,
    session: { sid: string; client_id: string; scope: string },
    sessionExpiresAt: number,
  ) {
    const [accessToken, refreshToken] = await Promise.all([ // independent signatures: let them overlap
      sign("access", base, { sub: USER, aud: `${base}/mcp`, jti: randomId(), ...session }, config.accessTtl),
      sign("refresh", base, { jti: randomId(), ...session, exp: sessionExpiresAt }),
    ]);
    const answer = {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: config.accessTtl,
      refresh_token: refreshToken,
      scope: session.scope,
    };
    sendJson(res, 200, answer);
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
    return repeated ? `${repeated} is repeated` : Object.fromEntries(form);
  }

  // ─── /register ─────────────────────────
  // Stateless dynamic client registration (RFC 7591): the client_id returned is itself a signed token
  // carrying the registered redirect URIs, so /authorize can hold a client to them with nothing stored.
  // MCP 2026-07-28 prefers Client ID Metadata Documents; this stays as the path for hosts that register.

  async function register(req: IncomingMessage, res: ServerResponse, body: string) {
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
    const appType = metadata.application_type !== undefined
      ? metadata.application_type
      : (uris.every((uri) => isLoopbackHost(new URL(uri).hostname)) ? "native" : "web");
    if (appType !== "web" && appType !== "native") {
      return oauthError(res, 400, "invalid_client_metadata", "application_type must be web or native");
    }
    if (appType === "web" && uris.some((uri) => new URL(uri).protocol !== "https:")) {
      return oauthError(res, 400, "invalid_redirect_uri", "a web client's redirect_uris must be https");
    }
    if (name !== undefined && (typeof name !== "string" || name.length > 200)) {
      return oauthError(res, 400, "invalid_client_metadata", "client_name must be a string of at most 200 characters");
    }
    const methods = metadata.token_endpoint_auth_method;
    if (methods !== undefined && methods !== "none") {
      return oauthError(
        res,
        400,
        "invalid_client_metadata",
        "only public clients (token_endpoint_auth_method none) are supported",
      );
    }
    if (
      !isSubset(metadata.grant_types, ["authorization_code", "refresh_token"]) ||
      !isSubset(metadata.response_types, ["code"])
    ) {
      return oauthError(
        res,
        400,
        "invalid_client_metadata",
        "grant_types may hold authorization_code and refresh_token; response_types only code",
      );
    }
    const client = { redirect_uris: uris, application_type: appType, ...(name !== undefined && { client_name: name }) };
    const clientId = await sign("client", baseUrl(req), client);
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

  // ─── Discovery metadata ────────────────

  /** RFC 8414 §2: where the endpoints are and what this authorization server insists on. */
  function authorizationServerMetadata(req: IncomingMessage, res: ServerResponse) {
    const base = baseUrl(req);
    sendJson(res, 200, {
      issuer: base,
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

  /** RFC 9728 §3: the MCP endpoint is the protected resource, and this server is its authorization server. */
  function protectedResourceMetadata(req: IncomingMessage, res: ServerResponse) {
    const base = baseUrl(req);
    sendJson(res, 200, {
      resource: `${base}/mcp`,
      authorization_servers: [base],
      scopes_supported: [SCOPE],
      bearer_methods_supported: ["header"],
    });
  }

  // ─── /mcp ──────────────────────────────
  // MCP Streamable HTTP with JSON responses and no sessions: every POST stands alone.

  const noArguments = { type: "object", properties: {}, additionalProperties: false };
  const TOOLS = [
    {
      name: "whoami",
      description: "Says who is calling: the signed-in user when a valid token came along, else anonymous.",
      inputSchema: noArguments,
    },
    {
      name: "get_secret",
      description: "Returns the secret. Protected: calling it without a token starts the OAuth flow.",
      inputSchema: noArguments,
      _meta: appMeta(SECRET_APP_URI),
    },
    {
      name: "revoke_auth_token",
      description: "Protected: ends the caller's session; its access and refresh tokens stop working.",
      inputSchema: noArguments,
    },
    {
      name: "show_auth_button",
      description: "Shows a small app with an Auth me button (calls get_secret) and a Revoke token button.",
      inputSchema: noArguments,
      _meta: appMeta(AUTH_BUTTON_APP_URI),
    },
  ];
  const PROTECTED_TOOLS = new Set(["get_secret", "revoke_auth_token"]);
  const HANDSHAKE_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26"];
  const MODERN_VERSION = "2026-07-28";
  const ALL_VERSIONS = [MODERN_VERSION, ...HANDSHAKE_VERSIONS];
  const META_VERSION = "io.modelcontextprotocol/protocolVersion";
  const META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";
  type Rejection = { code: number; message: string; data?: unknown };

  async function mcp(req: IncomingMessage, res: ServerResponse, body: string) {
    if (!isJson(req.headers["content-type"])) {
      return rpcError(res, 415, null, -32600, "Content-Type must be application/json");
    }
    const message = parseJson(body);
    if (message === undefined) return rpcError(res, 400, null, -32700, "Parse error: the body is not JSON");
    if (!isObject(message) || message.jsonrpc !== "2.0") {
      return rpcError(res, 400, null, -32600, "Invalid Request: expected one JSON-RPC 2.0 message");
    }
    const { id, method } = message;
    const badId = id !== undefined && typeof id !== "string" && typeof id !== "number";
    if (badId) return rpcError(res, 400, null, -32600, "Invalid Request: id must be a string or a number");
    // Notifications, and a client's answers to server requests, are accepted with no body (202).
    const isAnswer = method === undefined && id !== undefined && ("result" in message || "error" in message);
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
    const base = baseUrl(req);
    const caller = method === "tools/call" ? await authenticate(req, base) : { tokenSent: false };
    if (
      method === "tools/call" && typeof params.name === "string" && PROTECTED_TOOLS.has(params.name) && !caller.claims
    ) {
      // RFC 9728 §5.1: the challenge names where discovery starts; RFC 6750 §3: invalid_token when a
      // token was sent but did not count.
      const challenge = [`resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`, `scope="${SCOPE}"`];
      if (caller.tokenSent) {
        challenge.push(`error="invalid_token"`, `error_description="The access token is invalid, expired or revoked"`);
      }
      if (caller.tokenSent) log(`[oauth] ${params.name} refused: the token is invalid, expired or revoked`);
      return rpcError(res, 401, id, -32001, "Authentication required", {
        "www-authenticate": `Bearer ${challenge.join(", ")}`,
      });
    }
    const outcome = await answer(method, params, caller.claims, modern);
    if ("error" in outcome) {
      return rpcError(
        res,
        modern && outcome.error.code === -32601 ? 404 : 200,
        id,
        outcome.error.code,
        outcome.error.message,
      );
    }
    sendJson(res, 200, {
      jsonrpc: "2.0",
      id,
      result: modern ? { resultType: "complete", ...outcome.result } : outcome.result,
    });
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

  /** An access token counts only if signature, typ, issuer, audience, expiry and session all check out. */
  async function authenticate(
    req: IncomingMessage,
    base: string,
  ): Promise<{ claims?: JWTPayload; tokenSent: boolean }> {
    const header = req.headers.authorization;
    if (header === undefined) return { tokenSent: false };
    const bearer = /^Bearer +([\w.~+/-]+=*) *$/i.exec(header)?.[1]; // RFC 6750 §2.1
    const claims = bearer ? await verify("access", bearer, base, `${base}/mcp`) : undefined;
    if (!claims || typeof claims.sid !== "string" || (await store.isRevoked(claims.sid))) return { tokenSent: true };
    return { claims, tokenSent: true };
  }

  type Outcome = { result: Record<string, unknown> } | { error: { code: number; message: string; data?: unknown } };

  async function answer(
    method: string,
    params: Record<string, unknown>,
    claims: JWTPayload | undefined,
    modern: boolean,
  ): Promise<Outcome> {
    // The tool list is the same for every caller and fixed for the life of the process: a modern client
    // may cache it (and the discover answer) for a minute, shared across users.
    const cacheHint = modern && { ttlMs: 60_000, cacheScope: "public" };
    if (method === "server/discover" && modern) {
      const serverInfo = { "io.modelcontextprotocol/serverInfo": SERVER_INFO };
      return {
        result: {
          supportedVersions: ALL_VERSIONS,
          capabilities: CAPABILITIES,
          instructions: INSTRUCTIONS,
          ...cacheHint,
          _meta: serverInfo,
        },
      };
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
    if (method === "tools/call") return callTool(params, claims);
    if (method === "resources/list") return { result: { resources: APP_RESOURCES, ...cacheHint } };
    if (method === "resources/read") return readResource(params, modern);
    return { error: { code: -32601, message: `Method not found: ${method}` } };
  }

  async function callTool(params: Record<string, unknown>, claims: JWTPayload | undefined): Promise<Outcome> {
    const { name, arguments: args = {} } = params;
    if (typeof name !== "string" || !TOOLS.some((tool) => tool.name === name)) {
      return { error: { code: -32602, message: `Invalid params: unknown tool ${quote(name)}` } };
    }
    if (!isObject(args) || Object.keys(args).length > 0) {
      return { error: { code: -32602, message: "Invalid params: this tool takes no arguments" } };
    }
    const text = (value: string) => ({ result: { content: [{ type: "text", text: value }], isError: false } });
    if (name === "whoami") {
      return text(claims ? `You are ${claims.sub}, signed in through ${claims.client_id}.` : "You are anonymous.");
    }
    if (name === "show_auth_button") return text("Showing the Auth me button. Click it to call get_secret.");
    if (!claims || typeof claims.sid !== "string") {
      return { error: { code: -32001, message: "Authentication required" } };
    }
    if (name === "get_secret") {
      return text(`The secret is: ${SECRET}. (Shown to ${claims.sub}, session ${claims.sid}.)`);
    }
    await revokeSession(claims.sid, nowSeconds(), "revoke_auth_token called");
    return text(
      "Your session is revoked: its access and refresh tokens no longer work. The next protected call starts a new sign-in.",
    );
  }

  // ─── The MCP App ───────────────────────
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

  // ─── Routing, CORS, body limits ────────

  type Handler = (
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    body: string,
  ) => Promise<void> | void;
  const routes: Record<string, Record<string, Handler>> = {
    "/": { GET: (req, res) => send(res, 200, "text/plain; charset=utf-8", landingText(baseUrl(req))) },
    "/.well-known/oauth-authorization-server": { GET: authorizationServerMetadata },
    "/.well-known/oauth-protected-resource": { GET: protectedResourceMetadata },
    "/.well-known/oauth-protected-resource/mcp": { GET: protectedResourceMetadata },
    "/authorize": { GET: (req, res, query) => authorize(req, res, query) },
    "/token": { POST: (req, res, _query, body) => token(req, res, body) },
    "/register": { POST: (req, res, _query, body) => register(req, res, body) },
    "/mcp": { POST: (req, res, _query, body) => mcp(req, res, body) },
  };

  async function route(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams) {
    // Wildcard CORS is safe *here*: nothing rides on cookies or other ambient credentials — every
    // credential is an explicit Authorization header or request parameter — and browser-based hosts on
    // any origin must be able to read WWW-Authenticate to start the flow. Demo only: a real server would
    // list its allowed origins, and check Origin on /mcp against DNS rebinding as the MCP spec asks.
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("access-control-expose-headers", "WWW-Authenticate");
    if (path === "/token") res.setHeader("cache-control", "no-store"); // RFC 6749 §5.1: tokens must not be cached
    if (req.method === "OPTIONS") {
      const allowHeaders =
        "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name";
      return void res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": allowHeaders,
      }).end();
    }
    const handlers = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!handlers) return httpError(res, path, 404, "not_found", `Nothing at ${path}`);
    const handler = Object.hasOwn(handlers, req.method ?? "") ? handlers[req.method ?? ""] : undefined;
    if (!handler) {
      const allow = Object.keys(handlers).join(", ");
      return httpError(res, path, 405, "method_not_allowed", `${path} answers ${allow} only`, { allow });
    }
    if (req.method !== "POST") return handler(req, res, query, "");
    const body = await readBody(req, BODY_LIMIT_BYTES);
    if (body === undefined) {
      return httpError(res, path, 413, "invalid_request", `The body is over ${BODY_LIMIT_BYTES} bytes`);
    }
    return handler(req, res, query, body);
  }

  /** Errors outside a handler's own checks, in the shape the path speaks: JSON-RPC on /mcp, OAuth elsewhere. */
  function httpError(
    res: ServerResponse,
    path: string,
    status: number,
    error: string,
    description: string,
    headers: Record<string, string> = {},
  ) {
    if (path === "/mcp") return rpcError(res, status, null, status === 413 ? -32600 : -32000, description, headers);
    sendJson(res, status, { error, error_description: description }, headers);
  }

  // ─── Start ─────────────────────────────

  const server = createServer((req, res) => {
    const url = req.url ?? "/";
    const split = url.indexOf("?");
    const path = split === -1 ? url : url.slice(0, split);
    route(req, res, path, new URLSearchParams(split === -1 ? "" : url.slice(split + 1))).catch((error: unknown) => {
      // Every failure becomes a JSON answer and the process lives; no stack trace leaves the server.
      if (res.headersSent) return void res.destroy();
      if (error instanceof StoreUnavailable) {
        log(`[oauth] store unavailable: ${error.message}`);
        return httpError(res, path, 503, "temporarily_unavailable", "The token store cannot answer; try again shortly");
      }
      log(`[error] ${req.method} ${path}: ${String(error)}`);
      httpError(res, path, 500, "server_error", "Internal error");
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, options.host, () => resolve());
  });
  const address = server.address();
  listeningPort = typeof address === "object" && address ? address.port : config.port;
  return {
    url: `http://${options.host === "localhost" ? "localhost" : "127.0.0.1"}:${listeningPort}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections(); // requests in flight may finish; one still stuck after a second is cut
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      }),
  };
}

// ─── Small helpers ───────────────────────

const BODY_LIMIT_BYTES = 64 * 1024;
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;
const SERVER_INFO = { name: "lazy-auth-example", version: "0.1.0" };
const CAPABILITIES = { tools: {}, resources: {} }; // resources: the MCP App's views are read as resources
const SECRET = "lazy auth works"; // what get_secret guards
const INSTRUCTIONS =
  "whoami is public. get_secret and revoke_auth_token need you to sign in: calling one starts OAuth.";

const landingText = (base: string) =>
  `Lazy-auth MCP server
  MCP endpoint (Streamable HTTP, MCP 2025-03-26 to 2026-07-28): ${base}/mcp
  Discovery: ${base}/.well-known/oauth-protected-resource/mcp, ${base}/.well-known/oauth-authorization-server
  OAuth: ${base}/authorize ${base}/token ${base}/register
  Tools: whoami (public), get_secret and revoke_auth_token (protected)
`;

/**
 * Reads a request body up to `limit` bytes; undefined (answer 413) as soon as it is larger. The rest is
 * read and dropped, so a client still sending can read the 413 instead of a reset connection — but only
 * up to DRAIN_LIMIT_BYTES, and for a second: then the connection is cut, never left hanging.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
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
    req.on("error", reject);
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

const AUTH_BUTTON_APP = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Auth me</title></head>
<body><button id="auth">Auth me</button> <button id="revoke">Revoke token</button><p id="answer"></p></body></html>
`;

const SECRET_APP = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Secret</title></head>
<body><p id="secret">Waiting for the secret…</p></body></html>
`;

// Started directly (`tsx server.ts`, `deno run server.ts`) rather than imported? Deno says so with
// import.meta.main; under Node, compare the script path with this module's own.
const isEntryPoint = (import.meta as ImportMeta & { main?: boolean }).main ??
  process.argv[1] === fileURLToPath(import.meta.url);
if (isEntryPoint) {
  startServer().then((running) => {
    console.log(landingText(process.env.PUBLIC_URL ?? running.url.replace("127.0.0.1", "localhost")));
    const stop = () => void running.close().then(() => process.exit(0));
    process.once("SIGINT", stop).once("SIGTERM", stop); // graceful: finish in-flight requests, then exit
  }, (error: unknown) => {
    console.error(error instanceof ConfigError ? error.message : `Could not start: ${String(error)}`);
    process.exit(1);
  });
}
