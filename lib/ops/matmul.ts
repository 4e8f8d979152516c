// Matmul op wrappers over kernels/matmul.wgsl: `matmul` (general layouts, groups, dropout on an operand,
// summed input slices, k-splits, the fused LoRA products) and `linear` (y = x W^T, the forward projection).
// The shape contract of every operand is checked here, before anything is recorded.

import { type Gpu, WIDE_FLOPS, WIDE_WORKGROUPS } from "../gpu/context.ts";
import type { Defines } from "../gpu/preprocess.ts";
import { bytesPerElement, Tensor } from "../tensor.ts";
import { check, grid1d, weightDtype } from "./common.ts";
import { gemv } from "./gemv.ts";

/** Outputs per invocation along m and n, and the workgroup's side (16 on GPUs, 8 on CPU adapters: fewer
 * lanes per barrier): a tile of C is wgs*tm x wgs*tn. */
export interface Tile {
  tm: 2 | 4 | 8;
  tn: 4 | 8;
  wgs?: 8 | 16;
}

const sideOf = (t: Tile) => t.wgs ?? 16;

/** Every variant of kernels/matmul.wgsl's `tile` entry point: the one place its defines are named. */
export interface MatmulKey {
  tile: Tile;
  /** storage of W (packed.wgsl): f32, bf16, f16 or native f16 (f16n) */
  wDtype: string;
  aKM: boolean;
  wKN: boolean;
  bias: boolean;
  residual: boolean;
  accumulate: boolean;
  /** dropout applied where this operand is read */
  drop: "a" | "w" | null;
  /** this operand is the sum of slices */
  sum: "a" | "w" | null;
  /** partial sums of k-slices into output slices */
  splitK: boolean;
  /** the LoRA product fused after the base product: forward (B), backward into dx (A), with dropout */
  lora: "b" | "a" | "a_drop" | null;
  /** A's rows / C's rows through an index (the loss rows of a step) */
  aRows: boolean;
  cRows: boolean;
}

/** A few characters that name a MatmulKey (Gpu.kernelByKey's cache key). */
export function matmulKeyString(k: MatmulKey): string {
  const flags = [k.aKM, k.wKN, k.bias, k.residual, k.accumulate, k.splitK, k.aRows, k.cRows]
    .reduce((a, f, i) => a | (f ? 1 << i : 0), 0);
  return `mm${k.tile.tm}${k.tile.tn}${sideOf(k.tile)}${k.wDtype}${flags}${k.drop ?? "-"}${k.sum ?? "-"}${
    k.lora ?? "-"
  }`;
}

export function matmulDefines(k: MatmulKey): Defines {
  return {
    TM: k.tile.tm,
    TN: k.tile.tn,
    WGS: sideOf(k.tile),
    W_DTYPE: k.wDtype,
    W_BINDING: 2,
    A_KM: k.aKM,
    W_KN: k.wKN,
    HAS_BIAS: k.bias,
    RESIDUAL: k.residual,
    ACCUMULATE: k.accumulate,
    DROP_A: k.drop === "a",
    DROP_W: k.drop === "w",
    SUM_A: k.sum === "a",
    SUM_W: k.sum === "w",
    SPLIT_K: k.splitK,
    LORA: k.lora !== null,
    LORA_B: k.lora === "b",
    LORA_A: k.lora === "a" || k.lora === "a_drop",
    LORA_DROP: k.lora === "a_drop",
    A_ROWS: k.aRows,
    C_ROWS: k.cRows,
  };
}

/** One problem of a grouped product (see kernels/matmul.wgsl): its rows, depth and offsets. */
export interface MatmulGroup {
  m: number;
  /** depth (default: the spec's K) */
  k?: number;
  aOff?: number;
  wOff?: number;
  colOffset?: number;
  rowOffset?: number;
  /** dropout seed (with `dropout`) */
  seed?: number;
}

