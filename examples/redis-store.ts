/**
 * A SingleUseStore on Redis, so that several instances of the server share one single-use memory:
 * a code spent at one instance is spent at all of them, a refresh token rotated at one is stale at all of
 * them, and a session revoked at one is revoked at all of them.
 *
 * One atomic Redis command per operation, and Redis expires every key itself (no sweeping):
 *   spendOnce      SET <prefix>spent:<id> 1 NX EXAT <expiresAt>        → "OK" for exactly one caller, else nil
 *   startSession   SET <prefix>session:<sid> <jti> NX EXAT <expiresAt>  one key per session: its current refresh token
 *   rotateRefresh  EVAL (GET, compare, SET … KEEPTTL)                   → 1 only if <jti> was the current one
 *   revokeSession  SET <prefix>revoked:<sid> 1 EXAT <expiresAt>
 *   isRevoked      EXISTS <prefix>revoked:<sid>
 *   raiseFlag      SET <prefix>flag:<key> 1 EXAT <expiresAt>
 *   takeFlag       DEL <prefix>flag:<key>                               → 1 only if it was raised
 * A refresh rotation rewrites its session's key in place: a long refresh chain holds one key, not one per use.
 *
 * Redis must never evict: an evicted spent code could be redeemed again, an evicted revocation would
 * bring a session back. So the store refuses to start on a Redis that may evict (a maxmemory limit with
 * any maxmemory-policy but noeviction), and keeps checking while it runs (CONFIG SET can change a live
 * Redis): every 30 s, as soon as Redis refuses a write, and after each reconnection. While Redis may
 * evict, every call fails (the server answers 503); the first check that finds it safe again ends that.
 * Where CONFIG GET is not allowed (most managed Redis services) it cannot check: it says so once, and the
 * operator must set noeviction there.
 *
 * Fail closed: when Redis cannot answer, every method rejects — at once while disconnected (no offline
 * queue), within two seconds when Redis is connected but silent (a deadline per operation) — and the
 * server turns that into a 503, never a success. The client keeps reconnecting in the background, so
 * service resumes by itself once Redis is back.
 *
 *   const { store, close } = await createRedisStore("redis://127.0.0.1:6379");
 *   const srv = await startServer({ store, jwtSecret, publicUrl });
 */
import { clearInterval, setInterval } from "node:timers"; // node:timers so `.unref()` exists under Deno too
import { createClient, ErrorReply } from "redis";
import type { SingleUseStore } from "../server.ts";

/** The commands the store needs; a node-redis client (or cluster client) has them all. */
export interface RedisCommands {
  set(
    key: string,
    value: string,
    options: { condition?: "NX"; expiration: { type: "EXAT"; value: number } },
  ): Promise<unknown>;
  exists(key: string): Promise<number>;
  del(key: string): Promise<number>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

/**
 * rotateRefresh as one script, so no other instance can slip between the comparison and the write:
 * the session's current refresh token becomes the next one only if it is still the one presented.
 * KEEPTTL: a rotation never extends the session (its refresh lifetime is absolute).
 */
const ROTATE_REFRESH = `if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "KEEPTTL")
  return 1
end
return 0`;

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
  /** How often the eviction settings are read again while the store runs (ms). Default 30000. */
  evictionCheckIntervalMs?: number;
  /** Where connection problems are reported, one line per outage and one per recovery. Default console.error. */
  log?: (line: string) => void;
}

/** What the store asks of an eviction check (an EvictionWatch): the last verdict, and a fresh one. */
export interface EvictionCheck {
  /** Why the store must refuse, while the last check found a Redis that may evict; undefined otherwise. */
  readonly refusal: string | undefined;
  /** Reads the settings again; never rejects. */
  check(): Promise<void>;
}

export class RedisStore implements SingleUseStore {
  /** Redis remembers across restarts of the server (and, with persistence on, of Redis). */
  readonly durable = true;
  readonly #client: RedisCommands;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #eviction: EvictionCheck | undefined;

  constructor(
    client: RedisCommands,
    options: { prefix?: string; timeoutMs?: number; eviction?: EvictionCheck } = {},
  ) {
    this.#client = client;
    this.#prefix = options.prefix ?? "mcp-lazy-auth:";
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#eviction = options.eviction;
  }

