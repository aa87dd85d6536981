// What a restart, a shutdown and a client that hangs up do. Black-box: the shutdown tests run
// server.ts as its own process (`node --import tsx server.ts`) and send it real signals; the restart tests
// start a server, stop it, and start another on the same port with the same JWT_SECRET, as a restart does
// (two startServer calls are two memories, exactly as two processes are). Raw sockets where the test must
// see what happens on one connection: which answers arrive, whether they say Connection: close, and when
// the server closes it. The Redis half needs redis-server on PATH (skipped without it, failed under CI).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { createRedisStore } from "../examples/redis-store.ts";
import { type LazyAuthEvent as Event, type RunningServer, type ServerOptions, startServer } from "../server.ts";
import {
  type Answer,
  type Authorization,
  authorizeCode,
  callTool,
  postForm,
  postJson,
  REDIRECT_URI,
  signIn,
  type Tokens,
} from "./helpers.ts";
import { freePort, RedisProcess, withRedis } from "./redis.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SECRET = randomBytes(32).toString("hex");
/** How long past the grace period a process may take to be gone: generous, the machine may be busy. */
const EXIT_MARGIN_MS = 7_000;
/**
 * Short header, request and drain timeouts for servers started here, so no test waits out the 10 s and 8 s
 * defaults; each is still far longer than a healthy request on a busy machine takes.
 */
const SHORT_TIMEOUTS = { headersTimeoutMs: 1_500, requestTimeoutMs: 1_500, shutdownGraceMs: 1_000 };

// ─── A restart with the in-memory store ──────────────────────────────────────────────────────────
// The memory forgets on restart, so it cannot know whether an older code or refresh token was spent, or
// a session revoked: everything it vouched for is refused, and everyone signs in again. Replay stays shut.

describe("A restart with the in-memory store", () => {
  let restart: Restart;
  let held: Issued;

  before(async () => {
    restart = new Restart();
    await restart.start();
    held = await issueEverything(restart.url);
    await restart.restart();
  });
  after(() => restart?.stop());

  test("A code issued before the restart, never redeemed → 400 invalid_grant", async () => {
    assertOAuthError(await redeem(restart.url, held.unredeemedCode), 400, "invalid_grant");
  });

  test("A refresh token issued before the restart, never used → 400 invalid_grant", async () => {
    assertOAuthError(await refresh(restart.url, held.live), 400, "invalid_grant");
  });

  test('An access token issued before the restart → 401 with error="invalid_token"', async () => {
    assertInvalidToken(await callTool(restart.url, "get_secret", held.live.access_token));
  });

  test("A code redeemed before the restart, replayed after it → 400 invalid_grant", async () => {
    assertOAuthError(await redeem(restart.url, held.redeemedCode), 400, "invalid_grant");
  });

  test("A refresh token spent before the restart, presented after it → 400 invalid_grant", async () => {
    assertOAuthError(await refresh(restart.url, held.rotatedAway), 400, "invalid_grant");
    assertOAuthError(await refresh(restart.url, held.rotatedTo), 400, "invalid_grant");
  });

  test("A session revoked before the restart stays dead: access 401, refresh 400 invalid_grant", async () => {
    assertInvalidToken(await callTool(restart.url, "get_secret", held.revoked.access_token));
    assertOAuthError(await refresh(restart.url, held.revoked), 400, "invalid_grant");
  });

  test("After the restart a new sign-in works: a client registered before it signs in, get_secret → 200", async () => {
    const tokens = await signIn(restart.url, { clientId: held.registeredClientId });
    assert.equal((await callTool(restart.url, "get_secret", tokens.access_token)).status, 200);
    assert.equal((await refresh(restart.url, tokens)).status, 200, "and its refresh token rotates");
  });
});

// ─── A restart with the Redis store ──────────────────────────────────────────────────────────────
// Redis remembers across a restart of the server: what was valid stays valid, what was spent or revoked
// stays spent or revoked.