/** The LoRA product fused after the base product (kernels/matmul.wgsl LORA_B / LORA_A). */
export interface LoraPhase {
  kind: "b" | "a";
  /** U (forward) or dU (backward), [M, ld] with `slices` copies `stride` elements apart (summed) */
  input: Tensor;
  ld: number;
  slices: number;
  stride: number;
  /** forward: stacked lora_B [sum of widths, r]; backward: stacked lora_A [nseg * r, N] */
  w: Tensor;
  r: number;
  /** forward only: multiplies the LoRA product */
  scale: number;
  /** segments: output columns [c0, c1) and their first row in stacked B (forward); dropout seeds (backward) */
  segments: { c0: number; c1: number; b0: number; seed: number }[];
  /** backward: dropout probability (0: none) */
  p: number;
}

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
  /** W's leading dimension (default: K for nk, N for kn) and element offset; N and K override the
   * weight's shape (a window of an activation used as W) */
  ldw?: number;
  wOff?: number;
  N?: number;
  K?: number;
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
  /** several problems of the same N in one dispatch (they override M and the offsets) */
  groups?: MatmulGroup[];
  /** dropout where an operand is read, seeded per group */
  dropout?: { operand: "a" | "w"; p: number };
  /** an operand that is the sum of `slices` copies `stride` elements apart */
  sum?: { operand: "a" | "w"; slices: number; stride: number };
  /** write alpha * the k-slices' partial sums into `count` output slices `stride` elements apart (the
   * caller sums them where it reads them, or with reduceSlices) instead of one result */
  slices?: { count: number; stride: number };
  lora?: LoraPhase;
  /** row m of A ([M, K] layout) is row aRows[m] of `a`; row m of C is row cRows[m] (u32 index tensors) */
  aRows?: Tensor;
  cRows?: Tensor;
  /** Override the tile (tests) */
  tile?: Tile;
  /** Override the k-split of a plain product (1 = none) */
  splitK?: number;
}

/** Below this many flops a CPU adapter takes the 8x8-invocation tile (see planMatmul). */
const SMALL_CPU_FLOPS = 10e6;

/** Depth of the shallowest k-slice worth a split (4 BK steps). */
const MIN_SLICE_K = 64;

/** Depth of each of `split` k-slices over k: whole BK (16) steps. */
function sliceDepth(k: number, split: number): number {
  return Math.ceil(k / split / 16) * 16;
}

/** The k-slices a split into `split` gives (fewer when the depth rounds up). */
export function kSlices(k: number, split: number): number {
  return split > 1 ? Math.ceil(k / sliceDepth(k, split)) : 1;
}

/** The tiles a GPU tries, largest first: the first that launches enough workgroups is taken. */
const GPU_TILES: Tile[] = [{ tm: 8, tn: 8 }, { tm: 4, tn: 8 }, { tm: 8, tn: 4 }, { tm: 4, tn: 4 }, {
  tm: 2,
  tn: 4,
}];

function tilesOf(t: Tile, rows: number[], n: number): number {
  const w = sideOf(t);
  return Math.ceil(n / (w * t.tn)) * rows.reduce((a, m) => a + Math.ceil(m / (w * t.tm)), 0);
}

export interface MatmulPlan {
  tile: Tile;
  /** k-slices (1: none) */
  split: number;
  /** workgroups of the product dispatch */
  workgroups: number;
  /** why the product launches fewer than WIDE_WORKGROUPS workgroups, when it does and matters */
  narrow?: string;
}

/**
 * Tile and k-split for a product of `rows` (per group) x n over depth k. GPUs: the largest tile that launches
 * WIDE_WORKGROUPS (two per SM of an H200), else the smallest and, where `splittable`, enough k-slices.
 * CPU adapters (whose invocations are threads): the largest tile the shape fills, no split.
 */
