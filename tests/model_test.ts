// End-to-end model tests: the stories260K golden, the tiny random Qwen2 against the f64 reference,
// sharded checkpoints, split bindings, padded batches, and generation with the KV cache.

import { join } from "node:path";
import assert from "node:assert/strict";
import { Gpu } from "../lib/gpu/context.ts";
import { hiddenStates } from "../research/activations.ts";
import { loadModel, type Model } from "../models/model.ts";
import { generate } from "../models/generate.ts";
import { refLogits } from "./ref/model.ts";
import { assertClose, gpuTest, testGpu } from "./helpers.ts";
import {
  convertedStories,
  readAllF32,
  STORIES_GOLDEN_IDS,
  STORIES_GOLDEN_TEXT,
  writeTinyQwen2,
} from "./fixtures.ts";

async function logitsOf(m: Model, ids: number[]): Promise<Float32Array> {
  const dec = m.decoder;
  const { normed } = dec.forward({ ids: Uint32Array.from(ids), batch: 1, t: ids.length });
  const l = dec.logits(normed, ids.map((_, i) => i));
  normed.dispose();
  const out = await l.read(dec.gpu);
  l.dispose();
  return out;
}

Deno.test({
  name: "stories260K (converted from llama2.c): greedy from BOS reproduces the 40 golden ids and text",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const res = await generate(m.decoder, [[1]], { maxNewTokens: 40 });
    assert.deepEqual(res.tokens[0], STORIES_GOLDEN_IDS);
    assert.equal(m.tokenizer!.decode(res.tokens[0]), STORIES_GOLDEN_TEXT);
  },
});

Deno.test({
  name: "stories260K logits match the f64 reference (atol 2e-4 + rtol 2e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await convertedStories();
    const m = await loadModel(gpu, dir);
    const ids = [1, ...STORIES_GOLDEN_IDS.slice(0, 12)];
    const want = refLogits(m.cfg, await readAllF32(join(dir, "model.safetensors")), ids);
    assertClose(await logitsOf(m, ids), want, { atol: 2e-4, rtol: 2e-4 }, "logits");
  },
});

Deno.test({
  name:
    "tiny random Qwen2 (qkv bias, untied, GQA 3, bf16 via our writer) matches the f64 reference (atol 1e-4 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "tiny-qwen2-" });
    await writeTinyQwen2(dir, "BF16");
    const m = await loadModel(gpu, dir, { tokenizer: false });
    assert.equal(m.decoder.w.layers[0].qkv.dtype, "bf16", "weights stay packed bf16 on the GPU");
    const ids = [5, 17, 99, 0, 42, 42, 7, 100, 3, 64, 2];
    const hidden: Float64Array[] = [];
    const want = refLogits(m.cfg, await readAllF32(join(dir, "model.safetensors")), ids, { hidden });
    assertClose(await logitsOf(m, ids), want, { atol: 1e-4, rtol: 1e-4 }, "logits");
    // hidden states l = 0..L are Hugging Face's hidden_states: row L after the final norm
    const hs = await hiddenStates(m, ids);
    assert.equal(hs.length, m.cfg.numLayers + 1);
    hs.forEach((h, l) => assertClose(h, hidden[l], { atol: 1e-4, rtol: 1e-4 }, `hidden_states[${l}]`));
  },
});

Deno.test({
  name:
    "sharded checkpoint, f16 storage and a forced 8 KiB binding limit give the same logits as the reference",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tiny-qwen2-sharded-" });
    await writeTinyQwen2(dir, "F16", 3);
    const small = await Gpu.create({ maxBindingBytes: 8192 });
    try {
      const m = await loadModel(small, dir, { tokenizer: false });
      assert.ok(m.decoder.w.embed.chunks.length > 1, "the embedding must be split across bindings");
      const ids = [3, 1, 4, 1, 5, 9, 2, 6];
      // reference from all shards
      const W = new Map();
      for (const e of Deno.readDirSync(dir)) {
        if (e.name.endsWith(".safetensors")) {
          for (const [k, v] of await readAllF32(join(dir, e.name))) W.set(k, v);
        }
      }
      assertClose(await logitsOf(m, ids), refLogits(m.cfg, W, ids), { atol: 1e-4, rtol: 1e-4 }, "logits");
    } finally {
      small.destroy();
    }
  },
});

