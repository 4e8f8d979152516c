// The layers of the tree, and that imports only go down them (issue 13). A module may import from its own
// layer or a lower one; an import against the layers fails here with the file, the import and both layers.
//   0 engine       lib/gpu, lib/ops, lib/text, lib/tensor, lib/safetensors, lib/vectors, lib/hooks,
//                  lib/rng, lib/fsutil, lib/stats, lib/config, lib/defence, lib/traits — GPU, kernels'
//                  wrappers, tensors, files, tokenizers, the config reader and the defence's config form
//   1 models       models/ — architectures, loading, configs
//   2 train        lib/train/, lib/generate.ts — optimisation and decoding on a model
//   3 research     the rest of lib/ — evaluation, activations, analyses, vectors' maths, judges, traits
//   4 world        world/ — the model organism: a data source for the experiments
//   5 experiments  experiments/ — the study's experiments, their configs and results
//   6 report       report/ — figures and pages from results
//   7 cli          cli/, bench/ — commands, the demo pipeline, benchmarks
//   8 main         main.ts

import { dirname, join, normalize, relative } from "node:path";
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const ENGINE_FILES = [
  "tensor",
  "safetensors",
  "vectors",
  "hooks",
  "rng",
  "fsutil",
  "stats",
  "config",
  "defence",
  "traits",
]
  .map((f) => `lib/${f}.ts`);

export function layerOf(file: string): [number, string] | null {
  if (/^lib\/(gpu|ops|text)\//.test(file) || ENGINE_FILES.includes(file)) return [0, "engine"];
  if (file.startsWith("models/")) return [1, "models"];
  if (file.startsWith("lib/train/") || file === "lib/generate.ts") return [2, "train"];
  if (file.startsWith("lib/")) return [3, "research"];
  if (file.startsWith("world/")) return [4, "world"];
  if (file.startsWith("experiments/")) return [5, "experiments"];
  if (file.startsWith("report/")) return [6, "report"];
  if (file.startsWith("cli/") || file.startsWith("bench/")) return [7, "cli"];
  if (file === "main.ts") return [8, "main"];
  return null;
}

function* sources(dir: string): Generator<string> {
  for (const e of Deno.readDirSync(join(ROOT, dir))) {
    const p = join(dir, e.name);
    if (e.isDirectory && !["node_modules", "tests", "runs", "kernels", "world/model"].includes(p)) {
      yield* sources(p);
    } else if (e.isFile && e.name.endsWith(".ts")) yield p;
  }
}

Deno.test("imports go down the layers only (engine → models → train → research → world → experiments → report → cli → main)", () => {
  const against: string[] = [];
  let files = 0;
  for (const file of sources(".")) {
    const from = layerOf(file);
    if (!from) continue;
    files++;
    for (const m of Deno.readTextFileSync(join(ROOT, file)).matchAll(/from\s+"(\.{1,2}\/[^"]+)"/g)) {
      const target = relative(ROOT, normalize(join(ROOT, dirname(file), m[1])));
      const to = layerOf(target);
      if (to && to[0] > from[0]) against.push(`${file} (${from[1]}) imports ${target} (${to[1]})`);
    }
  }
  assert.ok(files > 80, `only ${files} files seen`);
  assert.deepEqual(against, [], `imports against the layers:\n${against.join("\n")}`);
});

Deno.test("the layering test sees an import against the layers", () => {
  assert.deepEqual(layerOf("lib/ops/matmul.ts"), [0, "engine"]);
  assert.deepEqual(layerOf("lib/train/loop.ts"), [2, "train"]);
  assert.deepEqual(layerOf("lib/evaluation.ts"), [3, "research"]);
  assert.ok(
    layerOf("world/model.ts")![0] < layerOf("experiments/evaluate.ts")![0],
    "world sits below experiments",
  );
});
