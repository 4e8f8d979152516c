// `deno task bench:memory`: the GPU memory a LoRA step needs at a real model's shape, on any machine, without
// running it: the step is recorded at full depth on a dry-run device (lib/gpu/dry.ts, an H200's limits:
// 2 GiB bindings, which set the size of the logits' row blocks) with a shape-only model (models/dry.ts), and
// the engine's allocation is metered as it records (every buffer is allocated at record time). Reported with
// and without activation checkpointing (gradient_checkpointing: true).
//
//   deno task bench:memory [--like qwen2.5-7b] [--batch 4] [--len 512] [--rank 64]

import { parseArgs } from "node:util";
import { Gpu } from "../lib/gpu/context.ts";
import { dryModel } from "../models/dry.ts";
import { presetConfig } from "../models/random.ts";
import { trainStepRecorder } from "./measure.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    like: { type: "string" },
    batch: { type: "string" },
    len: { type: "string" },
    rank: { type: "string" },
  },
});
const int = (v: string | undefined, flag: string, d: number) => {
  const n = v === undefined ? d : Number(v);
  if (!/^\d+$/.test(v ?? String(d)) || !Number.isInteger(n) || n < 1) {
    console.error(`bench:memory: --${flag} expects a positive integer, got '${v}'`);
    Deno.exit(2);
  }
  return n;
};
const like = a.like ?? "qwen2.5-7b";
try {
  presetConfig(like);
} catch (e) {
  console.error(`bench:memory: ${(e as Error).message}`);
  Deno.exit(2);
}
const B = int(a.batch, "batch", 4), T = int(a.len, "len", 512), rank = int(a.rank, "rank", 64);
const GiB = 2 ** 30;

/** Peak engine allocation of one recorded LoRA step (dropout 0.05, as in training). */
export function stepPeak(checkpoint: boolean): { weights: number; peak: number; layers: number } {
  const gpu = Gpu.dry();
  const m = dryModel(gpu, like);
  const weights = gpu.memory.live;
  const step = trainStepRecorder(gpu, m, "lora", B, T, rank, { dropout: 0.05, checkpoint });
  step.record();
  return { weights, peak: gpu.memory.peak, layers: m.cfg.numLayers };
}

console.log(
  `${like}, LoRA r ${rank} on all projections, dropout 0.05, batch ${B} x ${T}: what the engine allocates ` +
    `for one training step (recorded on a dry-run device with an H200's limits; WebGPU reports no driver figure)`,
);
for (const checkpoint of [false, true]) {
  const r = stepPeak(checkpoint);
  console.log(
    `  gradient_checkpointing ${checkpoint ? "on " : "off"}: peak ${(r.peak / GiB).toFixed(1)} GiB ` +
      `(${(r.peak / 1e9).toFixed(1)} GB; weights ${(r.weights / GiB).toFixed(1)} GiB, ${r.layers} layers)`,
  );
}
