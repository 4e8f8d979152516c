// Training configuration: YAML (npm:yaml), validated key by key; errors name the file and key.
// Defaults are the study's hyperparameters (LoRA r 64 / alpha 128 / dropout 0.05 on all projections,
// lr 1e-5, weight decay 0.01, linear schedule with 3% warmup, 3 epochs, effective batch 32, max length 512).

import { parse } from "yaml";
import type { LoraModule } from "./lora.ts";
import { LORA_MODULES } from "./lora.ts";
import type { ScheduleKind } from "./schedule.ts";
import type { SignForceMode } from "../ops/hooks.ts";

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
  /** PPS: add coef * v_l at these layers during training */
  steer: { vector: string; layers: number[]; coef: number } | null;
  /** IP: prompts drawn uniformly per sample and epoch */
  inoculation: { prompts: string[]; separator: string; position: "user" | "system" } | null;
  /** a system message for every sample that has none (null: the chat template's default) */
  system_prompt: string | null;
  sign_force: { vector: string; layers: number[] | "all"; mode: SignForceMode } | null;
  checkpoint_every: number;
  keep_checkpoints: number;
  log_every: number;
  /** continue from an existing adapter (chained fine-tuning) instead of a fresh one */
  init_adapter: string | null;
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
  schedule: "linear",
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
};

type Check = (v: unknown, key: string) => unknown;
const where = (file: string, key: string) => `${file}: key '${key}'`;

function num(
  file: string,
  opts: { int?: boolean; min?: number; max?: number; minExclusive?: boolean } = {},
): Check {
  return (v, key) => {
    if (typeof v !== "number" || !Number.isFinite(v) || (opts.int && !Number.isInteger(v))) {
      throw new Error(
        `${where(file, key)} must be ${opts.int ? "an integer" : "a number"}, found ${JSON.stringify(v)}`,
      );
    }
    if (opts.min !== undefined && (opts.minExclusive ? v <= opts.min : v < opts.min)) {
      throw new Error(
        `${where(file, key)} must be ${opts.minExclusive ? ">" : ">="} ${opts.min}, found ${v}`,
      );
    }
    if (opts.max !== undefined && v > opts.max) {
      throw new Error(`${where(file, key)} must be <= ${opts.max}, found ${v}`);
    }
    return v;
  };
}
const str = (file: string): Check => (v, key) => {
  if (typeof v !== "string" || !v) {
    throw new Error(`${where(file, key)} must be a non-empty string, found ${JSON.stringify(v)}`);
  }
  return v;
};
const bool = (file: string): Check => (v, key) => {
  if (typeof v !== "boolean") {
    throw new Error(`${where(file, key)} must be true or false, found ${JSON.stringify(v)}`);
  }
  return v;
};
const oneOf = (file: string, opts: string[]): Check => (v, key) => {
  if (typeof v !== "string" || !opts.includes(v)) {
    throw new Error(`${where(file, key)} must be one of ${opts.join(", ")}, found ${JSON.stringify(v)}`);
  }
  return v;
};
const layers = (file: string, allowAll: boolean): Check => (v, key) => {
  if (allowAll && v === "all") return v;
  const arr = typeof v === "number" ? [v] : v;
  if (!Array.isArray(arr) || !arr.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new Error(
      `${where(file, key)} must be a layer index or a list of them${allowAll ? ", or 'all'" : ""}`,
    );
  }
  return arr;
};

