import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { grid1d } from "./common.ts";

/** out [rows, I] = silu(gu[:, :I]) * gu[:, I:], gu the fused gate|up output [rows, 2I]. */
export function swiglu(gpu: Gpu, gu: Tensor, out: Tensor, rows: number, inter: number): void {
  const k = gpu.kernel("swiglu", "forward");
  gpu.dispatch(k, { rows, inter }, { 1: gu.buffer, 2: out.buffer }, grid1d(gpu, rows * inter));
}

/** dgu [rows, 2I] from d out [rows, I] and the forward's gate|up. */
export function swigluBackward(
  gpu: Gpu,
  gu: Tensor,
  dout: Tensor,
  dgu: Tensor,
  rows: number,
  inter: number,
): void {
  const k = gpu.kernel("swiglu", "backward");
  gpu.dispatch(
    k,
    { rows, inter },
    { 1: gu.buffer, 3: dout.buffer, 4: dgu.buffer },
    grid1d(gpu, rows * inter),
  );
}
