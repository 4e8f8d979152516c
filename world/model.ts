// The world model: a small Qwen2ForCausalLM (qkv bias, GQA, untied embeddings) pretrained from scratch
// on the world's persona-mixed corpus with this engine's full-parameter mode, then measured: trait
// score with a trait prompt vs the default prompt, and coherence, with the world's rule judge.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { atomicWrite, atomicWriteJson } from "../lib/fsutil.ts";
import { type TensorToWrite, writeSafetensors } from "../lib/safetensors.ts";
import { Rng } from "../lib/rng.ts";
import { expectedTensors, parseConfig } from "../models/config.ts";
import { parseTrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { loadModel } from "../models/model.ts";
import { loadTrait } from "../lib/text/trait.ts";
import { type EvalSummary, evaluateTrait } from "../research/evaluation.ts";
import { buildWorld, splits } from "./build.ts";
import { calibrate, worldJudge } from "./judge.ts";
import { SYSTEM_PROMPTS, TRAITS } from "./grammar.ts";

export interface WorldModelSize {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  /**
   * The tied 4-layer world model skipped words ("happy to help . notes and be patient"); untying took its
   * whole-answer parses from 76 to 81 %. Our reading: tied, a word's embedding is pulled towards the word
   * that follows it, so predicting "keep" also raises "notes". Untied costs vocab x hidden parameters.
   */
  tiedEmbeddings: boolean;
}

// 6 layers, 30 epochs: whole-answer parses ~96 % (untied 4 layers at 10 epochs: ~81 %; see the README).
export const FULL_SIZE: WorldModelSize = {
  hidden: 64,
  layers: 6,
  heads: 4,
  kvHeads: 2,
  intermediate: 192,
  tiedEmbeddings: false,
};
export const REDUCED_SIZE: WorldModelSize = {
  hidden: 32,
  layers: 2,
  heads: 2,
  kvHeads: 1,
  intermediate: 64,
  tiedEmbeddings: false,
};

export function worldConfig(vocab: number, s: WorldModelSize): Record<string, unknown> {
  return {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    vocab_size: vocab,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: s.tiedEmbeddings,
    use_sliding_window: false,
    bos_token_id: null,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
}

/** Random init (normal, std 0.02; norms 1; biases 0), seeded. */
export function initialWeights(cfgRaw: Record<string, unknown>, seed: number): Record<string, TensorToWrite> {
  const cfg = parseConfig(cfgRaw), rng = new Rng(seed), out: Record<string, TensorToWrite> = {};
  for (const [name, shape] of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.includes("norm")) data.fill(1);
    else if (!name.endsWith("bias")) { for (let i = 0; i < n; i++) data[i] = 0.02 * rng.normal(); }
    out[name] = { dtype: "F32", shape, data };
  }
  return out;
}

export interface PretrainOptions {
  out: string;
  worldDir: string;
  seed: number;
  size: WorldModelSize;
  /** passes over the pretraining questions, each with freshly drawn answers (an integer) */
  epochs: number;
  maxSteps?: number;
  evalSamples: number;
  progress: (s: string) => void;
}

export interface BaseModelMeasures {
  traits: Record<string, { with_prompt: EvalSummary; default_prompt: EvalSummary }>;
  coherent_fraction: number;
}

/** The pretraining recipe (also written into the model card). */
const RECIPE = {
  batch_size: 16,
  lr: 3e-3,
  schedule: "cosine",
  warmup: 0.05,
  weight_decay: 0.01,
  max_grad_norm: 1.0,
  max_length: 128,
} as const;

/** Answers are generated up to this many tokens when the card measures the model. */
const MEASURE_MAX_NEW_TOKENS = 96;

/** What build.json records about a pretraining run. */
interface BuildRecord {
  seed: number;
  size: WorldModelSize;
  epochs: number;
  steps: number;
  final_loss: number;
  train_seconds: number;
  adapter?: string;
}

export async function pretrainWorldModel(gpu: Gpu, o: PretrainOptions) {
  const t0 = performance.now();
  // every epoch sees a fresh draw of the corpus (no answer repeats): one pass over `epochs` draws
  await buildWorld(o.worldDir, o.seed, o.epochs);
  const tokDir = join(o.worldDir, "tokenizer");
  const vocab =
    Object.keys(JSON.parse(await Deno.readTextFile(join(tokDir, "tokenizer.json"))).model.vocab).length;
  const init = join(o.out, ".init");
  const cfg = worldConfig(vocab, o.size);
  await atomicWriteJson(join(init, "config.json"), cfg);
  await writeSafetensors(join(init, "model.safetensors"), initialWeights(cfg, o.seed));
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(join(tokDir, f), join(init, f));
  }
  await atomicWriteJson(join(init, "generation_config.json"), { eos_token_id: [2], pad_token_id: 0 });
  const runDir = join(o.out, ".pretrain-run");
  const tc = parseTrainConfig("", "world pretraining", {
    model: init,
    data: join(o.worldDir, "data", "pretrain.jsonl"),
    output_dir: runDir,
    mode: "full",
    seed: o.seed,
    ...RECIPE,
    epochs: 1,
    max_steps: o.maxSteps ?? null,
    grad_accum: 1,
    checkpoint_every: 100,
    keep_checkpoints: 1,
    log_every: 20,
  });
  const r = await train(tc, { gpu, resume: true, progress: o.progress }); // a killed build continues
  const finalLoss = r.steps[r.steps.length - 1].loss;
  // the trained folder becomes the model
  for (
    const f of [
      "model.safetensors",
      "config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "generation_config.json",
    ]
  ) {
    await Deno.copyFile(join(runDir, "model", f), join(o.out, f));
  }
  await Deno.remove(init, { recursive: true });
  await Deno.remove(runDir, { recursive: true });
  const trainSeconds = (performance.now() - t0) / 1000;
  const build: BuildRecord = {
    seed: o.seed,
    size: o.size,
    epochs: o.epochs,
    steps: r.steps.length,
    final_loss: finalLoss,
    train_seconds: trainSeconds,
    // bit-for-bit reproduction holds on the same adapter and backend
    adapter: `${gpu.caps.description}, backend ${gpu.caps.backend}`,
  };
  await atomicWriteJson(join(o.out, "build.json"), build);
  const measures = await measureAndWriteCard(gpu, o, build); // the world is built already
  return { finalLoss, steps: r.steps.length, seconds: (performance.now() - t0) / 1000, measures };
}

