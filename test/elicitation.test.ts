/**
 * URL elicitation: `elicit_url` and `elicit_by_error`, in both protocol eras.
 * - The official clients: `@modelcontextprotocol/sdk` 1.x (2025 handshake era: the elicitation/create
 *   request during the call, and -32042 as UrlElicitationRequiredError) and `@modelcontextprotocol/client`
 *   2.x pinned to 2026-07-28 (input_required, fulfilled through its elicitation/create handler).
 * - Over HTTP, the edges: the event stream's shape, forged and expired callback ids, a requestState that is
 *   tampered with, spent or for another tool, a client answer nobody waits for.
 * - Two instances sharing one Redis: the page visited at one instance, the retry at the other.
 * The "user" visits a page by fetching it, as a browser would. Every server here is fresh, so the caller's
 * visits (one flag per caller) never leak from one suite into another.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { SignJWT } from "jose";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as TransportV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type ClientCapabilities,
  ElicitationCompleteNotificationSchema,
  type ElicitRequest,
  ElicitRequestSchema,
  type ElicitResult,
  UrlElicitationRequiredError,
} from "@modelcontextprotocol/sdk/types.js";
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from "@modelcontextprotocol/client";
import { type RunningServer, startServer } from "../server.ts";
import { startCluster } from "../examples/multi-instance.ts";
import { type Answer, request, rpc, signIn } from "./helpers.ts";
import { RedisProcess, withRedis } from "./redis.ts";

const JWT_SECRET = randomBytes(32).toString("hex"); // known here, so a test can sign an expired elicitation
const MODERN = "2026-07-28";
const URL_ELICITATION = { elicitation: { url: {} } };
const DONE = (tool: string) => `You have been to the page: ${tool} is done.`;
const DECLINED = "You declined to open the page: nothing done.";
const NO_URL_ELICITATION = "Your client cannot open pages for a server (no URL elicitation).";

function startTestServer(elicitationWaitSeconds?: number): Promise<RunningServer> {
  return startServer({ port: 0, host: "127.0.0.1", log: () => {}, jwtSecret: JWT_SECRET, elicitationWaitSeconds });
}

// ─── 2025 era, with @modelcontextprotocol/sdk 1.x ────────────────────────────────────────────────

describe("@modelcontextprotocol/sdk 1.x (2025 era) with URL elicitation", () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer()));
  after(() => server.close());

  test("elicit_url: the host is asked to open the page, visits it and accepts → the tool finishes, and the completion notification names that elicitation", async () => {
    const asked: ElicitRequest["params"][] = [];
    const client = await sdkV1Client(server.url, URL_ELICITATION, async (request) => {
      asked.push(request.params);
      await visit(urlOf(request.params));
      return { action: "accept" };
    });
    try {
      const result = await client.client.callTool({ name: "elicit_url", arguments: {} });
      assert.equal(textOf(result), DONE("elicit_url"));
      assert.equal(asked.length, 1);
      assert.equal(asked[0].mode, "url");
      const elicitationId = "elicitationId" in asked[0] ? asked[0].elicitationId : undefined;
      assert.ok(elicitationId, "a 2025 URL elicitation carries an elicitationId");
      assert.ok(urlOf(asked[0]).startsWith(`${server.url}/elicitation-callback?id=`));
      assert.deepEqual(client.completed, [elicitationId]);
    } finally {
      await client.client.close();
    }
  });

  test("elicit_url: the user declines → the tool says so, and nothing is done", async () => {
    const client = await sdkV1Client(server.url, URL_ELICITATION, () => Promise.resolve({ action: "decline" }));
    try {
      assert.equal(textOf(await client.client.callTool({ name: "elicit_url", arguments: {} })), DECLINED);
      assert.deepEqual(client.completed, []);
    } finally {
      await client.client.close();
    }
  });

  test("elicit_url: a client without URL elicitation (none at all: -32601; form only: -32602) → a clear result, not a hang", async () => {
    const withoutElicitation = await sdkV1Client(server.url, {});
    const formOnly = await sdkV1Client(server.url, { elicitation: {} }, () => Promise.resolve({ action: "accept" }));
    try {
      for (const client of [withoutElicitation, formOnly]) {
        assert.equal(textOf(await client.client.callTool({ name: "elicit_url", arguments: {} })), NO_URL_ELICITATION);
      }
    } finally {
      await withoutElicitation.client.close();
      await formOnly.client.close();
    }
  });

  test("elicit_by_error: UrlElicitationRequiredError names the page; after a visit the retry succeeds, once", async () => {
    const client = await sdkV1Client(server.url, URL_ELICITATION);
    try {
      const refusal = await callExpectingUrlElicitation(client.client);
      assert.equal(refusal.code, -32042);
      assert.equal(refusal.elicitations.length, 1);
      const [elicitation] = refusal.elicitations;
      assert.equal(elicitation.mode, "url");
      assert.ok(elicitation.url.startsWith(`${server.url}/elicitation-callback?id=`));
      assert.equal(new URL(elicitation.url).searchParams.get("id"), elicitation.elicitationId);

      await visit(elicitation.url);
      const retry = await client.client.callTool({ name: "elicit_by_error", arguments: {} });
      assert.equal(textOf(retry), DONE("elicit_by_error"));

      const again = await callExpectingUrlElicitation(client.client);
      assert.equal(again.code, -32042, "a visit finishes one call, not every later one");
    } finally {
      await client.client.close();
    }
  });
});

// ─── 2026-07-28, with @modelcontextprotocol/client 2.x ───────────────────────────────────────────

describe(`@modelcontextprotocol/client 2.x pinned to ${MODERN} with URL elicitation`, () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer()));
  after(() => server.close());

  test("elicit_url and elicit_by_error: input_required reaches the elicitation/create handler, which visits and accepts → both finish", async () => {
    const asked: unknown[] = [];
    const client = await sdkV2Client(server.url, async (params) => {
      asked.push(params);
      await visit(urlOf(params));
      return { action: "accept" };
    });
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), MODERN);
      for (const name of ["elicit_url", "elicit_by_error"]) {
        asked.length = 0;
        assert.equal(textOf(await client.callTool({ name, arguments: {} })), DONE(name));
        assert.equal(asked.length, 1, `${name}: the user is asked once`);
        assert.ok(urlOf(asked[0]).startsWith(`${server.url}/elicitation-callback?id=`));
      }
    } finally {
      await client.close();
    }
  });

  test("the handler declines → both tools say so", async () => {
    const client = await sdkV2Client(server.url, () => Promise.resolve({ action: "decline" }));
    try {
      for (const name of ["elicit_url", "elicit_by_error"]) {
        assert.equal(textOf(await client.callTool({ name, arguments: {} })), DECLINED);
      }
    } finally {
      await client.close();
    }
  });
});

// ─── Over HTTP: the 2025 era's edges ─────────────────────────────────────────────────────────────

describe("elicit_url in the 2025 era, over HTTP", () => {
  let server: RunningServer;
  let impatient: RunningServer; // waits one second for an answer, then for the visit
  before(async () => {
    server = await startTestServer();
    impatient = await startTestServer(1);
  });
  after(async () => {
    await server.close();
    await impatient.close();
  });

  test("the call is answered 200 text/event-stream: first an elicitation/create request (no id: lines); a decline POSTed back → 202, then the tool's result ends the stream", async () => {
    const call = await openElicitUrl(server.url, 7);
    assert.equal(call.status, 200);
    assert.match(call.contentType, /^text\/event-stream/);
    const ask = await call.events.next();
    assert.equal(ask?.jsonrpc, "2.0");
    assert.equal(ask?.method, "elicitation/create");
    assert.match(String(ask?.id), /^elicit-/);
    assert.equal(ask?.params.mode, "url");
    assert.equal(typeof ask?.params.message, "string");
    assert.ok(String(ask?.params.url).startsWith(`${server.url}/elicitation-callback?id=`));
    assert.equal(new URL(ask?.params.url).searchParams.get("id"), ask?.params.elicitationId);

    const answer = await rpc(server.url, { jsonrpc: "2.0", id: ask?.id, result: { action: "decline" } });
    assert.equal(answer.status, 202);
    assert.equal(answer.text, "");

    const result = await call.events.next();
    assert.equal(result?.id, 7);
    assert.equal(result?.result.content[0].text, DECLINED);
    assert.equal(await call.events.next(), undefined, "the stream ends with the result");
    assert.doesNotMatch(call.events.raw(), /^id:/m, "no event ids: the client must not treat the stream as resumable");
  });

  test("an error answer -32601 (no handler) → 'Your client cannot open pages…'", async () => {
    const call = await openElicitUrl(server.url, 8);
    const ask = await call.events.next();
    const error = { code: -32601, message: "Method not found" };
    assert.equal((await rpc(server.url, { jsonrpc: "2.0", id: ask?.id, error })).status, 202);
    assert.equal((await call.events.next())?.result.content[0].text, NO_URL_ELICITATION);
  });

  test("no answer within elicitationWaitSeconds → 'No answer came in time…'", async () => {
    const call = await openElicitUrl(impatient.url, 9);
    assert.equal((await call.events.next())?.method, "elicitation/create");
    const result = await call.events.next();
    assert.equal(result?.id, 9);
    assert.match(result?.result.content[0].text, /^No answer came in time/);
  });

  test("accepted but the page is never visited → 'The page was not visited in time.', and no completion notification", async () => {
    const call = await openElicitUrl(impatient.url, 10);
    const ask = await call.events.next();
    assert.equal((await rpc(impatient.url, { jsonrpc: "2.0", id: ask?.id, result: { action: "accept" } })).status, 202);
    const result = await call.events.next();
    assert.equal(result?.id, 10, "the next event is the result, not notifications/elicitation/complete");
    assert.equal(result?.result.content[0].text, "The page was not visited in time.");
  });

  test("a JSON-RPC response that no call is waiting for → 202 with no body (result or error alike)", async () => {
    const answers = [
      { jsonrpc: "2.0", id: "elicit-nobody-asked", result: { action: "accept" } },
      { jsonrpc: "2.0", id: 12345, error: { code: -32601, message: "Method not found" } },
    ];
    for (const message of answers) {
      const answer = await rpc(server.url, message);
      assert.equal(answer.status, 202, answer.text);
      assert.equal(answer.text, "");
    }
  });
});

describe("elicit_by_error in the 2025 era and the callback page, over HTTP", () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer()));
  after(() => server.close());

  test("before a visit → JSON-RPC error -32042 with one URL elicitation for the callback page", async () => {
    const answer = await callByError(server.url);
    assert.equal(answer.status, 200);
    assert.equal(answer.json.error.code, -32042);
    assert.equal(answer.json.result, undefined);
    const { elicitations } = answer.json.error.data;
    assert.equal(elicitations.length, 1);
    assert.deepEqual(Object.keys(elicitations[0]).sort(), ["elicitationId", "message", "mode", "url"]);
    assert.equal(elicitations[0].mode, "url");
    assert.equal(elicitations[0].url, `${server.url}/elicitation-callback?id=${elicitations[0].elicitationId}`);
  });

  test("a valid id → 200 HTML page; the retry succeeds once, the next call asks again (-32042)", async () => {
    const page = await visit(await pageUrl(server.url));
    assert.match(page.text, /Done/);
    const retry = await callByError(server.url);
    assert.equal(retry.status, 200);
    assert.equal(retry.json.result?.content[0].text, DONE("elicit_by_error"));
    assert.equal((await callByError(server.url)).json.error?.code, -32042);
  });

  test("forged ids (garbage, another key, another kind of token, none) → 400 HTML page, nothing recorded", async () => {
    const base = server.url;
    const forged = [
      "not-a-jwt",
      await signElicitation(base, { secret: randomBytes(32).toString("hex") }), // someone else's key
      await signElicitation(base, { typ: "at+jwt" }), // right key, wrong kind of token
      await signElicitation("http://127.0.0.1:1", {}), // right key, another issuer
    ];
    for (const id of forged) await assertRefusedPage(`${base}/elicitation-callback?id=${encodeURIComponent(id)}`);
    await assertRefusedPage(`${base}/elicitation-callback`);
    assert.equal((await callByError(base)).json.error?.code, -32042, "no visit was recorded");
  });

  test("an expired id (signed with the server's key, exp in the past) → 400 HTML page, nothing recorded", async () => {
    const expired = await signElicitation(server.url, { expiredSecondsAgo: 60 });
    await assertRefusedPage(`${server.url}/elicitation-callback?id=${expired}`);
    assert.equal((await callByError(server.url)).json.error?.code, -32042, "no visit was recorded");
  });

  test("a visit counts for the caller it was issued to: a signed-in caller is not finished by an anonymous visit", async () => {
    const { access_token: token } = await signIn(server.url);
    await visit(await pageUrl(server.url)); // anonymous
    const signedIn = await callByError(server.url, token);
    assert.equal(signedIn.json.error?.code, -32042, JSON.stringify(signedIn.json));
    await visit(signedIn.json.error.data.elicitations[0].url); // the signed-in caller's own page
    assert.equal((await callByError(server.url, token)).json.result?.content[0].text, DONE("elicit_by_error"));
    assert.equal((await callByError(server.url)).json.result?.content[0].text, DONE("elicit_by_error"));
  });
});

// ─── Over HTTP: 2026-07-28's edges ───────────────────────────────────────────────────────────────

describe(`URL elicitation in ${MODERN}, over HTTP`, () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer()));
  after(() => server.close());

  test("a client without elicitation.url (no elicitation, or form only) → HTTP 400, -32021 with requiredCapabilities", async () => {
    for (const name of ["elicit_url", "elicit_by_error"]) {
      for (const capabilities of [{}, { elicitation: {} }, { elicitation: { form: {} } }]) {
        const answer = await modernCall(server.url, name, {}, { capabilities });
        assert.equal(answer.status, 400, `${name} ${JSON.stringify(capabilities)}`);
        assert.equal(answer.json.error.code, -32021);
        assert.deepEqual(answer.json.error.data.requiredCapabilities, { elicitation: { url: {} } });
      }
    }
  });

  test("the first call → input_required: one URL elicitation (no elicitationId, no -32042) and a requestState", async () => {
    for (const name of ["elicit_url", "elicit_by_error"]) {
      const answer = await modernCall(server.url, name);
      assert.equal(answer.status, 200);
      assert.equal(answer.json.error, undefined);
      const { resultType, inputRequests, requestState } = answer.json.result;
      assert.equal(resultType, "input_required");
      assert.equal(typeof requestState, "string");
      assert.deepEqual(Object.keys(inputRequests), ["visit"]);
      assert.equal(inputRequests.visit.method, "elicitation/create");
      assert.deepEqual(Object.keys(inputRequests.visit.params).sort(), ["message", "mode", "url"]);
      assert.equal(inputRequests.visit.params.mode, "url");
      assert.ok(inputRequests.visit.params.url.startsWith(`${server.url}/elicitation-callback?id=`));
    }
  });

  test("retry with decline or cancel → a text result, nothing done", async () => {
    for (const action of ["decline", "cancel"]) {
      const first = (await modernCall(server.url, "elicit_url")).json.result;
      const retry = await modernCall(server.url, "elicit_url", retryParams(first, action));
      assert.equal(retry.status, 200);
      assert.equal(retry.json.result.resultType, "complete");
      assert.equal(retry.json.result.content[0].text, DECLINED);
    }
  });

  test("retry with accept after the visit → complete; the same requestState again → -32602 already used", async () => {
    const first = (await modernCall(server.url, "elicit_by_error")).json.result;
    await visit(first.inputRequests.visit.params.url);
    const retry = await modernCall(server.url, "elicit_by_error", retryParams(first, "accept"));
    assert.equal(retry.status, 200);
    assert.equal(retry.json.result.resultType, "complete");
    assert.equal(retry.json.result.content[0].text, DONE("elicit_by_error"));

    const replay = await modernCall(server.url, "elicit_by_error", retryParams(first, "accept"));
    assert.equal(replay.json.error?.code, -32602, JSON.stringify(replay.json));
    assert.match(replay.json.error.message, /already used/);
  });

  test("retry with accept but no visit → a new input_required, with a new requestState", async () => {
    const first = (await modernCall(server.url, "elicit_url")).json.result;
    const retry = await modernCall(server.url, "elicit_url", retryParams(first, "accept"));
    assert.equal(retry.status, 200);
    assert.equal(retry.json.result.resultType, "input_required");
    assert.notEqual(retry.json.result.requestState, first.requestState);
    assert.equal(retry.json.result.inputRequests.visit.params.mode, "url");
  });

  test("a tampered, expired, foreign or other tool's requestState → -32602, and the page visit is not spent", async () => {
    const first = (await modernCall(server.url, "elicit_url")).json.result;
    const state: string = first.requestState;
    const [header, payload, signature] = state.split(".");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    const widened = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 86400 })).toString("base64url");
    const bad = [
      `${header}.${payload}.${signature.startsWith("A") ? "B" : "A"}${signature.slice(1)}`, // signature changed
      `${header}.${widened}.${signature}`, // payload changed, signature kept
      await signElicitation(server.url, { expiredSecondsAgo: 60, tool: "elicit_url" }),
      await signElicitation(server.url, { secret: randomBytes(32).toString("hex"), tool: "elicit_url" }),
      (await modernCall(server.url, "elicit_by_error")).json.result.requestState, // elicit_by_error's, for elicit_url
      "not-a-jwt",
    ];
    await visit(first.inputRequests.visit.params.url);
    for (const requestState of bad) {
      const answer = await modernCall(server.url, "elicit_url", { ...retryParams(first, "accept"), requestState });
      assert.equal(answer.json.error?.code, -32602, `${requestState}: ${JSON.stringify(answer.json)}`);
      assert.match(answer.json.error.message, /requestState/);
    }
    const genuine = await modernCall(server.url, "elicit_url", retryParams(first, "accept"));
    assert.equal(genuine.json.result?.content[0].text, DONE("elicit_url"), "the visit was still there to take");
  });

  test("a requestState issued to an anonymous caller, presented with an access token → -32602", async () => {
    const { access_token: token } = await signIn(server.url);
    const anonymous = (await modernCall(server.url, "elicit_by_error")).json.result;
    const answer = await modernCall(server.url, "elicit_by_error", retryParams(anonymous, "accept"), { token });
    assert.equal(answer.json.error?.code, -32602, JSON.stringify(answer.json));
    assert.match(answer.json.error.message, /requestState/);
  });
});

// ─── Two instances sharing one Redis ─────────────────────────────────────────────────────────────

withRedis({ name: "URL elicitation across two instances" }, () => {
  describe("URL elicitation across two instances sharing one Redis", () => {
    let redis: RedisProcess;
    let cluster: Awaited<ReturnType<typeof startCluster>>;
    let A: string;
    let B: string;

    before(async () => {
      redis = new RedisProcess();
      await redis.start();
      cluster = await startCluster({
        redisUrl: redis.url,
        jwtSecret: JWT_SECRET,
        port: 0,
        log: () => {},
      });
      [A, B] = cluster.instances.map((instance) => instance.url);
    });
    after(async () => {
      await cluster?.close();
      await redis?.stop();
    });

    /** The same page (path and id), at one instance: the id is signed for the shared public URL. */
    const at = (instance: string, url: string) => new URL(`${new URL(url).pathname}${new URL(url).search}`, instance);

    test("elicit_by_error: -32042 from A, the page visited at A, the retry at B succeeds, once", async () => {
      const first = await callByError(A);
      assert.equal(first.json.error?.code, -32042);
      const { url } = first.json.error.data.elicitations[0];
      assert.ok(url.startsWith(`${cluster.publicUrl}/elicitation-callback?id=`), "the page is on the public URL");
      await visit(at(A, url));
      assert.equal((await callByError(B)).json.result?.content[0].text, DONE("elicit_by_error"));
      assert.equal((await callByError(B)).json.error?.code, -32042, "taken once, at B …");
      assert.equal((await callByError(A)).json.error?.code, -32042, "… and so gone at A too");
    });

    test(`${MODERN}: input_required from A, the page visited at B, the retry at A succeeds; the state again at B → -32602`, async () => {
      const first = (await modernCall(A, "elicit_url")).json.result;
      assert.equal(first.resultType, "input_required");
      await visit(at(B, first.inputRequests.visit.params.url));
      const retry = await modernCall(A, "elicit_url", retryParams(first, "accept"));
      assert.equal(retry.json.result?.content[0].text, DONE("elicit_url"), JSON.stringify(retry.json));
      const replay = await modernCall(B, "elicit_url", retryParams(first, "accept"));
      assert.equal(replay.json.error?.code, -32602);
      assert.match(replay.json.error.message, /already used/);
    });
  });
});

