// Real-browser tests, Chromium driven through playwright-core.
//
// 1. A page on a *different* loopback origin acts as a browser-based MCP host. It calls the protected
//    `get_secret` tool, gets a 401, discovers the authorization server via the WWW-Authenticate header
//    (read through CORS), runs an authorization-code + PKCE flow in a popup (WebCrypto, Client ID Metadata
//    Document URL as client_id, fetched by the server), the user clicks Approve on the consent form,
//    and the host exchanges the code cross-origin and retries the call.
// 2. Issue #11, item 1: a page on another origin tries to get a code without the user's click — a CORS
//    fetch, a no-cors fetch, an iframe, a form POST with a consent token it fetched itself — and gets
//    none; the user's own click on Approve, on the server's page, still completes.
//
// Runs with `tsx --test test/browser.test.ts` (also written to work under `deno test -A`).
// Under CI (env CI set) a missing Chromium is a failure; elsewhere the test is skipped.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { startServer } from "../server.ts";
import { CHROMIUM_PATH, chromiumSkipReason, HAVE_CHROMIUM, launchChromium } from "./chromium.ts";

const SKIP_REASON = chromiumSkipReason("browser test");
const EXTRA_LAUNCH_ARGS = ["--disable-quic"]; // on top of launchChromium's own flags

const STEP_TIMEOUT_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// The host application: plain HTML + JS, served from its own origin.
// ---------------------------------------------------------------------------------------------

