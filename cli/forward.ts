// `forward`: logits for every position of one sequence, as JSON.

import { loadModel } from "../models/model.ts";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { need, parseTokenList, startGpu, UsageError } from "./common.ts";

export async function forwardCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const dir = need(a.model as string, "model", "forward");
  const outPath = need(a.out as string, "out", "forward");
  if (a.text === "") {
    throw new UsageError("forward: --text is empty; give the text to run (or --tokens 1,2,3)");
  }
  if (!!a.text === !!a.tokens) throw new UsageError("forward: give exactly one of --text or --tokens");
  const given = a.tokens ? parseTokenList(a.tokens as string, "tokens") : null;
  const gpu = await startGpu();
  const model = await loadModel(gpu, dir, { tokenizer: !!a.text });
  if (given) parseTokenList(a.tokens as string, "tokens", model.cfg.vocabSize); // ids the embedding has
  const tokens = given ?? model.tokenizer!.encode(a.text as string, true);
  const dec = model.decoder;
  const { normed } = dec.forward({ ids: Uint32Array.from(tokens), batch: 1, t: tokens.length });
  const rows: number[][] = [];
  const V = model.cfg.vocabSize, block = dec.maxLogitRows();
  for (let r0 = 0; r0 < tokens.length; r0 += block) {
    const idx = Array.from({ length: Math.min(block, tokens.length - r0) }, (_, i) => r0 + i);
    const logits = dec.logits(normed, idx);
    const data = await logits.read(gpu);
    logits.dispose();
    for (let i = 0; i < idx.length; i++) rows.push(Array.from(data.subarray(i * V, (i + 1) * V)));
  }
  normed.dispose();
  await atomicWriteJson(outPath, { tokens, logits: rows });
  console.error(`forward: ${tokens.length} tokens → ${outPath}`);
}
