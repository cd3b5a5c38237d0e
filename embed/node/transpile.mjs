// Transpiles a decision component to JavaScript with jco:
//
//   node transpile.mjs <component.wasm> <out-dir>
//
// Output: <out-dir>/decider.js (an ES module exporting `decide`), decider.core.wasm and
// TypeScript declarations. Prints the time jco took.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [wasm, out] = process.argv.slice(2);
if (!wasm || !out) {
  console.error('usage: node transpile.mjs <component.wasm> <out-dir>');
  process.exit(2);
}
const jco = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', '.bin', 'jco');
const start = process.hrtime.bigint();
execFileSync(jco, ['transpile', wasm, '-o', out, '--name', 'decider', '--quiet'], {
  stdio: 'inherit',
});
const ms = Number(process.hrtime.bigint() - start) / 1e6;
console.log(`jco transpile ${wasm} -> ${out}: ${ms.toFixed(0)} ms`);
