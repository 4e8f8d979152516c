// A check of preprocessed WGSL for what GPUs punish and CPU adapters hide: private (function-scope) arrays
// indexed by anything but a constant. NVIDIA's compiler keeps such an array in local memory (global memory
// through L1) instead of registers, and CPU adapters keep it in memory; the hot kernels unroll their
// accumulators into named registers instead (#for in lib/gpu/preprocess.ts).

import { functionBodies, reachable } from "./bindings.ts";

/**
 * The private arrays indexed by a non-constant expression in the functions `entry` reaches (all of the
 * module's without an entry): "fn: name[expr]" each.
 */
export function dynamicPrivateArrays(code: string, entry?: string): string[] {
  const bodies = functionBodies(code.replace(/\/\/[^\n]*/g, ""));
  const out: string[] = [];
  for (const f of entry ? reachable(bodies, entry) : bodies.keys()) {
    const body = bodies.get(f)!;
    // var x: array<…>, var x = array<…>(…), let x = array<…>(…)
    const names = [...body.matchAll(/\b(?:var|let)\s+(\w+)\s*(?::\s*array\s*<|=\s*array\s*<)/g)].map((d) =>
      d[1]
    );
    for (const name of names) {
      for (const use of body.matchAll(new RegExp(`\\b${name}\\s*\\[([^\\]]*)\\]`, "g"))) {
        if (!/^\s*\d+u?\s*$/.test(use[1])) out.push(`${f}: ${name}[${use[1].trim()}]`);
      }
    }
  }
  return out;
}
