// Trait evaluation, the building block of every judged measurement (the evaluate experiment, the
// conditions sweep, persona-vector extraction, the world model's card): eval questions x n samples with an
// optional system prompt, adapter and steering; trait and coherence from the judge per sample (issued
// concurrently); mean, SEM and missing counts; and the projection of response-averaged activations.

import type { Model } from "../models/model.ts";
import { generate } from "../models/generate.ts";
import { generationExtras } from "../defence/hooks.ts";
import type { LoraSet } from "../models/lora.ts";
import type { SteerHook } from "../defence/hooks.ts";
import { COHERENCE_PROMPT, fillTemplate, type TraitDef } from "../lib/text/trait.ts";
import type { Judge } from "./judge/judge.ts";
import { projection, sequenceActivations } from "./activations.ts";
import type { ChatMessage } from "../lib/text/tokenizer.ts";
import { finite, mean, sem } from "../lib/stats.ts";

export interface EvalOptions {
  samples: number;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  batchSize: number;
  systemPrompt: string | null;
  /** instead of systemPrompt: sample s of each question gets systemPrompts[s % n] (a trait's instruction
   * bank, e.g. the trait-prompted reference of the steering experiment) */
  systemPrompts?: string[];
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
  ctx: { progress: (line: string) => void },
  m: Model,
  trait: TraitDef,
  judge: Judge,
  o: EvalOptions,
): Promise<{ samples: EvalSample[]; summary: EvalSummary }> {
  const questions = o.questions ?? trait.questions;
  const prompts = questions.flatMap((q) =>
    Array.from({ length: o.samples }, (_, s) => ({
      system: o.systemPrompts?.length ? o.systemPrompts[s % o.systemPrompts.length] : o.systemPrompt,
      question: q,
    }))
  );
  const answers = await answerAll(m, prompts, o, (n) => ctx.progress(`  generated ${n}/${prompts.length}`));
  // every sample's judging at once: an HTTP judge runs up to its `concurrency` requests in flight
  const scores = await Promise.all(
    answers.map((a, i) => judgeBoth(judge, trait, prompts[i].question, a.text)),
  );
  judge.checkHealth?.();
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
