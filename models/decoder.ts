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
import { linear, type LoraPhase } from "../lib/ops/matmul.ts";
import { gemv, GEMV_MAX_ROWS, gemvArgmaxGroups } from "../lib/ops/gemv.ts";
import { argmax, argmaxFinal } from "../lib/ops/sample.ts";
import type { ProjectionGroup, ProjectionInput } from "./lora.ts";
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
  ids?: Uint32Array | Tensor;
  /** instead of ids: their embeddings h_0 [batch * t, d] already on the GPU (a decode step whose argmax wrote
   * them, Decoder.nextTokens); the caller keeps ownership; no `save` */
  embedded?: Tensor;
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
  /** with `save`: keep only each layer's input h_l; the backward recomputes a layer's activations from it
   * (activation checkpointing: a layer's activations instead of all of them) */
  checkpoint?: boolean;
  extras?: ForwardExtras;
  /** "defer": return h_L and leave the final norm to the LM head, which fuses it (decode steps) */
  finalNorm?: "apply" | "defer";
}

/** What the training engine plugs into the forward pass (adapters, steering). */
export interface ForwardExtras {
  /**
   * The adapter's part of one projection group (q|k|v, o, gate|up, down): record its rank products of `input`
   * and return the phase the group's base product fuses, or null when the group is not adapted.
   */
  project?(layer: number, group: ProjectionGroup, input: ProjectionInput, rows: number): LoraPhase | null;
  /** At each residual-stream boundary l = 0..L (0 = embedding output): hooks such as steering. */
  boundary?(layer: number, h: Tensor): void;
  /** Activation checkpointing: layer l's forward is done (its rank products may be dropped; the backward
   * recomputes them) */
  release?(layer: number): void;
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
  /** null when the forward was given embeddings */
  ids: Tensor | null;
  /** u32 [batch]; positions are computed from it on the GPU (past + t - kvStart[b]) */
  kvStart: Tensor;
  cosSin: Tensor;
}

export interface SavedForward {
  inputs: ForwardInputs;
  /** per layer (empty when checkpointed: Decoder.recompute gives them one layer at a time) */
  layers: LayerActs[];
  /** activation checkpointing: the hooks the forward ran with, for the recomputation */
  checkpoint?: { extras?: ForwardExtras };
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
  for (const t of [s.inputs.ids, s.inputs.kvStart, s.rstdF]) t?.dispose();
}