Deno.test({
  // rtol: a lone sequence of <= 8 tokens takes the decode-step kernels, the batch the tile kernel (another
  // summation order); a padding leak would be orders of magnitude larger
  name: "a left-padded batch gives each sequence the logits it gets alone (atol 1e-5 + rtol 1e-5)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const a = [1, 403, 407, 261, 378, 432], b = [1, 376, 298];
    const T = a.length, kvStart = [0, T - b.length];
    const ids = new Uint32Array(2 * T);
    ids.set(a, 0);
    ids.set(b, T + kvStart[1]);
    const { normed } = m.decoder.forward({ ids, batch: 2, t: T, kvStart });
    const l = m.decoder.logits(normed, [T - 1, 2 * T - 1]);
    normed.dispose();
    const got = await l.read(gpu);
    const V = m.cfg.vocabSize;
    const alone = async (s: number[]) => (await logitsOf(m, s)).slice((s.length - 1) * V);
    assertClose(got.subarray(0, V), await alone(a), { atol: 1e-5, rtol: 1e-5 }, "seq a");
    assertClose(got.subarray(V), await alone(b), { atol: 1e-5, rtol: 1e-5 }, "seq b");
  },
});

Deno.test({
  name: "batched generation with prompts of unequal length equals one-by-one generation; sampling is seeded",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const prompts = [[1, 403, 407, 261], [1, 376], [1]];
    const batched = await generate(m.decoder, prompts, { maxNewTokens: 12 });
    for (let i = 0; i < prompts.length; i++) {
      const one = await generate(m.decoder, [prompts[i]], { maxNewTokens: 12 });
      assert.deepEqual(batched.tokens[i], one.tokens[0], `prompt ${i}`);
    }
    const s1 = await generate(m.decoder, [[1]], { maxNewTokens: 20, temperature: 1, topP: 0.9, seed: 7 });
    const s2 = await generate(m.decoder, [[1]], { maxNewTokens: 20, temperature: 1, topP: 0.9, seed: 7 });
    const s3 = await generate(m.decoder, [[1]], { maxNewTokens: 20, temperature: 1, topP: 0.9, seed: 8 });
    assert.deepEqual(s1.tokens, s2.tokens);
    assert.notDeepEqual(s1.tokens, s3.tokens);
    const stop = await generate(m.decoder, [[1]], { maxNewTokens: 40, stopIds: [STORIES_GOLDEN_IDS[5]] });
    assert.deepEqual(stop.tokens[0], STORIES_GOLDEN_IDS.slice(0, 6));
    assert.equal(stop.finish[0], "stop");
  },
});

Deno.test({
  name: "decode steps' fused products (norm, RoPE into the cache, SwiGLU, the LM head's argmax) give the " +
    "unfused path's logits (atol 1e-5 + rtol 1e-5) and tokens, on both workgroup layouts",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const ids = [1, 403, 407, 261, 378];
    const prompts = [[1, 403, 407], [1, 376]];
    for (const tiling of ["register", "workgroup"] as const) {
      gpu.matmulTiling = tiling;
      m.decoder.fuseDecode = true;
      const fused = await logitsOf(m, ids);
      const gFused = await generate(m.decoder, prompts, { maxNewTokens: 24 });
      m.decoder.fuseDecode = false;
      const plain = await logitsOf(m, ids);
      const gPlain = await generate(m.decoder, prompts, { maxNewTokens: 24 });
      m.decoder.fuseDecode = true;
      assertClose(fused, plain, { atol: 1e-5, rtol: 1e-5 }, `${tiling}: logits`);
      assert.deepEqual(gFused.tokens, gPlain.tokens, `${tiling}: greedy tokens`);
    }
    gpu.matmulTiling = gpu.caps.cpuAdapter ? "register" : "workgroup";
  },
});
