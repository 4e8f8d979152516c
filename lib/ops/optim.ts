// AdamW over a flat parameter store, with the global gradient norm and clipping computed on the GPU
// (no readback inside a step).

import { f32bits, type Gpu } from "../gpu/context.ts";
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
  const params = [
    f.total,
    nPartials,
    f32bits(o.lr),
    f32bits(o.beta1),
    f32bits(o.beta2),
    f32bits(o.eps),
    f32bits(o.weightDecay),
    f32bits(1 - o.beta1 ** o.step),
    f32bits(1 - o.beta2 ** o.step),
    f32bits(o.maxGradNorm),
    0,
    0,
  ];
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
  gpu.dispatch(gpu.kernel("optim", "zero"), [f.total, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [none(), {
    buffer: f.g,
  }], grid1d(gpu, f.total));
}

function none(): undefined {
  return undefined;
}
