// The whole pipeline in minutes: on the world model (or any HF model given by flags) extract the evil
// and sycophantic persona vectors, steer the base model with the evil vector to pick PPS's coefficient by
// the paper's criterion, fine-tune defenceless / PPS / IP / random-vector PPS and sign-forced runs on
// heavy-evil data, evaluate trait and coherence before and after, run the gradient-cosine, loss and PCA
// analyses, test each of the paper's signatures, and build the report. Every step is one of the
// experiments, run with the same code as a study.

import { join } from "node:path";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { buildWorld } from "../world/build.ts";
import { IP_PROMPTS } from "../world/grammar.ts";
import { buildReport } from "../report/build.ts";
import { trainingSpeeds } from "../report/speed.ts";
import type { ExperimentContext, JudgeConfig } from "../experiments/common.ts";
import { EXPERIMENTS } from "../experiments/index.ts";
import type { SteerMetrics } from "../experiments/steer.ts";
import { aggregateSeeds, type ConditionsMetrics } from "../experiments/conditions_result.ts";
import { allChecks } from "../experiments/signatures.ts";
import { readResults } from "../experiments/results.ts";

export interface DemoOptions {
  /** HF model folder (default: the shipped world model) */
  model: string;
  out: string;
  /** folder with extract/{trait}.json and eval/{trait}.json; default: the world's */
  traits: string | null;
  /** heavy-trait fine-tuning data; default: the world's heavy-evil set */
  data: string | null;
  judge: JudgeConfig | null;
  layer: number | null;
  /** PPS's coefficient; null: the steering experiment's choice (the smallest grid ε whose steered trait
   * reaches the base model's trait-prompted level) */
  coef: number | null;
  quick: boolean;
  /** also what does not fit the demo's 6 minutes: the random vector's steering curve and cross-trait (6) */
  full: boolean;
  /** seeds of the fine-tuning runs (their spread is reported beside each run's SE) */
  seeds: number;
  seed: number;
}

/** The ε grid the steering experiment tries (the paper's 1.5 among them). */
export const STEER_GRID = [0, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6];