withRedis({ name: "A restart with the Redis store", purpose: "to run the restart tests" }, () => {
  describe("A restart with the Redis store", () => {
    let redis: RedisProcess;
    let restart: Restart;
    const closeStores: Array<() => Promise<void>> = [];
    let held: Issued;

    before(async () => {
      redis = new RedisProcess();
      await redis.start();
      // A restarted process connects to Redis anew: each server gets a store (and a connection) of its own.
      restart = new Restart(async () => {
        const { store, close } = await createRedisStore(redis.url, { log: () => {} });
        closeStores.push(close);
        return { store };
      });
      await restart.start();
      held = await issueEverything(restart.url);
      await restart.restart();
    });
    after(async () => {
      await restart?.stop();
      for (const close of closeStores) await close();
      await redis?.stop();
    });

    test("An access token issued before the restart still works: get_secret → 200", async () => {
      assert.equal((await callTool(restart.url, "get_secret", held.live.access_token)).status, 200);
    });

    test("A refresh token issued before the restart, never used, still rotates → 200 and a working pair", async () => {
      const answer = await refresh(restart.url, held.live);
      assert.equal(answer.status, 200, answer.text);
      assert.equal((await callTool(restart.url, "get_secret", answer.json.access_token)).status, 200);
    });

    test("A code issued before the restart, never redeemed, can be redeemed after it → 200", async () => {
      const answer = await redeem(restart.url, held.unredeemedCode);
      assert.equal(answer.status, 200, answer.text);
    });

    test("A code redeemed before the restart, replayed after it → 400 invalid_grant; its session dies", async () => {
      assertOAuthError(await redeem(restart.url, held.redeemedCode), 400, "invalid_grant");
      assertInvalidToken(await callTool(restart.url, "get_secret", held.fromRedeemedCode.access_token));
    });

    test("A refresh token spent before the restart, used after → 400 invalid_grant; its session dies", async () => {
      assertOAuthError(await refresh(restart.url, held.rotatedAway), 400, "invalid_grant");
      assertOAuthError(await refresh(restart.url, held.rotatedTo), 400, "invalid_grant");
    });

    test("A session revoked before the restart stays dead: access 401, refresh 400 invalid_grant", async () => {
      assertInvalidToken(await callTool(restart.url, "get_secret", held.revoked.access_token));
      assertOAuthError(await refresh(restart.url, held.revoked), 400, "invalid_grant");
    });
  });
});

/** What a client holds when the server restarts; each item is checked to work before the restart. */
interface Issued {
  registeredClientId: string; // a DCR client_id: signed, nothing stored, so it outlives any restart
  unredeemedCode: Authorization;
  redeemedCode: Authorization;
  fromRedeemedCode: Tokens;
  live: Tokens; // a session nobody touched
  rotatedAway: Tokens; // its refresh token was used once: spent
  rotatedTo: Tokens; // what that rotation returned
  revoked: Tokens; // revoke_auth_token was called
}

async function issueEverything(base: string): Promise<Issued> {
  const registered = await postJson(`${base}/register`, { redirect_uris: [REDIRECT_URI], client_name: "restart" });
  assert.equal(registered.status, 201, registered.text);
  const redeemedCode = await authorizeCode(base);
  const redeemed = await redeem(base, redeemedCode);
  assert.equal(redeemed.status, 200, redeemed.text);
  const live = await signIn(base);
  assert.equal((await callTool(base, "get_secret", live.access_token)).status, 200);
  const rotatedAway = await signIn(base);
  const rotation = await refresh(base, rotatedAway);
  assert.equal(rotation.status, 200, rotation.text);
  const revoked = await signIn(base);
  const revocation = await callTool(base, "revoke_auth_token", revoked.access_token);
  assert.equal(revocation.status, 200, revocation.text);
  assertInvalidToken(await callTool(base, "get_secret", revoked.access_token));
  return {
    registeredClientId: registered.json.client_id,
    unredeemedCode: await authorizeCode(base),
    redeemedCode,
    fromRedeemedCode: { ...redeemed.json, clientId: redeemedCode.clientId },
    live,
    rotatedAway,
    rotatedTo: { ...rotation.json, clientId: rotatedAway.clientId },
    revoked,
  };
}

