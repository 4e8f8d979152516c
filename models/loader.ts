// Load a Hugging Face model directory: config.json, model.safetensors or a sharded
// model.safetensors.index.json. Weights stay in their storage dtype on the GPU (bf16/f16 packed);
// q|k|v and gate|up are fused row-wise at load so a layer needs two fewer matmul dispatches.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { exists, readJson } from "../lib/fsutil.ts";
import {
  firstNonFinite,
  type SafeDType,
  SafetensorsFile,
  type TensorInfo,
  toF32,
} from "../lib/safetensors.ts";
import { type DType, f32ToBf16, f32ToF16, Tensor } from "../lib/tensor.ts";
import { type MergeAdapter, mergedWeight } from "./lora_merge.ts";
import { expectedTensors, type ModelConfig, parseConfig } from "./config.ts";

export interface LayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  /** [(H + 2 HKV) * D, d]: rows of q_proj, then k_proj, then v_proj */
  qkv: Tensor;
  qkvBias: Tensor | null;
  o: Tensor;
  /** [2 I, d]: rows of gate_proj, then up_proj */
  gateUp: Tensor;
  down: Tensor;
}

export interface ModelWeights {
  embed: Tensor;
  /** the same Tensor as embed when embeddings are tied */
  lmHead: Tensor;
  finalNorm: Tensor;
  layers: LayerWeights[];
}

export interface LoadOptions {
  /** Store matrices as f32 regardless of the file's dtype. */
  forceF32?: boolean;
  /** Merge this adapter into the matrices as they load (models/lora_merge.ts). */
  merge?: MergeAdapter;
}

/** Opens all shards of a checkpoint and maps tensor names to their file. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly files: SafetensorsFile[],
    readonly where: Map<string, SafetensorsFile>,
  ) {}

  static async open(dir: string): Promise<Checkpoint> {
    const single = join(dir, "model.safetensors"), index = join(dir, "model.safetensors.index.json");
    let names: string[];
    if (await exists(index)) {
      const idx = await readJson(index, "safetensors index");
      const map = idx.weight_map as Record<string, string> | undefined;
      if (!map || typeof map !== "object") {
        throw new Error(`${index}: field 'weight_map' missing or not an object`);
      }
      names = [...new Set(Object.values(map))];
      for (const n of names) {
        // shard names are files in this folder: nothing the index says may read elsewhere
        if (
          typeof n !== "string" || !n || n.startsWith("/") ||
          n.split(/[\\/]/).some((p) => p === ".." || p === "")
        ) {
          throw new Error(`${index}: weight_map names ${JSON.stringify(n)}; expected a file inside ${dir}`);
        }
      }
    } else if (await exists(single)) {
      names = ["model.safetensors"];
    } else {
      throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json found`);
    }
    const files: SafetensorsFile[] = [];
    const where = new Map<string, SafetensorsFile>();
    for (const n of names) {
      const f = await SafetensorsFile.open(join(dir, n));
      files.push(f);
      for (const t of f.tensors.keys()) where.set(t, f);
    }
    return new Checkpoint(dir, files, where);
  }

  info(name: string): TensorInfo & { file: SafetensorsFile } {
    const f = this.where.get(name);
    if (!f) throw new Error(`${this.dir}: tensor '${name}' is missing from the checkpoint`);
    return { ...f.info(name), file: f };
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

export async function loadConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, "config.json");
  return parseConfig(await readJson(path, "model config"), path);
}

const STORAGE: Partial<Record<SafeDType, DType>> = { F32: "f32", BF16: "bf16", F16: "f16" };

/** Tensors a checkpoint may carry that the model does not use. */
const IGNORABLE = [/\.rotary_emb\.inv_freq$/];

/**
 * Check names, shapes and dtypes of every tensor the config implies, and that the checkpoint has no
 * others: a tensor nobody reads is a config that does not match the checkpoint (fewer layers than it has)
 * or an architecture feature this engine lacks (e.g. Qwen3's q_norm) — either way wrong logits if ignored.
 */
export function validateCheckpoint(ck: Checkpoint, cfg: ModelConfig): void {
  // the layer count against the files first: a huge num_hidden_layers must not build anything
  let fileLayers = 0;
  for (const n of ck.where.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    if (m) fileLayers = Math.max(fileLayers, +m[1] + 1);
  }
  if (cfg.numLayers > fileLayers) {
    throw new Error(
      `${ck.dir}: config.json says num_hidden_layers = ${cfg.numLayers}, but the checkpoint has ${fileLayers} layers`,
    );
  }
  const expected = expectedTensors(cfg);
  const known = new Set(expected.keys());
  if (cfg.tieWordEmbeddings) known.add("lm_head.weight"); // some tied checkpoints still ship it
  const extra = [...ck.where.keys()].filter((n) => !known.has(n) && !IGNORABLE.some((r) => r.test(n))).sort();
  const deeper = extra.map((n) => /^model\.layers\.(\d+)\./.exec(n)).filter((m) =>
    m && +m[1] >= cfg.numLayers
  );
  if (deeper.length) {
    const top = Math.max(...deeper.map((m) => +m![1]));
    throw new Error(
      `${ck.dir}: the checkpoint has layers up to ${top}, but config.json says num_hidden_layers = ${cfg.numLayers}`,
    );
  }
  if (extra.length) {
    throw new Error(
      `${ck.dir}: ${extra.length} tensor(s) the model does not use: ${extra.slice(0, 5).join(", ")}${
        extra.length > 5 ? ", …" : ""
      } (a different architecture, or a config.json that does not match?)`,
    );
  }
  // bf16 and f16 have the same size, so a header that relabels one as the other reads as a valid file with
  // other numbers: a checkpoint holds one half-precision kind, the one config.json names when it names one
  const halves = new Map<string, string>();
  for (const [name] of expected) {
    const t = ck.info(name);
    if (t.dtype === "BF16" || t.dtype === "F16") halves.set(t.dtype, halves.get(t.dtype) ?? name);
  }
  if (halves.size > 1) {
    throw new Error(
      `${ck.dir}: the checkpoint mixes BF16 ('${halves.get("BF16")}') and F16 ('${
        halves.get("F16")
      }') tensors`,
    );
  }
  const declared = { bfloat16: "BF16", float16: "F16" }[String(cfg.torchDtype)];
  const half = [...halves.keys()][0];
  if (declared && half && half !== declared) {
    throw new Error(
      `${ck.dir}: tensors such as '${
        halves.get(half)
      }' are ${half}, but config.json says dtype ${cfg.torchDtype}`,
    );
  }
  for (const [name, shape] of expected) {
    const t = ck.info(name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(
        `${t.file.path}: tensor '${name}' has shape [${t.shape}], but config.json implies [${shape}]`,
      );
    }
    if (!STORAGE[t.dtype]) {
      throw new Error(`${t.file.path}: tensor '${name}' has dtype ${t.dtype}; expected F32, F16 or BF16`);
    }
  }
}