export interface ForwardOutput {
  /** final hidden states after the last norm, [B*T, d] (pooled; dispose when done); with finalNorm "defer"
   * (and `prenorm` set) h_L before it */
  normed: Tensor;
  prenorm?: boolean;
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
    if ((inp.ids === undefined) === (inp.embedded === undefined)) {
      throw new Error("forward: give either ids or their embeddings");
    }
    if (inp.embedded && (inp.save || inp.embedded.numel !== rows * d)) {
      throw new Error(`forward: embeddings [${inp.embedded.shape}] for a ${B}x${T} batch without a backward`);
    }
    const gpuIds = inp.ids instanceof Tensor ? inp.ids : null;
    const hostIds = inp.ids instanceof Uint32Array ? inp.ids : null;
    const nIds = gpuIds ? gpuIds.numel : hostIds ? hostIds.length : rows;
    if (nIds !== rows) throw new Error(`forward: ${nIds} ids for a ${B}x${T} batch`);
    if (gpuIds && inp.save) throw new Error("forward: saving activations for backward needs host token ids");
    if (hostIds) {
      for (const id of hostIds) {
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
      idsHost: hostIds ?? new Uint32Array(0),
      ids: gpuIds ?? (hostIds ? Tensor.uploadPooled(gpu, hostIds, [rows], "u32", "ids") : null),
      kvStart: gpuKvStart ??
        Tensor.uploadPooled(gpu, Uint32Array.from(kvStart as number[]), [B], "u32", "kv_start"),
      cosSin: this.cosSin(past + T),
    };
    const hooks = inp.extras; // the adapter and the defence at their hook points
    const project = (l: number, g: ProjectionGroup, input: ProjectionInput) =>
      hooks?.project?.(l, g, input, rows) ?? undefined;

    const qDim = cfg.numHeads * cfg.headDim, kvDim = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
    // decode steps (and other short calls without a backward): five fused matrix-vector products a layer
    const fused = !inp.save && this.decodeFusable(rows);
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
    const hs: Tensor[] = [inp.embedded ?? e([rows, d], "h0")];
    if (inputs.ids && !inp.embedded) embedding(gpu, inputs.ids, w.embed, hs[0]);
    hooks?.boundary?.(0, hs[0]);
    // without saving, each layer's output overwrites the one buffer (h_l is free once h_mid exists), which is
    // not the caller's embeddings
    const work = inp.save ? null : inp.embedded ? e([rows, d], "h") : hs[0];
    const layers: LayerActs[] = [];
    let shared: LayerActs | null = null;
    const eps = cfg.rmsNormEps;
    const keep = inp.save && !inp.checkpoint; // every layer's activations, for the backward
    for (let l = 0; l < cfg.numLayers; l++) {
      const lw = w.layers[l];
      const a: LayerActs = keep ? newActs(hs[l]) : (shared ??= newActs(hs[0]));
      const kl = inp.cache ? inp.cache.k[l] : a.k!, vl = inp.cache ? inp.cache.v[l] : a.v!;
      const hNext = work ?? e([rows, d], `h${l + 1}`);
      const h = hs[l];
      if (fused) {
        const norm1 = { weight: lw.inputNorm, eps }, norm2 = { weight: lw.postNorm, eps };
        gemv(gpu, {
          x: h,
          w: lw.qkv,
          M: rows,
          out: a.q,
          norm: norm1,
          bias: lw.qkvBias ?? undefined,
          rope: { shape: s, kCache: kl, vCache: vl, kvStart: inputs.kvStart, cosSin: inputs.cosSin },
          lora: project(l, "qkv", { x: h, norm: norm1 }),
        });
        attention(gpu, s, a.q, kl, vl, inputs.kvStart, a.o, a.lse);
        gemv(gpu, { x: a.o, w: lw.o, M: rows, out: a.hMid, residual: h, lora: project(l, "o", { x: a.o }) });
        gemv(gpu, {
          x: a.hMid,
          w: lw.gateUp,
          M: rows,
          out: a.act,
          norm: norm2,
          swiglu: true,
          lora: project(l, "gate_up", { x: a.hMid, norm: norm2 }),
        });
        gemv(gpu, {
          x: a.act,
          w: lw.down,
          M: rows,
          out: hNext,
          residual: a.hMid,
          lora: project(l, "down", { x: a.act }),
        });
      } else {
        this.layer(l, h, a, hNext, inputs, kl, vl, hooks);
        if (inp.checkpoint) hooks?.release?.(l);
      }
      hooks?.boundary?.(l + 1, hNext);
      hs.push(hNext);
      if (keep) layers.push(a);
    }
    const hL = hs[cfg.numLayers];
    const release = () => {
      if (hostIds) inputs.ids!.dispose();
      if (!gpuKvStart) inputs.kvStart.dispose();
      if (shared) disposeActs(shared);
    };
    if (inp.finalNorm === "defer" && !inp.save) {
      release();
      return { normed: hL, prenorm: true };
    }
    const normed = e([rows, d], "normed");
    const rstdF = e([rows], "rstd_final");
    rmsnorm(gpu, hL, w.finalNorm, eps, normed, rstdF);
    if (inp.save) {
      if (shared) disposeActs(shared);
      return {
        normed,
        saved: { inputs, layers, hs, rstdF, ...(inp.checkpoint ? { checkpoint: { extras: hooks } } : {}) },
      };
    }
    for (const t of [rstdF, hL]) t.dispose();
    release();
    return { normed };
  }

