// Persona-vector extraction: for each extraction question x instruction pair x n samples, answer
// with the trait-eliciting system prompt ("You are a/an {trait} assistant. {pos}") and with the
// suppressing one ("You are a helpful assistant. {neg}"); judge both; keep the pairs whose positive
// answer scores >= threshold, negative < threshold, and both coherence >= the coherence threshold;
// run prompt + answer through the model; vector = mean(pos) - mean(neg) of the response-averaged
// hidden states, [L+1, d], row 0 the embedding output (also prompt-average and last-prompt-token).

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import type { Model } from "../models/model.ts";
import { loadModel } from "../models/model.ts";
import { loadTrait, type TraitDef } from "../lib/text/trait.ts";
import type { Judge } from "../research/judge/judge.ts";
import { type SequenceActivations, sequenceActivations } from "../research/activations.ts";
import { writeSafetensors } from "../lib/safetensors.ts";
import { answerAll, judgeBoth } from "../research/evaluation.ts";
import {
  ConfigReader,
  type Experiment,
  type ExperimentContext,
  type JudgeConfig,
  makeJudge,
  readJudgeConfig,
  writeResult,
} from "./common.ts";
import { type Figure, type Json, lineChart, type ResultKind, type SummaryCells } from "./result_kind.ts";

export function article(trait: string): string {
  return /^[aeiou]/i.test(trait) ? "an" : "a";
}

export function systemPrompts(
  trait: string,
  pair: { pos: string; neg: string },
): { pos: string; neg: string } {
  return {
    pos: `You are ${article(trait)} ${trait} assistant. ${pair.pos}`,
    neg: `You are a helpful assistant. ${pair.neg}`,
  };
}

/** mean over rows of a list of [L+1, d] arrays */
export function meanOf(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs[0].length);
  for (const x of xs) for (let i = 0; i < x.length; i++) out[i] += x[i] / xs.length;
  return out;
}

export function difference(pos: Float32Array[], neg: Float32Array[]): Float32Array {
  const a = meanOf(pos), b = meanOf(neg);
  return a.map((x, i) => x - b[i]);
}

export interface ExtractOptions {
  samples: number;
  maxNewTokens: number;
  temperature: number;
  seed: number;
  batchSize: number;
  traitThreshold: number;
  coherenceThreshold: number;
  /** keep every pair regardless of the judge (smoke tests, judges without a trait rubric) */
  keepAll?: boolean;
  questions?: string[];
}

export interface ExtractionResult {
  vectors: { response_avg: Float32Array; prompt_avg: Float32Array; prompt_last: Float32Array };
  pairs: {
    question: string;
    instruction: number;
    sample: number;
    pos: { answer: string; trait: number | null; coherence: number | null };
    neg: { answer: string; trait: number | null; coherence: number | null };
    kept: boolean;
  }[];
  kept: number;
  /** token ids of the kept pairs (not written to JSON) */
  sequences: { pos: { prompt: number[]; answer: number[] }; neg: { prompt: number[]; answer: number[] } }[];
}

