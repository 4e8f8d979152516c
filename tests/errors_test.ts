// Bad input gets a clear error naming the file and field, never a deep stack trace.

import { join } from "node:path";
import assert from "node:assert/strict";
import { SafetensorsFile, writeSafetensors } from "../lib/safetensors.ts";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { loadModel } from "../models/model.ts";
import { parseConfig } from "../models/config.ts";
import { cli, gpuTest, testGpu } from "./helpers.ts";
import { randomTensors, TINY_QWEN2_CONFIG, writeTinyQwen2 } from "./fixtures.ts";

async function tinyDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "bad-model-" });
  await writeTinyQwen2(dir, "BF16");
  return dir;
}

function header(obj: unknown, dataBytes = 0): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

Deno.test("safetensors: truncated file, header past the end, bad JSON, unknown dtype, offsets past data", async () => {
  const dir = await Deno.makeTempDir();
  const p = join(dir, "x.safetensors");
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(5), /too short/],
    [
      (() => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setBigUint64(0, 1000n, true);
        return b;
      })(),
      /header length 1000 exceeds the file size/,
    ],
    [
      (() => {
        const b = header({});
        b[8] = 0x7b;
        b[9] = 0x7b;
        return b;
      })(),
      /not valid JSON/,
    ],
    [
      header({ w: { dtype: "Q4_K", shape: [2], data_offsets: [0, 2] } }, 2),
      /tensor 'w': unknown dtype "Q4_K"/,
    ],
    [
      header({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8),
      /tensor 'w': data ends at byte 16 past the end.*truncated/,
    ],
    [
      header({ w: { dtype: "F32", shape: [4], data_offsets: [0, 12] } }, 16),
      /tensor 'w': data_offsets span 12 bytes but F32 \[4\] needs 16/,
    ],
  ];
  for (const [bytes, re] of cases) {
    await Deno.writeFile(p, bytes);
    await assert.rejects(SafetensorsFile.open(p), (e: Error) => {
      assert.match(e.message, re);
      assert.ok(e.message.includes(p), `names the file: ${e.message}`);
      return true;
    });
  }
});

Deno.test({
  name:
    "model folder: missing tensor, wrong shape, truncated weights file, unsupported architecture, bad config field",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // missing tensor
    let dir = await tinyDir();
    const t = randomTensors(TINY_QWEN2_CONFIG, "BF16");
    delete t["model.layers.1.mlp.up_proj.weight"];
    await writeSafetensors(join(dir, "model.safetensors"), t);
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /tensor 'model\.layers\.1\.mlp\.up_proj\.weight' is missing/,
    );
    // wrong shape
    dir = await tinyDir();
    const t2 = randomTensors({ ...TINY_QWEN2_CONFIG, intermediate_size: 70 }, "BF16");
    await writeSafetensors(join(dir, "model.safetensors"), t2);
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[70,48\], but config\.json implies \[72,48\]/,
    );
    // truncated weights file
    dir = await tinyDir();
    const full = await Deno.readFile(join(dir, "model.safetensors"));
    await Deno.writeFile(join(dir, "model.safetensors"), full.subarray(0, full.length - 100));
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /model\.safetensors: tensor '.*': data ends at byte \d+ past the end/,
    );
    // unsupported architecture
    dir = await tinyDir();
    await atomicWriteJson(join(dir, "config.json"), {
      ...TINY_QWEN2_CONFIG,
      architectures: ["GPT2LMHeadModel"],
    });
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /config\.json: architecture 'GPT2LMHeadModel' is not supported/,
    );
    // no weights at all
    dir = await Deno.makeTempDir();
    await atomicWriteJson(join(dir, "config.json"), TINY_QWEN2_CONFIG);
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /no model\.safetensors or model\.safetensors\.index\.json/,
    );
  },
});

Deno.test("config fields are checked by name", () => {
  assert.throws(
    () => parseConfig({ ...TINY_QWEN2_CONFIG, hidden_size: "48" }, "c.json"),
    /c\.json: field 'hidden_size' must be a positive integer/,
  );
  assert.throws(
    () => parseConfig({ ...TINY_QWEN2_CONFIG, num_key_value_heads: 4 }, "c.json"),
    /multiple of num_key_value_heads/,
  );
  assert.throws(() => parseConfig({ ...TINY_QWEN2_CONFIG, hidden_act: "gelu" }, "c.json"), /hidden_act/);
  assert.throws(
    () => parseConfig({ ...TINY_QWEN2_CONFIG, rope_scaling: "yes" }, "c.json"),
    /rope_scaling/,
  );
});

Deno.test("CLI: no WebGPU adapter says how to get one, without a stack trace", async () => {
  const dir = await tinyDir();
  // No adapter of this backend exists on Linux, which stands in for a machine without a GPU driver.
  const r = await cli(["forward", "--model", dir, "--tokens", "1,2", "--out", join(dir, "o.json")], {
    DENO_WEBGPU_BACKEND: Deno.build.os === "linux" ? "dx12" : "gl",
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /No WebGPU adapter found/);
  assert.match(r.stderr, /mesa-vulkan-drivers/);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
});

Deno.test("CLI: bad flags and bad files are one-line errors", async () => {
  let r = await cli(["forward", "--model", "/nonexistent", "--tokens", "1,x", "--out", "/tmp/o.json"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--tokens: expected comma-separated token ids/);
  r = await cli(["forward", "--model", "/nonexistent", "--tokens", "1", "--out", "/tmp/o.json"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\/nonexistent\/config\.json: model config not found/);
  r = await cli(["convert-llama2c", "/nonexistent.bin", "/x.bin", "/tmp/x"]);
  assert.match(r.stderr, /\/nonexistent\.bin: cannot read/);
  r = await cli(["generate", "--model", "/x", "--prompt", "a", "--bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bogus/);
  for (const x of [r]) assert.doesNotMatch(x.stderr, /^\s+at /m);
});
