// The whole pipeline in minutes: on the world model (or any HF model given by flags) extract the evil
// and sycophantic persona vectors, fine-tune defenceless / PPS / IP / random-vector PPS on heavy-evil
// data, evaluate trait and coherence before and after, run the gradient-cosine and loss analyses, and
// build the report. Every step is one of the experiments, run with the same code as a study.

import { join } from "node:path";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { buildWorld } from "../world/build.ts";
import { IP_PROMPTS } from "../world/grammar.ts";
import { buildReport } from "../report/build.ts";
import { trainingSpeeds } from "../report/speed.ts";
import type { ExperimentContext, JudgeConfig } from "../experiments/common.ts";
import { EXPERIMENTS } from "../experiments/index.ts";

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
  coef: number;
  quick: boolean;
  /** also the runs that do not fit the demo's 6 minutes: sign-forcing (Tables 1-2) and cross-trait */
  full: boolean;
  seed: number;
}

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
  step(
    4,
    `fine-tuning on ${data}: none / PPS (layer ${layer}, coef ${o.coef}) / IP / random-vector PPS, judged before and after`,
  );
  const samples = q ? 1 : 8;
  await run("conditions", {
    model: o.model,
    trait: join(traits, "eval", "evil.json"),
    judge,
    vector: vec,
    seeds: [o.seed],
    post: [{ name: "evil_heavy", data }],
    conditions: [
      { name: "none" },
      { name: "pps", steer: { layers: [layer], coef: o.coef } },
      { name: "ip", inoculation: IP_PROMPTS.evil },
      { name: "random_pps", steer: { layers: [layer], coef: o.coef, random: true } },
    ],
    train: demoTrain(q),
    eval: { samples, max_new_tokens: q ? 16 : 64, batch_size: 160, at_checkpoints: !q },
  });
  step(5, "gradient cosines with the evil, sycophantic and random vectors");
  await run("grad_cosine", {
    model: o.model,
    data,
    limit: q ? 2 : 48,
    vectors: [{ name: "evil", path: vec }, {
      name: "sycophantic",
      path: join(ctx.runDir, "sycophantic_vector.safetensors"),
    }],
    defences: [{ name: "pps", steer: { vector: "evil", layers: [layer], coef: o.coef } }, {
      name: "ip",
      ip: IP_PROMPTS.evil[0],
    }],
  });
  step(6, "loss and gradient cosine against steering intensity, with and without IP");
  await run("loss_sweep", {
    model: o.model,
    data,
    limit: q ? 2 : 24,
    vector: vec,
    layers: [layer],
    coefs: q ? [0, o.coef] : [0, 0.5, 1, 1.5, 2, 3, 4],
    ip: IP_PROMPTS.evil[0],
  });
  step(7, "gradient-difference PCA for PPS and for IP");
  for (
    const defence of [{ name: "pps", steer: { vector: "evil", layers: [layer], coef: o.coef } }, {
      name: "ip",
      ip: IP_PROMPTS.evil,
    }]
  ) {
    await run("grad_pca", {
      model: o.model,
      data,
      limit: q ? 3 : 48,
      layer,
      vectors: [{ name: "evil", path: vec }, {
        name: "sycophantic",
        path: join(ctx.runDir, "sycophantic_vector.safetensors"),
      }],
      defence,
      output: `grad_pca_${defence.name}`,
    });
  }
  step(8, "sign-forcing along the evil and a random vector, 1 epoch (Tables 1-2)");
  await run("conditions", {
    model: o.model,
    trait: join(traits, "eval", "evil.json"),
    judge,
    vector: vec,
    seeds: [o.seed],
    post: [{ name: "evil_heavy", data }],
    conditions: [{ name: "none" }],
    sign_force_modes: ["attenuate", "amplify", "neutralize"],
    sign_force_vectors: ["trait", "random"],
    train: { ...demoTrain(q), epochs: 1, schedule: "cosine", checkpoint_every: 1000 },
    eval: { samples, max_new_tokens: q ? 16 : 64, batch_size: 160, at_checkpoints: false },
  }, "sign_forcing");
  if (o.full) {
    step(
      9,
      "cross-trait (6): sycophantic data trained with evil-vector PPS up to ε 5, and the gradient cosines",
    );
    // the behaviour after training (sycophancy judged) that the pre-training cosines should predict
    const coefs = q ? [o.coef] : [1.5, 3, 5];
    await run("conditions", {
      model: o.model,
      trait: join(traits, "eval", "sycophantic.json"),
      judge,
      vector: vec,
      seeds: [o.seed],
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
      trait_a: { name: "sycophantic", vector: join(ctx.runDir, "sycophantic_vector.safetensors") },
      trait_b: { name: "evil", vector: vec },
      layers: [layer],
      coefs: q ? [0, o.coef] : [0, 0.5, 1, 1.5, 2, 3, 5],
      after: join(ctx.runDir, "cross_trait", "conditions.json"),
    });
  }
  step(steps, "building the report");
  const rep = await buildReport(ctx.runDir);
  const cond = JSON.parse(await Deno.readTextFile(join(ctx.runDir, "conditions.json"))).metrics;
  const summary = {
    model: o.model,
    seconds: (performance.now() - t0) / 1000,
    // every training run's step 1 and steady state apart (report/speed.ts)
    training_speed: await trainingSpeeds(ctx.runDir),
    baseline: {
      trait: cond.baseline.trait_mean,
      sem: cond.baseline.trait_sem,
      coherence: cond.baseline.coherence_mean,
    },
    after: Object.fromEntries(
      cond.runs.map((
        r: { condition: string; trait_after: number; trait_after_sem: number; coherence_after: number },
      ) => [r.condition, { trait: r.trait_after, sem: r.trait_after_sem, coherence: r.coherence_after }]),
    ),
  };
  await atomicWriteJson(join(ctx.runDir, "demo_summary.json"), summary);
  return { report: rep.path, summary };
}

/** The demo's LoRA training: small and fast enough for the world model on two cores. */
function demoTrain(q: boolean): Record<string, unknown> {
  return {
    epochs: q ? 1 : 3,
    max_steps: q ? 2 : null,
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
