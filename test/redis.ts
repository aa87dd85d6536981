// A throwaway redis-server for the tests that need one (test/multi-instance.test.ts,
// test/elicitation.test.ts, test/reliability.test.ts), a free loopback port, and the check that decides
// whether those tests run: without redis-server on PATH they are skipped, unless CI is set, in which case
// they fail.

import { test } from "node:test";
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { createClient } from "redis";

/** Whether `redis-server` is on PATH. */
export const redisInstalled = spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;

/**
 * Declares `suites` (describe/test calls) when redis-server is installed. Without it, under CI, one test
 * that fails and says to install it (`purpose` ends its message: "to run the … tests"); elsewhere one
 * skipped test called `name`, skipped for `skip`.
 */
export function withRedis(
  without: { name: string; skip?: string; purpose?: string },
  suites: () => void,
): void {
  if (!redisInstalled && process.env.CI) {
    test("redis-server is installed (required when CI is set)", () => {
      const purpose = without.purpose === undefined ? "" : ` ${without.purpose}`;
      assert.fail(`redis-server is not on PATH: install it (apt-get install -y redis-server)${purpose}`);
    });
  } else if (!redisInstalled) {
    test(without.name, { skip: without.skip ?? "redis-server not found on PATH" }, () => {});
  } else {
    suites();
  }
}

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject).listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(
        () => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))),
      );
    });
  });
}

/**
 * A redis-server that cannot outlive this process: it runs under a small sh wrapper that stops it when
 * its stdin closes, which happens when stop() closes it and also when this process dies in any way
 * (a runner timeout, Ctrl-C, a crash), so no redis-server is ever left behind.
 */
export class RedisProcess {
  port = 0;
  #child: ChildProcess | undefined;
  #extraArgs: string[];

  /** `extraArgs`: more redis-server options, e.g. a maxmemory limit and policy. */
  constructor(extraArgs: string[] = []) {
    this.#extraArgs = extraArgs;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A connected client for checks and configuration; destroy() it when done. */
  async admin() {
    const client = createClient({ url: this.url });
    client.on("error", () => {});
    await client.connect();
    return client;
  }

  /**
   * Starts redis-server on `port` (a free one when not given; loopback, no persistence) and resolves once it
   * accepts connections.
   */
  async start(port?: number): Promise<void> {
    this.port = port ?? await freePort();
    const args = [
      ...["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmpdir()], // writes nothing
      ...this.#extraArgs,
    ];
    // fd 3 keeps the wrapper's stdin for the watcher: a background job's own stdin is /dev/null.
    const wrapper = 'exec 3<&0; redis-server "$@" & redis=$!; (read _ <&3; kill $redis 2>/dev/null) & wait $redis';
    const child = spawn("sh", ["-c", wrapper, "redis-test", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child = child;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${output}`)), 10_000);
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk;
        if (output.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr?.on("data", (chunk: Buffer) => (output += chunk));
      child.once("exit", (status) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${status}):\n${output}`));
      });
    });
  }

  /** Stops redis-server and waits until it has exited. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.stdin?.end(); // the wrapper stops redis-server (SIGTERM) and exits once it has
    await exited;
  }
}
