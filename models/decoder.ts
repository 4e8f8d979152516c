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
  /** token ids, row-major [batch, t]: on the host, or a u32 GPU tensor (e.g. the last decode step's
   * argmax; no range check, no `save`; the caller keeps ownership) */
  ids: Uint32Array | Tensor;
  batch: number;
  t: number;
  /** left-padding count per sequence (default 0): on the host, or a u32 GPU tensor [batch] that the caller
   * keeps (generation uploads it once for all its steps) */
  kvStart?: number[] | Tensor;
  /** tokens already in the cache (generation); default 0 */
  past?: number;
  cache?: KVCache;
  /** keep every activation for a backward pass */
  save?: boolean;
  extras?: ForwardExtras;
}

export type ProjectionName =
  | "q_proj"
  | "k_proj"
  | "v_proj"
  | "o_proj"
  | "gate_proj"
  | "up_proj"
  | "down_proj";

/** What the training engine plugs into the forward pass (adapters, steering). */
export interface ForwardExtras {
  /** After a base projection: add to `out` columns [colOffset, colOffset + out_features) (LoRA). */
  project?(layer: number, module: ProjectionName, input: Tensor, out: Tensor, colOffset: number): void;
  /** At each residual-stream boundary l = 0..L (0 = embedding output): hooks such as steering. */
  boundary?(layer: number, h: Tensor): void;
}

/** Activations of one decoder layer kept for the backward pass. */
export interface LayerActs {
  hIn: Tensor;
  rstd1: Tensor;
  normed1: Tensor;
  qkv: Tensor;
  q: Tensor;
  /** this call's K/V (null when a KV cache holds them) */
  k: Tensor | null;
  v: Tensor | null;
  o: Tensor;
  lse: Tensor;
  hMid: Tensor;
  rstd2: Tensor;
  normed2: Tensor;
  gu: Tensor;
  act: Tensor;
}

export interface ForwardInputs {
  shape: QkvShape;
  idsHost: Uint32Array;
  ids: Tensor;
  /** u32 [batch]; positions are computed from it on the GPU (past + t - kvStart[b]) */
  kvStart: Tensor;
  cosSin: Tensor;
}

export interface SavedForward {
  inputs: ForwardInputs;
  layers: LayerActs[];
  /** residual stream h_0..h_L (h_l after any boundary hook) */
  hs: Tensor[];
  rstdF: Tensor;
}

export function disposeActs(a: LayerActs): void {
  // hIn is h_l, owned by the residual-stream list (SavedForward.hs) or the caller
  const { hIn: _hIn, ...rest } = a;
  for (const t of Object.values(rest)) (t as Tensor | null)?.dispose();
}

export function disposeSaved(s: SavedForward): void {
  for (const a of s.layers) disposeActs(a);
  for (const h of s.hs) h.dispose();
  for (const t of [s.inputs.ids, s.inputs.kvStart, s.rstdF]) t.dispose();
}

export interface ForwardOutput {
  /** final hidden states after the last norm, [B*T, d] (pooled; dispose when done) */
  normed: Tensor;
  /** with `save`: everything the backward pass needs (dispose with disposeSaved) */
  saved?: SavedForward;
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

