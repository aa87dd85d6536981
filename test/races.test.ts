/**
 * Races on the single-use memory. Requests are held one byte short of complete on their own connections
 * until the server has every one of them parked, then released in the same tick, so their handlers
 * interleave for real. Everything runs twice: on the default in-memory store, and on a store that
 * answers after a random delay (as a networked store does), which widens every window.
 *
 *   - one code redeemed 50 times at once: exactly one grant; the replays revoke the session it started;
 *   - one refresh token presented 20 times at once: exactly one grant, of the session; the reuse revokes it;
 *   - a replay racing the first exchange, both released at the same instant: whichever won is revoked;
 *   - refresh racing a code replay, refresh racing revoke_auth_token: afterwards nothing of the session works;
 *   - independent sign-ins at once never disturb each other.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type IncomingMessage, request } from "node:http";
import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { MemoryStore, type RunningServer, type SingleUseStore, startServer } from "../server.ts";
import { consentForm } from "./helpers.ts";

const REDIRECT_URI = "http://127.0.0.1:9/cb";

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}
interface Grant {
  access_token: string;
  refresh_token: string;
}

/** A store whose every answer comes after 0–4 ms, each operation still atomic: a networked store's timing. */
class SlowStore implements SingleUseStore {
  readonly durable = false;
  readonly #inner = new MemoryStore();
  /** The inner operation, with a random lag before and after it. */
  async #lagged<T>(operation: () => Promise<T>): Promise<T> {
    await sleep(Math.random() * 4);
    const answer = await operation();
    await sleep(Math.random() * 4);
    return answer;
  }
  spendOnce(id: string, expiresAt: number) {
    return this.#lagged(() => this.#inner.spendOnce(id, expiresAt));
  }
  startSession(sid: string, refreshJti: string, expiresAt: number) {
    return this.#lagged(() => this.#inner.startSession(sid, refreshJti, expiresAt));
  }
  rotateRefresh(sid: string, usedJti: string, nextJti: string) {
    return this.#lagged(() => this.#inner.rotateRefresh(sid, usedJti, nextJti));
  }
  revokeSession(sid: string, expiresAt: number) {
    return this.#lagged(() => this.#inner.revokeSession(sid, expiresAt));
  }
  isRevoked(sid: string) {
    return this.#lagged(() => this.#inner.isRevoked(sid));
  }
  raiseFlag(key: string, expiresAt: number) {
    return this.#lagged(() => this.#inner.raiseFlag(key, expiresAt));
  }
  takeFlag(key: string) {
    return this.#lagged(() => this.#inner.takeFlag(key));
  }
}

const stores: [string, () => SingleUseStore | undefined][] = [
  ["in-memory store", () => undefined],
  ["store answering after a random delay", () => new SlowStore()],
];

