// Small helpers the test files share: a PKCE pair, an HTTP client wrapper that always reads the body,
// a loopback server for Client ID Metadata Documents, the consent form, and the whole sign-in
// (consent approved → code → tokens). Black-box: they speak HTTP and nothing else.

import { createHash, randomBytes } from "node:crypto";
import { createServer, request as httpRequest } from "node:http";
import { setImmediate } from "node:timers";
import type { LazyAuthEvent } from "../server.ts";

/** A PKCE pair (RFC 7636 §4.1–4.2): a 43-character verifier and its S256 challenge. */
export interface Pkce {
  verifier: string;
  challenge: string;
}

export function pkcePair(verifier: string = randomBytes(32).toString("base64url")): Pkce {
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** A response read to the end. `json` is the parsed body, or undefined when the body is not JSON. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // deno-lint-ignore no-explicit-any -- tests read JSON fields freely; a wrong guess fails the assertion that reads it
  json: any;
}

/** fetch that never follows redirects and always consumes the body (no dangling sockets). */
export async function request(url: string | URL, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(url, { redirect: "manual", ...init });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** POST application/x-www-form-urlencoded; parameters set to undefined are left out. */
export function postForm(url: string, params: Record<string, string | undefined>): Promise<Answer> {
  const body = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined) body.append(name, value);
  return request(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body });
}

/** POST application/json; extra headers set to undefined are left out. */
export function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string | undefined> = {},
): Promise<Answer> {
  const sent: Record<string, string> = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  };
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) delete sent[name.toLowerCase()];
    else sent[name.toLowerCase()] = value;
  }
  return request(url, { method: "POST", headers: sent, body: JSON.stringify(body) });
}

/** One JSON-RPC message to `<base>/mcp`, with a bearer token when given. */
export function rpc(
  base: string,
  message: unknown,
  options: { token?: string; headers?: Record<string, string | undefined> } = {},
) {
  const authorization = options.token === undefined ? undefined : `Bearer ${options.token}`;
  return postJson(`${base}/mcp`, message, { authorization, ...options.headers });
}

/** `tools/call` in the 2025 handshake era (no _meta, no routing headers). */
export function callTool(base: string, name: string, token?: string) {
  return rpc(base, { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name, arguments: {} } }, { token });
}

// ─── Client ID Metadata Documents ────────────────────────────────────────────────────────────────

/** What the document server answers at one path. An object body is sent as JSON, a string as it is. */
export interface DocumentAnswer {
  body: unknown;
  status?: number; // default 200
  headers?: Record<string, string>; // added to content-type: application/json (Cache-Control, Location, …)
  delayMs?: number; // answer only after this long (a slow site)
}

/**
 * A loopback web server standing in for the sites that publish Client ID Metadata Documents: a test puts
 * a document (or any answer) at a path, the server under test fetches it, and the test counts the fetches.
 */
export interface ClientDocuments {
  origin: string; // http://127.0.0.1:PORT
  /** Answers `answer` at `path` from now on; returns the URL. */
  serve(path: string, answer: DocumentAnswer): string;
  /** A valid document for a public client at `path`: its client_id is its own URL. Returns that URL. */
  client(path: string, redirectUris: string[], options?: ClientDocumentOptions): string;
  /** How many times `path` was fetched so far. */
  fetches(path: string): number;
}

export interface ClientDocumentOptions {
  name?: string;
  cacheControl?: string; // default none: the server must not cache the document
  extra?: Record<string, unknown>; // more metadata fields, or overrides
}

