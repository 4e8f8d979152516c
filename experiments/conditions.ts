// Training conditions from one config: defenceless, PPS (vector, layers, coefficient), IP (prompt
// bank), random-vector PPS (Gaussian rescaled per layer to the vector's norm, seeded), off-trait vector
// PPS, off-trait / neutral IP prompts — each run on every (pre-finetune × post-finetune) cell and
// seed. The pre-finetune stage is defenceless; the condition's defence is applied while training on
// the post-finetune data and removed at evaluation. The trait is evaluated at every checkpoint.

import { conditionsResult, conditionsRunResult } from "./conditions_result.ts";
import { join } from "node:path";
import { loadModel, type Model } from "../models/model.ts";
import { atomicWriteJson, exists } from "../lib/fsutil.ts";
import { DEFAULTS, parseTrainConfig, type TrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { LoraSet } from "../models/lora.ts";
import { loadTrait } from "../lib/text/trait.ts";
import { loadLayerVectors, saveLayerVectors } from "../defence/persona_vector.ts";
import { Rng } from "../lib/rng.ts";
import { type EvalSummary, evaluateTrait } from "../research/evaluation.ts";
import {
  ConfigReader,
  type Experiment,
  type JudgeConfig,
  makeJudge,
  readJudgeConfig,
  writeResult,
} from "./common.ts";
import {
  type IpSpec,
  readDefence,
  type SignForceSpec,
  steerLayers,
  type SteerSpec,
} from "../defence/defence.ts";

/** A cell's defence (defence/defence.ts; vectors may default to the sweep's `vector`) and its training keys. */
export interface Condition {
  name: string;
  steer: SteerSpec | null;
  inoculation: IpSpec | null;
  /** gradient manipulation along the (unit) vector while training (Tables 1-3) */
  sign_force: SignForceSpec | null;
  /** training keys of this condition over the top-level `train` (a rank sweep's lora.r / lora.alpha) */
  train: Record<string, unknown>;
}

interface ConditionsConfig {
  model: string;
  trait: string;
  judge: JudgeConfig;
  vector: string | null;
  seeds: number[];
  pre: { name: string; data: string | null }[];
  post: { name: string; data: string }[];
  conditions: Condition[];
  /** cross every condition with these sign-forcing modes (gradient-manipulation runs) */
  sign_force_modes: ("attenuate" | "amplify" | "neutralize")[];
  /** ablation vectors the modes are crossed with (default [trait]) */
  sign_force_vectors: ("trait" | "random")[];
  train: Record<string, unknown>;
  eval: {
    samples: number;
    max_new_tokens: number;
    batch_size: number;
    temperature: number;
    seed: number;
    at_checkpoints: boolean;
    system_prompt: string | null;
  };
}

/** Gaussian vector with each layer's row rescaled to the norm of the reference row (seeded). */
export function randomLike(ref: Float32Array, layers: number, d: number, seed: number): Float32Array {
  const rng = new Rng(seed), out = new Float32Array(ref.length);
  for (let l = 0; l < layers; l++) {
    const row = Array.from({ length: d }, () => rng.normal());
    const n = Math.hypot(...row), target = Math.hypot(...ref.subarray(l * d, (l + 1) * d));
    for (let j = 0; j < d; j++) out[l * d + j] = n > 0 ? (row[j] * target) / n : 0;
  }
  return out;
}

function readCondition(r: ConfigReader): Condition {
  const name = r.name("name");
  const train = r.has("train") ? r.sub("train").raw : (r.any("train"), {});
  const d = readDefence(r, { vectorOptional: true, random: true });
  r.done();
  return { name, steer: d.steer, inoculation: d.ip, sign_force: d.signForce, train };
}

/** Table 3 counts a checkpoint only when its mean coherence is at least this. */
export const PEAK_MIN_COHERENCE = 20;

/**
 * Table 3's peak: the checkpoint with the highest mean trait score among those whose mean coherence is at
 * least PEAK_MIN_COHERENCE (null when none is; sign-forcing can make every checkpoint incoherent).
 */
export function peakTrait(
  over: { step: number; summary: EvalSummary }[],
): { step: number; trait_mean: number; trait_sem: number | null; coherence_mean: number } | null {
  let best: { step: number; summary: EvalSummary } | null = null;
  for (const o of over) {
    const s = o.summary;
    if (s.trait_mean == null || s.coherence_mean == null || s.coherence_mean < PEAK_MIN_COHERENCE) continue;
    if (!best || s.trait_mean > best.summary.trait_mean!) best = o;
  }
  return best && {
    step: best.step,
    trait_mean: best.summary.trait_mean!,
    trait_sem: best.summary.trait_sem ?? null,
    coherence_mean: best.summary.coherence_mean!,
  };
}

/** The top-level training keys with a condition's over them; `lora` is merged key by key. */
export function mergeTrain(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
): Record<string, unknown> {
  const out = { ...base, ...over };
  const bl = base.lora, ol = over.lora;
  if (bl && ol && typeof bl === "object" && typeof ol === "object") out.lora = { ...bl, ...ol };
  return out;
}

/**
 * Every condition crossed with every sign-forcing mode and ablation vector (the gradient-manipulation runs
 * of Table 1): `trait` forces along the top-level vector, `random` along a Gaussian one with its norms.
 */
export function crossSignForce(
  conds: Condition[],
  modes: ("attenuate" | "amplify" | "neutralize")[],
  vectors: ("trait" | "random")[] = ["trait"],
): Condition[] {
  return conds.flatMap((c) =>
    vectors.flatMap((v) =>
      modes.map((mode) => ({
        ...c,
        name: `${c.name}+${mode}${v === "random" ? "-random" : ""}`,
        sign_force: { mode, vector: null, random: v === "random", layers: "all" as const },
      }))
    )
  );
}

export const conditionsExperiment: Experiment<ConditionsConfig> = {
  name: "conditions",
  description:
    "LoRA fine-tuning under defence conditions (none / PPS / IP / controls), pre → post chains, judged over training",
  results: [conditionsResult, conditionsRunResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const ev = r.has("eval") ? r.sub("eval") : new ConfigReader({}, file, "eval");
    const c: ConditionsConfig = {
      model: r.str("model"),
      trait: r.str("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      vector: r.optStr("vector"),
      seeds: r.intList("seeds", [0]),
      pre: r.has("pre")
        ? r.list("pre").map((p) => {
          const o = { name: p.name("name"), data: p.optStr("data") };
          p.done();
          return o;
        })
        : (r.any("pre"), [{ name: "base", data: null }]),
      post: r.list("post").map((p) => {
        const o = { name: p.name("name"), data: p.str("data") };
        p.done();
        return o;
      }),
      conditions: r.list("conditions").map(readCondition),
      sign_force_modes: r.has("sign_force_modes")
        ? r.strList("sign_force_modes") as ConditionsConfig["sign_force_modes"]
        : (r.any("sign_force_modes"), []),
      sign_force_vectors: r.strList("sign_force_vectors", [
        "trait",
      ]) as ConditionsConfig["sign_force_vectors"],
      train: r.has("train") ? (r.sub("train").raw) : (r.any("train"), {}),
      eval: {
        samples: ev.num("samples", 10, { int: true, min: 1 }),
        max_new_tokens: ev.num("max_new_tokens", 256, { int: true, min: 1 }),
        batch_size: ev.num("batch_size", 16, { int: true, min: 1 }),
        temperature: ev.num("temperature", 1, { min: 0 }),
        seed: ev.num("seed", 0, { int: true }),
        at_checkpoints: ev.bool("at_checkpoints", true),
        // null: the chat template's default (Qwen's own system prompt); Figures 7 and 19 compare
        system_prompt: ev.optStr("system_prompt"),
      },
    };
    ev.done();
    r.done();
    for (const m of c.sign_force_modes) {
      if (!["attenuate", "amplify", "neutralize"].includes(m)) {
        throw new Error(
          `${file}: key 'sign_force_modes' lists '${m}'; expected attenuate, amplify, neutralize`,
        );
      }
    }
    for (const v of c.sign_force_vectors) {
      if (v !== "trait" && v !== "random") {
        throw new Error(`${file}: key 'sign_force_vectors' lists '${v}'; expected trait, random`);
      }
    }
    if (c.sign_force_modes.length) {
      c.conditions = [
        ...c.conditions,
        ...crossSignForce(c.conditions, c.sign_force_modes, c.sign_force_vectors),
      ];
    }
    // names become folders (<pre>__<post>__<condition>__seed<k>): a repeated one would overwrite a run
    for (const [key, list] of [["pre", c.pre], ["post", c.post], ["conditions", c.conditions]] as const) {
      const seen = new Set<string>();
      for (const { name } of list) {
        if (seen.has(name)) {
          throw new Error(`${file}: key '${key}' names '${name}' twice; names must be unique`);
        }
        seen.add(name);
      }
    }
    // validate the shared training keys now, not after hours of the first run
    parseTrainConfig("", `${file} (train)`, { ...c.train, model: c.model, data: "x", output_dir: "x" });
    for (const cond of c.conditions) {
      parseTrainConfig("", `${file} (condition '${cond.name}' train)`, {
        ...mergeTrain(c.train, cond.train),
        model: c.model,
        data: "x",
        output_dir: "x",
      });
      if (cond.steer && !cond.steer.vector && !c.vector) {
        throw new Error(
          `${file}: condition '${cond.name}' steers but neither it nor the top level names a vector`,
        );
      }
      if (cond.sign_force && !cond.sign_force.vector && !c.vector) {
        throw new Error(
          `${file}: condition '${cond.name}' sign-forces but neither it nor the top level names a vector`,
        );
      }
    }
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    // one copy of the base model for every training and evaluation of the sweep (freed at the end)
    const base = await loadModel(ctx.gpu, c.model);
    try {
      return await runCells(base);
    } finally {
      base.dispose();
    }
    async function runCells(base: Model) {
      const L = base.cfg.numLayers + 1, d = base.cfg.hiddenSize;
      const trait = await loadTrait(c.trait);
      const judge = await makeJudge(ctx, c.judge);
      // resume: a cell killed mid-training continues from its last checkpoint (one of another config is
      // refused by the trainer, never overwritten)
      const quietTrain = (cfg: TrainConfig) =>
        train(cfg, { gpu: ctx.gpu, model: base, resume: true, progress: (s) => ctx.progress(`    ${s}`) });
      const baseTrain = (
        data: string,
        out: string,
        seed: number,
        extra: Record<string, unknown>,
        over: Record<string, unknown> = {},
      ) =>
        parseTrainConfig("", "conditions (train)", {
          ...mergeTrain(c.train, over),
          ...extra,
          model: c.model,
          data,
          output_dir: out,
          seed,
          keep_checkpoints: 1000,
        });
      const evalAdapter = async (adapter: string | null) => {
        const m = base;
        const lora = adapter ? await LoraSet.load(ctx.gpu, m.cfg, adapter) : null;
        try {
          return await evalWith(m, lora);
        } finally {
          lora?.store.destroy();
        }
      };
      const evalWith = async (m: Model, lora: LoraSet | null) => {
        return (await evaluateTrait(ctx, m, trait, judge, {
          samples: c.eval.samples,
          maxNewTokens: c.eval.max_new_tokens,
          temperature: c.eval.temperature,
          topP: 1,
          seed: c.eval.seed,
          batchSize: c.eval.batch_size,
          systemPrompt: c.eval.system_prompt,
          lora,
          steer: [],
          projection: null,
        })).summary;
      };
      const runs: Record<string, unknown>[] = [];
      const baseline = await evalAdapter(null);
      for (const seed of c.seeds) {
        for (const pre of c.pre) {
          // pre-finetune (defenceless), shared by every post cell and condition of this seed
          let preAdapter: string | null = null;
          if (pre.data) {
            const out = join(ctx.runDir, `pre-${pre.name}-seed${seed}`);
            ctx.progress(`conditions: pre-finetune '${pre.name}' (seed ${seed})`);
            await quietTrain(baseTrain(pre.data, out, seed, {}));
            preAdapter = join(out, "adapter");
          }
          const preSummary = preAdapter ? await evalAdapter(preAdapter) : baseline;
          for (const post of c.post) {
            for (const cond of c.conditions) {
              const id = `${pre.name}__${post.name}__${cond.name}__seed${seed}`;
              const out = join(ctx.runDir, id);
              const runStart = new Date();
              // a sweep killed part-way resumes: finished runs (their result.json) are kept, not redone
              const done = join(out, "result.json");
              if (await exists(done)) {
                const prev = JSON.parse(await Deno.readTextFile(done));
                if (JSON.stringify(prev.config) === JSON.stringify({ ...c, condition: cond, seed })) {
                  ctx.progress(`conditions: ${id} already done, keeping its result`);
                  runs.push(prev.metrics);
                  continue;
                }
              }
              ctx.progress(`conditions: ${id}`);
              const extra: Record<string, unknown> = { init_adapter: preAdapter };
              // a Gaussian vector with the per-layer norms of `of`, one per seed (PPS and sign-forcing controls)
              const randomVector = async (of: string) => {
                const file = join(ctx.runDir, `random-vector-seed${seed}.safetensors`);
                await saveLayerVectors(
                  file,
                  randomLike(await loadLayerVectors(of, L, d), L, d, 1000 + seed),
                  L,
                  d,
                  {
                    kind: "random, per-layer norm of " + of,
                  },
                );
                return file;
              };
              if (cond.steer) {
                let vec = cond.steer.vector ?? c.vector!;
                if (cond.steer.random) vec = await randomVector(vec);
                extra.steer = {
                  vector: vec,
                  layers: steerLayers(cond.steer.layers, L - 1),
                  coef: cond.steer.coef,
                };
              }
              if (cond.inoculation) extra.inoculation = { ...cond.inoculation };
              if (cond.sign_force) {
                const of = cond.sign_force.vector ?? c.vector!;
                extra.sign_force = {
                  vector: cond.sign_force.random ? await randomVector(of) : of,
                  layers: cond.sign_force.layers,
                  mode: cond.sign_force.mode,
                };
              }
              const tr = await quietTrain(baseTrain(post.data, out, seed, extra, cond.train));
              const over: { step: number; summary: EvalSummary }[] = [];
              if (c.eval.at_checkpoints) {
                for (const ck of await listCheckpoints(out)) {
                  const step = Number(ck.match(/step-(\d+)/)![1]);
                  if (step === tr.steps.length) continue; // the final adapter is evaluated below
                  over.push({ step, summary: await evalAdapter(ck) });
                }
              }
              const finalSummary = await evalAdapter(join(out, "adapter"));
              over.push({ step: tr.steps.length, summary: finalSummary });
              const metrics = {
                id,
                seed,
                pre: pre.name,
                post: post.name,
                condition: cond,
                trait: trait.name,
                judge: judge.name,
                before: preSummary,
                after: finalSummary,
                over_training: over,
                peak: peakTrait(over),
                train_losses: tr.steps.map((s) => s.loss),
              };
              await writeResult(
                join(out, "result.json"),
                "conditions.run",
                { ...c, condition: cond, seed },
                c.model,
                runStart,
                metrics,
              );
              runs.push(metrics);
            }
          }
        }
      }
      const matrix = runs.map((r) => ({
        id: r.id,
        pre: r.pre,
        post: r.post,
        condition: (r.condition as Condition).name,
        seed: r.seed,
        trait_after: (r.after as EvalSummary).trait_mean,
        trait_after_sem: (r.after as EvalSummary).trait_sem,
        coherence_after: (r.after as EvalSummary).coherence_mean,
      }));
      const metrics = { trait: trait.name, judge: judge.name, baseline, runs: matrix };
      await writeResult(join(ctx.runDir, "conditions.json"), "conditions", c, c.model, started, metrics);
      await atomicWriteJson(join(ctx.runDir, "train_defaults.json"), DEFAULTS);
      return metrics;
    }
  },
};
