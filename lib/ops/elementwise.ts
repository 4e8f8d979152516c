import { f32bits, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";

/** dst += alpha * src (element-wise, same size). */
export function addInPlace(gpu: Gpu, dst: Tensor, src: Tensor, alpha = 1): void {
  check(dst.numel === src.numel, () => `add: sizes ${dst.numel} and ${src.numel} differ`);
  const k = gpu.kernel("elementwise", "add");
  gpu.dispatch(k, [dst.numel, 0, f32bits(alpha), 0], [src.buffer, dst.buffer], grid1d(gpu, dst.numel));
}

/** dst[j] += alpha * sum over rows of src[r, j] (bias gradients). */
export function colsum(gpu: Gpu, src: Tensor, rows: number, dst: Tensor, alpha = 1): void {
  const cols = dst.numel;
  const k = gpu.kernel("elementwise", "colsum");
  gpu.dispatch(k, [rows, cols, f32bits(alpha), 0], [src.buffer, dst.buffer], [Math.ceil(cols / 64)]);
}

/** dst = inverted dropout of src with probability p; the mask is a pure function of (seed, index). */
export function dropout(gpu: Gpu, src: Tensor, dst: Tensor, p: number, seed: number): void {
  const k = gpu.kernel("elementwise", "dropout");
  gpu.dispatch(k, [src.numel, seed >>> 0, f32bits(p), 0], [src.buffer, dst.buffer], grid1d(gpu, src.numel));
}