for (const [storeName, makeStore] of stores) {
  describe(`races (${storeName})`, () => {
    let server: RunningServer;
    let base: string;
    let clientId: string;
    const arrivals = new Map<string, number>();

    // ─── HTTP, one connection per request ────────────────────────────────────────────────────────

    interface Held {
      path: string;
      headers: Record<string, string>;
      body: string;
    }

    function send(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
      return released([{ path, headers, body: body ?? "" }], method).then(([reply]) => reply);
    }

    /**
     * Sends each request but its body's last byte, waits until the server has received all of them
     * (they wait in its body reader), then writes every last byte in one tick.
     */
    async function released(requests: Held[], method = "POST"): Promise<Reply[]> {
      const url = new URL(base);
      const group = randomBytes(8).toString("hex"); // tags this group's requests, to count their arrival
      arrivals.set(group, 0);
      try {
        const held = requests.map(({ path, headers, body }) => {
          const bytes = Buffer.from(body);
          const req = request({
            host: url.hostname,
            port: url.port,
            method,
            path,
            agent: false,
            headers: {
              ...headers,
              "x-test-group": group,
              ...(method === "POST" && { "content-length": String(bytes.length) }),
            },
          });
          const answer = new Promise<Reply>((resolve, reject) => {
            req.on("response", (res) => {
              const chunks: Buffer[] = [];
              res.on("data", (chunk: Buffer) => void chunks.push(chunk));
              res.on("end", () => {
                const flat: Record<string, string> = {};
                for (const [name, value] of Object.entries(res.headers)) {
                  if (typeof value === "string") flat[name] = value;
                }
                resolve({ status: res.statusCode ?? 0, headers: flat, body: Buffer.concat(chunks).toString("utf8") });
              });
              res.on("error", reject);
            });
            req.on("error", reject);
          });
          if (method !== "POST" || bytes.length === 0) {
            req.end();
            return { release: () => {}, answer };
          }
          req.write(bytes.subarray(0, -1));
          return { release: () => void req.end(bytes.subarray(-1)), answer };
        });
        const deadline = Date.now() + 5000;
        const arrived = () => arrivals.get(group) ?? 0;
        while (method === "POST" && arrived() < requests.length && Date.now() < deadline) await sleep(2);
        if (method === "POST") {
          assert.equal(arrived(), requests.length, "every request is parked in the server before the release");
        }
        for (const { release } of held) release();
        return await Promise.all(held.map(({ answer }) => answer));
      } finally {
        arrivals.delete(group);
      }
    }

    const form = (params: Record<string, string>) => ({
      path: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(params).toString(),
    });

    // ─── The flow's steps ────────────────────────────────────────────────────────────────────────

    async function newCode(): Promise<{ code: string; verifier: string }> {
      const verifier = randomBytes(32).toString("base64url");
      const query = new URLSearchParams({
        response_type: "code",
        client_id: clientId,
        redirect_uri: REDIRECT_URI,
        state: "race",
        code_challenge: createHash("sha256").update(verifier).digest("base64url"),
        code_challenge_method: "S256",
        resource: `${base}/mcp`,
      });
      const page = await send("GET", `/authorize?${query}`, {});
      assert.equal(page.status, 200, page.body);
      const form = consentForm(page.body, base);
      const r = await send(
        "POST",
        form.action.pathname,
        { "content-type": "application/x-www-form-urlencoded" },
        new URLSearchParams({ consent: form.consent, decision: "approve" }).toString(),
      );
      assert.equal(r.status, 303, r.body);
      const code = new URL(r.headers.location).searchParams.get("code");
      assert.ok(code);
      return { code, verifier };
    }

    const exchangeRequest = (code: string, verifier: string) =>
      form({ grant_type: "authorization_code", code, code_verifier: verifier, client_id: clientId });
    const refreshRequest = (refreshToken: string) =>
      form({ grant_type: "refresh_token", refresh_token: refreshToken, client_id: clientId });

    async function signIn(): Promise<Grant> {
      const { code, verifier } = await newCode();
      const [r] = await released([exchangeRequest(code, verifier)]);
      assert.equal(r.status, 200, r.body);
      return JSON.parse(r.body) as Grant;
    }

    function callTool(name: string, accessToken: string): Promise<Reply> {
      return send(
        "POST",
        "/mcp",
        { "content-type": "application/json", authorization: `Bearer ${accessToken}` },
        JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name, arguments: {} } }),
      );
    }

    const grantsOf = (replies: Reply[]) =>
      replies.filter((r) => r.status === 200).map((r) => JSON.parse(r.body) as Grant);

    function assertInvalidGrant(r: Reply) {
      assert.equal(r.status, 400, r.body);
      assert.equal((JSON.parse(r.body) as { error: string }).error, "invalid_grant", r.body);
      assert.equal(r.headers["cache-control"], "no-store");
    }

    /** `next` is a new pair of `first`'s session: new tokens, the same sid, an access token for /mcp. */
    function assertSameSession(next: Grant, first: Grant) {
      assert.notEqual(next.access_token, first.access_token, "a new access token");
      assert.notEqual(next.refresh_token, first.refresh_token, "a new refresh token (rotation)");
      const claims = (token: string) =>
        JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
      const access = claims(next.access_token);
      assert.equal(access.sid, claims(first.access_token).sid, "the same session");
      assert.equal(claims(next.refresh_token).sid, access.sid);
      assert.equal(access.aud, `${base}/mcp`);
      assert.ok(typeof access.exp === "number" && access.exp * 1000 > Date.now(), "an unexpired access token");
    }

    /** Every token of the session is dead: the access token gets 401 invalid_token, the refresh token invalid_grant. */
    async function assertSessionDead(grant: Grant, what: string) {
      const call = await callTool("get_secret", grant.access_token);
      assert.equal(call.status, 401, `${what}: the access token still opens get_secret: ${call.body}`);
      assert.match(call.headers["www-authenticate"] ?? "", /error="invalid_token"/);
      const [refreshed] = await released([refreshRequest(grant.refresh_token)]);
      assert.equal(refreshed.status, 400, `${what}: the refresh token still refreshes: ${refreshed.body}`);
      assertInvalidGrant(refreshed);
    }

    before(async () => {
      server = await startServer({ port: 0, host: "127.0.0.1", store: makeStore(), log: () => {} });
      base = server.url;
      server.server.on("request", (req: IncomingMessage) => {
        const group = req.headers["x-test-group"];
        if (typeof group === "string" && arrivals.has(group)) arrivals.set(group, (arrivals.get(group) ?? 0) + 1);
      });
      const r = await send(
        "POST",
        "/register",
        { "content-type": "application/json" },
        JSON.stringify({ redirect_uris: [REDIRECT_URI], client_name: "race" }),
      );
      assert.equal(r.status, 201, r.body);
      clientId = (JSON.parse(r.body) as { client_id: string }).client_id;
    });

    after(async () => {
      await server?.close();
    });

    // ─── The races ───────────────────────────────────────────────────────────────────────────────

    it("50 simultaneous redemptions of one code: one grant, 49 invalid_grant, its session revoked", async () => {
      const { code, verifier } = await newCode();
      const replies = await released(Array.from({ length: 50 }, () => exchangeRequest(code, verifier)));
      const winners = grantsOf(replies);
      assert.equal(winners.length, 1, `grants: ${replies.map((r) => r.status).join(" ")}`);
      for (const r of replies.filter((reply) => reply.status !== 200)) assertInvalidGrant(r);
      await assertSessionDead(winners[0], "after 49 replays");
    });

    it("one refresh alone: a new pair whose access token opens get_secret (the race's control)", async () => {
      const first = await signIn();
      const [refreshed] = await released([refreshRequest(first.refresh_token)]);
      assert.equal(refreshed.status, 200, refreshed.body);
      const [winner] = grantsOf([refreshed]);
      assertSameSession(winner, first);
      const call = await callTool("get_secret", winner.access_token);
      assert.equal(call.status, 200, `the refreshed access token opens get_secret: ${call.body}`);
    });

    it("20 simultaneous refreshes of one token: exactly one grant, 19 invalid_grant; the reuse revokes", async () => {
      const first = await signIn();
      assert.equal((await callTool("get_secret", first.access_token)).status, 200);
      const replies = await released(Array.from({ length: 20 }, () => refreshRequest(first.refresh_token)));
      const winners = grantsOf(replies);
      assert.equal(winners.length, 1, `exactly one refresh succeeds: ${replies.map((r) => r.status).join(" ")}`);
      for (const r of replies.filter((reply) => reply.status !== 200)) assertInvalidGrant(r);
      // The winner was a real rotation of this session; the 19 presentations of the spent token are reuse,
      // which revokes the session (RFC 9700 §4.14.2), so its new pair is dead too.
      assertSameSession(winners[0], first);
      await assertSessionDead(winners[0], "the winning refresh");
      const call = await callTool("get_secret", first.access_token);
      assert.equal(call.status, 401, "the session's first access token is revoked too");
    });

    it("a replay released with the first exchange: one grant, and its tokens are revoked (30 rounds)", async () => {
      for (let round = 0; round < 30; round++) {
        const { code, verifier } = await newCode();
        const replies = await released([exchangeRequest(code, verifier), exchangeRequest(code, verifier)]);
        const winners = grantsOf(replies);
        assert.equal(winners.length, 1, `round ${round}: ${replies.map((r) => `${r.status} ${r.body}`).join(" | ")}`);
        assertInvalidGrant(replies.find((r) => r.status !== 200) as Reply);
        await assertSessionDead(winners[0], `round ${round}`);
      }
    });

    it("an attacker's replay (wrong verifier, client) racing the exchange: any grant revoked (20 rounds)", async () => {
      for (let round = 0; round < 20; round++) {
        const { code, verifier } = await newCode();
        const attacker = form({
          grant_type: "authorization_code",
          code,
          code_verifier: randomBytes(32).toString("base64url"),
          client_id: "https://attacker.example/client.json",
        });
        const legit = exchangeRequest(code, verifier);
        const replies = await released(round % 2 ? [attacker, legit] : [legit, attacker]);
        const attackerReply = replies[round % 2 ? 0 : 1];
        assertInvalidGrant(attackerReply);
        for (const grant of grantsOf(replies)) await assertSessionDead(grant, `round ${round}`);
      }
    });

    it("refresh racing a replay of the session's code: then no token of the session works (20 rounds)", async () => {
      for (let round = 0; round < 20; round++) {
        const { code, verifier } = await newCode();
        const [exchanged] = await released([exchangeRequest(code, verifier)]);
        assert.equal(exchanged.status, 200, exchanged.body);
        const first = JSON.parse(exchanged.body) as Grant;
        const [refreshed, replayed] = await released([
          refreshRequest(first.refresh_token),
          exchangeRequest(code, verifier),
        ]);
        assertInvalidGrant(replayed);
        await assertSessionDead(first, `round ${round}, first tokens`);
        for (const grant of grantsOf([refreshed])) await assertSessionDead(grant, `round ${round}, refreshed tokens`);
      }
    });

    it("refresh racing revoke_auth_token: afterwards no token of the session works (20 rounds)", async () => {
      for (let round = 0; round < 20; round++) {
        const first = await signIn();
        const revoke = {
          path: "/mcp",
          headers: { "content-type": "application/json", authorization: `Bearer ${first.access_token}` },
          body: JSON.stringify({
            jsonrpc: "2.0",
            id: 1,
            method: "tools/call",
            params: { name: "revoke_auth_token", arguments: {} },
          }),
        };
        const [revoked, refreshed] = await released([revoke, refreshRequest(first.refresh_token)]);
        assert.equal(revoked.status, 200, revoked.body);
        assert.ok(refreshed.status === 200 || refreshed.status === 400, refreshed.body);
        if (refreshed.status === 400) assertInvalidGrant(refreshed);
        await assertSessionDead(first, `round ${round}, first tokens`);
        for (const grant of grantsOf([refreshed])) await assertSessionDead(grant, `round ${round}, refreshed tokens`);
      }
    });

    it("30 independent sign-ins exchanged at the same instant all succeed, and stay independent", async () => {
      const codes = await Promise.all(Array.from({ length: 30 }, () => newCode()));
      const replies = await released(codes.map(({ code, verifier }) => exchangeRequest(code, verifier)));
      assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
      const grants = grantsOf(replies);
      assert.equal(new Set(grants.map((g) => g.access_token)).size, 30);
      // Revoking one session leaves the other 29 working.
      assert.equal((await callTool("revoke_auth_token", grants[0].access_token)).status, 200);
      await assertSessionDead(grants[0], "the revoked session");
      const calls = await Promise.all(grants.slice(1).map((g) => callTool("get_secret", g.access_token)));
      assert.deepEqual(calls.map((c) => c.status), calls.map(() => 200));
      const refreshes = await released(grants.slice(1).map((g) => refreshRequest(g.refresh_token)));
      assert.deepEqual(refreshes.map((r) => r.status), refreshes.map(() => 200));
    });
  });
}
