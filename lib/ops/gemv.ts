// Decode-step products (kernels/gemv.wgsl): M <= 8 rows against [N, K] weights, with the norm before, and
// RoPE, SwiGLU, the LoRA product or the argmax's first stage after, fused into the one dispatch.

import type { Gpu } from "../gpu/context.ts";
import type { Defines } from "../gpu/preprocess.ts";
import { bytesPerElement, type Tensor } from "../tensor.ts";
import { check, gridFlat, weightDtype } from "./common.ts";
import { chunkLora, type LoraPhase } from "./matmul.ts";
import type { QkvShape } from "./rope.ts";

/** Every variant of kernels/gemv.wgsl, named in one place. */
export interface GemvKey {
  /** GPUs: a workgroup per `cols` units; CPU adapters: an invocation per unit */
  tiling: "workgroup" | "register";
  cols: 1 | 8;
  /** the call's rows (1 to 8): each gets named registers */
  rows: number;
  wDtype: string;
  norm: boolean;
  bias: boolean;
  residual: boolean;
  accumulate: boolean;
  lora: boolean;
  /** what a unit is and where it goes */
  unit: "column" | "rope" | "swiglu" | "argmax";
}

export function gemvDefines(k: GemvKey): Defines {
  return {
    COLS: k.cols,
    ROWS: k.rows,
    W_DTYPE: k.wDtype,
    W_BINDING: 2,
    W_VEC4: true,
    NORM: k.norm,
    HAS_BIAS: k.bias,
    RESIDUAL: k.residual,
    ACCUMULATE: k.accumulate,
    LORA_B: k.lora,
    ROPE: k.unit === "rope",
    SWIGLU: k.unit === "swiglu",
    ARGMAX: k.unit === "argmax",
  };
}

/** Rows a decode-step product takes (more go to the tile kernel). */
export const GEMV_MAX_ROWS = 8;

export interface GemvSpec {
  x: Tensor;
  lda?: number;
  aOff?: number;
  /** [N, K] weights in one binding or row chunks (column blocks of the output) */
  w: Tensor;
  M: number;
  out: Tensor;
  ldc?: number;
  colOffset?: number;
  rowOffset?: number;
  bias?: Tensor;
  residual?: Tensor;
  accumulate?: boolean;
  alpha?: number;
  /** x is the residual stream: the product reads rmsnorm(x) * weight */
  norm?: { weight: Tensor; eps: number };
  lora?: LoraPhase;
  /** units are q|k|v column pairs of a head, rotated into out (q) and the caches (see gemv.wgsl) */
  rope?: { shape: QkvShape; kCache: Tensor; vCache: Tensor; kvStart: Tensor; cosSin: Tensor };
  /** units are (gate, up) column pairs: out [M, N/2] = silu(gate) * up */
  swiglu?: boolean;
  /** no columns stored: per row, the best (value, index) of each workgroup's columns into `partials`
   * (argmaxFinal finishes); returns the number of partials per row */
  argmax?: { partials: Tensor };
  tiling?: "workgroup" | "register";
}

/** Partials per row an argmax GEMV over `n` columns writes (size argmaxFinal's input with it). */
export function gemvArgmaxGroups(gpu: Gpu, n: number, tiling = gpu.matmulTiling): number {
  return Math.ceil(n / (tiling === "workgroup" ? ARGMAX_COLS : 64));
}

/** Units per workgroup of the argmax variant on GPUs: 8 threads a column, ~19,000 workgroups at 152k. */
const ARGMAX_COLS = 8;

