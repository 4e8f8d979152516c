// The steering experiment (2.1: "effective PPS vectors are typically selected as vectors that induce
// expression of the undesirable trait when used in model steering"): the base model generates with coef · v_l
// added at the given layers, over a grid of coefficients, judged for trait and coherence; beside it the base
// model's trait-prompted level (its answers under the trait's eliciting system prompts), the level a PPS
// vector should reach. The smallest grid coefficient whose steered trait score reaches that level is the
// result's `chosen` coefficient (the demo trains PPS with it). A Gaussian vector of the same per-layer norms
// (`random: true`) gives the control curve at the same coefficients.

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import { loadModel } from "../models/model.ts";
import { checkSteerScale, layerVectors, type SteerHook } from "../defence/hooks.ts";
import { loadLayerVectors, randomLike } from "../defence/persona_vector.ts";
import { steerLayers } from "../defence/defence.ts";
import { loadTrait } from "../lib/text/trait.ts";
import { type EvalOptions, type EvalSummary, evaluateTrait } from "../research/evaluation.ts";
import {
  ConfigReader,
  type Experiment,
  type JudgeConfig,
  makeJudge,
  readJudgeConfig,
  writeResult,
} from "./common.ts";
import { type Figure, FIGURE_HEIGHT, FIGURE_WIDTH, type Json, type ResultKind } from "./result_kind.ts";

interface SteerConfig {
  model: string;
  trait: string;
  judge: JudgeConfig;
  vector: string;
  /** boundaries 0..L steered ("all" = every one) */
  layers: number[] | "all";
  coefs: number[];
  /** also steer with a Gaussian vector of the vector's per-layer norms, at the same coefficients */
  random: boolean;
  /** the level to reach; null = the trait-prompted level measured here */
  target: number | null;
  /** the system prompts of the trait-prompted reference; null = the trait file's positive instructions */
  reference_prompts: string[] | null;
  samples: number;
  max_new_tokens: number;
  temperature: number;
  seed: number;
  batch_size: number;
  output: string;
}

export interface SteerPoint {
  vector: "trait" | "random";
  coef: number;
  summary: EvalSummary;
}

/** steer.json's metrics (the schema below says the same). */
export interface SteerMetrics {
  trait: string;
  judge: string;
  layers: number[];
  /** the base model with the trait's eliciting instructions as system prompt (cycled over the samples),
   * unsteered */
  trait_prompted: { system_prompts: string[]; summary: EvalSummary };
  /** the level a coefficient must reach: the config's `target`, else trait_prompted's mean */
  target: number | null;
  target_source: "config" | "trait_prompted";
  curve: SteerPoint[];
  /** the smallest coefficient of the trait vector's curve whose mean trait score reaches the target; when
   * none does, the largest, with reached = false */
  chosen: { coef: number; reached: boolean } | null;
}

/** The smallest coefficient whose mean trait reaches `target` (else the largest, not reached). */
export function chooseCoefficient(
  curve: { coef: number; trait: number | null }[],
  target: number | null,
): SteerMetrics["chosen"] {
  const steered = curve.filter((p) => p.coef !== 0).sort((a, b) => a.coef - b.coef);
  if (!steered.length || target === null) return null;
  const hit = steered.find((p) => p.trait !== null && p.trait >= target);
  return hit ? { coef: hit.coef, reached: true } : { coef: steered[steered.length - 1].coef, reached: false };
}

export const steerResult: ResultKind = {
  kind: "steer",
  section: "steer",
  metricsSchema: {
    type: "object",
    required: ["trait", "judge", "layers", "trait_prompted", "target", "target_source", "curve", "chosen"],
    properties: {
      trait_prompted: { type: "object", required: ["system_prompts", "summary"] },
      target: { type: ["number", "null"] },
      curve: {
        type: "array",
        items: {
          type: "object",
          required: ["vector", "coef", "summary"],
          properties: { coef: { type: "number" }, summary: { $ref: "summary" } },
        },
      },
      chosen: { type: ["object", "null"], required: ["coef", "reached"] },
    },
  },
  figures: steerFigures,
  outcomes: (results) => results.flatMap((l) => steerSentence(l.result) ? [steerSentence(l.result)] : []),
};

