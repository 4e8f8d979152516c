// Every kernel variant the engine creates for the work it does — LoRA and full-parameter steps (dropout,
// activation checkpointing, steering), greedy and sampled decoding, split decoding at a long context — on
// dry-run devices shaped like a GPU and like a CPU adapter, at Qwen2.5's and Llama's shapes in bf16 and f32:
// the pipeline keys the op wrappers use, with their preprocessed WGSL. tests/tint_test.ts compiles each
// with Dawn's Tint; a variant only one compiler accepts is a portability bug.

import { Gpu } from "../lib/gpu/context.ts";
import type { GpuCaps } from "../lib/gpu/device.ts";
import { dryModel } from "../models/dry.ts";
import { generate } from "../models/generate.ts";
import { trainStepRecorder } from "./measure.ts";
import { type Hooks, layerVectors } from "../defence/hooks.ts";

export interface KernelVariant {
  name: string;
  entry: string;
  code: string;
}

/** The variants on devices with `limits` (a real device's caps: its workgroup memory, bindings, f16 decide
 * the tilings), shaped as a GPU and as a CPU adapter. */
export async function engineVariants(limits: Partial<GpuCaps> = {}): Promise<KernelVariant[]> {
  const all = new Map<string, KernelVariant>();
  const { description: _d, backend: _b, cpuAdapter: _c, timestamps: _t, ...shape } = limits;
  for (const cpuAdapter of [false, true]) {
    for (const [like, dtype] of [["qwen2.5-0.5b", "bf16"], ["llama-3.2-1b", "f32"]] as const) {
      const gpu = Gpu.dry({ ...shape, cpuAdapter });
      const m = dryModel(gpu, like, { layers: 2, dtype });
      // PPS and sign-forcing (the defences' hooks) in a step of their own
      const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
      const v = layerVectors(gpu, new Float32Array(L * d).fill(0.1), L, d, false, "steer");
      const u = layerVectors(gpu, new Float32Array(L * d).fill(0.1), L, d, true, "sign_force");
      const hooks: Hooks = {
        steer: [{ vectors: v, layers: [1], coef: 1.5 }],
        signForce: { vectors: u, layers: [1], mode: "attenuate" },
      };
      for (const o of [{ dropout: 0.05 }, { dropout: 0, checkpoint: true }, { dropout: 0.05, hooks }]) {
        trainStepRecorder(gpu, m, "lora", 2, 64, 8, o).record();
      }
      // full-parameter training needs f32 weights in one binding each (not a split 128K x 2048 embedding)
      if (dtype === "f32" && m.decoder.w.embed.chunks.length === 1) {
        trainStepRecorder(gpu, m, "full", 1, 16, 8).record();
      }
      await generate(m.decoder, [[5, 6, 7], [8, 9]], { maxNewTokens: 3 });
      await generate(m.decoder, Array.from({ length: 10 }, (_, i) => [5 + i, 6]), {
        maxNewTokens: 2,
        temperature: 1,
        topP: 0.9,
      });
      // a long context: split decoding (flash-decoding) with its merge on GPUs
      await generate(m.decoder, [Array.from({ length: 1100 }, (_, i) => 3 + (i % 100))], { maxNewTokens: 2 });
      for (const k of gpu.compiledKernels()) {
        if (!all.has(k.name)) {
          all.set(k.name, { name: k.name, entry: /^[\w.-]+:(\w+)/.exec(k.name)![1], code: k.code });
        }
      }
    }
  }
  return [...all.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}
