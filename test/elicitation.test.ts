/**
 * URL elicitation: `elicit_url` and `elicit_by_error`, in both protocol eras.
 * - The official clients: `@modelcontextprotocol/sdk` 1.x (2025 handshake era: the elicitation/create
 *   request during the call, and -32042 as UrlElicitationRequiredError) and `@modelcontextprotocol/client`
 *   2.x pinned to 2026-07-28 (input_required, fulfilled through its elicitation/create handler).
 * - Over HTTP, the edges: the event stream's shape, forged and expired callback ids, a requestState that is
 *   tampered with, spent or for another tool, a client answer nobody waits for.
 * - One visit of one link completes one call of the tool it was shown for; a restart on the memory store
 *   forgets nothing it vouched for (state and links from before are refused); open 2025 streams are bounded.
 * - Two instances sharing one Redis: the page visited at one instance, the retry at the other.
 * The "user" visits a page by fetching it, as a browser would. Every server here is fresh, so the caller's
 * visits never leak from one suite into another.
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
import {
  type Answer,
  authorizeUrl,
  consentPage,
  decide,
  postJson,
  REDIRECT_URI,
  request,
  rpc,
  signIn,
} from "./helpers.ts";
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

  test("elicit_url: the host visits and accepts → done, and the completion notification names it", async () => {
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

  test("elicit_url: a client without URL elicitation (-32601, or form only -32602) → a clear result", async () => {
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

  test("elicit_by_error: UrlElicitationRequiredError names the page; after a visit, one retry succeeds", async () => {
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

  test("Both tools: input_required reaches the elicitation/create handler, which visits, accepts → done", async () => {
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

  test("200 text/event-stream: elicitation/create (no id: lines); a decline → 202; the result ends it", async () => {
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

  test("accepted, the page never visited → 'The page was not visited in time.', no notification", async () => {
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

  test("a visit counts for its caller: a signed-in caller is not finished by an anonymous visit", async () => {
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

  test("a client without elicitation.url → HTTP 400, -32021 with requiredCapabilities", async () => {
    for (const name of ["elicit_url", "elicit_by_error"]) {
      for (const capabilities of [{}, { elicitation: {} }, { elicitation: { form: {} } }]) {
        const answer = await modernCall(server.url, name, {}, { capabilities });
        assert.equal(answer.status, 400, `${name} ${JSON.stringify(capabilities)}`);
        assert.equal(answer.json.error.code, -32021);
        assert.deepEqual(answer.json.error.data.requiredCapabilities, { elicitation: { url: {} } });
      }
    }
  });

  test("the first call → input_required: one URL elicitation (no elicitationId) and a requestState", async () => {
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

  test("a tampered, expired, foreign or other tool's requestState → -32602; the visit is not spent", async () => {
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

// ─── One visit, one call ─────────────────────────────────────────────────────────────────────────
// The "visited" flag was keyed by caller only: visiting the same link again completed another call, and
// elicit_url's link completed elicit_by_error.

describe("One visit of one link completes one call of the tool the link was shown for", () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer()));
  after(() => server.close());

  test("One link visited twice → the second is a 400 'already used' page; one call completes, not two", async () => {
    const url = await pageUrl(server.url);
    await visit(url);
    const again = await request(url);
    assert.equal(again.status, 400, `a second visit records nothing: ${again.status} ${again.text.slice(0, 200)}`);
    assert.match(again.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(again.text, /already used/);
    assert.equal((await callByError(server.url)).json.result?.content[0].text, DONE("elicit_by_error"));
    const next = await callByError(server.url);
    assert.equal(next.json.error?.code, -32042, `two visits of one link, one call: ${JSON.stringify(next.json)}`);
  });

  test("An elicit_url link visited → elicit_by_error still asks (-32042); elicit_url's retry completes", async () => {
    const first = (await modernCall(server.url, "elicit_url")).json.result;
    await visit(first.inputRequests.visit.params.url);
    const other = await callByError(server.url);
    assert.equal(
      other.json.error?.code,
      -32042,
      `elicit_url's visit is not elicit_by_error's: ${JSON.stringify(other.json)}`,
    );
    const retry = await modernCall(server.url, "elicit_url", retryParams(first, "accept"));
    assert.equal(retry.json.result?.content[0].text, DONE("elicit_url"), JSON.stringify(retry.json));
  });
});

// ─── A restart on the memory store ───────────────────────────────────────────────────────────────
// A spent requestState and a consent token still worked after a restart on the memory store, which had
// forgotten what was spent.

describe("After a restart on the memory store, its consent tokens and elicitation state are refused", () => {
  const PUBLIC = "https://lazy-auth.example"; // the same base (issuer) before and after the restart
  const start = () =>
    startServer({ port: 0, host: "127.0.0.1", log: () => {}, jwtSecret: JWT_SECRET, publicUrl: PUBLIC });
  /** The same path and query, at the instance listening now. */
  const at = (server: RunningServer, url: string | URL) =>
    new URL(`${new URL(url).pathname}${new URL(url).search}`, server.url);

  test("Consent → 400 invalid_request; a spent requestState → -32602; an old link → 400; new ones work", async () => {
    let server = await start();
    let restarted: RunningServer | undefined;
    try {
      const registered = await postJson(`${server.url}/register`, { redirect_uris: [REDIRECT_URI], client_name: "R" });
      assert.equal(registered.status, 201, registered.text);
      const clientId: string = registered.json.client_id;
      const consentUrl = authorizeUrl(PUBLIC, { clientId });
      const earlier = await consentPage(at(server, consentUrl));
      const spent = (await modernCall(server.url, "elicit_by_error")).json.result;
      await visit(at(server, spent.inputRequests.visit.params.url));
      const done = await modernCall(server.url, "elicit_by_error", retryParams(spent, "accept"));
      assert.equal(done.json.result?.content[0].text, DONE("elicit_by_error"), JSON.stringify(done.json));
      const link = (await modernCall(server.url, "elicit_url")).json.result.inputRequests.visit.params.url;

      await server.close();
      restarted = await start();
      server = restarted;
      const approve = await decide({ ...earlier.form, action: at(server, earlier.form.action) }, "approve");
      assert.equal(approve.status, 400, `consent from before the restart: ${approve.status} ${approve.text}`);
      assert.equal(approve.json?.error, "invalid_request");
      assert.equal(approve.headers.get("location"), null);
      const replay = await modernCall(server.url, "elicit_by_error", retryParams(spent, "accept"));
      assert.equal(replay.json.error?.code, -32602, `a spent requestState: ${JSON.stringify(replay.json)}`);
      const page = await request(at(server, link));
      assert.equal(page.status, 400, `a link from before the restart: ${page.status} ${page.text.slice(0, 200)}`);

      const fresh = await consentPage(at(server, consentUrl));
      const approved = await decide({ ...fresh.form, action: at(server, fresh.form.action) }, "approve");
      assert.equal(approved.status, 303, `consent from this process: ${approved.text}`);
    } finally {
      await server.close();
    }
  });
});

