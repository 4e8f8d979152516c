// Trait evaluation: eval questions x n samples (temperature 1), optional system prompt, adapter and
// steering; trait and coherence scores from the judge per sample; mean, SEM and missing counts; and
// the mean projection of response-averaged activations on a vector at a layer.

import { join } from "node:path";
import type { Model } from "../models/model.ts";
import { loadModel } from "../models/model.ts";
import { generate } from "../lib/generate.ts";
import { generationExtras } from "../lib/train/extras.ts";
import { LoraSet } from "../lib/train/lora.ts";
import { layerVectors, type SteerHook } from "../lib/hooks.ts";
import { loadLayerVectors } from "../lib/vectors.ts";
import { COHERENCE_PROMPT, fillTemplate, loadTrait, type TraitDef } from "../lib/traits.ts";
import type { Judge } from "../lib/judge/judge.ts";
import { projection, sequenceActivations } from "../lib/activations.ts";
import type { ChatMessage } from "../lib/text/tokenizer.ts";
import {
  ConfigReader,
  type Experiment,
  type ExperimentContext,
  finite,
  type JudgeConfig,
  makeJudge,
  mean,
  readJudgeConfig,
  sem,
  writeResult,
} from "./common.ts";

export interface EvalOptions {
  samples: number;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  batchSize: number;
  systemPrompt: string | null;
  lora: LoraSet | null;
  steer: SteerHook[];
  /** project response-averaged activations on this [L+1, d] vector at `layer` */
  projection: { vector: Float32Array; layer: number } | null;
  questions?: string[];
}

export interface EvalSample {
  question: string;
  sample: number;
  answer: string;
  trait: number | null;
  coherence: number | null;
  projection: number | null;
}

export interface EvalSummary {
  n: number;
  trait_mean: number | null;
  trait_sem: number | null;
  coherence_mean: number | null;
  coherence_sem: number | null;
  missing_trait: number;
  missing_coherence: number;
  projection_mean: number | null;
}

export function chatPrompt(m: Model, system: string | null, user: string): number[] {
  const msgs: ChatMessage[] = system
    ? [{ role: "system", content: system }, { role: "user", content: user }]
    : [{ role: "user", content: user }];
  return m.tokenizer!.encodeChat(msgs, true);
}

/** Generate answers for (system, question) prompts in batches; returns answers in order. */
export async function answerAll(
  m: Model,
  prompts: { system: string | null; question: string }[],
  o: Pick<EvalOptions, "maxNewTokens" | "temperature" | "topP" | "seed" | "batchSize" | "lora" | "steer">,
  progress?: (done: number) => void,
): Promise<{ ids: number[]; promptIds: number[]; text: string }[]> {
  const tok = m.tokenizer!;
  const out: { ids: number[]; promptIds: number[]; text: string }[] = [];
  const gx = o.lora || o.steer.length ? generationExtras(m.decoder.gpu, o.lora, { steer: o.steer }) : null;
  let warned = false;
  const warn = (msg: string) => {
    if (!warned) console.error(`note: ${msg}`);
    warned = true;
  };
  for (let i = 0; i < prompts.length; i += o.batchSize) {
    const batch = prompts.slice(i, i + o.batchSize).map((p) => chatPrompt(m, p.system, p.question));
    const g = await generate(m.decoder, batch, {
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      topP: o.topP,
      seed: o.seed + i,
      stopIds: tok.stopIds,
      padId: tok.tokenToId("<|endoftext|>") ?? 0,
      extras: gx?.extras,
      warn,
    });
    g.tokens.forEach((ids, b) => {
      const content = ids.filter((t) => !tok.stopIds.includes(t));
      out.push({ ids, promptIds: batch[b], text: tok.decode(content) });
    });
    gx?.dispose();
    progress?.(out.length);
  }
  return out;
}

export async function judgeBoth(judge: Judge, trait: TraitDef, question: string, answer: string) {
  const [t, c] = await Promise.all([
    judge.score({
      trait: trait.name,
      rubric: "trait",
      question,
      answer,
      prompt: fillTemplate(trait.evalPrompt, question, answer),
    }),
    judge.score({
      trait: trait.name,
      rubric: "coherence",
      question,
      answer,
      prompt: fillTemplate(judge.coherencePrompt ?? COHERENCE_PROMPT, question, answer),
    }),
  ]);
  return { trait: t, coherence: c };
}