export function planMatmul(gpu: Gpu, rows: number[], n: number, k: number, splittable: boolean): MatmulPlan {
  const flops = 2 * rows.reduce((a, m) => a + m, 0) * n * k;
  if (gpu.caps.cpuAdapter) {
    // below ~10 MFLOP a product is dominated by barrier rounds: 8x8 invocations of 8x8 outputs ran 10-20%
    // faster there on lavapipe (400 rows by 64/192 wide), 16x16 ran 20-25% faster from 50 MFLOP up
    const tile: Tile = flops <= SMALL_CPU_FLOPS
      ? { tm: 8, tn: 8, wgs: 8 }
      : { tm: Math.max(...rows) <= 64 ? 4 : 8, tn: n <= 64 ? 4 : 8 };
    return { tile, split: 1, workgroups: tilesOf(tile, rows, n) };
  }
  for (const tile of GPU_TILES) {
    const tiles = tilesOf(tile, rows, n);
    if (tiles >= WIDE_WORKGROUPS) return { tile, split: 1, workgroups: tiles };
  }
  const tile = GPU_TILES[GPU_TILES.length - 1];
  const tiles = tilesOf(tile, rows, n);
  const most = Math.floor(k / MIN_SLICE_K);
  let split = 1;
  if (splittable && flops > WIDE_FLOPS) {
    // slices are whole BK steps deep, so a split may come out shallower than asked: ask until it is not
    for (let want = Math.ceil(WIDE_WORKGROUPS / tiles); want <= most; want++) {
      split = kSlices(k, want);
      if (tiles * split >= WIDE_WORKGROUPS) break;
    }
  }
  const workgroups = tiles * split;
  if (workgroups >= WIDE_WORKGROUPS || flops <= WIDE_FLOPS) return { tile, split, workgroups };
  return {
    tile,
    split,
    workgroups,
    narrow: splittable
      ? `${tiles} tiles of 32x64 and k = ${k}: at most ${most} k-slices of ${MIN_SLICE_K}`
      : `${tiles} tiles of 32x64; this product is not split (its output is read as one)`,
  };
}

interface Resolved {
  M: number;
  N: number;
  K: number;
  lda: number;
  ldw: number;
  ldc: number;
  groups: Required<MatmulGroup>[];
}

function resolve(s: MatmulSpec): Resolved {
  const aKM = s.aLayout === "km", wKN = s.wLayout === "kn";
  const N = s.N ?? (wKN ? s.w.rowElems : s.w.rows);
  const K = s.K ?? (wKN ? s.w.rows : s.w.rowElems);
  const lda = s.lda ?? (aKM ? s.M : K);
  const ldw = s.ldw ?? (wKN ? N : K);
  const ldc = s.ldc ?? s.out.rowElems;
  const groups = (s.groups ?? [{ m: s.M }]).map((g) => ({
    m: g.m,
    k: g.k ?? K,
    aOff: g.aOff ?? s.aOff ?? 0,
    wOff: g.wOff ?? s.wOff ?? 0,
    colOffset: g.colOffset ?? s.colOffset ?? 0,
    rowOffset: g.rowOffset ?? s.rowOffset ?? 0,
    seed: g.seed ?? 0,
  }));
  return { M: s.M, N, K, lda, ldw, ldc, groups };
}

/** The operands' extents against their tensors, per group: an op that would read or write past a buffer
 * is an error naming the weight, before anything is recorded. */
