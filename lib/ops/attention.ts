import { DEFAULT_WG, type Gpu } from "../gpu/context.ts";
import { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";
import type { QkvShape } from "./rope.ts";

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
  opts: RowsOption = {},
): void {
  check(
    s.heads % s.kvHeads === 0,
    () => `attention: ${s.heads} heads not a multiple of ${s.kvHeads} kv heads`,
  );
  // a decode step (one query per sequence) always goes by rows: B*H invocations would be all there is
  const rows = byRows(gpu, s, opts) || s.t === 1;
  const k = gpu.kernel("attention", rows ? "forward_rows" : "forward", { HEAD_DIM: s.headDim });
  // q·k and p·v per attended (query, key) pair; q, K/V rows in use and o moved once
  const kvBytes = 2 * 4 * s.batch * (s.past + s.t) * s.kvHeads * s.headDim;
  const cost = {
    flops: 4 * s.batch * s.heads * s.headDim * attendedPairs(s),
    bytes: 2 * 4 * s.batch * s.t * s.heads * s.headDim + kvBytes,
  };
  gpu.dispatch(
    k,
    attentionParams(s),
    { 1: q.buffer, 2: kCache.buffer, 3: vCache.buffer, 4: kvStart.buffer, 5: o.buffer, 6: lse.buffer },
    [rows ? s.t : Math.ceil(s.t / DEFAULT_WG), s.heads, s.batch],
    cost,
  );
}

export interface RowsOption {
  /** one workgroup per query (key) row instead of one invocation; default `gpu.attentionByRows` */
  rows?: boolean;
}

function byRows(gpu: Gpu, s: QkvShape, opts: RowsOption): boolean {
  // rows index the first dispatch dimension (at most 65,535 workgroups)
  return (opts.rows ?? gpu.attentionByRows) && s.t <= 65535;
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
  /** GQA dk/dv by query head, then summed per group (default on GPUs, where the invocations are wanted;
   * on CPU adapters the per-head shares only add work) */
  opts: { perHead?: boolean } & RowsOption = {},
): void {
  check(s.past === 0 && s.tCache === s.t, () => "attention backward: only full sequences (no KV cache)");
  const defs = { HEAD_DIM: s.headDim };
  const params = attentionParams(s);
  const rows = byRows(gpu, s, opts);
  const kq = gpu.kernel("attention", rows ? "backward_dq_rows" : "backward_dq", defs);
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
    [rows ? s.t : Math.ceil(s.t / DEFAULT_WG), s.heads, s.batch],
    { flops: 6 * s.headDim * pairs, bytes: 4 * qBytes + 2 * kvBytes },
  );
  // grouped-query attention: one invocation per query head into per-head shares, summed per group
  const group = s.heads / s.kvHeads;
  const perHead = group > 1 && (opts.perHead ?? !gpu.caps.cpuAdapter);
  const dkH = perHead ? Tensor.empty(gpu, [s.batch * s.t, s.heads * s.headDim], "f32", "dk_heads") : g.dk;
  const dvH = perHead ? Tensor.empty(gpu, [s.batch * s.t, s.heads * s.headDim], "f32", "dv_heads") : g.dv;
  const kkv = gpu.kernel("attention", rows ? "backward_dkv_rows" : "backward_dkv", {
    ...defs,
    PER_HEAD: perHead,
  });
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
    [rows ? s.t : Math.ceil(s.t / DEFAULT_WG), perHead ? s.heads : s.kvHeads, s.batch],
    { flops: 8 * s.headDim * pairs, bytes: 2 * qBytes + 2 * kvBytes + (perHead ? 2 * qBytes : 2 * kvBytes) },
  );
  if (perHead) {
    const ks = gpu.kernel("attention", "group_sum", defs);
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
  };
}
