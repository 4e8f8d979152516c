// Training configuration: YAML (npm:yaml), validated key by key; errors name the file and key.
// Defaults are the study's hyperparameters (LoRA r 64 / alpha 128 / dropout 0.05 on all projections,
// lr 1e-5, weight decay 0.01, cosine schedule with 3% warmup (E.4), 3 epochs, effective batch 32, max length
// 512).

import { parse } from "yaml";
import { ConfigReader, SEED_RANGE } from "../lib/config.ts";
import type { LoraModule } from "../models/lora.ts";
import { LORA_MODULES } from "../models/lora.ts";
import type { ScheduleKind } from "./schedule.ts";
import {
  type IpSpec,
  readIp,
  readSignForce,
  readSteer,
  type SignForceSpec,
  type SteerSpec,
} from "../defence/defence.ts";

export interface TrainConfig {
  model: string;
  data: string;
  output_dir: string;
  mode: "lora" | "full";
  seed: number;
  max_length: number;
  truncate: boolean;
  on_bad_line: "stop" | "skip";
  limit: number | null;
  epochs: number;
  max_steps: number | null;
  batch_size: number;
  grad_accum: number;
  lr: number;
  weight_decay: number;
  schedule: ScheduleKind;
  warmup: number;
  max_grad_norm: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_eps: number;
  lora: { r: number; alpha: number; dropout: number; target_modules: LoraModule[]; rslora: boolean };
  /** PPS: add coef * v_l at these layers during training (defence/defence.ts) */
  steer: SteerSpec | null;
  /** IP: prompts drawn uniformly per sample and epoch */
  inoculation: IpSpec | null;
  /** a system message for every sample that has none (null: the chat template's default) */
  system_prompt: string | null;
  sign_force: SignForceSpec | null;
  /** steps between checkpoints, or (< 1) a fraction of the run's steps (train/schedule.ts checkpointSteps) */
  checkpoint_every: number;
  keep_checkpoints: number;
  log_every: number;
  /** continue from an existing adapter (chained fine-tuning) instead of a fresh one */
  init_adapter: string | null;
  /** keep each layer's input only and recompute the layer in the backward pass (HF Trainer's
   * gradient_checkpointing): a layer's activations in memory instead of all of them, for ~1/3 more work */
  gradient_checkpointing: boolean;
}

export const DEFAULTS: Omit<TrainConfig, "model" | "data" | "output_dir"> = {
  mode: "lora",
  seed: 0,
  max_length: 512,
  truncate: true,
  on_bad_line: "stop",
  limit: null,
  epochs: 3,
  max_steps: null,
  batch_size: 4,
  grad_accum: 8,
  lr: 1e-5,
  weight_decay: 0.01,
  // C.2/C.3 say "linear", but the learning rates E.4 quotes for the 3-epoch runs (9.5e-6 at step 73 and
  // 7.8e-6 at step 147 of 441) are a cosine schedule's, not a linear one's (8.6e-6, 6.9e-6)
  schedule: "cosine",
  warmup: 0.03,
  max_grad_norm: 1.0,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_eps: 1e-8,
  lora: { r: 64, alpha: 128, dropout: 0.05, target_modules: [...LORA_MODULES], rslora: false },
  steer: null,
  inoculation: null,
  system_prompt: null,
  sign_force: null,
  checkpoint_every: 50,
  keep_checkpoints: 2,
  log_every: 1,
  init_adapter: null,
  gradient_checkpointing: false,
};

