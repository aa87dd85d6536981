/**
 * Two instances sharing one Redis (examples/multi-instance.ts): what is spent or revoked at one
 * instance is spent or revoked at the other, exactly one of many concurrent redemptions wins, and
 * when Redis stops answering the instances fail closed (503) and recover once it is back. A refresh
 * chain keeps one key per session, and lasts no longer than the refresh lifetime. The Redis store refuses
 * a Redis that may evict keys — at startup, and whenever a later check (periodic, or after a refused write)
 * finds one — and says so when it cannot check.
 *
 * Black box over HTTP. Starts its own redis-server on a free loopback port, without persistence,
 * and stops it at the end. Without redis-server on PATH these tests are skipped, unless CI is set,
 * in which case they fail.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startServer } from "../server.ts";
import { type Cluster, startCluster } from "../examples/multi-instance.ts";
import { createRedisStore } from "../examples/redis-store.ts";
import { clientDocuments, consentForm } from "./helpers.ts";
import { redisInstalled, RedisProcess, withRedis } from "./redis.ts";

const REDIRECT_URI = "http://127.0.0.1:1/cb";
/** A Client ID Metadata Document on loopback, which each instance fetches (and caches for a minute). */
const CLIENT_ID = clientDocuments.client("/multi-instance-client.json", [REDIRECT_URI], {
  cacheControl: "max-age=60",
});

