/**
 * The live flow page (examples/flow-page.ts) in a real browser. Chromium opens /flow while the official SDK 1.x
 * client runs the lazy flow against the same server: the 401, discovery, registration, the user's consent (clicked
 * in Chromium), the code exchange, the retry, a silent refresh. Then a code is redeemed twice by hand, and a request
 * with a foreign Host is sent. The page must draw each step, in order, with its status and the revocation the
 * replay causes; and neither the page nor its event stream may carry a token, a code, a consent token, the secret
 * or the full client_id. The stream and the page are also checked over plain HTTP: loopback Host only, no CORS
 * header, no framing, a bounded replay, a bounded number of viewers, a slow viewer dropped.
 *
 * Chromium is Debian's, driven through playwright-core; without it the browser part is skipped (a failure under CI).
 * `UPDATE_SCREENSHOT=1` also writes the picture the docs show, docs/flow-page.png.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import process from "node:process";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type OAuthDiscoveryState, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationMixed, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import type { LazyAuthEvent } from "../server.ts";
import {
  FlowHub,
  type FlowMessage,
  type FlowViewer,
  type RunningFlowDemo,
  startFlowDemo,
} from "../examples/flow-page.ts";
import { REDIRECT_URL, TestOAuthProvider, toolText, waitForExpiry } from "./clients.ts";
import { authorizeUrl, pkcePair, postForm, rawRequest } from "./helpers.ts";
import { CHROMIUM_PATH, chromiumSkipReason, HAVE_CHROMIUM, launchChromium } from "./chromium.ts";

const SKIP_REASON = chromiumSkipReason("flow page test");
const SCREENSHOT_DIR = new URL("../docs/", import.meta.url);
const SCREENSHOT = new URL("flow-page.png", SCREENSHOT_DIR);
const SECRET = "lazy auth works"; // what get_secret guards
const CLIENT_NAME = "Interop test client"; // the name TestOAuthProvider registers under
const quiet = () => {};

/** The test's TestOAuthProvider, keeping every token pair the SDK saved (to look for them later). */
class RecordingProvider extends TestOAuthProvider<OAuthTokens, OAuthClientInformationMixed, OAuthDiscoveryState> {
  readonly saved: OAuthTokens[] = [];
  override saveTokens(tokens: OAuthTokens): void {
    this.saved.push(tokens);
    super.saveTokens(tokens);
  }
}

/** The event stream as a new viewer gets it: everything kept, up to the "ready" message; the raw text too. */
async function readStream(url: string, init: RequestInit = {}): Promise<{ raw: string; messages: FlowMessage[] }> {
  const response = await fetch(`${url}/flow/events`, init);
  assert.equal(response.status, 200, "the stream answers 200");
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  assert.equal(response.headers.get("access-control-allow-origin"), null, "no CORS header on the stream");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let raw = "";
  while (!raw.includes('"kind":"ready"')) {
    const { value, done } = await reader.read();
    if (done) break;
    raw += value;
  }
  await reader.cancel();
  const messages = raw.split("\n\n").filter((block) => block.startsWith("data: "))
    .map((block) => JSON.parse(block.slice(6)) as FlowMessage);
  return { raw, messages };
}

/** One row of a lane as the page shows it. */
interface Row {
  method?: string;
  path?: string;
  status?: string;
  tone: string;
  events: string;
  text: string;
}

/** Every lane on the page: its title and its rows, top to bottom. */
function lanesOnPage(page: Page): Promise<{ key: string; title: string; rows: Row[] }[]> {
  return page.$$eval("details.lane", (lanes) =>
    lanes.map((lane) => ({
      key: (lane as HTMLElement).dataset.lane ?? "",
      title: lane.querySelector("h2")?.textContent ?? "",
      rows: [...lane.querySelectorAll("li.step")].map((li) => {
        const data = (li as HTMLElement).dataset;
        return {
          method: data.method,
          path: data.path,
          status: data.status,
          tone: data.tone ?? "",
          events: data.events ?? "",
          text: (li as HTMLElement).innerText,
        };
      }),
    })));
}

