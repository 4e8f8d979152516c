// Merging a LoRA adapter into the base weights (PEFT's merge_and_unload): W += scale · B A for every adapted
// module, done while the checkpoint loads, so a chained fine-tuning (3.1: "independent fine-tunings starting
// from the models") trains a fresh adapter on the pre-finetuned model. B A is computed on the GPU (at 7B a
// layer's products are ~10 GFLOP) and added to the weight in f32, then stored in the weight's own dtype
// (bf16 rounding, as PEFT's merge of a bf16 model).

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { SafetensorsFile } from "../lib/safetensors.ts";
import { Tensor } from "../lib/tensor.ts";
import { matmul } from "../lib/ops/matmul.ts";
import type { ModelConfig } from "./config.ts";
import {
  checkAdapterTensors,
  type LoraConfig,
  loraScale,
  moduleParent,
  moduleShape,
  peftName,
  readAdapterConfig,
  readAdapterTensor,
} from "./lora.ts";

/** An adapter to merge: its folder, config, and per checkpoint weight name (model.layers.{l}.…weight) the
 * module's A [r, in] and B [out, r]. */
export interface MergeAdapter {
  dir: string;
  lora: LoraConfig;
  scale: number;
  modules: Map<string, { a: Float32Array; b: Float32Array; inF: number; outF: number }>;
}

/** Read an adapter folder for merging into a model of this config (shapes checked against it). */
export async function readMergeAdapter(dir: string, cfg: ModelConfig): Promise<MergeAdapter> {
  const lora = await readAdapterConfig(dir);
  const f = await SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
  const modules: MergeAdapter["modules"] = new Map();
  try {
    checkAdapterTensors(
      f,
      Array.from(
        { length: cfg.numLayers },
        (_, l) => lora.targetModules.flatMap((m) => [peftName(l, m, "A"), peftName(l, m, "B")]),
      ).flat(),
      cfg.numLayers,
    );
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const m of lora.targetModules) {
        const { inF, outF } = moduleShape(cfg, m);
        modules.set(`model.layers.${l}.${moduleParent(m)}.${m}.weight`, {
          a: await readAdapterTensor(f, peftName(l, m, "A"), [lora.r, inF], lora.r),
          b: await readAdapterTensor(f, peftName(l, m, "B"), [outF, lora.r], lora.r),
          inF,
          outF,
        });
      }
    }
  } finally {
    f.close();
  }
  return { dir, lora, scale: loraScale(lora), modules };
}

/** w [outF, inF] (f32, row-major) + scale · B A, computed on the GPU. */
export async function mergedWeight(
  gpu: Gpu,
  w: Float32Array,
  m: { a: Float32Array; b: Float32Array; inF: number; outF: number },
  scale: number,
): Promise<Float32Array> {
  const r = m.a.length / m.inF;
  const out = Tensor.fromF32(gpu, w, [m.outF, m.inF], "merge_w");
  const b = Tensor.fromF32(gpu, m.b, [m.outF, r], "merge_b");
  const a = Tensor.fromF32(gpu, m.a, [r, m.inF], "merge_a");
  try {
    // out [outF, inF] += scale · b [outF, r] · a [r, inF]  (a read as W in the [K, N] layout)
    matmul(gpu, { a: b, w: a, wLayout: "kn", M: m.outF, out, accumulate: true, alpha: scale });
    return await out.read(gpu);
  } finally {
    for (const t of [out, a, b]) t.dispose();
  }
}
