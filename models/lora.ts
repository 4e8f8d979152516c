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
import { type LoraPhase, matmul, planMatmul } from "../lib/ops/matmul.ts";
import { gemv, GEMV_MAX_ROWS } from "../lib/ops/gemv.ts";

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

/** The projections the decoder computes as one product each, and the modules each is made of, in order. */
export const PROJECTION_GROUPS = {
  qkv: ["q_proj", "k_proj", "v_proj"],
  o: ["o_proj"],
  gate_up: ["gate_proj", "up_proj"],
  down: ["down_proj"],
} as const satisfies Record<string, readonly LoraModule[]>;
export type ProjectionGroup = keyof typeof PROJECTION_GROUPS;
export const PROJECTION_GROUP_NAMES = Object.keys(PROJECTION_GROUPS) as ProjectionGroup[];

/** A module's output columns in its group's fused output (q|k|v, gate|up). */
export function moduleColumns(cfg: ModelConfig, m: LoraModule): { c0: number; c1: number } {
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
  const c0 = m === "k_proj" ? q : m === "v_proj" ? q + kv : m === "up_proj" ? I : 0;
  return { c0, c1: c0 + moduleShape(cfg, m).outF };
}

/**
 * The adapted modules of one projection group in one layer, as the fused kernels take them: their lora_A
 * stacked [nseg * r, in] and lora_B stacked [sum of widths, r] (contiguous runs of the parameter store, and
 * of its gradients), and per module its output columns [c0, c1) and first row in the stacked B.
 */
export interface LoraGroup {
  group: ProjectionGroup;
  layer: number;
  modules: { module: LoraModule; c0: number; c1: number; b0: number }[];
  inF: number;
  a: Tensor;
  b: Tensor;
  gradA: Tensor;
  gradB: Tensor;
}

export class LoraSet {
  readonly scale: number;
  /** per layer, the adapted projection groups */
  readonly groups: Map<ProjectionGroup, LoraGroup>[];

  constructor(readonly cfg: ModelConfig, readonly lora: LoraConfig, readonly store: ParamStore) {
    this.scale = loraScale(lora);
    const r = lora.r;
    this.groups = Array.from({ length: cfg.numLayers }, (_, l) => {
      const out = new Map<ProjectionGroup, LoraGroup>();
      for (const [group, mods] of LoraSet.groupModules(lora)) {
        let b0 = 0;
        const modules = mods.map((m) => {
          const c = moduleColumns(cfg, m), e = { module: m, ...c, b0 };
          b0 += c.c1 - c.c0;
          return e;
        });
        const inF = moduleShape(cfg, mods[0]).inF;
        const a0 = peftName(l, mods[0], "A"), bFirst = peftName(l, mods[0], "B");
        out.set(group, {
          group,
          layer: l,
          modules,
          inF,
          a: store.span(a0, mods.length * r * inF, [mods.length * r, inF]),
          b: store.span(bFirst, b0 * r, [b0, r]),
          gradA: store.span(a0, mods.length * r * inF, [mods.length * r, inF], true),
          gradB: store.span(bFirst, b0 * r, [b0, r], true),
        });
      }
      return out;
    });
  }

  /** The adapted modules by group, in the groups' order. */
  static groupModules(lora: LoraConfig): [ProjectionGroup, LoraModule[]][] {
    return PROJECTION_GROUP_NAMES.map((g) =>
      [g, PROJECTION_GROUPS[g].filter((m) => lora.targetModules.includes(m))] as [
        ProjectionGroup,
        LoraModule[],
      ]
    ).filter(([, mods]) => mods.length > 0);
  }