const HOST_SCRIPT = String.raw`
"use strict";
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const ORIGIN = location.origin;
const CLIENT_ID = ORIGIN + "/client.json";
const REDIRECT_URI = ORIGIN + "/callback";
const PROTOCOL_VERSION = "2025-06-18";

const state = {
  protocolVersion: null,
  resourceMetadataUrl: null,
  prm: null,
  as: null,
  pending: null,      // { verifier, state, authUrl }
  callback: null,     // { code, state, iss, channel }
  accessToken: null,
  tokenType: null,
  secretText: null,
  steps: [],
};
window.hostState = state;

const $ = (id) => document.getElementById(id);
function step(text) { state.steps.push(text); $("status").textContent = text; }
function fail(err) {
  const msg = err && err.message ? err.message : String(err);
  state.steps.push("error: " + msg);
  $("error").textContent = msg;
  $("status").textContent = "failed";
}

function b64url(bytes) {
  let bin = "";
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function randomToken(n) { return b64url(crypto.getRandomValues(new Uint8Array(n))); }

// Reads one JSON-RPC message from either a JSON or an SSE response body.
async function readRpc(res) {
  const type = res.headers.get("content-type") || "";
  const text = await res.text();
  if (type.includes("text/event-stream")) {
    for (const block of text.split(/\r?\n\r?\n/)) {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      const msg = JSON.parse(data);
      if ("result" in msg || "error" in msg) return msg;
    }
    throw new Error("no JSON-RPC response in event stream");
  }
  return text ? JSON.parse(text) : null;
}

let nextId = 1;
function rpc(method, params, isNotification) {
  const headers = { "Content-Type": "application/json", "Accept": "application/json, text/event-stream" };
  if (state.protocolVersion) headers["MCP-Protocol-Version"] = state.protocolVersion;
  if (state.accessToken) headers["Authorization"] = "Bearer " + state.accessToken;
  const body = { jsonrpc: "2.0", method };
  if (params !== undefined) body.params = params;
  if (!isNotification) body.id = nextId++;
  return fetch(CONFIG.mcpUrl, { method: "POST", headers, body: JSON.stringify(body) });
}

async function connect() {
  step("initializing");
  const res = await rpc("initialize", {
    protocolVersion: PROTOCOL_VERSION,
    capabilities: {},
    clientInfo: { name: "browser-test-host", version: "1.0.0" },
  });
  if (!res.ok) throw new Error("initialize failed: HTTP " + res.status);
  const msg = await readRpc(res);
  if (!msg || !msg.result) throw new Error("initialize returned no result: " + JSON.stringify(msg));
  state.protocolVersion = msg.result.protocolVersion;
  const n = await rpc("notifications/initialized", undefined, true);
  if (n.status >= 400) throw new Error("notifications/initialized failed: HTTP " + n.status);
}

async function callSecret() {
  step("calling get_secret");
  const res = await rpc("tools/call", { name: "get_secret", arguments: {} });
  if (res.status === 401) return { unauthorized: res };
  if (!res.ok) throw new Error("tools/call failed: HTTP " + res.status);
  const msg = await readRpc(res);
  if (!msg || !msg.result) throw new Error("tools/call returned no result: " + JSON.stringify(msg));
  if (msg.result.isError) throw new Error("get_secret reported an error: " + JSON.stringify(msg.result));
  const text = (msg.result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
  return { text };
}

async function fetchJson(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error("GET " + url + " failed: HTTP " + res.status);
  return res.json();
}

async function discover(unauthorized) {
  step("discovering authorization server");
  const challenge = unauthorized.headers.get("WWW-Authenticate");
  if (!challenge) throw new Error("401 without a readable WWW-Authenticate header (not exposed via CORS?)");
  if (!/^Bearer\b/i.test(challenge)) throw new Error("WWW-Authenticate is not a Bearer challenge: " + challenge);
  const m = /resource_metadata="([^"]+)"/.exec(challenge);
  if (!m) throw new Error("WWW-Authenticate has no resource_metadata: " + challenge);
  state.resourceMetadataUrl = m[1];

  const prm = await fetchJson(m[1]);
  if (prm.resource !== CONFIG.mcpUrl) throw new Error("protected resource metadata names a different resource: " + prm.resource);
  if (!Array.isArray(prm.authorization_servers) || !prm.authorization_servers.length) throw new Error("no authorization_servers");
  state.prm = prm;

  const issuer = prm.authorization_servers[0];
  const as = await fetchJson(issuer.replace(/\/$/, "") + "/.well-known/oauth-authorization-server");
  if (as.issuer !== issuer) throw new Error("AS metadata issuer " + as.issuer + " does not match " + issuer);
  if (!(as.code_challenge_methods_supported || []).includes("S256")) throw new Error("AS does not support S256 PKCE");
  if (as.client_id_metadata_document_supported !== true) throw new Error("AS does not accept Client ID Metadata Documents");
  state.as = as;
}

async function prepareAuthorization() {
  step("preparing authorization");
  const verifier = randomToken(32);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const challenge = b64url(digest);
  const st = randomToken(16);
  const url = new URL(state.as.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state: st,
    scope: "mcp",
    resource: state.prm.resource,
  }).toString();
  state.pending = { verifier, state: st, authUrl: url.href };
  $("signin").hidden = false;
  step("authorization required");
}

let handledCallback = false;
async function handleCallback(href, channel) {
  if (handledCallback || !state.pending) return;
  handledCallback = true;
  try {
    const params = new URL(href).searchParams;
    if (params.get("error")) throw new Error("authorization failed: " + params.get("error"));
    if (params.get("state") !== state.pending.state) throw new Error("state mismatch");
    const iss = params.get("iss");
    if (iss !== state.as.issuer) throw new Error("iss " + JSON.stringify(iss) + " does not equal the AS issuer " + state.as.issuer);
    const code = params.get("code");
    if (!code) throw new Error("callback without a code");
    state.callback = { code, state: params.get("state"), iss, channel };

    step("exchanging code");
    const res = await fetch(state.as.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        code_verifier: state.pending.verifier,
        client_id: CLIENT_ID,
        redirect_uri: REDIRECT_URI,
        resource: state.prm.resource,
      }),
    });
    const tok = await res.json();
    if (!res.ok) throw new Error("token endpoint: HTTP " + res.status + " " + JSON.stringify(tok));
    if (!tok.access_token || !/^bearer$/i.test(tok.token_type || "")) throw new Error("unexpected token response: " + JSON.stringify(tok));
    state.accessToken = tok.access_token;
    state.tokenType = tok.token_type;
    state.pending = null;

    const again = await callSecret();
    if (again.unauthorized) throw new Error("still unauthorized after obtaining a token");
    state.secretText = again.text;
    $("secret").textContent = again.text;
    step("done");
  } catch (err) { fail(err); }
}

window.addEventListener("message", (ev) => {
  if (ev.origin !== ORIGIN || !ev.data || ev.data.type !== "mcp-oauth-callback") return;
  handleCallback(ev.data.url, "postMessage");
});
window.addEventListener("storage", (ev) => {
  if (ev.key !== "mcp-oauth-callback" || !ev.newValue) return;
  localStorage.removeItem("mcp-oauth-callback");
  handleCallback(JSON.parse(ev.newValue).url, "storage");
});

$("call").addEventListener("click", async () => {
  try {
    $("call").disabled = true;
    await connect();
    const first = await callSecret();
    if (!first.unauthorized) { state.secretText = first.text; $("secret").textContent = first.text; step("done"); return; }
    await discover(first.unauthorized);
    await prepareAuthorization();
  } catch (err) { fail(err); }
});

// Opened synchronously from the click, as a real host would, so popup blockers allow it.
$("signin").addEventListener("click", () => {
  if (!state.pending) return;
  const w = window.open(state.pending.authUrl, "mcp-authorize", "popup,width=520,height=640");
  if (!w) fail(new Error("popup was blocked"));
  else step("waiting for consent");
});
`;

