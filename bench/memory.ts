// `deno task bench:memory`: the GPU memory a LoRA step needs at a real model's shape, on any adapter,
// without running it. Random models of the shape cut to 1 and 2 layers are loaded, one training step is
// recorded but never submitted (the engine allocates every buffer at record time), and the engine's
// allocation is extrapolated to the full depth: peak(1) + (L - 1) * (peak(2) - peak(1)).
// The binding limit is raised to the H200's 2 GiB (the logits are computed in row blocks that fit one
// binding, so the limit sets their size); nothing is executed, so the CPU adapter's own limit never bites.
//
//   deno task bench:memory [--like qwen2.5-7b] [--batch 4] [--len 512] [--rank 64]

import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { Gpu } from "../lib/gpu/context.ts";
import { loadModel } from "../models/model.ts";
import { presetConfig, writeRandomModel } from "../models/random.ts";
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
const like = a.like ?? "qwen2.5-7b",
  B = Number(a.batch ?? 4),
  T = Number(a.len ?? 512),
  rank = Number(a.rank ?? 64);
const layers = presetConfig(like).num_hidden_layers as number;
const tokenizer = fileURLToPath(new URL("../../shared/models/qwen3-tokenizer", import.meta.url));
const tmp = await Deno.makeTempDir({ prefix: "bench-memory-" });
const GiB = 2 ** 30;
try {
  const peaks: number[] = [];
  for (const n of [1, 2]) {
    const dir = join(tmp, `l${n}`);
    await writeRandomModel({ like, dtype: "bf16", out: dir, layers: n, tokenizer });
    const gpu = await Gpu.create({ profiler: null });
    (gpu.caps as { maxBindingBytes: number }).maxBindingBytes = 2 * GiB;
    const m = await loadModel(gpu, dir, { tokenizer: false });
    const weights = gpu.memory.live;
    // dropout 0.05 as in training (the study's default): its masks are recomputed, not kept
    const step = trainStepRecorder(gpu, m, "lora", B, T, rank, 0.05);
    step.record(); // recorded, never submitted
    peaks.push(gpu.memory.peak);
    console.log(
      `${like} cut to ${n} layer(s): weights ${(weights / GiB).toFixed(2)} GiB, peak during one LoRA step ` +
        `(r ${rank}, batch ${B} x ${T}) ${(gpu.memory.peak / GiB).toFixed(2)} GiB`,
    );
    gpu.destroy();
    await Deno.remove(dir, { recursive: true });
  }
  const perLayer = peaks[1] - peaks[0];
  const total = peaks[0] + (layers - 1) * perLayer;
  console.log(
    `per layer ${(perLayer / GiB).toFixed(3)} GiB → ${like} at ${layers} layers: ${
      (total / GiB).toFixed(1)
    } GiB ` +
      `(${(total / 1e9).toFixed(1)} GB) allocated by the engine for a LoRA step`,
  );
} finally {
  await Deno.remove(tmp, { recursive: true });
}
