// Batched generation with a KV cache: prompts are left-padded to a common length, prefilled in
// one pass, then decoded one token per step. One readback per step (the last-position logits).

import { Rng } from "./rng.ts";
import { KVCache } from "../models/decoder.ts";
import type { Decoder, ForwardExtras } from "../models/decoder.ts";

export interface SamplingOptions {
  maxNewTokens: number;
  /** 0 = greedy */
  temperature?: number;
  topP?: number;
  seed?: number;
  stopIds?: number[];
  /** pad token id fed for left padding / finished rows (never attended to) */
  padId?: number;
  onToken?: (batchIndex: number, token: number) => void;
  /** adapters / steering for the prompt pass and for the generated tokens (see lib/train/extras.ts) */
  extras?: (phase: "prompt" | "response", rows: number) => ForwardExtras | undefined;
}

export interface Generation {
  tokens: number[][];
  finish: ("stop" | "length")[];
}

export async function generate(dec: Decoder, prompts: number[][], o: SamplingOptions): Promise<Generation> {
  const gpu = dec.gpu;
  const B = prompts.length;
  if (!B) return { tokens: [], finish: [] };
  if (prompts.some((p) => p.length === 0)) throw new Error("generate: every prompt needs at least one token");
  const T = Math.max(...prompts.map((p) => p.length));
  const kvStart = prompts.map((p) => T - p.length);
  const cache = KVCache.create(gpu, dec.cfg, B, T + o.maxNewTokens);
  const rng = new Rng(o.seed ?? 0);
  const stop = new Set(o.stopIds ?? []);
  const pad = o.padId ?? 0;
  const out: number[][] = prompts.map(() => []);
  const done = new Array(B).fill(false);
  const finish: ("stop" | "length")[] = new Array(B).fill("length");
  try {
    let ids = new Uint32Array(B * T).fill(pad);
    prompts.forEach((p, b) => ids.set(p, b * T + kvStart[b]));
    let past = 0, t = T;
    for (let step = 0; step < o.maxNewTokens; step++) {
      const extras = o.extras?.(step === 0 ? "prompt" : "response", B * t);
      const { normed } = dec.forward({ ids, batch: B, t, kvStart, past, cache, extras });
      const logits = dec.logits(normed, Array.from({ length: B }, (_, b) => b * t + t - 1));
      normed.dispose();
      const rows = await logits.read(gpu);
      logits.dispose();
      const V = dec.cfg.vocabSize;
      const next = new Uint32Array(B).fill(pad);
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        const tok = sample(rows.subarray(b * V, (b + 1) * V), o.temperature ?? 0, o.topP ?? 1, rng);
        out[b].push(tok);
        o.onToken?.(b, tok);
        next[b] = tok;
        if (stop.has(tok)) {
          done[b] = true;
          finish[b] = "stop";
        }
      }
      if (done.every((x) => x)) break;
      past += t;
      t = 1;
      ids = next;
    }
  } finally {
    cache.dispose();
  }
  return { tokens: out, finish };
}

/** Greedy argmax (ties → lowest id) or temperature / nucleus sampling. */
export function sample(logits: Float32Array, temperature: number, topP: number, rng: Rng): number {
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let mx = -Infinity;
  for (const x of logits) mx = Math.max(mx, x);
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i] - mx) / temperature);
  let cand: number[];
  if (topP < 1) {
    // only tokens with non-negligible mass can be in the nucleus; sort those
    const order = [];
    for (let i = 0; i < probs.length; i++) if (probs[i] / sum > 1e-9) order.push(i);
    order.sort((a, b) => probs[b] - probs[a] || a - b);
    cand = [];
    let c = 0;
    for (const i of order) {
      cand.push(i);
      c += probs[i] / sum;
      if (c >= topP) break;
    }
  } else {
    cand = Array.from({ length: probs.length }, (_, i) => i);
  }
  let total = 0;
  for (const i of cand) total += probs[i];
  let r = rng.next() * total;
  for (const i of cand) {
    r -= probs[i];
    if (r <= 0) return i;
  }
  return cand[cand.length - 1];
}
