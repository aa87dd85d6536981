/**
 * Watch the flow: the lazy-auth server with a live page that draws every host's flow as it happens.
 *
 *   npm run demo            # = tsx examples/flow-page.ts; then connect an MCP host and open the printed /flow URL
 *
 * The page draws, per client, a sequence diagram between four lifelines — the host, the MCP endpoint, the
 * authorization server and the user's browser — one arrow per request, each with its status, one line of what it
 * means and the rule it obeys. Refusals and attacks (a replayed code and the session it revokes, a reused refresh
 * token, a cross-site consent POST, a foreign Host) stand out in colour and by label.
 *
 * It is a consumer of the server's event stream (`onEvent`), not a second logging path: one node:http server on
 * loopback answers `/flow`, `/flow/events` (Server-Sent Events) and `/flow/reset` itself and hands every other
 * request to the handler `createHandler` builds, whose console trace stays on.
 *
 * Grouping: an event that names its client (a ClientLabel) goes to that client's lane. A request that names none
 * goes to the lane of the most recent client seen with the same User-Agent; a User-Agent never seen with a client
 * gets an "Unidentified host" lane of its own, which becomes the client's lane the moment that agent names one
 * (a host's first requests — initialize, the 401, discovery — come before it has a client_id). Two hosts sharing
 * one User-Agent can be mixed up that way: the lane says which agents it holds.
 *
 * Safe by construction: events carry no token, code, consent token, secret or full client_id, and on top of that
 * every string is cut short, stripped of URL queries and schemes, and any long opaque run (a JWT, a random id) is
 * hidden before it is kept or sent. The page and its stream answer only a loopback Host from a loopback peer,
 * with no CORS header; the page refuses framing (X-Frame-Options, CSP frame-ancestors) and runs only its own
 * inline script (CSP hashes). Memory is bounded: the last MAX_STEPS steps are kept for new viewers, at most
 * MAX_VIEWERS watch at once, and a viewer whose socket buffer passes MAX_VIEWER_BUFFER_BYTES is dropped.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash } from "node:crypto";
import process from "node:process";
import { clearTimeout, setTimeout } from "node:timers"; // node:timers so `.unref()` exists under Deno too
import { fileURLToPath } from "node:url";
import { type ClientLabel, createHandler, type LazyAuthEvent, type ServerOptions, traceLine } from "../server.ts";

const MAX_STEPS = 500; // steps kept for a viewer who opens the page later
const MAX_VIEWERS = 8;
const MAX_VIEWER_BUFFER_BYTES = 1024 * 1024; // a viewer this far behind is dropped, not buffered for
const CLAIM_WAIT_MS = 1_000; // how long an event waits for the request it happened in before it is drawn alone
const MAX_PENDING = 64;
const MAX_NOTICES = 10;
const MAX_AGENTS = 256; // User-Agents remembered for grouping

// ─── What the page draws ─────────────────────────

/** The four lifelines, left to right. */
export type Actor = "host" | "mcp" | "as" | "browser";
/** How a step looks: ok, a quiet probe, information, a failure, an attack the server refused. */
export type Tone = "ok" | "quiet" | "info" | "fail" | "attack";
const TONE_RANK: Record<Tone, number> = { quiet: 0, ok: 1, info: 2, fail: 3, attack: 4 };

export interface FlowLine {
  text: string;
  cite?: string;
  tone: Tone;
}

/** One row of a lane's diagram: a request (an arrow from → to) or, when `method` is absent, a note on `to`. */
export interface FlowStep {
  seq: number;
  at: number;
  lane: string;
  from: Actor;
  to: Actor;
  method?: string;
  path?: string;
  status?: number | null; // null: the client left before the answer
  lines: FlowLine[]; // the first says what the step means; more follow when several things happened
  tone: Tone; // the strongest of the lines
  events: string[]; // the event types the step was drawn from
}

export interface FlowLane {
  key: string;
  title: string;
  detail: string; // the short client id, and the User-Agents seen
}

/** What the stream sends, one JSON object per `data:` line. */
export type FlowMessage =
  | { kind: "reset" } // forget everything (the first message of every connection, and after Reset)
  | { kind: "ready" } // the replay of kept steps is done
  | { kind: "lane"; lane: FlowLane } // a lane appears or its title changes
  | { kind: "merge"; from: string; into: string } // an unidentified host turned out to be this client
  | { kind: "step"; step: FlowStep }
  | { kind: "notice"; at: number; text: string }; // the server's own news (a random signing secret, …)

type RequestEvent = Extract<LazyAuthEvent, { type: "request" }>;
type OtherEvent = Exclude<LazyAuthEvent, { type: "request" }>;

// ─── Keeping secrets out ─────────────────────────

