/**
 * The MCP App in a real browser. The page is an MCP Apps host built on the real `AppBridge` from
 * `@modelcontextprotocol/ext-apps` (bundled in memory with the esbuild that tsx brings): it renders the
 * server's views in sandboxed iframes and answers their `tools/call` requests. The host's MCP connection lives
 * in this test process — the official SDK 1.x client with an OAuth provider, reached from the page through
 * `page.exposeFunction` — so a view's click on **Auth me** meets the 401, the "user" approves the consent page,
 * the host retries, and the secret appears inside the view. That is the lazy-auth demo as a user sees it in a
 * host, with the host's own OAuth done by the code the interop tests already trust.
 *
 * Chromium is Debian's, driven through playwright-core; without it the test is skipped (a failure under CI).
 * `SAVE_APP_SCREENSHOT=1` also writes the picture the README shows, examples/mcp-app-screenshot.png.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { Browser, FrameLocator, Page } from "playwright-core";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type OAuthDiscoveryState, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationMixed, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import { type RunningServer, startServer } from "../server.ts";
import { approveAsUser, TestOAuthProvider } from "./clients.ts";
import { CHROMIUM_PATH, chromiumSkipReason, HAVE_CHROMIUM, launchChromium } from "./chromium.ts";

const SKIP_REASON = chromiumSkipReason("MCP App test");
const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const SCREENSHOT = new URL("../examples/mcp-app-screenshot.png", import.meta.url);
const APP_MIME = "text/html;profile=mcp-app";
const AUTH_BUTTON_URI = "ui://lazy-auth/auth-button.html";
const SECRET_URI = "ui://lazy-auth/secret.html";
const SECRET_TEXT = /The secret is: .+/;

// ─── The host page ───────────────────────────────────────────────────────────────────────────────

/** AppBridge and PostMessageTransport as one browser module (their package has bare imports). */
async function bundleAppBridge(): Promise<string> {
  const bundle = await build({
    stdin: {
      contents: 'export { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";',
      resolveDir: REPO_ROOT,
    },
    bundle: true,
    format: "esm",
    platform: "browser",
    write: false,
    logLevel: "silent",
  });
  const [file] = bundle.outputFiles;
  assert.ok(file, "esbuild produced the module");
  return file.text;
}

// The host's logic in the page: one card per tool call, its view in a sandboxed iframe behind an AppBridge.
// Tool calls from a view go to `callServerTool`, which the test process provides.
const HOST_SCRIPT = String.raw`
import { AppBridge, PostMessageTransport } from "/app-bridge.js";

const views = new Map(); // card id → { bridge, iframe, context, sizes }

window.host = {
  // Attach the iframe, connect the bridge, and only then load the document: else ui/initialize is lost.
  async render(id, caption, html, context) {
    const card = document.createElement("section");
    card.id = id;
    const title = document.createElement("p");
    title.textContent = caption;
    const iframe = document.createElement("iframe");
    iframe.setAttribute("sandbox", "allow-scripts");
    iframe.title = caption;
    card.append(title, iframe);
    document.getElementById("chat").append(card);

    const bridge = new AppBridge(null, { name: "app-host-test", version: "1.0.0" }, { serverTools: {} }, {
      hostContext: context,
    });
    const view = { bridge, iframe, context, sizes: [] };
    views.set(id, view);
    bridge.oncalltool = (params) => window.callServerTool(params.name, params.arguments || {});
    bridge.onsizechange = (size) => {
      view.sizes.push(size);
      if (typeof size.height === "number") iframe.style.height = size.height + "px";
    };
    const initialized = new Promise((resolve) => (bridge.oninitialized = resolve));
    await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
    iframe.srcdoc = html;
    await initialized;
    return { appInfo: bridge.getAppVersion(), appCapabilities: bridge.getAppCapabilities() };
  },
  sendToolInput: (id, args) => views.get(id).bridge.sendToolInput({ arguments: args }),
  sendToolResult: (id, result) => views.get(id).bridge.sendToolResult(result),
  setTheme(id, theme) {
    const view = views.get(id);
    view.context = { ...view.context, theme };
    return view.bridge.setHostContext(view.context);
  },
  sizes: (id) => views.get(id).sizes,
  ping: (id) => views.get(id).bridge.request({ method: "ping" }),
  async teardown(id) {
    const result = await views.get(id).bridge.teardownResource({});
    document.getElementById(id).remove();
    views.delete(id);
    return result;
  },
};
document.body.dataset.ready = "yes";
`;

