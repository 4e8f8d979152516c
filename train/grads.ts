// Per-sample gradients for analysis: the summed loss over a sample's loss tokens, dL/dh_l at every
// layer boundary (l = 0..L, after any hook), and optionally the LoRA parameter gradients.

import type { Model } from "../models/model.ts";
import { disposeSaved } from "../models/decoder.ts";
import { packBatch, type Sample } from "../lib/text/dataset.ts";
import { Tensor } from "../lib/tensor.ts";
import type { Hooks } from "../defence/hooks.ts";
import { backward } from "./backward.ts";
import { stepHooks } from "./step_hooks.ts";
import type { LoraSet } from "../models/lora.ts";

export interface SampleGradients {
  /** summed cross-entropy over the loss tokens */
  loss: number;
  /** 1 where the token is a loss target, [tokens] */
  mask: Float32Array;
  /** dL/dh_l, each [tokens, d], l = 0..L */
  gradH: Float32Array[];
  /** LoRA parameter gradients by PEFT name (when an adapter is given) */
  lora: Map<string, Float32Array>;
}

export async function sampleGradients(
  m: Model,
  s: Sample,
  o: { lora?: LoraSet | null; hooks?: Hooks; layers?: number[] } = {},
): Promise<SampleGradients> {
  const gpu = m.decoder.gpu;
  const b = packBatch([s]);
  const T = b.t;
  const layers = o.layers ?? Array.from({ length: m.cfg.numLayers + 1 }, (_, l) => l);
  if (o.lora) gpu.clear(o.lora.store.g, 0, o.lora.store.total * 4);
  const ex = stepHooks(gpu, { lora: o.lora, hooks: { ...o.hooks, captureGrads: layers }, rows: T });
  const { normed, saved } = m.decoder.forward({ ids: b.ids, batch: 1, t: T, save: true, extras: ex.forward });
  const lossT = backward(
    m.decoder,
    saved!,
    normed,
    { targets: b.targets, mask: b.mask, scale: 1 },
    ex.backward,
  );
  disposeSaved(saved!);
  // one submit for the loss, every dL/dh_l and every LoRA gradient
  const loraGrads = o.lora ? o.lora.store.entries.map((e) => e.grad) : [];
  const [lossRow, ...rest] = await Tensor.readMany(gpu, [
    lossT,
    ...layers.map((l) => ex.grads.get(l)!),
    ...loraGrads,
  ]);
  const loss = lossRow.reduce((a, x) => a + x, 0);
  const gradH = rest.slice(0, layers.length);
  const lora = new Map<string, Float32Array>();
  rest.slice(layers.length).forEach((g, i) => lora.set(o.lora!.store.entries[i].name, g));
  lossT.dispose();
  for (const t of ex.grads.values()) t.dispose();
  ex.dispose();
  return { loss, mask: Float32Array.from(s.lossMask), gradH, lora };
}
