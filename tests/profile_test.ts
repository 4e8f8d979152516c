// The profiler (INOCULUM_PROFILE=1) and random-weight models of real shapes (model:random).

import { join } from "node:path";
import assert from "node:assert/strict";
import { Gpu } from "../lib/gpu/context.ts";
import { Profiler } from "../lib/gpu/profile.ts";
import { Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { loadModel } from "../models/model.ts";
import { presetConfig, writeRandomModel } from "../models/random.ts";
import { DECODE_CHUNK, generate } from "../models/generate.ts";
import { parseConfig } from "../models/config.ts";
import { convertedStories, QWEN_TOKENIZER, readAllF32 } from "./fixtures.ts";
import { assertClose, cli, gpuTest, randn } from "./helpers.ts";
import { refLogits } from "./ref/model.ts";

Deno.test({
  name: "profiler: every dispatch is counted and timed; GPU time fits inside the submit waits",
  ...gpuTest,
  fn: async () => {
    const profiler = new Profiler();
    const gpu = await Gpu.create({ profiler });
    try {
      assert.ok(gpu.caps.timestamps, "the software adapters offer timestamp-query");
      const m = await loadModel(gpu, await convertedStories(), { tokenizer: false });
      // a forward pass to logits and some matmuls heavy enough that GPU time dominates the waits
      const ids = Uint32Array.from({ length: 64 }, (_, i) => (i * 7) % 500);
      const { normed } = m.decoder.forward({ ids, batch: 1, t: 64 });
      const logits = m.decoder.logits(normed, [63]);
      normed.dispose();
      await logits.read(gpu);
      logits.dispose();
      const x = Tensor.fromF32(gpu, randn(256 * 256, 1), [256, 256]);
      const w = Tensor.fromF32(gpu, randn(256 * 256, 2), [256, 256]);
      const y = Tensor.empty(gpu, [256, 256]);
      for (let i = 0; i < 20; i++) linear(gpu, x, w, y);
      await gpu.finish();
      const stats = [...profiler.kernels.entries()];
      const counted = stats.reduce((n, [, s]) => n + s.dispatches, 0);
      assert.equal(counted, gpu.dispatchCount, "every dispatch is in the table");
      for (const [name, s] of stats) {
        assert.equal(s.timed, s.dispatches, `${name}: every dispatch got its GPU time`);
        assert.ok(s.gpuNs > 0, `${name}: GPU time > 0`);
      }
      for (
        const k of ["matmul:", "attention:forward", "rmsnorm:forward", "embedding:forward", "swiglu:forward"]
      ) {
        assert.ok(stats.some(([n]) => n.startsWith(k)), `${k} listed`);
      }
      const mm = stats.find(([n]) => n.startsWith("matmul:"))![1];
      assert.ok(mm.flops > 0 && mm.bytes > 0, "matmul states its FLOPs and bytes");
      // the GPU cannot be busy longer than the host waited for it (plus what ran before an await)
      const gpuMs = profiler.gpuMs(), waitMs = profiler.wall.waitMs;
      assert.ok(gpuMs <= waitMs * 1.1 + 5, `GPU time ${gpuMs} ms must fit inside the waits (${waitMs} ms)`);
      assert.ok(
        gpuMs >= 0.2 * waitMs,
        `GPU time ${gpuMs} ms is most of the waits (${waitMs} ms) on this workload`,
      );
      assert.ok(profiler.wall.loadMs > 0 && profiler.wall.readbacks >= 1 && profiler.wall.compiles >= 5);
      const report = profiler.report();
      for (const [name] of stats) assert.ok(report.includes(name.slice(0, 60)), `report lists ${name}`);
      assert.match(report, /waiting for the GPU/);
      x.dispose();
      w.dispose();
      y.dispose();
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name:
    "greedy generation reads back once per DECODE_CHUNK tokens, not once per token, and stops where the host would",
  ...gpuTest,
  fn: async () => {
    const profiler = new Profiler();
    const gpu = await Gpu.create({ profiler });
    try {
      const m = await loadModel(gpu, await convertedStories(), { tokenizer: false });
      const before = profiler.wall.readbacks;
      const g = await generate(m.decoder, [[1], [1, 403]], { maxNewTokens: 40 });
      assert.equal(profiler.wall.readbacks - before, Math.ceil(40 / DECODE_CHUNK));
      assert.deepEqual(g.tokens.map((t) => t.length), [40, 40]);
      // a stop token mid-chunk ends that row there; the other row goes on
      const stopAt = g.tokens[0][20];
      const s = await generate(m.decoder, [[1], [1, 403]], { maxNewTokens: 40, stopIds: [stopAt] });
      assert.deepEqual(s.tokens[0], g.tokens[0].slice(0, g.tokens[0].indexOf(stopAt) + 1));
      assert.equal(s.finish[0], "stop");
      const other = g.tokens[1].indexOf(stopAt);
      assert.deepEqual(s.tokens[1], other < 0 ? g.tokens[1] : g.tokens[1].slice(0, other + 1));
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "INOCULUM_PROFILE=1 prints the kernel table and the wall-time breakdown at exit",
  ...gpuTest,
  fn: async () => {
    const dir = await convertedStories();
    const r = await cli(["generate", "--model", dir, "--prompt", "Once", "--max-new-tokens", "4"], {
      INOCULUM_PROFILE: "1",
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /inoculum profile — \d+ dispatches, \d+ kernel variants, GPU time/);
    assert.match(r.stderr, /^gemv:\S+\s+\d+\s+[\d.]+\s+[\d.]+%/m); // a short prompt and decoding: the fused products
    assert.match(r.stderr, /^attention:forward\{DPT=1,HEAD_DIM=8\}/m);
    assert.match(r.stderr, /model load [\d.]+ ms/);
    assert.match(r.stderr, /readbacks \d+ \(/);
    // the largest GPU time comes last (what a `tail` of a log shows)
    const rows = [...r.stderr.matchAll(/^\S+:\S+\s+\d+\s+([\d.]+)\s+[\d.]+%/gm)].map((m) => Number(m[1]));
    assert.ok(rows.length >= 5, r.stderr);
    assert.deepEqual(rows, [...rows].sort((a, b) => a - b));
    const off = await cli(["generate", "--model", dir, "--prompt", "Once", "--max-new-tokens", "2"]);
    assert.equal(off.code, 0, off.stderr);
    assert.ok(!off.stderr.includes("inoculum profile"), "silent without INOCULUM_PROFILE");
  },
});

Deno.test("model:random presets are the Hub's shapes; a layer cut and the tokenizer's vocabulary are applied", () => {
  const q7 = parseConfig(presetConfig("qwen2.5-7b"));
  assert.deepEqual(
    [q7.hiddenSize, q7.intermediateSize, q7.numLayers, q7.numHeads, q7.numKvHeads, q7.vocabSize, q7.qkvBias],
    [3584, 18944, 28, 28, 4, 152064, true],
  );
  const l1 = parseConfig(presetConfig("llama-3.2-1b", 2, 151936));
  assert.deepEqual([l1.numLayers, l1.headDim, l1.vocabSize, l1.qkvBias, l1.tieWordEmbeddings], [
    2,
    64,
    151936,
    false,
    true,
  ]);
  assert.equal(l1.ropeScaling?.rope_type, "llama3");
  assert.throws(() => presetConfig("gpt-2"), /--like: unknown model 'gpt-2'/);
  assert.throws(() => presetConfig("qwen2.5-0.5b", 25), /--layers: expected an integer from 1 to 24/);
});

Deno.test({
  name:
    "model:random writes a sharded Hub folder that loads and matches the f64 reference (atol 1e-4 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const base = await Deno.makeTempDir({ prefix: "random-model-" });
    const out = join(base, "q05");
    const r = await cli([
      "model:random",
      "--like",
      "qwen2.5-0.5b",
      "--layers",
      "1",
      "--out",
      out,
      "--shard-gb",
      "0.1",
      "--tokenizer",
      QWEN_TOKENIZER,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const index = JSON.parse(await Deno.readTextFile(join(out, "model.safetensors.index.json")));
    const shards = [...new Set(Object.values(index.weight_map as Record<string, string>))].sort();
    assert.ok(shards.length >= 2, `sharded (${shards.length} shards)`);
    const W = new Map<string, Float32Array>();
    let total = 0;
    for (const s of shards) {
      for (const [k, v] of await readAllF32(join(out, s))) {
        W.set(k, v);
        total += v.length * 2;
        assert.equal(index.weight_map[k], s, `${k} is in the shard the index names`);
      }
    }
    assert.equal(index.metadata.total_size, total);
    const emb = W.get("model.embed_tokens.weight")!;
    const std = Math.sqrt(emb.reduce((a, x) => a + x * x, 0) / emb.length);
    assert.ok(Math.abs(std - 0.02) < 0.001, `weights have std 0.02 (got ${std})`);
    assert.ok(W.get("model.norm.weight")!.every((x) => x === 1), "norms are 1");
    assert.ok(await Deno.stat(join(out, "tokenizer.json")));
    // the same seed gives the same bytes; the folder is refused a second time
    const again = await cli(["model:random", "--like", "qwen2.5-0.5b", "--layers", "1", "--out", out]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /--out: .* exists and is not empty/);
    const gpu = await Gpu.create();
    try {
      const m = await loadModel(gpu, out);
      assert.equal(m.decoder.w.layers[0].qkv.dtype, "bf16");
      const ids = m.tokenizer!.encode("Hello, world");
      const { normed } = m.decoder.forward({ ids: Uint32Array.from(ids), batch: 1, t: ids.length });
      const l = m.decoder.logits(normed, ids.map((_, i) => i));
      normed.dispose();
      const got = await l.read(gpu);
      l.dispose();
      assertClose(got, refLogits(m.cfg, W, ids), { atol: 1e-4, rtol: 1e-4 }, "logits");
    } finally {
      gpu.destroy();
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test("model:random: the same seed writes the same weights, another seed different ones", async () => {
  const base = await Deno.makeTempDir({ prefix: "random-seed-" });
  try {
    const shard = async (name: string, seed: number) => {
      const s = await writeRandomModel({
        like: "qwen2.5-0.5b",
        dtype: "f16",
        out: join(base, name),
        layers: 1,
        seed,
        shardBytes: 64 << 20,
        tokenizer: QWEN_TOKENIZER,
      });
      assert.ok(s.parameters > 0.15e9 && s.parameters < 0.152e9, `${s.parameters} parameters`);
      assert.equal(s.shards, 2, "the embedding alone fills a 64 MiB shard");
      const f = await readAllF32(join(base, name, "model-00002-of-00002.safetensors"));
      return [...f.values()].map((v) => v.slice(0, 64));
    };
    const a = await shard("a", 1), b = await shard("b", 1), c = await shard("c", 2);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
