// `grads`: per-sample loss, loss mask, dL/dh_l at every layer and LoRA gradients → one safetensors file.

import { steerHook } from "../defence/hooks.ts";
import { loadModel } from "../models/model.ts";
import { LoraSet } from "../models/lora.ts";
import { sampleGradients } from "../train/grads.ts";
import { encodeRecord, readJsonl, type Sample, withInoculation } from "../lib/text/dataset.ts";
import { type TensorToWrite, writeSafetensors } from "../lib/safetensors.ts";
import { need, parseNumber, parseTokenList, startGpu, steerFromFlags, UsageError } from "./common.ts";

export async function gradsCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const dir = need(a.model as string, "model", "grads");
  const out = need(a.out as string, "out", "grads");
  if (!!a.data === !!a.tokens) throw new UsageError("grads: give exactly one of --data or --tokens");
  const tokens = a.tokens ? parseTokenList(a.tokens as string, "tokens") : null;
  const limit = a.limit === undefined
    ? undefined
    : parseNumber(a.limit as string, "limit", 0, { int: true, min: 1 });
  const spec = steerFromFlags(a, "grads");
  const gpu = await startGpu();
  const m = await loadModel(gpu, dir);
  const lora = a.adapter ? await LoraSet.load(gpu, m.cfg, a.adapter as string) : null;
  const d = m.cfg.hiddenSize;
  const hooks = spec ? { steer: [{ ...await steerHook(gpu, m.cfg, spec), mode: undefined }] } : {};
  let samples: Sample[];
  if (tokens) {
    samples = [{ line: 0, ids: tokens, lossMask: tokens.map((_, i) => (i === 0 ? 0 : 1)), truncated: false }];
  } else {
    const recs = await readJsonl(a.data as string, { limit });
    samples = recs.map((r) => {
      const rec = a["ip-prompt"] && r.messages
        ? { ...r, messages: withInoculation(r.messages, a["ip-prompt"] as string) }
        : r;
      return encodeRecord(m.tokenizer!, rec, { maxLength: Number.MAX_SAFE_INTEGER, path: a.data as string });
    });
  }
  const tensors: Record<string, TensorToWrite> = {};
  for (let i = 0; i < samples.length; i++) {
    const g = await sampleGradients(m, samples[i], { lora, hooks });
    const T = samples[i].ids.length;
    tensors[`${i}.loss`] = { dtype: "F32", shape: [1], data: Float32Array.of(g.loss) };
    tensors[`${i}.mask`] = { dtype: "F32", shape: [T], data: g.mask };
    g.gradH.forEach((h, l) => (tensors[`${i}.grad.h.${l}`] = { dtype: "F32", shape: [T, d], data: h }));
    for (const [name, v] of g.lora) {
      const e = lora!.store.get(name);
      tensors[`${i}.grad.${name}`] = { dtype: "F32", shape: e.shape, data: v };
    }
    console.error(`grads: sample ${i + 1}/${samples.length} (${T} tokens, loss ${g.loss.toFixed(4)})`);
  }
  await writeSafetensors(out, tensors, {
    model: dir,
    adapter: String(a.adapter ?? ""),
    samples: String(samples.length),
  });
}
