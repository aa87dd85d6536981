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
//
// Stages of one group (GROUPS) run at the same time; the groups run one after another. Each stage's output
// is still printed whole and in the order above: a stage waiting its turn keeps what it prints until then.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SOURCES = ["**/*.ts", "**/*.js", "**/*.mjs"];
/**
 * The test files that take longest, longest first (measured alone and four at a time, on Node and Deno). The
 * node stage (test/node-tests.ts) and Deno start files in the order given, so the long ones start at once
 * rather than last, alone at the end; Deno runs server.test.ts, outside test/, after the others whatever the
 * order.
 */
const SLOWEST_FIRST = [
  "test/security.test.ts",
  "test/fuzz.test.ts",
  "test/reliability.test.ts",
  "test/flow-page.test.ts",
  "server.test.ts",
  "test/races.test.ts",
  "test/multi-instance.test.ts",
  "test/browser.test.ts",
  "test/elicitation.test.ts",
];
const ALL_TESTS = [
  "server.test.ts",
  ...readdirSync(join(ROOT, "test")).filter((name) => name.endsWith(".test.ts"))
    .sort().map((name) => `test/${name}`),
].sort((a, b) => rank(a) - rank(b));
const OTHER_RUNTIME_TESTS = ["server.test.ts", "test/sdk-v1.test.ts"];
/**
 * The stages that run at the same time. The checks and the short runs on Node 24, Bun and the conformance
 * suite mostly wait (on tsc's one thread, on sockets and timers): together they take about as long as the
 * type check alone. The node and deno stages keep two cores busy by themselves, so each runs alone.
 */
const GROUPS = [["fmt", "lint", "typecheck", "node24", "bun", "conformance"], ["node"], ["deno"]];

function rank(file: string): number {
  const index = SLOWEST_FIRST.indexOf(file);
  return index < 0 ? SLOWEST_FIRST.length : index;
}

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

/**
 * Where one stage prints: the screen while it is the stage being shown, else kept until its turn comes
 * (see Screen).
 */
interface Out {
  write(text: string): void;
}

const line = (out: Out, text: string) => out.write(`${text}\n`);

/** Rewrites a command's output on its way to the screen, a whole line at a time. */
interface LineFilter {
  line(text: string): string;
  end(): string;
}

/**
 * Runs one command from the repository root, printing what it prints as it comes (through `filter` when
 * given), and resolves with its status and output.
 */