// ─── Clients ─────────────────────────────────────────────────────────────────────────────────────

/** An SDK 1.x client declaring `capabilities`, answering elicitation/create with `onElicit` when given. */
async function sdkV1Client(
  base: string,
  capabilities: ClientCapabilities,
  onElicit?: (request: ElicitRequest) => Promise<ElicitResult>,
) {
  const client = new ClientV1({ name: "elicitation-sdk-v1", version: "1.0.0" }, { capabilities });
  if (onElicit) client.setRequestHandler(ElicitRequestSchema, onElicit);
  const completed: string[] = [];
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, (notification) => {
    completed.push(notification.params.elicitationId);
  });
  await client.connect(new TransportV1(new URL(`${base}/mcp`)));
  return { client, completed };
}

/** Calls elicit_by_error and returns the UrlElicitationRequiredError it must throw. */
async function callExpectingUrlElicitation(client: ClientV1): Promise<UrlElicitationRequiredError> {
  try {
    const result = await client.callTool({ name: "elicit_by_error", arguments: {} });
    assert.fail(`expected -32042, got a result: ${JSON.stringify(result)}`);
  } catch (error) {
    assert.ok(error instanceof UrlElicitationRequiredError, `expected UrlElicitationRequiredError, got ${error}`);
    return error;
  }
}