export const steerExperiment: Experiment<SteerConfig> = {
  name: "steer",
  description: "trait and coherence of the base model steered with the vector over a coefficient grid",
  results: [steerResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const layersRaw = r.any("layers");
    const c: SteerConfig = {
      model: r.nonEmpty("model"),
      trait: r.nonEmpty("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      vector: r.nonEmpty("vector"),
      layers: layersRaw === "all" ? "all" : r.intList("layers"),
      coefs: r.numList("coefs"),
      random: r.bool("random", false),
      target: r.nullable("target", (k) => r.num(k)),
      reference_prompts: r.has("reference_prompts")
        ? r.strList("reference_prompts")
        : (r.any("reference_prompts"), null),
      samples: r.num("samples", 10, { int: true, min: 1 }),
      max_new_tokens: r.num("max_new_tokens", 256, { int: true, min: 1 }),
      temperature: r.num("temperature", 1, { min: 0 }),
      seed: r.num("seed", 0, SEED_RANGE),
      batch_size: r.num("batch_size", 16, { int: true, min: 1 }),
      output: r.name("output", "steer.json"),
    };
    r.done();
    if (!c.coefs.length) throw new Error(`${file}: key 'coefs' must list at least one coefficient`);
    if (c.reference_prompts && (!c.reference_prompts.length || c.reference_prompts.some((p) => !p.trim()))) {
      throw new Error(`${file}: key 'reference_prompts' must list non-empty prompts`);
    }
    if (new Set(c.coefs).size !== c.coefs.length) throw new Error(`${file}: key 'coefs' repeats a value`);
    if (Array.isArray(c.layers) && c.layers.some((l) => l < 0)) {
      throw new Error(`${file}: key 'layers' must be layer indices >= 0 or 'all'`);
    }
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    try {
      const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
      const layers = steerLayers(c.layers, m.cfg.numLayers, "layers");
      const trait = await loadTrait(c.trait);
      const judge = await makeJudge(ctx, c.judge);
      const data = await loadLayerVectors(c.vector, boundaries, d);
      for (const coef of c.coefs) checkSteerScale(data, layers, d, coef, "coefs", c.vector);
      const vectors = { trait: layerVectors(ctx.gpu, data, boundaries, d, false, "steer") };
      const random = c.random
        ? layerVectors(
          ctx.gpu,
          randomLike(data, boundaries, d, c.seed + 12345),
          boundaries,
          d,
          false,
          "random",
        )
        : null;
      const opts = (over: Partial<EvalOptions>): EvalOptions => ({
        samples: c.samples,
        maxNewTokens: c.max_new_tokens,
        temperature: c.temperature,
        topP: 1,
        seed: c.seed,
        batchSize: c.batch_size,
        systemPrompt: null,
        lora: null,
        steer: [],
        projection: null,
        ...over,
      });
      // the trait file's eliciting instructions as the system prompt, one per sample in turn (without the
      // extraction's "You are a/an {trait} assistant." in front: the level a prompt alone elicits)
      const prompts = c.reference_prompts ?? [...new Set(trait.instructions.map((p) => p.pos))];
      ctx.progress(`steer: the base model under ${prompts.length} eliciting system prompts of ${trait.name}`);
      const prompted = (await evaluateTrait(ctx, m, trait, judge, opts({ systemPrompts: prompts }))).summary;
      const curve: SteerPoint[] = [];
      for (const [name, v] of [["trait", vectors.trait], ["random", random]] as const) {
        if (!v) continue;
        for (const coef of c.coefs) {
          ctx.progress(`steer: ${name} vector at layers ${layers.join(",")}, ε ${coef}`);
          const hook: SteerHook = { vectors: v, layers, coef };
          const s = (await evaluateTrait(ctx, m, trait, judge, opts({ steer: coef ? [hook] : [] }))).summary;
          curve.push({ vector: name, coef, summary: s });
          ctx.progress(
            `  trait ${s.trait_mean?.toFixed(1)} ± ${s.trait_sem?.toFixed(1)}, coherence ${
              s.coherence_mean?.toFixed(1)
            }`,
          );
        }
      }
      for (const v of [vectors.trait, random]) for (const t of v?.rows ?? []) t?.dispose();
      await judge.close?.();
      const target = c.target ?? prompted.trait_mean;
      const metrics: SteerMetrics = {
        trait: trait.name,
        judge: judge.name,
        layers,
        trait_prompted: { system_prompts: prompts, summary: prompted },
        target,
        target_source: c.target !== null ? "config" : "trait_prompted",
        curve,
        chosen: chooseCoefficient(
          curve.filter((p) => p.vector === "trait").map((p) => ({
            coef: p.coef,
            trait: p.summary.trait_mean,
          })),
          target,
        ),
      };
      await writeResult(join(ctx.runDir, c.output), "steer", c, c.model, started, metrics);
      ctx.progress(steerSentence({ metrics, config: c }) || "steer: no coefficient chosen");
      return metrics;
    } finally {
      m.dispose();
    }
  },
};

// ---- the result's figures and report lines

const f1 = (x: number | null | undefined) => (x == null ? "-" : x.toFixed(1));

/** What the curve says about the coefficient, in one sentence. */
export function steerSentence(r: Json): string {
  const m: SteerMetrics = r.metrics;
  if (!m.chosen || m.target === null) return "";
  const at = m.curve.find((p) => p.vector === "trait" && p.coef === m.chosen!.coef)!;
  const rnd = m.curve.find((p) => p.vector === "random" && p.coef === m.chosen!.coef);
  const source = m.target_source === "config"
    ? "the config's target"
    : "the base model's trait-prompted level";
  const layers = m.layers.join(", ");
  return m.chosen.reached
    ? `Steering with the ${m.trait} vector at layer ${layers} reaches ${source} (${
      f1(m.target)
    }) at ε ${m.chosen.coef}: ${m.trait} ${f1(at.summary.trait_mean)} ± ${
      f1(at.summary.trait_sem)
    }, coherence ${f1(at.summary.coherence_mean)}${
      rnd ? `; the random vector at the same ε and norm gives ${f1(rnd.summary.trait_mean)}` : ""
    } — the smallest ε of the grid that does, the PPS coefficient it selects.`
    : `Steering with the ${m.trait} vector at layer ${layers} does not reach ${source} (${
      f1(m.target)
    }) at any ε of the grid: at the largest, ${m.chosen.coef}, ${m.trait} ${f1(at.summary.trait_mean)} ± ${
      f1(at.summary.trait_sem)
    } — the vector does not elicit the trait as an effective PPS vector should (2.1).`;
}

function steerFigures(r: Json, file: string): Figure[] {
  const m: SteerMetrics = r.metrics;
  const values = m.curve.flatMap((p) => [
    {
      coef: p.coef,
      score: p.summary.trait_mean,
      sem: p.summary.trait_sem ?? 0,
      series: `${p.vector}: trait`,
    },
    {
      coef: p.coef,
      score: p.summary.coherence_mean,
      sem: p.summary.coherence_sem ?? 0,
      series: `${p.vector}: coherence`,
    },
  ]).map((v) => ({ ...v, lo: (v.score ?? 0) - 2 * v.sem, hi: (v.score ?? 0) + 2 * v.sem }));
  const rules = m.target === null ? [] : [{
    data: { values: [{ y: m.target }] },
    mark: { type: "rule", strokeDash: [4, 4], color: "gray" },
    encoding: { y: { field: "y", type: "quantitative" } },
  }];
  return [{
    title: `Steering the base model with the ${m.trait} vector: trait and coherence against ε`,
    caption:
      `${file}: mean judge scores (bars: ±2 SE) of the base model's answers with ε · v added at layer ${
        m.layers.join(", ")
      }; dashed: the level to reach (${
        m.target_source === "config"
          ? "the config's target"
          : "the base model under the trait's system prompts"
      }, ${f1(m.target)}). Chosen ε: ${
        m.chosen ? `${m.chosen.coef}${m.chosen.reached ? "" : " (not reached)"}` : "-"
      }.`,
    signature: steerSentence(r),
    spec: {
      width: FIGURE_WIDTH,
      height: FIGURE_HEIGHT,
      layer: [
        {
          data: { values },
          mark: { type: "line", point: true },
          encoding: {
            x: { field: "coef", type: "quantitative", title: "ε (steering coefficient)" },
            y: { field: "score", type: "quantitative", title: "mean score", scale: { domain: [0, 100] } },
            color: { field: "series", type: "nominal" },
          },
        },
        {
          data: { values },
          mark: "errorbar",
          encoding: {
            x: { field: "coef", type: "quantitative" },
            y: { field: "lo", type: "quantitative" },
            y2: { field: "hi" },
            color: { field: "series", type: "nominal" },
          },
        },
        ...rules,
      ],
    },
  }];
}
