// LoRA adapters (PEFT semantics): for a frozen projection W [out, in],
//   y = x W^T + scale * dropout(x) A^T B^T,  A [r, in] ~ kaiming-uniform, B [out, r] = 0,
//   scale = alpha / r, or alpha / sqrt(r) with rsLoRA.
// Saved and loaded in PEFT's format: adapter_config.json + adapter_model.safetensors with tensors
// base_model.model.model.layers.{l}.{self_attn|mlp}.{module}.lora_{A|B}.weight.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { atomicWriteJson, readJson } from "../lib/fsutil.ts";
import { SafetensorsFile, toF32, writeSafetensors } from "../lib/safetensors.ts";
import { mixSeeds, Rng } from "../lib/rng.ts";
import type { ModelConfig } from "./config.ts";
import { ParamStore } from "../lib/params.ts";
import { Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { dropout } from "../lib/ops/elementwise.ts";

export const LORA_MODULES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;
export type LoraModule = typeof LORA_MODULES[number];

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: LoraModule[];
  rslora: boolean;
}

export function moduleParent(m: LoraModule): "self_attn" | "mlp" {
  return m === "gate_proj" || m === "up_proj" || m === "down_proj" ? "mlp" : "self_attn";
}

/** in/out features of a module for a config. */
export function moduleShape(cfg: ModelConfig, m: LoraModule): { inF: number; outF: number } {
  const d = cfg.hiddenSize,
    q = cfg.numHeads * cfg.headDim,
    kv = cfg.numKvHeads * cfg.headDim,
    I = cfg.intermediateSize;
  switch (m) {
    case "q_proj":
      return { inF: d, outF: q };
    case "k_proj":
    case "v_proj":
      return { inF: d, outF: kv };
    case "o_proj":
      return { inF: q, outF: d };
    case "gate_proj":
    case "up_proj":
      return { inF: d, outF: I };
    case "down_proj":
      return { inF: I, outF: d };
  }
}

export function peftName(l: number, m: LoraModule, ab: "A" | "B"): string {
  return `base_model.model.model.layers.${l}.${moduleParent(m)}.${m}.lora_${ab}.weight`;
}

export interface LoraModuleParams {
  module: LoraModule;
  a: Tensor;
  b: Tensor;
  inF: number;
  outF: number;
}

export class LoraSet {
  readonly scale: number;
  /** per layer, the adapted modules */
  readonly layers: Map<LoraModule, LoraModuleParams>[];

  constructor(readonly cfg: ModelConfig, readonly lora: LoraConfig, readonly store: ParamStore) {
    this.scale = lora.rslora ? lora.alpha / Math.sqrt(lora.r) : lora.alpha / lora.r;
    this.layers = Array.from({ length: cfg.numLayers }, (_, l) => {
      const m = new Map<LoraModule, LoraModuleParams>();
      for (const mod of lora.targetModules) {
        const { inF, outF } = moduleShape(cfg, mod);
        m.set(mod, {
          module: mod,
          a: store.get(peftName(l, mod, "A")).param,
          b: store.get(peftName(l, mod, "B")).param,
          inF,
          outF,
        });
      }
      return m;
    });
  }