/** A server that can be stopped and started again on the same port with the same secret: a restart. */
class Restart {
  running: RunningServer | undefined;
  url = "";
  #port = 0;
  readonly #options: () => Promise<ServerOptions>;

  /** `options` is called before each start: a restarted process builds its store anew. */
  constructor(options: () => Promise<ServerOptions> = () => Promise.resolve({})) {
    this.#options = options;
  }
  async start(): Promise<void> {
    const options = { host: "127.0.0.1", jwtSecret: SECRET, log: () => {}, ...await this.#options() };
    this.running = await startServer({ ...options, port: this.#port });
    this.url = this.running.url;
    this.#port = Number(new URL(this.url).port); // the next start takes the same port: the same issuer
  }
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
  async stop(): Promise<void> {
    await this.running?.close(0);
    this.running = undefined;
    // This process is the client too: let fetch see its kept-alive connections close before it asks
    // again, or it would send the next request down a dead one ("other side closed").
    await sleep(50);
  }
}

// ─── Shutdown on SIGTERM and SIGINT ──────────────────────────────────────────────────────────────
// Stop accepting; answer what is in flight (bodies still arriving included), each answer with
// Connection: close; close idle connections at once; cut what remains when the grace period ends; exit.

describe("Shutdown on SIGTERM and SIGINT", () => {
  test("SIGTERM: requests and uploads in flight answered (Connection: close), idle closed, exit 0", async () => {
    const server = await spawnServer();
    const tokens = await signIn(server.url);
    const codes = await Promise.all([0, 1, 2].map(() => authorizeCode(server.url)));

    // An idle keep-alive connection: answered once, then quiet when the signal comes.
    const idle = await RawConnection.open(server.port);
    idle.write(getRequest(server.port, "/"));
    const first = await idle.next();
    assert.equal(first?.status, 200);
    assert.notEqual(first?.headers.connection, "close");

    // Uploads in flight: the server has read their headers (100 Continue says so) and half of each body.
    const uploads = await Promise.all(codes.map(async (code) => {
      const upload = await startUpload(server.port, "/token", redeemBody(code));
      upload.connection.write(upload.body.subarray(0, upload.body.length / 2));
      return upload;
    }));

    // Busy keep-alive clients, each calling get_secret over and over on its own connection.
    let signalled = false;
    const busy = await Promise.all(Array.from({ length: 6 }, () => BusyClient.open(server, tokens, () => signalled)));
    await Promise.all(busy.map((client) => client.answered(3))); // all of them are in their stride

    const signalledAt = performance.now();
    server.child.kill("SIGTERM");
    signalled = true;

    // The rest of each body, slowly: it is still arriving while the server drains. With the last chunk,
    // a second request pipelined on the same connection, which must never be answered.
    const uploadAnswers = uploads.map(async (upload) => {
      const rest = upload.body.subarray(upload.body.length / 2);
      for (let i = 0; i < 4; i++) {
        await sleep(150);
        upload.connection.write(rest.subarray((i * rest.length) / 4, ((i + 1) * rest.length) / 4));
      }
      upload.connection.write(getRequest(server.port, "/"));
      return { answer: await upload.connection.next(), after: await upload.connection.next() };
    });

    // The idle connection is closed at once, without a byte; from then on nobody new is served.
    assert.equal(await idle.next(), undefined, "the idle connection is closed without an answer");
    await assertNotServed(server.port);

    for (const { answer, after } of await Promise.all(uploadAnswers)) {
      assert.equal(answer?.status, 200, `an upload in flight is answered: ${answer?.body}`);
      assert.equal(typeof JSON.parse(answer.body).access_token, "string");
      assert.equal(answer.headers.connection, "close", "its answer says Connection: close");
      assert.equal(after, undefined, "the request pipelined behind it is not answered; the connection closes");
    }

    const busyRecords = await Promise.all(busy.map((client) => client.done));
    for (const record of busyRecords) {
      const unanswered = record.filter((call) => call.writtenBeforeSignal && !call.answer);
      assert.equal(unanswered.length, 0, "every call written before the signal is answered");
      for (const call of record.filter((call) => call.answer)) {
        assert.equal(call.answer?.status, 200, call.answer?.body);
        assert.match(call.answer?.body ?? "", /lazy auth works/);
      }
      // On a connection, nothing is answered after an answer that said Connection: close.
      const closing = record.findIndex((call) => call.answer?.headers.connection === "close");
      if (closing !== -1) assert.equal(record.slice(closing + 1).filter((call) => call.answer).length, 0);
    }

    const exit = await server.exited;
    const graceMs = server.graceMs();
    assertExitedByItself(exit, server);
    assert.ok(
      exit.at - signalledAt < graceMs + EXIT_MARGIN_MS,
      `gone ${Math.round(exit.at - signalledAt)} ms after the signal (grace ${graceMs} ms)`,
    );
  });

  test("SIGTERM: an answer already streaming (elicit_url) runs to its end, then its connection closes", async () => {
    const server = await spawnServer();
    // The 2025-era elicit_url answers with an event stream that asks the client something, and waits.
    const stream = await RawConnection.open(server.port);
    const call = JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "elicit_url" } });
    stream.write(postRequest(server.port, "/mcp", "application/json", call));
    const question = await stream.nextBytes((received) => /"method":"elicitation\/create"/.test(received));
    const requestId = /"id":"(elicit-[^"]+)"/.exec(question)?.[1];
    assert.ok(requestId, `the stream asks the client: ${question}`);
    // The client's reply is on its way (headers read, body not yet) when the signal comes.
    const reply = JSON.stringify({ jsonrpc: "2.0", id: requestId, result: { action: "decline" } });
    const replying = await startUpload(server.port, "/mcp", Buffer.from(reply));

    server.child.kill("SIGTERM");
    await sleep(300);
    replying.connection.write(replying.body);

    const replied = await replying.connection.next();
    assert.equal(replied?.status, 202, replied?.body);
    assert.equal(replied.headers.connection, "close");
    const streamed = await stream.next();
    assert.equal(streamed?.status, 200);
    assert.match(streamed.body, /"id":9,"result".*You declined/, "the stream ends with the tool's result");
    stream.write(getRequest(server.port, "/"));
    assert.equal(await stream.next(), undefined, "then the connection closes: nothing more is answered on it");
    assertExitedByItself(await server.exited, server);
  });

  test("SIGINT: the finished upload is answered, the one unfinished when grace ends is cut; exit 0", async () => {
    const server = await spawnServer();
    const [code, stalledCode] = await Promise.all([authorizeCode(server.url), authorizeCode(server.url)]);
    const finishing = await startUpload(server.port, "/token", redeemBody(code));
    const stalled = await startUpload(server.port, "/token", redeemBody(stalledCode));
    stalled.connection.write(stalled.body.subarray(0, 10)); // and never another byte

    const signalledAt = performance.now();
    server.child.kill("SIGINT");
    await sleep(300);
    finishing.connection.write(finishing.body);

    const answer = await finishing.connection.next();
    assert.equal(answer?.status, 200, answer?.body);
    assert.equal(answer.headers.connection, "close");
    assert.equal(stalled.connection.isClosed, false, "the stalled upload is still waited for");

    assert.equal(await stalled.connection.next(), undefined, "the stalled upload is cut without an answer");
    const exit = await server.exited;
    const graceMs = server.graceMs();
    assert.match(server.output(), /^SIGINT: /m, "the signal is said on stdout");
    assertExitedByItself(exit, server);
    assert.ok(
      exit.at - signalledAt < graceMs + EXIT_MARGIN_MS,
      `gone ${Math.round(exit.at - signalledAt)} ms after the signal (grace ${graceMs} ms)`,
    );
  });
});