  /** The RoPE cos/sin table covering positions 0..positions-1 (grown on demand). */
  cosSin(positions: number): Tensor {
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
    const gpuKvStart = kvStart instanceof Tensor ? kvStart : null;
    if (gpuKvStart && gpuKvStart.numel !== B) {
      throw new Error(`forward: kvStart holds ${gpuKvStart.numel} rows for batch ${B}`);
    }
    if (gpuKvStart && inp.save) {
      throw new Error("forward: saving activations for backward needs host kvStart");
    }
    const gpuIds = inp.ids instanceof Tensor ? inp.ids : null;
    const nIds = gpuIds ? gpuIds.numel : (inp.ids as Uint32Array).length;
    if (nIds !== rows) throw new Error(`forward: ${nIds} ids for a ${B}x${T} batch`);
    if (gpuIds && inp.save) throw new Error("forward: saving activations for backward needs host token ids");
    if (!gpuIds) {
      for (const id of inp.ids as Uint32Array) {
        if (id >= cfg.vocabSize) {
          throw new Error(`forward: token id ${id} is outside the vocabulary (size ${cfg.vocabSize})`);
        }
      }
    }
    const tCache = inp.cache ? inp.cache.capacity : T;
    if (past + T > tCache) {
      throw new Error(`forward: ${past}+${T} tokens exceed the KV cache capacity ${tCache}`);
    }
    if (inp.save && inp.cache) throw new Error("forward: saving activations for backward needs no KV cache");
    if (!gpuKvStart && (kvStart as number[]).length !== B) {
      throw new Error(`forward: kvStart has ${(kvStart as number[]).length} entries for batch ${B}`);
    }
    const s: QkvShape = {
      batch: B,
      t: T,
      tCache,
      past,
      heads: cfg.numHeads,
      kvHeads: cfg.numKvHeads,
      headDim: cfg.headDim,
    };
    const inputs: ForwardInputs = {
      shape: s,
      idsHost: gpuIds ? new Uint32Array(0) : inp.ids as Uint32Array,
      ids: gpuIds ?? Tensor.uploadPooled(gpu, inp.ids as Uint32Array, [rows], "u32", "ids"),
      kvStart: gpuKvStart ??
        Tensor.uploadPooled(gpu, Uint32Array.from(kvStart as number[]), [B], "u32", "kv_start"),
      cosSin: this.cosSin(past + T),
    };
    const hooks = inp.extras; // the adapter and the defence at their hook points

    const qDim = cfg.numHeads * cfg.headDim, kvDim = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
    const e = (shape: number[], name: string) => Tensor.empty(gpu, shape, "f32", name);
    const newActs = (hIn: Tensor): LayerActs => ({
      hIn,
      rstd1: e([rows], "rstd1"),
      normed1: e([rows, d], "normed1"),
      qkv: e([rows, qDim + 2 * kvDim], "qkv"),
      q: e([rows, qDim], "q"),
      k: inp.cache ? null : e([rows, kvDim], "k"),
      v: inp.cache ? null : e([rows, kvDim], "v"),
      o: e([rows, qDim], "attn_out"),
      lse: e([B * cfg.numHeads * T], "lse"),
      hMid: e([rows, d], "h_mid"),
      rstd2: e([rows], "rstd2"),
      normed2: e([rows, d], "normed2"),
      gu: e([rows, 2 * I], "gate_up"),
      act: e([rows, I], "act"),
    });
    const hs: Tensor[] = [e([rows, d], "h0")];
    embedding(gpu, inputs.ids, w.embed, hs[0]);
    hooks?.boundary?.(0, hs[0]);
    const layers: LayerActs[] = [];
    let shared: LayerActs | null = null;
    for (let l = 0; l < cfg.numLayers; l++) {
      const lw = w.layers[l];
      const a: LayerActs = inp.save ? newActs(hs[l]) : (shared ??= newActs(hs[0]));
      const kl = inp.cache ? inp.cache.k[l] : a.k!, vl = inp.cache ? inp.cache.v[l] : a.v!;
      rmsnorm(gpu, hs[l], lw.inputNorm, cfg.rmsNormEps, a.normed1, a.rstd1);
      linear(gpu, a.normed1, lw.qkv, a.qkv, { bias: lw.qkvBias ?? undefined });
      hooks?.project?.(l, "q_proj", a.normed1, a.qkv, 0);
      hooks?.project?.(l, "k_proj", a.normed1, a.qkv, qDim);
      hooks?.project?.(l, "v_proj", a.normed1, a.qkv, qDim + kvDim);
      qkvRope(gpu, s, a.qkv, inputs.kvStart, inputs.cosSin, a.q, kl, vl);
      attention(gpu, s, a.q, kl, vl, inputs.kvStart, a.o, a.lse);
      linear(gpu, a.o, lw.o, a.hMid, { residual: hs[l] });
      hooks?.project?.(l, "o_proj", a.o, a.hMid, 0);
      rmsnorm(gpu, a.hMid, lw.postNorm, cfg.rmsNormEps, a.normed2, a.rstd2);
      linear(gpu, a.normed2, lw.gateUp, a.gu);
      hooks?.project?.(l, "gate_proj", a.normed2, a.gu, 0);
      hooks?.project?.(l, "up_proj", a.normed2, a.gu, I);
      swiglu(gpu, a.gu, a.act, rows, I);
      // without saving, h_l is free once h_mid exists, so h_{l+1} reuses its buffer
      const hNext = inp.save ? e([rows, d], `h${l + 1}`) : hs[l];
      linear(gpu, a.act, lw.down, hNext, { residual: a.hMid });
      hooks?.project?.(l, "down_proj", a.act, hNext, 0);
      hooks?.boundary?.(l + 1, hNext);
      hs.push(hNext);
      if (inp.save) layers.push(a);
    }
    const hL = hs[cfg.numLayers];
    const normed = e([rows, d], "normed");
    const rstdF = e([rows], "rstd_final");
    rmsnorm(gpu, hL, w.finalNorm, cfg.rmsNormEps, normed, rstdF);
    if (inp.save) return { normed, saved: { inputs, layers, hs, rstdF } };
    for (const t of [rstdF, hL]) t.dispose();
    if (!gpuIds) inputs.ids.dispose();
    if (!gpuKvStart) inputs.kvStart.dispose();
    if (shared) disposeActs(shared);
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
      gpu.copy(
        normed.raw.buffer,
        normed.raw.offset + rowIndices[i] * d * 4,
        sel.raw.buffer,
        i * d * 4,
        (j - i) * d * 4,
      );
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