export async function loadWeights(
  gpu: Gpu,
  ck: Checkpoint,
  cfg: ModelConfig,
  opts: LoadOptions = {},
): Promise<ModelWeights> {
  validateCheckpoint(ck, cfg);
  // a NaN or Inf weight would give non-finite logits (or a run of token 0) without a word
  const finite = (raw: Uint8Array, t: TensorInfo & { file: SafetensorsFile }) => {
    const i = firstNonFinite(raw, t.dtype);
    if (i >= 0) {
      throw new Error(
        `${t.file.path}: tensor '${t.name}' has a non-finite value (NaN or Inf) at element ${i}`,
      );
    }
    return raw;
  };
  const vec = async (name: string) => {
    const t = ck.info(name);
    return Tensor.fromF32(gpu, toF32(finite(await t.file.read(name), t), t.dtype, name), [t.shape[0]], name);
  };
  /** Row-concatenation of matrices, kept in their common storage dtype (f32 if they differ). */
  const matrix = async (names: string[], label: string) => {
    const infos = names.map((n) => ck.info(n));
    const same = infos.every((i) => i.dtype === infos[0].dtype);
    const dtype: DType = opts.forceF32 || !same ? "f32" : STORAGE[infos[0].dtype]!;
    const cols = infos[0].shape[1];
    const rows = infos.reduce((a, i) => a + i.shape[0], 0);
    const parts: Uint8Array[] = [];
    for (const i of infos) {
      const raw = finite(await i.file.read(i.name), i);
      const delta = opts.merge?.modules.get(i.name);
      if (delta) {
        const w = await mergedWeight(gpu, toF32(raw, i.dtype, i.name), delta, opts.merge!.scale);
        const bad = w.findIndex((x) => !Number.isFinite(x));
        if (bad >= 0) {
          throw new Error(
            `${opts.merge!.dir}: merging into '${i.name}' gives a non-finite value at element ${bad}`,
          );
        }
        parts.push(encodeAs(w, dtype));
        continue;
      }
      parts.push(
        dtype === "f32" && i.dtype !== "F32" ? new Uint8Array(toF32(raw, i.dtype, i.name).buffer) : raw,
      );
    }
    const all = parts.length === 1 ? parts[0] : concat(parts);
    const rowBytes = all.byteLength / rows;
    const t = Tensor.uploadRows(
      gpu,
      [rows, cols],
      dtype,
      label,
      (r0, r1) => all.subarray(r0 * rowBytes, r1 * rowBytes),
    );
    await gpu.settleUploads(); // no second copy of the model in staging memory
    return t;
  };
  const embed = await matrix(["model.embed_tokens.weight"], "embed_tokens");
  const lmHead = cfg.tieWordEmbeddings ? embed : await matrix(["lm_head.weight"], "lm_head");
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    let qkvBias: Tensor | null = null;
    if (cfg.qkvBias) {
      const parts = await Promise.all(["q", "k", "v"].map(async (x) => {
        const n = `${p}self_attn.${x}_proj.bias`, t = ck.info(n);
        return toF32(finite(await t.file.read(n), t), t.dtype, n);
      }));
      const b = new Float32Array(parts.reduce((a, x) => a + x.length, 0));
      let o = 0;
      for (const x of parts) b.set(x, (o += x.length) - x.length);
      qkvBias = Tensor.fromF32(gpu, b, [b.length], `${p}qkv_bias`);
    }
    layers.push({
      inputNorm: await vec(p + "input_layernorm.weight"),
      postNorm: await vec(p + "post_attention_layernorm.weight"),
      qkv: await matrix([
        `${p}self_attn.q_proj.weight`,
        `${p}self_attn.k_proj.weight`,
        `${p}self_attn.v_proj.weight`,
      ], `${p}qkv`),
      qkvBias,
      o: await matrix([`${p}self_attn.o_proj.weight`], `${p}o_proj`),
      gateUp: await matrix([`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], `${p}gate_up`),
      down: await matrix([`${p}mlp.down_proj.weight`], `${p}down_proj`),
    });
  }
  return { embed, lmHead, finalNorm: await vec("model.norm.weight"), layers };
}

/** f32 values as the bytes of a storage dtype (round to nearest even). */
function encodeAs(w: Float32Array, dtype: DType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  const bits = Uint16Array.from(w, dtype === "bf16" ? f32ToBf16 : f32ToF16);
  return new Uint8Array(bits.buffer);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}