describe("startServer's close(graceMs)", () => {
  test("close(graceMs) answers the upload in flight (Connection: close), cuts the stalled one, resolves", async () => {
    const running = await startServer({
      ...SHORT_TIMEOUTS,
      port: 0,
      host: "127.0.0.1",
      jwtSecret: SECRET,
      log: () => {},
    });
    const port = Number(new URL(running.url).port);
    const [code, stalledCode] = await Promise.all([authorizeCode(running.url), authorizeCode(running.url)]);
    const finishing = await startUpload(port, "/token", redeemBody(code));
    const stalled = await startUpload(port, "/token", redeemBody(stalledCode));
    stalled.connection.write(stalled.body.subarray(0, 10));

    const closed = running.close(1_500);
    finishing.connection.write(finishing.body);
    const answer = await finishing.connection.next();
    assert.equal(answer?.status, 200, answer?.body);
    assert.equal(answer.headers.connection, "close");
    assert.equal(await stalled.connection.next(), undefined, "the stalled upload is cut without an answer");
    await closed;
    await assertNotServed(port);
  });

  test("Headers finishing after close() began → 200 with Connection: close, then the connection closes", async () => {
    const running = await startServer({
      ...SHORT_TIMEOUTS,
      port: 0,
      host: "127.0.0.1",
      jwtSecret: SECRET,
      log: () => {},
    });
    const port = Number(new URL(running.url).port);
    const connection = await RawConnection.open(port);
    const headers = getRequest(port, "/");
    connection.write(headers.slice(0, -2)); // all but the blank line that ends the headers
    // One answer on another connection: by then the server has read these bytes, so this one is busy, not idle.
    const other = await RawConnection.open(port);
    other.write(getRequest(port, "/"));
    assert.equal((await other.next())?.status, 200);
    other.destroy();

    const closed = running.close(5_000);
    connection.write("\r\n");
    const answer = await connection.next();
    assert.equal(answer?.status, 200, answer?.body);
    assert.equal(answer.headers.connection, "close", "an answer given while draining closes its connection");
    assert.equal(await connection.next(), undefined, "nothing more on that connection");
    await closed;
  });
});

