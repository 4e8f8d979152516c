// Hidden states of prompt + answer at every residual-stream boundary l = 0..L, averaged over the
// response tokens (and over the prompt, and at the last prompt token) — the quantities persona
// vectors and activation projections are made of.

import type { Model } from "../models/model.ts";
import { forwardHooks, type Hooks } from "../defence/hooks.ts";
import { Tensor } from "../lib/tensor.ts";
import type { LoraSet } from "../models/lora.ts";

export interface SequenceActivations {
  /** [L+1, d] mean over the answer tokens */
  responseAvg: Float32Array;
  /** [L+1, d] mean over the prompt tokens */
  promptAvg: Float32Array;
  /** [L+1, d] at the last prompt token */
  promptLast: Float32Array;
}

/**
 * Hidden states of a token sequence at l = 0..L, each [T*d], as Hugging Face's `hidden_states` (the
 * paper's layer numbers): l < L the residual stream after decoder layer l (0 = the embedding), after any
 * hooks; l = L the last decoder layer's output after the final norm. Hooks at l = L (steering,
 * sign-forcing, gradients) act before that norm, where a PyTorch forward hook on `model.layers[L-1]` does.
 */
export async function hiddenStates(
  m: Model,
  ids: number[],
  o: { lora?: LoraSet | null; hooks?: Hooks } = {},
): Promise<Float32Array[]> {
  const layers = Array.from({ length: m.cfg.numLayers + 1 }, (_, l) => l);
  const ex = forwardHooks(m.decoder.gpu, {
    lora: o.lora,
    hooks: { ...o.hooks, captureActivations: layers },
    rows: ids.length,
  });
  const { normed } = m.decoder.forward({
    ids: Uint32Array.from(ids),
    batch: 1,
    t: ids.length,
    extras: ex.forward,
  });
  const last = m.cfg.numLayers;
  const hs = await Tensor.readMany(
    m.decoder.gpu,
    layers.map((l) => (l === last ? normed : ex.activations.get(l)!)),
  );
  normed.dispose();
  for (const t of ex.activations.values()) t.dispose();
  ex.dispose();
  return hs;
}

export async function sequenceActivations(
  m: Model,
  promptIds: number[],
  answerIds: number[],
  o: { lora?: LoraSet | null; hooks?: Hooks } = {},
): Promise<SequenceActivations> {
  if (!promptIds.length) throw new Error("activations: empty prompt");
  const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
  const ids = [...promptIds, ...answerIds], T = ids.length, P = promptIds.length;
  const hs = await hiddenStates(m, ids, o);
  const responseAvg = new Float32Array(boundaries * d),
    promptAvg = new Float32Array(boundaries * d),
    promptLast = new Float32Array(boundaries * d);
  hs.forEach((h, l) => {
    for (let j = 0; j < d; j++) {
      let sp = 0, sr = 0;
      for (let t = 0; t < P; t++) sp += h[t * d + j];
      for (let t = P; t < T; t++) sr += h[t * d + j];
      promptAvg[l * d + j] = sp / P;
      responseAvg[l * d + j] = T > P ? sr / (T - P) : NaN;
      promptLast[l * d + j] = h[(P - 1) * d + j];
    }
  });
  return { responseAvg, promptAvg, promptLast };
}

/** Projection of each layer's row of `acts` [L+1, d] on `vec` [L+1, d] at `layer`: a·v / |v|. */
export function projection(acts: Float32Array, vec: Float32Array, layer: number, d: number): number {
  let dot = 0, n = 0;
  for (let j = 0; j < d; j++) {
    dot += acts[layer * d + j] * vec[layer * d + j];
    n += vec[layer * d + j] ** 2;
  }
  return dot / Math.sqrt(n);
}
