// Shared helpers for op wrappers: dispatch grids and weight-variant selection.

import { DEFAULT_WG, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";

/**
 * A grid of `count` workgroups indexed flat as wg.y * nwg.x + wg.x: x within the per-dimension limit and the
 * fewest past `count` (fewer than y; kernels return early there), not a full last row of 65,535.
 */
export function gridFlat(gpu: Gpu, count: number): [number, number] {
  const lim = gpu.caps.maxWorkgroupsPerDim;
  if (count <= lim) return [count, 1];
  const y = Math.ceil(count / lim);
  return [Math.ceil(count / y), y];
}

/** A flat grid of `wgSize`-wide workgroups covering n invocations. */
export function grid1d(gpu: Gpu, n: number, wgSize = DEFAULT_WG): [number, number] {
  return gridFlat(gpu, Math.ceil(n / wgSize));
}

/** A flat grid with one workgroup per row. */
export function gridRows(gpu: Gpu, rows: number): [number, number] {
  return gridFlat(gpu, rows);
}

/** The W_DTYPE define for reading a weight tensor (native f16 when the device has shader-f16). */
export function weightDtype(gpu: Gpu, w: Tensor): string {
  if (w.dtype === "f16") return gpu.caps.shaderF16 && gpu.useNativeF16 ? "f16n" : "f16";
  if (w.dtype === "u32") throw new Error(`tensor '${w.name}' is u32, not a weight`);
  return w.dtype;
}

export function check(cond: boolean, msg: () => string): void {
  if (!cond) throw new Error(msg());
}