const CALLBACK_SCRIPT = String.raw`
"use strict";
const payload = { type: "mcp-oauth-callback", url: location.href };
if (window.opener && !window.opener.closed) {
  window.opener.postMessage(payload, location.origin);
  window.close();
} else {
  localStorage.setItem("mcp-oauth-callback", JSON.stringify(payload));
  document.getElementById("msg").textContent = "Signed in. You can close this window.";
}
`;

function hostPage(mcpUrl: string): string {
  const config = JSON.stringify({ mcpUrl }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Browser MCP host</title></head>
<body>
<h1>Browser MCP host</h1>
<button id="call" type="button">Call get_secret</button>
<button id="signin" type="button" hidden>Sign in</button>
<p>Status: <span id="status" role="status">idle</span></p>
<p>Secret: <output id="secret"></output></p>
<p role="alert" id="error"></p>
<script type="application/json" id="config">${config}</script>
<script>${HOST_SCRIPT}</script>
</body></html>`;
}

const CALLBACK_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signing in…</title></head>
<body><p id="msg">Completing sign-in…</p><script>${CALLBACK_SCRIPT}</script></body></html>`;

interface Host {
  origin: string;
  close(): Promise<void>;
}

async function startHost(mcpUrl: string): Promise<Host> {
  let origin = "";
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://host.invalid").pathname;
    if (req.method !== "GET") {
      res.writeHead(405).end();
    } else if (path === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }).end(
        hostPage(mcpUrl),
      );
    } else if (path === "/callback") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }).end(
        CALLBACK_PAGE,
      );
    } else if (path === "/client.json") {
      // The Client ID Metadata Document this host identifies itself with.
      res.writeHead(200, { "Content-Type": "application/json" }).end(
        JSON.stringify({
          client_id: origin + "/client.json",
          client_name: "Browser test host",
          client_uri: origin + "/",
          redirect_uris: [origin + "/callback"],
          grant_types: ["authorization_code", "refresh_token"],
          response_types: ["code"],
          token_endpoint_auth_method: "none",
        }),
      );
    } else {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Test utilities
// ---------------------------------------------------------------------------------------------

interface HostState {
  protocolVersion: string | null;
  resourceMetadataUrl: string | null;
  as: { issuer: string; authorization_endpoint: string; token_endpoint: string } | null;
  pending: { authUrl: string } | null;
  callback: { code: string; state: string; iss: string; channel: string } | null;
  accessToken: string | null;
  secretText: string | null;
  steps: string[];
}

function hostState(page: Page): Promise<HostState> {
  return page.evaluate(() => JSON.parse(JSON.stringify((window as unknown as { hostState: unknown }).hostState)));
}

/** Waits until the host page reaches `status` (or fails), and reports the page's own error text. */
async function waitForStatus(page: Page, status: string, timeout = STEP_TIMEOUT_MS): Promise<void> {
  await page.waitForFunction(
    (want) => {
      const s = document.getElementById("status")?.textContent;
      return s === want || s === "failed";
    },
    status,
    { timeout },
  );
  const now = await page.locator("#status").textContent();
  if (now !== status) {
    const err = await page.locator("#error").textContent();
    const st = await hostState(page);
    assert.fail(`host page failed before reaching "${status}": ${err}\nsteps: ${st.steps.join(" -> ")}`);
  }
}

/** The consent form's Approve button (a submit button: it POSTs the form with decision=approve). */
function approveControl(consent: Page): Locator {
  return consent.getByRole("button", { name: "Approve", exact: true });
}

/** Starts the host flow up to the consent page; returns the host page and the consent popup. */
async function reachConsent(context: BrowserContext, hostOrigin: string): Promise<{ page: Page; consent: Page }> {
  const page = await context.newPage();
  await page.goto(hostOrigin + "/");
  await page.getByRole("button", { name: "Call get_secret" }).click();
  await waitForStatus(page, "authorization required");
  const [consent] = await Promise.all([
    page.waitForEvent("popup", { timeout: STEP_TIMEOUT_MS }),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  await consent.waitForLoadState("load");
  await approveControl(consent).waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
  return { page, consent };
}

async function callSecretDirectly(mcpUrl: string, token: string, protocolVersion: string | null): Promise<string> {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    Accept: "application/json, text/event-stream",
    Authorization: `Bearer ${token}`,
  };
  if (protocolVersion) headers["MCP-Protocol-Version"] = protocolVersion;
  const res = await fetch(mcpUrl, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "get_secret", arguments: {} },
    }),
  });
  assert.equal(res.status, 200, `direct get_secret call: HTTP ${res.status}`);
  const type = res.headers.get("content-type") ?? "";
  const raw = await res.text();
  const body = type.includes("text/event-stream")
    ? JSON.parse(raw.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join(""))
    : JSON.parse(raw);
  assert.ok(body.result, `direct get_secret call returned no result: ${raw}`);
  return (body.result.content as Array<{ type: string; text?: string }>)
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("\n");
}