/** A 2.x client pinned to 2026-07-28, declaring URL elicitation, answering elicitation/create with `onElicit`. */
async function sdkV2Client(base: string, onElicit: (params: unknown) => Promise<{ action: "accept" | "decline" }>) {
  const client = new ClientV2(
    { name: "elicitation-sdk-v2", version: "2.0.0" },
    { capabilities: URL_ELICITATION, versionNegotiation: { mode: { pin: MODERN } } },
  );
  client.setRequestHandler("elicitation/create", (request) => onElicit(request.params));
  await client.connect(new TransportV2(new URL(`${base}/mcp`)));
  return client;
}

function textOf(result: unknown): string {
  const { content, isError } = result as { content?: { type: string; text?: string }[]; isError?: boolean };
  assert.ok(Array.isArray(content), "a tool result has content");
  assert.notEqual(isError, true);
  return content.filter((block) => block.type === "text").map((block) => block.text).join("\n");
}

/** The `url` of URL-mode elicitation params. */
function urlOf(params: unknown): string {
  const url = (params as { url?: unknown }).url;
  assert.equal(typeof url, "string", `URL-mode elicitation params carry a url: ${JSON.stringify(params)}`);
  return String(url);
}

// ─── Over HTTP, by hand ──────────────────────────────────────────────────────────────────────────

