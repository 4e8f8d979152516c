// f64 reference of the Qwen2/Llama decoder (HF semantics, unfused weights), built from the op twins.

import type { ModelConfig } from "../../models/config.ts";
import { inverseFrequencies, ropeTable } from "../../models/rope.ts";
import * as ref from "./ops.ts";

export type Weights = Map<string, Float32Array>;

/** Logits [T, V] for one sequence (positions 0..T-1). */
export function refLogits(cfg: ModelConfig, W: Weights, ids: number[]): Float64Array {
  const T = ids.length,
    d = cfg.hiddenSize,
    H = cfg.numHeads,
    HK = cfg.numKvHeads,
    D = cfg.headDim,
    I = cfg.intermediateSize;
  const get = (n: string) => {
    const w = W.get(n);
    if (!w) throw new Error(`reference: weight ${n} missing`);
    return w;
  };
  let h = ref.embedding(ids, get("model.embed_tokens.weight"), d);
  const table = ropeTable(
    inverseFrequencies({ headDim: D, theta: cfg.ropeTheta, scaling: cfg.ropeScaling }),
    T,
  );
  const pos = ids.map((_, i) => i);
  const s = { batch: 1, t: T, tCache: T, past: 0, heads: H, kvHeads: HK, headDim: D };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const x = ref.rmsnorm(h, get(p + "input_layernorm.weight"), cfg.rmsNormEps).y;
    const proj = (n: string, rows: number) =>
      ref.matmul(x, T, d, get(`${p}self_attn.${n}_proj.weight`), rows, {
        bias: cfg.qkvBias ? get(`${p}self_attn.${n}_proj.bias`) : undefined,
      });
    const q = proj("q", H * D), k = proj("k", HK * D), v = proj("v", HK * D);
    const qkv = new Float64Array(T * (H + 2 * HK) * D);
    for (let t = 0; t < T; t++) {
      const row = (H + 2 * HK) * D;
      qkv.set(q.subarray(t * H * D, (t + 1) * H * D), t * row);
      qkv.set(k.subarray(t * HK * D, (t + 1) * HK * D), t * row + H * D);
      qkv.set(v.subarray(t * HK * D, (t + 1) * HK * D), t * row + (H + HK) * D);
    }
    const kc = new Float64Array(T * HK * D), vc = new Float64Array(T * HK * D);
    const qr = ref.qkvRope(s, qkv, pos, table, kc, vc);
    const { o } = ref.attention(s, qr, kc, vc, [0]);
    const hMid = ref.matmul(o, T, H * D, get(p + "self_attn.o_proj.weight"), d, { residual: h });
    const x2 = ref.rmsnorm(hMid, get(p + "post_attention_layernorm.weight"), cfg.rmsNormEps).y;
    const g = ref.matmul(x2, T, d, get(p + "mlp.gate_proj.weight"), I);
    const u = ref.matmul(x2, T, d, get(p + "mlp.up_proj.weight"), I);
    const gu = new Float64Array(T * 2 * I);
    for (let t = 0; t < T; t++) {
      gu.set(g.subarray(t * I, (t + 1) * I), t * 2 * I);
      gu.set(u.subarray(t * I, (t + 1) * I), t * 2 * I + I);
    }
    const act = ref.swiglu(gu, T, I);
    h = ref.matmul(act, T, I, get(p + "mlp.down_proj.weight"), d, { residual: hMid });
  }
  const y = ref.rmsnorm(h, get("model.norm.weight"), cfg.rmsNormEps).y;
  const head = cfg.tieWordEmbeddings ? get("model.embed_tokens.weight") : get("lm_head.weight");
  return ref.matmul(y, T, d, head, cfg.vocabSize);
}
