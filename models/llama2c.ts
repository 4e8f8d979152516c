// llama2.c checkpoint (+ tokenizer .bin) → a Hugging Face LlamaForCausalLM directory:
// config.json, model.safetensors (F32), tokenizer.json, tokenizer_config.json, generation_config.json.
//
// llama2.c rotates adjacent pairs in RoPE; HF rotates halves. Permuting the rows of wq and wk per
// head to [0, 2, 4, …, 1, 3, 5, …] makes the two equivalent (the same permutation as HF's own
// convert_llama_weights_to_hf.py).

import { join } from "node:path";
import { atomicWrite } from "../lib/fsutil.ts";
import { f32Tensor, SafetensorsFile, type TensorToWrite, writeSafetensors } from "../lib/safetensors.ts";

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
}

export function parseLlama2c(
  bytes: Uint8Array,
  path: string,
): { header: Llama2cHeader; tensors: Record<string, TensorToWrite> } {
  if (bytes.byteLength < 28) {
    throw new Error(`${path}: ${bytes.byteLength} bytes is too short for a llama2.c header (28 bytes)`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  h.forEach((v, i) => {
    if (i !== 5 && !(v > 0 && v < 1 << 20)) {
      throw new Error(`${path}: header field ${names[i]} = ${v} is not a plausible size`);
    }
  });
  if (dim % nHeads || nHeads % nKvHeads) {
    throw new Error(`${path}: dim ${dim}, n_heads ${nHeads}, n_kv_heads ${nKvHeads} are inconsistent`);
  }
  const shared = vocabRaw > 0, vocab = Math.abs(vocabRaw), hd = dim / nHeads, kvDim = nKvHeads * hd;
  const sizes: [string, number[]][] = [
    ["tok", [vocab, dim]],
    ["rms_att", [nLayers, dim]],
    ["wq", [nLayers, dim, dim]],
    ["wk", [nLayers, kvDim, dim]],
    ["wv", [nLayers, kvDim, dim]],
    ["wo", [nLayers, dim, dim]],
    ["rms_ffn", [nLayers, dim]],
    ["w1", [nLayers, hiddenDim, dim]],
    ["w2", [nLayers, dim, hiddenDim]],
    ["w3", [nLayers, hiddenDim, dim]],
    ["rms_final", [dim]],
    ["freq_real", [seqLen, hd / 2]],
    ["freq_imag", [seqLen, hd / 2]],
  ];
  if (!shared) sizes.push(["wcls", [vocab, dim]]);
  const total = 28 + sizes.reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1) * 4, 0);
  if (bytes.byteLength !== total) {
    throw new Error(
      `${path}: file is ${bytes.byteLength} bytes but its header implies ${total} (truncated or not llama2.c format)`,
    );
  }
  const all = new Float32Array(bytes.slice(28).buffer);
  const arr: Record<string, Float32Array> = {};
  let off = 0;
  for (const [n, s] of sizes) {
    const len = s.reduce((x, y) => x * y, 1);
    arr[n] = all.subarray(off, off + len);
    off += len;
  }
  const t: Record<string, TensorToWrite> = {};
  const layer = (a: Float32Array, l: number, rows: number, cols: number) =>
    a.slice(l * rows * cols, (l + 1) * rows * cols);
  t["model.embed_tokens.weight"] = f32Tensor(arr.tok.slice(), [vocab, dim]);
  t["model.norm.weight"] = f32Tensor(arr.rms_final.slice(), [dim]);
  if (!shared) t["lm_head.weight"] = f32Tensor(arr.wcls.slice(), [vocab, dim]);
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}.`;
    t[p + "input_layernorm.weight"] = f32Tensor(layer(arr.rms_att, l, 1, dim), [dim]);
    t[p + "post_attention_layernorm.weight"] = f32Tensor(layer(arr.rms_ffn, l, 1, dim), [dim]);
    t[p + "self_attn.q_proj.weight"] = f32Tensor(permuteRotary(layer(arr.wq, l, dim, dim), nHeads, hd, dim), [
      dim,
      dim,
    ]);
    t[p + "self_attn.k_proj.weight"] = f32Tensor(
      permuteRotary(layer(arr.wk, l, kvDim, dim), nKvHeads, hd, dim),
      [kvDim, dim],
    );
    t[p + "self_attn.v_proj.weight"] = f32Tensor(layer(arr.wv, l, kvDim, dim), [kvDim, dim]);
    t[p + "self_attn.o_proj.weight"] = f32Tensor(layer(arr.wo, l, dim, dim), [dim, dim]);
    t[p + "mlp.gate_proj.weight"] = f32Tensor(layer(arr.w1, l, hiddenDim, dim), [hiddenDim, dim]);
    t[p + "mlp.down_proj.weight"] = f32Tensor(layer(arr.w2, l, dim, hiddenDim), [dim, hiddenDim]);
    t[p + "mlp.up_proj.weight"] = f32Tensor(layer(arr.w3, l, hiddenDim, dim), [hiddenDim, dim]);
  }
  return {
    header: { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: vocab, seqLen, shared },
    tensors: t,
  };
}

/** Rows of each head reordered from interleaved pairs to halves: [0, 2, 4, …, 1, 3, 5, …]. */
export function permuteRotary(w: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headDim / 2; j++) {
      for (const a of [0, 1]) {
        const src = h * headDim + 2 * j + a, dst = h * headDim + a * (headDim / 2) + j;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

export interface Llama2cVocab {
  pieces: string[];
  scores: number[];
}

export function parseLlama2cTokenizer(bytes: Uint8Array, vocabSize: number, path: string): Llama2cVocab {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dec = new TextDecoder("utf-8", { fatal: false });
  const pieces: string[] = [], scores: number[] = [];
  let off = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (off + 8 > bytes.byteLength) {
      throw new Error(`${path}: ends after ${i} of ${vocabSize} tokens (truncated?)`);
    }
    scores.push(dv.getFloat32(off, true));
    const len = dv.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || off + len > bytes.byteLength) {
      throw new Error(`${path}: token ${i} has an invalid length ${len}`);
    }
    pieces.push(dec.decode(bytes.subarray(off, off + len)));
    off += len;
  }
  return { pieces, scores };
}

/**
 * An HF tokenizer.json equivalent to run.c's encoder: SentencePiece-style BPE with byte fallback,
 * a "▁" dummy prefix, and merges ordered by piece score (run.c merges the best-scoring pair first).
 */
export function buildTokenizerJson(v: Llama2cVocab): Record<string, unknown> {
  const SP = "\u2581";
  const special: Record<number, string> = { 0: "<unk>", 1: "<s>", 2: "</s>" };
  const vocab: Record<string, number> = {};
  const piece = (i: number) => special[i] ?? v.pieces[i].replaceAll(" ", SP);
  for (let i = 0; i < v.pieces.length; i++) vocab[piece(i)] = i;
  const merged: { p: string; score: number; id: number }[] = [];
  for (let i = 3; i < v.pieces.length; i++) {
    const p = piece(i);
    if (/^<0x[0-9A-F]{2}>$/.test(p) || [...p].length < 2) continue;
    merged.push({ p, score: v.scores[i], id: i });
  }
  merged.sort((a, b) => b.score - a.score || a.id - b.id);
  const merges: string[] = [];
  for (const { p } of merged) {
    const cps = [...p];
    for (let k = 1; k < cps.length; k++) {
      const a = cps.slice(0, k).join(""), b = cps.slice(k).join("");
      if (a in vocab && b in vocab) merges.push(`${a} ${b}`);
    }
  }
  const added = [0, 1, 2].map((id) => ({
    id,
    content: special[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: SP }, {
        type: "Replace",
        pattern: { String: " " },
        content: SP,
      }],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SP }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

export async function convertLlama2c(
  modelPath: string,
  tokPath: string,
  outDir: string,
  o: { reuse?: boolean } = {},
): Promise<Llama2cHeader> {
  const read = async (p: string) => {
    try {
      return await Deno.readFile(p);
    } catch (e) {
      throw new Error(`${p}: cannot read: ${(e as Error).message}`);
    }
  };
  const { header, tensors } = parseLlama2c(await read(modelPath), modelPath);
  const vocab = parseLlama2cTokenizer(await read(tokPath), header.vocabSize, tokPath);
  const json: Record<string, unknown> = {
    "config.json": {
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_size: header.dim,
      intermediate_size: header.hiddenDim,
      num_hidden_layers: header.nLayers,
      num_attention_heads: header.nHeads,
      num_key_value_heads: header.nKvHeads,
      vocab_size: header.vocabSize,
      max_position_embeddings: header.seqLen,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      hidden_act: "silu",
      tie_word_embeddings: header.shared,
      attention_bias: false,
      bos_token_id: 1,
      eos_token_id: 2,
      torch_dtype: "float32",
    },
    "tokenizer.json": buildTokenizerJson(vocab),
    "tokenizer_config.json": {
      tokenizer_class: "LlamaTokenizerFast",
      bos_token: "<s>",
      eos_token: "</s>",
      unk_token: "<unk>",
      add_bos_token: true,
      add_eos_token: false,
      model_max_length: header.seqLen,
    },
    // run.c stops when it samples BOS; HF models stop on eos.
    "generation_config.json": { bos_token_id: 1, eos_token_id: [2, 1] },
  };
  const text = (v: unknown) => JSON.stringify(v, null, 1) + "\n";
  let present: string[] = [];
  try {
    present = [...Deno.readDirSync(outDir)].map((e) => e.name).sort();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (present.length) {
    // an earlier conversion of the same checkpoint may be reused (the main job run twice); anything else in
    // the folder (a run, a hand-added chat_template) is never written over
    const same = o.reuse && present.join() === ["model.safetensors", ...Object.keys(json)].sort().join() &&
      Object.entries(json).every(([f, v]) => {
        try {
          return Deno.readTextFileSync(join(outDir, f)) === text(v);
        } catch {
          return false;
        }
      });
    if (same) {
      const f = await SafetensorsFile.open(join(outDir, "model.safetensors")).catch(() => null);
      const ok = f !== null && f.metadata?.source === "llama2.c" &&
        Object.entries(tensors).every(([n, t]) =>
          f.tensors.has(n) && f.info(n).shape.join() === t.shape.join()
        );
      f?.close();
      if (ok) return header;
    }
    throw new Error(
      `${outDir}: exists and is not empty${
        o.reuse ? " (and is not this checkpoint's earlier conversion)" : ""
      }; choose a new folder for the converted model`,
    );
  }
  await Deno.mkdir(outDir, { recursive: true });
  await writeSafetensors(join(outDir, "model.safetensors"), tensors, { format: "pt", source: "llama2.c" });
  for (const [f, v] of Object.entries(json)) await atomicWrite(join(outDir, f), text(v));
  return header;
}