  /** The store's layout: per layer and group, the modules' lora_A packed into one run, then their lora_B. */
  static specs(cfg: ModelConfig, lora: LoraConfig): { name: string; shape: number[]; pack?: boolean }[] {
    const out: { name: string; shape: number[]; pack?: boolean }[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const [, mods] of LoraSet.groupModules(lora)) {
        mods.forEach((m, i) =>
          out.push({ name: peftName(l, m, "A"), shape: [lora.r, moduleShape(cfg, m).inF], pack: i > 0 })
        );
        mods.forEach((m, i) =>
          out.push({ name: peftName(l, m, "B"), shape: [moduleShape(cfg, m).outF, lora.r], pack: i > 0 })
        );
      }
    }
    return out;
  }

  /** New adapter in its own parameter store, initialised as PEFT does (seeded; the draws go to the modules
   * in (layer, target module) order, whatever the store's layout). */
  static create(gpu: Gpu, cfg: ModelConfig, lora: LoraConfig, seed: number): LoraSet {
    validateLoraConfig(lora);
    const store = new ParamStore(gpu, LoraSet.specs(cfg, lora));
    const rng = new Rng(seed);
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const m of lora.targetModules) {
        // kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = 1/sqrt(in)
        const a = store.get(peftName(l, m, "A"));
        const bound = 1 / Math.sqrt(a.shape[1]);
        store.set(a.name, Float32Array.from({ length: a.numel }, () => (2 * rng.next() - 1) * bound));
        store.set(peftName(l, m, "B"), new Float32Array(store.get(peftName(l, m, "B")).numel));
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
    const lora = await readAdapterConfig(dir);
    const store = new ParamStore(gpu, LoraSet.specs(cfg, lora));
    const fpath = join(dir, "adapter_model.safetensors");
    const f = await SafetensorsFile.open(fpath);
    try {
      checkAdapterTensors(f, store.entries.map((e) => e.name), cfg.numLayers);
      for (const e of store.entries) store.set(e.name, await readAdapterTensor(f, e.name, e.shape, lora.r));
    } finally {
      f.close();
    }
    return new LoraSet(cfg, lora, store);
  }
}

/** An adapter folder's adapter_config.json (PEFT's keys), validated. */
export async function readAdapterConfig(dir: string): Promise<LoraConfig> {
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
  // what PEFT can express and this engine does not apply: refused by name, never ignored
  const nonEmpty = (v: unknown) =>
    v !== undefined && v !== null && v !== false &&
    !(typeof v === "object" && Object.keys(v as object).length === 0);
  const unsupported: [string, boolean][] = [
    ["alpha_pattern", nonEmpty(c.alpha_pattern)],
    ["rank_pattern", nonEmpty(c.rank_pattern)],
    ["use_dora", c.use_dora === true],
    ["bias", c.bias !== undefined && c.bias !== "none"],
    ["modules_to_save", nonEmpty(c.modules_to_save)],
    ["layers_to_transform", nonEmpty(c.layers_to_transform)],
    ["layers_pattern", nonEmpty(c.layers_pattern)],
    ["fan_in_fan_out", c.fan_in_fan_out === true],
    ["target_parameters", nonEmpty(c.target_parameters)],
  ];
  for (const [k, bad] of unsupported) {
    if (bad) {
      throw new Error(
        `${cpath}: '${k}' is ${
          JSON.stringify(c[k])
        }, which this engine does not implement (only plain LoRA: ` +
          `one r and lora_alpha, no DoRA, bias none, no modules_to_save)`,
      );
    }
  }
  const lora: LoraConfig = {
    r: Number(c.r),
    alpha: Number(c.lora_alpha ?? 8), // PEFT's LoraConfig default
    dropout: Number(c.lora_dropout ?? 0),
    targetModules: mods as LoraModule[],
    rslora: c.use_rslora === true,
  };
  validateLoraConfig(lora, cpath);
  return lora;
}

/** Every tensor of an adapter file must be one the engine applies: a tensor for a layer past the model or
 * for another module (modules_to_save's copies, embeddings) would be ignored, so it is refused. */
export function checkAdapterTensors(f: SafetensorsFile, expected: string[], numLayers: number): void {
  const want = new Set(expected);
  for (const name of f.tensors.keys()) {
    const plain = name.replace(".lora_A.default.weight", ".lora_A.weight").replace(
      ".lora_B.default.weight",
      ".lora_B.weight",
    );
    if (want.has(plain)) continue;
    const layer = /\.layers\.(\d+)\./.exec(name)?.[1];
    throw new Error(
      `${f.path}: tensor '${name}' is not one this adapter config applies${
        layer !== undefined && Number(layer) >= numLayers
          ? ` (layer ${layer}; the model has ${numLayers})`
          : " (another module, or modules_to_save)"
      }; refusing to ignore it`,
    );
  }
}

/** One lora_A / lora_B tensor of an adapter file as f32, its shape checked (PEFT also writes the
 * ".default" adapter-name form; both are accepted). */
