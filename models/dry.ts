// A model of a real checkpoint's shape on a dry-run Gpu (lib/gpu/dry.ts): weights of the right shapes and
// dtypes that hold nothing, so that a step or a decode token at the full depth of Qwen2.5-0.5B or -7B can be
// recorded and its dispatches counted without the weights, the memory or a GPU.

import type { Gpu } from "../lib/gpu/context.ts";
import { type DType, Tensor } from "../lib/tensor.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { Decoder } from "./decoder.ts";
import type { LayerWeights, ModelWeights } from "./loader.ts";
import { presetConfig } from "./random.ts";
import type { Model } from "./model.ts";

/** A shape-only model of a preset (model:random's --like names) on a dry Gpu. */
export function dryModel(gpu: Gpu, like: string, o: { layers?: number; dtype?: "bf16" | "f32" } = {}): Model {
  if (gpu.caps.backend !== "dry") throw new Error("dryModel: its weights hold nothing; use it on Gpu.dry()");
  const cfg = parseConfig(presetConfig(like, o.layers), `${like} (preset)`);
  const decoder = new Decoder(gpu, cfg, dryWeights(gpu, cfg, o.dtype ?? "bf16"));
  return { dir: `dry:${like}`, cfg, decoder, tokenizer: null, dispose: () => {} };
}

function dryWeights(gpu: Gpu, cfg: ModelConfig, dtype: DType): ModelWeights {
  const empty = new Uint8Array(0);
  const mat = (rows: number, cols: number, name: string) =>
    Tensor.uploadRows(gpu, [rows, cols], dtype, name, () => empty);
  const vec = (n: number, name: string) => Tensor.uploadRows(gpu, [n], "f32", name, () => empty);
  const d = cfg.hiddenSize, q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
  const embed = mat(cfg.vocabSize, d, "embed_tokens");
  const layers: LayerWeights[] = Array.from({ length: cfg.numLayers }, (_, l) => ({
    inputNorm: vec(d, `${l}.input_layernorm`),
    postNorm: vec(d, `${l}.post_attention_layernorm`),
    qkv: mat(q + 2 * kv, d, `${l}.qkv`),
    qkvBias: cfg.qkvBias ? vec(q + 2 * kv, `${l}.qkv_bias`) : null,
    o: mat(d, q, `${l}.o_proj`),
    gateUp: mat(2 * cfg.intermediateSize, d, `${l}.gate_up`),
    down: mat(d, cfg.intermediateSize, `${l}.down_proj`),
  }));
  return {
    embed,
    lmHead: cfg.tieWordEmbeddings ? embed : mat(cfg.vocabSize, d, "lm_head"),
    finalNorm: vec(d, "norm"),
    layers,
  };
}