// ─── Open 2025 streams are bounded ───────────────────────────────────────────────────────────────
// elicit_url let anonymous callers hold a connection 60 s each, with no cap.

describe("2025-era elicit_url streams are bounded: at most 32 open at once", () => {
  let server: RunningServer;
  before(async () => (server = await startTestServer(20)));
  after(() => server.close());

  test("32 streams open: the 33rd call → HTTP 503, -32000 'Too many elicitations…'; after them, 200", async () => {
    const open = await Promise.all(Array.from({ length: 32 }, (_, i) => openElicitUrl(server.url, 100 + i)));
    assert.deepEqual(open.map((call) => call.status), open.map(() => 200));
    const asks = await Promise.all(open.map((call) => call.events.next()));
    const refused = await callElicitUrl(server.url, 999);
    assert.equal(refused.status, 503, `the 33rd: ${refused.status} ${refused.text.slice(0, 200)}`);
    assert.equal(refused.json?.id, 999);
    assert.equal(refused.json?.error?.code, -32000);
    assert.equal(refused.json?.error?.message, "Too many elicitations are waiting; try again shortly");

    for (const ask of asks) {
      const answer = await rpc(server.url, { jsonrpc: "2.0", id: ask?.id, result: { action: "decline" } });
      assert.equal(answer.status, 202);
    }
    for (const call of open) assert.equal((await call.events.next())?.result.content[0].text, DECLINED);
    const again = await openElicitUrl(server.url, 1000);
    assert.equal(again.status, 200);
    const ask = await again.events.next();
    assert.equal(ask?.method, "elicitation/create");
    await rpc(server.url, { jsonrpc: "2.0", id: ask?.id, result: { action: "decline" } });
    assert.equal((await again.events.next())?.result.content[0].text, DECLINED);
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

    test(`${MODERN}: input_required from A, visited at B, retried at A → done; again at B → -32602`, async () => {
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

/** A 2025 tools/call elicit_url read whole when it is JSON (a refusal); a stream is cancelled unread. */
async function callElicitUrl(base: string, id: number) {
  const response = await fetch(`${base}/mcp`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "elicit_url", arguments: {} } }),
  });
  if (/^text\/event-stream/.test(response.headers.get("content-type") ?? "")) {
    await response.body?.cancel();
    return { status: response.status, text: "(an event stream)", json: undefined };
  }
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, text, json };
}

/** The events of an SSE body in order, each one's `data:` parsed as JSON; undefined once the stream ends. */
function eventsOf(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let raw = "";
  return {
    raw: () => raw,
    // deno-lint-ignore no-explicit-any -- tests read JSON fields freely; a wrong guess fails the assertion reading it
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