export async function evaluateTrait(
  ctx: ExperimentContext,
  m: Model,
  trait: TraitDef,
  judge: Judge,
  o: EvalOptions,
): Promise<{ samples: EvalSample[]; summary: EvalSummary }> {
  const questions = o.questions ?? trait.questions;
  const prompts = questions.flatMap((q) =>
    Array.from({ length: o.samples }, () => ({ system: o.systemPrompt, question: q }))
  );
  const answers = await answerAll(m, prompts, o, (n) => ctx.progress(`  generated ${n}/${prompts.length}`));
  // every sample's judging at once: an HTTP judge runs up to its `concurrency` requests in flight
  const scores = await Promise.all(
    answers.map((a, i) => judgeBoth(judge, trait, prompts[i].question, a.text)),
  );
  const samples: EvalSample[] = [];
  for (let i = 0; i < answers.length; i++) {
    const q = prompts[i].question, a = answers[i];
    const s = scores[i];
    let proj: number | null = null;
    if (o.projection) {
      const acts = await sequenceActivations(
        m,
        a.promptIds,
        a.ids.filter((t) => !m.tokenizer!.stopIds.includes(t)),
        { lora: o.lora },
      );
      const v = projection(acts.responseAvg, o.projection.vector, o.projection.layer, m.cfg.hiddenSize);
      proj = Number.isFinite(v) ? v : null;
    }
    samples.push({
      question: q,
      sample: i % o.samples,
      answer: a.text,
      trait: s.trait,
      coherence: s.coherence,
      projection: proj,
    });
  }
  const tr = samples.map((s) => s.trait).filter((x): x is number => x !== null);
  const co = samples.map((s) => s.coherence).filter((x): x is number => x !== null);
  const pr = samples.map((s) => s.projection).filter((x): x is number => x !== null);
  return {
    samples,
    summary: {
      n: samples.length,
      trait_mean: finite(mean(tr)),
      trait_sem: finite(sem(tr)),
      coherence_mean: finite(mean(co)),
      coherence_sem: finite(sem(co)),
      missing_trait: samples.length - tr.length,
      missing_coherence: samples.length - co.length,
      projection_mean: finite(mean(pr)),
    },
  };
}

interface EvaluateConfig {
  model: string;
  adapter: string | null;
  trait: string;
  judge: JudgeConfig;
  samples: number;
  max_new_tokens: number;
  temperature: number;
  top_p: number;
  seed: number;
  batch_size: number;
  system_prompt: string | null;
  steer: { vector: string; layers: number[]; coef: number; mode: "all" | "prompt" | "response" } | null;
  projection: { vector: string; layer: number } | null;
  output: string;
}

export const evaluateExperiment: Experiment<EvaluateConfig> = {
  name: "evaluate",
  description: "trait and coherence of a model's answers to the trait's eval questions",
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c: EvaluateConfig = {
      model: r.str("model"),
      adapter: r.optStr("adapter"),
      trait: r.str("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      samples: r.num("samples", 10, { int: true, min: 1 }),
      max_new_tokens: r.num("max_new_tokens", 256, { int: true, min: 1 }),
      temperature: r.num("temperature", 1, { min: 0 }),
      top_p: r.num("top_p", 1, { min: 0, max: 1 }),
      seed: r.num("seed", 0, { int: true }),
      batch_size: r.num("batch_size", 16, { int: true, min: 1 }),
      system_prompt: r.optStr("system_prompt"),
      steer: null,
      projection: null,
      output: r.name("output", "evaluate.json"),
    };
    if (r.has("steer")) {
      const s = r.sub("steer");
      c.steer = {
        vector: s.str("vector"),
        layers: s.intList("layers"),
        coef: s.num("coef"),
        mode: s.str("mode", "all") as "all",
      };
      if (!["all", "prompt", "response"].includes(c.steer.mode)) {
        throw new Error(`${file}: key 'steer.mode' must be all, prompt or response`);
      }
      s.done();
    } else r.any("steer");
    if (r.has("projection")) {
      const p = r.sub("projection");
      c.projection = { vector: p.str("vector"), layer: p.num("layer", undefined, { int: true, min: 0 }) };
      p.done();
    } else r.any("projection");
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    const trait = await loadTrait(c.trait);
    const judge = await makeJudge(ctx, c.judge);
    const steer: SteerHook[] = c.steer
      ? [{
        vectors: layerVectors(ctx.gpu, await loadLayerVectors(c.steer.vector, L, d), L, d),
        layers: c.steer.layers,
        coef: c.steer.coef,
        mode: c.steer.mode,
      }]
      : [];
    const res = await evaluateTrait(ctx, m, trait, judge, {
      samples: c.samples,
      maxNewTokens: c.max_new_tokens,
      temperature: c.temperature,
      topP: c.top_p,
      seed: c.seed,
      batchSize: c.batch_size,
      systemPrompt: c.system_prompt,
      lora: c.adapter ? await LoraSet.load(ctx.gpu, m.cfg, c.adapter) : null,
      steer,
      projection: c.projection
        ? { vector: await loadLayerVectors(c.projection.vector, L, d), layer: c.projection.layer }
        : null,
    });
    await judge.close?.();
    const metrics = { trait: trait.name, judge: judge.name, summary: res.summary, samples: res.samples };
    await writeResult(join(ctx.runDir, c.output), "evaluate", c, c.model, started, metrics);
    ctx.progress(
      `evaluate: ${trait.name} ${res.summary.trait_mean?.toFixed(1)} ± ${
        res.summary.trait_sem?.toFixed(1)
      } (coherence ${res.summary.coherence_mean?.toFixed(1)}), ${res.summary.missing_trait} missing`,
    );
    return metrics;
  },
};
