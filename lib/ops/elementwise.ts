import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";

/** dst += alpha * src (element-wise, same size). */
export function addInPlace(gpu: Gpu, dst: Tensor, src: Tensor, alpha = 1): void {
  check(dst.numel === src.numel, () => `add: sizes ${dst.numel} and ${src.numel} differ`);
  const k = gpu.kernel("elementwise", "add");
  gpu.dispatch(
    k,
    { n: dst.numel, cols: 0, alpha, seed: 0 },
    { 1: src.buffer, 2: dst.buffer },
    grid1d(gpu, dst.numel),
  );
}

/** dst[j] += alpha * sum over rows of src[r, j] (bias gradients). */
export function colsum(gpu: Gpu, src: Tensor, rows: number, dst: Tensor, alpha = 1): void {
  const cols = dst.numel;
  const k = gpu.kernel("elementwise", "colsum");
  gpu.dispatch(k, { n: rows, cols, alpha, seed: 0 }, { 1: src.buffer, 2: dst.buffer }, grid1d(gpu, cols));
}

/** dst = inverted dropout of src with probability p; the mask is a pure function of (seed, index). */
export function dropout(gpu: Gpu, src: Tensor, dst: Tensor, p: number, seed: number): void {
  const k = gpu.kernel("elementwise", "dropout");
  gpu.dispatch(
    k,
    { n: src.numel, cols: 0, alpha: p, seed: seed >>> 0 },
    { 1: src.buffer, 2: dst.buffer },
    grid1d(gpu, src.numel),
  );
}
