// Everything `npm test` checks, stage after stage, each stage's output kept (compact reporters: a dot per
// test, failures in full at the end of the stage), then one line per stage and one summary line over all of
// them, last: "total: N passed, N failed, N skipped". Every stage runs even when an earlier one failed; the
// exit status is 1 when anything failed.
//
//   tsx test/summary.ts                            every stage (npm test)
//   tsx test/summary.ts node deno                  those stages (npm run test:node is `summary.ts node`)
//   tsx test/summary.ts node test/security.test.ts the test stages on those files only
//
// Stages: fmt, lint, typecheck (each command one check), node (the machine's Node through tsx), deno,
// node24 and bun (test/runtimes.ts: a missing binary is a skip for a contributor, a failure under CI),
// conformance (test/conformance.ts). A tool that cannot start is a failure.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SOURCES = ["**/*.ts", "**/*.js", "**/*.mjs"];
const ALL_TESTS = [
  "server.test.ts",
  ...readdirSync(join(ROOT, "test")).filter((name) => name.endsWith(".test.ts"))
    .sort().map((name) => `test/${name}`),
];
const OTHER_RUNTIME_TESTS = ["server.test.ts", "test/sdk-v1.test.ts"];

interface Tally {
  passed: number;
  failed: number;
  skipped: number;
}

interface Run {
  status: number;
  output: string; // stdout and stderr as printed, colours removed
}

const none = (): Tally => ({ passed: 0, failed: 0, skipped: 0 });
// deno-lint-ignore no-control-regex
const plain = (text: string) => text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");

/** Rewrites a command's output on its way to the screen, a whole line at a time. */
interface LineFilter {
  line(text: string): string;
  end(): string;
}

/**
 * Runs one command from the repository root, printing what it prints as it comes (through `filter` when
 * given), and resolves with its status and output.
 */
function exec(command: string, args: string[], filter?: LineFilter): Promise<Run> {
  const shown = args.map((arg) => (/[\s*?'"$]/.test(arg) ? `'${arg}'` : arg));
  console.log(`$ ${[command, ...shown].join(" ")}`);
  const PATH = [join(ROOT, "node_modules", ".bin"), process.env.PATH].join(delimiter);
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { DENO_JOBS: "4", ...process.env, PATH, NO_COLOR: "1" }, // plain text: the output is read in logs as often as on screens
    stdio: ["ignore", "pipe", "pipe"],
    shell: process.platform === "win32", // npm's .cmd shims
  });
  let output = "";
  let partial = "";
  const print = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    if (!filter) return void process.stdout.write(text);
    const whole = (partial + text).split("\n");
    partial = whole.pop() ?? "";
    process.stdout.write(whole.map((line) => filter.line(line)).join(""));
  };
  child.stdout.on("data", print);
  child.stderr.on("data", print);
  return new Promise((resolve) => {
    child.on("error", (error) => {
      console.log(`${command}: ${error.message}`); // not installed, say
      resolve({ status: 1, output: `${output}\n${error.message}` });
    });
    child.on("close", (code) => {
      if (filter) process.stdout.write((partial ? filter.line(partial) : "") + filter.end());
      else if (output && !output.endsWith("\n")) process.stdout.write("\n");
      resolve({ status: code ?? 1, output: plain(output) });
    });
  });
}

/** A command that is one check: it passes when it exits 0. */
async function check(command: string, args: string[]): Promise<Tally> {
  const run = await exec(command, args);
  return { passed: run.status === 0 ? 1 : 0, failed: run.status === 0 ? 0 : 1, skipped: 0 };
}

/** Adds each tally of `parts` into the first. */
function add(total: Tally, ...parts: Tally[]): Tally {
  for (const part of parts) {
    total.passed += part.passed;
    total.failed += part.failed;
    total.skipped += part.skipped;
  }
  return total;
}

/**
 * The counts a test run reported, squared with its exit status: a run that failed with no failed test
 * counted (it crashed, or its tool is missing under CI) counts one failure; a run that reported nothing and
 * exited 0 (a runtime that is not installed) counts one skip.
 */
function settle(run: Run, counted: Tally | null): Tally {
  const tally = counted ?? none();
  if (run.status !== 0 && tally.failed === 0) {
    console.log(`exited ${run.status} with no failed test counted: one failure`);
    tally.failed = 1;
  }
  if (run.status === 0 && !counted) tally.skipped = 1;
  return tally;
}

const number = (text: string, pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);

