/**
 * A size check on server.ts, measured with the TypeScript compiler's own syntax tree: no function-like
 * node with a body (declaration, expression, arrow, method, accessor, constructor) may span more than
 * MAX_FUNCTION_LINES lines, and the module stays under MAX_FILE_LINES lines. A section that cannot be
 * lifted out whole is the problem this guards against; the numbers are a ceiling, not a budget.
 *
 *   npx tsx test/function-length.ts [file]     (default: server.ts; exit 1 naming every offender)
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const MAX_FUNCTION_LINES = 80;
// The re-layout aimed at 1,800; the third security round (the metadata-document fence, session spans) and the
// event stream with its trace took the module past it without cramming. This ceiling holds it where it is.
const MAX_FILE_LINES = 2200;

interface Measured {
  name: string;
  line: number; // 1-based line where the function starts (its first token, comments excluded)
  lines: number; // lines from its first token to its last, both included
}

/** What a reader would call the function: its own name, the name it is assigned to, or what holds it. */
function nameOf(node: ts.SignatureDeclaration, source: ts.SourceFile): string {
  if (ts.isConstructorDeclaration(node)) return "constructor";
  if (node.name) return node.name.getText(source);
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return parent.name.getText(source);
  }
  if (ts.isBinaryExpression(parent)) return parent.left.getText(source);
  if (ts.isCallExpression(parent) || ts.isNewExpression(parent)) {
    return `(callback to ${parent.expression.getText(source).slice(0, 40)})`;
  }
  return "(anonymous)";
}

function hasBody(node: ts.Node): node is ts.FunctionLikeDeclaration & { body: ts.Node } {
  return (ts.isFunctionDeclaration(node) || ts.isFunctionExpression(node) || ts.isArrowFunction(node) ||
    ts.isMethodDeclaration(node) || ts.isConstructorDeclaration(node) || ts.isGetAccessorDeclaration(node) ||
    ts.isSetAccessorDeclaration(node)) && node.body !== undefined;
}

/** Every function-like node with a body, nested ones included, with its span in lines. */
function measureFunctions(path: string, text: string): Measured[] {
  const source = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: Measured[] = [];
  const visit = (node: ts.Node) => {
    if (hasBody(node)) {
      const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      found.push({ name: nameOf(node, source), line: start + 1, lines: end - start + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The file's line count as an editor shows it (a final newline does not start another line). */
function lineCount(text: string): number {
  return text.length === 0 ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

function main(): number {
  const relative = process.argv[2] ?? "server.ts";
  const path = fileURLToPath(new URL(`../${relative}`, import.meta.url));
  const text = readFileSync(path, "utf8");
  const functions = measureFunctions(relative, text);
  const failures: string[] = [];
  for (const fn of functions.filter((f) => f.lines > MAX_FUNCTION_LINES)) {
    failures.push(`${relative}:${fn.line}: ${fn.name} spans ${fn.lines} lines (at most ${MAX_FUNCTION_LINES})`);
  }
  const lines = lineCount(text);
  if (lines >= MAX_FILE_LINES) failures.push(`${relative} has ${lines} lines (must stay under ${MAX_FILE_LINES})`);
  if (functions.length === 0) failures.push(`${relative}: no function found; is this the right file?`);
  if (failures.length > 0) {
    for (const failure of failures) console.error(failure);
    return 1;
  }
  const longest = functions.reduce((a, b) => (b.lines > a.lines ? b : a));
  console.log(
    `${relative}: ${lines} lines, ${functions.length} functions, the longest ${longest.name} ` +
      `(line ${longest.line}) spans ${longest.lines} lines (at most ${MAX_FUNCTION_LINES})`,
  );
  return 0;
}

process.exitCode = main();
