// The Qwen2 / Llama decoder as a composition of ops. One call records a whole forward pass into
// the GPU's command encoder; nothing is read back here.
//
// Batches are [B, T] token grids. `kvStart[b]` marks left padding (keys before it are masked and
// positions count from it), which is how batched generation lines up prompts of unequal length;
// right padding needs no mask (causal attention never looks ahead) and is dropped by the loss mask.

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { embedding } from "../lib/ops/embedding.ts";
import { rmsnorm } from "../lib/ops/rmsnorm.ts";
import { linear } from "../lib/ops/matmul.ts";
import { qkvRope, type QkvShape } from "../lib/ops/rope.ts";
import { attention } from "../lib/ops/attention.ts";
import { swiglu } from "../lib/ops/swiglu.ts";
import type { ModelConfig } from "./config.ts";
import type { ModelWeights } from "./loader.ts";
import { inverseFrequencies, ropeTable } from "./rope.ts";

/** Per-layer K/V for generation: [B * capacity, HKV * D] each. */
export class KVCache {
  constructor(
    readonly batch: number,
    readonly capacity: number,
    readonly k: Tensor[],
    readonly v: Tensor[],
  ) {}
  static create(gpu: Gpu, cfg: ModelConfig, batch: number, capacity: number): KVCache {
    const w = cfg.numKvHeads * cfg.headDim;
    const mk = (n: string) =>
      Array.from(
        { length: cfg.numLayers },
        (_, l) => Tensor.empty(gpu, [batch * capacity, w], "f32", `${n}${l}`),
      );
    return new KVCache(batch, capacity, mk("k_cache"), mk("v_cache"));
  }
  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
  }
}

export interface ForwardInput {
  /** token ids, row-major [batch, t] */
  ids: Uint32Array;
  batch: number;
  t: number;
  /** left-padding count per sequence (default 0) */
  kvStart?: number[];
  /** tokens already in the cache (generation); default 0 */
  past?: number;
  cache?: KVCache;
}

export interface ForwardOutput {
  /** final hidden states after the last norm, [B*T, d] (pooled; dispose when done) */
  normed: Tensor;
}

export class Decoder {
  private ropeCosSin: Tensor | null = null;
  private ropeLen = 0;
  private readonly invFreq: Float32Array;

  constructor(readonly gpu: Gpu, readonly cfg: ModelConfig, readonly w: ModelWeights) {
    this.invFreq = inverseFrequencies({
      headDim: cfg.headDim,
      theta: cfg.ropeTheta,
      scaling: cfg.ropeScaling,
    });
  }

  private cosSin(positions: number): Tensor {
    if (positions > this.ropeLen) {
      this.ropeCosSin?.dispose();
      let n = 64;
      while (n < positions) n *= 2;
      this.ropeLen = n;
      const table = ropeTable(this.invFreq, n);
      this.ropeCosSin = Tensor.fromF32(this.gpu, table, [table.length], "rope_cos_sin");
    }
    return this.ropeCosSin!;
  }