// deno-lint-ignore no-control-regex -- finding control characters is the point
const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const URL_TAIL = /\b([a-z][a-z0-9+.-]*:\/\/[^\s?#"'<>]*)[?#][^\s"'<>]*/gi; // a URL's query or fragment
const URL_SCHEME = /\b[a-z][a-z0-9+.-]*:\/\/(?=\S)/gi;
const OPAQUE_RUN = /[A-Za-z0-9_-]{32,}/g; // a JWT part, a random id, a client_id: never a word

/**
 * A string fit to show: control and bidi characters escaped, URLs without query, fragment or scheme (the same
 * host+path form a ClientLabel uses), long opaque runs hidden, cut to `max` characters.
 */
export function clean(value: unknown, max = 160): string {
  const text = typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  const safe = text
    .replace(URL_TAIL, "$1")
    .replace(URL_SCHEME, "")
    .replace(OPAQUE_RUN, "[hidden]")
    .replace(UNSAFE_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return safe.length > max ? `${safe.slice(0, max - 1)}…` : safe;
}

/** A request path without its query: codes, states and client_ids travel there. */
const cleanPath = (path: unknown) => clean(String(path ?? "").split(/[?#]/)[0], 120);
const cleanLabel = (client: ClientLabel | undefined): ClientLabel | undefined =>
  client === undefined ? undefined : { name: clean(client.name, 60) || "(unnamed client)", id: clean(client.id, 80) };

const NO_AGENT = "(no user agent)";

/** A short name for a User-Agent: the browser and its major version, or the first product token. */
export function shortAgent(agent: string): string {
  if (agent === NO_AGENT) return agent;
  const browser = /\b(HeadlessChrome|Edg|Firefox|Chrome|Safari)\/(\d+)/.exec(agent);
  if (browser) return `${browser[1]} ${browser[2]}`;
  if (agent.startsWith("Mozilla/")) return "a browser"; // the server keeps only the agent's first 60 characters
  return clean(agent.split(" ")[0] ?? "", 40) || NO_AGENT;
}

// ─── What each step means, and its rule ──────────

const isMcpPath = (path: string) => /^\/(ttl\/\d+\/)?mcp$/.test(path);
const isAuthorizationServerPath = (path: string) =>
  path === "/token" || path === "/register" ||
  /^\/\.well-known\/(oauth-authorization-server|openid-configuration)(\/|$)/.test(path);
const isResourceMetadataPath = (path: string) =>
  /^\/\.well-known\/oauth-protected-resource(\/|$)/.test(path) || path.startsWith("/oauth/protected-resource");

/** Who sends a request to whom: the user's browser opens the pages, the host calls everything else. */
export function actorsOf(path: string): [Actor, Actor] {
  if (path === "/authorize") return ["browser", "as"];
  if (path === "/elicitation-callback") return ["browser", "mcp"];
  return ["host", isAuthorizationServerPath(path) ? "as" : "mcp"];
}

/** Where an event's note sits when it is drawn without its request. */
function actorsOfEvent(event: OtherEvent): [Actor, Actor] {
  if ("path" in event) return actorsOf(event.path);
  switch (event.type) {
    case "consent_shown":
    case "consent_approved":
    case "consent_denied":
    case "consent_refused":
    case "metadata_document_refused":
      return ["browser", "as"];
    case "elicitation_visited":
      return ["browser", "mcp"];
    case "host_refused":
      return ["host", "mcp"];
    default:
      return ["host", "as"];
  }
}

/** What a request means from its method, path and status alone (the events it carried say more). */
export function requestLine(
  method: string,
  path: string,
  status: number | null,
  bearer: boolean,
  rpc?: string,
): FlowLine {
  if (status === null) return { text: "the client left before the answer", tone: "quiet" };
  if (method === "OPTIONS") {
    return { text: "CORS preflight from a browser-based host", cite: "Fetch §CORS", tone: "quiet" };
  }
  if (status === 403) return { text: "refused", tone: "fail" };
  if (status === 413) return { text: "body over the size limit: refused", tone: "fail" };
  if (status === 503) return { text: "temporarily unavailable: fails closed", tone: "fail" };
  if (status >= 500) return { text: "internal error (the process lives on)", tone: "fail" };
  if (isMcpPath(path)) {
    if (status === 401) {
      return { text: "no valid token for this call: 401 + WWW-Authenticate", cite: "RFC 6750 §3", tone: "info" };
    }
    if (status === 405) {
      return { text: "no stream to open here: POST only", cite: "MCP Streamable HTTP", tone: "quiet" };
    }
    if (status < 300) {
      const call = rpc ?? "MCP call";
      return bearer
        ? { text: `${call} with its bearer token: accepted`, cite: "RFC 6750 §2.1", tone: "ok" }
        : { text: `${call} without a token: public, answered`, cite: "MCP Streamable HTTP", tone: "ok" };
    }
    return { text: `MCP request refused (HTTP ${status})`, cite: "MCP Streamable HTTP", tone: "fail" };
  }
  if (isResourceMetadataPath(path)) {
    return status === 200
      ? { text: "protected-resource metadata: which authorization server to ask", cite: "RFC 9728 §3", tone: "ok" }
      : { text: "no resource metadata at this path: the host tries the next", cite: "RFC 9728 §3.1", tone: "quiet" };
  }
  if (path.startsWith("/.well-known/openid-configuration")) {
    return { text: "no OpenID Connect discovery here: OAuth metadata serves", cite: "RFC 8414 §5", tone: "quiet" };
  }
  if (path.startsWith("/.well-known/oauth-authorization-server")) {
    return status === 200
      ? { text: "authorization-server metadata: endpoints, PKCE S256, iss", cite: "RFC 8414 §3", tone: "ok" }
      : {
        text: "no authorization-server metadata here: the host tries the next",
        cite: "RFC 8414 §3.1",
        tone: "quiet",
      };
  }
  if (path === "/register") {
    return status === 201
      ? { text: "dynamic client registration: a client_id for this host", cite: "RFC 7591 §3.2.1", tone: "ok" }
      : { text: "registration refused", cite: "RFC 7591 §3.2.2", tone: "fail" };
  }
  if (path === "/authorize") {
    if (method === "GET" && status === 200) {
      return { text: "the consent page, shown to the user", cite: "RFC 6749 §4.1.1", tone: "ok" };
    }
    if (status === 303) {
      return { text: "the user's decision goes back to the client", cite: "RFC 6749 §4.1.2", tone: "ok" };
    }
    return { text: "authorization request refused, not redirected", cite: "RFC 6749 §4.1.2.1", tone: "fail" };
  }
  if (path === "/token") {
    return status === 200
      ? { text: "tokens issued", cite: "RFC 6749 §5.1", tone: "ok" }
      : { text: "token request refused", cite: "RFC 6749 §5.2", tone: "fail" };
  }
  if (path === "/elicitation-callback") {
    return status === 200
      ? { text: "the user opened the elicitation link", cite: "MCP elicitation, URL mode", tone: "ok" }
      : { text: "elicitation link refused", cite: "MCP elicitation, URL mode", tone: "fail" };
  }
  if (status === 404) return { text: "nothing at this path", tone: "quiet" };
  if (status === 405) return { text: "method not allowed here", tone: "quiet" };
  if (status >= 400) return { text: `refused (HTTP ${status})`, tone: "fail" };
  return { text: path === "/" ? "the landing page: endpoints and tools" : "answered", tone: "ok" };
}

const OAUTH_ERROR_CITES: Record<string, string> = {
  "/token": "RFC 6749 §5.2",
  "/authorize": "RFC 6749 §4.1.2.1",
  "/register": "RFC 7591 §3.2.2",
};

type LineOf = {
  [T in OtherEvent["type"]]: (event: OtherEvent & { type: T }, after: OtherEvent[]) => FlowLine;
};

/**
 * What each event means, and its rule. `after` holds the events already drawn in the same step: a session revoked
 * right after a replayed code or a reused refresh token is part of that attack's answer.
 */
const EVENT_LINES: LineOf = {
  challenge: (e) =>
    e.tokenSent
      ? {
        text: `${e.tool}: the token sent no longer counts (expired or revoked): 401 invalid_token`,
        cite: "RFC 6750 §3.1",
        tone: "info",
      }
      : {
        text: `${e.tool} needs sign-in: the 401's resource_metadata says where discovery starts`,
        cite: "RFC 9728 §5.1",
        tone: "info",
      },
  client_registered: (e) => ({
    text: `registered "${e.client.name}" as ${e.client.id}`,
    cite: "RFC 7591 §3.2.1",
    tone: "ok",
  }),
  consent_shown: (e) => ({
    text: `consent page for "${e.client.name}", its PKCE S256 challenge checked`,
    cite: "RFC 7636 §4.3",
    tone: "ok",
  }),
  consent_approved: () => ({
    text: "approved: a code goes back with state and iss (303)",
    cite: "RFC 9207 §2",
    tone: "ok",
  }),
  consent_denied: () => ({
    text: "denied: access_denied goes back to the client",
    cite: "RFC 6749 §4.1.2.1",
    tone: "info",
  }),
  consent_refused: (e) => ({
    text: `cross-site consent POST refused: ${e.reason}`,
    cite: "RFC 6749 §10.12",
    tone: "attack",
  }),
  code_exchanged: (e) => ({
    text: `code + PKCE verifier → tokens, session ${e.session}; the code is spent`,
    cite: "RFC 6749 §4.1.2 · RFC 7636 §4.6",
    tone: "ok",
  }),
  code_replayed: () => ({ text: "the same code redeemed again: refused", cite: "RFC 6749 §4.1.2", tone: "attack" }),
  tokens_refreshed: (e) => ({
    text: `refresh: a new access token, and the refresh token rotated (session ${e.session})`,
    cite: "OAuth 2.1 §4.3.1",
    tone: "ok",
  }),
  refresh_reused: () => ({
    text: "a spent refresh token came back: refused",
    cite: "OAuth 2.1 §4.3.1",
    tone: "attack",
  }),
  session_revoked: (e, after) => {
    const text = `session ${e.session} revoked: ${e.reason}`;
    const attack = after.find((earlier) => earlier.type === "code_replayed" || earlier.type === "refresh_reused");
    if (attack?.type === "code_replayed") return { text, cite: "RFC 6749 §4.1.2", tone: "attack" };
    if (attack) return { text, cite: "RFC 9700 §4.14.2", tone: "attack" };
    return { text, tone: "info" };
  },
  oauth_error: (e) =>
    /verifier/i.test(e.description) // a code sent without its verifier: what a stolen code looks like
      ? { text: `${e.error}: ${e.description}`, cite: "RFC 7636 §4.6", tone: "attack" }
      : { text: `${e.error}: ${e.description}`, cite: OAUTH_ERROR_CITES[e.path], tone: "fail" },
  rpc_error: (e) =>
    e.status === 405 // a client looking for a server-to-client stream: none is offered, and that is fine
      ? { text: "no stream to open here: the endpoint answers POST only", cite: "MCP Streamable HTTP", tone: "quiet" }
      : { text: `JSON-RPC error ${e.code}: ${e.message}`, cite: "JSON-RPC 2.0 §5.1", tone: "fail" },
  host_refused: (e) => ({
    text: `Host ${e.host} refused: a rebinding DNS name cannot reach loopback`,
    cite: "MCP Streamable HTTP: DNS rebinding",
    tone: "attack",
  }),
  metadata_document_refused: (e) => ({
    text: `client metadata document ${e.url} refused: ${e.reason}`,
    cite: "OAuth Client ID Metadata Document",
    tone: "fail",
  }),
  store_unavailable: (e) => ({ text: `the token store cannot answer: fails closed (${e.detail})`, tone: "fail" }),
  elicitation_visited: (e) => ({
    text: `the user opened the link ${e.tool} asked for`,
    cite: "MCP elicitation, URL mode",
    tone: "ok",
  }),
  server_error: (e) => ({ text: `internal error: ${e.detail}`, tone: "fail" }),
  notice: (e) => ({ text: e.message, tone: "info" }),
};

/** What an event means; `after`: the events drawn before it in the same step. */
export function eventLine(event: OtherEvent, after: OtherEvent[] = []): FlowLine {
  const line = EVENT_LINES[event.type] as (event: OtherEvent, after: OtherEvent[]) => FlowLine;
  return line(event, after);
}

/** Whether an event happened inside this request (it is emitted before the request's own event, which ends it). */
function happenedIn(event: OtherEvent, request: RequestEvent): boolean {
  if ("client" in event && request.client && event.client.id !== request.client.id) return false;
  switch (event.type) {
    case "challenge":
    case "oauth_error":
    case "rpc_error":
      return event.path === request.path;
    case "server_error":
      return event.path === request.path && event.method === request.method;
    case "client_registered":
      return request.path === "/register";
    case "consent_shown":
    case "consent_approved":
    case "consent_denied":
    case "consent_refused":
      return request.path === "/authorize";
    case "metadata_document_refused":
      return request.path === "/authorize" || request.path === "/token";
    case "code_exchanged":
    case "code_replayed":
    case "tokens_refreshed":
    case "refresh_reused":
      return request.path === "/token";
    case "session_revoked":
      return request.path === "/token" || isMcpPath(request.path);
    case "host_refused":
      return request.status === 403;
    case "store_unavailable":
      return request.status === 503;
    case "elicitation_visited":
      return request.path === "/elicitation-callback";
    case "notice":
      return false;
  }
}

/** An event with only the fields the page uses, every string cleaned: nothing else can leave this module. */
export function sanitize(event: LazyAuthEvent): LazyAuthEvent {
  const at = Number.isFinite(event.at) ? event.at : Date.now();
  switch (event.type) {
    case "request":
      return {
        at,
        type: "request",
        method: clean(event.method, 12),
        path: cleanPath(event.path),
        rpc: typeof event.rpc === "string" ? clean(event.rpc, 80) : undefined,
        status: typeof event.status === "number" ? event.status : undefined,
        bearer: event.bearer === true,
        agent: clean(event.agent, 160),
        client: cleanLabel(event.client),
      };
    case "challenge":
      return {
        at,
        type: event.type,
        path: cleanPath(event.path),
        tool: clean(event.tool, 60),
        tokenSent: event.tokenSent,
      };
    case "client_registered":
    case "consent_approved":
    case "consent_denied":
      return { at, type: event.type, client: cleanLabel(event.client)! };
    case "consent_shown":
      return { at, type: event.type, client: cleanLabel(event.client)!, resource: clean(event.resource, 120) };
    case "consent_refused":
      return { at, type: event.type, reason: clean(event.reason) };
    case "code_exchanged":
    case "code_replayed":
    case "tokens_refreshed":
    case "refresh_reused":
      return { at, type: event.type, client: cleanLabel(event.client)!, session: clean(event.session, 8) };
    case "session_revoked":
      return { at, type: event.type, session: clean(event.session, 8), reason: clean(event.reason) };
    case "oauth_error":
      return {
        at,
        type: event.type,
        path: cleanPath(event.path),
        status: event.status,
        error: clean(event.error, 40),
        description: clean(event.description),
      };
    case "rpc_error":
      return {
        at,
        type: event.type,
        path: cleanPath(event.path),
        status: event.status,
        code: event.code,
        message: clean(event.message),
      };
    case "host_refused":
      return { at, type: event.type, host: JSON.stringify(clean(String(event.host).replace(/^"(.*)"$/, "$1"), 80)) };
    case "metadata_document_refused":
      return { at, type: event.type, url: clean(event.url, 120), reason: clean(event.reason) };
    case "store_unavailable":
      return { at, type: event.type, detail: clean(event.detail) };
    case "elicitation_visited":
      return { at, type: event.type, tool: clean(event.tool, 60) };
    case "server_error":
      return {
        at,
        type: event.type,
        method: clean(event.method, 12),
        path: cleanPath(event.path),
        detail: clean(event.detail),
      };
    case "notice":
      return { at, type: event.type, message: clean(event.message) };
  }
}

const strongest = (lines: FlowLine[]): Tone =>
  lines.reduce<Tone>((tone, line) => (TONE_RANK[line.tone] > TONE_RANK[tone] ? line.tone : tone), "quiet");

/** The lines of a step: what its events say, in order; the request's own line only when no event spoke. */
function linesOf(request: RequestEvent | undefined, events: OtherEvent[]): FlowLine[] {
  const lines = events.map((event, index) => eventLine(event, events.slice(0, index)));
  if (lines.length > 0 || request === undefined) return lines;
  return [requestLine(request.method, request.path, request.status ?? null, request.bearer, request.rpc)];
}

// ─── The hub: events in, steps out to every viewer ─

/** One watching page, as the hub sees it. */
export interface FlowViewer {
  send(chunk: string): void;
  /** Bytes written but not yet taken by the viewer's socket. */
  buffered(): number;
  /** Ends the viewer's connection. */
  drop(): void;
}

export interface FlowHubOptions {
  maxSteps?: number;
  maxViewers?: number;
  maxViewerBufferBytes?: number;
}

/**
 * Turns events into steps and lanes, keeps the last `maxSteps` for viewers who come later, and sends each new
 * step to every viewer. Every structure is bounded: steps, lanes (a lane lives only while it has steps), the
 * User-Agents remembered, the events waiting for their request, the viewers and each viewer's buffer.
 */
export class FlowHub {
  readonly #maxSteps: number;
  readonly #maxViewers: number;
  readonly #maxBuffer: number;
  #seq = 0;
  #steps: FlowStep[] = [];
  #lanes = new Map<string, HubLane>();
  #laneOfAgent = new Map<string, string>();
  #pending: { event: OtherEvent; seen: number }[] = [];
  #notices: FlowMessage[] = [];
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #viewers = new Set<FlowViewer>();

  constructor(options: FlowHubOptions = {}) {
    this.#maxSteps = options.maxSteps ?? MAX_STEPS;
    this.#maxViewers = options.maxViewers ?? MAX_VIEWERS;
    this.#maxBuffer = options.maxViewerBufferBytes ?? MAX_VIEWER_BUFFER_BYTES;
  }

  /** Whether another viewer would be one too many. */
  get full(): boolean {
    return this.#viewers.size >= this.#maxViewers;
  }

  /** Takes one event from the server's `onEvent`. */
  publish(raw: LazyAuthEvent): void {
    const event = sanitize(raw);
    if (event.type === "request") return this.#request(event);
    if (event.type === "notice") return this.#notice(event.at, event.message);
    // Events come before the request they happened in is over: they wait for it, or are drawn alone later.
    this.#pending.push({ event, seen: Date.now() });
    if (this.#pending.length > MAX_PENDING) this.#draw(undefined, [this.#pending.shift()!.event]);
    this.#flushTimer ??= setTimeout(() => this.#flush(), CLAIM_WAIT_MS).unref();
  }

  /** Adds a viewer: false when there are too many already. It gets everything kept, then the live steps. */
  connect(viewer: FlowViewer): boolean {
    if (this.full) return false;
    this.#viewers.add(viewer);
    const replay: FlowMessage[] = [{ kind: "reset" }, ...this.#notices];
    for (const lane of this.#lanes.values()) replay.push({ kind: "lane", lane: publicLane(lane) });
    for (const step of this.#steps) replay.push({ kind: "step", step });
    replay.push({ kind: "ready" });
    this.#sendTo(viewer, replay.map(frame).join(""));
    return true;
  }

  disconnect(viewer: FlowViewer): void {
    this.#viewers.delete(viewer);
  }

  /** Forgets every step and lane, for every viewer (the page's Reset button); the server's notices stay. */
  reset(): void {
    this.#steps = [];
    this.#lanes.clear();
    this.#laneOfAgent.clear();
    this.#pending = [];
    for (const message of [{ kind: "reset" } as const, ...this.#notices, { kind: "ready" } as const]) {
      this.#broadcast(message);
    }
  }

  /** Ends every viewer's stream and stops the timer. */
  close(): void {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    for (const viewer of this.#viewers) viewer.drop();
    this.#viewers.clear();
  }

  #notice(at: number, text: string): void {
    const notice: FlowMessage = { kind: "notice", at, text };
    this.#notices = [...this.#notices, notice].slice(-MAX_NOTICES);
    this.#broadcast(notice);
  }

  #request(request: RequestEvent): void {
    const claimed: OtherEvent[] = [];
    this.#pending = this.#pending.filter(({ event }) => {
      if (!happenedIn(event, request)) return true;
      claimed.push(event);
      return false;
    });
    this.#draw(request, claimed);
  }

  #flush(): void {
    this.#flushTimer = undefined;
    const due = Date.now() - CLAIM_WAIT_MS;
    const stale = this.#pending.filter(({ seen }) => seen <= due);
    this.#pending = this.#pending.filter(({ seen }) => seen > due);
    for (const { event } of stale) this.#draw(undefined, [event]);
    if (this.#pending.length > 0) this.#flushTimer = setTimeout(() => this.#flush(), CLAIM_WAIT_MS).unref();
  }

  #draw(request: RequestEvent | undefined, events: OtherEvent[]): void {
    const first = events[0];
    const client = request?.client ?? events.map((e) => ("client" in e ? e.client : undefined)).find(Boolean);
    const lane = this.#laneFor(request?.agent, client);
    const [from, to] = request ? actorsOf(request.path) : actorsOfEvent(first!);
    const lines = linesOf(request, events);
    const step: FlowStep = {
      seq: ++this.#seq,
      at: request?.at ?? first?.at ?? Date.now(),
      lane,
      from,
      to,
      lines,
      tone: strongest(lines),
      events: [...(request ? ["request"] : []), ...events.map((e) => e.type)],
    };
    if (request) Object.assign(step, { method: request.method, path: request.path, status: request.status ?? null });
    this.#steps.push(step);
    this.#broadcast({ kind: "step", step });
    while (this.#steps.length > this.#maxSteps) this.#forget(this.#steps.shift()!);
  }

  /** The lane a step goes to: its client's; else the last client seen with its User-Agent; else the agent's own. */
  #laneFor(agent: string | undefined, client: ClientLabel | undefined): string {
    const agentKey = agent === undefined ? undefined : agent === "" || agent === "-" ? NO_AGENT : agent;
    const known = agentKey === undefined ? undefined : this.#laneOfAgent.get(agentKey);
    let key: string;
    if (client) {
      key = `client:${client.id}`;
      const lane = this.#lanes.get(key);
      if (!lane) this.#open({ key, title: client.name, detail: "", agents: [], client });
      else if (lane.title === client.id && client.name !== client.id) { // first seen by its id, now by its name
        lane.title = client.name;
        this.#announce(lane);
      }
      // The first requests of a host come before it names its client: its unidentified lane was this client's.
      if (known?.startsWith("agent:") && this.#lanes.has(known)) this.#merge(known, key);
    } else if (known !== undefined && this.#lanes.has(known)) {
      key = known;
    } else {
      // An event drawn without its request has no agent: it goes where the last step went.
      key = agentKey === undefined ? this.#steps.at(-1)?.lane ?? `agent:${NO_AGENT}` : `agent:${agentKey}`;
      if (!this.#lanes.has(key)) this.#open({ key, title: "Unidentified host", detail: "", agents: [] });
    }
    if (agentKey !== undefined) {
      this.#rememberAgent(agentKey, key);
      const lane = this.#lanes.get(key)!;
      const name = shortAgent(agentKey);
      if (!lane.agents.includes(name) && lane.agents.length < 4) {
        lane.agents.push(name);
        this.#announce(lane);
      }
    }
    return key;
  }

  #open(lane: HubLane): void {
    this.#lanes.set(lane.key, lane);
    this.#announce(lane);
  }

  #announce(lane: HubLane): void {
    const via = lane.agents.length > 0 ? `via ${lane.agents.join(", ")}` : "";
    lane.detail = [lane.client?.id ?? "", via].filter(Boolean).join(" · ");
    this.#broadcast({ kind: "lane", lane: publicLane(lane) });
  }

  #rememberAgent(agentKey: string, lane: string): void {
    this.#laneOfAgent.delete(agentKey); // re-inserted last: the map's order is the order of last use
    this.#laneOfAgent.set(agentKey, lane);
    if (this.#laneOfAgent.size > MAX_AGENTS) this.#laneOfAgent.delete(this.#laneOfAgent.keys().next().value!);
  }

  #merge(from: string, into: string): void {
    const source = this.#lanes.get(from)!;
    const target = this.#lanes.get(into)!;
    for (const agent of source.agents) if (!target.agents.includes(agent)) target.agents.push(agent);
    for (const step of this.#steps) if (step.lane === from) step.lane = into;
    for (const [agent, lane] of this.#laneOfAgent) if (lane === from) this.#laneOfAgent.set(agent, into);
    this.#lanes.delete(from);
    this.#broadcast({ kind: "merge", from, into });
    this.#announce(target);
  }

  /** A step leaves the replay; its lane goes too once it has no step left. */
  #forget(step: FlowStep): void {
    if (this.#steps.some((s) => s.lane === step.lane)) return;
    this.#lanes.delete(step.lane);
    for (const [agent, lane] of this.#laneOfAgent) if (lane === step.lane) this.#laneOfAgent.delete(agent);
  }

  #broadcast(message: FlowMessage): void {
    const chunk = frame(message);
    for (const viewer of this.#viewers) this.#sendTo(viewer, chunk);
  }

  #sendTo(viewer: FlowViewer, chunk: string): void {
    viewer.send(chunk);
    if (viewer.buffered() > this.#maxBuffer) { // a slow viewer is let go rather than buffered for
      this.#viewers.delete(viewer);
      viewer.drop();
    }
  }
}

type HubLane = FlowLane & { agents: string[]; client?: ClientLabel };
const frame = (message: FlowMessage) => `data: ${JSON.stringify(message)}\n\n`;
const publicLane = ({ key, title, detail }: FlowLane): FlowLane => ({ key, title, detail });

// ─── The page ────────────────────────────────────
// Plain HTML, CSS and one inline script: no build step, nothing fetched but the event stream. Every value from
// the stream is set as text (textContent), never parsed as HTML.

const PAGE_STYLE = `
:root { --bg: #f3f4f6; --card: #fff; --ink: #111827; --muted: #6b7280; --line: #d1d5db; --arrow: #374151;
  --host: #2563eb; --mcp: #7c3aed; --as: #0f766e; --browser: #c2410c;
  --fail: #b45309; --attack: #b91c1c; --dia: minmax(28rem, 38rem); }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; }
code, .label { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
header.top { position: sticky; top: 0; z-index: 2; display: flex; gap: 1rem; align-items: center;
  padding: .7rem 1.2rem; background: #111827; color: #f9fafb; }
header.top h1 { margin: 0; font-size: 1.05rem; font-weight: 650; white-space: nowrap; }
header.top p { margin: 0; color: #d1d5db; font-size: .85rem; flex: 1; min-width: 0; }
header.top code { color: #fff; }
.conn { font-size: .8rem; padding: .15rem .55rem; border-radius: 999px; background: #374151; white-space: nowrap; }
.conn.live { background: #166534; }
.counts { font-size: .8rem; color: #d1d5db; white-space: nowrap; }
.counts b { color: #fff; }
.counts .fail b { color: #fcd34d; }
.counts .attack b { color: #fca5a5; }
label.follow { font-size: .8rem; color: #d1d5db; white-space: nowrap; }
button { font: inherit; font-size: .85rem; padding: .3rem .9rem; border-radius: 6px; border: 1px solid #4b5563;
  background: #1f2937; color: #f9fafb; cursor: pointer; }
button:hover { background: #374151; }
main { padding: 1rem 1.2rem 2rem; }
.empty { max-width: 46rem; margin: 3rem auto; padding: 1.5rem 2rem; background: var(--card); border-radius: 10px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); color: var(--muted); }
.empty h2 { margin: 0 0 .4rem; color: var(--ink); font-size: 1.05rem; }
details.lane { margin: 0 0 1.2rem; background: var(--card); border-radius: 10px; box-shadow: 0 1px 3px rgba(0,0,0,.12);
  overflow: hidden; }
details.lane > summary { display: flex; gap: .8rem; align-items: baseline; padding: .6rem 1rem; cursor: pointer;
  border-bottom: 1px solid #e5e7eb; list-style: none; }
details.lane > summary::-webkit-details-marker { display: none; }
details.lane > summary::before { content: "▾"; color: var(--muted); }
details.lane:not([open]) > summary::before { content: "▸"; }
.lane h2 { margin: 0; font-size: 1rem; }
.lane .detail { color: var(--muted); font-size: .82rem; }
.lane .tally { margin-left: auto; color: var(--muted); font-size: .8rem; white-space: nowrap; }
.grid { display: grid; grid-template-columns: 4.6rem var(--dia) minmax(16rem, 1fr); column-gap: .9rem; }
.heads { padding: .45rem 1rem .25rem; font-size: .72rem; font-weight: 650; text-transform: uppercase;
  letter-spacing: .04em; color: var(--muted); border-bottom: 1px solid #f3f4f6; }
.actors { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); text-align: center; }
.actors span { justify-self: center; padding: .1rem .45rem; border-radius: 5px; color: #fff; white-space: nowrap;
  text-transform: none; letter-spacing: 0; font-size: .76rem; }
.actors .host { background: var(--host); } .actors .mcp { background: var(--mcp); }
.actors .as { background: var(--as); } .actors .browser { background: var(--browser); }
ol.steps { list-style: none; margin: 0; padding: 0 1rem .5rem; }
li.step { border-left: 4px solid transparent; margin-left: -1rem; padding-left: calc(1rem - 4px); }
li.step.new { animation: arrive 1.6s ease-out; }
@keyframes arrive { from { background: #fef9c3; } to { background: transparent; } }
.time { padding-top: .55rem; color: var(--muted); font-size: .78rem; font-variant-numeric: tabular-nums; }
.dia { position: relative; min-height: 2.9rem;
  background-image: linear-gradient(var(--line), var(--line)), linear-gradient(var(--line), var(--line)),
    linear-gradient(var(--line), var(--line)), linear-gradient(var(--line), var(--line));
  background-size: 2px 100%; background-repeat: no-repeat;
  background-position: calc(12.5% - 1px) 0, calc(37.5% - 1px) 0, calc(62.5% - 1px) 0, calc(87.5% - 1px) 0; }
.arrow { position: absolute; top: 1.75rem; height: 2px; background: var(--arrow); }
.arrow::after { content: ""; position: absolute; top: -5px; right: -2px; border: 6px solid transparent;
  border-right: 0; border-left: 9px solid var(--arrow); }
.arrow.rtl::after { right: auto; left: -2px; border-left: 0; border-right: 9px solid var(--arrow); }
.label { position: absolute; top: .3rem; font-size: .78rem; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; max-width: 80%; }
.status { display: inline-block; margin-left: .4rem; padding: 0 .4rem; border-radius: 4px; font-weight: 650;
  background: #e5e7eb; }
.status.s2 { background: #dcfce7; color: #166534; } .status.s3 { background: #dbeafe; color: #1e40af; }
.status.s4 { background: #fef3c7; color: #92400e; } .status.s5, .status.gone { background: #fee2e2; color: #991b1b; }
.note { position: absolute; top: .9rem; transform: translateX(-50%); padding: .05rem .5rem; border-radius: 5px;
  font-size: .75rem; background: #f3f4f6; border: 1px dashed #9ca3af; white-space: nowrap; }
.means { padding: .45rem 0 .45rem; }
.means p { margin: 0; }
.means p + p { font-size: .85rem; }
.means cite { margin-left: .45rem; font-style: normal; font-size: .75rem; color: var(--muted); white-space: nowrap;
  padding: 0 .35rem; border: 1px solid #e5e7eb; border-radius: 4px; }
.tag { display: inline-block; margin-right: .45rem; padding: 0 .4rem; border-radius: 4px; font-size: .7rem;
  font-weight: 700; text-transform: uppercase; letter-spacing: .03em; color: #fff; vertical-align: 1px; }
.count { margin-left: .4rem; color: var(--muted); font-size: .75rem; }
li.quiet .means, li.quiet .label { color: var(--muted); }
li.info { border-left-color: #93c5fd; }
li.fail { border-left-color: #f59e0b; background: #fffbeb; }
li.fail .tag { background: var(--fail); }
li.attack { border-left-color: #dc2626; background: #fef2f2; }
li.attack .tag { background: var(--attack); }
li.attack .arrow, li.attack .arrow::after { --arrow: #dc2626; }
.notices { list-style: none; margin: 0 0 1rem; padding: 0; }
.notices li { margin: 0 0 .4rem; padding: .35rem .8rem; border-radius: 6px; font-size: .85rem; color: #1e3a8a;
  background: #eff6ff; border: 1px solid #bfdbfe; }
.notices strong { font-weight: 550; }
footer { padding: 0 1.2rem 1.5rem; color: var(--muted); font-size: .8rem; }
footer .sw { display: inline-block; width: .8rem; height: .8rem; border-radius: 3px; vertical-align: -1px;
  margin: 0 .25rem 0 .9rem; }
footer .sw:first-child { margin-left: 0; }
.sw.info { background: #93c5fd; } .sw.fail { background: #f59e0b; } .sw.attack { background: #dc2626; }
.sw.quiet { background: #9ca3af; }
`;

const PAGE_SCRIPT = String.raw`
"use strict";
const MAX_STEPS = Number(document.body.dataset.maxSteps) || 500;
const ACTORS = ["host", "mcp", "as", "browser"];
const TAGS = { fail: "failed", attack: "attack refused" };
const $ = (id) => document.getElementById(id);
const lanes = new Map(); // key → { el, list, tally, steps: [] }
const entries = []; // every step on the page, oldest first: { step, lane, li } (li: its row, shared when repeated)
let follow = true;

$("mcp-url").textContent = location.origin + "/mcp";
$("follow").addEventListener("change", (e) => { follow = e.target.checked; });

function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function showLane(info) {
  let lane = lanes.get(info.key);
  if (!lane) {
    const el = make("details", "lane");
    el.open = true;
    el.dataset.lane = info.key;
    const summary = make("summary");
    const title = make("h2");
    const detail = make("span", "detail");
    const tally = make("span", "tally");
    summary.append(title, detail, tally);
    const heads = make("div", "grid heads");
    const actors = make("div", "actors");
    for (const [actor, name] of [["host", "Host"], ["mcp", "MCP endpoint"], ["as", "Authorization server"],
      ["browser", "User's browser"]]) actors.append(make("span", actor, name));
    heads.append(make("span", "", "Time"), actors, make("span", "", "What it means · the rule"));
    const list = make("ol", "steps");
    el.append(summary, heads, list);
    lane = { el, title, detail, tally, list, steps: [] };
    lanes.set(info.key, lane);
    $("lanes").append(el);
    $("empty").hidden = true;
  }
  lane.title.textContent = info.title;
  lane.detail.textContent = info.detail;
  return lane;
}

function clock(at) {
  const d = new Date(at);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

const signature = (s) => [s.method, s.path, s.status, s.tone, s.lines.map((l) => l.text).join("|")].join(" ");

function row(step) {
  const li = make("li", "grid step " + step.tone);
  li.dataset.seq = step.seq;
  li.dataset.tone = step.tone;
  li.dataset.events = step.events.join(" ");
  const dia = make("div", "dia");
  const from = ACTORS.indexOf(step.from), to = ACTORS.indexOf(step.to);
  if (step.method !== undefined) {
    li.dataset.method = step.method;
    li.dataset.path = step.path;
    li.dataset.status = step.status === null ? "none" : String(step.status);
    const arrow = make("div", to < from ? "arrow rtl" : "arrow");
    arrow.style.left = (Math.min(from, to) * 25 + 12.5) + "%";
    arrow.style.width = (Math.abs(to - from) * 25) + "%";
    const label = make("div", "label", step.method + " " + step.path);
    const status = make("span", "status", step.status === null ? "no answer" : String(step.status));
    status.classList.add(step.status === null ? "gone" : "s" + String(step.status)[0]);
    label.append(status);
    if (to < from) label.style.right = (100 - (from * 25 + 12.5)) + "%";
    else label.style.left = "calc(" + (from * 25 + 12.5) + "% + 6px)";
    dia.append(arrow, label);
  } else {
    const note = make("div", "note", step.events.join(", ").replace(/_/g, " "));
    note.style.left = (to * 25 + 12.5) + "%";
    dia.append(note);
  }
  const means = make("div", "means");
  step.lines.forEach((line, index) => {
    const p = make("p");
    if (index === 0 && TAGS[step.tone]) p.append(make("span", "tag", TAGS[step.tone]));
    p.append(line.text);
    if (line.cite) p.append(make("cite", "", line.cite));
    means.append(p);
  });
  li.append(make("span", "time", clock(step.at)), dia, means);
  return li;
}

function tally(lane) {
  const fail = lane.steps.filter((s) => s.tone === "fail").length;
  const attack = lane.steps.filter((s) => s.tone === "attack").length;
  lane.tally.textContent = lane.steps.length + " steps" + (fail ? " · " + fail + " failed" : "") +
    (attack ? " · " + attack + " attacks refused" : "");
}

function counts() {
  let steps = 0, fail = 0, attack = 0;
  for (const lane of lanes.values()) for (const s of lane.steps) {
    steps++;
    if (s.tone === "fail") fail++;
    if (s.tone === "attack") attack++;
  }
  $("n-steps").textContent = steps;
  $("n-fail").textContent = fail;
  $("n-attack").textContent = attack;
}

// Appends a step to its lane and returns its row; the same step again right after (a host polling) counts up.
function place(lane, step, fresh) {
  const last = lane.list.lastElementChild;
  if (last && last.dataset.signature === signature(step)) {
    const n = Number(last.dataset.count || 1) + 1;
    last.dataset.count = n;
    let badge = last.querySelector(".count");
    if (!badge) last.querySelector(".means p").append(badge = make("span", "count"));
    badge.textContent = "×" + n;
    return last;
  }
  const li = row(step);
  li.dataset.signature = signature(step);
  if (fresh) li.classList.add("new");
  lane.list.append(li);
  if (fresh && follow) li.scrollIntoView({ block: "nearest" });
  return li;
}

function addStep(step, fresh) {
  const lane = lanes.get(step.lane) || showLane({ key: step.lane, title: "Unidentified host", detail: "" });
  lane.steps.push(step);
  entries.push({ step, lane, li: place(lane, step, fresh) });
  while (entries.length > MAX_STEPS) forget(entries.shift()); // the page stays as bounded as the stream
  tally(lane);
}

function forget({ step, lane, li }) {
  lane.steps = lane.steps.filter((s) => s !== step);
  const n = Number(li.dataset.count || 1);
  if (n > 1) {
    li.dataset.count = n - 1;
    li.querySelector(".count").textContent = n > 2 ? "×" + (n - 1) : "";
  } else li.remove();
  if (lane.steps.length === 0) { lane.el.remove(); lanes.delete(lane.el.dataset.lane); }
  else tally(lane);
}

function merge(from, into) {
  const source = lanes.get(from), target = lanes.get(into);
  if (!source || !target) return;
  source.el.remove();
  lanes.delete(from);
  // Redraw the lane from its steps and the newcomers', in order.
  const mine = entries.filter((e) => e.lane === source || e.lane === target);
  target.list.replaceChildren();
  target.steps = [];
  for (const entry of mine) {
    entry.step.lane = into;
    entry.lane = target;
    target.steps.push(entry.step);
    entry.li = place(target, entry.step, false);
  }
  tally(target);
}

function reset() {
  lanes.clear();
  entries.length = 0;
  $("lanes").replaceChildren();
  $("notices").replaceChildren();
  $("empty").hidden = false;
  counts();
}

function apply(message) {
  if (message.kind === "reset") reset();
  else if (message.kind === "ready") document.body.dataset.ready = "yes";
  else if (message.kind === "lane") showLane(message.lane);
  else if (message.kind === "merge") merge(message.from, message.into);
  else if (message.kind === "step") addStep(message.step, document.body.dataset.ready === "yes");
  else if (message.kind === "notice") {
    const li = make("li", "", "Server · " + clock(message.at) + " · ");
    li.append(make("strong", "", message.text));
    $("notices").append(li);
  }
  counts();
}

function connect() {
  const source = new EventSource("/flow/events");
  source.onopen = () => { $("conn").textContent = "live"; $("conn").className = "conn live"; };
  source.onmessage = (event) => apply(JSON.parse(event.data));
  source.onerror = () => { // the browser reconnects by itself, unless the server said no (too many viewers)
    document.body.dataset.ready = "";
    const closed = source.readyState === EventSource.CLOSED;
    $("conn").textContent = closed ? "disconnected: reload to retry" : "reconnecting…";
    $("conn").className = "conn";
  };
}

$("reset").addEventListener("click", () => {
  fetch("/flow/reset", { method: "POST", headers: { "x-flow-reset": "1" } });
});
connect();
`;

function pageHtml(maxSteps: number): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lazy-auth flow</title><link rel="icon" href="data:,"><style>${PAGE_STYLE}</style></head>
<body data-max-steps="${maxSteps}">
<header class="top">
  <h1>Lazy-auth flow</h1>
  <p>Every host's steps as they happen · MCP endpoint <code id="mcp-url"></code></p>
  <span class="counts"><b id="n-steps">0</b> steps · <span class="fail"><b id="n-fail">0</b> failed</span> ·
    <span class="attack"><b id="n-attack">0</b> attacks refused</span></span>
  <span id="conn" class="conn" role="status">connecting…</span>
  <label class="follow"><input type="checkbox" id="follow" checked> follow</label>
  <button type="button" id="reset">Reset</button>
</header>
<main>
  <ul id="notices" class="notices"></ul>
  <section id="empty" class="empty">
    <h2>Waiting for a host</h2>
    <p>Point an MCP host at the endpoint above (or run the README's curl walkthrough) and call <code>get_secret</code>.
    Each request lands here as an arrow between the host, the MCP endpoint, the authorization server and the user's
    browser, with what it means and the rule it follows. Nothing secret is shown: no token, code or full client_id.</p>
  </section>
  <div id="lanes"></div>
</main>
<footer><span class="sw info"></span>the flow turns (a 401, a revocation) <span class="sw fail"></span>failed
<span class="sw attack"></span>attack refused <span class="sw quiet"></span>probe · one lane per client: a host's first
requests, made before it has a client_id, join its lane when it names one.</footer>
<script>${PAGE_SCRIPT}</script>
</body></html>`;
}

const sha256 = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
/** Only this page's own style and script run; it connects only to itself and refuses to be framed. */
const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(PAGE_SCRIPT)}`,
  `style-src ${sha256(PAGE_STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

// ─── Serving it ──────────────────────────────────

/** A Host header naming loopback: localhost, 127.x.y.z or [::1], with an optional port. */
const LOOPBACK_HOST = /^(?:localhost|127(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}|\[::1\])(?::\d{1,5})?$/i;
const isLoopbackPeer = (address: string | undefined) => /^(127\.|::1$|::ffff:127\.)/.test(address ?? "");

const FLOW_PATHS = new Set(["/flow", "/flow/events", "/flow/reset"]);

interface FlowDemoOptions extends ServerOptions, FlowHubOptions {}

export interface RunningFlowDemo {
  url: string; // the server's base URL on loopback
  flowUrl: string; // the page
  server: Server;
  close(graceMs?: number): Promise<void>;
}

/**
 * The lazy-auth handler with the flow page in front of it, listening on loopback only: the page shows who
 * connects to this machine, so it never listens anywhere else. `port` 0 picks a free port (tests).
 */
export async function startFlowDemo(options: FlowDemoOptions = {}): Promise<RunningFlowDemo> {
  const hub = new FlowHub(options);
  const handler = await createHandler({
    ...options,
    logRequests: options.logRequests ?? true,
    onEvent: (event) => {
      hub.publish(event);
      options.onEvent?.(event);
    },
  });
  const page = pageHtml(options.maxSteps ?? MAX_STEPS);
  const write = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const logRequests = options.logRequests ?? true;
  /** What the page's own routes refuse: drawn on the page and written to the trace, like the server's own. */
  const record = (event: LazyAuthEvent) => {
    hub.publish(event);
    const line = event.type === "request" && !logRequests ? undefined : traceLine(event);
    if (line !== undefined) write(line);
  };
  const server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (FLOW_PATHS.has(path)) flowRoute(req, res, path, { hub, page, record });
    else handler(req, res);
  });
  server.headersTimeout = options.headersTimeoutMs ?? 10_000;
  server.requestTimeout = options.requestTimeoutMs ?? 10_000;
  const port = options.port ?? Number(process.env.PORT ?? 3097);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host: "127.0.0.1" }, () => resolve());
  });
  const address = server.address();
  const url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : port}`;
  return {
    url,
    flowUrl: `${url}/flow`,
    server,
    close: (graceMs = options.shutdownGraceMs ?? 8_000) =>
      new Promise<void>((resolve) => {
        hub.close(); // the viewers' streams never end on their own
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), graceMs).unref();
      }),
  };
}

interface FlowRouteContext {
  hub: FlowHub;
  page: string;
  record: (event: LazyAuthEvent) => void;
}

function flowRoute(req: IncomingMessage, res: ServerResponse, path: string, context: FlowRouteContext): void {
  const { hub, page, record } = context;
  const host = req.headers.host ?? "";
  if (!LOOPBACK_HOST.test(host) || !isLoopbackPeer(req.socket.remoteAddress)) {
    // The same DNS-rebinding rule as the server's own paths; the attempt shows on the page and in the trace.
    record({ at: Date.now(), type: "host_refused", host: JSON.stringify(host.slice(0, 100)) });
    const agent = (req.headers["user-agent"] ?? "-").slice(0, 60);
    record({ at: Date.now(), type: "request", method: req.method ?? "", path, status: 403, bearer: false, agent });
    return plain(res, 403, `Host ${JSON.stringify(host.slice(0, 100))} is not served here`);
  }
  const site = req.headers["sec-fetch-site"];
  if (path === "/flow") {
    if (req.method !== "GET" && req.method !== "HEAD") return plain(res, 405, "GET only", { allow: "GET, HEAD" });
    res.writeHead(200, {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": PAGE_CSP,
      "x-frame-options": "DENY",
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-resource-policy": "same-origin",
    });
    return void res.end(req.method === "HEAD" ? undefined : page);
  }
  // The stream and the reset are for the page itself: another site's request is refused even where the
  // browser would let it through without reading the answer (Fetch Metadata).
  if (site !== undefined && site !== "same-origin" && site !== "none") return plain(res, 403, "same-origin only");
  if (path === "/flow/reset") {
    if (req.method !== "POST") return plain(res, 405, "POST only", { allow: "POST" });
    // A custom header: a cross-origin page cannot send it without a preflight, and no preflight is granted.
    if (req.headers["x-flow-reset"] !== "1") return plain(res, 400, "x-flow-reset: 1 is required");
    hub.reset();
    return plain(res, 204, "");
  }
  if (req.method !== "GET") return plain(res, 405, "GET only", { allow: "GET" });
  if (hub.full) return plain(res, 503, "Too many viewers: close one and reload", { "retry-after": "10" });
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "same-origin",
  });
  res.flushHeaders();
  const viewer: FlowViewer = {
    send: (chunk) => void res.write(chunk),
    buffered: () => res.writableLength,
    drop: () => void res.destroy(),
  };
  res.once("close", () => hub.disconnect(viewer));
  hub.connect(viewer);
}

function plain(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(status === 204 ? undefined : body);
}

// Started directly (`npm run demo`)? Deno and Bun say so with import.meta.main; under Node, compare paths.
const isEntryPoint = (import.meta as ImportMeta & { main?: boolean }).main ??
  process.argv[1] === fileURLToPath(import.meta.url);
if (isEntryPoint) {
  startFlowDemo().then((demo) => {
    const base = demo.url.replace("127.0.0.1", "localhost");
    console.log(`Lazy-auth MCP server, with the live flow page
  MCP endpoint:    ${base}/mcp
  Watch the flow:  ${base}/flow   (open it in a browser, then connect a host and call get_secret)
`);
    const stop = (signal: string) => {
      console.log(`${signal}: finishing the requests in flight, then exiting`);
      void demo.close().then(() => process.exit(0));
    };
    process.once("SIGINT", stop).once("SIGTERM", stop);
  }, (error: unknown) => {
    console.error(`Could not start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