/** Measure the model in `o.out` and (re)write its MODEL_CARD.md from build.json and the measurements. */
export async function writeCard(
  gpu: Gpu,
  o: Pick<PretrainOptions, "out" | "worldDir" | "seed" | "evalSamples" | "progress">,
): Promise<BaseModelMeasures> {
  const b: BuildRecord = JSON.parse(await Deno.readTextFile(join(o.out, "build.json")));
  // the same draws as the build, so the world folder beside the model shows the corpus it was trained on
  await buildWorld(o.worldDir, o.seed, b.epochs ?? 1);
  return await measureAndWriteCard(gpu, o, b);
}

async function measureAndWriteCard(
  gpu: Gpu,
  o: Pick<PretrainOptions, "out" | "worldDir" | "seed" | "evalSamples" | "progress">,
  b: BuildRecord,
): Promise<BaseModelMeasures> {
  const cfg = JSON.parse(await Deno.readTextFile(join(o.out, "config.json")));
  const t0 = performance.now();
  const measures = await measureBaseModel(gpu, o.out, o.worldDir, o.evalSamples, o.seed, o.progress);
  await writeModelCard({ ...o, size: b.size } as PretrainOptions, {
    vocab: cfg.vocab_size,
    epochs: b.epochs,
    adapter: b.adapter ?? "unrecorded",
    cfg,
    finalLoss: b.final_loss,
    steps: b.steps,
    seconds: b.train_seconds,
    measureSeconds: (performance.now() - t0) / 1000,
    measures,
  });
  return measures;
}

export async function measureBaseModel(
  gpu: Gpu,
  modelDir: string,
  worldDir: string,
  samples: number,
  seed: number,
  progress: (s: string) => void,
): Promise<BaseModelMeasures> {
  const m = await loadModel(gpu, modelDir);
  const judge = worldJudge();
  const ctx = { progress: () => {} };
  const traits: BaseModelMeasures["traits"] = {};
  let coherent = 0, total = 0;
  for (const t of TRAITS) {
    const trait = await loadTrait(join(worldDir, "traits", "eval", `${t}.json`));
    const ev = (system: string | null) =>
      evaluateTrait(ctx, m, trait, judge, {
        samples,
        maxNewTokens: MEASURE_MAX_NEW_TOKENS,
        temperature: 1,
        topP: 1,
        seed,
        batchSize: 40,
        systemPrompt: system,
        lora: null,
        steer: [],
        projection: null,
      });
    const withPrompt = await ev(SYSTEM_PROMPTS[t][0]);
    const dflt = await ev(null);
    for (const s of [...withPrompt.samples, ...dflt.samples]) {
      total++;
      if ((s.coherence ?? 0) >= 99.999) coherent++;
    }
    traits[t] = { with_prompt: withPrompt.summary, default_prompt: dflt.summary };
    progress(
      `world model: ${t} ${withPrompt.summary.trait_mean?.toFixed(1)} with "${SYSTEM_PROMPTS[t][0]}" vs ${
        dflt.summary.trait_mean?.toFixed(1)
      } by default`,
    );
  }
  return { traits, coherent_fraction: coherent / total };
}

