// Hook kernels at layer boundaries: steering in the forward pass, sign-forcing in the backward.

import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d, gridRows } from "./common.ts";

/** x[r, :] += coef * v for rows with rowMask[r] != 0. */
export function steer(gpu: Gpu, x: Tensor, v: Tensor, coef: number, rowMask: Tensor): void {
  const d = v.numel, rows = x.numel / d;
  check(Number.isInteger(rows) && rowMask.numel >= rows, () => `steer: x [${x.shape}] vs vector of ${d}`);
  const k = gpu.kernel("hooks", "steer");
  gpu.dispatch(
    k,
    { rows, dim: d, coef, mode: 0 },
    { 1: v.buffer, 2: rowMask.buffer, 3: x.buffer },
    grid1d(gpu, rows * d),
  );
}

export const SIGN_FORCE_MODES = { attenuate: 0, amplify: 1, neutralize: 2 } as const;
export type SignForceMode = keyof typeof SIGN_FORCE_MODES;

/** In place on gradient rows g [rows, d] with unit vector v (see kernels/hooks.wgsl). */
export function signForce(gpu: Gpu, g: Tensor, v: Tensor, mode: SignForceMode, rowMask: Tensor): void {
  const d = v.numel, rows = g.numel / d;
  const k = gpu.kernel("hooks", "sign_force");
  gpu.dispatch(k, { rows, dim: d, coef: 0, mode: SIGN_FORCE_MODES[mode] }, {
    1: v.buffer,
    2: rowMask.buffer,
    3: g.buffer,
  }, gridRows(gpu, rows));
}
