/**
 * A SingleUseStore on Redis, so that several instances of the server share one single-use memory:
 * a code or refresh token spent at one instance is spent at all of them, and a session revoked at one
 * is revoked at all of them.
 *
 * One atomic Redis command per operation, and Redis expires every key itself (no sweeping):
 *   spendOnce      SET <prefix>spent:<id> 1 NX EXAT <expiresAt>    → "OK" for exactly one caller, else nil
 *   revokeSession  SET <prefix>revoked:<sid> 1 EXAT <expiresAt>
 *   isRevoked      EXISTS <prefix>revoked:<sid>
 *
 * Fail closed: when Redis cannot answer, every method rejects — at once while disconnected (no offline
 * queue), within two seconds when Redis is connected but silent (a deadline per operation) — and the
 * server turns that into a 503, never a success. The client keeps reconnecting in the background, so
 * service resumes by itself once Redis is back.
 *
 *   const { store, close } = await createRedisStore("redis://127.0.0.1:6379");
 *   const srv = await startServer({ store, jwtSecret, publicUrl });
 */
import { createClient } from "redis";
import type { SingleUseStore } from "../server.ts";

/** The two commands the store needs; a node-redis client (or cluster client) has both. */
export interface RedisCommands {
  set(
    key: string,
    value: string,
    options: { condition?: "NX"; expiration: { type: "EXAT"; value: number } },
  ): Promise<unknown>;
  exists(key: string): Promise<number>;
}

export interface RedisStoreOptions {
  /** Namespace for every key, so one Redis can serve several deployments. Default "mcp-lazy-auth:". */
  prefix?: string;
  /** How long one operation may take before it rejects (ms). Default 2000. */
  commandTimeoutMs?: number;
  /** How long one connection attempt may take (ms). Default 2000. */
  connectTimeoutMs?: number;
  /** Longest pause between reconnection attempts (ms). Default 1000. */
  maxReconnectDelayMs?: number;
  /** Connection attempts at startup before giving up (the server should not start without its store). Default 3. */
  startupAttempts?: number;
  /** Where connection problems are reported, one line per outage and one per recovery. Default console.error. */
  log?: (line: string) => void;
}

export class RedisStore implements SingleUseStore {
  readonly #client: RedisCommands;
  readonly #prefix: string;
  readonly #timeoutMs: number;

  constructor(client: RedisCommands, options: { prefix?: string; timeoutMs?: number } = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? "mcp-lazy-auth:";
    this.#timeoutMs = options.timeoutMs ?? 2000;
  }

  async spendOnce(id: string, expiresAt: number): Promise<boolean> {
    // NX makes this the one atomic check-and-set: across every instance, exactly one caller gets "OK".
    const reply = await this.#answer(this.#client.set(`${this.#prefix}spent:${id}`, "1", {
      condition: "NX",
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
    return reply === "OK";
  }

  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    await this.#answer(this.#client.set(`${this.#prefix}revoked:${sid}`, "1", {
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
  }

  async isRevoked(sid: string): Promise<boolean> {
    return (await this.#answer(this.#client.exists(`${this.#prefix}revoked:${sid}`))) === 1;
  }

  /**
   * The reply, or a rejection once the deadline passes. The client's own command timeout only covers
   * commands not yet written; a command already sent to a Redis that stopped answering (paused, or
   * cut off without a TCP reset) would otherwise wait for as long as the socket stays open.
   * A spend that times out may still land later: the caller has already answered 503, so the code
   * is lost rather than honoured twice, which is the safe way round.
   */
  async #answer<T>(command: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
    });
    try {
      return await Promise.race([command, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * EXAT takes whole epoch seconds. Round up, and never into the past: Redis would drop a key whose
 * expiry has already passed at once, and a spent ID must stay spent for at least a moment.
 */
function expiryFor(expiresAt: number): number {
  if (!Number.isFinite(expiresAt)) throw new TypeError(`expiresAt must be epoch seconds, got ${expiresAt}`);
  return Math.max(Math.ceil(expiresAt), Math.floor(Date.now() / 1000) + 1);
}

/**
 * Connects to Redis (failing after a few attempts if it is unreachable) and returns the store, the
 * underlying client (for health checks) and `close`.
 */
export async function createRedisStore(url: string, options: RedisStoreOptions = {}) {
  const log = options.log ?? ((line: string) => console.error(line));
  const maxDelay = options.maxReconnectDelayMs ?? 1000;
  const startupAttempts = options.startupAttempts ?? 3;
  const timeoutMs = options.commandTimeoutMs ?? 2000;
  const where = redacted(url);
  let everReady = false;
  let outageReported = false;

  const client = createClient({
    url,
    // Reject commands at once while disconnected instead of queueing them until Redis returns:
    // a request waiting on a dead Redis would hang, and a queued spend could land long after its 503.
    disableOfflineQueue: true,
    commandOptions: { timeout: timeoutMs },
    socket: {
      connectTimeout: options.connectTimeoutMs ?? 2000,
      // After startup, keep trying forever with a short capped backoff, so service resumes soon after
      // Redis does. Before the first connection, give up after a few attempts so startup fails loudly.
      reconnectStrategy: (retries: number, cause: Error) =>
        !everReady && retries + 1 >= startupAttempts
          ? new Error(`cannot reach Redis at ${where}: ${cause.message}`)
          : Math.min(50 * 2 ** retries, maxDelay),
    },
  });

  // Without an 'error' listener, Node treats every connection error as fatal to the whole process.
  // One line when an outage starts and one when it ends, not one per reconnection attempt.
  client.on("error", (error: Error) => {
    if (outageReported) return;
    outageReported = true;
    log(`[redis] ${where} unavailable (${error.message || error.name}); requests that need it answer 503`);
  });
  client.on("ready", () => {
    if (outageReported) log(`[redis] ${where} reachable again`);
    outageReported = false;
    everReady = true;
  });

  await client.connect();

  return {
    store: new RedisStore(client, { prefix: options.prefix, timeoutMs }),
    client,
    close: async () => {
      if (!client.isOpen) return;
      // close() lets commands in flight finish; while Redis is down or silent there is nothing to wait for.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const gaveUp = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      if (client.isReady) await Promise.race([client.close(), gaveUp]);
      clearTimeout(timer);
      if (client.isOpen) client.destroy();
    },
  };
}

/** The URL without its password, for log lines. */
function redacted(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.href;
  } catch {
    return "(unparseable Redis URL)";
  }
}