export async function runDemo(
  ctx: ExperimentContext,
  o: DemoOptions,
): Promise<{ report: string; summary: Record<string, unknown> }> {
  const t0 = performance.now();
  const steps = o.full ? 10 : 9;
  const step = (i: number, s: string) =>
    ctx.progress(`[${i}/${steps}] ${s} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  const worldDir = join(o.out, "world");
  step(1, "building the synthetic world (data, trait files)");
  await buildWorld(worldDir, o.seed);
  const traits = o.traits ?? join(worldDir, "traits");
  const data = o.data ?? join(worldDir, "data", "evil_heavy.jsonl");
  const judge: JudgeConfig = o.judge ?? { type: "world" };
  const cfg = JSON.parse(await Deno.readTextFile(join(o.model, "config.json")));
  const layer = o.layer ?? Math.max(1, Math.floor(cfg.num_hidden_layers / 2));
  const q = o.quick;
  const seeds = Array.from({ length: o.seeds }, (_, i) => o.seed + i);
  // an experiment in the run folder, or in a subfolder of it (a second conditions.json must not overwrite
  // the first)
  const run = async (name: string, raw: Record<string, unknown>, sub?: string) => {
    const e = EXPERIMENTS[name];
    const runDir = sub ? join(ctx.runDir, sub) : ctx.runDir;
    await Deno.mkdir(runDir, { recursive: true });
    return await e.run({ ...ctx, runDir }, e.parseConfig(raw, `demo:${sub ?? name}`));
  };
  const extract = { samples: q ? 1 : 2, max_new_tokens: q ? 16 : 64, batch_size: 100, seed: o.seed };
  step(2, "extracting the evil persona vector");
  await run("extract", {
    model: o.model,
    trait: join(traits, "extract", "evil.json"),
    judge,
    ...extract,
    output: "evil_vector",
    keep_all: q,
  });
  step(3, "extracting the sycophantic persona vector");
  await run("extract", {
    model: o.model,
    trait: join(traits, "extract", "sycophantic.json"),
    judge,
    ...extract,
    output: "sycophantic_vector",
    keep_all: q,
  });
  const vec = join(ctx.runDir, "evil_vector.safetensors");
  const syc = join(ctx.runDir, "sycophantic_vector.safetensors");
  step(4, `steering the base model with the evil vector at layer ${layer} over ε ${STEER_GRID.join(", ")}`);
  const steered = await run("steer", {
    model: o.model,
    trait: join(traits, "eval", "evil.json"),
    judge,
    vector: vec,
    layers: [layer],
    coefs: q ? [0, 1.5, 5] : STEER_GRID,
    random: o.full,
    samples: q ? 1 : 4,
    max_new_tokens: q ? 16 : 64,
    batch_size: 160,
    seed: o.seed,
  }) as SteerMetrics;
  const coef = o.coef ?? steered.chosen?.coef ?? 1.5;
  const coefSource = o.coef !== null
    ? "given by --coef"
    : steered.chosen
    ? steered.chosen.reached
      ? `the smallest grid ε whose steered trait reaches the trait-prompted level ${
        steered.target?.toFixed(1)
      }`
      : `no grid ε reached the trait-prompted level ${steered.target?.toFixed(1)}: the largest`
    : "the paper's 1.5 (the steering experiment chose none)";
  ctx.progress(`PPS coefficient ${coef}: ${coefSource}`);
  step(
    5,
    `fine-tuning on ${data}: none / PPS (layer ${layer}, ε ${coef}) / IP / random-vector PPS, and no defence ` +
      `with dL/dh sign-forced along the evil and a random vector (Tables 1-2), ${seeds.length} seed(s)`,
  );
  const samples = q ? 1 : 8;
  const main = ["none", "pps", "ip", "random_pps"];
  await run("conditions", {
    model: o.model,
    trait: join(traits, "eval", "evil.json"),
    judge,
    vector: vec,
    seeds,
    post: [{ name: "evil_heavy", data }],
    conditions: [
      { name: "none" },
      { name: "pps", steer: { layers: [layer], coef } },
      { name: "ip", inoculation: IP_PROMPTS.evil },
      { name: "random_pps", steer: { layers: [layer], coef, random: true } },
    ],
    sign_force_modes: ["attenuate", "amplify", "neutralize"],
    sign_force_vectors: ["trait", "random"],
    sign_force_conditions: ["none"],
    train: demoTrain(q),
    // the main runs judged at every checkpoint (Figure 2d-f); the sign-forced ones at the end
    eval: { samples, max_new_tokens: q ? 16 : 64, batch_size: 160, at_checkpoints: q ? false : main },
  });
  step(6, "gradient cosines with the evil, sycophantic and random vectors, per layer and response position");
  await run("grad_cosine", {
    model: o.model,
    data,
    limit: q ? 2 : 48,
    vectors: [{ name: "evil", path: vec }, { name: "sycophantic", path: syc }],
    defences: [
      { name: "pps", steer: { vector: "evil", layers: [layer], coef } },
      { name: "random_pps", steer: { vector: "random", layers: [layer], coef } },
      { name: "ip", ip: IP_PROMPTS.evil },
    ],
  });
  step(7, "loss and gradient cosine against steering intensity, with and without IP, beside their controls");
  const sweep = [...new Set([0, 0.5, 1, 2, 3, 5, coef])].sort((a, b) => a - b);
  await run("loss_sweep", {
    model: o.model,
    data,
    limit: q ? 2 : 24,
    vector: vec,
    layers: [layer],
    coefs: q ? [0, coef] : sweep,
    ip: IP_PROMPTS.evil,
    random: true,
    control_ip: IP_PROMPTS.neutral,
    pps_coef: coef,
  });
  step(8, "gradient-difference PCA for PPS and for IP, with bootstrap intervals");
  for (
    const defence of [{ name: "pps", steer: { vector: "evil", layers: [layer], coef } }, {
      name: "ip",
      ip: IP_PROMPTS.evil,
    }]
  ) {
    await run("grad_pca", {
      model: o.model,
      data,
      limit: q ? 3 : 48,
      layer,
      vectors: [{ name: "evil", path: vec }, { name: "sycophantic", path: syc }],
      defence,
      output: `grad_pca_${defence.name}`,
    });
  }
  if (o.full) {
    step(
      9,
      "cross-trait (6): sycophantic data trained with evil-vector PPS up to ε 5, and the gradient cosines",
    );
    // the behaviour after training (sycophancy judged) that the pre-training cosines should predict
    const coefs = q ? [coef] : [1.5, 3, 5];
    await run("conditions", {
      model: o.model,
      trait: join(traits, "eval", "sycophantic.json"),
      judge,
      vector: vec,
      seeds,
      post: [{ name: "sycophantic_heavy", data: join(worldDir, "data", "sycophantic_heavy.jsonl") }],
      conditions: [
        { name: "none" },
        ...coefs.map((c) => ({ name: `evil_pps${c}`, steer: { layers: [layer], coef: c } })),
      ],
      train: { ...demoTrain(q), checkpoint_every: 1000 },
      eval: { samples, max_new_tokens: q ? 16 : 64, batch_size: 160, at_checkpoints: false },
    }, "cross_trait");
    await run("cross_trait", {
      model: o.model,
      data: join(worldDir, "data", "sycophantic_heavy.jsonl"),
      limit: q ? 2 : 24,
      trait_a: { name: "sycophantic", vector: syc },
      trait_b: { name: "evil", vector: vec },
      layers: [layer],
      coefs: q ? [0, coef] : [0, 0.5, 1, 1.5, 2, 3, 5],
      after: join(ctx.runDir, "cross_trait", "conditions.json"),
    });
  }
  step(steps, "building the report");
  const rep = await buildReport(ctx.runDir);
  const results = (await readResults(ctx.runDir)).results.map((l) => ({ file: l.file, result: l.json }));
  const condFile = results.find((l) => l.file === "conditions.json");
  if (!condFile) throw new Error(`${ctx.runDir}/conditions.json: missing or not a valid result`);
  const cond = condFile.result.metrics as ConditionsMetrics;
  const summary = {
    model: o.model,
    seconds: (performance.now() - t0) / 1000,
    seeds,
    // every training run's step 1 and steady state apart (report/speed.ts)
    training_speed: await trainingSpeeds(ctx.runDir),
    pps: { layer, coef, source: coefSource, steering: steered.chosen, target: steered.target },
    baseline: {
      trait: cond.baseline?.trait_mean ?? null,
      sem: cond.baseline?.trait_sem ?? null,
      coherence: cond.baseline?.coherence_mean ?? null,
    },
    // per condition over seeds: the mean, its SE (the larger of within-run and between-seed), the seeds' SD
    after: Object.fromEntries(
      aggregateSeeds(cond.runs).map((a) => [a.condition, {
        trait: a.trait,
        sem: a.se,
        within_sem: a.within_se,
        between_seed_sd: a.between_sd,
        coherence: a.coherence,
        seeds: a.seeds,
      }]),
    ),
    // the main runs' signatures (the cross-trait runs of --full, in their own folder, test section 6)
    signatures: allChecks(results.filter((l) => !l.file.includes("/"))).map((c) => ({
      figure: c.figure,
      shows: c.ok,
      text: c.text,
    })),
  };
  await atomicWriteJson(join(ctx.runDir, "demo_summary.json"), summary);
  return { report: rep.path, summary };
}

/** The demo's LoRA training: small and fast enough for the world model on two cores. */
function demoTrain(q: boolean): Record<string, unknown> {
  return {
    epochs: q ? 1 : 3,
    max_steps: q ? 2 : null,
    // E.4: the learning rates quoted for the 3-epoch runs are a cosine schedule's
    schedule: "cosine",
    batch_size: 8,
    grad_accum: 1,
    lr: 2e-3,
    warmup: 0.1,
    max_length: 128,
    checkpoint_every: q ? 1 : 13,
    lora: {
      r: 8,
      alpha: 16,
      dropout: 0.0,
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
  };
}
