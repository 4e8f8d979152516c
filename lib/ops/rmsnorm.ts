import { f32bits, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, gridRows } from "./common.ts";

/** y = rmsnorm(x) * w over rows of x [rows, d]; rstd [rows] receives 1/rms for backward. */
export function rmsnorm(gpu: Gpu, x: Tensor, w: Tensor, eps: number, y: Tensor, rstd: Tensor): void {
  const d = w.numel, rows = x.numel / d;
  check(Number.isInteger(rows), () => `rmsnorm '${w.name}': input size ${x.numel} is not a multiple of ${d}`);
  const k = gpu.kernel("rmsnorm", "forward");
  gpu.dispatch(
    k,
    [rows, d, f32bits(eps), 0],
    [x.buffer, w.buffer, y.buffer, rstd.buffer],
    gridRows(gpu, rows),
  );
}