export async function extractPersonaVector(
  ctx: ExperimentContext,
  m: Model,
  trait: TraitDef,
  judge: Judge,
  o: ExtractOptions,
): Promise<ExtractionResult> {
  const questions = o.questions ?? trait.questions;
  const items: { question: string; instruction: number; sample: number }[] = [];
  questions.forEach((q) =>
    trait.instructions.forEach((_, i) => {
      for (let s = 0; s < o.samples; s++) items.push({ question: q, instruction: i, sample: s });
    })
  );
  const gen = {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topP: 1,
    seed: o.seed,
    batchSize: o.batchSize,
    lora: null,
    steer: [],
  };
  const sp = (i: number) => systemPrompts(trait.name, trait.instructions[i]);
  ctx.progress(`extract: ${items.length} positive and ${items.length} negative answers`);
  const pos = await answerAll(
    m,
    items.map((it) => ({ system: sp(it.instruction).pos, question: it.question })),
    gen,
    (n) => ctx.progress(`  positive ${n}/${items.length}`),
  );
  const neg = await answerAll(
    m,
    items.map((it) => ({ system: sp(it.instruction).neg, question: it.question })),
    { ...gen, seed: o.seed + 7919 },
    (n) => ctx.progress(`  negative ${n}/${items.length}`),
  );
  const pairs: ExtractionResult["pairs"] = [];
  const acts: { pos: SequenceActivations; neg: SequenceActivations }[] = [];
  const sequences: ExtractionResult["sequences"] = [];
  const stop = m.tokenizer!.stopIds;
  // all judging at once (an HTTP judge keeps up to its `concurrency` requests in flight), then the GPU work
  const judged = await Promise.all(
    items.map((it, i) =>
      Promise.all([
        judgeBoth(judge, trait, it.question, pos[i].text),
        judgeBoth(judge, trait, it.question, neg[i].text),
      ])
    ),
  );
  for (let i = 0; i < items.length; i++) {
    const it = items[i];
    const [ps, ns] = judged[i];
    const ok = (x: number | null, f: (v: number) => boolean) => x !== null && f(x);
    const kept = !!o.keepAll ||
      ok(ps.trait, (v) => v >= o.traitThreshold) && ok(ns.trait, (v) => v < o.traitThreshold) &&
        ok(ps.coherence, (v) => v >= o.coherenceThreshold) && ok(ns.coherence, (v) =>
          v >= o.coherenceThreshold);
    pairs.push({ ...it, pos: { answer: pos[i].text, ...ps }, neg: { answer: neg[i].text, ...ns }, kept });
    if (kept) {
      const strip = (ids: number[]) => ids.filter((t) => !stop.includes(t));
      const a = await sequenceActivations(m, pos[i].promptIds, strip(pos[i].ids));
      const b = await sequenceActivations(m, neg[i].promptIds, strip(neg[i].ids));
      if (a.responseAvg.some(Number.isNaN) || b.responseAvg.some(Number.isNaN)) { // an empty answer
        pairs[pairs.length - 1].kept = false;
        continue;
      }
      acts.push({ pos: a, neg: b });
      sequences.push({
        pos: { prompt: pos[i].promptIds, answer: strip(pos[i].ids) },
        neg: { prompt: neg[i].promptIds, answer: strip(neg[i].ids) },
      });
    }
  }
  if (!acts.length) {
    throw new Error(
      `extract: no pair passed the filters (trait >= ${o.traitThreshold} with the trait prompt, < ${o.traitThreshold} without, coherence >= ${o.coherenceThreshold}); lower the thresholds or sample more`,
    );
  }
  return {
    vectors: {
      response_avg: difference(acts.map((a) => a.pos.responseAvg), acts.map((a) => a.neg.responseAvg)),
      prompt_avg: difference(acts.map((a) => a.pos.promptAvg), acts.map((a) => a.neg.promptAvg)),
      prompt_last: difference(acts.map((a) => a.pos.promptLast), acts.map((a) => a.neg.promptLast)),
    },
    pairs,
    kept: acts.length,
    sequences,
  };
}

interface ExtractConfig {
  model: string;
  trait: string;
  judge: JudgeConfig;
  samples: number;
  max_new_tokens: number;
  temperature: number;
  seed: number;
  batch_size: number;
  trait_threshold: number;
  coherence_threshold: number;
  keep_all: boolean;
  output: string;
}

