// The evaluate experiment: research/evaluation.ts's trait evaluation of one model (with an optional system
// prompt, adapter, steering and projection) from a YAML config, written as a result.

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import { loadModel } from "../models/model.ts";
import { LoraSet } from "../models/lora.ts";
import { type SteerHook, steerHook } from "../defence/hooks.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { loadTrait } from "../lib/text/trait.ts";
import { readSteer, type SteerSpec } from "../defence/defence.ts";
import { type EvalSample, type EvalSummary, evaluateTrait } from "../research/evaluation.ts";
import {
  ConfigReader,
  type Experiment,
  type JudgeConfig,
  makeJudge,
  readJudgeConfig,
  writeResult,
} from "./common.ts";
import {
  type Figure,
  FIGURE_HEIGHT,
  type Json,
  meanSem,
  type ResultKind,
  type SummaryCells,
} from "./result_kind.ts";

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
  steer: SteerSpec | null;
  projection: { vector: string; layer: number } | null;
  output: string;
}

/** evaluate.json's metrics (the schema below says the same). */
export interface EvaluateMetrics {
  trait: string;
  judge: string;
  summary: EvalSummary;
  samples: EvalSample[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const evaluateResult: ResultKind = {
  kind: "evaluate",
  section: "evaluate",
  metricsSchema: {
    type: "object",
    required: ["trait", "judge", "summary", "samples"],
    properties: {
      summary: { $ref: "summary" },
      samples: {
        type: "array",
        items: {
          type: "object",
          required: ["question", "sample", "answer", "trait", "coherence", "projection"],
          properties: {
            answer: { type: "string" },
            trait: { type: ["number", "null"] },
            coherence: { type: ["number", "null"] },
            projection: { type: ["number", "null"] },
          },
        },
      },
    },
  },
  figures: evaluateFigures,
  summary: evaluateSummary,
};

export const evaluateExperiment: Experiment<EvaluateConfig> = {
  name: "evaluate",
  description: "trait and coherence of a model's answers to the trait's eval questions",
  results: [evaluateResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c: EvaluateConfig = {
      model: r.nonEmpty("model"),
      adapter: r.optStr("adapter"),
      trait: r.nonEmpty("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      samples: r.num("samples", 10, { int: true, min: 1 }),
      max_new_tokens: r.num("max_new_tokens", 256, { int: true, min: 1 }),
      temperature: r.num("temperature", 1, { min: 0 }),
      top_p: r.num("top_p", 1, { min: 0, max: 1 }),
      seed: r.num("seed", 0, SEED_RANGE),
      batch_size: r.num("batch_size", 16, { int: true, min: 1 }),
      system_prompt: r.optStr("system_prompt"),
      steer: null,
      projection: null,
      output: r.name("output", "evaluate.json"),
    };
    c.steer = r.nullable("steer", (k) => readSteer(r.sub(k), { phase: true }));
    if (r.has("projection")) {
      const p = r.sub("projection");
      c.projection = {
        vector: p.nonEmpty("vector"),
        layer: p.num("layer", undefined, { int: true, min: 0 }),
      };
      p.done();
    } else r.any("projection");
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    const trait = await loadTrait(c.trait);
    const judge = await makeJudge(ctx, c.judge);
    const steer: SteerHook[] = c.steer ? [await steerHook(ctx.gpu, m.cfg, c.steer)] : [];
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
        ? { vector: await loadLayerVectors(c.projection.vector, boundaries, d), layer: c.projection.layer }
        : null,
    });
    await judge.close?.();
    const metrics: EvaluateMetrics = {
      trait: trait.name,
      judge: judge.name,
      summary: res.summary,
      samples: res.samples,
    };
    await writeResult(join(ctx.runDir, c.output), "evaluate", c, c.model, started, metrics);
    ctx.progress(
      `evaluate: ${trait.name} ${res.summary.trait_mean?.toFixed(1)} ± ${
        res.summary.trait_sem?.toFixed(1)
      } (coherence ${res.summary.coherence_mean?.toFixed(1)}), ${res.summary.missing_trait} missing`,
    );
    return metrics;
  },
};

// ---- the result's figures and report lines

function evaluateFigures(r: Json, file: string): Figure[] {
  const m: EvaluateMetrics = r.metrics;
  const s = m.summary;
  return [{
    title: `Evaluation: ${m.trait}`,
    caption:
      `${file}: ${s.n} answers (${s.missing_trait} missing trait scores), judge ${m.judge}; model ${r.config.model}${
        r.config.adapter ? ` + ${r.config.adapter}` : ""
      }.`,
    spec: {
      width: 240,
      height: FIGURE_HEIGHT,
      data: {
        values: [{ k: "trait", v: s.trait_mean, e: s.trait_sem ?? 0 }, {
          k: "coherence",
          v: s.coherence_mean,
          e: s.coherence_sem ?? 0,
        }],
      },
      mark: "bar",
      encoding: {
        x: { field: "k", type: "nominal", title: "" },
        y: { field: "v", type: "quantitative", title: "mean score" },
      },
    },
  }];
}

function evaluateSummary(m: EvaluateMetrics): SummaryCells {
  const s = m.summary;
  return {
    what: m.trait,
    trait: meanSem(s.trait_mean, s.trait_sem),
    coherence: meanSem(s.coherence_mean, s.coherence_sem),
    peak: "-",
    n: `${s.n} (${s.missing_trait} missing)`,
  };
}