function checkShapes(s: MatmulSpec, r: Resolved): void {
  const name = s.w.name || "matmul";
  const aKM = s.aLayout === "km", wKN = s.wLayout === "kn";
  const sliceA = s.sum?.operand === "a" ? (s.sum.slices - 1) * s.sum.stride : 0;
  const sliceW = s.sum?.operand === "w" ? (s.sum.slices - 1) * s.sum.stride : 0;
  const outSlices = s.slices ? (s.slices.count - 1) * s.slices.stride : 0;
  check(r.groups.length >= 1 && r.groups.length <= 4, () => `${name}: ${r.groups.length} groups (1 to 4)`);
  for (const g of r.groups) {
    if (g.m === 0) continue;
    check(g.colOffset + r.N <= r.ldc, () => `${name}: output columns ${g.colOffset}+${r.N} exceed ${r.ldc}`);
    check(
      (g.rowOffset + g.m) * r.ldc + outSlices <= s.out.numel,
      () => `${name}: output rows ${g.rowOffset}+${g.m} exceed the output [${s.out.shape}]`,
    );
    if (g.k === 0) continue;
    const lastA = aKM ? g.aOff + (g.k - 1) * r.lda + g.m : g.aOff + (g.m - 1) * r.lda + g.k;
    check(
      lastA + sliceA <= s.a.numel,
      () => `${name}: A needs ${lastA + sliceA} elements, has ${s.a.numel} (shape [${s.a.shape}])`,
    );
    if (s.w.chunks.length === 1) {
      const lastW = wKN ? g.wOff + (g.k - 1) * r.ldw + r.N : g.wOff + (r.N - 1) * r.ldw + g.k;
      check(
        lastW + sliceW <= s.w.numel,
        () => `${name}: W needs ${lastW + sliceW} elements, has ${s.w.numel} (shape [${s.w.shape}])`,
      );
    }
  }
  if (s.bias) {
    for (const g of r.groups) {
      check(s.bias.numel >= g.colOffset + r.N, () => `${name}: bias shorter than ${g.colOffset + r.N}`);
    }
  }
  if (s.residual) check(s.residual.numel >= s.out.numel, () => `${name}: residual smaller than the output`);
  check(!(s.aRows && s.cRows), () => `${name}: rows of A and C through an index at once`);
  check(!s.aRows || s.aLayout !== "km", () => `${name}: indexed rows of A need its [M, K] layout`);
  for (const idx of [s.aRows, s.cRows]) {
    if (idx) {
      check(
        idx.dtype === "u32" && idx.numel >= s.M,
        () => `${name}: a row index of ${idx.numel} for ${s.M} rows`,
      );
    }
  }
  const l = s.lora;
  if (l) {
    check(
      r.groups.length === 1 && s.w.chunks.length === 1,
      () => `${name}: LoRA with groups or a split weight`,
    );
    check((s.alpha ?? 1) === 1, () => `${name}: LoRA with alpha ${s.alpha}`);
    check(
      l.segments.length >= 1 && l.segments.length <= 4,
      () => `${name}: ${l.segments.length} LoRA segments`,
    );
    const nseg = l.segments.length, M = r.groups[0].m;
    check(
      l.ld >= nseg * l.r && (M - 1) * l.ld + nseg * l.r + (l.slices - 1) * l.stride <= l.input.numel,
      () => `${name}: LoRA input [${l.input.shape}] is too small for ${M} rows of ${nseg} x r ${l.r}`,
    );
    if (l.kind === "b") {
      const rowsB = l.segments.reduce((a, g) => Math.max(a, g.b0 + g.c1 - g.c0), 0);
      check(
        rowsB * l.r <= l.w.numel,
        () => `${name}: stacked lora_B [${l.w.shape}] has fewer than ${rowsB} rows`,
      );
      for (const g of l.segments) {
        check(
          g.c0 < g.c1 && g.c1 <= r.N,
          () => `${name}: LoRA segment [${g.c0}, ${g.c1}) outside ${r.N} columns`,
        );
      }
    } else {
      check(
        nseg * l.r * r.N <= l.w.numel,
        () => `${name}: stacked lora_A [${l.w.shape}] is not [${nseg * l.r}, ${r.N}]`,
      );
      if (l.p > 0) {
        const g = r.groups[0];
        check(
          g.colOffset === 0 && g.rowOffset === 0 && r.ldc === r.N,
          () => `${name}: LoRA dropout in dx needs dx [M, N] from element 0 (the mask is x's)`,
        );
      }
    }
  }
}

