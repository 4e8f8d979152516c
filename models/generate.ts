// Batched generation with a KV cache: prompts are left-padded to a common length, prefilled in
// one pass, then decoded one token per step.
//
// Decoding stays on the GPU: each step's token (argmax, or a seeded draw at temperature > 0; see
// kernels/sample.wgsl) is written where the next step's embedding reads it, and DECODE_CHUNK steps are
// recorded per submit with one readback of their token ids. (Every readback costs at least ~10 ms in
// Deno's WebGPU, which polls the device in 10 ms sleeps: one per token would cap generation near 75
// tokens/s whatever the GPU.) A row that stops mid-chunk goes on computing to the chunk's end; those
// tokens are dropped, and rows never see each other.

import { Tensor } from "../lib/tensor.ts";
import { sampleTokens } from "../lib/ops/sample.ts";
import { KVCache } from "./decoder.ts";
import type { Decoder, ForwardExtras } from "./decoder.ts";

/** Decode steps recorded per submit (one readback each). */
export const DECODE_CHUNK = 16;

export interface SamplingOptions {
  maxNewTokens: number;
  /** 0 = greedy; > 0 samples on the GPU, seeded by (seed, step, row in this call) */
  temperature?: number;
  /** nucleus mass in (0, 1] (1 = no nucleus) */
  topP?: number;
  seed?: number;
  stopIds?: number[];
  /** pad token id fed for left padding / finished rows (never attended to) */
  padId?: number;
  onToken?: (batchIndex: number, token: number) => void;
  /** told when max_new_tokens is cut to fit the model's positions */
  warn?: (msg: string) => void;
  /** adapters / steering for the prompt pass and for the generated tokens (see defence/hooks.ts) */
  extras?: (phase: "prompt" | "response", rows: number) => ForwardExtras | undefined;
  /** time the prompt pass and the decode steps apart (one extra wait for the GPU after the prompt) */
  timing?: boolean;
}

export interface Generation {
  tokens: number[][];
  finish: ("stop" | "length")[];
  /** with `timing`: the prompt pass (its first token included), and per readback chunk the decode steps it
   * ran and their wall time (the first chunk's carries the decode kernels' pipeline compiles) */
  timing?: { prefillS: number; prefillTokens: number; chunks: { steps: number; seconds: number }[] };
}

/** The smallest temperature that samples; lower ones (0 included) decode greedily. */
export const MIN_TEMPERATURE = 1e-4;

export async function generate(dec: Decoder, prompts: number[][], o: SamplingOptions): Promise<Generation> {
  const gpu = dec.gpu;
  const B = prompts.length;
  if (!B) return { tokens: [], finish: [] };
  if (prompts.some((p) => p.length === 0)) throw new Error("generate: every prompt needs at least one token");
  const T = Math.max(...prompts.map((p) => p.length));
  const P = dec.cfg.maxPositions;
  if (T >= P) {
    throw new Error(`generate: a prompt of ${T} tokens leaves no room in max_position_embeddings ${P}`);
  }
  // the KV cache holds the prompt plus what is asked for, never more positions than the model has
  const maxNew = Math.min(o.maxNewTokens, P - T);
  if (maxNew < o.maxNewTokens) {
    o.warn?.(
      `max_new_tokens ${o.maxNewTokens} capped to ${maxNew}: prompt ${T} + new tokens fill max_position_embeddings ${P}`,
    );
  }
  o = { ...o, maxNewTokens: maxNew };
  const kvStart = prompts.map((p) => T - p.length);
  const cache = KVCache.create(gpu, dec.cfg, B, T + o.maxNewTokens);
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
  // below 1e-4 a draw is the argmax in all but name (logits 0.01 apart weigh e^100 to 1), and 1 / T would
  // overflow f32 past ~1e-38 (a NaN distribution, token 0): such temperatures decode greedily
  const temperature = (o.temperature ?? 0) < MIN_TEMPERATURE ? 0 : o.temperature!, topP = o.topP ?? 1;
  let timing: Generation["timing"];
  const next = Tensor.empty(gpu, [B], "u32", "next_ids");
  // uploaded once for every step, and the RoPE table sized for the whole run: a decode step creates nothing
  const kvStartT = Tensor.uploadPooled(gpu, Uint32Array.from(kvStart), [B], "u32", "kv_start");
  // greedy steps write the next step's embeddings with their argmax (no embedding dispatch a step)
  const h0 = Tensor.empty(gpu, [B, dec.cfg.hiddenSize], "f32", "next_embeddings");
  let embedded = false;
  dec.cosSin(T + o.maxNewTokens);
  try {
    const ids = new Uint32Array(B * T).fill(pad);
    prompts.forEach((p, b) => ids.set(p, b * T + kvStart[b]));
    let past = 0, t = T;
    const t0 = performance.now();
    let prefillEnd = 0, chunkStart = 0;
    const chunks: { steps: number; seconds: number }[] = [];
    for (let step = 0; step < o.maxNewTokens && !done.every((x) => x);) {
      const k = Math.min(DECODE_CHUNK, o.maxNewTokens - step);
      const hist = Tensor.empty(gpu, [k * B], "u32", "decoded_ids");
      for (let i = 0; i < k; i++) {
        const extras = o.extras?.(step + i === 0 ? "prompt" : "response", B * t);
        const first = step + i === 0;
        const { normed, prenorm = false } = dec.forward({
          ...(first ? { ids } : embedded ? { embedded: h0 } : { ids: next }),
          batch: B,
          t,
          kvStart: kvStartT,
          past,
          cache,
          extras,
          finalNorm: "defer", // the LM head normalizes the last rows itself
        });
        const last = Array.from({ length: B }, (_, b) => b * t + t - 1);
        if (temperature > 0) {
          const logits = dec.logits(normed, last, prenorm);
          sampleTokens(gpu, logits, next, hist, i * B, {
            temperature,
            topP,
            seed: o.seed ?? 0,
            step: step + i,
          });
          logits.dispose();
        } else {
          embedded = dec.nextTokens(normed, last, prenorm, next, hist, i * B, h0);
        }
        normed.dispose();
        past += t;
        t = 1;
        if (o.timing && step + i === 0) {
          await gpu.finish();
          prefillEnd = chunkStart = performance.now();
        }
      }
      const got = await hist.readU32(gpu);
      hist.dispose();
      if (o.timing) {
        const now = performance.now();
        chunks.push({ steps: step === 0 ? k - 1 : k, seconds: (now - chunkStart) / 1000 });
        chunkStart = now;
      }
      for (let i = 0; i < k; i++) {
        for (let b = 0; b < B; b++) if (!done[b]) accept(b, got[i * B + b]);
      }
      step += k;
    }
    if (o.timing) timing = { prefillS: (prefillEnd - t0) / 1000, prefillTokens: B * T, chunks };
  } finally {
    next.dispose();
    h0.dispose();
    kvStartT.dispose();
    cache.dispose();
    gpu.trimPool(); // KV caches and activations of lengths the next call may not reuse
  }
  return { tokens: out, finish, ...(timing ? { timing } : {}) };
}
