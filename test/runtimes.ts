// The runtimes the tests run on besides the machine's Node (through tsx) and Deno (a dev dependency):
// Node 24 running server.ts with its own type stripping, and Bun. Both are plain binaries from the npm
// registry, installed into .runtimes/ (ignored by git) for the tests only, never by `npm install`.
//
//   tsx test/runtimes.ts install            install the pinned versions (npm run runtimes; CI does it)
//   tsx test/runtimes.ts node24 <args...>   run Node 24 with <args>, or skip with one line when it is missing
//   tsx test/runtimes.ts bun <args...>      the same for Bun
//
// A missing binary is a skip for a contributor and a failure under CI (the CI variable set).
// The benchmark imports runtimeBinary() to run the server on the same binaries; the conformance run
// (test/conformance.ts) runs the official suite, which needs Node 22 or later, on this Node 24.

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FOLDER = join(ROOT, ".runtimes");

interface Runtime {
  name: string;
  /** The npm package holding this platform's binary, or null when there is none. */
  pkg: string | null;
  version: string;
  /** The binary's path inside the package. */
  bin: string;
}

const os = process.platform;
const arch = process.arch;
export const RUNTIMES: Record<"node24" | "bun", Runtime> = {
  node24: {
    name: "Node 24",
    pkg: os === "linux" && (arch === "x64" || arch === "arm64") ? `node-linux-${arch}` : null,
    version: "24.21.0",
    bin: "bin/node",
  },
  bun: {
    name: "Bun",
    pkg: (os === "linux" || os === "darwin") && (arch === "x64" || arch === "arm64")
      ? `@oven/bun-${os}-${arch === "arm64" ? "aarch64" : "x64"}`
      : null,
    version: "1.4.5",
    bin: "bin/bun",
  },
};

function installedVersion(runtime: Runtime): string | null {
  if (!runtime.pkg) return null;
  try {
    return JSON.parse(readFileSync(join(FOLDER, "node_modules", runtime.pkg, "package.json"), "utf8")).version;
  } catch {
    return null;
  }
}

function install(): number {
  const wanted = Object.values(RUNTIMES).filter((runtime) => installedVersion(runtime) !== runtime.version);
  for (const runtime of wanted.filter((runtime) => !runtime.pkg)) {
    console.log(`runtimes: no npm package for ${runtime.name} on ${os}-${arch}; its test run will be skipped`);
  }
  const specs = wanted.flatMap((runtime) => (runtime.pkg ? [`${runtime.pkg}@${runtime.version}`] : []));
  if (specs.length === 0) {
    console.log(`runtimes: ${Object.values(RUNTIMES).map((r) => `${r.name} ${r.version}`).join(", ")} in .runtimes/`);
    return 0;
  }
  console.log(`runtimes: installing ${specs.join(" ")} into .runtimes/`);
  const npm = spawnSync(
    "npm",
    ["install", "--prefix", FOLDER, "--no-save", "--no-package-lock", "--no-audit", "--no-fund", ...specs],
    { stdio: "inherit" },
  );
  return npm.status ?? 1;
}

/** The installed binary of a runtime, or null when it is not installed. */
export function runtimeBinary(key: keyof typeof RUNTIMES): string | null {
  const runtime = RUNTIMES[key];
  const binary = runtime.pkg ? join(FOLDER, "node_modules", runtime.pkg, runtime.bin) : null;
  return binary && existsSync(binary) ? binary : null;
}

/**
 * The installed binary of a runtime, or, when it is missing, the exit status to end with after one line
 * saying why: 0 (a skip) for a contributor, 1 under CI.
 */
export function binaryOrSkip(key: keyof typeof RUNTIMES, what = "its test run"): string | { status: number } {
  const runtime = RUNTIMES[key];
  const binary = runtimeBinary(key);
  if (binary) return binary;
  const why = runtime.pkg ? "not installed (npm run runtimes installs it)" : `no npm package for ${os}-${arch}`;
  if (process.env.CI) {
    console.error(`${runtime.name}: ${why}: failing, since CI is set`);
    return { status: 1 };
  }
  console.log(`${runtime.name}: ${why}: skipping ${what}`);
  return { status: 0 };
}

/** Runs the runtime's binary with `args` from the repository root; its exit status is ours. */
function run(key: keyof typeof RUNTIMES, args: string[]): number {
  const runtime = RUNTIMES[key];
  const binary = binaryOrSkip(key);
  if (typeof binary !== "string") return binary.status;
  const version = spawnSync(binary, ["--version"], { encoding: "utf8" }).stdout.trim();
  console.log(`${runtime.name} ${version}: ${args.join(" ")}`);
  const child = spawnSync(binary, args, { cwd: ROOT, stdio: "inherit" });
  return child.status ?? 1;
}

function main(command: string, args: string[]): number {
  if (command === "install") return install();
  if (command === "node24" || command === "bun") return run(command, args);
  console.error(`usage: tsx test/runtimes.ts install | ${Object.keys(RUNTIMES).join(" | ")} <args...>`);
  return 2;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2);
  process.exit(main(command, args));
}