export function matmul(gpu: Gpu, s: MatmulSpec): void {
  const r = resolve(s);
  checkShapes(s, r);
  const wKN = s.wLayout === "kn", aKM = s.aLayout === "km";
  const name = s.w.name || "matmul";
  const special = !!(s.groups || s.dropout || s.sum || s.slices || s.lora || s.aRows || s.cRows);
  // M <= 8 rows against [N, K] weights (decode steps): a matrix-vector kernel
  if (
    !special && !wKN && !aKM && s.M <= 8 && r.K % 4 === 0 && r.lda % 4 === 0 && (s.aOff ?? 0) % 4 === 0 &&
    r.ldw === r.K && (s.wOff ?? 0) === 0 && s.N === undefined
  ) {
    gemv(gpu, {
      x: s.a,
      lda: r.lda,
      aOff: s.aOff ?? 0,
      w: s.w,
      M: s.M,
      out: s.out,
      ldc: r.ldc,
      colOffset: r.groups[0].colOffset,
      rowOffset: r.groups[0].rowOffset,
      bias: s.bias,
      residual: s.residual,
      accumulate: s.accumulate,
      alpha: s.alpha,
    });
    return;
  }
  check(
    !(s.groups || s.dropout || s.sum || s.slices) || s.w.chunks.length === 1,
    () => `${name}: grouped, dropout or sliced products need W in one binding`,
  );
  check(!wKN || !s.bias || s.w.chunks.length === 1, () => `${name}: bias with a split K`);
  const alpha = s.alpha ?? 1;
  const rows = r.groups.map((g) => g.m);
  const maxK = Math.max(...r.groups.map((g) => g.k));
  // an explicit output split is the caller's; an automatic one (a plain product, no LoRA) adds a reduction
  const autoSplit = !s.slices && !s.lora && !s.dropout && !s.sum && !s.cRows && r.groups.length === 1;
  const plan = planMatmul(gpu, rows, r.N, maxK, autoSplit || !!s.slices);
  const tile = s.tile ?? plan.tile;
  const outSplit = s.slices?.count ?? 1;
  const split = s.slices ? outSplit : s.splitK ?? (autoSplit ? plan.split : 1);
  s.w.chunks.forEach((c, ci) => {
    // [N,K] chunks are column blocks of C; [K,N] chunks are K-blocks summed into C
    const first = ci === 0 || !wKN;
    const n = wKN || s.w.chunks.length === 1 ? r.N : c.rows;
    const kk = wKN && s.w.chunks.length > 1 ? c.rows : maxK;
    const groups = r.groups.map((g) => ({
      ...g,
      k: wKN && s.w.chunks.length > 1 ? c.rows : g.k,
      colOffset: g.colOffset + (wKN || s.w.chunks.length === 1 ? 0 : c.rowStart),
      aOff: g.aOff + (wKN && s.w.chunks.length > 1 ? (aKM ? c.rowStart * r.lda : c.rowStart) : 0),
    }));
    const accumulate = !!s.accumulate || !first;
    const residual = first ? s.residual : undefined;
    const bias = first ? s.bias : undefined;
    const wBinding = s.w.chunkBinding(c);
    const cost = {
      flops: 2 * groups.reduce((a, g) => a + g.m * n * g.k, 0),
      bytes: groups.reduce((a, g) => a + 4 * g.m * g.k + 4 * g.m * n * (accumulate || residual ? 2 : 1), 0) +
        n * kk * bytesPerElement(s.w.dtype),
      narrow: plan.narrow,
    };
    const key: MatmulKey = {
      tile,
      wDtype: weightDtype(gpu, s.w),
      aKM,
      wKN,
      bias: !!bias,
      residual: !!residual,
      accumulate,
      drop: s.dropout?.operand ?? null,
      sum: s.sum?.operand ?? null,
      splitK: split > 1,
      lora: s.lora ? (s.lora.kind === "b" ? "b" : s.lora.p > 0 ? "a_drop" : "a") : null,
      aRows: !!s.aRows,
      cRows: !!s.cRows,
    };
    const kChunk = split > 1 ? sliceDepth(kk, split) : 0;
    const slices = split > 1 ? Math.ceil(kk / kChunk) : 1;
    if (s.slices && slices !== outSplit) {
      // fewer slices than asked (depth too short): the rest must still read as zeros
      gpu.clear(
        s.out.raw.buffer,
        s.out.raw.offset + slices * s.slices.stride * 4,
        (outSplit - slices) * s.slices.stride * 4,
      );
    }
    let scratch: Tensor | null = null;
    let out = s.out;
    let sliceStride = s.slices?.stride ?? 0;
    const plainSplit = split > 1 && !s.slices;
    if (plainSplit) {
      // k-slices into a scratch [slices, M, n], then reduced in order (deterministic)
      sliceStride = r.M * n;
      scratch = Tensor.empty(gpu, [slices * r.M * n], "f32", "matmul_k_slices");
      out = scratch;
    }
    const tileKey = plainSplit ? { ...key, bias: false, residual: false, accumulate: false } : key;
    const k = gpu.kernelByKey(matmulKeyString(tileKey), "matmul", "tile", () => matmulDefines(tileKey));
    const bm = sideOf(tile) * tile.tm;
    let tile0 = 0;
    const grp: number[] = [];
    for (const g of groups) {
      grp.push(
        g.m,
        g.k,
        g.aOff,
        g.wOff,
        plainSplit ? 0 : g.colOffset,
        plainSplit ? 0 : g.rowOffset,
        g.seed >>> 0,
        tile0,
      );
      tile0 += Math.ceil(g.m / bm);
    }
    // a chunk without a segment keeps the variant (its bindings) with no segment to add
    const l = chunkLora(s.lora, wKN, first, c.rowStart, n, s.w.chunks.length) ??
      (s.lora ? { ...s.lora, segments: [] } : undefined);
    const seg: number[] = [];
    for (const g of l?.segments ?? []) seg.push(g.c0, g.c1, g.b0, g.seed >>> 0);
    gpu.dispatch(
      k,
      {
        n,
        lda: r.lda,
        ldw: r.ldw,
        ldc: plainSplit ? n : r.ldc,
        alpha: plainSplit ? 1 : alpha,
        groups: groups.length,
        slice_stride: sliceStride,
        k_chunk: kChunk,
        sum_slices: l ? l.slices : s.sum?.slices ?? 1,
        sum_stride: l ? l.stride : s.sum?.stride ?? 0,
        p_drop: s.dropout?.p ?? l?.p ?? 0,
        lora_r: l?.r ?? 0,
        lora_scale: l?.scale ?? 0,
        lora_nseg: l?.segments.length ?? 0,
        ld2: l?.ld ?? 0,
        grp,
        seg,
      },
      {
        1: s.a.buffer,
        2: wBinding,
        3: out.buffer,
        4: bias && !plainSplit ? bias.buffer : undefined,
        5: residual && !plainSplit ? residual.buffer : undefined,
        6: l?.input.buffer,
        7: l?.w.buffer,
        9: (s.aRows ?? s.cRows)?.buffer,
      },
      [Math.ceil(n / (sideOf(tile) * tile.tn)), tile0, slices],
      cost,
    );
    if (scratch) {
      reduceSlices(gpu, s.out, [{
        partial: 0,
        m: r.M,
        n,
        slices,
        colOffset: groups[0].colOffset,
        rowOffset: groups[0].rowOffset,
        ldc: r.ldc,
      }], { partials: scratch, alpha, accumulate, bias, residual });
      scratch.dispose();
    }
  });
}