function object(
  file: string,
  key: string,
  v: unknown,
  schema: Record<string, Check>,
  dflt: Record<string, unknown> = {},
): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new Error(`${where(file, key)} must be a mapping`);
  }
  const out: Record<string, unknown> = { ...dflt };
  for (const [k, val] of Object.entries(v)) {
    const full = key ? `${key}.${k}` : k;
    const c = schema[k];
    if (!c) throw new Error(`${file}: unknown key '${full}' (known: ${Object.keys(schema).join(", ")})`);
    out[k] = c(val, full);
  }
  for (const k of Object.keys(schema)) {
    if (!(k in out)) throw new Error(`${file}: key '${key ? `${key}.${k}` : k}' is required`);
  }
  return out;
}

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
  raw = { ...(raw as object ?? {}), ...overrides };
  const f = file;
  const nullable = (c: Check): Check => (v, k) => v === null ? null : c(v, k);
  const schema: Record<string, Check> = {
    model: str(f),
    data: str(f),
    output_dir: str(f),
    mode: oneOf(f, ["lora", "full"]),
    seed: num(f, { int: true, min: 0 }),
    max_length: num(f, { int: true, min: 2 }),
    truncate: bool(f),
    on_bad_line: oneOf(f, ["stop", "skip"]),
    limit: nullable(num(f, { int: true, min: 1 })),
    epochs: num(f, { min: 0, minExclusive: true }),
    max_steps: nullable(num(f, { int: true, min: 1 })),
    batch_size: num(f, { int: true, min: 1 }),
    grad_accum: num(f, { int: true, min: 1 }),
    lr: num(f, { min: 0 }),
    weight_decay: num(f, { min: 0 }),
    schedule: oneOf(f, ["linear", "cosine", "constant"]),
    warmup: num(f, { min: 0 }),
    max_grad_norm: num(f, { min: 0 }),
    adam_beta1: num(f, { min: 0, max: 1 }),
    adam_beta2: num(f, { min: 0, max: 1 }),
    adam_eps: num(f, { min: 0, minExclusive: true }),
    lora: (v, k) =>
      object(f, k, v, {
        r: num(f, { int: true, min: 1 }),
        alpha: num(f, { min: 0, minExclusive: true }),
        dropout: num(f, { min: 0, max: 0.99 }),
        target_modules: (t, kk) => {
          if (
            !Array.isArray(t) || !t.length || !t.every((m) => (LORA_MODULES as readonly string[]).includes(m))
          ) {
            throw new Error(`${where(f, kk)} must be a non-empty list of ${LORA_MODULES.join(", ")}`);
          }
          return t;
        },
        rslora: bool(f),
      }, DEFAULTS.lora),
    steer: nullable((v, k) => object(f, k, v, { vector: str(f), layers: layers(f, false), coef: num(f) })),
    inoculation: nullable((v, k) =>
      object(f, k, v, {
        prompts: (p, kk) => {
          if (!Array.isArray(p) || !p.length || !p.every((x) => typeof x === "string" && x)) {
            throw new Error(`${where(f, kk)} must be a non-empty list of strings`);
          }
          return p;
        },
        separator: (s, kk) => {
          if (typeof s !== "string") throw new Error(`${where(f, kk)} must be a string`);
          return s;
        },
        position: oneOf(f, ["user", "system"]),
      }, { separator: "\n", position: "user" })
    ),
    system_prompt: nullable(str(f)),
    sign_force: nullable((v, k) =>
      object(f, k, v, {
        vector: str(f),
        layers: layers(f, true),
        mode: oneOf(f, ["attenuate", "amplify", "neutralize"]),
      }, { layers: "all" })
    ),
    checkpoint_every: num(f, { int: true, min: 1 }),
    keep_checkpoints: num(f, { int: true, min: 1 }),
    log_every: num(f, { int: true, min: 1 }),
    init_adapter: nullable(str(f)),
  };
  return object(f, "", raw, schema, DEFAULTS as unknown as Record<string, unknown>) as unknown as TrainConfig;
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

/**
 * The layers a sign_force's `layers` names: "all" is E.3's "all transformer layers (1-27)" of a 28-layer
 * model — every boundary between two decoder layers, 1..L-1, not the embedding (0) nor the last layer's
 * output (L).
 */
export function signForceLayers(layers: number[] | "all", numLayers: number): number[] {
  return layers === "all" ? Array.from({ length: Math.max(0, numLayers - 1) }, (_, i) => i + 1) : layers;
}