/** The user opens the page, as a browser would: 200 and an HTML page saying it is done. */
async function visit(url: string | URL): Promise<Answer> {
  const page = await request(url);
  assert.equal(page.status, 200, page.text);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  return page;
}

async function assertRefusedPage(url: string) {
  const page = await request(url);
  assert.equal(page.status, 400, `${url}: ${page.text}`);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(page.text, /invalid or expired/);
}

/** 2025 era tools/call elicit_by_error, anonymous or with a token. */
function callByError(base: string, token?: string) {
  const message = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "elicit_by_error", arguments: {} } };
  return rpc(base, message, { token });
}

/** The callback page of a fresh elicit_by_error (2025 era). */
async function pageUrl(base: string): Promise<string> {
  const answer = await callByError(base);
  assert.equal(answer.json.error?.code, -32042, JSON.stringify(answer.json));
  return answer.json.error.data.elicitations[0].url;
}

/** A 2026-07-28 tools/call: _meta with the version and the client's capabilities, and the routing headers. */
function modernCall(
  base: string,
  name: string,
  extra: Record<string, unknown> = {},
  options: { capabilities?: Record<string, unknown>; token?: string } = {},
) {
  const capabilities = options.capabilities ?? URL_ELICITATION;
  const _meta = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": capabilities,
  };
  const message = { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name, arguments: {}, ...extra, _meta } };
  const headers = { "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": name };
  return rpc(base, message, { headers, token: options.token });
}

