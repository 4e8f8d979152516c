// Random-weight models in the Hugging Face Hub layout, of the shapes of real checkpoints, for
// benchmarks and tests without downloads: config.json as the Hub ships it, sharded safetensors
// with model.safetensors.index.json, and tokenizer files from a tokenizer folder.
//
// Weights are uniform with the std of the Hub's initializer (0.02), norms are 1, each tensor drawn
// from its own stream (seed, tensor name), so a model is the same whichever shard order or layer
// cut. Shards are streamed to disk a block at a time: a 7B model never sits in memory.

import { basename, join } from "node:path";
import { exists } from "../lib/fsutil.ts";
import { expectedTensors, parseConfig } from "./config.ts";

/** config.json of each preset, as its Hub repository ships it (the Instruct variants for Qwen). */
export const PRESETS: Record<string, Record<string, unknown>> = {
  "qwen2.5-0.5b": {
    architectures: ["Qwen2ForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    hidden_act: "silu",
    hidden_size: 896,
    initializer_range: 0.02,
    intermediate_size: 4864,
    max_position_embeddings: 32768,
    max_window_layers: 21,
    model_type: "qwen2",
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.43.1",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 151936,
  },
  "qwen2.5-7b": {
    architectures: ["Qwen2ForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    hidden_act: "silu",
    hidden_size: 3584,
    initializer_range: 0.02,
    intermediate_size: 18944,
    max_position_embeddings: 32768,
    max_window_layers: 28,
    model_type: "qwen2",
    num_attention_heads: 28,
    num_hidden_layers: 28,
    num_key_value_heads: 4,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 131072,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.43.1",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 152064,
  },
  "llama-3.2-1b": {
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 64,
    hidden_act: "silu",
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 8192,
    max_position_embeddings: 131072,
    mlp_bias: false,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 16,
    num_key_value_heads: 8,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: {
      factor: 32.0,
      high_freq_factor: 4.0,
      low_freq_factor: 1.0,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.45.0.dev0",
    use_cache: true,
    vocab_size: 128256,
  },
};

export type RandomDType = "bf16" | "f16" | "f32";
const SAFE_DTYPE = { bf16: "BF16", f16: "F16", f32: "F32" } as const;
const BYTES = { bf16: 2, f16: 2, f32: 4 } as const;

export interface RandomModelOptions {
  like: string;
  dtype: RandomDType;
  out: string;
  /** keep only the first N decoder layers (e.g. a 2-layer model of 0.5B shape for CPU adapters) */
  layers?: number;
  seed?: number;
  /** largest shard in bytes (default 2 GiB) */
  shardBytes?: number;
  /** a folder with tokenizer.json and tokenizer_config.json */
  tokenizer: string;
}

export interface RandomModelSummary {
  out: string;
  parameters: number;
  bytes: number;
  shards: number;
  notes: string[];
}

/** The config.json a preset gets (layer cut and vocabulary applied). */
export function presetConfig(like: string, layers?: number, vocabSize?: number): Record<string, unknown> {
  const p = PRESETS[like];
  if (!p) throw new Error(`--like: unknown model '${like}' (known: ${Object.keys(PRESETS).join(", ")})`);
  const cfg = structuredClone(p);
  if (layers !== undefined) {
    const n = cfg.num_hidden_layers as number;
    if (!Number.isInteger(layers) || layers < 1 || layers > n) {
      throw new Error(`--layers: expected an integer from 1 to ${n} for ${like}, got ${layers}`);
    }
    cfg.num_hidden_layers = layers;
    if (typeof cfg.max_window_layers === "number") {
      cfg.max_window_layers = Math.min(layers, cfg.max_window_layers);
    }
  }
  if (vocabSize !== undefined) cfg.vocab_size = vocabSize;
  return cfg;
}

/** Number of ids a tokenizer.json can produce (regular vocabulary and added tokens). */
async function tokenizerSize(dir: string): Promise<number> {
  const path = join(dir, "tokenizer.json");
  let tj: { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number }[] };
  try {
    tj = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`--tokenizer: ${path} cannot be read as JSON: ${(e as Error).message}`);
  }
  let max = -1;
  for (const id of Object.values(tj.model?.vocab ?? {})) max = Math.max(max, id);
  for (const t of tj.added_tokens ?? []) max = Math.max(max, t.id);
  if (max < 0) throw new Error(`${path}: field 'model.vocab' has no tokens`);
  return max + 1;
}

/** Write a random-weight model; refuses an existing non-empty `out`. */
export async function writeRandomModel(o: RandomModelOptions): Promise<RandomModelSummary> {
  if (!(o.dtype in SAFE_DTYPE)) throw new Error(`--dtype: expected bf16, f16 or f32, got '${o.dtype}'`);
  if (await exists(o.out)) {
    const entries = [...Deno.readDirSync(o.out)];
    if (entries.length) throw new Error(`--out: ${o.out} exists and is not empty; choose a new folder`);
  }
  const notes: string[] = [];
  const tokIds = await tokenizerSize(o.tokenizer);
  let vocab = (PRESETS[o.like]?.vocab_size as number | undefined) ?? 0;
  if (PRESETS[o.like] && tokIds > vocab) {
    // e.g. Llama 3 shapes with the Qwen tokenizer (no Llama 3 tokenizer ships here): widen the
    // vocabulary so that every id the tokenizer produces has an embedding row.
    notes.push(
      `vocab_size raised from ${vocab} to ${
        roundUp(tokIds, 64)
      } to cover the ${tokIds} ids of ${o.tokenizer}`,
    );
    vocab = roundUp(tokIds, 64);
  }
  const raw = presetConfig(o.like, o.layers, vocab);
  raw.torch_dtype = { bf16: "bfloat16", f16: "float16", f32: "float32" }[o.dtype];
  const cfg = parseConfig(raw, `${o.like} preset`);
  const tensors = [...expectedTensors(cfg)];
  const seed = o.seed ?? 0;
  const shardBytes = o.shardBytes ?? 2 ** 31;
  // shards in the Hub's order (embeddings, layers, final norm, head), each under shardBytes
  const shards: [string, number[]][][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const b = t[1].reduce((a, x) => a * x, 1) * BYTES[o.dtype];
    if (size > 0 && size + b > shardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += b;
  }

  const tmp = `${o.out.replace(/\/+$/, "")}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const weightMap: Record<string, string> = {};
    let total = 0, params = 0;
    for (let s = 0; s < shards.length; s++) {
      const file = `model-${pad5(s + 1)}-of-${pad5(shards.length)}.safetensors`;
      for (const [name, shape] of shards[s]) {
        weightMap[name] = file;
        params += shape.reduce((a, x) => a * x, 1);
      }
      total += await writeShard(join(tmp, file), shards[s], o.dtype, seed);
    }
    const index = { metadata: { total_size: total }, weight_map: sortKeys(weightMap) };
    await Deno.writeTextFile(
      join(tmp, "model.safetensors.index.json"),
      JSON.stringify(index, null, 2) + "\n",
    );
    await Deno.writeTextFile(join(tmp, "config.json"), JSON.stringify(raw, null, 2) + "\n");
    const eos = raw.eos_token_id as number;
    const gen = {
      bos_token_id: raw.bos_token_id,
      eos_token_id: eos,
      transformers_version: raw.transformers_version,
    };
    await Deno.writeTextFile(join(tmp, "generation_config.json"), JSON.stringify(gen, null, 2) + "\n");
    for (const f of ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]) {
      const src = join(o.tokenizer, f);
      if (await exists(src)) {
        await Deno.copyFile(src, join(tmp, f));
        await Deno.chmod(join(tmp, f), 0o644);
      } else if (f.startsWith("tokenizer")) throw new Error(`--tokenizer: ${src} is missing`);
    }
    await Deno.writeTextFile(
      join(tmp, "README.md"),
      `# Random weights of ${o.like} shape\n\nMade by \`deno task model:random --like ${o.like} --dtype ${o.dtype}` +
        `${
          o.layers ? ` --layers ${o.layers}` : ""
        } --seed ${seed}\`: uniform weights with std 0.02, norms 1. ` +
        `Not a trained model: for benchmarks and tests only. Tokenizer from \`${basename(o.tokenizer)}\`.` +
        (notes.length ? `\n\n${notes.map((n) => `- ${n}`).join("\n")}` : "") + "\n",
    );
    if (await exists(o.out)) await Deno.remove(o.out);
    await Deno.rename(tmp, o.out);
    return { out: o.out, parameters: params, bytes: total, shards: shards.length, notes };
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

async function writeShard(path: string, tensors: [string, number[]][], dtype: RandomDType, seed: number) {
  const sorted = [...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let off = 0;
  for (const [name, shape] of sorted) {
    const bytes = shape.reduce((a, x) => a * x, 1) * BYTES[dtype];
    header[name] = { dtype: SAFE_DTYPE[dtype], shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // 8-byte aligned data, as the reference writer does
  const hjson = new TextEncoder().encode(json);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(hjson.length), true);
    await writeAll(f, len);
    await writeAll(f, hjson);
    for (const [name, shape] of sorted) {
      const n = shape.reduce((a, x) => a * x, 1);
      const norm = name.endsWith("norm.weight");
      const stream = new Xorshift(hashName(seed, name));
      const BLOCK = 1 << 22;
      for (let i = 0; i < n; i += BLOCK) {
        const m = Math.min(BLOCK, n - i);
        await writeAll(f, norm ? ones(m, dtype) : stream.fill(m, dtype));
      }
    }
  } finally {
    f.close();
  }
  return off;
}

async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let p = 0; p < data.length;) p += await f.write(data.subarray(p));
}

/** Uniform values with std 0.02 (half-width 0.02·√3), in the storage dtype. */
class Xorshift {
  private f = new Float32Array(1);
  private u = new Uint32Array(this.f.buffer);
  constructor(private x: number) {
    this.x = x >>> 0 || 0x9e3779b9;
  }
  fill(n: number, dtype: RandomDType): Uint8Array {
    const half = 0.02 * Math.sqrt(3);
    const f = this.f, u = this.u;
    let x = this.x;
    if (dtype === "f32") {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        out[i] = ((x >>> 0) * 2.3283064365386963e-10 * 2 - 1) * half;
      }
      this.x = x;
      return new Uint8Array(out.buffer);
    }
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      f[0] = ((x >>> 0) * 2.3283064365386963e-10 * 2 - 1) * half;
      out[i] = dtype === "bf16" ? ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) : f16bits(u[0]);
    }
    this.x = x;
    return new Uint8Array(out.buffer);
  }
}

function ones(n: number, dtype: RandomDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(new Float32Array(n).fill(1).buffer);
  return new Uint8Array(new Uint16Array(n).fill(dtype === "bf16" ? 0x3f80 : 0x3c00).buffer);
}

/** f16 bits of an f32 given by its bits, rounded to nearest even (subnormals flush to zero). */
function f16bits(b: number): number {
  const s = (b >>> 16) & 0x8000, e = ((b >>> 23) & 0xff) - 112, m = b & 0x7fffff;
  if (e <= 0) return s;
  if (e >= 31) return s | 0x7c00;
  const h = s | (e << 10) | (m >>> 13), rest = m & 0x1fff;
  return rest > 0x1000 || (rest === 0x1000 && (h & 1)) ? h + 1 : h;
}

function hashName(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function pad5(n: number): string {
  return String(n).padStart(5, "0");
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