/** Node's TAP totals, with each skipped test named (the dot reporter does not say why a test skipped). */
function nodeTally(tap: string): Tally | null {
  if (!/^# tests \d+/m.test(tap)) return null;
  const skips = new Set<string>();
  for (const match of tap.matchAll(/^\s*ok \d+ - (.*?) # SKIP(?: (.*))?$/gm)) {
    skips.add(`${match[1].replace(/\\#/g, "#")}${match[2] ? ` (${match[2]})` : ""}`);
  }
  for (const skip of skips) console.log(`skipped: ${skip}`);
  return {
    passed: number(tap, /^# pass (\d+)/m),
    failed: number(tap, /^# fail (\d+)/m) + number(tap, /^# cancelled (\d+)/m),
    skipped: number(tap, /^# skipped (\d+)/m) + number(tap, /^# todo (\d+)/m),
  };
}

/** Node's test runner (`runner`: the command and its leading arguments) with dots on screen, TAP to a file. */
async function nodeTests(runner: string[], files: string[]): Promise<Tally> {
  const folder = mkdtempSync(join(tmpdir(), "node-tests-"));
  const tapFile = join(folder, "report.tap");
  try {
    const reporters = ["--test-reporter=dot", "--test-reporter-destination=stdout"];
    reporters.push("--test-reporter=tap", `--test-reporter-destination=${tapFile}`);
    // The suites mostly wait on sockets, timers and child processes: four files (and four Deno workers) at a time keep two cores busy.
    const concurrency = "--test-concurrency=4";
    const run = await exec(runner[0], [...runner.slice(1), "--test", concurrency, ...reporters, ...files]);
    return settle(run, existsSync(tapFile) ? nodeTally(readFileSync(tapFile, "utf8")) : null);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

/** Deno's dot reporter writes each dot on its own line: they are gathered into lines of 100. */
function gatherDots(): LineFilter {
  let dots = 0;
  const close = () => {
    const open = dots % 100 !== 0;
    dots = 0;
    return open ? "\n" : "";
  };
  return {
    line(text) {
      if (!/^[.,!]$/.test(plain(text).trim())) return `${close()}${text}\n`;
      dots++;
      return text.trim() + (dots % 100 === 0 ? "\n" : "");
    },
    end: close,
  };
}

/**
 * Deno's closing line ("ok | 63 passed (421 steps) | 0 failed"). Deno runs a node:test file's describe
 * blocks as its tests and the tests inside them as steps: the steps are what Node counts, so they are
 * counted when there are any, the tests otherwise.
 */
function denoTally(output: string): Tally | null {
  const line = output.split("\n").reverse().find((text) => /^(ok|FAILED) \| \d+ passed/.test(text));
  if (!line) return null;
  const count = (word: string) =>
    number(line, new RegExp(`${word} \\((\\d+) steps?\\)`)) || number(line, new RegExp(`(\\d+) ${word}`));
  return { passed: count("passed"), failed: count("failed"), skipped: count("ignored") };
}

function bunTally(output: string): Tally | null {
  if (!/^Ran \d+ tests? across/m.test(output)) return null;
  return {
    passed: number(output, /^\s*(\d+) pass$/m),
    failed: number(output, /^\s*(\d+) fail$/m),
    skipped: number(output, /^\s*(\d+) skip$/m) + number(output, /^\s*(\d+) todo$/m),
  };
}

/** The line a runner of our own ends with: "<name>: N passed, N failed, N skipped". */
function ownTally(output: string, name: string): Tally | null {
  const pattern = new RegExp(`^${name}: (\\d+) passed, (\\d+) failed(?:, (\\d+) skipped)?$`, "m");
  const found = output.split("\n").reverse().map((line) => pattern.exec(line)).find(Boolean);
  return found ? { passed: Number(found[1]), failed: Number(found[2]), skipped: Number(found[3] ?? 0) } : null;
}

async function lint(): Promise<Tally> {
  const tally = await check("deno", ["lint", ...SOURCES]);
  if (existsSync(join(ROOT, "test", "function-length.ts"))) {
    return add(tally, await check("tsx", ["test/function-length.ts"]));
  }
  console.log("test/function-length.ts not found: function lengths not checked (one skip)");
  return add(tally, { passed: 0, failed: 0, skipped: 1 });
}

const STAGES: Record<string, (files: string[] | null) => Promise<Tally>> = {
  fmt: () => check("deno", ["fmt", "--check", "--line-width=120", ...SOURCES]),
  lint,
  typecheck: () => check("tsc", ["-p", "tsconfig.json"]),
  node: (files) => nodeTests(["tsx"], files ?? ALL_TESTS),
  deno: async (files) => {
    const args = ["test", "-A", "--no-check", "--node-modules-dir=manual", "--parallel", "--reporter=dot"];
    const run = await exec("deno", [...args, ...(files ?? ALL_TESTS)], gatherDots());
    return settle(run, denoTally(run.output));
  },
  node24: (files) => nodeTests(["tsx", "test/runtimes.ts", "node24"], files ?? OTHER_RUNTIME_TESTS),
  bun: async (files) => {
    const paths = (files ?? OTHER_RUNTIME_TESTS).map((file) => (file.startsWith(".") ? file : `./${file}`));
    const args = ["test/runtimes.ts", "bun", "test", "--timeout", "120000", "--only-failures"];
    const run = await exec("tsx", [...args, ...paths]);
    return settle(run, bunTally(run.output));
  },
  conformance: async () => {
    const run = await exec("tsx", ["test/conformance.ts"]);
    return settle(run, ownTally(run.output, "conformance"));
  },
};

const counts = (tally: Tally) => `${tally.passed} passed, ${tally.failed} failed, ${tally.skipped} skipped`;

async function main(args: string[]): Promise<number> {
  const unknown = args.filter((arg) => !Object.hasOwn(STAGES, arg) && !arg.endsWith(".ts"));
  if (unknown.length > 0) {
    console.error(`usage: tsx test/summary.ts [${Object.keys(STAGES).join(" | ")}]... [test files]...`);
    return 2;
  }
  const asked = args.filter((arg) => Object.hasOwn(STAGES, arg));
  const files = args.filter((arg) => arg.endsWith(".ts"));
  const results: [string, Tally, number][] = [];
  for (const name of asked.length > 0 ? asked : Object.keys(STAGES)) {
    console.log(`\n── ${name} ${"─".repeat(Math.max(0, 100 - name.length))}`);
    const started = performance.now();
    const tally = await STAGES[name](files.length > 0 ? files : null);
    results.push([name, tally, (performance.now() - started) / 1000]);
  }
  console.log(`\n── summary ${"─".repeat(94)}`);
  for (const [name, tally, seconds] of results) {
    console.log(`${name.padEnd(12)} ${counts(tally).padEnd(40)} ${seconds.toFixed(1).padStart(6)} s`);
  }
  const total = add(none(), ...results.map(([, tally]) => tally));
  console.log(`total: ${counts(total)}`);
  return total.failed > 0 ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exit(await main(process.argv.slice(2)));
