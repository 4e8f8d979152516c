// The CLI subcommands end to end on stories260K: forward, generate, convert-llama2c.

import { join } from "node:path";
import assert from "node:assert/strict";
import { convertedStories, STORIES_GOLDEN_IDS, STORIES_GOLDEN_TEXT, STORIES_SRC } from "./fixtures.ts";
import { cli } from "./helpers.ts";

Deno.test("convert-llama2c writes an HF folder", async () => {
  const out = await Deno.makeTempDir();
  const r = await cli([
    "convert-llama2c",
    join(STORIES_SRC, "stories260K.bin"),
    join(STORIES_SRC, "tok512.bin"),
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  for (
    const f of [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
      "generation_config.json",
    ]
  ) {
    await Deno.stat(join(out, f));
  }
});

Deno.test("forward --tokens and --text write one logits row per position; greedy argmax follows the golden", async () => {
  const dir = await convertedStories();
  const out = join(await Deno.makeTempDir(), "f.json");
  const toks = [1, ...STORIES_GOLDEN_IDS.slice(0, 5)];
  let r = await cli(["forward", "--model", dir, "--tokens", toks.join(","), "--out", out]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(await Deno.readTextFile(out));
  assert.deepEqual(j.tokens, toks);
  assert.equal(j.logits.length, toks.length);
  assert.equal(j.logits[0].length, 512);
  const argmax = (row: number[]) => row.indexOf(Math.max(...row));
  assert.deepEqual(j.logits.map(argmax), STORIES_GOLDEN_IDS.slice(0, 6));
  r = await cli(["forward", "--model", dir, "--text", "Once upon", "--out", out]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(await Deno.readTextFile(out)).tokens, [1, 403, 407]);
});

Deno.test("generate --json greedy reproduces the golden text", async () => {
  const dir = await convertedStories();
  const r = await cli(["generate", "--model", dir, "--prompt", "", "--max-new-tokens", "40", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.tokens, STORIES_GOLDEN_IDS);
  assert.equal(j.text, STORIES_GOLDEN_TEXT);
  // load, the prompt pass and the decode steps apart (40 tokens: the prompt pass gives the first, then 39
  // steps in 3 readback chunks, the last two of them warm)
  for (const k of ["load_s", "prefill_s", "prefill_tokens_per_s", "decode_s", "decode_tokens_per_s"]) {
    assert.ok(typeof j[k] === "number" && j[k] > 0, `${k}: ${j[k]}`);
  }
  assert.equal(j.decode_tokens, 39);
  assert.ok(j.decode_steady_tokens_per_s > 0);
  const s = await cli([
    "generate",
    "--model",
    dir,
    "--prompt",
    "Lily",
    "--max-new-tokens",
    "8",
    "--temperature",
    "0.8",
    "--top-p",
    "0.9",
    "--seed",
    "3",
    "--json",
  ]);
  assert.equal(s.code, 0, s.stderr);
  assert.equal(JSON.parse(s.stdout).tokens.length, 8);
});

Deno.test("train and grads subcommands: a YAML config trains an adapter; grads writes per-sample tensors", async () => {
  const dir = await convertedStories();
  const tmp = await Deno.makeTempDir();
  const data = join(tmp, "d.jsonl");
  await Deno.writeTextFile(
    data,
    ["Lily had a red ball.", "Tom saw a big dog."].map((text) => JSON.stringify({ text })).join("\n"),
  );
  await Deno.writeTextFile(
    join(tmp, "c.yaml"),
    `model: ${dir}\ndata: ${data}\noutput_dir: ${tmp}/run\nepochs: 2\nbatch_size: 1\ngrad_accum: 2\nlora: { r: 2, alpha: 4, target_modules: [q_proj, down_proj] }\n`,
  );
  let r = await cli(["train", "--config", join(tmp, "c.yaml")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /step 2\/2 .*loss .*tok\/s .*ETA/);
  const vec = join(tmp, "v.safetensors");
  const { saveLayerVectors } = await import("../defence/persona_vector.ts");
  await saveLayerVectors(vec, new Float32Array(6 * 64).fill(0.1), 6, 64);
  const out = join(tmp, "g.safetensors");
  r = await cli([
    "grads",
    "--model",
    dir,
    "--adapter",
    join(tmp, "run", "adapter"),
    "--tokens",
    "1,403,407,261",
    "--steer",
    vec,
    "--layer",
    "2",
    "--coef",
    "1.5",
    "--out",
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const { SafetensorsFile } = await import("../lib/safetensors.ts");
  const f = await SafetensorsFile.open(out);
  for (let l = 0; l <= 5; l++) assert.deepEqual(f.info(`0.grad.h.${l}`).shape, [4, 64]);
  assert.deepEqual(Array.from(await f.readF32("0.mask")), [0, 1, 1, 1]);
  assert.ok((await f.readF32("0.loss"))[0] > 0);
  assert.deepEqual(f.info("0.grad.base_model.model.model.layers.3.mlp.down_proj.lora_B.weight").shape, [
    64,
    2,
  ]);
  f.close();
});