/** Starts a document server on a free loopback port. It never keeps the process alive (unref'd, no keep-alive). */
export async function startClientDocuments(): Promise<ClientDocuments> {
  const answers = new Map<string, DocumentAnswer>();
  const counts = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = req.url ?? "/";
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const answer = answers.get(path) ?? { status: 404, body: { error: "no document here" } };
    const body = typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body);
    const send = () =>
      res.writeHead(answer.status ?? 200, {
        "content-type": "application/json",
        connection: "close",
        ...answer.headers,
      }).end(body);
    if (answer.delayMs) setTimeout(send, answer.delayMs).unref();
    else send();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject).listen(0, "127.0.0.1", () => resolve());
  });
  server.unref();
  const address = server.address();
  const origin = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  const documents: ClientDocuments = {
    origin,
    serve(path, answer) {
      answers.set(path, answer);
      return `${origin}${path}`;
    },
    client(path, redirectUris, options = {}) {
      const url = `${origin}${path}`;
      const headers = options.cacheControl === undefined ? undefined : { "cache-control": options.cacheControl };
      const body = {
        client_id: url,
        client_name: options.name ?? "Test client",
        redirect_uris: redirectUris,
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
        ...options.extra,
      };
      return documents.serve(path, { body, headers });
    },
    fetches: (path) => counts.get(path) ?? 0,
  };
  return documents;
}

/** One document server per test process, started when this module loads. */
export const clientDocuments = await startClientDocuments();

export const REDIRECT_URI = "http://127.0.0.1:8765/callback";
/** A Client ID Metadata Document URL, served on loopback: the server fetches it and checks REDIRECT_URI is listed. */
export const CLIENT_ID = clientDocuments.client("/client.json", [REDIRECT_URI]);

export interface AuthorizeOptions {
  clientId?: string;
  redirectUri?: string;
  state?: string;
  pkce?: Pkce;
  resource?: string; // default <base>/mcp; e.g. <base>/ttl/86400/mcp for a long-lived resource
}

/** The query of an authorization request for this server's MCP resource (S256, scope mcp). */
export function authorizeUrl(base: string, options: AuthorizeOptions = {}): URL {
  const url = new URL(`${base}/authorize`);
  const params: Record<string, string | undefined> = {
    response_type: "code",
    client_id: options.clientId ?? CLIENT_ID,
    redirect_uri: options.redirectUri ?? REDIRECT_URI,
    code_challenge: (options.pkce ?? pkcePair()).challenge,
    code_challenge_method: "S256",
    scope: "mcp",
    resource: options.resource ?? `${base}/mcp`,
    state: options.state,
  };
  for (const [name, value] of Object.entries(params)) if (value !== undefined) url.searchParams.set(name, value);
  return url;
}

// ─── Consent ─────────────────────────────────────────────────────────────────────────────────────

/** Decodes the character references an HTML attribute value may hold. */
export function decodeHtmlAttribute(value: string): string {
  const named: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
  return value.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] !== "#") return named[ref.toLowerCase()] ?? whole;
    const code = ref[1] === "x" || ref[1] === "X" ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return String.fromCodePoint(code);
  });
}

/** The attributes of every `<tag …>` in `html`, values decoded. */
export function tagsOf(html: string, tag: string): Record<string, string>[] {
  return [...html.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, "gi"))].map((match) =>
    Object.fromEntries(
      [...match[1].matchAll(/([\w-]+)(?:\s*=\s*"([^"]*)")?/g)].map((
        attribute,
      ) => [attribute[1].toLowerCase(), decodeHtmlAttribute(attribute[2] ?? "")]),
    )
  );
}

/** The consent page's form: where it posts, and the signed consent token it carries. */
export interface ConsentForm {
  action: URL;
  consent: string;
}

/** Reads the consent form off the page: `<form method="post" action=…>` with a hidden `consent` input. */
export function consentForm(html: string, pageUrl: string | URL): ConsentForm {
  const form = tagsOf(html, "form").find((attributes) => attributes.method?.toLowerCase() === "post");
  if (!form) throw new Error(`the consent page has no POST form: ${html.slice(0, 300)}`);
  const consent = tagsOf(html, "input").find((attributes) => attributes.name === "consent")?.value;
  if (!consent) throw new Error("the consent form carries no consent token");
  return { action: new URL(form.action ?? "", pageUrl), consent };
}

