// Matmul op wrappers over kernels/matmul.wgsl: `linear` (y = x W^T, the forward projection) and
// the general `matmul` used by the backward pass (dx = dy W, dW = dy^T x, LoRA products).

import { DEFAULT_WG, type Gpu } from "../gpu/context.ts";
import { bytesPerElement, Tensor } from "../tensor.ts";
import { check, grid1d, gridRows, weightDtype } from "./common.ts";

/** Workgroup-tile kernel (GPUs): TILE_WG x TILE_WG invocations, each TM x TN outputs (defines). */
const TILE_WG = 16;
/** Register-tile kernels (CPU adapters): WG_X x WG_Y invocations, each RM x RN outputs (defines). */
const REGTILE_GEOMETRY = { RM: 8, RN: 8, WG_X: 8, WG_Y: 4 } as const;

export interface MatmulSpec {
  /** f32 activations: [M, K] ("mk", default) or [K, M] ("km") with leading dimension lda */
  a: Tensor;
  aLayout?: "mk" | "km";
  lda?: number;
  /** element offset into a */
  aOff?: number;
  /** weights: [N, K] ("nk", nn.Linear) or [K, N] ("kn"); may be split into row chunks */
  w: Tensor;
  wLayout?: "nk" | "kn";
  M: number;
  out: Tensor;
  /** output leading dimension (default: out's row width) */
  ldc?: number;
  colOffset?: number;
  rowOffset?: number;
  bias?: Tensor;
  /** out = residual + ... (residual must be a different buffer from out) */
  residual?: Tensor;
  /** out += ... */
  accumulate?: boolean;
  alpha?: number;
  /** Override the device's default tiling (tests run both). */
  tiling?: "workgroup" | "register";
  /** Workgroup tiling: the number of k-slices (1 = no split; default: chosen from the shape). */
  splitK?: number;
  /** Workgroup tiling: outputs per invocation along m and n, 4 (64x64 tiles) or 8 (128x128; default for
   * M, N >= 128). */
  tile?: 4 | 8;
}

/** Workgroups a GPU wants in flight before a k-split pays (a few per SM on current GPUs). */
const WANT_WORKGROUPS = 256;
/** Shallowest k-slice worth a split (32 BK steps). */
const MIN_SLICE_K = 512;

/** How many k-slices for `tiles` output tiles over depth k; 1 when the grid is wide enough already. */
function chooseSplit(
  tiles: number,
  k: number,
  scratchBytesPerSlice: number,
  maxBindingBytes: number,
): number {
  if (tiles >= WANT_WORKGROUPS / 2) return 1;
  const s = Math.min(
    Math.ceil(WANT_WORKGROUPS / tiles),
    Math.floor(k / MIN_SLICE_K),
    Math.floor(maxBindingBytes / scratchBytesPerSlice),
  );
  return s >= 2 ? s : 1;
}

