// AdamW over a flat parameter store, with the global gradient norm and clipping computed on the GPU
// (no readback inside a step).

import type { Gpu } from "../gpu/context.ts";
import { Tensor } from "../tensor.ts";
import { grid1d } from "./common.ts";

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

/** Records: grad-norm partials, clip coefficient [coef, norm] into `clipOut`, AdamW update. */
export function adamwStep(gpu: Gpu, f: FlatBuffers, o: AdamWStep, partials: Tensor, clipOut: Tensor): void {
  const nPartials = Math.ceil(f.total / 4096);
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
  const none = undefined;
  gpu.dispatch(gpu.kernel("optim", "sumsq"), params, [none, none, none, none, partials.buffer, none, {
    buffer: f.g,
  }], grid1d(gpu, nPartials, 1));
  gpu.dispatch(
    gpu.kernel("optim", "clip"),
    params,
    [none, none, none, none, partials.buffer, clipOut.buffer],
    [1],
  );
  gpu.dispatch(
    gpu.kernel("optim", "adamw"),
    params,
    [{ buffer: f.p }, { buffer: f.g }, { buffer: f.m }, { buffer: f.v }, none, none, none, clipOut.buffer],
    grid1d(gpu, f.total),
  );
}

export function zeroGrads(gpu: Gpu, f: FlatBuffers): void {
  const params = {
    n: f.total,
    n_partials: 0,
    lr: 0,
    beta1: 0,
    beta2: 0,
    eps: 0,
    weight_decay: 0,
    bc1: 0,
    bc2: 0,
    max_norm: 0,
  }; // only n is read: the struct is shared with adamw
  gpu.dispatch(gpu.kernel("optim", "zero"), params, [none(), {
    buffer: f.g,
  }], grid1d(gpu, f.total));
}

function none(): undefined {
  return undefined;
}
