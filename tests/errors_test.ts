// Bad input gets a clear error naming the file and field, never a deep stack trace.

import { join } from "node:path";
import assert from "node:assert/strict";
import { SafetensorsFile, writeSafetensors } from "../lib/safetensors.ts";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { loadModel } from "../models/model.ts";
import { parseConfig } from "../models/config.ts";
import { cli, gpuTest, testGpu } from "./helpers.ts";
import {
  convertedStories,
  randomTensors,
  storiesChat,
  TINY_QWEN2_CONFIG,
  writeTinyQwen2,
} from "./fixtures.ts";

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
  assert.match(r.stderr, /--tokens: 'x' is not a token id \(expected a decimal integer/);
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

// ---- issue 12: nothing silently wrong

Deno.test({
  name: "token ids never wrap: 2^32+1, 0x10, 1e2 and ids past the vocabulary are errors naming the id",
  ...gpuTest,
  fn: async () => {
    const dir = await tinyDir(), out = join(dir, "o.json");
    for (
      const [ids, re] of [
        ["4294967297,2,3", /'4294967297' is not a token id \(expected a decimal integer in 0\.\.\d+\)/],
        ["0x10", /'0x10' is not a token id/],
        ["1e2", /'1e2' is not a token id/],
        [
          `${TINY_QWEN2_CONFIG.vocab_size}`,
          new RegExp(
            `'${TINY_QWEN2_CONFIG.vocab_size}' is not a token id \\(expected a decimal integer in 0\\.\\.${
              TINY_QWEN2_CONFIG.vocab_size - 1
            }\\)`,
          ),
        ],
      ] as const
    ) {
      const r = await cli(["forward", "--model", dir, "--tokens", ids, "--out", out]);
      assert.equal(r.code, 2, `${ids}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    assert.equal((await cli(["forward", "--model", dir, "--tokens", "1,2", "--out", out])).code, 0);
  },
});

Deno.test({
  name:
    "steering that cannot apply is an error: a layer out of range, --layer / --coef without --steer; top-p out of (0, 1]",
  ...gpuTest,
  fn: async () => {
    const dir = await convertedStories();
    const { saveLayerVectors } = await import("../defence/persona_vector.ts");
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    const L = cfg.num_hidden_layers + 1, d = cfg.hidden_size;
    const v = join(await Deno.makeTempDir(), "v.safetensors");
    await saveLayerVectors(v, new Float32Array(L * d).fill(0.1), L, d);
    const gen = (...x: string[]) =>
      cli(["generate", "--model", dir, "--prompt", "a", "--max-new-tokens", "2", ...x]);
    let r = await gen("--steer", v, "--layer", "99", "--coef", "2");
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`steering layer 99 is out of range 0\\.\\.${L - 1}`));
    r = await gen("--layer", "1", "--coef", "2");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--layer needs --steer/);
    for (const p of ["2", "0", "1.5"]) {
      r = await gen("--temperature", "1", "--top-p", p);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--top-p: expected a number/);
    }
    assert.equal((await gen("--steer", v, "--layer", `${L - 1}`, "--coef", "2")).code, 0);
  },
});

Deno.test("safetensors: duplicate keys, overlapping or gapped offsets and trailing bytes are rejected", async () => {
  const dir = await Deno.makeTempDir();
  const p = join(dir, "x.safetensors");
  const f32 = (shape: number[], off: [number, number]) => ({ dtype: "F32", shape, data_offsets: off });
  const raw = (text: string, data: number) => {
    const h = new TextEncoder().encode(text);
    const out = new Uint8Array(8 + h.length + data);
    new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
    out.set(h, 8);
    return out;
  };
  const cases: [Uint8Array, RegExp][] = [
    [
      raw(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        8,
      ),
      /header names 'a' twice/,
    ],
    [
      header({ a: f32([2], [0, 8]), b: f32([1], [4, 8]) }, 8),
      /tensor 'b' starts at data byte 4, expected 8 \(it overlaps/,
    ],
    [header({ a: f32([1], [0, 4]), b: f32([1], [0, 4]) }, 4), /overlaps/],
    [header({ a: f32([1], [4, 8]) }, 8), /tensor 'a' starts at data byte 4, expected 0 \(a gap before it\)/],
    [header({ a: f32([1], [0, 4]) }, 8), /the tensors cover 4 bytes of the 8-byte data section/],
  ];
  for (const [bytes, re] of cases) {
    await Deno.writeFile(p, bytes);
    await assert.rejects(SafetensorsFile.open(p), re);
  }
});

Deno.test({
  name:
    "checkpoints: fewer config layers than the file has, unknown tensors, NaN/Inf weights, shards outside the folder",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    let dir = await tinyDir();
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    await atomicWriteJson(join(dir, "config.json"), { ...cfg, num_hidden_layers: 1 });
    await assert.rejects(
      loadModel(gpu, dir),
      /the checkpoint has layers up to 1, but config\.json says num_hidden_layers = 1/,
    );
    await atomicWriteJson(join(dir, "config.json"), { ...cfg, num_hidden_layers: 100000000 });
    await assert.rejects(
      loadModel(gpu, dir),
      /num_hidden_layers = 100000000, but the checkpoint has 2 layers/,
    );
    // an extra tensor the architecture does not read
    dir = await Deno.makeTempDir();
    const w = randomTensors(TINY_QWEN2_CONFIG, "F32", 3);
    w["model.layers.0.self_attn.q_norm.weight"] = { dtype: "F32", shape: [4], data: new Float32Array(4) };
    await writeSafetensors(join(dir, "model.safetensors"), w);
    await atomicWriteJson(join(dir, "config.json"), TINY_QWEN2_CONFIG);
    await assert.rejects(
      loadModel(gpu, dir, { tokenizer: false }),
      /1 tensor\(s\) the model does not use: model\.layers\.0\.self_attn\.q_norm\.weight/,
    );
    // a NaN in one weight, and an Inf in another dtype
    for (const [dtype, bits] of [["F32", 0x7fc00000], ["BF16", 0x7f80]] as const) {
      dir = await Deno.makeTempDir();
      const t = randomTensors(TINY_QWEN2_CONFIG, dtype, 4);
      const o = t["model.layers.1.mlp.down_proj.weight"].data as Float32Array | Uint16Array;
      const view = new DataView(o.buffer, o.byteOffset);
      if (dtype === "F32") view.setUint32(4 * 7, bits, true);
      else view.setUint16(2 * 7, bits, true);
      await writeSafetensors(join(dir, "model.safetensors"), t);
      await atomicWriteJson(join(dir, "config.json"), TINY_QWEN2_CONFIG);
      await assert.rejects(
        loadModel(gpu, dir, { tokenizer: false }),
        /tensor 'model\.layers\.1\.mlp\.down_proj\.weight' has a non-finite value \(NaN or Inf\) at element 7/,
      );
    }
    // a shard index that reads outside the model folder
    dir = await tinyDir();
    await atomicWriteJson(join(dir, "model.safetensors.index.json"), {
      weight_map: { "model.embed_tokens.weight": "../../elsewhere/model.safetensors" },
    });
    await assert.rejects(
      loadModel(gpu, dir),
      /weight_map names "\.\.\/\.\.\/elsewhere\/model\.safetensors"; expected a file inside/,
    );
  },
});

Deno.test("config: rope_parameters (transformers 5) is read, disagreements and bad eos_token_id are errors", () => {
  const base = { ...TINY_QWEN2_CONFIG };
  delete (base as Record<string, unknown>).rope_theta;
  const c = parseConfig(
    { ...base, rope_parameters: { rope_type: "default", rope_theta: 1000000 } },
    "c.json",
  );
  assert.equal(c.ropeTheta, 1000000);
  assert.equal(c.ropeScaling, null);
  const l3 = {
    rope_type: "llama3",
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const s = parseConfig({ ...base, rope_parameters: { ...l3, rope_theta: 500000 } }, "c.json");
  assert.equal(s.ropeTheta, 500000);
  assert.deepEqual(s.ropeScaling, l3);
  assert.throws(
    () =>
      parseConfig(
        { ...base, rope_theta: 10000, rope_parameters: { rope_type: "default", rope_theta: 1e6 } },
        "c.json",
      ),
    /c\.json: 'rope_theta' \(10000\) and 'rope_parameters\.rope_theta' \(1000000\) disagree/,
  );
  assert.throws(
    () =>
      parseConfig({
        ...base,
        rope_scaling: { rope_type: "linear", factor: 2 },
        rope_parameters: { ...l3, rope_theta: 5e5 },
      }, "c.json"),
    /'rope_scaling' and 'rope_parameters' describe different RoPE scalings/,
  );
  assert.throws(
    () => parseConfig({ ...base, eos_token_id: "x" }, "c.json"),
    /c\.json: field 'eos_token_id' must be a token id/,
  );
  assert.deepEqual(parseConfig({ ...base, eos_token_id: [1, 2] }, "c.json").eosTokenIds, [1, 2]);
});

// ---- issue 12: no run lost, nothing outside the run folder, nothing unbounded, nothing quiet

async function trainSetup(extraYaml = "", lines?: string[]) {
  const model = await storiesChat();
  const tmp = await Deno.makeTempDir({ prefix: "train-guard-" });
  const data = join(tmp, "d.jsonl");
  const chat = (a: string) =>
    JSON.stringify({ messages: [{ role: "user", content: "Story?" }, { role: "assistant", content: a }] });
  await Deno.writeTextFile(data, (lines ?? [chat("Lily was sad."), chat("Tom ran.")]).join("\n"));
  const cfg = join(tmp, "c.yaml");
  await Deno.writeTextFile(
    cfg,
    `model: ${model}\ndata: ${data}\noutput_dir: ${tmp}/run\nepochs: 1\nbatch_size: 1\ngrad_accum: 1\nlora: { r: 2, alpha: 4, target_modules: [down_proj] }\n${extraYaml}`,
  );
  return { tmp, cfg, chat };
}

Deno.test({
  name:
    "train into a finished output_dir: refused without --resume / --overwrite; --overwrite moves the old run aside",
  ...gpuTest,
  fn: async () => {
    const { tmp, cfg } = await trainSetup();
    assert.equal((await cli(["train", "--config", cfg])).code, 0);
    const steps = await Deno.readTextFile(join(tmp, "run", "steps.jsonl"));
    let r = await cli(["train", "--config", cfg]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /run: output_dir is not empty \(an earlier run\?\); pass --resume to continue it or --overwrite/,
    );
    assert.equal(
      await Deno.readTextFile(join(tmp, "run", "steps.jsonl")),
      steps,
      "the earlier run is untouched",
    );
    r = await cli(["train", "--config", cfg, "--overwrite"]);
    assert.equal(r.code, 0, r.stderr);
    const aside = [...Deno.readDirSync(tmp)].map((e) => e.name).filter((n) => n.startsWith("run.old-"));
    assert.equal(aside.length, 1);
    assert.equal(await Deno.readTextFile(join(tmp, aside[0], "steps.jsonl")), steps);
    r = await cli(["train", "--config", cfg, "--resume", "--overwrite"]);
    assert.equal(r.code, 2);
  },
});

Deno.test({
  name:
    "training data are checked before the first step: a chat without an assistant turn stops the run, or is skipped and counted",
  ...gpuTest,
  fn: async () => {
    const noAnswer = JSON.stringify({ messages: [{ role: "user", content: "Story?" }] });
    const { tmp, cfg, chat } = await trainSetup("", []);
    await Deno.writeTextFile(
      join(tmp, "d.jsonl"),
      [chat("Lily was sad."), noAnswer, chat("Tom ran.")].join("\n"),
    );
    let r = await cli(["train", "--config", cfg]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /d\.jsonl:2: sample has no assistant turn to train on \(set on_bad_line: skip/);
    assert.doesNotMatch(r.stderr, /step 1\//, "stopped before the first step");
    await Deno.writeTextFile(cfg, (await Deno.readTextFile(cfg)) + "on_bad_line: skip\n");
    r = await cli(["train", "--config", cfg, "--overwrite"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /1 of 3 sample\(s\) skipped/);
    const long = await trainSetup("truncate: false\nmax_length: 8\n");
    r = await cli(["train", "--config", long.cfg]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /d\.jsonl:1: sample has \d+ tokens, over max_length 8/);
  },
});

Deno.test("experiment names and outputs stay inside the run folder; condition names are unique", async () => {
  const { EXPERIMENTS } = await import("../experiments/index.ts");
  const base = { model: "m", trait: "t.json", judge: { type: "world" }, post: [{ name: "p", data: "d" }] };
  const parse = (raw: Record<string, unknown>) => () => EXPERIMENTS.conditions.parseConfig(raw, "c.yaml");
  assert.throws(
    parse({ ...base, conditions: [{ name: "x/../../../../e" }] }),
    /c\.yaml: key 'conditions\[0\]\.name' must be a name of letters/,
  );
  assert.throws(
    parse({ ...base, pre: [{ name: "..", data: null }], conditions: [{ name: "a" }] }),
    /key 'pre\[0\]\.name' must be a name/,
  );
  assert.throws(
    parse({ ...base, conditions: [{ name: "a" }, { name: "a" }] }),
    /key 'conditions' names 'a' twice/,
  );
  assert.throws(
    () =>
      EXPERIMENTS.loss_sweep.parseConfig({
        model: "m",
        data: "d",
        vector: "v",
        layers: [1],
        output: "../../x.json",
      }, "l.yaml"),
    /l\.yaml: key 'output' must be a name/,
  );
});

Deno.test("issue-20 config keys: each bad value is one line naming the file and the key", async () => {
  const { EXPERIMENTS } = await import("../experiments/index.ts");
  const { parseTrainConfig } = await import("../train/config.ts");
  const base = { model: "m", trait: "t.json", judge: { type: "world" }, post: [{ name: "p", data: "d" }] };
  const cond = (raw: Record<string, unknown>) => () =>
    EXPERIMENTS.conditions.parseConfig({ ...base, conditions: [{ name: "none" }], ...raw }, "c.yaml");
  assert.throws(
    cond({ sign_force_modes: ["amplify"], sign_force_conditions: ["pps"] }),
    /c\.yaml: key 'sign_force_conditions' names 'pps', which is not a condition \(none\)/,
  );
  assert.throws(cond({ sign_force_conditions: ["none"] }), /c\.yaml: key 'sign_force_conditions' needs/);
  assert.throws(
    cond({ eval: { at_checkpoints: ["nope"] } }),
    /c\.yaml: key 'eval\.at_checkpoints' names 'nope', which is not a condition/,
  );
  assert.throws(cond({ post_start: "merge" }), /c\.yaml: key 'post_start'/);
  const steer = (raw: Record<string, unknown>) => () =>
    EXPERIMENTS.steer.parseConfig(
      { model: "m", trait: "t", judge: { type: "world" }, vector: "v", layers: [1], coefs: [1, 2], ...raw },
      "s.yaml",
    );
  assert.throws(steer({ coefs: [1, 1] }), /s\.yaml: key 'coefs' repeats a value/);
  assert.throws(steer({ coefs: [] }), /s\.yaml: key 'coefs' must list at least one/);
  assert.throws(steer({ reference_prompts: [" "] }), /s\.yaml: key 'reference_prompts' must list non-empty/);
  assert.throws(steer({ layers: [-1] }), /s\.yaml: key 'layers'/);
  assert.throws(
    () =>
      EXPERIMENTS.loss_sweep.parseConfig(
        { model: "m", data: "d", vector: "v", layers: [1], coefs: [0, 1], pps_coef: 2 },
        "l.yaml",
      ),
    /l\.yaml: key 'pps_coef' \(2\) must be one of 'coefs'/,
  );
  assert.throws(
    () =>
      EXPERIMENTS.grad_cosine.parseConfig({
        model: "m",
        data: "d",
        vectors: [{ name: "v", path: "v" }],
        defences: [{ name: "pps", steer: { vector: "v", layers: [1], coef: 1 } }],
        over_training: [{ run: "r", defence: "ip" }],
      }, "g.yaml"),
    /g\.yaml: key 'over_training' names defence 'ip', which 'defences' does not define/,
  );
  assert.throws(
    () => parseTrainConfig("model: m\ndata: d\noutput_dir: o\ncheckpoint_every: 1.5\n", "t.yaml"),
    /t\.yaml: key 'checkpoint_every' must be an integer number of steps >= 1 or a fraction/,
  );
  assert.equal(
    parseTrainConfig("model: m\ndata: d\noutput_dir: o\ncheckpoint_every: 0.1\n").checkpoint_every,
    0.1,
  );
});

Deno.test({
  name: "unbounded inputs: a chat template's range(1e8) and max_new_tokens past the model's positions",
  ...gpuTest,
  fn: async () => {
    const dir = await storiesChat();
    const tc = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer_config.json")));
    const bad = join(await Deno.makeTempDir(), "m");
    await Deno.mkdir(bad);
    for await (const e of Deno.readDir(dir)) await Deno.copyFile(join(dir, e.name), join(bad, e.name));
    await Deno.writeTextFile(
      join(bad, "tokenizer_config.json"),
      JSON.stringify({ ...tc, chat_template: "{% for i in range(100000000) %}x{% endfor %}" }),
    );
    const t0 = performance.now();
    let r = await cli(["generate", "--model", bad, "--prompt", "a", "--chat", "--max-new-tokens", "2"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /tokenizer_config\.json: chat_template asks for range\(\) of 100000000 numbers \(limit 100000\)/,
    );
    assert.ok(performance.now() - t0 < 30_000, "refused at once");
    // nested loops within range()'s bound: stopped by the step budget, not left to run for hours
    await Deno.writeTextFile(
      join(bad, "tokenizer_config.json"),
      JSON.stringify({
        ...tc,
        chat_template: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
      }),
    );
    r = await cli(["generate", "--model", bad, "--prompt", "a", "--chat", "--max-new-tokens", "2"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /tokenizer_config\.json: chat_template took over \d+ steps \/ \d+ ms for one conversation/,
    );
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    r = await cli(["generate", "--model", dir, "--prompt", "Once", "--max-new-tokens", "1000000", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `max_new_tokens 1000000 capped to \\d+: prompt \\d+ \\+ new tokens fill max_position_embeddings ${cfg.max_position_embeddings}`,
      ),
    );
  },
});

Deno.test({
  name:
    "summarize and report name every result they skip and exit non-zero; a corrupt result is never a silent gap",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "results-" });
    await Deno.writeTextFile(join(dir, "cut.json"), '{"experiment": "grad_cosine", "metr');
    await Deno.writeTextFile(
      join(dir, "nometrics.json"),
      JSON.stringify({ experiment: "evaluate", config: {} }),
    );
    await Deno.writeTextFile(join(dir, "other.json"), JSON.stringify({ not: "a result" }));
    for (const args of [["exp", "summarize", dir], ["report", dir]]) {
      const r = await cli(args);
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /skipped cut\.json: not readable JSON/);
      assert.match(r.stderr, /skipped nometrics\.json: does not match the result schema/);
      assert.doesNotMatch(r.stderr, /other\.json/);
      assert.doesNotMatch(r.stderr, /^\s+at /m);
    }
  },
});

Deno.test({
  name: "forward --out an existing directory: one line, no temporary file left",
  ...gpuTest,
  fn: async () => {
    const dir = await tinyDir(), out = join(dir, "outdir");
    await Deno.mkdir(out);
    const r = await cli(["forward", "--model", dir, "--tokens", "1,2", "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /outdir: is a directory; expected a file path to write/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".tmp")), []);
  },
});

Deno.test({
  name:
    "relative paths in training and experiment configs resolve against the current directory, not the config's",
  ...gpuTest,
  fn: async () => {
    const model = await storiesChat();
    const root = await Deno.makeTempDir({ prefix: "relpaths-" });
    await Deno.mkdir(join(root, "sub"));
    const chat = JSON.stringify({
      messages: [{ role: "user", content: "Q?" }, { role: "assistant", content: "Lily." }],
    });
    await Deno.writeTextFile(join(root, "d.jsonl"), chat + "\n" + chat);
    await Deno.writeTextFile(
      join(root, "sub", "t.yaml"),
      `model: ${model}\ndata: d.jsonl\noutput_dir: out\nepochs: 1\nbatch_size: 1\ngrad_accum: 1\nlora: { r: 2, alpha: 4, target_modules: [down_proj] }\n`,
    );
    await Deno.writeTextFile(
      join(root, "sub", "e.yaml"),
      `model: ${model}\ndata: d.jsonl\nlimit: 1\nprompts: ["You are sad."]\n`,
    );
    // from the root, d.jsonl is found and the outputs land under the root
    let r = await cli(["train", "--config", "sub/t.yaml"], {}, root);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await Deno.stat(join(root, "out", "adapter"))).isDirectory);
    r = await cli(["exp", "prompt_diff", "--config", "sub/e.yaml", "--run-dir", "exp"], {}, root);
    assert.equal(r.code, 0, r.stderr);
    // from the config's folder, the same relative path names a file that is not there, and says so
    r = await cli(["train", "--config", "t.yaml"], {}, join(root, "sub"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /d\.jsonl: cannot read data/);
    r = await cli(["exp", "prompt_diff", "--config", "e.yaml", "--run-dir", "exp"], {}, join(root, "sub"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /d\.jsonl: cannot read data/);
  },
});
