// The evaluate experiment: research/evaluation.ts's trait evaluation of one model (with an optional system
// prompt, adapter, steering and projection) from a YAML config, written as a result.

import { join } from "node:path";
import { loadModel } from "../models/model.ts";
import { LoraSet } from "../models/lora.ts";
import { layerVectors, type SteerHook } from "../defence/hooks.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { loadTrait } from "../lib/text/trait.ts";
import { readSteer, steerLayers, type SteerSpec } from "../defence/defence.ts";
import { evaluateTrait } from "../research/evaluation.ts";
import {
  ConfigReader,
  type Experiment,
  type JudgeConfig,
  makeJudge,
  readJudgeConfig,
  writeResult,
} from "./common.ts";

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
    c.steer = r.nullable("steer", (k) => readSteer(r.sub(k), { phase: true }));
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
        vectors: layerVectors(ctx.gpu, await loadLayerVectors(c.steer.vector!, L, d), L, d),
        layers: steerLayers(c.steer.layers, L - 1),
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