// ─── A client that hangs up ──────────────────────────────────────────────────────────────────────
// Its business, not an error of ours: no [error] line, no 500, nothing left open, and the server serves on.

describe("A client that hangs up mid-request", () => {
  let running: RunningServer;
  let port = 0;
  const logs: string[] = [];
  const events: Event[] = [];

  before(async () => {
    running = await startServer({
      ...SHORT_TIMEOUTS,
      port: 0,
      host: "127.0.0.1",
      jwtSecret: SECRET,
      logRequests: true, // the request trace is on: its line for a request says the server is done with it
      log: (line) => logs.push(line),
      onEvent: (event) => events.push(event),
    });
    port = Number(new URL(running.url).port);
  });
  after(() => running.close(0));

  /**
   * How many requests the server says it is done with, for POSTs to `path`: its request events, and its
   * trace lines (written in batches, so they may come a moment after the event).
   */
  const traced = (path: string) =>
    Math.min(
      events.filter((event) => event.type === "request" && event.method === "POST" && event.path === path).length,
      logs.filter((line) => line.startsWith(`[request] POST ${path} `)).length,
    );

  for (const path of ["/token", "/register", "/authorize", "/mcp"]) {
    test(`An upload to ${path} closed mid-body is not an error: no [error] line, the server serves on`, async () => {
      const before = traced(path);
      const upload = await startUpload(port, path, Buffer.alloc(2_000, "a"));
      upload.connection.write(upload.body.subarray(0, 700));
      upload.connection.destroy();
      await until(() => traced(path) > before);
      assertNothingLeft(logs, events);
      await assertStillServing(running.url);
    });
  }

  test("A chunked upload closed mid-chunk is not an error", async () => {
    const before = traced("/mcp");
    const { connection } = await startUpload(port, "/mcp", "chunked");
    connection.write('400\r\n{"jsonrpc":"2.0",');
    connection.destroy();
    await until(() => traced("/mcp") > before);
    assertNothingLeft(logs, events);
    await assertStillServing(running.url);
  });

  test("An oversized upload closed while the server reads and drops it (after the 413) is not an error", async () => {
    const before = traced("/register");
    const upload = await startUpload(port, "/register", Buffer.alloc(1_000_000, "a"));
    upload.connection.write(upload.body.subarray(0, 200_000));
    const answer = await upload.connection.next();
    assert.equal(answer?.status, 413);
    upload.connection.destroy();
    await until(() => traced("/register") > before);
    assertNothingLeft(logs, events);
    await assertStillServing(running.url);
  });

  test("A client gone before its answer is written is not an error", async () => {
    const tokens = await signIn(running.url);
    const before = traced("/mcp");
    const connection = await RawConnection.open(port);
    const call = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret" } });
    connection.write(
      `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
        `Authorization: Bearer ${tokens.access_token}\r\nContent-Length: ${Buffer.byteLength(call)}\r\n\r\n${call}`,
    );
    connection.destroy();
    await until(() => traced("/mcp") > before);
    assertNothingLeft(logs, events);
    await assertStillServing(running.url);
  });

  test("After all of them nothing is in flight: close() resolves without waiting out its grace period", async () => {
    const grace = 120_000; // anything still in flight would hold close() this long
    const held = new AbortController(); // the fallback timer must not keep this process alive once close() won
    const closed = await Promise.race([
      running.close(grace).then(() => "closed"),
      sleepUnless(grace / 4, held.signal).then(() => "held"),
    ]);
    held.abort();
    assert.equal(closed, "closed");
  });
});

function assertNothingLeft(logs: string[], events: Event[]) {
  assert.deepEqual(logs.filter((line) => /^\[error\]/.test(line)), [], "no [error] line");
  assert.deepEqual(logs.filter((line) => / → 5\d\d /.test(line)), [], "no 5xx in the request trace");
  assert.deepEqual(events.filter((event) => event.type === "server_error"), [], "no server_error event");
  assert.deepEqual(
    events.filter((event) => event.type === "request" && (event.status ?? 0) >= 500),
    [],
    "no 5xx request event",
  );
}

async function assertStillServing(base: string) {
  const tokens = await signIn(base);
  assert.equal((await callTool(base, "get_secret", tokens.access_token)).status, 200);
}

// ─── OAuth over HTTP ─────────────────────────────────────────────────────────────────────────────

function assertOAuthError(answer: Answer, status: number, error: string) {
  assert.equal(answer.status, status, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
  assert.equal(answer.json?.error, error, `expected ${status} ${error}, got ${answer.status}: ${answer.text}`);
}

function assertInvalidToken(answer: Answer) {
  assert.equal(answer.status, 401, answer.text);
  assert.match(answer.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
}

function redeemBody(code: Authorization): Buffer {
  return Buffer.from(
    new URLSearchParams({
      grant_type: "authorization_code",
      code: code.code,
      code_verifier: code.verifier,
      client_id: code.clientId,
      redirect_uri: code.redirectUri,
    }).toString(),
  );
}

const redeem = (base: string, code: Authorization) =>
  postForm(`${base}/token`, {
    grant_type: "authorization_code",
    code: code.code,
    code_verifier: code.verifier,
    client_id: code.clientId,
    redirect_uri: code.redirectUri,
  });

const refresh = (base: string, tokens: Tokens) =>
  postForm(`${base}/token`, {
    grant_type: "refresh_token",
    refresh_token: tokens.refresh_token,
    client_id: tokens.clientId,
  });

// ─── server.ts as a process ──────────────────────────────────────────────────────────────────────

interface ServerProcess {
  child: ChildProcess;
  port: number;
  url: string;
  exited: Promise<{ code: number | null; signal: string | null; at: number }>;
  output(): string;
  /** The grace period the server announced on stdout when the signal came ("… (up to 8 s) …"). */
  graceMs(): number;
}

const children: ChildProcess[] = [];
after(() => children.forEach((child) => child.exitCode === null && child.kill("SIGKILL"))); // after a failure

/**
 * `node --import tsx server.ts` on a free loopback port, request trace off; resolves once it listens.
 * SHUTDOWN_GRACE_MS asks for a 3 s grace period instead of the 8 s default, so the SIGINT test's stalled upload
 * is cut sooner, where server.ts reads that variable; the assertions use the grace the server announces.
 */
async function spawnServer(): Promise<ServerProcess> {
  const port = await freePort();
  const child = spawn("node", ["--import", "tsx", "server.ts"], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), JWT_SECRET: SECRET, LOG_REQUESTS: "0", SHUTDOWN_GRACE_MS: "3000" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, at: performance.now() }))
  );
  const listening = await Promise.race([
    until(() => output.includes("Lazy-auth MCP server")).then(() => true),
    exited.then(() => false),
  ]);
  assert.ok(listening, `server.ts did not start: ${output}`);
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    exited,
    output: () => output,
    graceMs() {
      const seconds = /\(up to (\d+(?:\.\d+)?) s\)/.exec(output)?.[1];
      assert.ok(seconds, `the server says its grace period when signalled: ${output}`);
      return Number(seconds) * 1000;
    },
  };
}

/** The process handled the signal and exited with status 0, rather than being killed by it. */
function assertExitedByItself(exit: Awaited<ServerProcess["exited"]>, server: ServerProcess) {
  // Deno's child_process reports a child that exits 0 after a signal as killed by that signal, so there the
  // status cannot be read; the answers given after the signal show it was handled, not fatal.
  if ("Deno" in globalThis) return;
  assert.deepEqual([exit.code, exit.signal], [0, null], `exits with status 0: ${server.output()}`);
}

/** A keep-alive client calling get_secret on one connection until the server closes it. */
class BusyClient {
  readonly calls: Array<{ writtenBeforeSignal: boolean; answer?: RawAnswer }> = [];
  done!: Promise<BusyClient["calls"]>;
  #answered = 0;
  #onAnswer = () => {};

  static async open(server: ServerProcess, tokens: Tokens, signalled: () => boolean): Promise<BusyClient> {
    const client = new BusyClient();
    const connection = await RawConnection.open(server.port);
    const call = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "get_secret" } });
    const request = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\n` +
      `Accept: application/json, text/event-stream\r\nAuthorization: Bearer ${tokens.access_token}\r\n` +
      `Content-Length: ${Buffer.byteLength(call)}\r\n\r\n${call}`;
    client.done = (async () => {
      // After an answer that says Connection: close it asks once more on the same connection, as a
      // careless client would: the server must not answer that.
      while (!connection.isClosed) {
        const record: BusyClient["calls"][number] = { writtenBeforeSignal: !signalled() };
        client.calls.push(record);
        connection.write(request);
        record.answer = await connection.next();
        client.#answered++;
        client.#onAnswer();
        if (!record.answer) break;
      }
      return client.calls;
    })();
    return client;
  }
  /** Resolves once `count` calls have been answered (or the connection is gone). */
  answered(count: number): Promise<void> {
    return new Promise((resolve) => {
      this.#onAnswer = () => this.#answered >= count && resolve();
      this.#onAnswer();
    });
  }
}

/**
 * POST with Expect: 100-continue, the body (of a length fixed now, or chunked) left to the caller to send;
 * resolves once the server says 100 Continue, which it does once it has read the headers.
 */
async function startUpload<Body extends Buffer | "chunked">(port: number, path: string, body: Body) {
  const connection = await RawConnection.open(port);
  const type = path === "/register" || path === "/mcp" ? "application/json" : "application/x-www-form-urlencoded";
  const framing = body === "chunked" ? "Transfer-Encoding: chunked" : `Content-Length: ${body.length}`;
  connection.write(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: ${type}\r\n` +
      `Accept: application/json, text/event-stream\r\nExpect: 100-continue\r\n${framing}\r\n\r\n`,
  );
  const interim = await connection.next();
  assert.equal(interim?.status, 100, "the server asks for the body");
  return { connection, body };
}

/**
 * A new connection is not served: refused, or — when the kernel completed it in the moment between the
 * server closing its idle connections and its listening socket — reset without an answer.
 */
async function assertNotServed(port: number) {
  const connection = await RawConnection.open(port).catch((error: Error) => error);
  if (connection instanceof Error) return assert.match(connection.message, /ECONNREFUSED/);
  connection.write(getRequest(port, "/"));
  assert.equal(await connection.next(), undefined, "a connection made as the server stopped listening is not answered");
}

const postRequest = (port: number, path: string, type: string, body: string) =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: ${type}\r\n` +
  `Accept: application/json, text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const getRequest = (port: number, path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;

// ─── One connection, byte by byte ────────────────────────────────────────────────────────────────

interface RawAnswer {
  status: number;
  headers: Record<string, string>; // lower-case names
  body: string;
}

/** A client connection on a raw socket: what the server sends on it, answer by answer, and when it closes. */
class RawConnection {
  #socket: Socket;
  #buffer = Buffer.alloc(0);
  #closed = false;
  #wake = () => {};

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on("error", () => {}); // a reset is a close, seen as such below
    socket.on("close", () => {
      this.#closed = true;
      this.#wake();
    });
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawConnection(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.#closed;
  }
  write(data: string | Buffer) {
    if (!this.#closed && this.#socket.writable) this.#socket.write(data);
  }
  destroy() {
    this.#socket.destroy();
  }

  /** Waits until what has arrived so far (not yet taken as answers) satisfies `enough`; returns it. */
  async nextBytes(enough: (received: string) => boolean): Promise<string> {
    while (!enough(this.#buffer.toString("utf8"))) {
      assert.ok(!this.#closed, `the connection closed early: ${this.#buffer.toString("utf8")}`);
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    return this.#buffer.toString("utf8");
  }

  /** The next answer (a 100 Continue counts), or undefined when the connection closes before a whole one. */
  async next(): Promise<RawAnswer | undefined> {
    for (;;) {
      const answer = this.#take();
      if (answer) return answer;
      if (this.#closed) return undefined;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** A whole answer off the front of the buffer, framed by Content-Length or chunked (a stream). */
  #take(): RawAnswer | undefined {
    const end = this.#buffer.indexOf("\r\n\r\n");
    if (end === -1) return undefined;
    const [statusLine, ...lines] = this.#buffer.subarray(0, end).toString("latin1").split("\r\n");
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1]);
    const framed = status < 200
      ? { body: Buffer.alloc(0), size: 0 }
      : /chunked/i.test(headers["transfer-encoding"] ?? "")
      ? dechunk(this.#buffer.subarray(end + 4))
      : fixedLength(this.#buffer.subarray(end + 4), Number(headers["content-length"]), statusLine);
    if (!framed) return undefined;
    this.#buffer = this.#buffer.subarray(end + 4 + framed.size);
    return { status, headers, body: framed.body.toString("utf8") };
  }
}

function fixedLength(rest: Buffer, length: number, statusLine: string) {
  assert.ok(Number.isInteger(length), `an answer without Content-Length or chunked framing: ${statusLine}`);
  return rest.length < length ? undefined : { body: rest.subarray(0, length), size: length };
}

/** A chunked body (RFC 9112 §7.1) once its last chunk is in, or undefined while more is to come. */
function dechunk(rest: Buffer): { body: Buffer; size: number } | undefined {
  const parts: Buffer[] = [];
  for (let at = 0;;) {
    const lineEnd = rest.indexOf("\r\n", at);
    if (lineEnd === -1) return undefined;
    const size = parseInt(rest.subarray(at, lineEnd).toString("latin1"), 16);
    assert.ok(Number.isInteger(size), "a chunk size in hex");
    if (rest.length < lineEnd + 2 + size + 2) return undefined;
    if (size === 0) return { body: Buffer.concat(parts), size: lineEnd + 4 }; // no trailers from this server
    parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
}

// ─── Small helpers ───────────────────────────────────────────────────────────────────────────────

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sleeps `ms`, or resolves never once `signal` aborts (its timer cleared, so it holds nothing open). */
function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  });
}

/** Waits until `condition` holds, checking every 20 ms; 30 s without it is a failure, not a hang. */
async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  for (const deadline = performance.now() + 30_000; !(await condition());) {
    assert.ok(performance.now() < deadline, `still waiting after 30 s for ${condition}`);
    await sleep(20);
  }
}