  async spendOnce(id: string, expiresAt: number): Promise<boolean> {
    this.#refuseWhileEvicting();
    // NX makes this the one atomic check-and-set: across every instance, exactly one caller gets "OK".
    const reply = await this.#answer(this.#client.set(`${this.#prefix}spent:${id}`, "1", {
      condition: "NX",
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
    return reply === "OK";
  }

  async startSession(sid: string, refreshJti: string, expiresAt: number): Promise<void> {
    this.#refuseWhileEvicting();
    await this.#answer(this.#client.set(`${this.#prefix}session:${sid}`, refreshJti, {
      condition: "NX",
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
  }

  async rotateRefresh(sid: string, usedJti: string, nextJti: string): Promise<boolean> {
    this.#refuseWhileEvicting();
    const rotated = await this.#answer(this.#client.eval(ROTATE_REFRESH, {
      keys: [`${this.#prefix}session:${sid}`],
      arguments: [usedJti, nextJti],
    }));
    return rotated === 1;
  }

  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    // Written even while Redis may evict (a revocation that may be evicted later beats none), then refused.
    await this.#answer(this.#client.set(`${this.#prefix}revoked:${sid}`, "1", {
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
    this.#refuseWhileEvicting();
  }

  async isRevoked(sid: string): Promise<boolean> {
    this.#refuseWhileEvicting();
    return (await this.#answer(this.#client.exists(`${this.#prefix}revoked:${sid}`))) === 1;
  }

  async raiseFlag(key: string, expiresAt: number): Promise<void> {
    this.#refuseWhileEvicting();
    await this.#answer(this.#client.set(`${this.#prefix}flag:${key}`, "1", {
      expiration: { type: "EXAT", value: expiryFor(expiresAt) },
    }));
  }

  async takeFlag(key: string): Promise<boolean> {
    this.#refuseWhileEvicting();
    return (await this.#answer(this.#client.del(`${this.#prefix}flag:${key}`))) === 1;
  }

  /** While Redis may evict, a missing key proves nothing (it may have been evicted): fail, and the server says 503. */
  #refuseWhileEvicting(): void {
    const refusal = this.#eviction?.refusal;
    if (refusal) throw new Error(refusal);
  }

  /**
   * The reply within the deadline. When Redis itself refuses a command (say, out of memory), someone may have
   * changed maxmemory or its policy: the settings are read again before the error goes up, so the next call
   * already knows. (A timeout or a lost connection says nothing of that; the periodic check covers them.)
   */
  async #answer<T>(command: Promise<T>): Promise<T> {
    try {
      return await withDeadline(command, this.#timeoutMs);
    } catch (error) {
      if (error instanceof ErrorReply) await this.#eviction?.check();
      throw error;
    }
  }
}

/**
 * The reply, or a rejection once `ms` pass. The client's own command timeout only covers commands not
 * yet written; a command already sent to a Redis that stopped answering (paused, or cut off without a
 * TCP reset) would otherwise wait for as long as the socket stays open.
 * A spend that times out may still land later: the caller has already answered 503, so the code is lost
 * rather than honoured twice, which is the safe way round.
 */