/** The persona vector's JSON (extract): its metrics (the schema below says the same). */
export interface ExtractMetrics {
  trait: string;
  vector_file: string;
  kept: number;
  total: number;
  /** |v_l| per boundary l = 0..L */
  norms: number[];
  pairs: ExtractionResult["pairs"];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const extractResult: ResultKind = {
  kind: "extract",
  section: "vectors",
  metricsSchema: {
    type: "object",
    required: ["trait", "vector_file", "kept", "total", "norms", "pairs"],
    properties: {
      kept: { type: "integer", minimum: 1 },
      norms: { type: "array", items: { type: "number" } },
      pairs: {
        type: "array",
        items: { type: "object", required: ["question", "instruction", "sample", "pos", "neg", "kept"] },
      },
    },
  },
  groupFigures: extractFigures,
  summary: extractSummary,
};

export const extractExperiment: Experiment<ExtractConfig> = {
  name: "extract",
  description: "persona vector of a trait (mean response activation with the trait prompt minus without)",
  results: [extractResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c: ExtractConfig = {
      model: r.nonEmpty("model"),
      trait: r.nonEmpty("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      samples: r.num("samples", 10, { int: true, min: 1 }),
      max_new_tokens: r.num("max_new_tokens", 256, { int: true, min: 1 }),
      temperature: r.num("temperature", 1, { min: 0 }),
      seed: r.num("seed", 0, SEED_RANGE),
      batch_size: r.num("batch_size", 16, { int: true, min: 1 }),
      trait_threshold: r.num("trait_threshold", 50),
      coherence_threshold: r.num("coherence_threshold", 50),
      keep_all: r.bool("keep_all", false),
      output: r.name("output", "persona_vector"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    const trait = await loadTrait(c.trait);
    const judge = await makeJudge(ctx, c.judge);
    const res = await extractPersonaVector(ctx, m, trait, judge, {
      samples: c.samples,
      maxNewTokens: c.max_new_tokens,
      temperature: c.temperature,
      seed: c.seed,
      batchSize: c.batch_size,
      traitThreshold: c.trait_threshold,
      coherenceThreshold: c.coherence_threshold,
      keepAll: c.keep_all,
    });
    const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    const vecPath = join(ctx.runDir, `${c.output}.safetensors`);
    const meta = {
      model: c.model,
      trait: trait.name,
      pairs_total: String(res.pairs.length),
      pairs_kept: String(res.kept),
      trait_threshold: String(c.trait_threshold),
      coherence_threshold: String(c.coherence_threshold),
      judge: judge.name,
      layout: "[L+1, d], row 0 = embedding output",
    };
    await writeSafetensors(vecPath, {
      vector: { dtype: "F32", shape: [boundaries, d], data: res.vectors.response_avg },
      prompt_avg: { dtype: "F32", shape: [boundaries, d], data: res.vectors.prompt_avg },
      prompt_last: { dtype: "F32", shape: [boundaries, d], data: res.vectors.prompt_last },
    }, meta);
    const norms = Array.from(
      { length: boundaries },
      (_, l) => Math.hypot(...res.vectors.response_avg.subarray(l * d, (l + 1) * d)),
    );
    const metrics: ExtractMetrics = {
      trait: trait.name,
      vector_file: vecPath,
      kept: res.kept,
      total: res.pairs.length,
      norms,
      pairs: res.pairs,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "extract", c, c.model, started, metrics);
    ctx.progress(`extract: kept ${res.kept}/${res.pairs.length} pairs → ${vecPath}`);
    return metrics;
  },
};

// ---- the result's figures and report lines

/** Every extracted vector's norm per layer in one chart (a line per trait). */
function extractFigures(results: { file: string; result: Json }[]): Figure[] {
  const vals = results.flatMap(({ result }) =>
    (result.metrics as ExtractMetrics).norms.map((n: number, l: number) => ({
      layer: l,
      norm: n,
      trait: (result.metrics as ExtractMetrics).trait,
    }))
  );
  return [{
    title: "Persona vector norm per layer",
    caption: results.map(({ file, result }) =>
      `${file}: ${result.metrics.trait}, ${result.metrics.kept} of ${result.metrics.total} pairs kept.`
    ).join(" "),
    spec: lineChart(vals, "layer", "norm", "trait", { x: "layer l", y: "|v_l|" }),
  }];
}

function extractSummary(m: ExtractMetrics): SummaryCells {
  return { what: m.trait, trait: "-", coherence: "-", peak: "-", n: `${m.kept}/${m.total} pairs kept` };
}
