// The explicit per-layer backward pass of the decoder. The architecture is fixed, so no autograd tape:
// each layer boundary is a natural hook point for dL/dh_l, and memory stays predictable.
//
// Loss: sum over tokens of lossScale * mask * cross-entropy, with logits computed in row blocks so
// that [rows, vocab] never has to fit one binding (152k-vocab models).

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { type LoraPhase, matmul } from "../lib/ops/matmul.ts";
import { rmsnormBackward, rmsnormWeightGrad } from "../lib/ops/rmsnorm.ts";
import { swigluBackward } from "../lib/ops/swiglu.ts";
import { attentionBackward } from "../lib/ops/attention.ts";
import { qkvRopeBackward } from "../lib/ops/rope.ts";
import { crossEntropyBackward } from "../lib/ops/loss.ts";
import { colsum } from "../lib/ops/elementwise.ts";
import { embeddingBackward } from "../lib/ops/embedding.ts";
import { type Decoder, disposeActs, type SavedForward } from "../models/decoder.ts";
import type { ProjectionGroup } from "../models/lora.ts";
import type { LayerWeights } from "../models/loader.ts";

/** What the training engine plugs into the backward pass. */
export interface BackwardExtras {
  /**
   * The gradient `dy` of a projection group's fused output: record the adapter's parameter gradients and
   * return the phase that adds its input gradient into the group's dx product, and `du`, which that phase
   * reads (disposed once the product is recorded); null when the group is not adapted.
   */
  project?(
    layer: number,
    group: ProjectionGroup,
    input: Tensor,
    dy: Tensor,
  ): { phase: LoraPhase; du: Tensor } | null;
  /** dL/dh_l at each boundary l = L..0, before it flows on (sign-forcing, capture). */
  boundary?(layer: number, dh: Tensor): void;
  /** Activation checkpointing: layer l's backward is recorded (its recomputed rank products may go) */
  release?(layer: number): void;
}

/** Gradient tensors of the base weights (full-parameter training), accumulated (+=). */
export interface BaseGrads {
  embed: Tensor;
  /** null when tied to embed */
  lmHead: Tensor | null;
  finalNorm: Tensor;
  /** one gradient per weight of LayerWeights */
  layers: LayerWeights[];
}

export interface LossTargets {
  /** next-token targets per row */
  targets: Uint32Array;
  /** loss weight per row (0 = not a loss position) */
  mask: Float32Array;
  /** multiplies every token's loss in the gradient (e.g. 1 / loss tokens in the optimizer batch) */
  scale: number;
  /** compute the logits of every row, not only the loss rows (tests compare both ways) */
  allRows?: boolean;
}

/** dW += dy^T x for a weight W [out, in] given its output gradient and input. */
function weightGrad(gpu: Gpu, dy: Tensor, x: Tensor, g: Tensor): void {
  matmul(gpu, {
    a: dy,
    aLayout: "km",
    lda: dy.rowElems,
    w: x,
    wLayout: "kn",
    M: g.rows,
    out: g,
    accumulate: true,
  });
}

/**
 * Loss and full backward for a forward recorded with `save`. Returns per-row losses (pooled tensor;
 * masked, unscaled). Consumes and disposes `normed`; the caller disposes `saved`.
 */