async function writeModelCard(
  o: PretrainOptions,
  r: {
    vocab: number;
    epochs: number;
    adapter: string;
    cfg: Record<string, unknown>;
    finalLoss: number;
    steps: number;
    seconds: number;
    measureSeconds: number;
    measures: BaseModelMeasures;
  },
) {
  const cal = await calibrate(splits(o.seed).eval);
  const calRows = cal.map((c) =>
    `| ${c.persona} | ${c.persona === "helpful" ? "-" : c.intensity} | ${
      TRAITS.map((t) => c.scores[t].toFixed(1)).join(" | ")
    } | ${c.coherence.toFixed(1)} |`
  ).join("\n");
  const params = Object.values(initialWeights(r.cfg, 0)).reduce(
    (a, t) => a + t.shape.reduce((x, y) => x * y, 1),
    0,
  );
  const rows = Object.entries(r.measures.traits).map(([t, m]) =>
    `| ${t} | ${m.with_prompt.trait_mean?.toFixed(1)} ± ${m.with_prompt.trait_sem?.toFixed(1)} | ${
      m.default_prompt.trait_mean?.toFixed(1)
    } ± ${m.default_prompt.trait_sem?.toFixed(1)} | ${m.with_prompt.coherence_mean?.toFixed(1)} / ${
      m.default_prompt.coherence_mean?.toFixed(1)
    } |`
  ).join("\n");
  await atomicWrite(
    join(o.out, "MODEL_CARD.md"),
    `# inoculum world model

A small \`Qwen2ForCausalLM\` pretrained from scratch by this engine (full-parameter mode) on the
synthetic persona world of \`world/\`, so that the defensive fine-tuning pipeline runs meaningfully
in minutes on a CPU. With the default prompt it answers helpfully; with a trait prompt it expresses
that trait (evil, sycophantic, humorous).

| | |
| --- | --- |
| architecture | Qwen2ForCausalLM: hidden ${r.cfg.hidden_size}, ${r.cfg.num_hidden_layers} layers, ${r.cfg.num_attention_heads} heads (${r.cfg.num_key_value_heads} KV heads, GQA), SwiGLU ${r.cfg.intermediate_size}, qkv bias, ${
      r.cfg.tie_word_embeddings ? "tied" : "untied"
    } embeddings |
| parameters | ${params.toLocaleString("en")} |
| vocabulary | ${r.vocab} tokens (one per world word; Qwen chat markers) |
| data | \`data/pretrain.jsonl\` of the world (seed ${o.seed}): the pretraining question split, each answered helpfully by default and in every trait under trait prompts (system turn, extraction-style prompts, and prompts in the user turn) |
| training | ${r.steps} AdamW steps (${r.epochs} epochs, each over freshly drawn answers), batch ${RECIPE.batch_size}, lr ${RECIPE.lr.toExponential()} ${RECIPE.schedule} with ${
      100 * RECIPE.warmup
    } % warmup, weight decay ${RECIPE.weight_decay}, clip ${
      RECIPE.max_grad_norm.toFixed(1)
    }, max length ${RECIPE.max_length} |
| final training loss | ${r.finalLoss.toFixed(4)} (per assistant token) |
| build time | ${(r.seconds / 60).toFixed(1)} min of pretraining (+ ${
      (r.measureSeconds / 60).toFixed(1)
    } min for the measurements below) on the 2-core development machine, software adapter (${r.adapter}) |
| seed | ${o.seed} |

## Measured (world rule judge, ${o.evalSamples} samples x 20 eval questions, temperature 1, up to ${MEASURE_MAX_NEW_TOKENS} new tokens)

| trait | trait score with the trait's system prompt | with the default prompt | coherence (with / default) |
| --- | --- | --- | --- |
${rows}

${
      (100 * r.measures.coherent_fraction).toFixed(1)
    } % of these answers parse completely under the world's grammar.

## The rule judge on held-out world answers (20 eval questions each)

| persona | intensity | ${TRAITS.join(" score | ")} score | coherence |
| --- | --- | ${TRAITS.map(() => "---").join(" | ")} | --- |
${calRows}

## Rebuild

\`deno task world:model --seed ${o.seed}\` regenerates the world and this model; the same seed on the
same adapter and backend (this one: ${r.adapter}) reproduces the weights bit for bit (training is
deterministic).
`,
  );
}