/** Clicks Approve or Deny on the consent page: the form's POST (as a browser sends it, same origin). */
export function decide(
  form: ConsentForm,
  decision: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const body = new URLSearchParams({ consent: form.consent, decision });
  return request(form.action, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body,
  });
}

/** GET the consent page for `url`; fails unless it is one. */
export async function consentPage(url: URL): Promise<{ page: Answer; form: ConsentForm }> {
  const page = await request(url);
  if (page.status !== 200) throw new Error(`/authorize answered ${page.status}: ${page.text}`);
  return { page, form: consentForm(page.text, url) };
}

export interface Authorization {
  code: string;
  verifier: string;
  clientId: string;
  redirectUri: string;
  location: URL; // where the 303 sent the user agent
}

/** The user approves: GET the consent page, POST its form (decision=approve) → 303 back to the client with a code. */
export async function authorizeCode(base: string, options: AuthorizeOptions = {}): Promise<Authorization> {
  const pkce = options.pkce ?? pkcePair();
  const { form } = await consentPage(authorizeUrl(base, { ...options, pkce }));
  const answer = await decide(form, "approve");
  const location = answer.headers.get("location");
  if (answer.status !== 303 || !location) throw new Error(`approving answered ${answer.status}: ${answer.text}`);
  const back = new URL(location);
  const code = back.searchParams.get("code");
  if (!code) throw new Error(`/authorize redirected without a code: ${location}`);
  return {
    code,
    verifier: pkce.verifier,
    clientId: options.clientId ?? CLIENT_ID,
    redirectUri: options.redirectUri ?? REDIRECT_URI,
    location: back,
  };
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  scope: string;
  clientId: string;
}

/** The whole flow: approve, then exchange the code with its verifier and redirect_uri. */
export async function signIn(base: string, options: AuthorizeOptions = {}): Promise<Tokens> {
  const authorization = await authorizeCode(base, options);
  const answer = await postForm(`${base}/token`, {
    grant_type: "authorization_code",
    code: authorization.code,
    code_verifier: authorization.verifier,
    client_id: authorization.clientId,
    redirect_uri: authorization.redirectUri,
    resource: options.resource ?? `${base}/mcp`,
  });
  if (answer.status !== 200) throw new Error(`/token answered ${answer.status}: ${answer.text}`);
  return { ...answer.json, clientId: authorization.clientId };
}

// ─── Raw HTTP, events, waiting ───────────────────────────────────────────────────────────────────

export interface RawRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>; // Host included: fetch cannot set it
  body?: string;
  /** Connect to this address instead of the base URL's host (the port stays the base URL's). */
  connectTo?: string;
  /** The local address to connect from (a non-loopback address of this machine makes a non-loopback peer). */
  localAddress?: string;
}

/** Any request with any headers, Host included, over a fresh connection; the body read to the end. */
export function rawRequest(
  options: RawRequest,
  at: string,
): Promise<{ status: number; headers: Headers; text: string }> {
  const url = new URL(at);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({
      host: options.connectTo ?? url.hostname.replace(/^\[|\]$/g, ""),
      port: url.port,
      localAddress: options.localAddress,
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

/** The server's event stream, kept: pass `onEvent` to the server, read `events` (or `of(type)`). */
export function eventRecorder() {
  const events: LazyAuthEvent[] = [];
  return {
    events,
    onEvent: (event: LazyAuthEvent) => void events.push(event),
    of<T extends LazyAuthEvent["type"]>(type: T): Extract<LazyAuthEvent, { type: T }>[] {
      return events.filter((event): event is Extract<LazyAuthEvent, { type: T }> => event.type === type);
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One turn of the event loop: the server writes its trace lines in batches, once per turn. */
export const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Waits until `condition()` holds, looking every 10 ms; false if it still does not after `limitMs`. */
export async function waitFor(condition: () => boolean, limitMs = 5000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
  return true;
}

/** A promise and whether it has settled yet (to assert on order, not on time). */
export function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const watched = promise.finally(() => (done = true));
  return { promise: watched, settled: () => done };
}
