// Tokenizers: the real Qwen tokenizer and chat template against ids derived by hand from its
// vocabulary, and the converted llama2.c tokenizer against run.c's encoding algorithm.

import { join } from "node:path";
import assert from "node:assert/strict";
import { TextTokenizer } from "../lib/text/tokenizer.ts";
import { parseLlama2cTokenizer } from "../models/llama2c.ts";
import { convertedStories, QWEN_TOKENIZER, STORIES_SRC } from "./fixtures.ts";

Deno.test("Qwen tokenizer: plain text against hand-derived ids", async () => {
  const tok = await TextTokenizer.load(QWEN_TOKENIZER);
  // vocab lookups in tokenizer.json: "Hello" 9707, "Ġworld" 1879, "!" 0 (byte-level BPE, Ġ = space)
  assert.deepEqual(tok.encode("Hello world!"), [9707, 1879, 0]);
  assert.equal(tok.decode([9707, 1879, 0]), "Hello world!");
  // special tokens written in text map to their ids
  assert.deepEqual(tok.encode("<|im_start|>user"), [151644, 872]);
  assert.ok(tok.stopIds.includes(151645), "<|im_end|> ends generation");
});

Deno.test("Qwen chat template renders and tokenizes a system + user turn", async () => {
  const tok = await TextTokenizer.load(QWEN_TOKENIZER);
  const msgs = [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Hi" }];
  const text = tok.renderChat(msgs, true);
  assert.equal(
    text,
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  // <|im_start|> 151644, <|im_end|> 151645, "system" 8948, "Ċ" (\n) 198, "You" 2610, "Ġare" 525, "Ġa" 264,
  // "Ġhelpful" 10950, "Ġassistant" 17847, "." 13, "user" 872, "Hi" 13048, "assistant" 77091
  assert.deepEqual(tok.encodeChat(msgs, true), [
    151644,
    8948,
    198,
    2610,
    525,
    264,
    10950,
    17847,
    13,
    151645,
    198,
    151644,
    872,
    198,
    13048,
    151645,
    198,
    151644,
    77091,
    198,
  ]);
});

/** run.c's encoder: BOS, dummy-prefix space, code points (else bytes + 3), greedy best-score merges. */
function runcEncode(text: string, pieces: string[], scores: number[]): number[] {
  const lookup = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!lookup.has(p)) lookup.set(p, i);
  });
  const ids: number[] = [];
  if (text.length) ids.push(lookup.get(" ")!);
  for (const ch of text) {
    const id = lookup.get(ch);
    if (id !== undefined && id >= 3) ids.push(id);
    else for (const b of new TextEncoder().encode(ch)) ids.push(b + 3);
  }
  for (;;) {
    let best = -1e10, bestIdx = -1, bestId = -1;
    for (let i = 0; i + 1 < ids.length; i++) {
      const id = lookup.get(pieces[ids[i]] + pieces[ids[i + 1]]);
      if (id !== undefined && scores[id] > best) {
        best = scores[id];
        bestIdx = i;
        bestId = id;
      }
    }
    if (bestIdx < 0) break;
    ids.splice(bestIdx, 2, bestId);
  }
  return [1, ...ids];
}

Deno.test("converted stories260K tokenizer encodes like run.c and decodes back", async () => {
  const tok = await TextTokenizer.load(await convertedStories());
  const { pieces, scores } = parseLlama2cTokenizer(
    await Deno.readFile(join(STORIES_SRC, "tok512.bin")),
    512,
    "tok512.bin",
  );
  for (
    const s of [
      "Once upon a time, there was a little girl named Lily.",
      'She said, "I\'m sorry, mom."\nHer mom smiled.',
      "café ☃ naïve — 42!",
      "  two leading spaces",
    ]
  ) {
    const ids = tok.encode(s);
    assert.deepEqual(ids, runcEncode(s, pieces, scores), JSON.stringify(s));
    assert.equal(tok.decode(ids), s, "round trip");
  }
});

Deno.test("a model folder without tokenizer.json is a clear error", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(TextTokenizer.load(dir), /tokenizer\.json is missing/);
});
