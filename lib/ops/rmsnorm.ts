import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d, gridRows } from "./common.ts";

/** y = rmsnorm(x) * w over rows of x [rows, d]; rstd [rows] receives 1/rms for backward. */
export function rmsnorm(gpu: Gpu, x: Tensor, w: Tensor, eps: number, y: Tensor, rstd: Tensor): void {
  const d = w.numel, rows = x.numel / d;
  check(Number.isInteger(rows), () => `rmsnorm '${w.name}': input size ${x.numel} is not a multiple of ${d}`);
  const k = gpu.kernel("rmsnorm", "forward");
  gpu.dispatch(
    k,
    { rows, dim: d, eps },
    { 1: x.buffer, 2: w.buffer, 3: y.buffer, 4: rstd.buffer },
    gridRows(gpu, rows),
  );
}

/** dx (=, or += with accumulate) = RMSNorm backward of dy, given x, w and the forward's rstd. */
export function rmsnormBackward(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  dy: Tensor,
  rstd: Tensor,
  dx: Tensor,
  accumulate = false,
): void {
  const d = w.numel, rows = x.numel / d;
  const k = gpu.kernel("rmsnorm", "backward", { ACCUMULATE: accumulate });
  gpu.dispatch(k, { rows, dim: d, eps: 0 }, {
    1: x.buffer,
    2: w.buffer,
    5: dy.buffer,
    6: rstd.buffer,
    7: dx.buffer,
  }, gridRows(gpu, rows));
}

/** dw += sum over rows of dy * x * rstd. */
export function rmsnormWeightGrad(gpu: Gpu, x: Tensor, dy: Tensor, rstd: Tensor, dw: Tensor): void {
  const d = dw.numel, rows = x.numel / d;
  const k = gpu.kernel("rmsnorm", "weight_grad");
  gpu.dispatch(
    k,
    { rows, dim: d, eps: 0 },
    { 1: x.buffer, 5: dy.buffer, 6: rstd.buffer, 8: dw.buffer },
    grid1d(gpu, d),
  );
}
