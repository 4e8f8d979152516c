// Building blocks of the mechanistic analyses: per-sample residual-stream gradients under a defence
// (PPS steering or an IP prompt), aligned with the defenceless run token by token, and cosines.
// Everything streams one sample at a time, so memory is bounded by one sample.

import type { Model } from "../models/model.ts";
import type { DataRecord, Sample } from "../lib/text/dataset.ts";
import { encodeRecord, type IpPosition, withInoculation } from "../lib/text/dataset.ts";
import { type LayerVectors, layerVectors } from "../defence/hooks.ts";
import type { LoraSet } from "../models/lora.ts";
import { type SampleGradients, sampleGradients } from "../train/grads.ts";
import type { Gpu } from "../lib/gpu/context.ts";
import { hashU32 } from "../lib/rng.ts";

/** A defence as the analyses apply it: vectors on the GPU, the IP bank (config form: defence/defence.ts). */
export interface AppliedDefence {
  /** PPS: steer with coef * v_l at these layers */
  steer?: { vectors: LayerVectors; layers: number[]; coef: number } | null;
  /** IP: the prompt put in front of the first user message, or a bank to draw one from per sample */
  ip?: string | string[] | null;
  /** where and how the IP prompt goes (defence/defence.ts IpSpec; default: "\n", user) */
  ipPlacement?: { separator: string; position: IpPosition };
}

/** The bank's prompt for sample i: a hash of (seed, i), so uniform over the bank, reproducible, stateless. */
export function drawPrompt(bank: string[], i: number, seed = 0): string {
  return bank[hashU32((i ^ hashU32(seed)) >>> 0) % bank.length];
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
  /** 1 where the aligned position's next token is a loss target [K]: the positions whose gradient comes
   * from the loss directly (the prediction at t is of token t + 1). The response-token set of the
   * per-token analyses: it has the first response position and not the end-of-turn one, whose dL/dh at
   * the last layer is exactly zero. */
  predicts: Float32Array;
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
  defence: AppliedDefence,
  /** index: the sample's index, which draws its prompt from an IP bank */
  o: { lora?: LoraSet | null; maxLength?: number; index?: number } = {},
): Promise<{ none: AlignedGradients; defended: AlignedGradients }> {
  return (await defendedPairs(m, rec, [defence], o))[0];
}

/**
 * defendedPair for several defences of one record: the defenceless pass runs once and is aligned with each
 * defended pass (its last k tokens).
 */
export async function defendedPairs(
  m: Model,
  rec: DataRecord,
  defences: AppliedDefence[],
  o: { lora?: LoraSet | null; maxLength?: number; index?: number } = {},
): Promise<{ none: AlignedGradients; defended: AlignedGradients }[]> {
  const enc = (r: DataRecord) => encodeRecord(m.tokenizer!, r, { maxLength: o.maxLength ?? 100_000 });
  const plain = enc(rec);
  const plainGrads = await sampleGradients(m, plain, { lora: o.lora ?? null });
  const out: { none: AlignedGradients; defended: AlignedGradients }[] = [];
  for (const defence of defences) {
    const prompt = typeof defence.ip === "string"
      ? defence.ip
      : defence.ip?.length
      ? drawPrompt(defence.ip, o.index ?? 0)
      : null;
    const withIp = prompt && rec.messages
      ? enc({
        ...rec,
        messages: withInoculation(
          rec.messages,
          prompt,
          defence.ipPlacement?.separator,
          defence.ipPlacement?.position,
        ),
      })
      : plain;
    const k = withIp === plain ? plain.ids.length : sharedSuffix(plain.ids, withIp.ids);
    const hooks = defence.steer ? { steer: [defence.steer] } : {};
    const none = alignTo(plainGrads, plain, k, m.cfg.hiddenSize);
    const defended = defence.steer || withIp !== plain
      ? alignTo(
        await sampleGradients(m, withIp, { lora: o.lora ?? null, hooks }),
        withIp,
        k,
        m.cfg.hiddenSize,
      )
      : none;
    out.push({ none, defended });
  }
  return out;
}

/** A sample's gradients restricted to its last k tokens. */
function alignTo(g: SampleGradients, s: Sample, k: number, d: number): AlignedGradients {
  const T = s.ids.length, from = T - k;
  const mask = g.mask.slice(from);
  const predicts = Float32Array.from(mask, (_, t) => from + t + 1 < T ? g.mask[from + t + 1] : 0);
  return {
    grad: g.gradH.map((h) => h.slice(from * d)),
    mask,
    predicts,
    loss: g.loss,
    lossTokens: mask.reduce((a, b) => a + b, 0),
  };
}

/** Mean over the response positions (`predicts`) of cos(dL/dh_{l,t}, v_l) for every layer. */
export function meanTokenCosine(g: AlignedGradients, vec: Float32Array, d: number): number[] {
  return g.grad.map((h, l) => {
    let s = 0, n = 0;
    for (let t = 0; t < g.predicts.length; t++) {
      if (!g.predicts[t]) continue;
      s += cosine(h, vec, t * d, l * d, d);
      n++;
    }
    return n ? s / n : NaN;
  });
}

/**
 * Token-averaged gradient at one layer, [d]: over the response positions (`predicts`), or over every
 * aligned position ("all": the sequence's non-padding tokens, or for IP those after the inserted prompt).
 */
export function tokenMean(
  g: AlignedGradients,
  layer: number,
  d: number,
  tokens: "response" | "all" = "response",
): Float64Array {
  const out = new Float64Array(d);
  let n = 0;
  for (let t = 0; t < g.predicts.length; t++) {
    if (tokens === "response" && !g.predicts[t]) continue;
    for (let j = 0; j < d; j++) out[j] += g.grad[layer][t * d + j];
    n++;
  }
  if (n) { for (let j = 0; j < d; j++) out[j] /= n; }
  return out;
}

/** Upload a [L+1, d] host vector for steering. */
export function steerVectors(gpu: Gpu, data: Float32Array, boundaries: number, d: number): LayerVectors {
  return layerVectors(gpu, data, boundaries, d);
}
