// Shared helpers for op wrappers: dispatch grids and weight-variant selection.

import { DEFAULT_WG, type Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";

/** A 2-D grid of `wgSize`-wide workgroups covering n invocations (x stays within the per-dim limit). */
export function grid1d(gpu: Gpu, n: number, wgSize = DEFAULT_WG): [number, number] {
  const groups = Math.ceil(n / wgSize);
  const lim = gpu.caps.maxWorkgroupsPerDim;
  if (groups <= lim) return [groups, 1];
  return [lim, Math.ceil(groups / lim)];
}

/** A 2-D grid with one workgroup per row. */
export function gridRows(gpu: Gpu, rows: number): [number, number] {
  return grid1d(gpu, rows, 1);
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