/** "METHOD /path status events" for a row, as the assertions spell steps. */
const describeRow = (row: Row) => [row.method ?? "(note)", row.path ?? "", row.status ?? "", row.events].join(" ");

/** Asserts each pattern matches a row, in this order (other rows may come between). */
function assertInOrder(rows: Row[], patterns: RegExp[]) {
  const seen = rows.map(describeRow);
  let at = 0;
  for (const pattern of patterns) {
    const found = seen.findIndex((line, index) => index >= at && pattern.test(line));
    assert.notEqual(found, -1, `a row matching ${pattern} after row ${at}; the rows are:\n${seen.join("\n")}`);
    at = found + 1;
  }
}

if (SKIP_REASON && "Deno" in globalThis) console.warn(SKIP_REASON); // Deno's runner does not print skip reasons

describe("The live flow page draws a host's lazy-auth flow (Chromium)", { skip: SKIP_REASON, timeout: 120_000 }, () => {
  let demo: RunningFlowDemo;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let userTab: Page; // the user's browser: consent pages open here
  let redirected: (callback: URL) => void = () => {};
  let client: Client;
  let transport: StreamableHTTPClientTransport;
  const provider = new RecordingProvider();
  const pageErrors: string[] = [];
  /** What must never show: every token, code and consent token of the run, the secret, the full client_id. */
  const secrets: { what: string; value: string }[] = [];

  /** The user's browser: opens the authorization URL, clicks Approve; returns the callback URL it was sent to. */
  async function approveInBrowser(authorizationUrl: URL | string): Promise<URL> {
    const callback = new Promise<URL>((resolve) => (redirected = resolve));
    const opened = await userTab.goto(String(authorizationUrl));
    assert.equal(opened?.status(), 200, "the consent page opens");
    const consent = await userTab.locator('input[name="consent"]').getAttribute("value");
    assert.ok(consent, "the consent form carries its consent token");
    secrets.push({ what: "a consent token", value: consent });
    await userTab.getByRole("button", { name: "Approve", exact: true }).click();
    const back = await callback;
    const code = back.searchParams.get("code");
    assert.ok(code, "the callback carries a code");
    secrets.push({ what: "a code", value: code });
    return back;
  }

  before(async () => {
    assert.ok(HAVE_CHROMIUM, `CI is set but Chromium is missing at ${CHROMIUM_PATH}`);
    demo = await startFlowDemo({ port: 0, log: quiet, accessTokenTtlSeconds: 1, maxViewers: 4 });
    transport = new StreamableHTTPClientTransport(new URL(`${demo.url}/mcp`), { authProvider: provider });
    client = new Client({ name: "flow-page-test", version: "1.0.0" });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warning") pageErrors.push(message.text());
    });
    // Nothing listens at the client's redirect URI: the tab answers it itself and hands the URL over.
    userTab = await context.newPage();
    await userTab.route(`${REDIRECT_URL}**`, (route) => {
      redirected(new URL(route.request().url()));
      return route.fulfill({ status: 200, contentType: "text/plain", body: "signed in" });
    });
    const opened = await page.goto(`${demo.url}/flow`);
    assert.equal(opened?.status(), 200);
    await page.locator("body[data-ready=yes]").waitFor();
  });

  after(async () => {
    await browser?.close();
    await client?.close();
    await demo?.close(0);
  });

  it("an empty page waits for a host and names the MCP endpoint", async () => {
    assert.equal(await page.locator("#empty").isVisible(), true, "the empty state shows");
    assert.equal(await page.locator("#mcp-url").textContent(), `${demo.url}/mcp`);
    assert.equal(await page.locator("#conn").textContent(), "live");
  });

  it("an SDK client runs the lazy flow: 401, discovery, registration, consent, code, retry, refresh", async () => {
    await client.connect(transport);
    assert.match(toolText(await client.callTool({ name: "whoami", arguments: {} })), /anonymous/);
    await assert.rejects(client.callTool({ name: "get_secret", arguments: {} }), UnauthorizedError);
    const callback = await approveInBrowser(provider.authorizationUrls.at(-1)!);
    await transport.finishAuth(callback.searchParams.get("code")!);
    assert.match(toolText(await client.callTool({ name: "get_secret", arguments: {} })), /lazy auth works/);
    assert.ok(provider.clientId, "the client registered");

    // The silent refresh: the access token lives a second.
    await waitForExpiry(provider.tokens()?.access_token);
    assert.match(toolText(await client.callTool({ name: "get_secret", arguments: {} })), /lazy auth works/);
    assert.equal(provider.authorizationUrls.length, 1, "no second sign-in");
  });

  it("a code redeemed twice: 200, then 400 invalid_grant, and the session it minted revoked", async () => {
    const pkce = pkcePair();
    const url = authorizeUrl(demo.url, { clientId: provider.clientId, redirectUri: REDIRECT_URL, pkce });
    const code = (await approveInBrowser(url)).searchParams.get("code")!;
    const exchange = {
      grant_type: "authorization_code",
      code,
      code_verifier: pkce.verifier,
      client_id: provider.clientId,
      redirect_uri: REDIRECT_URL,
    };
    const first = await postForm(`${demo.url}/token`, exchange);
    assert.equal(first.status, 200, first.text);
    secrets.push({ what: "the replayed code's access token", value: first.json.access_token });
    secrets.push({ what: "the replayed code's refresh token", value: first.json.refresh_token });
    const second = await postForm(`${demo.url}/token`, exchange);
    assert.equal(second.status, 400, second.text);
    assert.equal(second.json.error, "invalid_grant");
  });

  it("a request with a foreign Host is refused 403 (DNS rebinding)", async () => {
    const answer = await rawRequest({ method: "GET", path: "/mcp", headers: { host: "rebind.example" } }, demo.url);
    assert.equal(answer.status, 403, answer.text);
  });

  it("the page draws the client's steps in order, with their statuses, the replay and the revocation", async () => {
    await page.waitForFunction(() => document.querySelector('li.step[data-events~="code_replayed"]') !== null);
    await page.waitForFunction(() => document.querySelector('li.step[data-events~="host_refused"]') !== null);
    const lanes = await lanesOnPage(page);
    const mine = lanes.filter((lane) => lane.title === CLIENT_NAME);
    assert.equal(mine.length, 1, `one lane for the client: ${lanes.map((lane) => lane.title)}`);
    const rows = mine[0]!.rows;
    assertInOrder(rows, [
      /^POST \/mcp 200 request$/, // initialize, before the client had a client_id: its lane joined this one
      /^POST \/mcp 401 request challenge$/,
      /^GET \/\.well-known\/oauth-protected-resource\/mcp 200 request$/,
      /^GET \/\.well-known\/oauth-authorization-server 200 request$/,
      /^POST \/register 201 request client_registered$/,
      /^GET \/authorize 200 request consent_shown$/,
      /^POST \/authorize 303 request consent_approved$/,
      /^POST \/token 200 request code_exchanged$/,
      /^POST \/mcp 200 request$/, // the retry, with its token
      /^POST \/token 200 request tokens_refreshed$/,
      /^GET \/authorize 200 request consent_shown$/,
      /^POST \/authorize 303 request consent_approved$/,
      /^POST \/token 200 request code_exchanged$/,
      /^POST \/token 400 request code_replayed session_revoked/,
    ]);
    const challenge = rows.find((row) => row.events.includes("challenge"))!;
    assert.match(challenge.text, /resource_metadata/);
    assert.match(challenge.text, /RFC 9728 §5\.1/);
    const replay = rows.find((row) => row.events.includes("code_replayed"))!;
    assert.equal(replay.tone, "attack", "the replay stands out");
    assert.match(replay.text, /attack refused/i);
    assert.match(replay.text, /RFC 6749 §4\.1\.2/);
    assert.match(replay.text, /session \S+ revoked/);
    assert.match(rows.find((row) => row.events.includes("consent_approved"))!.text, /RFC 9207/);
    assert.match(rows.find((row) => row.events.includes("tokens_refreshed"))!.text, /OAuth 2\.1 §4\.3\.1/);
    assert.match(rows.find((row) => row.events.includes("client_registered"))!.text, /RFC 7591/);

    const refused = lanes.flatMap((lane) => lane.rows).find((row) => row.events.includes("host_refused"))!;
    assert.match(describeRow(refused), /^GET \/mcp 403 request host_refused\b/);
    assert.equal(refused.tone, "attack");
    assert.match(refused.text, /rebind\.example/);
  });

  it("no token, code, consent token, secret or full client_id is in the page or its stream", async () => {
    for (const tokens of provider.saved) {
      secrets.push({ what: "an access token", value: tokens.access_token });
      if (tokens.refresh_token) secrets.push({ what: "a refresh token", value: tokens.refresh_token });
    }
    secrets.push({ what: "the secret", value: SECRET }, { what: "the full client_id", value: provider.clientId! });
    assert.ok(secrets.filter((s) => s.what === "a code").length >= 2, "both codes were recorded");
    assert.ok(secrets.filter((s) => s.what === "a consent token").length >= 2, "both consent tokens were recorded");
    assert.ok(secrets.filter((s) => s.what === "an access token").length >= 2, "the first and the refreshed tokens");

    const text = await page.evaluate(() => document.body.innerText);
    const html = await page.content();
    const { raw, messages } = await readStream(demo.url);
    assert.ok(messages.some((m) => m.kind === "step" && m.step.events.includes("code_replayed")), "the stream has it");
    for (const { what, value } of secrets) {
      assert.ok(!text.includes(value), `${what} is not in the page's text`);
      assert.ok(!html.includes(value), `${what} is not in the page's HTML`);
      assert.ok(!raw.includes(value), `${what} is not in the event stream`);
    }
    assert.deepEqual(pageErrors, [], "no error or warning in the page");
  });

  it("Reset clears the diagram, for this viewer and the next", async () => {
    if (process.env.UPDATE_SCREENSHOT) {
      await mkdir(SCREENSHOT_DIR, { recursive: true });
      await page.evaluate(() => globalThis.scrollTo(0, 0)); // the sticky header back on top
      await writeFile(SCREENSHOT, await page.screenshot({ fullPage: true, animations: "disabled" }));
    }
    await page.getByRole("button", { name: "Reset" }).click();
    await page.locator("#empty").waitFor({ state: "visible" });
    assert.equal(await page.locator("li.step").count(), 0, "no step left on the page");
    const { messages } = await readStream(demo.url);
    assert.deepEqual(
      messages.filter((m) => m.kind === "step" || m.kind === "lane"),
      [],
      "a new viewer gets no step to replay (the server's notices stay)",
    );
  });

  it("a foreign Host is refused 403 on the page and the stream, without any CORS header", async () => {
    for (const path of ["/flow", "/flow/events"]) {
      const answer = await rawRequest(
        { path, headers: { host: "rebind.example", origin: "http://rebind.example" } },
        demo.url,
      );
      assert.equal(answer.status, 403, `${path}: ${answer.text}`);
      assert.equal(answer.headers.get("access-control-allow-origin"), null, `${path}: no CORS header`);
    }
    const crossSite = await rawRequest({
      path: "/flow/events",
      headers: { host: new URL(demo.url).host, origin: "http://evil.example", "sec-fetch-site": "cross-site" },
    }, demo.url);
    assert.equal(crossSite.status, 403, "a cross-site read of the stream is refused");
    assert.equal(crossSite.headers.get("access-control-allow-origin"), null);
    const reset = await rawRequest({
      method: "POST",
      path: "/flow/reset",
      headers: { host: new URL(demo.url).host, origin: "http://evil.example", "sec-fetch-site": "cross-site" },
    }, demo.url);
    assert.equal(reset.status, 403, "a cross-site Reset is refused");
    const forged = await rawRequest(
      { method: "POST", path: "/flow/reset", headers: { host: new URL(demo.url).host } },
      demo.url,
    );
    assert.equal(forged.status, 400, "a Reset without its custom header (what a form could send) is refused");
  });

  it("the page refuses framing and runs only its own script; it has no CORS header", async () => {
    const answer = await fetch(`${demo.url}/flow`, { headers: { origin: "http://evil.example" } });
    await answer.body?.cancel();
    assert.equal(answer.status, 200);
    assert.equal(answer.headers.get("x-frame-options"), "DENY");
    const csp = answer.headers.get("content-security-policy") ?? "";
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/, "only the page's own inline script runs");
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(answer.headers.get("access-control-allow-origin"), null);
  });

  it("at most maxViewers watch at once: one more is answered 503", async () => {
    const streams: AbortController[] = [];
    try {
      for (let i = 0; i < 3; i++) { // the page is the fourth viewer
        const controller = new AbortController();
        streams.push(controller);
        const response = await fetch(`${demo.url}/flow/events`, { signal: controller.signal });
        assert.equal(response.status, 200, `viewer ${i + 2} is let in`);
      }
      const refused = await fetch(`${demo.url}/flow/events`);
      assert.equal(refused.status, 503, await refused.text());
    } finally {
      for (const controller of streams) controller.abort();
    }
  });
});