const HOST_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MCP Apps test host</title><link rel="icon" href="data:,">
<style>
  body { margin: 0; padding: 16px; font: 14px/1.4 system-ui, sans-serif; background: #eef0f3; color: #222; }
  section { width: 480px; margin: 0 0 16px; padding: 8px 12px 12px; background: #fff; border-radius: 10px;
    box-shadow: 0 1px 3px rgba(0, 0, 0, 0.15); }
  section > p { margin: 0 0 8px; color: #666; font-size: 12px; }
  iframe { display: block; width: 100%; height: 0; border: 1px solid #ddd; border-radius: 6px; }
</style></head>
<body><main id="chat"></main><script type="module">${HOST_SCRIPT}</script></body></html>`;

/** A loopback web server for the host page and the bundled AppBridge. */
async function serveHostPage(bridgeModule: string): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const headers = { "Cache-Control": "no-store", Connection: "close" };
    if (req.url === "/") res.writeHead(200, { ...headers, "Content-Type": "text/html; charset=utf-8" }).end(HOST_PAGE);
    else if (req.url === "/app-bridge.js") {
      res.writeHead(200, { ...headers, "Content-Type": "text/javascript; charset=utf-8" }).end(bridgeModule);
    } else res.writeHead(404, headers).end();
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ─── The host's MCP connection ───────────────────────────────────────────────────────────────────

type ToolResult = { content?: { type: string; text?: string }[]; isError?: boolean };

/**
 * What a host does with a tool call: send it; on 401 send the user to sign in, finish the code exchange and
 * call again. The "user" approves the consent page — unless the test has them give up.
 */
class HostConnection {
  readonly provider = new TestOAuthProvider<OAuthTokens, OAuthClientInformationMixed, OAuthDiscoveryState>();
  readonly calls: string[] = [];
  userGivesUp = false;
  readonly #client = new Client({ name: "app-host-test", version: "1.0.0" }, {
    capabilities: { extensions: { "io.modelcontextprotocol/ui": { mimeTypes: [APP_MIME] } } }, // renders MCP Apps
  });
  readonly #transport: StreamableHTTPClientTransport;

  constructor(mcpUrl: string) {
    this.#transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: this.provider });
  }

  connect = () => this.#client.connect(this.#transport);
  close = () => this.#client.close();
  listTools = async () => (await this.#client.listTools()).tools;
  listResources = async () => (await this.#client.listResources()).resources;
  readResource = async (uri: string) => (await this.#client.readResource({ uri })).contents;

  callTool = async (name: string, args: Record<string, unknown> = {}): Promise<ToolResult> => {
    this.calls.push(name);
    try {
      return await this.#client.callTool({ name, arguments: args }) as ToolResult;
    } catch (error) {
      if (!(error instanceof UnauthorizedError)) throw error;
      if (this.userGivesUp) throw new Error("the user closed the sign-in window");
      const authorizationUrl = this.provider.authorizationUrls.at(-1);
      assert.ok(authorizationUrl, "the client sent the user to authorize");
      const callback = await approveAsUser(authorizationUrl);
      await this.#transport.finishAuth(callback.searchParams.get("code") ?? "");
      return await this.#client.callTool({ name, arguments: args }) as ToolResult;
    }
  };

  /** The one HTML document the host renders for `uri`, checked as an MCP Apps host checks it. */
  async viewDocument(uri: string): Promise<string> {
    const contents = await this.readResource(uri);
    assert.equal(contents.length, 1, "resources/read answers exactly one item");
    const [item] = contents;
    assert.ok(item && "text" in item && typeof item.text === "string", "the document is text");
    assert.equal(item.uri, uri);
    assert.equal(item.mimeType, APP_MIME);
    return item.text;
  }
}

// ─── Test utilities ──────────────────────────────────────────────────────────────────────────────

type HostMethod = "render" | "sendToolInput" | "sendToolResult" | "setTheme" | "sizes" | "ping" | "teardown";

/** Calls `window.host[method](...args)` in the page. */
function inHost<T>(page: Page, method: HostMethod, ...args: unknown[]): Promise<T> {
  return page.evaluate(
    ({ method, args }) => {
      const host = (window as unknown as { host: Record<HostMethod, (...args: unknown[]) => T> }).host;
      return host[method](...args);
    },
    { method, args },
  );
}

/** The view inside the card `id`. */
const view = (page: Page, id: string): FrameLocator => page.frameLocator(`#${id} iframe`);

/** Waits until the view's element shows text matching `pattern`; returns that text. */
async function waitForText(page: Page, id: string, selector: string, pattern: RegExp): Promise<string> {
  const element = view(page, id).locator(selector);
  await element.filter({ hasText: pattern }).waitFor({ timeout: 15_000 }).catch(async (error) => {
    throw new Error(`${selector} shows ${JSON.stringify(await element.textContent())}, not ${pattern}: ${error}`);
  });
  return (await element.textContent()) ?? "";
}

const hasClass = (page: Page, id: string, selector: string, name: string) =>
  view(page, id).locator(selector).evaluate((element, name) => element.classList.contains(name), name);

const backgroundOf = (page: Page, id: string) =>
  view(page, id).locator("body").evaluate((body) => getComputedStyle(body).backgroundColor);

// ─── The tests ───────────────────────────────────────────────────────────────────────────────────

if (SKIP_REASON && "Deno" in globalThis) console.warn(SKIP_REASON); // Deno's runner does not print skip reasons

describe("MCP App in a browser host (AppBridge, Chromium)", { skip: SKIP_REASON, timeout: 120_000 }, () => {
  let server: RunningServer;
  let hostPage: { url: string; close(): Promise<void> };
  let browser: Browser;
  let page: Page;
  let connection: HostConnection;
  const pageErrors: string[] = [];

  before(async () => {
    assert.ok(HAVE_CHROMIUM, `CI is set but Chromium is missing at ${CHROMIUM_PATH}`);
    server = await startServer({ port: 0, host: "127.0.0.1", log: () => {} });
    connection = new HostConnection(`${server.url}/mcp`);
    await connection.connect();
    hostPage = await serveHostPage(await bundleAppBridge());
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 520, height: 400 }, deviceScaleFactor: 2 });
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warning") pageErrors.push(message.text());
    });
    await page.exposeFunction("callServerTool", connection.callTool);
    await page.goto(hostPage.url);
    await page.locator("body[data-ready]").waitFor();
  });

  after(async () => {
    await browser?.close();
    await hostPage?.close();
    await connection?.close();
    await server?.close();
  });

  it("tools/list links show_auth_button and get_secret to their views; resources/read serves both", async () => {
    const tools = await connection.listTools();
    const viewOf = (name: string) =>
      (tools.find((tool) => tool.name === name)?._meta?.ui as { resourceUri?: string })
        ?.resourceUri;
    assert.equal(viewOf("show_auth_button"), AUTH_BUTTON_URI);
    assert.equal(viewOf("get_secret"), SECRET_URI);
    const listed = await connection.listResources();
    for (const uri of [AUTH_BUTTON_URI, SECRET_URI]) {
      assert.equal(listed.find((resource) => resource.uri === uri)?.mimeType, APP_MIME, `${uri} is listed`);
      assert.match(await connection.viewDocument(uri), /^<!doctype html>/i);
    }
  });

  it("show_auth_button: the host renders its view, which initializes, reports its size and answers ping", async () => {
    const result = await connection.callTool("show_auth_button");
    assert.notEqual(result.isError, true);
    const html = await connection.viewDocument(AUTH_BUTTON_URI);
    const started = await inHost<{ appInfo?: { name: string }; appCapabilities?: object }>(
      page,
      "render",
      "button-app",
      "show_auth_button",
      html,
      { theme: "light", displayMode: "inline" },
    );
    assert.ok(started.appInfo?.name, "ui/initialize carried appInfo");
    assert.deepEqual(started.appCapabilities, {}, "and appCapabilities");
    await inHost(page, "sendToolInput", "button-app", {});
    await inHost(page, "sendToolResult", "button-app", result);

    await page.waitForFunction(() => {
      const host = (window as unknown as { host: { sizes(id: string): unknown[] } }).host;
      return host.sizes("button-app").length > 0;
    });
    const [size] = await inHost<{ width: number; height: number }[]>(page, "sizes", "button-app");
    assert.ok(
      size && size.height > 20 && size.height < 300,
      `size-changed carries the view's height (${size?.height})`,
    );
    assert.deepEqual(await inHost(page, "ping", "button-app"), {}, "the view answers ping");
    await view(page, "button-app").getByRole("button", { name: "Auth me" }).waitFor();
  });

  it("Auth me → get_secret meets 401 → the user signs in → the host's retry shows the secret in the view", async () => {
    assert.equal(connection.provider.authorizationUrls.length, 0, "no sign-in yet");
    await view(page, "button-app").getByRole("button", { name: "Auth me" }).click();
    await waitForText(page, "button-app", "#answer", SECRET_TEXT);
    assert.equal(await hasClass(page, "button-app", "#answer", "error"), false, "not styled as an error");
    assert.equal(connection.provider.authorizationUrls.length, 1, "one sign-in");
    assert.deepEqual(connection.calls.slice(-1), ["get_secret"], "the view's click became the host's tools/call");

    const picture = await page.locator("#button-app").screenshot();
    assert.deepEqual([...picture.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG of the view with the secret");
    if (process.env.SAVE_APP_SCREENSHOT) await writeFile(SCREENSHOT, picture);
  });

  it("Revoke token → the revocation shows; Auth me again → a new sign-in, and the secret again", async () => {
    await view(page, "button-app").getByRole("button", { name: "Revoke token" }).click();
    await waitForText(page, "button-app", "#answer", /revoked/i);
    await view(page, "button-app").getByRole("button", { name: "Auth me" }).click();
    await waitForText(page, "button-app", "#answer", SECRET_TEXT);
    assert.equal(connection.provider.authorizationUrls.length, 2, "the revoked session needed a second sign-in");
  });

  it("a failed host call (the user gives up signing in) shows as an error in the view", async () => {
    await view(page, "button-app").getByRole("button", { name: "Revoke token" }).click();
    await waitForText(page, "button-app", "#answer", /revoked/i);
    connection.userGivesUp = true;
    try {
      await view(page, "button-app").getByRole("button", { name: "Auth me" }).click();
      await waitForText(page, "button-app", "#answer", /get_secret failed: .*closed the sign-in window/);
      assert.equal(await hasClass(page, "button-app", "#answer", "error"), true, "styled as an error");
    } finally {
      connection.userGivesUp = false;
    }
  });

  it("follows the host's theme: dark and light differ, and host-context-changed switches it", async () => {
    const light = await backgroundOf(page, "button-app");
    await inHost(page, "setTheme", "button-app", "dark");
    await view(page, "button-app").locator("html[data-theme=dark]").waitFor({ state: "attached" });
    const dark = await backgroundOf(page, "button-app");
    assert.notEqual(dark, light, `dark background ${dark} differs from light ${light}`);
    await inHost(page, "setTheme", "button-app", "light");
    await view(page, "button-app").locator("html[data-theme=light]").waitFor({ state: "attached" });
    assert.equal(await backgroundOf(page, "button-app"), light);
  });

  it("get_secret's own view: waiting, then the secret from the tool result the host sends", async () => {
    const html = await connection.viewDocument(SECRET_URI);
    await inHost(page, "render", "secret-app", "get_secret", html, { theme: "dark", displayMode: "inline" });
    await waitForText(page, "secret-app", "#secret", /waiting/i);
    await view(page, "secret-app").locator("html[data-theme=dark]").waitFor({ state: "attached" });
    await inHost(page, "sendToolInput", "secret-app", {});
    const signIns = connection.provider.authorizationUrls.length;
    const result = await connection.callTool("get_secret"); // the session was revoked: this signs in again
    assert.equal(connection.provider.authorizationUrls.length, signIns + 1, "a new sign-in");
    await inHost(page, "sendToolResult", "secret-app", result);
    await waitForText(page, "secret-app", "#secret", SECRET_TEXT);
  });

  it("every value is shown as text, never as HTML", async () => {
    const markup = '<img src="x" onerror="document.title=1"><b id="bold">bold</b>';
    await inHost(page, "sendToolResult", "secret-app", { content: [{ type: "text", text: markup }] });
    assert.equal(await waitForText(page, "secret-app", "#secret", /<img/), markup);
    assert.equal(await view(page, "secret-app").locator("img, #bold").count(), 0, "no element was created");
  });

  it("the views answer ui/resource-teardown; the page logged no error", async () => {
    assert.deepEqual(await inHost(page, "teardown", "secret-app"), {});
    assert.deepEqual(await inHost(page, "teardown", "button-app"), {});
    assert.deepEqual(pageErrors, [], "no error or warning in the page");
  });
});
