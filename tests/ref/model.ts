// f64 reference of the Qwen2/Llama decoder (HF semantics, unfused weights), built from the op twins.

import type { ModelConfig } from "../../models/config.ts";
import { inverseFrequencies, ropeTable } from "../../models/rope.ts";
import * as ref from "./ops.ts";

export type Weights = Map<string, Float32Array>;

export interface RefExtras {
  /** LoRA: per "layer.module" the A [r, in] and B [out, r] matrices, and the scale */
  lora?: { scale: number; r: number; mods: Map<string, { a: ArrayLike<number>; b: ArrayLike<number> }> };
  /** add to the residual stream h_layer (after steering), [T, d] */
  perturb?: { layer: number; delta: ArrayLike<number> };
  steer?: { layer: number; vec: ArrayLike<number>; coef: number };
  /** filled with Hugging Face's hidden_states: [0..L-1] the boundaries, [L] after the final norm */
  hidden?: Float64Array[];
}

/** Logits [T, V] for one sequence (positions 0..T-1). */
export function refLogits(cfg: ModelConfig, W: Weights, ids: number[], x: RefExtras = {}): Float64Array {
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
  const boundary = (l: number, hh: Float64Array) => {
    if (x.steer?.layer === l) {
      for (let i = 0; i < hh.length; i++) {
        hh[i] += x.steer.coef * x.steer.vec[i % d];
      }
    }
    if (x.perturb?.layer === l) { for (let i = 0; i < hh.length; i++) hh[i] += x.perturb.delta[i]; }
    return hh;
  };
  /** base projection + LoRA (no dropout) */
  const lin = (
    inp: Float64Array,
    K: number,
    l: number,
    mod: string,
    wName: string,
    N: number,
    bias?: Float32Array,
    residual?: Float64Array,
  ) => {
    const y = ref.matmul(inp, T, K, get(wName), N, { bias, residual });
    const ad = x.lora?.mods.get(`${l}.${mod}`);
    if (ad) {
      const u = ref.matmul(inp, T, K, ad.a, x.lora!.r);
      const z = ref.matmul(u, T, x.lora!.r, ad.b, N);
      for (let i = 0; i < y.length; i++) y[i] += x.lora!.scale * z[i];
    }
    return y;
  };
  let h = boundary(0, ref.embedding(ids, get("model.embed_tokens.weight"), d));
  x.hidden?.push(h.slice());
  const table = ropeTable(
    inverseFrequencies({ headDim: D, theta: cfg.ropeTheta, scaling: cfg.ropeScaling }),
    T,
  );
  const pos = ids.map((_, i) => i);
  const s = { batch: 1, t: T, tCache: T, past: 0, heads: H, kvHeads: HK, headDim: D };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const xn = ref.rmsnorm(h, get(p + "input_layernorm.weight"), cfg.rmsNormEps).y;
    const proj = (n: string, rows: number) =>
      lin(
        xn,
        d,
        l,
        `${n}_proj`,
        `${p}self_attn.${n}_proj.weight`,
        rows,
        cfg.qkvBias ? get(`${p}self_attn.${n}_proj.bias`) : undefined,
      );
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
    const hMid = lin(o, H * D, l, "o_proj", p + "self_attn.o_proj.weight", d, undefined, h);
    const x2 = ref.rmsnorm(hMid, get(p + "post_attention_layernorm.weight"), cfg.rmsNormEps).y;
    const g = lin(x2, d, l, "gate_proj", p + "mlp.gate_proj.weight", I);
    const u = lin(x2, d, l, "up_proj", p + "mlp.up_proj.weight", I);
    const gu = new Float64Array(T * 2 * I);
    for (let t = 0; t < T; t++) {
      gu.set(g.subarray(t * I, (t + 1) * I), t * 2 * I);
      gu.set(u.subarray(t * I, (t + 1) * I), t * 2 * I + I);
    }
    const act = ref.swiglu(gu, T, I);
    h = boundary(l + 1, lin(act, I, l, "down_proj", p + "mlp.down_proj.weight", d, undefined, hMid));
    if (l + 1 < cfg.numLayers) x.hidden?.push(h.slice());
  }
  const y = ref.rmsnorm(h, get("model.norm.weight"), cfg.rmsNormEps).y;
  x.hidden?.push(y.slice());
  const head = cfg.tieWordEmbeddings ? get("model.embed_tokens.weight") : get("lm_head.weight");
  return ref.matmul(y, T, d, head, cfg.vocabSize);
}

/** Summed masked next-token cross-entropy of one sequence: targets ids[1..], positions 0..T-2. */
export function refLoss(
  cfg: ModelConfig,
  W: Weights,
  ids: number[],
  mask: number[],
  x: RefExtras = {},
): number {
  const logits = refLogits(cfg, W, ids, x);
  const V = cfg.vocabSize;
  const targets = ids.slice(1);
  const rows = logits.subarray(0, (ids.length - 1) * V);
  const { loss } = ref.crossEntropy(rows, targets, mask.slice(0, ids.length - 1));
  return loss.reduce((a, b) => a + b, 0);
}
