// The CLI subcommands end to end on stories260K: forward, generate, convert-llama2c.

import { join } from "node:path";
import assert from "node:assert/strict";
import { convertedStories, STORIES_GOLDEN_IDS, STORIES_GOLDEN_TEXT, STORIES_SRC } from "./fixtures.ts";

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-webgpu", "-A", new URL("../main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: r.code,
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
  };
}

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