withRedis({
  name: "multi-instance tests",
  skip: "redis-server not found on PATH; install it to run them (apt-get install -y redis-server)",
  purpose: "to run the multi-instance tests",
}, () => {
  describe("two instances sharing one Redis", () => {
    let redis: RedisProcess;
    let cluster: Cluster;
    let A: string;
    let B: string;
    const logs: string[] = [];

    before(async () => {
      redis = new RedisProcess();
      await redis.start();
      cluster = await startCluster({
        redisUrl: redis.url,
        jwtSecret: randomBytes(32).toString("hex"),
        port: 0,
        accessTokenTtlSeconds: 60,
        refreshTokenTtlSeconds: 300,
        log: (line) => logs.push(line),
      });
      [A, B] = cluster.instances.map((instance) => instance.url);
    });

    after(async () => {
      await cluster?.close();
      await redis?.stop();
    });

    test("both instances name the same issuer and resource", async () => {
      for (const base of [A, B]) {
        const as = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
        const rs = await (await fetch(`${base}/.well-known/oauth-protected-resource/mcp`)).json();
        assert.equal(as.issuer, cluster.publicUrl);
        assert.equal(rs.resource, `${cluster.publicUrl}/mcp`);
      }
    });

    test("a code spent at A and replayed at B is refused, and the session it minted dies at both", async () => {
      const { code, verifier } = await authorize(A);
      const first = await redeemCode(A, code, verifier);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const tokens = first.body;
      assert.equal((await callTool(A, tokens.access_token)).status, 200);
      assert.equal((await callTool(B, tokens.access_token)).status, 200); // one secret: B trusts A's tokens

      const replay = await redeemCode(B, code, verifier);
      assert.equal(replay.status, 400);
      assert.equal(replay.body.error, "invalid_grant");

      await assertSessionDead(tokens);
    });

    test("a refresh token reused at B after A rotated it is refused, and the session dies at both", async () => {
      const { code, verifier } = await authorize(A);
      const original = (await redeemCode(A, code, verifier)).body;
      const rotated = await refresh(A, original.refresh_token);
      assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
      assert.equal((await callTool(B, rotated.body.access_token)).status, 200);

      const reuse = await refresh(B, original.refresh_token);
      assert.equal(reuse.status, 400);
      assert.equal(reuse.body.error, "invalid_grant");

      await assertSessionDead(rotated.body);
      await assertSessionDead(original);
    });

    test("revoke_auth_token at A ends the session at B", async () => {
      const { code, verifier } = await authorize(B);
      const tokens = (await redeemCode(B, code, verifier)).body;
      assert.equal((await callTool(B, tokens.access_token)).status, 200);

      const revoked = await callTool(A, tokens.access_token, "revoke_auth_token");
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      assert.equal(revoked.body.result?.isError, false);

      const after = await callTool(B, tokens.access_token);
      assert.equal(after.status, 401);
      assert.match(after.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
      assert.equal((await refresh(B, tokens.refresh_token)).body.error, "invalid_grant");
    });

    test("concurrent redemptions of one code, spread over both instances: exactly one succeeds", async () => {
      for (let round = 0; round < 5; round++) {
        const { code, verifier } = await authorize(round % 2 ? A : B);
        const answers = await Promise.all(
          Array.from({ length: 16 }, (_, i) => redeemCode(i % 2 ? A : B, code, verifier)),
        );
        assert.equal(
          answers.filter((a) => a.status === 200).length,
          1,
          `round ${round}: ${answers.map((a) => a.status)}`,
        );
        for (const refused of answers.filter((a) => a.status !== 200)) {
          assert.equal(refused.status, 400);
          assert.equal(refused.body.error, "invalid_grant");
        }
      }
    });

    test("concurrent refreshes of one refresh token, spread over both instances: exactly one succeeds", async () => {
      for (let round = 0; round < 5; round++) {
        const { code, verifier } = await authorize(A);
        const tokens = (await redeemCode(A, code, verifier)).body;
        const answers = await Promise.all(
          Array.from({ length: 16 }, (_, i) => refresh(i % 2 ? A : B, tokens.refresh_token)),
        );
        assert.equal(
          answers.filter((a) => a.status === 200).length,
          1,
          `round ${round}: ${answers.map((a) => a.status)}`,
        );
        assert.ok(answers.every((a) => a.status === 200 || a.body.error === "invalid_grant"));
      }
    });

    test("a whole flow through the round-robin balancer works", async () => {
      const { code, verifier } = await authorize(cluster.publicUrl);
      const tokens = await redeemCode(cluster.publicUrl, code, verifier);
      assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
      for (let i = 0; i < 4; i++) { // alternates between the instances
        const call = await callTool(cluster.publicUrl, tokens.body.access_token);
        assert.equal(call.status, 200);
        assert.match(call.body.result.content[0].text, /secret/i);
      }
    });

    test("a long refresh chain across both instances keeps one key per session: DBSIZE does not grow", async () => {
      const admin = await redis.admin();
      try {
        const { code, verifier } = await authorize(A);
        let tokens = (await redeemCode(A, code, verifier)).body;
        const keys = await admin.dbSize();
        for (let i = 0; i < 100; i++) {
          const rotated = await refresh(i % 2 ? A : B, tokens.refresh_token);
          assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
          tokens = rotated.body as Tokens;
        }
        assert.equal(await admin.dbSize(), keys, "100 rotations, not one more key");
        assert.equal((await callTool(B, tokens.access_token)).status, 200);
      } finally {
        admin.destroy();
      }
    });

    test("Redis down: 503 temporarily_unavailable, never a success, no crash; Redis back: it resumes", async () => {
      const { code: spentCode, verifier: spentVerifier } = await authorize(A);
      const live = (await redeemCode(A, spentCode, spentVerifier)).body;
      const fresh = await authorize(B); // a valid code never redeemed: it would succeed if the store were skipped

      await redis.stop();

      for (const base of [A, B]) {
        const started = Date.now();
        const answers = [
          await redeemCode(base, fresh.code, fresh.verifier),
          await redeemCode(base, spentCode, spentVerifier), // a replay must not slip through either
          await refresh(base, live.refresh_token),
        ];
        for (const answer of answers) {
          assert.equal(answer.status, 503, JSON.stringify(answer.body));
          assert.equal(answer.body.error, "temporarily_unavailable");
          assert.equal(answer.headers.get("cache-control"), "no-store");
        }
        for (const tool of ["get_secret", "revoke_auth_token"]) {
          const call = await callTool(base, live.access_token, tool);
          assert.equal(call.status, 503, `${tool}: ${JSON.stringify(call.body)}`);
          assert.equal(call.body.result, undefined);
          assert.equal(typeof call.body.error?.code, "number");
        }
        assert.ok(Date.now() - started < 5000, "answers come promptly, not after a hang");
        assert.equal((await fetch(`${base}/`)).status, 200, "the instance is still up");
        // A public tool without a token needs no store, and still works.
        assert.equal((await callTool(base, undefined, "whoami")).status, 200);
      }
      assert.ok(logs.some((line) => /unavailable/.test(line)), "the outage is logged");

      await redis.start(redis.port); // same port: the clients reconnect on their own

      const deadline = Date.now() + 15_000;
      let tokens: Tokens | undefined;
      while (!tokens && Date.now() < deadline) {
        const { code, verifier } = await authorize(A);
        const answer = await redeemCode(B, code, verifier);
        if (answer.status === 200) tokens = answer.body;
        else {
          assert.equal(answer.status, 503, JSON.stringify(answer.body));
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
      assert.ok(tokens, "a new flow completes once Redis is back");
      // Both instances are back, not just the one that answered first.
      for (let i = 0; i < 20; i++) {
        const [a, b] = [await callTool(A, tokens.access_token), await callTool(B, tokens.access_token)];
        if (a.status === 200 && b.status === 200) break;
        assert.ok(i < 19, `still ${a.status}/${b.status}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const rotated = await refresh(A, tokens.refresh_token);
      assert.equal(rotated.status, 200);
    });

    test("Redis silent: 503 at the deadline, not a hang; then the code is honoured once at most", async () => {
      const { code: liveCode, verifier: liveVerifier } = await authorize(A);
      const live = (await redeemCode(A, liveCode, liveVerifier)).body;
      const fresh = await authorize(A);

      // CLIENT PAUSE: Redis keeps every connection open but answers no one until the pause ends.
      const admin = await redis.admin();
      await admin.sendCommand(["CLIENT", "PAUSE", "4000", "ALL"]);
      admin.destroy();

      const started = Date.now();
      const answers = await Promise.all([
        redeemCode(A, fresh.code, fresh.verifier),
        refresh(B, live.refresh_token),
        callTool(B, live.access_token),
      ]);
      const elapsed = Date.now() - started;
      assert.deepEqual(answers.map((a) => a.status), [503, 503, 503]);
      assert.equal(answers[0].body.error, "temporarily_unavailable");
      assert.ok(elapsed < 3800, `answered after ${elapsed} ms, before the pause ended`);

      // Once Redis answers again, the code the client was told 503 about is honoured at most once. The spend
      // sent during the pause usually lands when the pause ends, and then every retry is refused; a spend the
      // Redis client dropped unsent at its own deadline never landed, and then one retry may be the first use.
      let retry: Answer | undefined;
      for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
        retry = await redeemCode(B, fresh.code, fresh.verifier);
        if (retry.status !== 503) break;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      if (retry?.status === 200) assert.equal(typeof retry.body.access_token, "string");
      else assert.equal(retry?.body.error, "invalid_grant", `the retry: ${retry?.status}`);
      const again = await redeemCode(A, fresh.code, fresh.verifier);
      assert.equal(again.status, 400, "whatever the retry got, the code is spent now");
      assert.equal(again.body.error, "invalid_grant");
    });

    /** Every token of the session: access refused at both instances, refresh refused at both. */
    async function assertSessionDead(tokens: Tokens) {
      for (const base of [A, B]) {
        const call = await callTool(base, tokens.access_token);
        assert.equal(call.status, 401, `${base}: ${JSON.stringify(call.body)}`);
        assert.match(call.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
      }
      for (const base of [A, B]) {
        const answer = await refresh(base, tokens.refresh_token);
        assert.equal(answer.status, 400);
        assert.equal(answer.body.error, "invalid_grant");
      }
    }
  });
});

// ─── The Redis store refuses a Redis that may evict ───────────────────────────────────────────────
// An evicted spent code can be redeemed again; an evicted revocation brings a session back. Under a
// maxmemory limit any policy but noeviction evicts, so such a Redis is refused at startup, and a running
// store that finds one later (CONFIG SET at runtime) refuses every call until the policy is fixed.

if (redisInstalled) {
  describe("the Redis store and eviction", () => {
    let redis: RedisProcess;

    before(async () => {
      redis = new RedisProcess(["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
      await redis.start();
    });
    after(() => redis?.stop());

    async function configure(settings: Record<string, string>) {
      const admin = await redis.admin();
      try {
        for (const [name, value] of Object.entries(settings)) await admin.configSet(name, value);
      } finally {
        admin.destroy();
      }
    }

    test("maxmemory with an allkeys-*/volatile-* policy: the store refuses to start, in one line", async () => {
      for (const policy of ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"]) {
        await configure({ "maxmemory-policy": policy });
        await assert.rejects(createRedisStore(redis.url, { log: () => {} }), (error: Error) => {
          assert.match(error.message, new RegExp(`maxmemory-policy ${policy}`));
          assert.match(error.message, /noeviction/, "it says what to set");
          assert.doesNotMatch(error.message, /\n/, "one line");
          return true;
        });
      }
    });

    test("noeviction is accepted under the same limit; so is any policy with no limit (maxmemory 0)", async () => {
      const accepted: Record<string, string>[] = [
        { "maxmemory-policy": "noeviction" },
        { maxmemory: "0", "maxmemory-policy": "allkeys-lru" },
      ];
      for (const settings of accepted) {
        await configure(settings);
        const lines: string[] = [];
        const redisStore = await createRedisStore(redis.url, { log: (line) => lines.push(line) });
        try {
          assert.equal(redisStore.store.durable, true);
          assert.equal(await redisStore.store.spendOnce(randomBytes(8).toString("hex"), Date.now() / 1000 + 60), true);
          assert.deepEqual(lines, [], "nothing to warn about");
        } finally {
          await redisStore.close();
        }
      }
      await configure({ "maxmemory": "2mb", "maxmemory-policy": "allkeys-lru" });
    });

    test("where CONFIG is not allowed (a managed Redis), the store warns once and starts", async () => {
      const admin = await redis.admin();
      try {
        await admin.sendCommand(["ACL", "SETUSER", "app", "on", ">app-password", "~*", "&*", "+@all", "-config"]);
      } finally {
        admin.destroy();
      }
      const lines: string[] = [];
      const url = `redis://app:app-password@127.0.0.1:${redis.port}`;
      const redisStore = await createRedisStore(url, { log: (line) => lines.push(line) });
      try {
        assert.equal(lines.length, 1, `one warning: ${JSON.stringify(lines)}`);
        assert.match(lines[0], /CONFIG GET is not allowed/);
        assert.match(lines[0], /noeviction/, "it says what to make sure of");
        assert.doesNotMatch(lines[0], /app-password/, "the password stays out of the log");
        const id = randomBytes(8).toString("hex");
        assert.equal(await redisStore.store.spendOnce(id, Date.now() / 1000 + 60), true);
        assert.equal(await redisStore.store.spendOnce(id, Date.now() / 1000 + 60), false);

        // A write Redis refuses (out of memory) makes the store check again: denied again, still one line.
        await configure({ maxmemory: "1", "maxmemory-policy": "noeviction" });
        await assert.rejects(redisStore.store.spendOnce(randomBytes(8).toString("hex"), Date.now() / 1000 + 60));
        await configure({ maxmemory: "2mb" });
        assert.equal(await redisStore.store.spendOnce(randomBytes(8).toString("hex"), Date.now() / 1000 + 60), true);
        assert.equal(lines.length, 1, `still one warning: ${JSON.stringify(lines)}`);
      } finally {
        await redisStore.close();
        await configure({ maxmemory: "2mb", "maxmemory-policy": "allkeys-lru" });
      }
    });

    test("noeviction over maxmemory: a code exchange answers 503 temporarily_unavailable; with room, 200", async () => {
      await configure({ "maxmemory-policy": "noeviction" });
      const redisStore = await createRedisStore(redis.url, { log: () => {} });
      const server = await startServer({ port: 0, host: "127.0.0.1", store: redisStore.store, log: () => {} });
      const admin = await redis.admin();
      try {
        const fresh = await authorize(server.url);
        // Full: more memory in use than maxmemory allows. With noeviction Redis then refuses every write.
        await admin.configSet("maxmemory", "1");
        const answer = await redeemCode(server.url, fresh.code, fresh.verifier);
        assert.equal(answer.status, 503, JSON.stringify(answer.body));
        assert.equal(answer.body.error, "temporarily_unavailable");
        assert.equal(answer.body.access_token, undefined);
        await admin.configSet("maxmemory", "2mb");
        const again = await authorize(server.url);
        assert.equal((await redeemCode(server.url, again.code, again.verifier)).status, 200, "room again: served");
      } finally {
        admin.destroy();
        await server.close();
        await redisStore.close();
        await configure({ maxmemory: "2mb", "maxmemory-policy": "allkeys-lru" });
      }
    });

    test("evicting policy set at runtime: sign-ins answer 503 temporarily_unavailable until noeviction", async () => {
      await configure({ maxmemory: "2mb", "maxmemory-policy": "noeviction" });
      const lines: string[] = [];
      const redisStore = await createRedisStore(redis.url, {
        log: (line) => lines.push(line),
        evictionCheckIntervalMs: 50,
      });
      const server = await startServer({ port: 0, host: "127.0.0.1", store: redisStore.store, log: () => {} });
      const admin = await redis.admin();
      try {
        const before = await signIn(server.url);
        assert.equal(before.status, 200, JSON.stringify(before.body));

        await admin.configSet("maxmemory-policy", "allkeys-lru"); // under maxmemory 2mb: Redis may now evict
        await logged(lines, /may evict keys \(maxmemory \d+, maxmemory-policy allkeys-lru\)/);
        const during = await signIn(server.url);
        assert.equal(during.status, 503, JSON.stringify(during.body));
        assert.equal(during.body.error, "temporarily_unavailable");
        assert.equal(during.body.access_token, undefined);
        const refreshed = await refresh(server.url, before.body.refresh_token);
        assert.equal(refreshed.status, 503, JSON.stringify(refreshed.body));
        assert.equal(refreshed.body.error, "temporarily_unavailable");
        const call = await callTool(server.url, before.body.access_token); // a revocation may have been evicted
        assert.equal(call.status, 503, JSON.stringify(call.body));
        assert.equal(call.body.result, undefined);
        assert.equal(typeof call.body.error?.code, "number");

        await admin.configSet("maxmemory-policy", "noeviction");
        await logged(lines, /no longer evicts keys/);
        const after = await signIn(server.url);
        assert.equal(after.status, 200, JSON.stringify(after.body));
        assert.equal((await callTool(server.url, before.body.access_token)).status, 200, "earlier tokens work again");
        assert.equal(lines.filter((line) => /may evict/.test(line)).length, 1, "one line when refusing starts");
      } finally {
        admin.destroy();
        await server.close();
        await redisStore.close();
        await configure({ maxmemory: "2mb", "maxmemory-policy": "allkeys-lru" });
      }
    });

    test("a write Redis refuses makes the store re-check at once: 503 under allkeys-lru, room or not", async () => {
      await configure({ maxmemory: "2mb", "maxmemory-policy": "noeviction" });
      const lines: string[] = [];
      // A periodic check an hour away: only the refused write can make the store look again.
      const redisStore = await createRedisStore(redis.url, {
        log: (line) => lines.push(line),
        evictionCheckIntervalMs: 3_600_000,
      });
      const server = await startServer({ port: 0, host: "127.0.0.1", store: redisStore.store, log: () => {} });
      const admin = await redis.admin();
      try {
        assert.equal((await signIn(server.url)).status, 200);

        // Evicting, and unable to free enough: Redis refuses the code exchange's write (OOM).
        await admin.configSet("maxmemory-policy", "allkeys-lru");
        await admin.configSet("maxmemory", "1");
        const refused = await signIn(server.url);
        assert.equal(refused.status, 503, JSON.stringify(refused.body));
        assert.equal(refused.body.error, "temporarily_unavailable");

        // Room again, policy still evicting: Redis would accept the writes, the store does not.
        await admin.configSet("maxmemory", "2mb");
        const still = await signIn(server.url);
        assert.equal(still.status, 503, JSON.stringify(still.body));
        assert.equal(still.body.error, "temporarily_unavailable");
        assert.equal(still.body.access_token, undefined);
        assert.ok(
          lines.some((line) => /may evict keys/.test(line)),
          `the refusal is logged: ${JSON.stringify(lines)}`,
        );
      } finally {
        admin.destroy();
        await server.close();
        await redisStore.close();
        await configure({ maxmemory: "2mb", "maxmemory-policy": "allkeys-lru" });
      }
    });

    test("a sign-in for /ttl/86400/mcp leaves a session key that lasts at most the refresh lifetime", async () => {
      await configure({ maxmemory: "2mb", "maxmemory-policy": "noeviction" });
      const prefix = `ttl-${randomBytes(4).toString("hex")}:`;
      const redisStore = await createRedisStore(redis.url, { prefix, log: () => {} });
      const refreshTtl = 300;
      const server = await startServer({
        port: 0,
        host: "127.0.0.1",
        store: redisStore.store,
        refreshTokenTtlSeconds: refreshTtl,
        log: () => {},
      });
      const admin = await redis.admin();
      try {
        const signedIn = await signIn(server.url, `${server.url}/ttl/86400/mcp`);
        assert.equal(signedIn.status, 200, JSON.stringify(signedIn.body));
        const sessions = await admin.keys(`${prefix}session:*`);
        assert.equal(sessions.length, 1, `one session key: ${JSON.stringify(sessions)}`);
        const ttl = await admin.ttl(sessions[0]);
        // Expiry is whole seconds rounded up (a token lives at least what it promises): one second more at most.
        assert.ok(ttl > 0 && ttl <= refreshTtl + 1, `session key TTL ${ttl} s, refresh lifetime ${refreshTtl} s`);
      } finally {
        admin.destroy();
        await server.close();
        await redisStore.close();
        await configure({ maxmemory: "2mb", "maxmemory-policy": "allkeys-lru" });
      }
    });
  });
}

/** Resolves once `lines` holds a line matching `pattern`; fails after 10 s (a bound on waiting, not a speed target). */
async function logged(lines: string[], pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!lines.some((line) => pattern.test(line))) {
    if (Date.now() > deadline) assert.fail(`no log line matching ${pattern}: ${JSON.stringify(lines)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ─── Over HTTP: one OAuth client, by hand ─────────────────────────────────────────────────────────

type Answer = {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any -- tests read JSON fields freely; a wrong guess fails the assertion that reads it
  body: any;
};
type Tokens = { access_token: string; refresh_token: string };

async function answerOf(response: Response): Promise<Answer> {
  const text = await response.text();
  let body: Answer["body"] = {};
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: response.status, headers: response.headers, body };
}

/**
 * A PKCE pair, the consent page at `base` and its Approve; returns the code from the redirect. The form
 * posts to the public URL, so the approval may land on either instance: both know the consent token.
 */
async function authorize(base: string, resource?: string): Promise<{ code: string; verifier: string }> {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const query = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state: "s",
    ...(resource && { resource }),
  });
  const page = await fetch(`${base}/authorize?${query}`, { redirect: "manual" });
  const html = await page.text();
  assert.equal(page.status, 200, html);
  const form = consentForm(html, base);
  const response = await fetch(form.action, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ consent: form.consent, decision: "approve" }),
    redirect: "manual",
  });
  await response.body?.cancel();
  assert.equal(response.status, 303);
  const code = new URL(response.headers.get("location") ?? "").searchParams.get("code");
  assert.ok(code, "the redirect carries a code");
  return { code, verifier };
}

function postForm(base: string, fields: Record<string, string>): Promise<Answer> {
  return fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields),
  }).then(answerOf);
}

const redeemCode = (base: string, code: string, verifier: string, resource?: string) =>
  postForm(base, {
    grant_type: "authorization_code",
    code,
    code_verifier: verifier,
    client_id: CLIENT_ID,
    ...(resource && { resource }),
  });

/** A whole sign-in (consent, then code exchange) for `resource`; the answer of the exchange. */
async function signIn(base: string, resource?: string): Promise<Answer> {
  const { code, verifier } = await authorize(base, resource);
  return redeemCode(base, code, verifier, resource);
}

const refresh = (base: string, refreshToken: string) =>
  postForm(base, { grant_type: "refresh_token", refresh_token: refreshToken, client_id: CLIENT_ID });

function callTool(base: string, accessToken: string | undefined, name = "get_secret"): Promise<Answer> {
  return fetch(`${base}/mcp`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(accessToken && { authorization: `Bearer ${accessToken}` }),
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name, arguments: {} } }),
  }).then(answerOf);
}