function exec(out: Out, command: string, args: string[], filter?: LineFilter): Promise<Run> {
  const shown = args.map((arg) => (/[\s*?'"$]/.test(arg) ? `'${arg}'` : arg));
  line(out, `$ ${[command, ...shown].join(" ")}`);
  const PATH = [join(ROOT, "node_modules", ".bin"), process.env.PATH].join(delimiter);
  const child = spawn(command, args, {
    cwd: ROOT,
    // NO_COLOR: plain text, since the output is read in logs as often as on screens.
    env: { DENO_JOBS: "4", ...process.env, PATH, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
    shell: process.platform === "win32", // npm's .cmd shims
  });
  let output = "";
  let partial = "";
  const print = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    if (!filter) return void out.write(text);
    const whole = (partial + text).split("\n");
    partial = whole.pop() ?? "";
    out.write(whole.map((text) => filter.line(text)).join(""));
  };
  child.stdout.on("data", print);
  child.stderr.on("data", print);
  return new Promise((resolve) => {
    child.on("error", (error) => {
      line(out, `${command}: ${error.message}`); // not installed, say
      resolve({ status: 1, output: `${output}\n${error.message}` });
    });
    child.on("close", (code) => {
      if (filter) out.write((partial ? filter.line(partial) : "") + filter.end());
      else if (output && !output.endsWith("\n")) out.write("\n");
      resolve({ status: code ?? 1, output: plain(output) });
    });
  });
}

/** A command that is one check: it passes when it exits 0. */
async function check(out: Out, command: string, args: string[]): Promise<Tally> {
  const run = await exec(out, command, args);
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
function settle(out: Out, run: Run, counted: Tally | null): Tally {
  const tally = counted ?? none();
  if (run.status !== 0 && tally.failed === 0) {
    line(out, `exited ${run.status} with no failed test counted: one failure`);
    tally.failed = 1;
  }
  if (run.status === 0 && !counted) tally.skipped = 1;
  return tally;
}

const number = (text: string, pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);

/** Node's TAP totals, with each skipped test named (the dot reporter does not say why a test skipped). */
function nodeTally(out: Out, tap: string): Tally | null {
  if (!/^# tests \d+/m.test(tap)) return null;
  const skips = new Set<string>();
  for (const match of tap.matchAll(/^\s*ok \d+ - (.*?) # SKIP(?: (.*))?$/gm)) {
    skips.add(`${match[1].replace(/\\#/g, "#")}${match[2] ? ` (${match[2]})` : ""}`);
  }
  for (const skip of skips) line(out, `skipped: ${skip}`);
  return {
    passed: number(tap, /^# pass (\d+)/m),
    failed: number(tap, /^# fail (\d+)/m) + number(tap, /^# cancelled (\d+)/m),
    skipped: number(tap, /^# skipped (\d+)/m) + number(tap, /^# todo (\d+)/m),
  };
}

/**
 * Node's test runner with dots on screen, TAP to a file: `runner` is the command and its leading arguments,
 * before `--test`, or test/node-tests.ts (the same runner, the files started in the order given).
 */
async function nodeTests(out: Out, runner: string[], files: string[]): Promise<Tally> {
  const folder = mkdtempSync(join(tmpdir(), "node-tests-"));
  const tapFile = join(folder, "report.tap");
  try {
    // The suites mostly wait on sockets, timers and child processes: four files (and four Deno workers) at a
    // time keep two cores busy.
    const concurrency = 4;
    const reporters = ["--test-reporter=dot", "--test-reporter-destination=stdout"];
    reporters.push("--test-reporter=tap", `--test-reporter-destination=${tapFile}`);
    const args = runner.at(-1) === "test/node-tests.ts"
      ? [String(concurrency), tapFile]
      : ["--test", `--test-concurrency=${concurrency}`, ...reporters];
    const run = await exec(out, runner[0], [...runner.slice(1), ...args, ...files]);
    return settle(out, run, existsSync(tapFile) ? nodeTally(out, readFileSync(tapFile, "utf8")) : null);
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

async function lint(out: Out): Promise<Tally> {
  const tally = await check(out, "deno", ["lint", ...SOURCES]);
  if (existsSync(join(ROOT, "test", "function-length.ts"))) {
    return add(tally, await check(out, "tsx", ["test/function-length.ts"]));
  }
  line(out, "test/function-length.ts not found: function lengths not checked (one skip)");
  return add(tally, { passed: 0, failed: 0, skipped: 1 });
}

const STAGES: Record<string, (out: Out, files: string[] | null) => Promise<Tally>> = {
  fmt: (out) => check(out, "deno", ["fmt", "--check", "--line-width=120", ...SOURCES]),
  lint,
  typecheck: (out) => check(out, "tsc", ["-p", "tsconfig.json"]),
  node: (out, files) => nodeTests(out, ["tsx", "test/node-tests.ts"], files ?? ALL_TESTS),
  deno: async (out, files) => {
    const args = ["test", "-A", "--no-check", "--node-modules-dir=manual", "--parallel", "--reporter=dot"];
    const run = await exec(out, "deno", [...args, ...(files ?? ALL_TESTS)], gatherDots());
    return settle(out, run, denoTally(run.output));
  },
  node24: (out, files) => nodeTests(out, ["tsx", "test/runtimes.ts", "node24"], files ?? OTHER_RUNTIME_TESTS),
  bun: async (out, files) => {
    const paths = (files ?? OTHER_RUNTIME_TESTS).map((file) => (file.startsWith(".") ? file : `./${file}`));
    const args = ["test/runtimes.ts", "bun", "test", "--timeout", "120000", "--only-failures"];
    const run = await exec(out, "tsx", [...args, ...paths]);
    return settle(out, run, bunTally(run.output));
  },
  conformance: async (out) => {
    const run = await exec(out, "tsx", ["test/conformance.ts"]);
    return settle(out, run, ownTally(run.output, "conformance"));
  },
};

/**
 * The screen, shared by stages running at the same time: it shows one stage at a time, in the order the
 * stages were asked for, as that stage prints; the others' output is kept, and shown whole when their turn
 * comes (at once, when they finished meanwhile).
 */
class Screen {
  #order: string[];
  #kept = new Map<string, string>();
  #finished = new Set<string>();
  #shown = 0; // the index in #order of the stage on screen

  constructor(order: string[]) {
    this.#order = order;
  }

  out(name: string): Out {
    return { write: (text) => this.#write(name, text) };
  }

  finish(name: string) {
    this.#finished.add(name);
    while (this.#shown < this.#order.length && this.#finished.has(this.#order[this.#shown])) {
      this.#shown++;
      const next = this.#order[this.#shown];
      if (next === undefined) break;
      process.stdout.write(this.#kept.get(next) ?? "");
      this.#kept.delete(next);
    }
  }

  #write(name: string, text: string) {
    if (this.#order[this.#shown] === name) process.stdout.write(text);
    else this.#kept.set(name, (this.#kept.get(name) ?? "") + text);
  }
}

const counts = (tally: Tally) => `${tally.passed} passed, ${tally.failed} failed, ${tally.skipped} skipped`;

async function main(args: string[]): Promise<number> {
  const unknown = args.filter((arg) => !Object.hasOwn(STAGES, arg) && !arg.endsWith(".ts"));
  if (unknown.length > 0) {
    console.error(`usage: tsx test/summary.ts [${Object.keys(STAGES).join(" | ")}]... [test files]...`);
    return 2;
  }
  const asked = args.filter((arg) => Object.hasOwn(STAGES, arg));
  const files = args.filter((arg) => arg.endsWith(".ts"));
  const names = asked.length > 0 ? asked : Object.keys(STAGES);
  const screen = new Screen(names);
  const results = new Map<string, [Tally, number]>();
  const started = performance.now();
  const runStage = async (name: string) => {
    const out = screen.out(name);
    line(out, `\n── ${name} ${"─".repeat(Math.max(0, 100 - name.length))}`);
    const began = performance.now();
    const tally = await STAGES[name](out, files.length > 0 ? files : null);
    results.set(name, [tally, (performance.now() - began) / 1000]);
    screen.finish(name);
  };
  const alone = names.filter((name) => !GROUPS.flat().includes(name)).map((name) => [name]); // none, today
  for (const group of [...GROUPS, ...alone]) {
    await Promise.all(group.filter((name) => names.includes(name)).map(runStage));
  }
  const wall = (performance.now() - started) / 1000;
  console.log(`\n── summary ${"─".repeat(94)}`);
  for (const name of names) {
    const [tally, seconds] = results.get(name) ?? [none(), 0];
    console.log(`${name.padEnd(12)} ${counts(tally).padEnd(40)} ${seconds.toFixed(1).padStart(6)} s`);
  }
  console.log(`${"wall time".padEnd(53)} ${wall.toFixed(1).padStart(6)} s (the stages of a group run at once)`);
  const total = add(none(), ...[...results.values()].map(([tally]) => tally));
  console.log(`total: ${counts(total)}`);
  return total.failed > 0 ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exit(await main(process.argv.slice(2)));
