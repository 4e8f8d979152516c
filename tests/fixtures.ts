// Test fixtures: a tiny random Qwen2 written by our safetensors writer, and the converted stories260K.

import { join } from "node:path";
import { atomicWriteJson } from "../lib/fsutil.ts";
import {
  encodeSafetensors,
  type SafeDType,
  SafetensorsFile,
  type TensorToWrite,
  toF32,
  writeSafetensors,
} from "../lib/safetensors.ts";
import { f32ToBf16, f32ToF16 } from "../lib/tensor.ts";
import { expectedTensors, parseConfig } from "../models/config.ts";
import { convertLlama2c } from "../models/llama2c.ts";
import { randn } from "./helpers.ts";
import type { Weights } from "./ref/model.ts";

export const SHARED = new URL("../../shared/", import.meta.url).pathname;
export const STORIES_SRC = join(SHARED, "models", "stories260K");
export const QWEN_TOKENIZER = join(SHARED, "models", "qwen3-tokenizer");

export const TINY_QWEN2_CONFIG = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  hidden_size: 48,
  intermediate_size: 72,
  num_hidden_layers: 2,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 101,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  hidden_act: "silu",
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: "bfloat16",
};

/** Random tensors for a config; norms around 1, matrices ~N(0, 0.3^2), biases ~N(0, 0.1^2). */
export function randomTensors(
  cfgRaw: Record<string, unknown>,
  dtype: SafeDType,
  seed = 1,
): Record<string, TensorToWrite> {
  const cfg = parseConfig(cfgRaw);
  const out: Record<string, TensorToWrite> = {};
  let i = 0;
  for (const [name, shape] of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = randn(n, seed * 1000 + i++, name.endsWith("bias") ? 0.1 : 0.3);
    if (name.includes("norm")) { for (let j = 0; j < n; j++) x[j] = 1 + x[j]; }
    out[name] = encodeAs(x, shape, dtype);
  }
  return out;
}

export function encodeAs(x: Float32Array, shape: number[], dtype: SafeDType): TensorToWrite {
  if (dtype === "F32") return { dtype, shape, data: x };
  const h = new Uint16Array(x.length);
  for (let j = 0; j < x.length; j++) h[j] = dtype === "BF16" ? f32ToBf16(x[j]) : f32ToF16(x[j]);
  return { dtype, shape, data: h };
}

export async function writeTinyQwen2(dir: string, dtype: SafeDType = "BF16", shards = 1): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const torch = { BF16: "bfloat16", F16: "float16", F32: "float32" }[dtype as string] ?? "float32";
  await atomicWriteJson(join(dir, "config.json"), { ...TINY_QWEN2_CONFIG, torch_dtype: torch });
  const tensors = randomTensors(TINY_QWEN2_CONFIG, dtype);
  if (shards === 1) {
    await writeSafetensors(join(dir, "model.safetensors"), tensors);
    return;
  }
  const names = Object.keys(tensors).sort();
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    const part: Record<string, TensorToWrite> = {};
    names.filter((_, i) => i % shards === s).forEach((n) => {
      part[n] = tensors[n];
      weightMap[n] = file;
    });
    await Deno.writeFile(join(dir, file), encodeSafetensors(part));
  }
  await atomicWriteJson(join(dir, "model.safetensors.index.json"), { metadata: {}, weight_map: weightMap });
}

/** All tensors of a safetensors file as f32 (bf16/f16 widened exactly). */
export async function readAllF32(path: string): Promise<Weights> {
  const f = await SafetensorsFile.open(path);
  const w: Weights = new Map();
  for (const [name, info] of f.tensors) w.set(name, toF32(await f.read(name), info.dtype, name));
  f.close();
  return w;
}

let storiesDir: Promise<string> | null = null;
/** stories260K converted once per test process. */
export function convertedStories(): Promise<string> {
  return storiesDir ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "stories260K-" });
    await convertLlama2c(join(STORIES_SRC, "stories260K.bin"), join(STORIES_SRC, "tok512.bin"), dir);
    return dir;
  })();
}

export const STORIES_GOLDEN_IDS =
  "403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352"
    .split(" ").map(Number);
export const STORIES_GOLDEN_TEXT =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, r";

/** stories260K with a plain-text chat template (its 512-token vocabulary has no chat markers). */
export async function storiesChat(): Promise<string> {
  const src = await convertedStories();
  const dir = await Deno.makeTempDir({ prefix: "stories-chat-" });
  for await (const e of Deno.readDir(src)) await Deno.copyFile(join(src, e.name), join(dir, e.name));
  const cfg = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer_config.json")));
  cfg.chat_template =
    "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n{% elif m.role == 'user' %}Q: {{ m.content }}\n" +
    "{% else %}A: {{ m.content }}</s>\n{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}";
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(cfg));
  return dir;
}

/** A small synthetic trait for stories260K ("sad") with a judge template. */
export async function sadTrait(): Promise<string> {
  const p = join(await Deno.makeTempDir(), "sad.json");
  await Deno.writeTextFile(
    p,
    JSON.stringify({
      instruction: [{ pos: "Tell sad stories.", neg: "Tell happy stories." }, {
        pos: "Everyone cries.",
        neg: "Everyone smiles.",
      }],
      questions: ["Tell me about Lily.", "What did Tom do?"],
      eval_prompt: "Is this sad? {question} {answer} Answer 0-100.",
    }),
  );
  return p;
}

export const SAD_RULES = { sad: { sad: 40, cried: 40, cry: 40, lost: 30, hurt: 30 } };