/** The retry's params after an input_required result: its requestState echoed, the user's answer under its key. */
function retryParams(inputRequired: { requestState: string }, action: string) {
  return { requestState: inputRequired.requestState, inputResponses: { visit: { action } } };
}

/** An elicitation id signed by hand: to forge one, or to have one that expired. */
async function signElicitation(
  issuer: string,
  options: { secret?: string; typ?: string; expiredSecondsAgo?: number; tool?: string },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const ago = options.expiredSecondsAgo;
  const claims = {
    jti: randomBytes(16).toString("base64url"),
    tool: options.tool ?? "elicit_by_error",
    sub: "anonymous",
  };
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: options.typ ?? "elicitation+jwt" })
    .setIssuer(issuer)
    .setIssuedAt(ago === undefined ? now : now - ago - 600)
    .setExpirationTime(ago === undefined ? now + 600 : now - ago)
    .sign(new TextEncoder().encode(options.secret ?? JWT_SECRET));
}

/** A 2025 tools/call elicit_url whose answer is read event by event (it stays open until the tool ends). */
async function openElicitUrl(base: string, id: number) {
  const response = await fetch(`${base}/mcp`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "elicit_url", arguments: {} } }),
  });
  assert.ok(response.body, "the answer has a body");
  return {
    status: response.status,
    contentType: response.headers.get("content-type") ?? "",
    events: eventsOf(response.body),
  };
}

/** The events of an SSE body in order, each one's `data:` parsed as JSON; undefined once the stream ends. */
function eventsOf(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let raw = "";
  return {
    raw: () => raw,
    // deno-lint-ignore no-explicit-any -- tests read JSON fields freely; a wrong guess fails the assertion that reads it
    async next(): Promise<any> {
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5));
          if (data.length > 0) return JSON.parse(data.join("\n"));
          continue;
        }
        const { done, value } = await reader.read();
        if (done) return undefined;
        const chunk = decoder.decode(value, { stream: true });
        buffer += chunk;
        raw += chunk;
      }
    },
  };
}
