// The conditions sweep's cells (experiments/plan.ts): the base model's evaluation, each pre-finetune stage,
// and every (pre, post, condition, seed) run — their configs, how one runs, and conditions.json assembled
// from their outputs. The same code runs a cell in a local sweep and in a Slurm array task.

import { join } from "node:path";
import { loadModel, type Model } from "../models/model.ts";
import { readMergeAdapter } from "../models/lora_merge.ts";
import { atomicWriteJson, exists, readJson } from "../lib/fsutil.ts";
import { DEFAULTS, parseTrainConfig, type TrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { LoraSet } from "../models/lora.ts";
import { loadTrait, type TraitDef } from "../lib/text/trait.ts";
import { loadLayerVectors, randomLike, saveLayerVectors } from "../defence/persona_vector.ts";
import { type EvalSummary, evaluateTrait } from "../research/evaluation.ts";
import type { Judge } from "../research/judge/judge.ts";
import type {
  ConditionRow,
  ConditionsMetrics,
  ConditionsRunMetrics,
  PeakTrait,
} from "./conditions_result.ts";
import { type IpSpec, type SignForceSpec, steerLayers, type SteerSpec } from "../defence/defence.ts";
import {
  type Cell,
  type ExperimentContext,
  type JudgeConfig,
  makeJudge,
  type SweepSession,
  writeResult,
} from "./common.ts";

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

export interface ConditionsConfig {
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
  /** the conditions crossed with the modes (default: every one) */
  sign_force_conditions: string[] | null;
  /** a post-finetune after a pre-finetune: a fresh adapter on the base model with the pre adapter merged
   * into it ("merged", 3.1's independent fine-tunings starting from the pre-finetuned models), or the pre
   * adapter trained on ("continue") */
  post_start: "merged" | "continue";
  train: Record<string, unknown>;
  eval: {
    samples: number;
    max_new_tokens: number;
    batch_size: number;
    temperature: number;
    seed: number;
    /** evaluate every checkpoint (true), only the final adapter (false), or every checkpoint of the named
     * conditions (sign-forced ones by their full name, e.g. none+amplify) */
    at_checkpoints: boolean | string[];
    system_prompt: string | null;
  };
}

/** Whether a condition's checkpoints are evaluated. */
export function evalsCheckpoints(c: ConditionsConfig, condition: string): boolean {
  const a = c.eval.at_checkpoints;
  return Array.isArray(a) ? a.includes(condition) : a;
}

/** Table 3 counts a checkpoint only when its mean coherence is at least this. */
export const PEAK_MIN_COHERENCE = 20;

/**
 * Table 3's peak: the checkpoint with the highest mean trait score among those whose mean coherence is at
 * least PEAK_MIN_COHERENCE (null when none is; sign-forcing can make every checkpoint incoherent).
 */
export function peakTrait(
  over: { step: number; summary: EvalSummary }[],
): PeakTrait | null {
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

/** The state the cells run in one process share: the base model (loaded once), the trait and the judge. */
interface ConditionsSession extends SweepSession {
  base: Model;
  trait: TraitDef;
  judge: Judge;
}

export async function openConditionsSession(
  ctx: ExperimentContext,
  c: ConditionsConfig,
): Promise<SweepSession> {
  // one copy of the base model for every training and evaluation this process runs (freed by dispose)
  const base = await loadModel(ctx.gpu, c.model);
  try {
    const trait = await loadTrait(c.trait);
    const judge = await makeJudge(ctx, c.judge);
    const s: ConditionsSession = { base, trait, judge, dispose: () => base.dispose() };
    return s;
  } catch (e) {
    base.dispose();
    throw e;
  }
}

type CellRole =
  | { role: "baseline" }
  | { role: "pre"; pre: string; data: string; seed: number }
  | { role: "run"; pre: string; post: string; data: string; condition: Condition; seed: number };

const preCellName = (pre: string, seed: number) => `pre-${pre}-seed${seed}`;
const runCellName = (pre: string, post: string, cond: string, seed: number) =>
  `${pre}__${post}__${cond}__seed${seed}`;

/**
 * The sweep's cells: the base model's evaluation; per seed, each pre-finetune stage with data (trained
 * defenceless, then evaluated); and every (pre, post, condition, seed) run, which starts from its pre
 * stage's adapter (or the base model) and takes that stage's evaluation as its `before`.
 */
export function conditionCells(c: ConditionsConfig): Cell[] {
  const cells: Cell[] = [{ name: "baseline", after: [], config: { role: "baseline" }, output: "baseline" }];
  for (const seed of c.seeds) {
    for (const pre of c.pre) {
      if (!pre.data) continue;
      const name = preCellName(pre.name, seed);
      cells.push({
        name,
        after: [],
        config: { role: "pre", pre: pre.name, data: pre.data, seed },
        output: name,
      });
    }
  }
  for (const seed of c.seeds) {
    for (const pre of c.pre) {
      for (const post of c.post) {
        for (const cond of c.conditions) {
          const name = runCellName(pre.name, post.name, cond.name, seed);
          cells.push({
            name,
            after: [pre.data ? preCellName(pre.name, seed) : "baseline"],
            config: { role: "run", pre: pre.name, post: post.name, data: post.data, condition: cond, seed },
            output: name,
          });
        }
      }
    }
  }
  return cells;
}

/** The training config of a cell: the sweep's `train` keys, a condition's over them, and the cell's own. */
function cellTrainConfig(
  c: ConditionsConfig,
  data: string,
  out: string,
  seed: number,
  extra: Record<string, unknown>,
  over: Record<string, unknown> = {},
): TrainConfig {
  return parseTrainConfig("", "conditions (train)", {
    ...mergeTrain(c.train, over),
    ...extra,
    model: c.model,
    data,
    output_dir: out,
    seed,
    keep_checkpoints: 1000,
  });
}

export async function runConditionsCell(
  ctx: ExperimentContext,
  c: ConditionsConfig,
  session: SweepSession,
  cell: Cell,
): Promise<void> {
  const s = session as ConditionsSession;
  const r = cell.config as CellRole;
  const out = join(ctx.runDir, cell.output);
  const boundaries = s.base.cfg.numLayers + 1, d = s.base.cfg.hiddenSize;
  // resume: a cell killed mid-training continues from its last checkpoint (one of another config is refused
  // by the trainer, never overwritten)
  const quietTrain = (cfg: TrainConfig, model = s.base) =>
    train(cfg, { gpu: ctx.gpu, model, resume: true, progress: (x) => ctx.progress(`    ${x}`) });
  const evalAdapter = async (adapter: string | null, model = s.base) => {
    const lora = adapter ? await LoraSet.load(ctx.gpu, model.cfg, adapter) : null;
    try {
      return (await evaluateTrait(ctx, model, s.trait, s.judge, {
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
    } finally {
      lora?.store.destroy();
    }
  };
  if (r.role === "baseline") {
    ctx.progress("conditions: evaluating the base model");
    await atomicWriteJson(join(out, SUMMARY_FILE), await evalAdapter(null));
    return;
  }
  if (r.role === "pre") {
    // pre-finetune (defenceless), shared by every post cell and condition of this seed
    ctx.progress(`conditions: pre-finetune '${r.pre}' (seed ${r.seed})`);
    await quietTrain(cellTrainConfig(c, r.data, out, r.seed, {}));
    await atomicWriteJson(join(out, SUMMARY_FILE), await evalAdapter(join(out, "adapter")));
    return;
  }
  const { pre, post, condition: cond, seed, data } = r;
  const runStart = new Date();
  const preDir = join(ctx.runDir, cell.after[0]);
  const preAdapter = cell.after[0] === "baseline" ? null : join(preDir, "adapter");
  const merged = preAdapter !== null && c.post_start === "merged";
  const before = await readJson(
    join(preDir, SUMMARY_FILE),
    `cell ${cell.after[0]}'s evaluation`,
  ) as unknown as EvalSummary;
  const config = { ...c, condition: cond, seed };
  // a sweep killed part-way resumes: a finished run (its result.json, same config) is kept, not redone
  const done = join(out, "result.json");
  if (await exists(done)) {
    const prev = JSON.parse(await Deno.readTextFile(done));
    if (JSON.stringify(prev.config) === JSON.stringify(config)) {
      ctx.progress(`conditions: ${cell.name} already done, keeping its result`);
      return;
    }
  }
  ctx.progress(
    `conditions: ${cell.name}${merged ? ` (a fresh adapter on the base model + ${pre} merged)` : ""}`,
  );
  // the model this cell trains and evaluates: the base, or the base with the pre adapter merged (loaded for
  // this cell, freed at its end)
  const model = merged
    ? await loadModel(ctx.gpu, c.model, { merge: await readMergeAdapter(preAdapter!, s.base.cfg) })
    : s.base;
  try {
    await runOnModel(model);
  } finally {
    if (model !== s.base) model.dispose();
  }
  async function runOnModel(model: Model) {
    const extra: Record<string, unknown> = { init_adapter: merged ? null : preAdapter };
    // a Gaussian vector with the per-layer norms of `of` (PPS and sign-forcing controls): seeded by the seed,
    // written in the cell's own folder (cells never share a file)
    const randomVector = async (of: string) => {
      const file = join(out, "random-vector.safetensors");
      const data = randomLike(await loadLayerVectors(of, boundaries, d), boundaries, d, 1000 + seed);
      await saveLayerVectors(file, data, boundaries, d, { kind: "random, per-layer norm of " + of });
      return file;
    };
    if (cond.steer) {
      let vec = cond.steer.vector ?? c.vector!;
      if (cond.steer.random) vec = await randomVector(vec);
      extra.steer = {
        vector: vec,
        layers: steerLayers(cond.steer.layers, boundaries - 1),
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
    const tr = await quietTrain(cellTrainConfig(c, data, out, seed, extra, cond.train), model);
    const over: { step: number; summary: EvalSummary }[] = [];
    if (evalsCheckpoints(c, cond.name)) {
      for (const ck of await listCheckpoints(out)) {
        const step = Number(ck.match(/step-(\d+)/)![1]);
        if (step === tr.steps.length) continue; // the final adapter is evaluated below
        over.push({ step, summary: await evalAdapter(ck, model) });
      }
    }
    const finalSummary = await evalAdapter(join(out, "adapter"), model);
    over.push({ step: tr.steps.length, summary: finalSummary });
    const metrics: ConditionsRunMetrics = {
      id: cell.name,
      seed,
      pre,
      post,
      start: preAdapter === null ? "base" : merged ? "merged" : "continue",
      condition: cond,
      trait: s.trait.name,
      judge: s.judge.name,
      before,
      after: finalSummary,
      over_training: over,
      peak: peakTrait(over),
      train_losses: tr.steps.map((x) => x.loss),
    };
    await writeResult(done, "conditions.run", config, c.model, runStart, metrics);
  }
}

/** An evaluation cell's output (the baseline's, a pre-finetune stage's). */
const SUMMARY_FILE = "summary.json";

/**
 * conditions.json from the cells' outputs, in the plan's order. Cells whose output is missing (failed,
 * cancelled, not yet run) are named in `missing_cells`, never silently left out.
 */
export async function finishConditions(
  ctx: ExperimentContext,
  c: ConditionsConfig,
  cells: Cell[],
): Promise<{ missing: string[]; metrics: ConditionsMetrics }> {
  const started = new Date();
  const missing: string[] = [];
  const read = async (cell: Cell, file: string) => {
    const path = join(ctx.runDir, cell.output, file);
    if (await exists(path)) return JSON.parse(await Deno.readTextFile(path));
    missing.push(cell.name);
    return null;
  };
  const baseline: EvalSummary | null = await read(cells.find((x) => x.name === "baseline")!, SUMMARY_FILE);
  const runs: ConditionRow[] = [];
  let judge = "(no run finished)"; // as the runs recorded it: finishing opens no judge (a local one loads a model)
  for (const cell of cells) {
    if ((cell.config as CellRole).role !== "run") continue;
    const r = await read(cell, "result.json");
    if (!r) continue;
    const m: ConditionsRunMetrics = r.metrics;
    judge = m.judge;
    runs.push({
      id: m.id,
      pre: m.pre,
      post: m.post,
      condition: m.condition.name,
      seed: m.seed,
      trait_after: m.after.trait_mean,
      trait_after_sem: m.after.trait_sem,
      coherence_after: m.after.coherence_mean,
      coherence_after_sem: m.after.coherence_sem,
    });
  }
  const trait = await loadTrait(c.trait);
  const metrics: ConditionsMetrics = { trait: trait.name, judge, baseline, runs };
  if (missing.length) metrics.missing_cells = missing;
  await writeResult(join(ctx.runDir, "conditions.json"), "conditions", c, c.model, started, metrics);
  await atomicWriteJson(join(ctx.runDir, "train_defaults.json"), DEFAULTS);
  return { missing, metrics };
}
