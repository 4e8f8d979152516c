// The LoRA adapter's backward product (its forward is models/lora.ts, used at inference too):
//   dB += s dy^T u ;  du = s dy B ;  dA += du^T dropout(x) ;  dx += dropout'(du A)
// with u = dropout(x) A^T kept by the forward and dropout(x) redrawn from the same seed.

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { matmul } from "../lib/ops/matmul.ts";
import { addInPlace, dropout } from "../lib/ops/elementwise.ts";
import { type LoraDropout, loraDropoutSeed, type LoraModuleParams, type LoraSet } from "../models/lora.ts";

export function loraBackward(
  gpu: Gpu,
  set: LoraSet,
  layer: number,
  p: LoraModuleParams,
  u: Tensor,
  input: Tensor,
  dy: Tensor,
  dyOff: number,
  dInput: Tensor,
  drop: LoraDropout | null,
): void {
  const rows = input.rows, r = set.lora.r, s = set.scale;
  const gA = set.store.get(p.a.name).grad, gB = set.store.get(p.b.name).grad;
  const pDrop = drop?.p ?? 0;
  const seed = drop ? loraDropoutSeed(drop.seed, layer, p.module) : 0;
  let xd: Tensor | null = null;
  if (pDrop > 0) {
    xd = Tensor.empty(gpu, input.shape, "f32", "lora_dropout");
    dropout(gpu, input, xd, pDrop, seed); // the forward's mask again: same seed, same kernel
  }
  const xin = xd ?? input;
  matmul(gpu, {
    a: dy,
    aLayout: "km",
    lda: dy.rowElems,
    aOff: dyOff,
    w: u,
    wLayout: "kn",
    M: p.outF,
    out: gB,
    accumulate: true,
    alpha: s,
  });
  const du = Tensor.empty(gpu, [rows, r], "f32", "lora_du");
  matmul(gpu, {
    a: dy,
    lda: dy.rowElems,
    aOff: dyOff,
    w: p.b,
    wLayout: "kn",
    M: rows,
    out: du,
    alpha: s,
  });
  matmul(gpu, { a: du, aLayout: "km", w: xin, wLayout: "kn", M: r, out: gA, accumulate: true });
  if (xd) {
    const dxd = Tensor.empty(gpu, input.shape, "f32", "lora_dx");
    matmul(gpu, { a: du, w: p.a, wLayout: "kn", M: rows, out: dxd });
    dropout(gpu, dxd, xd, pDrop, seed); // same mask; xd is no longer needed
    addInPlace(gpu, dInput, xd);
    dxd.dispose();
    xd.dispose();
  } else {
    matmul(gpu, { a: du, w: p.a, wLayout: "kn", M: rows, out: dInput, accumulate: true });
  }
  du.dispose();
}
