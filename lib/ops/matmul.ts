// Matmul op wrappers over kernels/matmul.wgsl.

import { f32bits, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, weightDtype } from "./common.ts";

export interface LinearOptions {
  bias?: Tensor;
  /** out = residual + x W^T (residual must be a different buffer from out). */
  residual?: Tensor;
  /** out += x W^T */
  accumulate?: boolean;
  /** Write into columns [colOffset, colOffset + N) of a wider output. */
  colOffset?: number;
  /** Row offset into out, in rows. */
  rowOffset?: number;
  alpha?: number;
  /** Override the device's default tiling (tests run both). */
  tiling?: "workgroup" | "register";
}

/**
 * y = x W^T (+ bias): x [M, K] f32, W [N, K] (nn.Linear layout, any weight dtype, possibly split
 * into row chunks), out [*, ldc] f32 with ldc = out's row width.
 */
export function linear(gpu: Gpu, x: Tensor, w: Tensor, out: Tensor, opts: LinearOptions = {}): void {
  const M = x.rows, K = x.rowElems, N = w.rows;
  check(w.rowElems === K, () => `linear '${w.name}': x has ${K} columns but the weight is [${w.shape}]`);
  const ldc = out.rowElems;
  const colOff = opts.colOffset ?? 0;
  const rowOff = opts.rowOffset ?? 0;
  check(colOff + N <= ldc, () => `linear '${w.name}': output columns ${colOff}+${N} exceed ${ldc}`);
  check(rowOff + M <= out.rows, () => `linear '${w.name}': output rows ${rowOff}+${M} exceed ${out.rows}`);
  if (opts.bias) check(opts.bias.numel >= N, () => `linear '${w.name}': bias shorter than ${N}`);
  const regtile = (opts.tiling ?? gpu.matmulTiling) === "register" && K % 4 === 0;
  const k = gpu.kernel("matmul", regtile ? "regtile" : "main", {
    W_DTYPE: weightDtype(gpu, w),
    W_BINDING: 2,
    W_VEC4: regtile,
    REGTILE: regtile,
    HAS_BIAS: !!opts.bias,
    RESIDUAL: !!opts.residual,
    ACCUMULATE: !!opts.accumulate,
  });
  // workgroup tiles: 64x64 outputs; register tiles: 8x4 invocations of 8x8 outputs = 64 (n) x 32 (m)
  const [tn, tm] = regtile ? [64, 32] : [64, 64];
  for (const c of w.chunks) {
    const params = [M, c.rows, K, ldc, colOff + c.rowStart, 0, rowOff, f32bits(opts.alpha ?? 1)];
    gpu.dispatch(k, params, [x.buffer, c.buffer, out.buffer, opts.bias?.buffer, opts.residual?.buffer], [
      Math.ceil(c.rows / tn),
      Math.ceil(M / tm),
    ]);
  }
}
