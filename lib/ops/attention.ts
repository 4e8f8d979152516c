import { f32bits, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check } from "./common.ts";
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
): void {
  check(
    s.heads % s.kvHeads === 0,
    () => `attention: ${s.heads} heads not a multiple of ${s.kvHeads} kv heads`,
  );
  const k = gpu.kernel("attention", "forward", { HEAD_DIM: s.headDim });
  gpu.dispatch(
    k,
    [s.batch, s.t, s.tCache, s.heads, s.kvHeads, s.past, f32bits(1 / Math.sqrt(s.headDim)), 0],
    [q.buffer, kCache.buffer, vCache.buffer, kvStart.buffer, o.buffer, lse.buffer],
    [Math.ceil(s.t / 64), s.heads, s.batch],
  );
}
