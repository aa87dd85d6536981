// The official MCP conformance suite (@modelcontextprotocol/conformance) against this server, once per
// specification revision it speaks: the suite's server requirements for 2025-11-25 (the initialize handshake)
// and for 2026-07-28 (stateless, per-request _meta), each at its own wire version. The server runs here, on a
// free loopback port; the suite needs Node 22 or later, so it runs on the Node 24 of test/runtimes.ts (missing:
// a skip for a contributor, a failure under CI).
//
//   tsx test/conformance.ts              both revisions
//   tsx test/conformance.ts 2026-07-28   one
//
// Checks written for the suite's own fixture server are listed, each with its reason, in
// test/conformance-expected-failures.yml. The suite's exit status is the verdict (it also fails on a listed
// check that passes); this file counts scenarios for the line it ends with, "conformance: N passed, N failed".
// A scenario all of whose own checks are fixture-only counts as neither, and so does one the revision does
// not score (extensions, pending ones: they run, and the suite reports them).

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../server.ts";
import { binaryOrSkip } from "./runtimes.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SUITE = join(ROOT, "node_modules", "@modelcontextprotocol", "conformance");
const BASELINE = join(ROOT, "test", "conformance-expected-failures.yml");
const REVISIONS = ["2025-11-25", "2026-07-28"];

interface Check {
  id: string;
  status: string; // SUCCESS, FAILURE, WARNING, SKIPPED, INFO
  errorMessage?: string;
  details?: { message?: string };
}

interface Tally {
  passed: number;
  failed: number;
  fixtureOnly: number;
  problems: string[]; // one line per check that failed without being listed
}

/** The `  - item` entries of one top-level `key:` list of a YAML file (all these files hold). */
function yamlList(path: string, key: string): string[] {
  const items: string[] = [];
  let inside = false;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (/^\S/.test(line)) inside = line.trim() === `${key}:`;
    const item = inside && /^ {2}- ([^\s#]+)/.exec(line);
    if (item) items.push(item[1]);
  }
  return items;
}

/** Runs the suite for one revision; resolves with its exit status and everything it printed. */
function runSuite(node: string, url: string, revision: string, outDir: string) {
  const args = [join(SUITE, "dist", "index.js"), "server", "--url", url, "--requirements", revision];
  args.push("--expected-failures", BASELINE, "--output-dir", outDir, "--timeout", "10000");
  const child = spawn(node, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  return new Promise<{ status: number; output: string }>((resolve) => {
    child.on("error", (error) => resolve({ status: 1, output: `${output}\n${error.message}` }));
    child.on("close", (code) => resolve({ status: code ?? 1, output }));
  });
}

/** The checks each scenario recorded, from the suite's output folder (server-<scenario>-<timestamp>/). */
function readResults(outDir: string): Map<string, Check[]> {
  const results = new Map<string, Check[]>();
  for (const entry of readdirSync(outDir).sort()) {
    const scenario = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(entry)?.[1];
    if (!scenario) continue;
    results.set(scenario, JSON.parse(readFileSync(join(outDir, entry, "checks.json"), "utf8")));
  }
  return results;
}

/** Counts the scored scenarios, and names each check that failed without being listed as fixture-only. */
function tally(results: Map<string, Check[]>, scored: string[], expected: Set<string>): Tally {
  const count: Tally = { passed: 0, failed: 0, fixtureOnly: 0, problems: [] };
  for (const scenario of scored) {
    const checks = results.get(scenario);
    if (!checks) {
      count.problems.push(`  ✗ ${scenario}: no results recorded`);
      count.failed++;
      continue;
    }
    const failing = checks.filter((check) => check.status === "FAILURE" || check.status === "WARNING");
    const unexpected = failing.filter((check) => !expected.has(`${scenario}:${check.id}`) && !expected.has(scenario));
    for (const check of unexpected) {
      const why = (check.errorMessage ?? check.details?.message ?? "").replace(/\s+/g, " ").slice(0, 600);
      count.problems.push(`  ✗ ${scenario}:${check.id} (${check.status}): ${why}`);
    }
    const own = checks.filter((check) => check.status === "SUCCESS" && check.id !== "wire-schema-valid");
    if (unexpected.length > 0) count.failed++;
    else if (own.length === 0 && failing.length > 0) count.fixtureOnly++;
    else count.passed++;
  }
  return count;
}

/** The end of the suite's output that says why it failed: stale entries, unexpected failures, or a crash. */
function verdict(output: string): string {
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const start = ["Stale baseline entries", "Unexpected failures (not in baseline)"]
    .map((heading) => plain.indexOf(heading))
    .filter((index) => index >= 0);
  if (start.length > 0) return plain.slice(Math.min(...start)).trimEnd();
  return plain.trimEnd().split("\n").slice(-40).join("\n");
}

async function runRevision(node: string, url: string, revision: string): Promise<Tally> {
  const outDir = mkdtempSync(join(tmpdir(), "conformance-"));
  try {
    const run = await runSuite(node, url, revision, outDir);
    const results = readResults(outDir);
    const scored = yamlList(join(SUITE, "requirements", `${revision}.yaml`), "server");
    const count = tally(results, scored, new Set(yamlList(BASELINE, "server")));
    const unscored = [...results.keys()].filter((scenario) => !scored.includes(scenario)).length;
    console.log(
      `conformance ${revision}: ${count.passed} passed, ${count.failed} failed; not applicable here:` +
        ` ${count.fixtureOnly} fixture-only, ${unscored} not scored for this revision`,
    );
    for (const problem of count.problems) console.log(problem);
    if (run.status !== 0 && (count.failed === 0 || run.output.includes("Stale baseline entries"))) {
      console.log(`the suite exited ${run.status}:\n${verdict(run.output)}`); // e.g. a listed check now passes
      count.failed ||= 1;
    }
    return count;
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

async function main(revisions: string[]): Promise<number> {
  const node = binaryOrSkip("node24", "the conformance suite");
  if (typeof node !== "string") {
    console.log(`conformance: 0 passed, ${node.status === 0 ? 0 : 1} failed, ${node.status === 0 ? 1 : 0} skipped`);
    return node.status;
  }
  const server = await startServer({ port: 0, host: "127.0.0.1", log: () => {} });
  const total = { passed: 0, failed: 0 };
  try {
    for (const revision of revisions) {
      const count = await runRevision(node, `${server.url}/mcp`, revision);
      total.passed += count.passed;
      total.failed += count.failed;
    }
  } finally {
    await server.close(0);
  }
  console.log(`conformance: ${total.passed} passed, ${total.failed} failed`);
  return total.failed > 0 ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const asked = process.argv.slice(2);
  const unknown = asked.filter((revision) => !REVISIONS.includes(revision));
  if (unknown.length > 0) {
    console.error(`usage: tsx test/conformance.ts [${REVISIONS.join(" | ")}]...`);
    process.exit(2);
  }
  process.exit(await main(asked.length > 0 ? asked : REVISIONS));
}
