// Building blocks of the mechanistic analyses: per-sample residual-stream gradients under a defence
// (PPS steering or an IP prompt), aligned with the defenceless run token by token, and cosines.
// Everything streams one sample at a time, so memory is bounded by one sample.

import type { Model } from "../models/model.ts";
import type { DataRecord, Sample } from "./text/dataset.ts";
import { encodeRecord, withInoculation } from "./text/dataset.ts";
import { type Hooks, type LayerVectors, layerVectors } from "./hooks.ts";
import type { LoraSet } from "./train/lora.ts";
import { sampleGradients } from "./train/grads.ts";
import type { Gpu } from "./gpu/context.ts";

export interface Defence {
  /** PPS: steer with coef * v_l at these layers */
  steer?: { vectors: LayerVectors; layers: number[]; coef: number } | null;
  /** IP: prompt put in front of the first user message */
  ip?: string | null;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>, ao = 0, bo = 0, n = a.length): number {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[ao + i], y = b[bo + i];
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

export interface AlignedGradients {
  /** dL/dh_l for the aligned tokens, [L+1][K*d] (K aligned tokens) */
  grad: Float32Array[];
  /** loss mask of the aligned tokens [K] (1 = the token is a loss target) */
  mask: Float32Array;
  /** summed loss over loss tokens */
  loss: number;
  /** number of loss tokens in the aligned part */
  lossTokens: number;
}

/** Trailing tokens shared by a and b. */
export function sharedSuffix(a: number[], b: number[]): number {
  let k = 0;
  while (k < a.length && k < b.length && a[a.length - 1 - k] === b[b.length - 1 - k]) k++;
  return k;
}

/**
 * Gradients of one record without and with a defence, on the tokens both runs share (for IP: the
 * tokens after the inserted prompt; for PPS: all tokens).
 */
export async function defendedPair(
  m: Model,
  rec: DataRecord,
  defence: Defence,
  o: { lora?: LoraSet | null; maxLength?: number } = {},
): Promise<{ none: AlignedGradients; defended: AlignedGradients }> {
  const enc = (r: DataRecord) => encodeRecord(m.tokenizer!, r, { maxLength: o.maxLength ?? 100_000 });
  const plain = enc(rec);
  const withIp = defence.ip && rec.messages
    ? enc({ ...rec, messages: withInoculation(rec.messages, defence.ip) })
    : plain;
  const k = withIp === plain ? plain.ids.length : sharedSuffix(plain.ids, withIp.ids);
  const hooks = defence.steer ? { steer: [defence.steer] } : {};
  const none = await aligned(m, plain, k, {}, o.lora ?? null);
  const defended = await aligned(m, withIp, k, hooks, o.lora ?? null);
  return { none, defended };
}

async function aligned(
  m: Model,
  s: Sample,
  k: number,
  hooks: Hooks,
  lora: LoraSet | null,
): Promise<AlignedGradients> {
  const g = await sampleGradients(m, s, { lora, hooks });
  const d = m.cfg.hiddenSize, T = s.ids.length, from = T - k;
  const mask = g.mask.slice(from);
  return {
    grad: g.gradH.map((h) => h.slice(from * d)),
    mask,
    loss: g.loss,
    lossTokens: mask.reduce((a, b) => a + b, 0),
  };
}

/** Mean over loss tokens of cos(dL/dh_{l,t}, v_l) for every layer. */
export function meanTokenCosine(g: AlignedGradients, vec: Float32Array, d: number): number[] {
  return g.grad.map((h, l) => {
    let s = 0, n = 0;
    for (let t = 0; t < g.mask.length; t++) {
      if (!g.mask[t]) continue;
      s += cosine(h, vec, t * d, l * d, d);
      n++;
    }
    return n ? s / n : NaN;
  });
}

/** Token-averaged gradient over loss tokens at one layer, [d]. */
export function tokenMean(g: AlignedGradients, layer: number, d: number): Float64Array {
  const out = new Float64Array(d);
  let n = 0;
  for (let t = 0; t < g.mask.length; t++) {
    if (!g.mask[t]) continue;
    for (let j = 0; j < d; j++) out[j] += g.grad[layer][t * d + j];
    n++;
  }
  if (n) { for (let j = 0; j < d; j++) out[j] /= n; }
  return out;
}

/** Upload a [L+1, d] host vector for steering. */
export function steerVectors(gpu: Gpu, data: Float32Array, L: number, d: number): LayerVectors {
  return layerVectors(gpu, data, L, d);
}