  /** Record the decoder up to the final norm. */
  forward(inp: ForwardInput): ForwardOutput {
    const { gpu, cfg, w } = this;
    const B = inp.batch, T = inp.t, rows = B * T, d = cfg.hiddenSize;
    const past = inp.past ?? 0;
    const kvStart = inp.kvStart ?? new Array(B).fill(0);
    if (inp.ids.length !== rows) throw new Error(`forward: ${inp.ids.length} ids for a ${B}x${T} batch`);
    for (const id of inp.ids) {
      if (id >= cfg.vocabSize) {
        throw new Error(`forward: token id ${id} is outside the vocabulary (size ${cfg.vocabSize})`);
      }
    }
    const tCache = inp.cache ? inp.cache.capacity : T;
    if (past + T > tCache) {
      throw new Error(`forward: ${past}+${T} tokens exceed the KV cache capacity ${tCache}`);
    }
    const pos = new Uint32Array(rows);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) pos[b * T + t] = Math.max(0, past + t - kvStart[b]);
    }
    const posT = Tensor.fromU32(gpu, pos, [rows], "positions");
    const startT = Tensor.fromU32(gpu, kvStart, [B], "kv_start");
    const idsT = Tensor.fromU32(gpu, inp.ids, [rows], "ids");
    const cosSin = this.cosSin(past + T);
    const s: QkvShape = {
      batch: B,
      t: T,
      tCache,
      past,
      heads: cfg.numHeads,
      kvHeads: cfg.numKvHeads,
      headDim: cfg.headDim,
    };

    const qDim = cfg.numHeads * cfg.headDim, kvDim = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
    const h = Tensor.empty(gpu, [rows, d], "f32", "h");
    const hMid = Tensor.empty(gpu, [rows, d], "f32", "h_mid");
    const normed = Tensor.empty(gpu, [rows, d], "f32", "normed");
    const rstd = Tensor.empty(gpu, [rows], "f32", "rstd");
    const qkv = Tensor.empty(gpu, [rows, qDim + 2 * kvDim], "f32", "qkv");
    const q = Tensor.empty(gpu, [rows, qDim], "f32", "q");
    const o = Tensor.empty(gpu, [rows, qDim], "f32", "attn_out");
    const lse = Tensor.empty(gpu, [B * cfg.numHeads * T], "f32", "lse");
    const gu = Tensor.empty(gpu, [rows, 2 * I], "f32", "gate_up");
    const act = Tensor.empty(gpu, [rows, I], "f32", "act");
    const ownKv = !inp.cache;
    const kc = ownKv ? Tensor.empty(gpu, [rows, kvDim], "f32", "k") : null;
    const vc = ownKv ? Tensor.empty(gpu, [rows, kvDim], "f32", "v") : null;

    embedding(gpu, idsT, w.embed, h);
    for (let l = 0; l < cfg.numLayers; l++) {
      const L = w.layers[l];
      const kl = inp.cache ? inp.cache.k[l] : kc!, vl = inp.cache ? inp.cache.v[l] : vc!;
      rmsnorm(gpu, h, L.inputNorm, cfg.rmsNormEps, normed, rstd);
      linear(gpu, normed, L.qkv, qkv, { bias: L.qkvBias ?? undefined });
      qkvRope(gpu, s, qkv, posT, cosSin, q, kl, vl);
      attention(gpu, s, q, kl, vl, startT, o, lse);
      linear(gpu, o, L.o, hMid, { residual: h });
      rmsnorm(gpu, hMid, L.postNorm, cfg.rmsNormEps, normed, rstd);
      linear(gpu, normed, L.gateUp, gu);
      swiglu(gpu, gu, act, rows, I);
      linear(gpu, act, L.down, h, { residual: hMid }); // h is free again: h_{l+1} = h_mid + mlp
    }
    rmsnorm(gpu, h, w.finalNorm, cfg.rmsNormEps, normed, rstd);
    for (const t of [h, hMid, rstd, qkv, q, o, lse, gu, act, posT, startT, idsT]) t.dispose();
    kc?.dispose();
    vc?.dispose();
    return { normed };
  }

  /** logits [rows, V] = normed[rowStart .. rowStart+rows] · lm_head^T (pooled tensor). */
  logits(normed: Tensor, rowIndices: number[]): Tensor {
    const { gpu, cfg } = this;
    const d = cfg.hiddenSize;
    const sel = Tensor.empty(gpu, [rowIndices.length, d], "f32", "selected_rows");
    // contiguous runs become one copy each
    for (let i = 0; i < rowIndices.length;) {
      let j = i + 1;
      while (j < rowIndices.length && rowIndices[j] === rowIndices[j - 1] + 1) j++;
      gpu.copy(normed.raw.buffer, normed.raw.offset + rowIndices[i] * d * 4, sel.raw.buffer, i * d * 4, (j - i) * d * 4);
      i = j;
    }
    const out = Tensor.empty(gpu, [rowIndices.length, cfg.vocabSize], "f32", "logits");
    linear(gpu, sel, this.w.lmHead, out);
    sel.dispose();
    return out;
  }

  /** How many logit rows fit one binding. */
  maxLogitRows(): number {
    return Math.max(1, Math.floor(this.gpu.caps.maxBindingBytes / (this.cfg.vocabSize * 4)));
  }
}