async function withDeadline<T>(command: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([command, deadline]);
  } finally {
    clearTimeout(timer);
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
 * Whether Redis may evict keys. Eviction happens only under a maxmemory limit, and then by
 * maxmemory-policy: any policy but noeviction (allkeys-*, volatile-*) drops keys — spent codes and
 * revocations among them — to make room, silently undoing the rules they stand for. noeviction instead
 * refuses new writes when full: the server answers 503 and forgets nothing.
 */
type Eviction =
  | { kind: "safe" }
  | { kind: "evicting"; message: string }
  | { kind: "unknown"; reason: string }; // CONFIG GET is not allowed

type ConfigReader = { configGet(parameters: string[]): Promise<Record<string, string>> };

/** Reads the settings. Redis refusing CONFIG GET is an answer ("unknown"); an outage or a timeout rejects. */
async function readEviction(client: ConfigReader, where: string, timeoutMs: number): Promise<Eviction> {
  let config: Record<string, string>;
  try {
    config = await withDeadline(client.configGet(["maxmemory", "maxmemory-policy"]), timeoutMs);
  } catch (error) {
    if (error instanceof ErrorReply) return { kind: "unknown", reason: error.message };
    throw error;
  }
  const policy = config["maxmemory-policy"];
  if (policy === "noeviction" || Number(config.maxmemory) === 0) return { kind: "safe" };
  return {
    kind: "evicting",
    message: `Redis at ${where} may evict keys (maxmemory ${config.maxmemory}, maxmemory-policy ${policy}): ` +
      "an evicted spent code or revocation would be honoured again; set maxmemory-policy noeviction",
  };
}

/**
 * Keeps the eviction verdict current while the store runs, since CONFIG SET can switch a live Redis to an
 * evicting policy. One line when the store starts refusing and one when it serves again; where CONFIG GET
 * is not allowed, one warning in all, and the last verdict stands.
 */
export class EvictionWatch implements EvictionCheck {
  #refusal: string | undefined;
  #warned = false;
  #running: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly #client: ConfigReader;
  readonly #where: string;
  readonly #log: (line: string) => void;
  readonly #timeoutMs: number;

  constructor(client: ConfigReader, where: string, log: (line: string) => void, timeoutMs = 2000) {
    this.#client = client;
    this.#where = where;
    this.#log = log;
    this.#timeoutMs = timeoutMs;
  }

  get refusal(): string | undefined {
    return this.#refusal;
  }

  /** The check at startup: a Redis that may evict is refused outright (it throws, in one line). */
  async first(): Promise<void> {
    const eviction = await readEviction(this.#client, this.#where, this.#timeoutMs);
    if (eviction.kind === "evicting") throw new Error(eviction.message);
    this.#record(eviction);
  }

  /** Checks again every `intervalMs`; the timer is unref'd, so it never keeps the process alive. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => void this.check(), intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Callers arriving during a check share it: a burst of refused writes costs one CONFIG GET. */
  check(): Promise<void> {
    this.#running ??= readEviction(this.#client, this.#where, this.#timeoutMs)
      .then((eviction) => this.#record(eviction))
      .catch(() => {}) // Redis unreachable: every call fails anyway, and a later check decides
      .finally(() => (this.#running = undefined));
    return this.#running;
  }

  #record(eviction: Eviction): void {
    if (eviction.kind === "unknown") {
      if (!this.#warned) {
        this.#log(
          `[redis] ${this.#where}: CONFIG GET is not allowed (${eviction.reason}), so eviction cannot be checked: ` +
            "make sure maxmemory-policy is noeviction, or spent codes and revocations may be evicted",
        );
      }
      this.#warned = true;
    } else if (eviction.kind === "evicting") {
      if (!this.#refusal) this.#log(`[redis] ${eviction.message}; until then, requests that need the store answer 503`);
      this.#refusal = eviction.message;
    } else {
      if (this.#refusal) this.#log(`[redis] ${this.#where} no longer evicts keys; serving again`);
      this.#refusal = undefined;
    }
  }
}

/**
 * Connects to Redis (failing after a few attempts if it is unreachable), refuses one that may evict
 * keys and keeps watching for that, and returns the store, the underlying client (for health checks) and
 * `close`.
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
  const watch = new EvictionWatch(client, where, log, timeoutMs);

  // Without an 'error' listener, Node treats every connection error as fatal to the whole process.
  // One line when an outage starts and one when it ends, not one per reconnection attempt.
  client.on("error", (error: Error) => {
    if (outageReported) return;
    outageReported = true;
    log(`[redis] ${where} unavailable (${error.message || error.name}); requests that need it answer 503`);
  });
  client.on("ready", () => {
    if (outageReported) log(`[redis] ${where} reachable again`);
    if (outageReported && everReady) void watch.check(); // a restarted Redis may come back with other settings
    outageReported = false;
    everReady = true;
  });

  await client.connect();
  try {
    await watch.first();
  } catch (error) {
    client.destroy();
    throw error;
  }
  watch.start(options.evictionCheckIntervalMs ?? 30_000);

  return {
    store: new RedisStore(client, { prefix: options.prefix, timeoutMs, eviction: watch }),
    client,
    close: async () => {
      watch.stop();
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