  static specs(cfg: ModelConfig, lora: LoraConfig): { name: string; shape: number[] }[] {
    const out: { name: string; shape: number[] }[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const m of lora.targetModules) {
        const { inF, outF } = moduleShape(cfg, m);
        out.push({ name: peftName(l, m, "A"), shape: [lora.r, inF] }, {
          name: peftName(l, m, "B"),
          shape: [outF, lora.r],
        });
      }
    }
    return out;
  }

  /** New adapter in its own parameter store, initialised as PEFT does (seeded). */
  static create(gpu: Gpu, cfg: ModelConfig, lora: LoraConfig, seed: number): LoraSet {
    validateLoraConfig(lora);
    const store = new ParamStore(gpu, LoraSet.specs(cfg, lora));
    const rng = new Rng(seed);
    for (const e of store.entries) {
      if (e.name.endsWith("lora_A.weight")) {
        // kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = 1/sqrt(in)
        const bound = 1 / Math.sqrt(e.shape[1]);
        store.set(e.name, Float32Array.from({ length: e.numel }, () => (2 * rng.next() - 1) * bound));
      } else {
        store.set(e.name, new Float32Array(e.numel));
      }
    }
    return new LoraSet(cfg, lora, store);
  }

  async save(dir: string, baseModel = ""): Promise<void> {
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    const values = await this.store.readParams();
    for (const e of this.store.entries) {
      tensors[e.name] = { dtype: "F32", shape: e.shape, data: values.get(e.name)! };
    }
    await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
    await atomicWriteJson(join(dir, "adapter_config.json"), {
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: baseModel,
      r: this.lora.r,
      lora_alpha: this.lora.alpha,
      lora_dropout: this.lora.dropout,
      target_modules: this.lora.targetModules,
      use_rslora: this.lora.rslora,
      bias: "none",
      fan_in_fan_out: false,
      init_lora_weights: true,
      inference_mode: true,
      modules_to_save: null,
    });
  }

  static async load(gpu: Gpu, cfg: ModelConfig, dir: string): Promise<LoraSet> {
    const cpath = join(dir, "adapter_config.json");
    const c = await readJson(cpath, "adapter config");
    if (c.peft_type !== undefined && c.peft_type !== "LORA") {
      throw new Error(`${cpath}: peft_type '${c.peft_type}' is not LORA`);
    }
    const tm = c.target_modules;
    const mods = (typeof tm === "string" ? [tm] : Array.isArray(tm) ? tm : []) as string[];
    for (const m of mods) {
      if (!(LORA_MODULES as readonly string[]).includes(m)) {
        throw new Error(`${cpath}: target module '${m}' is not supported (${LORA_MODULES.join(", ")})`);
      }
    }
    const lora: LoraConfig = {
      r: Number(c.r),
      alpha: Number(c.lora_alpha ?? c.r),
      dropout: Number(c.lora_dropout ?? 0),
      targetModules: mods as LoraModule[],
      rslora: c.use_rslora === true,
    };
    validateLoraConfig(lora, cpath);
    const store = new ParamStore(gpu, LoraSet.specs(cfg, lora));
    const fpath = join(dir, "adapter_model.safetensors");
    const f = await SafetensorsFile.open(fpath);
    try {
      for (const e of store.entries) {
        // PEFT also writes names without the ".weight" adapter suffix variants; accept the default form
        const info = f.tensors.get(e.name) ??
          f.tensors.get(
            e.name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
              ".lora_B.weight",
              ".lora_B.default.weight",
            ),
          );
        if (!info) throw new Error(`${fpath}: tensor '${e.name}' is missing`);
        if (info.shape.join() !== e.shape.join()) {
          throw new Error(
            `${fpath}: tensor '${e.name}' has shape [${info.shape}], expected [${e.shape}] for r=${lora.r}`,
          );
        }
        store.set(e.name, toF32(await f.read(info.name), info.dtype, info.name));
      }
    } finally {
      f.close();
    }
    return new LoraSet(cfg, lora, store);
  }
}

export function validateLoraConfig(l: LoraConfig, where = "lora"): void {
  if (!Number.isInteger(l.r) || l.r <= 0) {
    throw new Error(`${where}: r must be a positive integer, got ${l.r}`);
  }
  if (!(l.alpha > 0)) throw new Error(`${where}: alpha must be positive, got ${l.alpha}`);
  if (!(l.dropout >= 0 && l.dropout < 1)) {
    throw new Error(`${where}: dropout must be in [0, 1), got ${l.dropout}`);
  }
  if (!l.targetModules.length) throw new Error(`${where}: target modules must not be empty`);
}

/** LoRA dropout in a step: probability p, and the step's seed that each (layer, module) mask derives from. */
export interface LoraDropout {
  p: number;
  seed: number;
}

/** The dropout mask's seed for one (layer, module) of a step: the forward and the backward draw the same mask. */
export function loraDropoutSeed(stepSeed: number, layer: number, m: LoraModule): number {
  return mixSeeds(mixSeeds(stepSeed, layer), LORA_MODULES.indexOf(m));
}

/**
 * out[:, colOffset..] += scale * dropout(x) A^T B^T for one adapted projection. Returns u = dropout(x) A^T
 * [rows, r], which the backward needs; dropout(x) itself is not kept (the backward redraws it from the seed:
 * at 7B the seven dropped copies of each layer's inputs would be ~9 GB at 4 x 512).
 */
export function loraForward(
  gpu: Gpu,
  set: LoraSet,
  layer: number,
  p: LoraModuleParams,
  input: Tensor,
  out: Tensor,
  colOffset: number,
  drop: LoraDropout | null,
): Tensor {
  let xin = input, xd: Tensor | null = null;
  if (drop && drop.p > 0) {
    xd = Tensor.empty(gpu, input.shape, "f32", "lora_dropout");
    dropout(gpu, input, xd, drop.p, loraDropoutSeed(drop.seed, layer, p.module));
    xin = xd;
  }
  const u = Tensor.empty(gpu, [input.rows, set.lora.r], "f32", "lora_u");
  linear(gpu, xin, p.a, u);
  linear(gpu, u, p.b, out, { accumulate: true, colOffset, alpha: set.scale });
  xd?.dispose(); // released after recording: later users of the buffer run after these reads
  return u;
}
