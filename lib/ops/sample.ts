// Token choice on the GPU (kernels/sample.wgsl): greedy argmax over each row of logits.

import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, gridRows } from "./common.ts";

/** Workgroup size of sample.wgsl's kernels (passed to the shader as WG). */
const WG = 256;

/**
 * next[r] = argmax(logits[r]) (first maximum; NaN never chosen; 0 for a row without one), also written
 * to hist[histOffset + r]. logits f32 [rows, V]; next, hist u32.
 */
export function argmax(gpu: Gpu, logits: Tensor, next: Tensor, hist: Tensor, histOffset: number): void {
  const rows = logits.rows, V = logits.rowElems;
  check(next.numel >= rows, () => `argmax: next holds ${next.numel} ids, ${rows} rows given`);
  check(
    hist.numel >= histOffset + rows,
    () => `argmax: history too small for offset ${histOffset} + ${rows}`,
  );
  const k = gpu.kernel("sample", "argmax", { WG });
  gpu.dispatch(k, [rows, V, histOffset, 0], [logits.buffer, next.buffer, hist.buffer], gridRows(gpu, rows), {
    bytes: rows * V * 4 + rows * 8,
  });
}
