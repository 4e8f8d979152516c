// AdamW over a flat parameter store, with the global gradient norm and clipping computed on the GPU
// (no readback inside a step).

import type { Gpu } from "../gpu/context.ts";
import { Tensor } from "../tensor.ts";
import { check, grid1d } from "./common.ts";

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number (bias correction) */
  step: number;
  /** <= 0: no clipping */
  maxGradNorm: number;
}

export interface FlatBuffers {
  p: GPUBuffer;
  g: GPUBuffer;
  m: GPUBuffer;
  v: GPUBuffer;
  total: number;
}

/** The gradient norm's reduction: NORM_WG invocations per workgroup, each workgroup a block of NORM_BLOCK
 * gradient values (one partial sum); the shaders get both as defines. */
const NORM = { NORM_WG: 256, NORM_BLOCK: 4096 } as const;

/** The length of adamwStep's `partials` for `total` parameters. */
export function normPartials(total: number): number {
  return Math.max(1, Math.ceil(total / NORM.NORM_BLOCK));
}

/** Records: grad-norm partials, clip coefficient [coef, norm] into `clipOut`, AdamW update. */
export function adamwStep(gpu: Gpu, f: FlatBuffers, o: AdamWStep, partials: Tensor, clipOut: Tensor): void {
  const nPartials = normPartials(f.total);
  check(
    partials.numel >= nPartials,
    () => `adamw: ${partials.numel} norm partials for ${f.total} values; ${nPartials} needed`,
  );
  const params = {
    n: f.total,
    n_partials: nPartials,
    lr: o.lr,
    beta1: o.beta1,
    beta2: o.beta2,
    eps: o.eps,
    weight_decay: o.weightDecay,
    bc1: 1 - o.beta1 ** o.step,
    bc2: 1 - o.beta2 ** o.step,
    max_norm: o.maxGradNorm,
  };
  gpu.dispatch(
    gpu.kernel("optim", "sumsq", NORM),
    params,
    { 5: partials.buffer, 7: { buffer: f.g } },
    grid1d(gpu, nPartials, 1),
  );
  gpu.dispatch(gpu.kernel("optim", "clip", NORM), params, { 5: partials.buffer, 6: clipOut.buffer }, [1]);
  gpu.dispatch(gpu.kernel("optim", "adamw", NORM), params, {
    1: { buffer: f.p },
    2: { buffer: f.g },
    3: { buffer: f.m },
    4: { buffer: f.v },
    8: clipOut.buffer,
  }, grid1d(gpu, f.total));
}

/** g = 0 over the flat gradient buffer (a clear command in the step, not a dispatch). */
export function zeroGrads(gpu: Gpu, f: FlatBuffers): void {
  gpu.clear(f.g, 0, f.total * 4);
}
