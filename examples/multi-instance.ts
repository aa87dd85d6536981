/**
 * Two instances of the server behind one round-robin balancer, sharing what they must share:
 * the JWT secret (every token is a JWT any instance can verify) and a Redis single-use store
 * (spent codes and refresh tokens, revoked sessions). Nothing else is shared, or needed.
 *
 *   redis-server --save "" --appendonly no          # or any Redis you already run
 *   npx tsx examples/multi-instance.ts             # then point an MCP host at the printed URL
 *
 * Environment:
 *   REDIS_URL     default redis://127.0.0.1:6379
 *   JWT_SECRET    at least 32 bytes; default a random one, printed so more instances can join
 *   PORT          the balancer's port, default 3097 (the instances listen on free ports of their own)
 *   PUBLIC_URL    the one URL clients see, default http://127.0.0.1:PORT. Every instance must use the
 *                 same one: it is the issuer and the audience of every token, so a token issued by one
 *                 instance verifies at the others only if they all agree on it.
 *
 * The balancer is a few lines of node:http so the example runs on its own; in production it is
 * whatever already fronts your servers (nginx, a cloud load balancer), with no session affinity.
 */
import { createServer, request, type Server } from "node:http";
import { randomBytes } from "node:crypto";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type RunningServer, startServer } from "../server.ts";
import { createRedisStore } from "./redis-store.ts";

export interface ClusterOptions {
  redisUrl: string;
  jwtSecret: string;
  /** The URL clients see; default the balancer's own URL. */
  publicUrl?: string;
  /** The balancer's port; 0 picks a free one. */
  port?: number;
  /** How many instances; default 2. */
  instances?: number;
  host?: string;
  accessTokenTtlSeconds?: number;
  refreshTokenTtlSeconds?: number;
  log?: (line: string) => void;
}

export interface Cluster {
  /** The balancer's URL and the one every instance names as issuer (unless publicUrl says otherwise). */
  publicUrl: string;
  /** Each instance, reachable directly too (tests send to one or the other on purpose). */
  instances: RunningServer[];
  close(): Promise<void>;
}

/** Starts a balancer and the instances, each instance with its own Redis connection as it would in its own process. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const log = options.log ?? ((line: string) => console.log(line));
  const host = options.host ?? "127.0.0.1";
  const backends: RunningServer[] = [];
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const closeOne of closers.splice(0).reverse()) await closeOne();
  };

  try {
    // The balancer first: its address is the public URL the instances must be told about.
    const balancer = roundRobin(backends);
    await new Promise<void>((resolve, reject) => {
      balancer.once("error", reject).listen(options.port ?? 0, host, () => resolve());
    });
    closers.push(() =>
      new Promise<void>((resolve) => {
        balancer.close(() => resolve());
        balancer.closeAllConnections();
      })
    );
    const address = balancer.address();
    const port = typeof address === "object" && address ? address.port : options.port;
    const publicUrl = (options.publicUrl ?? `http://${host.includes(":") ? `[${host}]` : host}:${port}`).replace(
      /\/$/,
      "",
    );

    for (let i = 0; i < (options.instances ?? 2); i++) {
      const name = String.fromCharCode(65 + i); // A, B, …
      const redis = await createRedisStore(options.redisUrl, { log: (line) => log(`[${name}] ${line}`) });
      closers.push(redis.close);
      const instance = await startServer({
        port: 0,
        host,
        publicUrl,
        jwtSecret: options.jwtSecret,
        store: redis.store,
        accessTokenTtlSeconds: options.accessTokenTtlSeconds,
        refreshTokenTtlSeconds: options.refreshTokenTtlSeconds,
        log: (line) => log(`[${name}] ${line}`),
      });
      closers.push(instance.close);
      backends.push(instance);
    }
    return { publicUrl, instances: backends, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Forwards each request, in turn, to the next backend: no affinity, no retries. Demo only. */
function roundRobin(backends: RunningServer[]): Server {
  let next = 0;
  return createServer((req, res) => {
    if (backends.length === 0) return void res.writeHead(503).end();
    const target = new URL(backends[next++ % backends.length].url);
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502, { "content-type": "text/plain" }).end("backend unreachable\n");
    });
    req.pipe(upstream);
  });
}

async function main() {
  const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
  let jwtSecret = process.env.JWT_SECRET;
  if (!jwtSecret) {
    jwtSecret = randomBytes(32).toString("hex");
    console.log(`JWT_SECRET is not set; generated one. To add instances that share it:\n  JWT_SECRET=${jwtSecret}`);
  }
  const port = process.env.PORT ? Number(process.env.PORT) : 3097;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT must be a port number, got "${process.env.PORT}"`);
  }
  const cluster = await startCluster({ redisUrl, jwtSecret, port, publicUrl: process.env.PUBLIC_URL || undefined });
  console.log(
    `Balancer: ${cluster.publicUrl}/mcp  (round robin over ${cluster.instances.map((i) => i.url).join(", ")})`,
  );
  console.log(`Shared store: ${redisUrl.replace(/\/\/[^@/]*@/, "//***@")}`);
  const stop = () => void cluster.close().then(() => process.exit(0));
  process.once("SIGINT", stop).once("SIGTERM", stop);
}

// Run only when started directly, not when a test imports startCluster.
const isEntryPoint = (import.meta as ImportMeta & { main?: boolean }).main ??
  process.argv[1] === fileURLToPath(import.meta.url);
if (isEntryPoint) {
  main().catch((error: unknown) => {
    console.error(`Could not start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
