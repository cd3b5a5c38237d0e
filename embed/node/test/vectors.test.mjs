// Cross-host check: the decision component transpiled by jco, run in Node, must give exactly
// the results the Rust host (wasmtime) recorded in the vectors file.
//
// Every directory below $VAPGEN_NODE_WORK (default ../generated) that holds decider.wasm,
// vectors.json and js/ (as run-test.sh lays them out) is one module under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { canonical, constraintIn, load, planKind, settingsIn } from '../decider.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const work = resolve(process.env.VAPGEN_NODE_WORK ?? join(here, '..', 'generated'));
const modules = existsSync(work)
  ? readdirSync(work, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(work, d.name, 'vectors.json')))
    .map((d) => join(work, d.name))
  : [];

test('there is at least one module to check', () => {
  assert.ok(modules.length > 0, `no module under ${work}; run ./run-test.sh`);
});

for (const dir of modules) {
  const file = JSON.parse(readFileSync(join(dir, 'vectors.json'), 'utf8'));
  assert.equal(file.format, 'vapgen-decision-vectors/v1');
  const decide = await load(join(dir, 'js'));
  const name = file.module.info.name;

  test(`${name}: the transpiled component is the one the Rust host ran`, () => {
    const wasm = readFileSync(join(dir, 'decider.wasm'));
    assert.equal(createHash('sha256').update(wasm).digest('hex'), file.module.sha256);
  });

  test(`${name}: describe()`, () => {
    assert.deepEqual(canonical(decide.describe()), canonical(file.module.info));
  });

  for (const v of file.vectors) {
    test(`${name}: ${v.suite} / ${v.case}`, () => {
      const got = planKind(
        decide,
        settingsIn(v.settings),
        v.template,
        v.constraints.map(constraintIn),
      );
      assert.deepEqual(canonical(got), canonical(v.expected));
    });
  }
}
