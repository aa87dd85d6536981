// Node's test runner over the files given, started in the order given, as `node --test` would run them but
// for the order: Node 20's `--test` sorts its files by path, so a long file named late starts last and ends
// alone. test/summary.ts lists the slowest files first and runs them through this (the node stage).
//
//   tsx test/node-tests.ts <concurrency> <TAP file> <test files>...
//
// Dots on stdout, TAP into the file; the exit status is 1 when a test failed (or a file could not run).

import { createWriteStream } from "node:fs";
import process from "node:process";
import { run } from "node:test";
import { dot, tap } from "node:test/reporters";
import { fileURLToPath } from "node:url";

function main(args: string[]) {
  const [concurrency, tapFile, ...files] = args;
  if (!/^\d+$/.test(concurrency ?? "") || !tapFile || files.length === 0) {
    console.error("usage: tsx test/node-tests.ts <concurrency> <TAP file> <test files>...");
    process.exit(2);
  }
  // Each file runs in its own process, started with this one's flags (tsx's loader among them).
  const stream = run({ files, concurrency: Number(concurrency) });
  stream.on("test:fail", (event: { todo?: unknown }) => {
    if (event.todo === undefined || event.todo === false) process.exitCode = 1;
  });
  stream.compose(dot).pipe(process.stdout);
  stream.compose(tap).pipe(createWriteStream(tapFile));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