/**
 * A LoRA phase for one chunk of a split weight: [K, N] chunks are k-blocks summed into C, so the first carries
 * it; [N, K] chunks are column blocks, each carrying the segments' part within its columns.
 */
export function chunkLora(
  l: LoraPhase | undefined,
  wKN: boolean,
  first: boolean,
  col0: number,
  cols: number,
  chunks: number,
): LoraPhase | undefined {
  if (!l || chunks === 1) return l;
  if (wKN) return first ? l : undefined;
  const segments = l.segments
    .map((g) => {
      const c0 = Math.max(g.c0, col0), c1 = Math.min(g.c1, col0 + cols);
      return { c0: c0 - col0, c1: c1 - col0, b0: g.b0 + c0 - g.c0, seed: g.seed };
    })
    .filter((g) => g.c0 < g.c1);
  return segments.length ? { ...l, segments } : undefined;
}

/** One output of reduceSlices: `slices` partial sums [m, n] from element `partial` of the partials. */
export interface SliceJob {
  partial: number;
  m: number;
  n: number;
  slices: number;
  colOffset: number;
  rowOffset: number;
  ldc: number;
}

/** out[rowOffset + i, colOffset + j] (+)= alpha * sum_z slice_z[i, j] (+ bias, residual), for up to 2 jobs
 * in one dispatch. */
