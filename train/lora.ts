// The LoRA adapter's backward, one projection group at a time (its forward is models/lora.ts, used at inference
// too). For module m of the group, with dy_m its columns of the group output's gradient:
//   du_m = s dy_m B_m ;  dB_m += s dy_m^T u_m ;  dA_m += du_m^T dropout_m(x) ;  dx += dropout_m'(du_m A_m)
// Each line is one dispatch for the whole group (the modules are groups of one product, kernels/matmul.wgsl),
// dropout(x) is redrawn where it is read, and dx's part is not a dispatch at all: the base product's backward
// into dx fuses it (the LoraPhase returned here). On GPUs the skinny products are split along k so that they
// fill the device: du's slices are summed where du is read, dA's and dB's by one reduction for the group.

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { type LoraPhase, matmul, planMatmul, reduceSlices, type SliceJob } from "../lib/ops/matmul.ts";
import { type LoraDropout, loraDropoutSeed, type LoraGroup, type LoraSet } from "../models/lora.ts";

/**
 * Record the gradients of a group's adapter (accumulated into the store's gradients) and return the phase that
 * adds its input gradient to the base product's dx. `u` is the forward's (with `uSlices` k-slices), `x` the
 * group's input (without dropout), `dy` the gradient of the group's fused output [rows, width of all columns].
 * The returned phase reads `du`, which the caller disposes after recording the dx product.
 */
export function loraGroupBackward(
  gpu: Gpu,
  set: LoraSet,
  g: LoraGroup,
  u: Tensor,
  uSlices: number,
  x: Tensor,
  dy: Tensor,
  drop: LoraDropout | null,
): { phase: LoraPhase; du: Tensor } {
  const rows = x.rows, r = set.lora.r, s = set.scale, nseg = g.modules.length, width = nseg * r, inF = g.inF;
  const dropping = !!drop && drop.p > 0;
  const seeds = g.modules.map((m) => dropping ? loraDropoutSeed(drop!.seed, g.layer, m.module) : 0);
  const ldy = dy.rowElems;
  const widths = g.modules.map((m) => m.c1 - m.c0), rowsB = widths.reduce((a, b) => a + b, 0);
  // du_m = s dy_m B_m: groups of depth width_m into du's columns m*r, split along k into du's slices
  const duSlices = planMatmul(gpu, g.modules.map(() => rows), r, Math.max(...widths), true).split;
  const du = Tensor.empty(gpu, [duSlices * rows, width], "f32", "lora_du");
  matmul(gpu, {
    a: dy,
    lda: ldy,
    w: g.b,
    wLayout: "kn",
    ldw: r,
    N: r,
    K: Math.max(...widths),
    M: rows,
    out: du,
    ldc: width,
    alpha: s,
    groups: g.modules.map((m, i) => ({
      m: rows,
      k: widths[i],
      aOff: m.c0,
      wOff: m.b0 * r,
      colOffset: i * r,
    })),
    ...(duSlices > 1 ? { slices: { count: duSlices, stride: rows * width } } : {}),
  });
  // dB_m += s dy_m^T u_m and dA_m += du_m^T dropout_m(x), each split along k (the rows) on GPUs into one
  // scratch, which one reduction adds to the gradients
  const splitB = planMatmul(gpu, widths, r, rows, true).split;
  const splitA = planMatmul(gpu, g.modules.map(() => r), inF, rows, true).split;
  const scratchB = splitB > 1 ? splitB * rowsB * r : 0, scratchA = splitA > 1 ? splitA * width * inF : 0;
  const scratch = scratchA + scratchB
    ? Tensor.empty(gpu, [scratchB + scratchA], "f32", "lora_grad_slices")
    : null;
  const viewOf = (t: Tensor, off: number, n: number) =>
    Tensor.view(t.raw.buffer, t.raw.offset + off * 4, [n], "f32", "lora_grad_slices");
  matmul(gpu, {
    a: dy,
    aLayout: "km",
    lda: ldy,
    w: u,
    wLayout: "kn",
    ldw: width,
    N: r,
    K: rows,
    M: 0,
    out: splitB > 1 ? viewOf(scratch!, 0, scratchB) : g.gradB,
    ldc: r,
    alpha: s,
    accumulate: splitB === 1,
    groups: g.modules.map((m, i) => ({ m: widths[i], aOff: m.c0, wOff: i * r, rowOffset: m.b0 })),
    ...(uSlices > 1 ? { sum: { operand: "w" as const, slices: uSlices, stride: rows * width } } : {}),
    ...(splitB > 1 ? { slices: { count: splitB, stride: rowsB * r } } : {}),
  });
  matmul(gpu, {
    a: du,
    aLayout: "km",
    lda: width,
    w: x,
    wLayout: "kn",
    ldw: inF,
    N: inF,
    K: rows,
    M: r,
    out: splitA > 1 ? viewOf(scratch!, scratchB, scratchA) : g.gradA,
    ldc: inF,
    accumulate: splitA === 1,
    groups: g.modules.map((_, i) => ({ m: r, aOff: i * r, rowOffset: i * r, seed: seeds[i] })),
    ...(dropping ? { dropout: { operand: "w" as const, p: drop!.p } } : {}),
    ...(duSlices > 1 ? { sum: { operand: "a" as const, slices: duSlices, stride: rows * width } } : {}),
    ...(splitA > 1 ? { slices: { count: splitA, stride: width * inF } } : {}),
  });
  if (scratch) {
    // one reduction for both, into the store's gradients at the stacked runs' offsets
    const jobs: SliceJob[] = [];
    const grads = Tensor.view(set.store.g, 0, [set.store.total], "f32", "lora_grads");
    const job = (partial: number, m: number, n: number, slices: number, t: Tensor): SliceJob => ({
      partial,
      m,
      n,
      slices,
      colOffset: t.raw.offset / 4, // an element offset: row i lands at i * ldc + offset
      rowOffset: 0,
      ldc: n,
    });
    if (splitB > 1) jobs.push(job(0, rowsB, r, splitB, g.gradB));
    if (splitA > 1) jobs.push(job(scratchB, width, inF, splitA, g.gradA));
    reduceSlices(gpu, grads, jobs, { partials: scratch, accumulate: true });
    scratch.dispose();
  }
  return {
    du,
    phase: {
      kind: "a",
      input: du,
      ld: width,
      slices: duSlices,
      stride: rows * width,
      w: g.a,
      r,
      scale: 1,
      segments: seeds.map((seed) => ({ c0: 0, c1: 0, b0: 0, seed })),
      p: dropping ? drop!.p : 0,
    },
  };
}
