import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";

export interface QkvShape {
  batch: number;
  /** tokens per sequence in this call */
  t: number;
  /** rows per sequence in the K/V cache */
  tCache: number;
  /** absolute position of this call's first token in the cache */
  past: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/**
 * Split fused qkv [B*T, (H+2HKV)*D] into q [B*T, H*D] and the K/V cache, applying rotate-half
 * RoPE to q and k with the cos/sin table [P, D/2, 2]; row t of sequence b is at position
 * past + t - kvStart[b] (u32 [B]; left padding counts from 0).
 */
export function qkvRope(
  gpu: Gpu,
  s: QkvShape,
  qkv: Tensor,
  kvStart: Tensor,
  cosSin: Tensor,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
): void {
  const rows = s.batch * s.t;
  check(s.headDim % 2 === 0, () => `rope: head_dim ${s.headDim} must be even`);
  check(
    qkv.numel === rows * (s.heads + 2 * s.kvHeads) * s.headDim,
    () => `rope: qkv has ${qkv.numel} elements`,
  );
  check(s.past + s.t <= s.tCache, () => `rope: cache of ${s.tCache} rows cannot hold ${s.past}+${s.t}`);
  const k = gpu.kernel("rope", "qkv_forward");
  const n = rows * (s.heads + 2 * s.kvHeads) * s.headDim / 2;
  gpu.dispatch(
    k,
    ropeParams(s, rows),
    { 1: qkv.buffer, 2: kvStart.buffer, 3: cosSin.buffer, 4: q.buffer, 5: kCache.buffer, 6: vCache.buffer },
    grid1d(gpu, n),
  );
}

/** dqkv [B*T, (H+2HKV)*D] from dq and dk/dv (cache layout of the forward), un-rotating q and k. */
export function qkvRopeBackward(
  gpu: Gpu,
  s: QkvShape,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  kvStart: Tensor,
  cosSin: Tensor,
  dqkv: Tensor,
): void {
  const rows = s.batch * s.t;
  const k = gpu.kernel("rope", "qkv_backward");
  const n = rows * (s.heads + 2 * s.kvHeads) * s.headDim / 2;
  gpu.dispatch(
    k,
    ropeParams(s, rows),
    { 2: kvStart.buffer, 3: cosSin.buffer, 7: dq.buffer, 8: dk.buffer, 9: dv.buffer, 10: dqkv.buffer },
    grid1d(gpu, n),
  );
}

/** rope.wgsl's struct Params for a shape (forward and backward share it). */
function ropeParams(s: QkvShape, rows: number) {
  return {
    rows,
    t: s.t,
    t_cache: s.tCache,
    past: s.past,
    heads: s.heads,
    kv_heads: s.kvHeads,
    head_dim: s.headDim,
  };
}