export function matmul(gpu: Gpu, s: MatmulSpec): void {
  const aKM = s.aLayout === "km", wKN = s.wLayout === "kn";
  const M = s.M;
  const N = wKN ? s.w.rowElems : s.w.rows;
  const K = wKN ? s.w.rows : s.w.rowElems;
  const lda = s.lda ?? (aKM ? M : K);
  const aOff = s.aOff ?? 0;
  const ldc = s.ldc ?? s.out.rowElems;
  const colOff = s.colOffset ?? 0, rowOff = s.rowOffset ?? 0;
  const name = s.w.name || "matmul";
  check(colOff + N <= ldc, () => `${name}: output columns ${colOff}+${N} exceed ${ldc}`);
  check((rowOff + M) * ldc <= s.out.numel, () => `${name}: output rows ${rowOff}+${M} exceed the output`);
  const lastA = aKM ? aOff + (K - 1) * lda + M : aOff + (M - 1) * lda + K;
  check(
    lastA <= s.a.numel,
    () => `${name}: A needs ${lastA} elements, has ${s.a.numel} (shape [${s.a.shape}])`,
  );
  if (s.bias) check(s.bias.numel >= colOff + N, () => `${name}: bias shorter than ${colOff + N}`);
  const register = (s.tiling ?? gpu.matmulTiling) === "register" &&
    (wKN ? N % 4 === 0 : !aKM && K % 4 === 0 && lda % 4 === 0 && aOff % 4 === 0);
  // M <= 8 (decode steps) against [N,K] weights: a matrix-vector kernel, whichever tiling
  const gemv = M <= 8 && !wKN && !aKM && K % 4 === 0 && lda % 4 === 0 && aOff % 4 === 0;
  // N <= 8 (the LoRA rank products): one output row per invocation, 8 accumulators
  const rowN8 = register && N <= 8 && !gemv;
  const T = register ? 0 : s.tile ?? (M >= 128 && N >= 128 ? 8 : 4);
  const defs = {
    ...(register || gemv ? {} : { TM: T, TN: T, TILE_WG }),
    ...(register && !gemv ? REGTILE_GEOMETRY : {}),
    W_DTYPE: weightDtype(gpu, s.w),
    W_BINDING: 2,
    W_VEC4: register || gemv,
    REGTILE: register && !gemv,
    GEMV: gemv,
    A_KM: aKM,
    W_KN: wKN,
    HAS_BIAS: !!s.bias,
    RESIDUAL: !!s.residual,
    ROW_N8: rowN8,
  };
  // C's extent per workgroup along n and m
  const [tn, tm] = register
    ? [REGTILE_GEOMETRY.RN * REGTILE_GEOMETRY.WG_X, REGTILE_GEOMETRY.RM * REGTILE_GEOMETRY.WG_Y]
    : [TILE_WG * T, TILE_WG * T];
  const entry = gemv
    ? (register ? "gemv_row" : "gemv_wg")
    : rowN8
    ? "row_n8"
    : register
    ? (wKN ? "regtile_kn" : "regtile")
    : "main";
  const alpha = s.alpha ?? 1;
  check(!wKN || !s.bias || s.w.chunks.length === 1, () => `${name}: bias with a split K`);
  s.w.chunks.forEach((c, i) => {
    // [N,K] chunks are column blocks of C; [K,N] chunks are K-blocks summed into C
    const first = i === 0 || !wKN;
    const k = gpu.kernel("matmul", entry, {
      ...defs,
      ACCUMULATE: !!s.accumulate || !first,
      RESIDUAL: first && !!s.residual,
    });
    const n = wKN ? N : c.rows, kk = wKN ? c.rows : K;
    const cOff = wKN ? colOff : colOff + c.rowStart;
    const aO = wKN ? aOff + (aKM ? c.rowStart * lda : c.rowStart) : aOff;
    const params = { m: M, n, k: kk, ldc, c_off: cOff, a_off: aO, c_row_off: rowOff, alpha, lda, k_chunk: 0 };
    const residual = first ? s.residual?.buffer : undefined;
    const tiles = Math.ceil(n / tn) * Math.ceil(M / tm);
    const split = register || gemv
      ? 1
      : s.splitK ?? chooseSplit(tiles, kk, M * n * 4, gpu.caps.maxBindingBytes);
    // compulsory traffic: A and W once, C written (and read when it accumulates or adds a residual)
    const cReads = (!!s.accumulate || !first) || (first && !!s.residual) ? 2 : 1;
    const cost = {
      flops: 2 * M * n * kk,
      bytes: 4 * M * kk + n * kk * bytesPerElement(s.w.dtype) + 4 * M * n * cReads,
    };
    if (split > 1) {
      // k-slices into a scratch [split, M, n], then their ordered sum through store_c
      const kChunk = Math.ceil(kk / split / 16) * 16, slices = Math.ceil(kk / kChunk);
      const partial = Tensor.empty(gpu, [slices * M * n], "f32", "matmul_k_slices");
      const ks = gpu.kernel("matmul", "main", {
        TM: T,
        TN: T,
        TILE_WG,
        W_DTYPE: defs.W_DTYPE,
        W_BINDING: 2,
        A_KM: aKM,
        W_KN: wKN,
        SPLIT_K: true,
      });
      gpu.dispatch(
        ks,
        { m: M, n, k: kk, ldc: n, c_off: 0, a_off: aO, c_row_off: 0, alpha, lda, k_chunk: kChunk },
        { 1: s.a.buffer, 2: s.w.chunkBinding(c), 3: partial.buffer },
        [Math.ceil(n / tn), Math.ceil(M / tm), slices],
        { flops: cost.flops, bytes: cost.bytes - 4 * M * n * (cReads - 1) },
      );
      const kr = gpu.kernel("matmul", "splitk_reduce", {
        TM: T,
        TN: T,
        TILE_WG,
        W_DTYPE: "f32",
        W_BINDING: 2,
        HAS_BIAS: !!s.bias && first,
        RESIDUAL: first && !!s.residual,
        ACCUMULATE: !!s.accumulate || !first,
        SPLIT_REDUCE: true,
      });
      gpu.dispatch(
        kr,
        { m: M, n, k: kk, ldc, c_off: cOff, a_off: aO, c_row_off: rowOff, alpha, lda, k_chunk: slices },
        {
          3: s.out.buffer,
          4: first ? s.bias?.buffer : undefined,
          5: residual,
          6: partial.buffer,
        },
        grid1d(gpu, M * n),
        { bytes: 4 * M * n * (slices + cReads) },
      );
      partial.dispose();
      return;
    }
    gpu.dispatch(
      k,
      params,
      {
        1: s.a.buffer,
        2: s.w.chunkBinding(c),
        3: s.out.buffer,
        4: first ? s.bias?.buffer : undefined,
        5: residual,
      },
      gemv ? (register ? grid1d(gpu, n) : gridRows(gpu, n)) : rowN8 ? [Math.ceil(M / DEFAULT_WG)] : [
        Math.ceil(n / tn),
        Math.ceil(M / tm),
      ],
      cost,
    );
  });
}

export interface LinearOptions {
  bias?: Tensor;
  residual?: Tensor;
  accumulate?: boolean;
  /** Write into columns [colOffset, colOffset + N) of a wider output. */
  colOffset?: number;
  rowOffset?: number;
  alpha?: number;
  tiling?: "workgroup" | "register";
}

/** y = x W^T (+ bias): x [M, K] f32, W [N, K] (nn.Linear layout, any weight dtype, maybe chunked). */
export function linear(gpu: Gpu, x: Tensor, w: Tensor, out: Tensor, opts: LinearOptions = {}): void {
  check(
    w.rowElems === x.rowElems,
    () => `linear '${w.name}': x has ${x.rowElems} columns but the weight is [${w.shape}]`,
  );
  matmul(gpu, { a: x, w, M: x.rows, out, ...opts });
}