export function gemv(gpu: Gpu, s: GemvSpec): number {
  const N = s.w.rows, K = s.w.rowElems, M = s.M;
  const lda = s.lda ?? K, ldc = s.ldc ?? s.out.rowElems, aOff = s.aOff ?? 0;
  const name = s.w.name || "gemv";
  check(M >= 1 && M <= GEMV_MAX_ROWS, () => `${name}: gemv takes 1 to ${GEMV_MAX_ROWS} rows, got ${M}`);
  check(K % 4 === 0 && lda % 4 === 0 && aOff % 4 === 0, () => `${name}: gemv needs K, lda, offset % 4 == 0`);
  check(
    aOff + (M - 1) * lda + K <= s.x.numel,
    () => `${name}: x [${s.x.shape}] too small for ${M} rows of ${K}`,
  );
  const pair = !!s.rope || !!s.swiglu;
  check(!pair || s.w.chunks.length === 1, () => `${name}: paired units need the weight in one binding`);
  check(!s.argmax || s.w.chunks.length === 1, () => `${name}: argmax needs the weight in one binding`);
  if (s.norm) {
    check(s.norm.weight.numel === K, () => `${name}: norm weight of ${s.norm!.weight.numel}, K ${K}`);
  }
  if (s.rope) {
    const r = s.rope.shape;
    check(N === (r.heads + 2 * r.kvHeads) * r.headDim, () => `${name}: rope over ${N} columns`);
    check(M === r.batch * r.t, () => `${name}: ${M} rows for ${r.batch} x ${r.t}`);
    check(r.past + r.t <= r.tCache, () => `${name}: cache of ${r.tCache} cannot hold ${r.past}+${r.t}`);
  }
  if (s.swiglu) check(N % 2 === 0 && ldc >= N / 2, () => `${name}: swiglu over ${N} columns into ${ldc}`);
  if (s.lora) {
    for (const g of s.lora.segments) check(g.c1 <= N, () => `${name}: LoRA segment past ${N} columns`);
  }
  const tiling = s.tiling ?? gpu.matmulTiling;
  const unit = s.rope ? "rope" : s.swiglu ? "swiglu" : s.argmax ? "argmax" : "column";
  const key: GemvKey = {
    tiling,
    cols: unit === "argmax" && tiling === "workgroup" ? ARGMAX_COLS : 1,
    rows: M,
    wDtype: weightDtype(gpu, s.w),
    norm: !!s.norm,
    bias: !!s.bias,
    residual: !!s.residual,
    accumulate: !!s.accumulate,
    lora: !!s.lora,
    unit,
  };
  const flags = [key.norm, key.bias, key.residual, key.accumulate, key.lora].reduce(
    (a, f, i) => a | (f ? 1 << i : 0),
    0,
  );
  const k = gpu.kernelByKey(
    `gv${key.tiling[0]}${key.cols}${key.rows}${key.wDtype}${flags}${key.unit}`,
    "gemv",
    tiling === "workgroup" ? "gemv_wg" : "gemv_row",
    () => gemvDefines(key),
  );
  let groups = 0;
  for (const c of s.w.chunks) {
    const n = c.rows;
    // a chunk without a segment keeps the variant (its bindings) with no segment to add
    const l = chunkLora(s.lora, false, c.rowStart === 0, c.rowStart, n, s.w.chunks.length) ??
      (s.lora ? { ...s.lora, segments: [] } : undefined);
    const seg: number[] = [];
    for (const g of l?.segments ?? []) seg.push(g.c0, g.c1, g.b0, 0);
    const units = pair ? n / 2 : n;
    groups = Math.ceil(units / (tiling === "workgroup" ? key.cols : 64));
    if (s.argmax) {
      check(s.argmax.partials.numel >= M * groups * 2, () => `${name}: argmax partials too small`);
    }
    const r = s.rope?.shape;
    gpu.dispatch(
      k,
      {
        m: M,
        n,
        k: K,
        lda,
        ldc,
        c_off: (s.colOffset ?? 0) + c.rowStart,
        a_off: aOff,
        c_row_off: s.rowOffset ?? 0,
        alpha: s.alpha ?? 1,
        eps: s.norm?.eps ?? 0,
        units,
        t: r?.t ?? 1,
        lora_r: l?.r ?? 0,
        lora_scale: l?.scale ?? 0,
        lora_nseg: l?.segments.length ?? 0,
        ld2: l?.ld ?? 0,
        sum_slices: l?.slices ?? 1,
        sum_stride: l?.stride ?? 0,
        heads: r?.heads ?? 0,
        kv_heads: r?.kvHeads ?? 0,
        head_dim: r?.headDim ?? 0,
        t_cache: r?.tCache ?? 0,
        past: r?.past ?? 0,
        seg,
      },
      {
        1: s.x.buffer,
        2: s.w.chunkBinding(c),
        3: s.argmax ? undefined : s.out.buffer,
        4: s.bias?.buffer, // chunks are column blocks: each gets its columns' bias and residual
        5: s.residual?.buffer,
        6: l?.input.buffer,
        7: l?.w.buffer,
        8: s.norm?.weight.buffer,
        9: s.rope?.kCache.buffer,
        10: s.rope?.vCache.buffer,
        11: s.rope?.kvStart.buffer,
        12: s.rope?.cosSin.buffer,
        13: s.argmax?.partials.buffer,
      },
      gridFlat(gpu, groups),
      {
        flops: 2 * M * n * K,
        bytes: n * K * bytesPerElement(s.w.dtype) + 4 * M * (K + n),
      },
    );
  }
  return groups;
}
