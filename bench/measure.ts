// What `deno task bench` measures on the engine: forward, training steps (LoRA or full-parameter) and
// greedy generation of a loaded model, each as tokens/s, plus the engine's peak GPU allocation.

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { disposeSaved } from "../models/decoder.ts";
import type { Model } from "../models/model.ts";
import { LORA_MODULES, LoraSet } from "../models/lora.ts";
import { FullParams } from "../train/full.ts";
import { stepHooks } from "../train/step_hooks.ts";
import type { Hooks } from "../defence/hooks.ts";
import { backward } from "../train/backward.ts";
import { adamwStep, normPartials, zeroGrads } from "../lib/ops/optim.ts";
import { generate } from "../models/generate.ts";

export interface Timing {
  /** the first call (pipeline compiles, first touch of buffers), on its own */
  firstSeconds: number;
  /** seconds per call in the steady state: the calls after the first two, averaged */
  seconds: number;
  runs: number;
  /** host time recording a steady-state call (the median of a few, each after the device went idle: on a CPU
   * adapter its worker threads share the cores with the host right after a submit), and its dispatches */
  recordSeconds: number;
  dispatches: number;
}

/**
 * Time `record` (recorded GPU work, waited for): the first call apart, then (after a second warm call, which
 * finds the first one's buffers and bind groups) calls until minSeconds and minRuns are both reached.
 */
export async function timeGpu(
  gpu: Gpu,
  record: () => void | Promise<void>,
  o: { minSeconds: number; minRuns?: number },
): Promise<Timing> {
  const tf = performance.now();
  await record();
  await gpu.finish();
  const firstSeconds = (performance.now() - tf) / 1000;
  await record();
  await gpu.finish();
  const minRuns = o.minRuns ?? 3;
  let n = 0, dispatches = 0;
  const recordMs: number[] = [];
  const t0 = performance.now();
  while (true) {
    const d0 = gpu.dispatchCount, r0 = performance.now();
    await record();
    recordMs.push(performance.now() - r0);
    dispatches += gpu.dispatchCount - d0;
    n++;
    await gpu.finish();
    const dt = (performance.now() - t0) / 1000;
    if (dt >= o.minSeconds && n >= minRuns) {
      return {
        firstSeconds,
        seconds: dt / n,
        runs: n,
        recordSeconds: recordMs.sort((x, y) => x - y)[recordMs.length >> 1] / 1000,
        dispatches: dispatches / n,
      };
    }
  }
}

function randomIds(n: number, vocab: number, seed: number): Uint32Array {
  let s = seed >>> 0;
  const top = Math.min(vocab, 30000); // ordinary tokens, not the special ones at the top
  return Uint32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 3 + (s % (top - 3));
  });
}

/** Forward to logits for every position of a B x T batch (logits in row blocks that fit a binding). */
export function forwardRecorder(m: Model, B: number, T: number): () => void {
  const ids = randomIds(B * T, m.cfg.vocabSize, 1);
  const block = m.decoder.maxLogitRows();
  return () => {
    const { normed } = m.decoder.forward({ ids, batch: B, t: T });
    for (let r = 0; r < B * T; r += block) {
      const rows = Array.from({ length: Math.min(block, B * T - r) }, (_, i) => r + i);
      m.decoder.logits(normed, rows).dispose();
    }
    normed.dispose();
  };
}

export interface StepBench {
  record: () => void;
  dispose: () => void;
}

/** One optimizer step (forward, backward, AdamW) of LoRA on all projections or of every parameter. */
export function trainStepRecorder(
  gpu: Gpu,
  m: Model,
  kind: "lora" | "full",
  B: number,
  T: number,
  rank: number,
  o: { dropout?: number; checkpoint?: boolean; hooks?: Hooks } = {},
): StepBench {
  const dropout = o.dropout ?? 0;
  const lora = kind === "lora"
    ? LoraSet.create(gpu, m.cfg, {
      r: rank,
      alpha: 2 * rank,
      dropout,
      targetModules: [...LORA_MODULES],
      rslora: false,
    }, 0)
    : null;
  const full = kind === "full" ? FullParams.create(gpu, m.cfg, m.decoder.w) : null;
  const store = (lora?.store ?? full?.store)!;
  const flat = { p: store.p, g: store.g, m: store.m, v: store.v, total: store.total };
  const partials = Tensor.empty(gpu, [normPartials(store.total)]), clip = Tensor.empty(gpu, [4]);
  const ids = randomIds(B * T, m.cfg.vocabSize, 2), targets = randomIds(B * T, m.cfg.vocabSize, 3);
  const mask = new Float32Array(B * T).fill(1);
  let n = 0;
  return {
    record: () => {
      zeroGrads(gpu, flat);
      const ex = stepHooks(gpu, { lora, hooks: o.hooks, rows: B * T, dropoutSeed: n++ });
      const { normed, saved } = m.decoder.forward({
        ids,
        batch: B,
        t: T,
        save: true,
        checkpoint: o.checkpoint,
        extras: ex.forward,
      });
      backward(
        m.decoder,
        saved!,
        normed,
        { targets, mask, scale: 1 / (B * T) },
        ex.backward,
        full?.grads ?? null,
      )
        .dispose();
      disposeSaved(saved!);
      ex.dispose();
      adamwStep(
        gpu,
        flat,
        { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: n, maxGradNorm: 1 },
        partials,
        clip,
      );
      gpu.trimPool(); // a step's end, as in training: the next step finds this one's buffers in their roles
    },
    dispose: () => {
      partials.dispose();
      clip.dispose();
      store.destroy();
    },
  };
}

export interface GenerationSpeed {
  /** the whole call (prompt and decoding), steady state, tokens per second over all rows */
  tokensPerS: number;
  /** the prompt pass alone: prompt tokens per second */
  prefillTokensPerS: number;
  /** decoding after the first readback chunk (whose steps carry the decode kernels' compiles in a first
   * call): generated tokens per second over all rows */
  decodeTokensPerS: number;
  /** the first call, compiles included */
  firstSeconds: number;
  runs: number;
}

/**
 * Greedy generation of `newTokens` tokens (no stop) for B prompts of 16 tokens: the whole call, and the
 * prompt pass and the decode steps apart, from generate's own timing of a steady-state call.
 */
export async function generationSpeed(
  gpu: Gpu,
  m: Model,
  B: number,
  newTokens: number,
  minSeconds: number,
): Promise<GenerationSpeed> {
  const prompts = Array.from({ length: B }, (_, b) => [...randomIds(16, m.cfg.vocabSize, 10 + b)]);
  let prefill = 0, decodeS = 0, decodeSteps = 0, prefillTokens = 0, timed = 0;
  const t = await timeGpu(gpu, async () => {
    const g = await generate(m.decoder, prompts, { maxNewTokens: newTokens, temperature: 0, timing: true });
    if (++timed > 2) { // past timeGpu's two warm-up calls
      prefill += g.timing!.prefillS;
      prefillTokens += g.timing!.prefillTokens;
      for (const c of g.timing!.chunks) {
        decodeS += c.seconds;
        decodeSteps += c.steps;
      }
    }
  }, { minSeconds, minRuns: 2 });
  return {
    tokensPerS: B * newTokens / t.seconds,
    prefillTokensPerS: prefillTokens / prefill,
    decodeTokensPerS: B * decodeSteps / decodeS,
    firstSeconds: t.firstSeconds,
    runs: t.runs,
  };
}