export function backward(
  dec: Decoder,
  saved: SavedForward,
  normed: Tensor,
  loss: LossTargets,
  extras: BackwardExtras = {},
  grads: BaseGrads | null = null,
): Tensor {
  const { gpu, cfg, w } = dec;
  const s = saved.inputs.shape;
  const rows = s.batch * s.t, d = cfg.hiddenSize, V = cfg.vocabSize, I = cfg.intermediateSize;
  const qDim = cfg.numHeads * cfg.headDim, kvDim = cfg.numKvHeads * cfg.headDim;
  const e = (shape: number[], name: string) => Tensor.empty(gpu, shape, "f32", name);

  // ---- loss + d normed, in row blocks (multiples of 64 rows keep views 256-byte aligned). Only the rows whose
  // next token is a loss target need logits: on chat data the prompt's rows are most of a batch, so their
  // logits (rows x vocab: the largest product of a step) are skipped, read and written through a row index.
  // Their loss and gradient are zero either way (mask 0), so the result is the same. Full-parameter training
  // (the LM head's weight gradient) keeps every row.
  const lossT = e([rows], "loss");
  const dNormed = e([rows, d], "d_normed");
  const lossRows: number[] = [];
  loss.mask.forEach((x, r) => x !== 0 && lossRows.push(r));
  const select = !grads && !loss.allRows && lossRows.length < rows;
  const n = select ? lossRows.length : rows;
  const pick = <T extends Uint32Array | Float32Array>(x: T): T =>
    (select ? x.slice(0, n).map((_, i) => x[lossRows[i]]) : x.slice()) as T;
  if (select) {
    gpu.clear(lossT.raw.buffer, lossT.raw.offset, rows * 4);
    gpu.clear(dNormed.raw.buffer, dNormed.raw.offset, rows * d * 4);
  }
  if (n > 0) {
    const lse = e([n], "lse_loss");
    const targets = Tensor.uploadPooled(gpu, pick(loss.targets), [n], "u32", "targets");
    const mask = Tensor.uploadPooled(gpu, pick(loss.mask), [n], "f32", "loss_mask");
    const index = select
      ? Tensor.uploadPooled(gpu, Uint32Array.from(lossRows), [n], "u32", "loss_rows")
      : null;
    const block = Math.max(64, Math.floor(dec.maxLogitRows() / 64) * 64);
    for (let r0 = 0; r0 < n; r0 += block) {
      const nb = Math.min(block, n - r0);
      const view = (t: Tensor, name: string, dtype: "f32" | "u32" = "f32") =>
        Tensor.view(t.raw.buffer, t.raw.offset + r0 * 4, [nb], dtype, name);
      const rowsOf = index ? view(index, "loss_rows", "u32") : null;
      const sel = index
        ? normed
        : Tensor.view(normed.raw.buffer, normed.raw.offset + r0 * d * 4, [nb, d], "f32", "normed_block");
      const logits = e([nb, V], "logits");
      matmul(gpu, { a: sel, w: w.lmHead, M: nb, out: logits, aRows: rowsOf ?? undefined });
      crossEntropyBackward(
        gpu,
        logits,
        view(targets, "t", "u32"),
        view(mask, "m"),
        index ? lossT : view(lossT, "l"),
        view(lse, "lse"),
        loss.scale,
        { rowIndex: rowsOf ?? undefined },
      );
      matmul(gpu, {
        a: logits,
        w: w.lmHead,
        wLayout: "kn",
        M: nb,
        out: dNormed,
        ...(rowsOf ? { cRows: rowsOf } : { rowOffset: r0 }),
      });
      if (grads) weightGrad(gpu, logits, sel, grads.lmHead ?? grads.embed);
      logits.dispose();
    }
    for (const t of [lse, targets, mask, index]) t?.dispose();
  }

  // ---- final norm
  const last = cfg.numLayers;
  const dh = e([rows, d], "dh");
  rmsnormBackward(gpu, saved.hs[last], w.finalNorm, dNormed, saved.rstdF, dh);
  if (grads) rmsnormWeightGrad(gpu, saved.hs[last], dNormed, saved.rstdF, grads.finalNorm);
  normed.dispose();
  dNormed.dispose();
  extras.boundary?.(last, dh);

  /** dx = dy W (+ the adapter's part) for a projection group, W [out, in] */
  const inputGrad = (l: number, g: ProjectionGroup, input: Tensor, dy: Tensor, wt: Tensor, dx: Tensor) => {
    const ad = extras.project?.(l, g, input, dy) ?? null;
    matmul(gpu, { a: dy, w: wt, wLayout: "kn", M: rows, out: dx, lora: ad?.phase });
    ad?.du.dispose();
  };
  for (let l = last - 1; l >= 0; l--) {
    // activation checkpointing: this layer's activations recomputed from its input, one layer at a time
    const a = saved.checkpoint ? dec.recompute(saved, l) : saved.layers[l],
      W = w.layers[l],
      G = grads?.layers[l];
    // MLP: h_{l+1} = h_mid + down(swiglu(gate_up(norm2(h_mid))))
    const dAct = e([rows, I], "d_act");
    inputGrad(l, "down", a.act, dh, W.down, dAct);
    if (G) weightGrad(gpu, dh, a.act, G.down);
    const dGu = e([rows, 2 * I], "d_gate_up");
    swigluBackward(gpu, a.gu, dAct, dGu, rows, I);
    dAct.dispose();
    const dN2 = e([rows, d], "d_normed2");
    inputGrad(l, "gate_up", a.normed2, dGu, W.gateUp, dN2);
    if (G) {
      weightGrad(gpu, dGu, a.normed2, G.gateUp);
      rmsnormWeightGrad(gpu, a.hMid, dN2, a.rstd2, G.postNorm);
    }
    dGu.dispose();
    rmsnormBackward(gpu, a.hMid, W.postNorm, dN2, a.rstd2, dh, true); // dh is now dL/dh_mid
    dN2.dispose();

    // attention: h_mid = h_l + o_proj(attn(rope(qkv(norm1(h_l)))))
    const dO = e([rows, qDim], "d_attn_out");
    inputGrad(l, "o", a.o, dh, W.o, dO);
    if (G) weightGrad(gpu, dh, a.o, G.o);
    const dq = e([rows, qDim], "dq"), dk = e([rows, kvDim], "dk"), dv = e([rows, kvDim], "dv");
    const dsum = e([s.batch * cfg.numHeads * s.t], "dsum");
    attentionBackward(gpu, s, {
      q: a.q,
      k: a.k!,
      v: a.v!,
      kvStart: saved.inputs.kvStart,
      o: a.o,
      lse: a.lse,
      dO,
    }, {
      dq,
      dk,
      dv,
      dsum,
    });
    const dQkv = e([rows, qDim + 2 * kvDim], "d_qkv");
    qkvRopeBackward(gpu, s, dq, dk, dv, saved.inputs.kvStart, saved.inputs.cosSin, dQkv);
    for (const t of [dO, dq, dk, dv, dsum]) t.dispose();
    const dN1 = e([rows, d], "d_normed1");
    inputGrad(l, "qkv", a.normed1, dQkv, W.qkv, dN1);
    if (G) {
      weightGrad(gpu, dQkv, a.normed1, G.qkv);
      if (G.qkvBias) colsum(gpu, dQkv, rows, G.qkvBias);
      rmsnormWeightGrad(gpu, a.hIn, dN1, a.rstd1, G.inputNorm);
    }
    dQkv.dispose();
    rmsnormBackward(gpu, a.hIn, W.inputNorm, dN1, a.rstd1, dh, true); // dh is now dL/dh_l
    dN1.dispose();
    if (saved.checkpoint) {
      disposeActs(a);
      extras.release?.(l);
    }
    extras.boundary?.(l, dh);
  }
  if (grads) embeddingBackward(gpu, saved.inputs.idsHost, dh, grads.embed);
  dh.dispose();
  return lossT;
}
