import { f32bits, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";

/** dst += alpha * src (element-wise, same size). */
export function addInPlace(gpu: Gpu, dst: Tensor, src: Tensor, alpha = 1): void {
  check(dst.numel === src.numel, () => `add: sizes ${dst.numel} and ${src.numel} differ`);
  const k = gpu.kernel("elementwise", "add");
  gpu.dispatch(k, [dst.numel, 0, f32bits(alpha), 0], [src.buffer, dst.buffer], grid1d(gpu, dst.numel));
}
