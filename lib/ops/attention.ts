// Attention op wrappers over kernels/attention.wgsl. Three layouts of the same causal GQA attention:
//   flash       (training and prompts on GPUs) tiles of queries sharing key/value tiles in workgroup memory
//   rows        a workgroup per query (key) row: decode steps everywhere, and an A/B alternative
//   invocation  an invocation per query (key) row: CPU adapters, where invocations are threads
// INOCULUM_ATTENTION=flash|rows|invocation picks one for a run (Gpu.attention); tests run all of them.

import { DEFAULT_WG, type Gpu, WIDE_FLOPS, WIDE_WORKGROUPS } from "../gpu/context.ts";
import type { Defines } from "../gpu/preprocess.ts";
import { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";
import type { QkvShape } from "./rope.ts";

export type AttentionKernel = "flash" | "rows" | "invocation";

export interface AttentionOption {
  /** the layout (default: the device's, Gpu.attention) */
  kernel?: AttentionKernel;
  /** decode steps: keys per slice of split decoding (0: none; default: chosen on GPUs for long contexts) */
  splitKeys?: number;
}

/** Keys per slice for split decoding (0: none): on GPUs when a decode step's attention is more than
 * WIDE_FLOPS and its B x H rows alone would not fill the device; slices of at least 64 keys. */
export function splitKeysFor(gpu: Gpu, s: QkvShape): number {
  const ctx = s.past + s.t, rows = s.batch * s.heads;
  if (gpu.caps.cpuAdapter || s.t !== 1 || rows >= WIDE_WORKGROUPS) return 0;
  if (4 * rows * s.headDim * ctx <= WIDE_FLOPS) return 0;
  const slices = Math.min(Math.ceil(WIDE_WORKGROUPS / rows), Math.ceil(ctx / 64));
  return slices > 1 ? Math.ceil(ctx / slices) : 0;
}

/** The flash kernels' tile: BQ rows per workgroup (TPR invocations each), the other side in BKV-row tiles. */
export interface FlashTile {
  bq: number;
  bkv: number;
  tpr: number;
}

/**
 * The largest flash tile whose workgroup memory fits the device (the dq and dk/dv passes hold two tiles of
 * each side: (2 BQ + 2 BKV) rows of D4 + 1 vec4, and 2 BQ x BKV pair values).
 */
export function flashTile(gpu: Gpu, headDim: number): FlashTile {
  const d4 = Math.ceil(headDim / 4), rs = d4 + 1;
  const tpr = d4 >= 4 ? 4 : d4 >= 2 ? 2 : 1;
  for (const [bq, bkv] of [[64, 32], [32, 32], [32, 16], [16, 16], [16, 8], [8, 8], [4, 4]]) {
    const bytes = 16 * rs * (2 * bq + 2 * bkv) + 8 * bq * bkv + 8 * bkv;
    if (bytes <= gpu.caps.workgroupStorageBytes && bq * tpr <= 256) return { bq, bkv, tpr };
  }
  throw new Error(
    `attention: head dim ${headDim} leaves no flash tile in ${gpu.caps.workgroupStorageBytes} bytes`,
  );
}

/** The defines every attention variant takes: the head dim and the rows kernels' dims per invocation. */
function headDefines(headDim: number): Defines {
  return { HEAD_DIM: headDim, DPT: Math.ceil(headDim / DEFAULT_WG) };
}

function flashDefines(gpu: Gpu, s: QkvShape) {
  const t = flashTile(gpu, s.headDim);
  // CPT: the vec4 chunks of a row each of its TPR invocations accumulates
  const CPT = Math.ceil(Math.ceil(s.headDim / 4) / t.tpr);
  return { ...headDefines(s.headDim), FLASH: true, BQ: t.bq, BKV: t.bkv, TPR: t.tpr, CPT, tile: t };
}

/**
 * Causal GQA attention of q [B*T, H*D] over the K/V cache [B*tCache, HKV*D] (keys kvStart[b]..past+t).
 * Writes o [B*T, H*D] and lse [B, H, T].
 */
export function attention(
  gpu: Gpu,
  s: QkvShape,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  kvStart: Tensor,
  o: Tensor,
  lse: Tensor,
  opts: AttentionOption = {},
): void {
  check(
    s.heads % s.kvHeads === 0,
    () => `attention: ${s.heads} heads not a multiple of ${s.kvHeads} kv heads`,
  );
  // a decode step (one query per sequence) goes by rows on GPUs, where B*H invocations would be all there
  // is; on CPU adapters by invocations, flattened over (b, h): the rows kernel's barriers per key chunk
  // made it 20x slower there (lavapipe, 160 sequences x 4 heads: 6.8 ms a step)
  const decode = opts.kernel === "invocation" || (opts.kernel === undefined && gpu.caps.cpuAdapter)
    ? "invocation"
    : "rows";
  const kind = s.t === 1 ? decode : kernelFor(gpu, s, opts);
  // q·k and p·v per attended (query, key) pair; q, K/V rows in use and o moved once
  const kvBytes = 2 * 4 * s.batch * (s.past + s.t) * s.kvHeads * s.headDim;
  const flops = 4 * s.batch * s.heads * s.headDim * attendedPairs(s);
  const cost = {
    flops,
    bytes: 2 * 4 * s.batch * s.t * s.heads * s.headDim + kvBytes,
    narrow: kind === "rows"
      ? `a decode step's ${
        s.batch * s.heads
      } (sequence, head) rows, not split (a short context or a CPU adapter)`
      : kind === "invocation"
      ? "one invocation per query row (the CPU adapters' layout)"
      : "query tiles x heads x sequences",
  };
  const bindings = {
    1: q.buffer,
    2: kCache.buffer,
    3: vCache.buffer,
    4: kvStart.buffer,
    5: o.buffer,
    6: lse.buffer,
  };
  const split = s.t === 1 ? opts.splitKeys ?? splitKeysFor(gpu, s) : 0;
  if (split > 0) {
    // split decoding: slices of the keys, a workgroup each, then their merge
    const slices = Math.ceil((s.past + 1) / split);
    const part = Tensor.empty(gpu, [s.batch * s.heads * slices * (s.headDim + 2)], "f32", "attention_slices");
    const params = { ...attentionParams(s), split };
    const defs = headDefines(s.headDim);
    gpu.dispatch(
      gpu.kernel("attention", "forward_split", defs),
      params,
      {
        1: q.buffer,
        2: kCache.buffer,
        3: vCache.buffer,
        4: kvStart.buffer,
        17: part.buffer,
      },
      [slices, s.heads, s.batch],
      { ...cost, narrow: undefined },
    );
    gpu.dispatch(gpu.kernel("attention", "split_merge", defs), params, {
      5: o.buffer,
      6: lse.buffer,
      17: part.buffer,
    }, [
      s.heads,
      s.batch,
    ], { bytes: 4 * part.numel + 2 * 4 * s.batch * s.heads * s.headDim });
    part.dispose();
    return;
  }
  if (kind === "flash") {
    const { tile, ...defs } = flashDefines(gpu, s);
    gpu.dispatch(gpu.kernel("attention", "flash_forward", defs), attentionParams(s), bindings, [
      Math.ceil(s.t / tile.bq),
      s.heads,
      s.batch,
    ], cost);
    return;
  }
  const k = gpu.kernel("attention", kind === "rows" ? "forward_rows" : "forward", headDefines(s.headDim));
  gpu.dispatch(
    k,
    attentionParams(s),
    bindings,
    kind === "rows" ? [s.t, s.heads, s.batch] : grid1d(gpu, s.batch * s.heads * s.t),
    cost,
  );
}

function kernelFor(gpu: Gpu, s: QkvShape, opts: AttentionOption): AttentionKernel {
  const k = opts.kernel ?? gpu.attention;
  // rows index the first dispatch dimension (at most 65,535 workgroups)
  return k === "rows" && s.t > 65535 ? "flash" : k;
}

/** (query, key) pairs a causal pass attends to per head and sequence, ignoring left padding. */
function attendedPairs(s: QkvShape): number {
  return s.t * s.past + s.t * (s.t + 1) / 2;
}

/**
 * Attention backward (past = 0, tCache = T): dq [B*T, H*D], dk/dv [B*T, HKV*D]; dsum [B*H*T] is scratch.
 */
export function attentionBackward(
  gpu: Gpu,
  s: QkvShape,
  t: { q: Tensor; k: Tensor; v: Tensor; kvStart: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  g: { dq: Tensor; dk: Tensor; dv: Tensor; dsum: Tensor },
  /** GQA dk/dv by query head, then summed per group (default on GPUs, where the workgroups are wanted;
   * on CPU adapters the per-head shares only add work) */
  opts: { perHead?: boolean } & AttentionOption = {},
): void {
  check(s.past === 0 && s.tCache === s.t, () => "attention backward: only full sequences (no KV cache)");
  const kind = kernelFor(gpu, s, opts);
  const flash = kind === "flash" ? flashDefines(gpu, s) : null;
  const defs: Defines = flash
    ? { ...headDefines(s.headDim), FLASH: true, BQ: flash.BQ, BKV: flash.BKV, TPR: flash.TPR, CPT: flash.CPT }
    : headDefines(s.headDim);
  const params = attentionParams(s);
  // rows of a pass: tiles (flash), rows or invocation blocks
  const grid = (n: number) =>
    flash ? Math.ceil(n / flash.tile.bq) : kind === "rows" ? n : Math.ceil(n / DEFAULT_WG);
  const kq = gpu.kernel(
    "attention",
    flash ? "flash_dq" : kind === "rows" ? "backward_dq_rows" : "backward_dq",
    defs,
  );
  // backward_dq: q·k, dO·v and ds·k per pair; backward_dkv: the same two dots, dv and dk updates
  const pairs = s.batch * s.heads * attendedPairs(s);
  const qBytes = 4 * s.batch * s.t * s.heads * s.headDim, kvBytes = 4 * s.batch * s.t * s.kvHeads * s.headDim;
  gpu.dispatch(
    kq,
    params,
    {
      1: t.q.buffer,
      2: t.k.buffer,
      3: t.v.buffer,
      4: t.kvStart.buffer,
      7: t.o.buffer,
      8: t.lse.buffer,
      9: t.dO.buffer,
      10: g.dq.buffer,
      11: g.dsum.buffer,
    },
    [grid(s.t), s.heads, s.batch],
    { flops: 6 * s.headDim * pairs, bytes: 4 * qBytes + 2 * kvBytes, narrow: narrowWhy(kind) },
  );
  // grouped-query attention: one row per (key, query head) into per-head shares, summed per group
  const group = s.heads / s.kvHeads;
  const perHead = group > 1 &&
    (opts.perHead ?? (!gpu.caps.cpuAdapter && grid(s.t) * s.kvHeads * s.batch < WIDE_WORKGROUPS));
  const dkH = perHead ? Tensor.empty(gpu, [s.batch * s.t, s.heads * s.headDim], "f32", "dk_heads") : g.dk;
  const dvH = perHead ? Tensor.empty(gpu, [s.batch * s.t, s.heads * s.headDim], "f32", "dv_heads") : g.dv;
  const kkv = gpu.kernel(
    "attention",
    flash ? "flash_dkv" : kind === "rows" ? "backward_dkv_rows" : "backward_dkv",
    { ...defs, PER_HEAD: perHead },
  );
  gpu.dispatch(
    kkv,
    params,
    {
      1: t.q.buffer,
      2: t.k.buffer,
      3: t.v.buffer,
      4: t.kvStart.buffer,
      8: t.lse.buffer,
      9: t.dO.buffer,
      12: g.dsum.buffer,
      13: dkH.buffer,
      14: dvH.buffer,
    },
    [grid(s.t), perHead ? s.heads : s.kvHeads, s.batch],
    {
      flops: 8 * s.headDim * pairs,
      bytes: 2 * qBytes + 2 * kvBytes + (perHead ? 2 * qBytes : 2 * kvBytes),
      narrow: narrowWhy(kind),
    },
  );
  if (perHead) {
    const ks = gpu.kernel("attention", "group_sum", headDefines(s.headDim));
    const n = s.batch * s.t * s.kvHeads * s.headDim;
    gpu.dispatch(
      ks,
      params,
      { 13: g.dk.buffer, 14: g.dv.buffer, 15: dkH.buffer, 16: dvH.buffer },
      grid1d(gpu, n),
      {
        bytes: 4 * n * 2 * (group + 1),
      },
    );
    dkH.dispose();
    dvH.dispose();
  }
}

function narrowWhy(kind: AttentionKernel): string {
  return kind === "invocation"
    ? "one invocation per query (key) row (the CPU adapters' layout)"
    : kind === "flash"
    ? "query (key) tiles x heads x sequences"
    : "rows x heads x sequences";
}

/** attention.wgsl's struct Params for a shape (every entry point shares it). */
function attentionParams(s: QkvShape) {
  return {
    b: s.batch,
    tq: s.t,
    t_cache: s.tCache,
    heads: s.heads,
    kv_heads: s.kvHeads,
    past: s.past,
    scale: 1 / Math.sqrt(s.headDim),
    split: 0,
  };
}