export async function readAdapterTensor(
  f: SafetensorsFile,
  name: string,
  shape: number[],
  r: number,
): Promise<Float32Array> {
  const info = f.tensors.get(name) ??
    f.tensors.get(
      name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
        ".lora_B.weight",
        ".lora_B.default.weight",
      ),
    );
  if (!info) throw new Error(`${f.path}: tensor '${name}' is missing`);
  if (info.shape.join() !== shape.join()) {
    throw new Error(`${f.path}: tensor '${name}' has shape [${info.shape}], expected [${shape}] for r=${r}`);
  }
  return toF32(await f.read(info.name), info.dtype, info.name);
}

/** The LoRA scale of a config: alpha / r, or alpha / sqrt(r) with rsLoRA. */
export const loraScale = (l: LoraConfig) => l.rslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;

export function validateLoraConfig(l: LoraConfig, where = "lora"): void {
  if (!Number.isInteger(l.r) || l.r <= 0) {
    throw new Error(`${where}: r must be a positive integer, got ${l.r}`);
  }
  if (!(l.alpha > 0)) throw new Error(`${where}: alpha must be positive, got ${l.alpha}`);
  if (!(l.dropout >= 0 && l.dropout < 1)) {
    throw new Error(`${where}: dropout must be in [0, 1), got ${l.dropout}`);
  }
  if (!l.targetModules.length) throw new Error(`${where}: target modules must not be empty`);
  const dup = l.targetModules.find((m, i) => l.targetModules.indexOf(m) !== i);
  if (dup) throw new Error(`${where}: target module '${dup}' is listed twice`);
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

/** A projection group's input as the decoder has it: the activations, and on decode steps the norm that
 * the product applies to them itself (lib/ops/gemv.ts). */
export interface ProjectionInput {
  x: Tensor;
  norm?: { weight: Tensor; eps: number };
}

/** What the forward of a group's adapter leaves: the phase the base product fuses, and u for a backward. */
export interface LoraGroupForward {
  phase: LoraPhase;
  /** u = dropout(x) A^T [rows, nseg * r], in `phase.slices` k-slices (pooled; the caller disposes it) */
  u: Tensor;
}

/**
 * The rank products u = dropout(x) A_m^T of every adapted module of a projection group, in one dispatch (each
 * module its own rows of the stacked lora_A, its own columns of u and its own dropout mask, drawn from the
 * step seed and applied as x is read, never stored), and the LoRA phase that adds scale * u B^T into the
 * group's base product (lib/ops/matmul.ts, gemv.ts). On GPUs u may be split along k into slices (summed where
 * they are read) so that the product fills the device.
 */
export function loraGroupForward(
  gpu: Gpu,
  set: LoraSet,
  g: LoraGroup,
  input: ProjectionInput,
  rows: number,
  drop: LoraDropout | null,
): LoraGroupForward {
  const r = set.lora.r, nseg = g.modules.length, width = nseg * r, inF = g.inF;
  const dropping = !!drop && drop.p > 0;
  let u: Tensor, slices = 1;
  if (input.norm || (rows <= GEMV_MAX_ROWS && !dropping && inF % 4 === 0)) {
    // decode steps: one matrix-vector product over the stacked lora_A (no dropout at inference)
    if (dropping) throw new Error("LoRA dropout on a decode step");
    u = Tensor.empty(gpu, [rows, width], "f32", "lora_u");
    gemv(gpu, { x: input.x, w: g.a, M: rows, out: u, norm: input.norm });
  } else {
    const groupRows = dropping ? g.modules.map(() => rows) : [rows];
    slices = planMatmul(gpu, groupRows, dropping ? r : width, inF, true).split;
    u = Tensor.empty(gpu, [slices * rows, width], "f32", "lora_u");
    matmul(gpu, {
      a: input.x,
      w: g.a,
      M: rows,
      N: dropping ? r : width,
      K: inF,
      ldw: inF,
      out: u,
      ldc: width,
      ...(dropping
        ? {
          groups: g.modules.map((m, s) => ({
            m: rows,
            wOff: s * r * inF,
            colOffset: s * r,
            seed: loraDropoutSeed(drop!.seed, g.layer, m.module),
          })),
          dropout: { operand: "a" as const, p: drop!.p },
        }
        : {}),
      ...(slices > 1 ? { slices: { count: slices, stride: rows * width } } : {}),
    });
  }
  return {
    u,
    phase: {
      kind: "b",
      input: u,
      ld: width,
      slices,
      stride: rows * width,
      w: g.b,
      r,
      scale: set.scale,
      segments: g.modules.map((m) => ({ c0: m.c0, c1: m.c1, b0: m.b0, seed: 0 })),
      p: 0,
    },
  };
}