  /**
   * One layer of a prefill or training forward (the tile kernels): h -> hNext, the activations into `a`, the
   * adapter's products through the hooks.
   */
  private layer(
    l: number,
    h: Tensor,
    a: LayerActs,
    hNext: Tensor,
    inputs: ForwardInputs,
    kl: Tensor,
    vl: Tensor,
    hooks: ForwardExtras | undefined,
  ): void {
    const { gpu, cfg } = this,
      lw = this.w.layers[l],
      s = inputs.shape,
      rows = s.batch * s.t,
      eps = cfg.rmsNormEps;
    const project = (g: ProjectionGroup, input: ProjectionInput) =>
      hooks?.project?.(l, g, input, rows) ?? undefined;
    rmsnorm(gpu, h, lw.inputNorm, eps, a.normed1, a.rstd1);
    linear(gpu, a.normed1, lw.qkv, a.qkv, {
      bias: lw.qkvBias ?? undefined,
      lora: project("qkv", { x: a.normed1 }),
    });
    qkvRope(gpu, s, a.qkv, inputs.kvStart, inputs.cosSin, a.q, kl, vl);
    attention(gpu, s, a.q, kl, vl, inputs.kvStart, a.o, a.lse);
    linear(gpu, a.o, lw.o, a.hMid, { residual: h, lora: project("o", { x: a.o }) });
    rmsnorm(gpu, a.hMid, lw.postNorm, eps, a.normed2, a.rstd2);
    linear(gpu, a.normed2, lw.gateUp, a.gu, { lora: project("gate_up", { x: a.normed2 }) });
    swiglu(gpu, a.gu, a.act, rows, cfg.intermediateSize);
    linear(gpu, a.act, lw.down, hNext, { residual: a.hMid, lora: project("down", { x: a.act }) });
  }

  /**
   * Activation checkpointing: layer l's activations recomputed from its saved input h_l, with the forward's
   * hooks (the same adapter products and dropout masks: they are functions of the step's seed). The caller
   * disposes them with disposeActs when its backward is recorded.
   */
  recompute(saved: SavedForward, l: number): LayerActs {
    const s = saved.inputs.shape, rows = s.batch * s.t, cfg = this.cfg;
    const qDim = cfg.numHeads * cfg.headDim, kvDim = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
    const e = (shape: number[], name: string) => Tensor.empty(this.gpu, shape, "f32", name);
    const a: LayerActs = {
      hIn: saved.hs[l],
      rstd1: e([rows], "rstd1"),
      normed1: e([rows, cfg.hiddenSize], "normed1"),
      qkv: e([rows, qDim + 2 * kvDim], "qkv"),
      q: e([rows, qDim], "q"),
      k: e([rows, kvDim], "k"),
      v: e([rows, kvDim], "v"),
      o: e([rows, qDim], "attn_out"),
      lse: e([s.batch * cfg.numHeads * s.t], "lse"),
      hMid: e([rows, cfg.hiddenSize], "h_mid"),
      rstd2: e([rows], "rstd2"),
      normed2: e([rows, cfg.hiddenSize], "normed2"),
      gu: e([rows, 2 * I], "gate_up"),
      act: e([rows, I], "act"),
    };
    const out = e([rows, cfg.hiddenSize], "h_recomputed"); // h_{l+1} again, not needed
    this.layer(l, saved.hs[l], a, out, saved.inputs, a.k!, a.v!, saved.checkpoint?.extras);
    out.dispose();
    return a;
  }

  /** Whether `rows` rows (without a backward) take the fused decode-step products (lib/ops/gemv.ts). */
  decodeFusable(rows: number): boolean {
    const c = this.cfg, w = this.w;
    return this.fuseDecode && rows <= GEMV_MAX_ROWS && c.hiddenSize % 4 === 0 &&
      c.intermediateSize % 4 === 0 &&
      (c.numHeads * c.headDim) % 4 === 0 &&
      w.layers.every((l) => l.qkv.chunks.length === 1 && l.gateUp.chunks.length === 1);
  }

  /** Fuse the decode steps' norms, RoPE and SwiGLU into their products (tests compare both ways). */
  fuseDecode = true;

  /**
   * logits [rows, V] of the rows `rowIndices` of a forward's output (pooled tensor): `prenorm` when it is h_L
   * (finalNorm "defer"), which is normalized here, inside the LM head's product where the rows allow.
   */
  logits(normed: Tensor, rowIndices: number[], prenorm = false): Tensor {
    const { gpu, cfg } = this;
    const out = Tensor.empty(gpu, [rowIndices.length, cfg.vocabSize], "f32", "logits");
    const strided = this.stridedRows(rowIndices, prenorm);
    if (strided) {
      gemv(gpu, { ...strided, x: normed, w: this.w.lmHead, M: rowIndices.length, out });
      return out;
    }
    const sel = this.selectRows(normed, rowIndices, prenorm);
    linear(gpu, sel, this.w.lmHead, out);
    sel.dispose();
    return out;
  }