export function parseTrainConfig(
  text: string,
  file = "config.yaml",
  overrides: Record<string, unknown> = {},
): TrainConfig {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid YAML: ${(e as Error).message}`);
  }
  const r = new ConfigReader({ ...(raw as object ?? {}), ...overrides }, file);
  const d = DEFAULTS;
  const posInt = (key: string, dflt: number) => r.num(key, dflt, { int: true, min: 1 });
  const c: TrainConfig = {
    model: r.nonEmpty("model"),
    data: r.nonEmpty("data"),
    output_dir: r.nonEmpty("output_dir"),
    mode: r.oneOf("mode", ["lora", "full"] as const, d.mode),
    seed: r.num("seed", d.seed, SEED_RANGE),
    max_length: r.num("max_length", d.max_length, { int: true, min: 2 }),
    truncate: r.bool("truncate", d.truncate),
    on_bad_line: r.oneOf("on_bad_line", ["stop", "skip"] as const, d.on_bad_line),
    limit: r.nullable("limit", (k) => posInt(k, 1)),
    epochs: r.num("epochs", d.epochs, { gt: 0, max: 10000 }),
    max_steps: r.nullable("max_steps", (k) => r.num(k, 1, { int: true, min: 1, max: 1e8 })),
    batch_size: r.num("batch_size", d.batch_size, { int: true, min: 1, max: 65536 }),
    grad_accum: r.num("grad_accum", d.grad_accum, { int: true, min: 1, max: 65536 }),
    lr: r.num("lr", d.lr, { min: 0 }),
    weight_decay: r.num("weight_decay", d.weight_decay, { min: 0 }),
    schedule: r.oneOf("schedule", ["linear", "cosine", "constant"] as const, d.schedule),
    warmup: r.num("warmup", d.warmup, { min: 0 }),
    max_grad_norm: r.num("max_grad_norm", d.max_grad_norm, { min: 0 }),
    adam_beta1: r.num("adam_beta1", d.adam_beta1, { min: 0, lt: 1 }),
    adam_beta2: r.num("adam_beta2", d.adam_beta2, { min: 0, lt: 1 }),
    adam_eps: r.num("adam_eps", d.adam_eps, { gt: 0 }),
    lora: readLora(r.has("lora") ? r.sub("lora") : new ConfigReader({}, file, "lora")),
    steer: r.nullable("steer", (k) => readSteer(r.sub(k))),
    inoculation: r.nullable("inoculation", (k) => readIp(r, k)),
    system_prompt: r.nullable("system_prompt", (k) => r.nonEmpty(k)),
    sign_force: r.nullable("sign_force", (k) => readSignForce(r.sub(k))),
    checkpoint_every: checkpointEvery(r),
    keep_checkpoints: posInt("keep_checkpoints", d.keep_checkpoints),
    log_every: posInt("log_every", d.log_every),
    init_adapter: r.nullable("init_adapter", (k) => r.nonEmpty(k)),
    gradient_checkpointing: r.bool("gradient_checkpointing", d.gradient_checkpointing),
  };
  r.done();
  return c;
}

/** checkpoint_every: a number of steps (an integer >= 1), or a fraction of the run's steps in (0, 1). */
function checkpointEvery(r: ConfigReader): number {
  const v = r.num("checkpoint_every", DEFAULTS.checkpoint_every, { gt: 0 });
  if (v >= 1 && !Number.isInteger(v)) {
    r.fail("checkpoint_every", "an integer number of steps >= 1 or a fraction of the run in (0, 1)", v);
  }
  return v;
}

function readLora(s: ConfigReader): TrainConfig["lora"] {
  const d = DEFAULTS.lora;
  const target = s.strList("target_modules", d.target_modules);
  if (!target.length || !target.every((m) => (LORA_MODULES as readonly string[]).includes(m))) {
    throw new Error(
      `${s.file}: key 'lora.target_modules' must be a non-empty list of ${LORA_MODULES.join(", ")}`,
    );
  }
  const o = {
    r: s.num("r", d.r, { int: true, min: 1 }),
    alpha: s.num("alpha", d.alpha, { gt: 0 }),
    dropout: s.num("dropout", d.dropout, { min: 0, max: 0.99 }),
    target_modules: target as LoraModule[],
    rslora: s.bool("rslora", d.rslora),
  };
  s.done();
  return o;
}

export async function loadTrainConfig(
  path: string,
  overrides: Record<string, unknown> = {},
): Promise<TrainConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read config: ${(e as Error).message}`);
  }
  return parseTrainConfig(text, path, overrides);
}