export function reduceSlices(
  gpu: Gpu,
  out: Tensor,
  jobs: SliceJob[],
  o: { partials: Tensor; alpha?: number; accumulate?: boolean; bias?: Tensor; residual?: Tensor },
): void {
  check(jobs.length >= 1 && jobs.length <= 2, () => `reduce: ${jobs.length} jobs (1 or 2)`);
  let start = 0;
  const grp: number[] = [];
  for (const j of jobs) {
    check(j.partial + j.slices * j.m * j.n <= o.partials.numel, () => "reduce: partials too small");
    check((j.rowOffset + j.m - 1) * j.ldc + j.colOffset + j.n <= out.numel, () => "reduce: output too small");
    grp.push(j.m, j.n, j.partial, j.slices, j.colOffset, j.rowOffset, j.ldc, start);
    start += j.m * j.n;
  }
  const k = gpu.kernel("matmul", "reduce", {
    TM: 2,
    WGS: 16,
    TN: 4,
    W_DTYPE: "f32",
    W_BINDING: 2,
    ACCUMULATE: !!o.accumulate,
    HAS_BIAS: !!o.bias,
    RESIDUAL: !!o.residual,
  });
  gpu.dispatch(
    k,
    {
      n: 0,
      lda: 0,
      ldw: 0,
      ldc: 0,
      alpha: o.alpha ?? 1,
      groups: jobs.length,
      slice_stride: 0,
      k_chunk: 0,
      sum_slices: 0,
      sum_stride: 0,
      p_drop: 0,
      lora_r: 0,
      lora_scale: 0,
      lora_nseg: 0,
      ld2: 0,
      grp,
      seg: [],
    },
    { 3: out.buffer, 4: o.bias?.buffer, 5: o.residual?.buffer, 8: o.partials.buffer },
    grid1d(gpu, start),
    { bytes: jobs.reduce((a, j) => a + 4 * j.m * j.n * (j.slices + (o.accumulate ? 2 : 1)), 0) },
  );
}

export interface LinearOptions {
  bias?: Tensor;
  residual?: Tensor;
  accumulate?: boolean;
  /** Write into columns [colOffset, colOffset + N) of a wider output. */
  colOffset?: number;
  rowOffset?: number;
  alpha?: number;
  lora?: LoraPhase;
  tile?: Tile;
}

/** y = x W^T (+ bias): x [M, K] f32, W [N, K] (nn.Linear layout, any weight dtype, maybe chunked). */
export function linear(gpu: Gpu, x: Tensor, w: Tensor, out: Tensor, opts: LinearOptions = {}): void {
  check(
    w.rowElems === x.rowElems,
    () => `linear '${w.name}': x has ${x.rowElems} columns but the weight is [${w.shape}]`,
  );
  matmul(gpu, { a: x, w, M: x.rows, out, ...opts });
}
