// Batched generation with a KV cache: prompts are left-padded to a common length, prefilled in
// one pass, then decoded one token per step.
//
// Greedy decoding stays on the GPU: each step's argmax is written where the next step's embedding
// reads it, and DECODE_CHUNK steps are recorded per submit with one readback of their token ids.
// (Every readback costs at least ~10 ms in Deno's WebGPU, which polls the device in 10 ms sleeps: one
// per token would cap generation near 75 tokens/s whatever the GPU.) A row that stops mid-chunk goes on
// computing to the chunk's end; those tokens are dropped, and rows never see each other.
// Sampling (temperature > 0) reads the last position's logits back each step and samples on the host.

import { Rng } from "./rng.ts";
import { Tensor } from "./tensor.ts";
import { argmax } from "./ops/sample.ts";
import { KVCache } from "../models/decoder.ts";
import type { Decoder, ForwardExtras } from "../models/decoder.ts";

/** Greedy decode steps recorded per submit (one readback each). */
export const DECODE_CHUNK = 16;

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
  const accept = (b: number, tok: number) => {
    out[b].push(tok);
    o.onToken?.(b, tok);
    if (stop.has(tok)) {
      done[b] = true;
      finish[b] = "stop";
    }
  };
  try {
    let ids = new Uint32Array(B * T).fill(pad);
    prompts.forEach((p, b) => ids.set(p, b * T + kvStart[b]));
    let past = 0, t = T;
    if ((o.temperature ?? 0) <= 0) {
      const next = Tensor.empty(gpu, [B], "u32", "next_ids");
      try {
        for (let step = 0; step < o.maxNewTokens && !done.every((x) => x);) {
          const k = Math.min(DECODE_CHUNK, o.maxNewTokens - step);
          const hist = Tensor.empty(gpu, [k * B], "u32", "decoded_ids");
          for (let i = 0; i < k; i++) {
            const extras = o.extras?.(step + i === 0 ? "prompt" : "response", B * t);
            const { normed } = dec.forward({
              ids: step + i === 0 ? ids : next,
              batch: B,
              t,
              kvStart,
              past,
              cache,
              extras,
            });
            const logits = dec.logits(normed, Array.from({ length: B }, (_, b) => b * t + t - 1));
            normed.dispose();
            argmax(gpu, logits, next, hist, i * B);
            logits.dispose();
            past += t;
            t = 1;
          }
          const got = await hist.readU32(gpu);
          hist.dispose();
          for (let i = 0; i < k; i++) {
            for (let b = 0; b < B; b++) if (!done[b]) accept(b, got[i * B + b]);
          }
          step += k;
        }
      } finally {
        next.dispose();
      }
      return { tokens: out, finish };
    }
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
        accept(b, tok);
        next[b] = tok;
      }
      if (done.every((x) => x)) break;
      past += t;
      t = 1;
      ids = next;
    }
  } finally {
    cache.dispose();
    gpu.trimPool(); // KV caches and activations of lengths the next call may not reuse
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
