// Small helpers the test files share: a PKCE pair, an HTTP client wrapper that always reads the body,
// and the whole sign-in (consent approved → code → tokens). Black-box: they speak HTTP and nothing else.

import { createHash, randomBytes } from "node:crypto";

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

// A Client ID Metadata Document URL: the server accepts it as client_id without registration.
export const CLIENT_ID = "https://client.example/oauth/client.json";
export const REDIRECT_URI = "http://127.0.0.1:8765/callback";

export interface AuthorizeOptions {
  clientId?: string;
  redirectUri?: string;
  state?: string;
  pkce?: Pkce;
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
    resource: `${base}/mcp`,
    state: options.state,
  };
  for (const [name, value] of Object.entries(params)) if (value !== undefined) url.searchParams.set(name, value);
  return url;
}

export interface Authorization {
  code: string;
  verifier: string;
  clientId: string;
  redirectUri: string;
  location: URL; // where the 302 sent the user agent
}

/** The user approves: `/authorize?…&approved=1` → 302 back to the client with a code. */
export async function authorizeCode(base: string, options: AuthorizeOptions = {}): Promise<Authorization> {
  const pkce = options.pkce ?? pkcePair();
  const url = authorizeUrl(base, { ...options, pkce });
  url.searchParams.set("approved", "1");
  const answer = await request(url);
  const location = answer.headers.get("location");
  if (answer.status !== 302 || !location) throw new Error(`/authorize answered ${answer.status}: ${answer.text}`);
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
    resource: `${base}/mcp`,
  });
  if (answer.status !== 200) throw new Error(`/token answered ${answer.status}: ${answer.text}`);
  return { ...answer.json, clientId: authorization.clientId };
}