function checkPng(buf: Buffer): { width: number; height: number } {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(buf.length > 100, `screenshot is too small (${buf.length} bytes)`);
  assert.ok(buf.subarray(0, 8).equals(signature), "screenshot does not start with the PNG signature");
  assert.equal(buf.subarray(12, 16).toString("latin1"), "IHDR", "PNG has no IHDR chunk first");
  const width = buf.readUInt32BE(16);
  const height = buf.readUInt32BE(20);
  assert.ok(width > 0 && height > 0, `PNG has empty dimensions ${width}x${height}`);
  return { width, height };
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

if (SKIP_REASON && "Deno" in globalThis) console.warn(SKIP_REASON); // Deno's runner does not print skip reasons

test("browser host on another origin completes lazy OAuth and shows the secret", {
  skip: SKIP_REASON,
  timeout: 180_000,
}, async (t) => {
  assert.ok(HAVE_CHROMIUM, `CI is set but Chromium is missing at ${CHROMIUM_PATH}`);

  const tmp = await mkdtemp(join(tmpdir(), "mcp-browser-test-"));
  const serverLog: string[] = [];
  const srv = await startServer({ port: 0, host: "127.0.0.1", log: (line) => serverLog.push(line) });
  const mcpUrl = srv.url + "/mcp";
  const host = await startHost(mcpUrl);
  // deno-lint-ignore prefer-const -- assigned after the cleanup hook is registered, so the hook can close it
  let browser: Browser | undefined;

  t.after(async () => {
    await browser?.close().catch(() => {});
    await host.close();
    await srv.close();
    if (process.env.KEEP_BROWSER_ARTIFACTS) t.diagnostic(`artifacts kept in ${tmp}`);
    else await rm(tmp, { recursive: true, force: true });
  });

  assert.notEqual(new URL(host.origin).origin, new URL(srv.url).origin, "host and server must be different origins");

  browser = await launchChromium(EXTRA_LAUNCH_ARGS);

  const dumpServerLog = (err: unknown) => {
    for (const line of serverLog.slice(-40)) t.diagnostic(`server log: ${line}`);
    throw err;
  };

  await t.test("approve with a mouse click", async () => {
    const context = await browser!.newContext();
    try {
      // Every request the host page sends to the MCP server / AS must be a cross-origin one.
      type Seen = { method: string; url: string; origin?: string; contentType?: string; navigation: boolean };
      const toServer: Promise<Seen>[] = [];
      context.on("request", (req) => {
        if (!req.url().startsWith(srv.url + "/")) return;
        toServer.push(
          req.allHeaders().then((h) => ({
            method: req.method(),
            url: req.url(),
            origin: h["origin"],
            contentType: h["content-type"],
            navigation: req.isNavigationRequest(),
          })),
        );
      });

      const { page, consent } = await reachConsent(context, host.origin);

      const before = await hostState(page);
      assert.equal(before.resourceMetadataUrl, srv.url + "/.well-known/oauth-protected-resource/mcp");
      assert.equal(before.as?.issuer, srv.url);
      const authUrl = new URL(consent.url());
      assert.equal(authUrl.origin + authUrl.pathname, before.as?.authorization_endpoint);
      assert.equal(authUrl.searchParams.get("client_id"), host.origin + "/client.json");
      assert.equal(authUrl.searchParams.get("redirect_uri"), host.origin + "/callback");
      assert.equal(authUrl.searchParams.get("code_challenge_method"), "S256");
      assert.match(authUrl.searchParams.get("code_challenge") ?? "", /^[A-Za-z0-9_-]{43}$/);

      // Consent page: both choices are offered; keep a screenshot.
      await consent.getByRole("button", { name: "Deny", exact: true }).waitFor({ state: "visible" });
      const shot = join(tmp, "consent.png");
      await consent.screenshot({ path: shot, fullPage: true });
      const png = await readFile(shot);
      const dims = checkPng(png);
      t.diagnostic(`consent screenshot: ${png.length} bytes, ${dims.width}x${dims.height}`);

      const closed = consent.waitForEvent("close", { timeout: STEP_TIMEOUT_MS });
      await approveControl(consent).click({ noWaitAfter: true });
      await waitForStatus(page, "done");
      await closed; // the callback page hands the code to the opener and closes itself

      const shown = await page.locator("#secret").textContent();
      const after = await hostState(page);
      assert.ok(shown && shown.trim().length > 0, "no secret shown on the host page");
      assert.equal(after.callback?.iss, srv.url, "callback iss must be the AS issuer");
      assert.equal(
        after.callback?.channel,
        "postMessage",
        "the popup lost window.opener on its way through the consent page",
      );
      assert.ok(after.accessToken, "host page holds no access token");
      assert.ok(
        await page.getByText(shown!.trim(), { exact: false }).isVisible(),
        "secret text is not visible on the page",
      );

      // The text on the page is exactly what get_secret returns for that token.
      const direct = await callSecretDirectly(mcpUrl, after.accessToken!, after.protocolVersion);
      assert.equal(shown, direct);

      // Network shape: fetches carried the host's Origin; the token exchange was form-encoded.
      const seen = await Promise.all(toServer);
      const fetches = seen.filter((r) => !r.navigation);
      assert.ok(fetches.length >= 5, `expected the host's fetches to the server, saw ${JSON.stringify(seen)}`);
      for (const r of fetches) {
        assert.equal(r.origin, host.origin, `request without the host Origin: ${r.method} ${r.url}`);
      }
      const tokenReqs = fetches.filter((r) => r.url === after.as!.token_endpoint);
      assert.equal(tokenReqs.length, 1);
      assert.equal(tokenReqs[0].method, "POST");
      assert.match(tokenReqs[0].contentType ?? "", /^application\/x-www-form-urlencoded/);
    } catch (err) {
      dumpServerLog(err);
    } finally {
      await context.close();
    }
  });

  await t.test("approve with the keyboard (focus + Space)", async () => {
    const context = await browser!.newContext();
    try {
      const { page, consent } = await reachConsent(context, host.origin);
      const approve = approveControl(consent);
      await approve.focus();
      const focused = await approve.evaluate((el) => el === document.activeElement);
      assert.ok(focused, "the Approve control cannot take keyboard focus");
      const desc = await approve.evaluate(
        (el) => `<${el.tagName.toLowerCase()}${el.getAttribute("role") ? ` role="${el.getAttribute("role")}"` : ""}>`,
      );

      const startUrl = consent.url();
      await consent.keyboard.press("Space");
      const activated = await page
        .waitForFunction(
          () => {
            const s = document.getElementById("status")?.textContent;
            return s === "done" || s === "failed" || s === "exchanging code";
          },
          undefined,
          { timeout: 5_000 },
        )
        .then(() => true, () => false);
      assert.ok(
        activated,
        `pressing Space on the focused Approve control (${desc}) did not approve: the popup stayed on ${
          new URL(startUrl).pathname
        }`,
      );
      await waitForStatus(page, "done");
      const st = await hostState(page);
      assert.ok(st.secretText && st.secretText.length > 0);
      assert.equal(await page.locator("#secret").textContent(), st.secretText);
    } catch (err) {
      dumpServerLog(err);
    } finally {
      await context.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Issue #11, item 1: consent is a user action
// ---------------------------------------------------------------------------------------------

/**
 * The attacker's site: it publishes a Client ID Metadata Document naming its own /cb, serves the attack
 * page, and records every request that reaches /cb — a code arriving there is the attack succeeding.
 */
async function startAttacker(page: (origin: string) => string) {
  const callbacks: URL[] = [];
  let origin = "";
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", origin);
    if (url.pathname === "/client.json") {
      const document = { client_id: `${origin}/client.json`, client_name: "Attacker", redirect_uris: [`${origin}/cb`] };
      return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(document));
    }
    if (url.pathname === "/cb") {
      callbacks.push(url);
      return void res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><p>callback</p>");
    }
    if (url.pathname === "/attack") {
      return void res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page(origin));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    callbacks,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()).closeAllConnections()),
  };
}

/**
 * Everything a page on another origin can do without the user: read /authorize?…&approved=1 with a CORS
 * fetch, fire it with a no-cors fetch (following any redirect), frame it, and POST the consent form into
 * a frame with a consent token it obtained itself. Each attempt's outcome lands in window.attack.
 */
const ATTACK_SCRIPT = String.raw`
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const results = {};
window.attack = { done: false, results };
const settle = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
(async () => {
  try {
    const answer = await fetch(config.approveUrl, { credentials: "include" });
    results.corsFetch = "read " + answer.status + " " + (await answer.text()).slice(0, 80);
  } catch (error) {
    results.corsFetch = "blocked: " + error.name;
  }
  try {
    const answer = await fetch(config.approveUrl, { mode: "no-cors", credentials: "include" });
    results.noCorsFetch = "opaque " + answer.type + " " + answer.status;
  } catch (error) {
    results.noCorsFetch = "failed: " + error.name;
  }
  const frame = document.createElement("iframe");
  frame.name = "framed";
  frame.src = config.approveUrl;
  document.body.append(frame);
  const sink = document.createElement("iframe");
  sink.name = "sink";
  document.body.append(sink);
  const form = document.getElementById("csrf-in-frame");
  form.target = "sink";
  await settle(100); // let the frame take its name
  form.submit();
  await settle(1500);
  try {
    results.sink = sink.contentDocument ? "readable: " + sink.contentDocument.URL : "not readable";
  } catch (error) {
    results.sink = "not readable: " + error.name;
  }
  window.attack.done = true;
})();
`;

function attackPage(config: { approveUrl: string; authorizeEndpoint: string; consent: string }): string {
  const json = JSON.stringify(config).replace(/</g, "\\u003c");
  const field = (name: string, value: string) =>
    `<input type="hidden" name="${name}" value="${value.replace(/&/g, "&amp;").replace(/"/g, "&quot;")}">`;
  const form = (id: string) =>
    `<form id="${id}" method="post" action="${config.authorizeEndpoint}">${field("consent", config.consent)}${
      field("decision", "approve")
    }</form>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Totally harmless page</title></head>
<body><h1>Nothing to see</h1>${form("csrf-in-frame")}${form("csrf-top")}
<script type="application/json" id="config">${json}</script>
<script>${ATTACK_SCRIPT}</script></body></html>`;
}

test(
  "a page on another origin cannot obtain a code without the user's click; the user's click on Approve still completes",
  {
    skip: SKIP_REASON,
    timeout: 120_000,
  },
  async (t) => {
    assert.ok(HAVE_CHROMIUM, `CI is set but Chromium is missing at ${CHROMIUM_PATH}`);
    const serverLog: string[] = [];
    const srv = await startServer({ port: 0, host: "127.0.0.1", log: (line) => serverLog.push(line) });
    let config = { approveUrl: "", authorizeEndpoint: `${srv.url}/authorize`, consent: "" };
    const attacker = await startAttacker(() => attackPage(config));
    // deno-lint-ignore prefer-const -- assigned after the cleanup hook is registered, so the hook can close it
    let browser: Browser | undefined;
    t.after(async () => {
      await browser?.close().catch(() => {});
      await attacker.close();
      await srv.close();
    });

    // The attacker's own client: its document, its redirect_uri, a PKCE challenge it made up.
    const authorizeUrl = new URL(`${srv.url}/authorize`);
    authorizeUrl.search = new URLSearchParams({
      response_type: "code",
      client_id: `${attacker.origin}/client.json`,
      redirect_uri: `${attacker.origin}/cb`,
      code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      code_challenge_method: "S256",
      state: "attack",
    }).toString();
    const approveUrl = new URL(authorizeUrl);
    approveUrl.searchParams.set("approved", "1");
    // A consent token is no secret from the attacker: it can fetch the page itself, server to server.
    const page = await fetch(authorizeUrl);
    assert.equal(page.status, 200, "the attacker's client is a valid one: the attack is only about consent");
    const consent = /name="consent"[^>]*value="([^"]*)"/.exec(await page.text())?.[1] ?? "";
    config = { ...config, approveUrl: approveUrl.href, consent };

    browser = await launchChromium(EXTRA_LAUNCH_ARGS);
    const context = await browser.newContext();
    // What the browser sent with each consent POST: the headers the server decides on.
    const consentPosts: Promise<{ site?: string; origin?: string }>[] = [];
    context.on("request", (request) => {
      if (request.method() !== "POST" || !request.url().startsWith(`${srv.url}/authorize`)) return;
      const sent = request.allHeaders().then((headers) => ({
        site: headers["sec-fetch-site"],
        origin: headers.origin,
      }));
      consentPosts.push(sent);
    });
    try {
      const tab = await context.newPage();
      await tab.goto(`${attacker.origin}/attack`);
      await tab.waitForFunction(() => (window as unknown as { attack: { done: boolean } }).attack.done, undefined, {
        timeout: STEP_TIMEOUT_MS,
      });
      const { results } = await tab.evaluate(() =>
        (window as unknown as { attack: { results: Record<string, string> } }).attack
      );
      t.diagnostic(`attack outcomes: ${JSON.stringify(results)}`);
      assert.deepEqual(attacker.callbacks.map(String), [], "no fetch nor frame brought a code to the attacker");
      assert.match(results.corsFetch, /^blocked/, "a CORS fetch cannot read /authorize (no CORS headers there)");
      const framed = tab.frame({ name: "framed" });
      assert.ok(framed, "the iframe exists");
      assert.equal(await framed.locator("#approve").count(), 0, "the consent page does not render inside a frame");

      // The CSRF proper: the attacker's page POSTs the consent form, top level, with a token it fetched itself.
      assert.ok(consent, "the consent page carries a consent token");
      const [response] = await Promise.all([
        tab.waitForResponse((r) => r.url() === `${srv.url}/authorize` && r.request().method() === "POST"),
        tab.evaluate(() => (document.getElementById("csrf-top") as HTMLFormElement).submit()),
      ]);
      await tab.waitForURL(`${srv.url}/authorize`, { waitUntil: "load" }); // the tab now shows the refusal
      assert.equal(response.status(), 403, "a form POST from another origin is refused");
      assert.deepEqual(attacker.callbacks.map(String), [], "no code reached the attacker without a click");
      const attempts = await Promise.all(consentPosts);
      assert.equal(
        attempts.length,
        2,
        `both form POSTs (in a frame, top level) were sent: ${JSON.stringify(attempts)}`,
      );
      for (const attempt of attempts) {
        assert.notEqual(attempt.site, "same-origin", `Chromium says where it came from: ${JSON.stringify(attempt)}`);
        assert.equal(attempt.origin, attacker.origin);
      }

      // Even a top-level visit to …&approved=1 only shows the consent page: nothing happens without a click.
      const visit = await tab.goto(approveUrl.href);
      assert.equal(visit?.status(), 200);
      assert.equal(new URL(tab.url()).origin, srv.url, "the tab stays on the consent page");
      assert.deepEqual(attacker.callbacks.map(String), [], "still no code");

      // The user clicks Approve on the server's own page: the same-origin POST completes, 303 to the client.
      await Promise.all([
        tab.waitForURL((url) => url.href.startsWith(`${attacker.origin}/cb`), { timeout: STEP_TIMEOUT_MS }),
        approveControl(tab).click(),
      ]);
      assert.equal(attacker.callbacks.length, 1, "the click delivered exactly one callback");
      const callback = attacker.callbacks[0];
      assert.ok(callback.searchParams.get("code"), "with a code");
      assert.equal(callback.searchParams.get("state"), "attack");
      assert.equal(callback.searchParams.get("iss"), srv.url);
      const click = await consentPosts.at(-1);
      assert.deepEqual(click, { site: "same-origin", origin: srv.url }, "what a click on the consent page sends");
    } catch (error) {
      for (const line of serverLog.slice(-40)) t.diagnostic(`server log: ${line}`);
      throw error;
    } finally {
      await context.close();
    }
  },
);