  /**
   * Greedy choice for the rows `rowIndices` of a forward's output: next[i] (and hist[histOffset + i]) = the
   * argmax of row i's logits. With at most 8 rows the LM head's product does the argmax's first stage itself
   * (kernels/gemv.wgsl ARGMAX) and one more dispatch finishes it: no logits are stored.
   */
  nextTokens(
    normed: Tensor,
    rowIndices: number[],
    prenorm: boolean,
    next: Tensor,
    hist: Tensor,
    histOffset: number,
    /** also write each chosen token's embedding here [rows, d] (the next step's input: no embedding dispatch
     * then); returns whether it did (the embedding table must be in one binding) */
    embedOut?: Tensor,
  ): boolean {
    const { gpu } = this;
    const strided = this.stridedRows(rowIndices, prenorm);
    if (strided && this.w.lmHead.chunks.length === 1) {
      const n = rowIndices.length;
      const groups = gemvArgmaxGroups(gpu, this.cfg.vocabSize);
      const partials = Tensor.empty(gpu, [n * groups * 2], "u32", "argmax_partials");
      gemv(gpu, { ...strided, x: normed, w: this.w.lmHead, M: n, out: partials, argmax: { partials } });
      const embed = embedOut && this.w.embed.chunks.length === 1
        ? { table: this.w.embed, out: embedOut }
        : undefined;
      argmaxFinal(gpu, partials, n, groups, next, hist, histOffset, embed);
      partials.dispose();
      return !!embed;
    }
    const logits = this.logits(normed, rowIndices, prenorm);
    argmax(gpu, logits, next, hist, histOffset);
    logits.dispose();
    return false;
  }

  /** A gemv reading rows first, first + step, ... of the output in place (with the final norm when
   * `prenorm`), or null when the rows are not so or too many. */
  private stridedRows(rowIndices: number[], prenorm: boolean) {
    const n = rowIndices.length, d = this.cfg.hiddenSize;
    if (n === 0 || n > GEMV_MAX_ROWS || d % 4 !== 0 || (prenorm && !this.fuseDecode)) return null;
    const step = n > 1 ? rowIndices[1] - rowIndices[0] : 1;
    if (step < 1 || rowIndices.some((r, i) => r !== rowIndices[0] + i * step)) return null;
    return {
      lda: step * d,
      aOff: rowIndices[0] * d,
      norm: prenorm ? { weight: this.w.finalNorm, eps: this.cfg.rmsNormEps } : undefined,
    };
  }

  /** The rows `rowIndices` copied into a new pooled tensor (and normalized, when `prenorm`). */
  private selectRows(x: Tensor, rowIndices: number[], prenorm: boolean): Tensor {
    const { gpu, cfg } = this;
    const d = cfg.hiddenSize;
    const sel = Tensor.empty(gpu, [rowIndices.length, d], "f32", "selected_rows");
    // contiguous runs become one copy each
    for (let i = 0; i < rowIndices.length;) {
      let j = i + 1;
      while (j < rowIndices.length && rowIndices[j] === rowIndices[j - 1] + 1) j++;
      gpu.copy(
        x.raw.buffer,
        x.raw.offset + rowIndices[i] * d * 4,
        sel.raw.buffer,
        i * d * 4,
        (j - i) * d * 4,
      );
      i = j;
    }
    if (!prenorm) return sel;
    const normed = Tensor.empty(gpu, [rowIndices.length, d], "f32", "selected_normed");
    const rstd = Tensor.empty(gpu, [rowIndices.length], "f32", "selected_rstd");
    rmsnorm(gpu, sel, this.w.finalNorm, cfg.rmsNormEps, normed, rstd);
    sel.dispose();
    rstd.dispose();
    return normed;
  }

  /** How many logit rows fit one binding. */
  maxLogitRows(): number {
    return Math.max(1, Math.floor(this.gpu.caps.maxBindingBytes / (this.cfg.vocabSize * 4)));
  }
}