describe("The flow page's stream is bounded", () => {
  it("a new viewer gets only the last maxSteps steps", async () => {
    const demo = await startFlowDemo({ port: 0, log: quiet, maxSteps: 3 });
    try {
      for (const path of ["/a", "/b", "/c", "/d", "/e"]) {
        const answer = await fetch(`${demo.url}${path}`);
        await answer.body?.cancel();
        assert.equal(answer.status, 404);
      }
      // The request events arrive when each answer is done; the last one may still be on its way.
      let steps: FlowMessage[] = [];
      while (!steps.some((m) => m.kind === "step" && m.step.path === "/e")) {
        steps = (await readStream(demo.url)).messages.filter((m) => m.kind === "step");
      }
      assert.deepEqual(steps.map((m) => m.kind === "step" && m.step.path), ["/c", "/d", "/e"]);
    } finally {
      await demo.close(0);
    }
  });

  it("a viewer whose unsent backlog passes the bound is dropped; the others get every step", () => {
    const hub = new FlowHub({ maxViewerBufferBytes: 4096 });
    const viewer = (drains: boolean) => {
      const state = { backlog: 0, received: 0, dropped: false };
      const sink: FlowViewer = {
        send: (chunk) => {
          state.received++;
          if (!drains) state.backlog += chunk.length;
        },
        buffered: () => state.backlog,
        drop: () => void (state.dropped = true),
      };
      return { state, sink };
    };
    const slow = viewer(false);
    const fast = viewer(true);
    assert.equal(hub.connect(slow.sink), true);
    assert.equal(hub.connect(fast.sink), true);
    const request: LazyAuthEvent = {
      at: Date.now(),
      type: "request",
      method: "GET",
      path: "/",
      status: 200,
      bearer: false,
      agent: "test",
    };
    for (let i = 0; i < 100; i++) hub.publish({ ...request, path: `/step-${i}` });
    assert.equal(slow.state.dropped, true, "the slow viewer was dropped");
    assert.ok(slow.state.received < 100, `and was sent nothing more (${slow.state.received} messages)`);
    assert.equal(fast.state.dropped, false);
    assert.ok(fast.state.received >= 100, "the other viewer got every step");
    hub.close();
  });

  it("strings are cleaned before they are kept: no query, no long opaque run, no control character", () => {
    const hub = new FlowHub();
    const sent: string[] = [];
    hub.connect({ send: (chunk) => void sent.push(chunk), buffered: () => 0, drop: () => {} });
    const jwt = `eyJhbGciOiJIUzI1NiJ9.${"a".repeat(40)}.${"b".repeat(43)}`;
    hub.publish({
      at: Date.now(),
      type: "oauth_error",
      path: "/token?code=abc",
      status: 400,
      error: "invalid_grant",
      description: `bad ${jwt} from https://client.example/app.json?state=xyz\u202e\n`,
    });
    hub.publish({
      at: Date.now(),
      type: "request",
      method: "POST",
      path: "/token?code=abc",
      status: 400,
      bearer: false,
      agent: "t",
    });
    const all = sent.join("");
    assert.ok(!all.includes(jwt.split(".")[1]!), "the JWT is hidden");
    assert.ok(!all.includes("code=abc") && !all.includes("state=xyz"), "no query");
    assert.ok(!all.includes("\u202e") && !all.includes("\\n"), "no bidi override or newline");
    assert.match(all, /client\.example\/app\.json/, "the document's host and path stay");
    hub.close();
  });
});
