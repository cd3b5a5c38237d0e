// Calling a transpiled vapgen decision component from JavaScript.
//
// jco maps the WIT contract (wit/decider.wit) to JavaScript like this:
//   record          -> object, fields in camelCase (default-failure-policy -> defaultFailurePolicy)
//   enum            -> string with the WIT case name ('fail', 'dryrun', 'no-intent')
//   variant         -> { tag: '<case>', val: <payload> } (no `val` for cases without payload)
//   option<T>       -> the value, or undefined for none
//   u64             -> BigInt
//   result<T, E>    -> T is returned; E is thrown as an Error whose `payload` is E
// A trap (a bug in the module) is thrown as a WebAssembly.RuntimeError without `payload`.

import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Loads a transpiled component (the directory given to `jco transpile -o`, output name
 * `decider`) and returns its `decide` interface.
 */
export async function load(dir) {
  const mod = await import(pathToFileURL(join(dir, 'decider.js')).href);
  return mod.decide;
}

/** `plan-kind` as a WIT result: `{tag: 'ok', val: kindPlan}` or `{tag: 'err', val: planError}`. */
export function planKind(decide, settings, template, constraints) {
  try {
    return { tag: 'ok', val: decide.planKind(settings, template, constraints) };
  } catch (e) {
    if (e && Object.prototype.hasOwnProperty.call(e, 'payload')) {
      return { tag: 'err', val: e.payload };
    }
    throw e;
  }
}

/**
 * Converts vector JSON (WIT shape, see host/examples/support/vectors.rs: `null` for none, u64
 * as a decimal string) into jco's arguments (undefined for none, BigInt for u64).
 */
export function settingsIn(s) {
  return {
    defaultCreateVapForTemplates: s.defaultCreateVapForTemplates,
    defaultCreateVapBindingForConstraints: s.defaultCreateVapBindingForConstraints,
    defaultFailurePolicy: s.defaultFailurePolicy,
    scopeSync: s.scopeSync == null ? undefined : {
      webhook: s.scopeSync.webhook ?? undefined,
      excludedNamespaces: s.scopeSync.excludedNamespaces,
      exemptNamespaces: s.scopeSync.exemptNamespaces,
    },
  };
}

/** See settingsIn. */
export function constraintIn(c) {
  return {
    name: c.name,
    uid: c.uid,
    generation: BigInt(c.generation),
    enforcementAction: c.enforcementAction ?? undefined,
    scopedEnforcementActions: c.scopedEnforcementActions ?? undefined,
    labelSelector: c.labelSelector ?? undefined,
    namespaceSelector: c.namespaceSelector ?? undefined,
    malformed: c.malformed,
  };
}

/**
 * A canonical form for comparing values across hosts: null, undefined and absent members
 * are the same; BigInt becomes a decimal string; object keys are sorted.
 */
export function canonical(v) {
  if (v === undefined || v === null) return null;
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(canonical);
  if (typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v).sort()) {
      const c = canonical(v[k]);
      if (c !== null) out[k] = c;
    }
    return out;
  }
  return v;
}
