// The layers of the tree, and that imports only go down them (issue 13). A module may import from its own
// layer or a lower one; an import against the layers fails here with the file, the import and both layers.
//   0 engine       lib/ — GPU, kernels' wrappers, tensors, parameter buffers, safetensors, tokenizers,
//                  datasets and trait files, the config reader
//   1 models       models/ — architectures, loading, generation, the LoRA adapter (its forward)
//   2 defence      defence/ — the defence (steering, sign-forcing, IP banks): its type and parser, persona
//                  vector files, and the hooks that apply it in a forward or backward pass
//   3 train        train/ — backward, LoRA's gradients, the optimiser loop, checkpoints, per-sample grads
//   4 research     research/ — evaluation, activations, gradient analyses, PCA, judges
//   5 world        world/ — the model organism: a data source for the experiments
//   6 experiments  experiments/ — the study's experiments, their configs and results
//   7 report       report/ — figures and pages from results
//   8 cli          cli/, bench/ — commands, the demo pipeline, benchmarks
//   9 main         main.ts
// Inference (generation, evaluation, activations) must not reach train/ at all, even through a layer that
// may import it: the second test follows imports transitively from those entry points.

import { dirname, join, normalize, relative } from "node:path";
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const LAYERS: [RegExp, string][] = [
  [/^lib\//, "engine"],
  [/^models\//, "models"],
  [/^defence\//, "defence"],
  [/^train\//, "train"],
  [/^research\//, "research"],
  [/^world\//, "world"],
  [/^experiments\//, "experiments"],
  [/^report\//, "report"],
  [/^(cli|bench)\//, "cli"],
  [/^main\.ts$/, "main"],
];

export function layerOf(file: string): [number, string] | null {
  const i = LAYERS.findIndex(([re]) => re.test(file));
  return i < 0 ? null : [i, LAYERS[i][1]];
}

/** The repository-relative files a source file imports (relative specifiers only). */
function importsOf(file: string): string[] {
  return [...Deno.readTextFileSync(join(ROOT, file)).matchAll(/(?:from|import\()\s*"(\.{1,2}\/[^"]+)"/g)]
    .map((m) => relative(ROOT, normalize(join(ROOT, dirname(file), m[1]))));
}

function* sources(dir: string): Generator<string> {
  for (const e of Deno.readDirSync(join(ROOT, dir))) {
    const p = join(dir, e.name);
    if (e.isDirectory && !["node_modules", "tests", "runs", "kernels", "world/model"].includes(p)) {
      yield* sources(p);
    } else if (e.isFile && e.name.endsWith(".ts")) yield p;
  }
}

Deno.test("imports go down the layers only (engine → models → defence → train → research → world → experiments → report → cli → main)", () => {
  const against: string[] = [];
  let files = 0;
  for (const file of sources(".")) {
    const from = layerOf(file);
    if (!from) continue;
    files++;
    for (const target of importsOf(file)) {
      const to = layerOf(target);
      if (to && to[0] > from[0]) against.push(`${file} (${from[1]}) imports ${target} (${to[1]})`);
    }
  }
  assert.ok(files > 80, `only ${files} files seen`);
  assert.deepEqual(against, [], `imports against the layers:\n${against.join("\n")}`);
});

Deno.test("nothing used at inference imports train/, directly or through another module", () => {
  const entries = [
    "cli/generate.ts",
    "research/evaluation.ts",
    "research/activations.ts",
    "research/judge/local.ts",
  ];
  const found: string[] = [];
  for (const entry of entries) {
    const seen = new Set<string>(), stack: [string, string[]][] = [[entry, [entry]]];
    while (stack.length) {
      const [file, path] = stack.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      if (file.startsWith("train/")) {
        found.push(path.join(" → "));
        continue;
      }
      for (const t of importsOf(file)) if (t.endsWith(".ts")) stack.push([t, [...path, t]]);
    }
    assert.ok(seen.size > 5, `${entry}: only ${seen.size} modules reached`);
  }
  assert.deepEqual(found, [], `inference reaches train/:\n${found.join("\n")}`);
});

Deno.test("the layering test sees an import against the layers", () => {
  assert.deepEqual(layerOf("lib/ops/matmul.ts"), [0, "engine"]);
  assert.deepEqual(layerOf("train/loop.ts"), [3, "train"]);
  assert.deepEqual(layerOf("research/evaluation.ts"), [4, "research"]);
  assert.ok(layerOf("defence/hooks.ts")![0] < layerOf("train/loop.ts")![0], "defence sits below train");
  assert.equal(layerOf("tests/helpers.ts"), null);
  assert.ok(
    layerOf("world/model.ts")![0] < layerOf("experiments/evaluate.ts")![0],
    "world sits below experiments",
  );
});
