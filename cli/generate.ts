// `generate`: sample a continuation of a prompt (optionally through the chat template).

import { loadModel } from "../models/model.ts";
import { generate } from "../models/generate.ts";
import { need, parseNumber, startGpu, steerFromFlags, UsageError } from "./common.ts";
import { LoraSet } from "../models/lora.ts";
import { generationExtras, steerHook } from "../defence/hooks.ts";

export async function generateCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const dir = need(a.model as string, "model", "generate");
  const prompt = a.prompt as string | undefined;
  if (prompt === undefined) throw new UsageError("generate: --prompt is required");
  const maxNew = parseNumber(a["max-new-tokens"] as string, "max-new-tokens", 128, { int: true, min: 1 });
  const temperature = parseNumber(a.temperature as string, "temperature", 0, { min: 0 });
  const topP = parseNumber(a["top-p"] as string, "top-p", 1, { min: 0, max: 1 });
  if (!(topP > 0)) throw new UsageError("--top-p: expected a number in (0, 1], got 0");
  const seed = parseNumber(a.seed as string, "seed", 0, { int: true });
  const spec = steerFromFlags(a, "generate", true);
  const gpu = await startGpu();
  const model = await loadModel(gpu, dir);
  const lora = a.adapter ? await LoraSet.load(gpu, model.cfg, a.adapter as string) : null;
  const steer = spec ? [await steerHook(gpu, model.cfg, spec)] : [];
  const gx = lora || steer.length ? generationExtras(gpu, lora, { steer }) : null;
  const tok = model.tokenizer!;
  const ids = a.chat ? tok.encodeChat([{ role: "user", content: prompt }], true) : tok.encode(prompt, true);
  const t0 = performance.now();
  const streaming = !a.json && Deno.stdout.isTerminal();
  const res = await generate(model.decoder, [ids], {
    maxNewTokens: maxNew,
    temperature,
    topP,
    seed,
    stopIds: tok.stopIds,
    padId: tok.tokenToId("<|endoftext|>") ?? 0,
    extras: gx?.extras,
    warn: (m) => console.error(`note: ${m}`),
  });
  gx?.dispose();
  const secs = (performance.now() - t0) / 1000;
  const out = res.tokens[0];
  const shown = out.filter((t) => !tok.stopIds.includes(t));
  const text = tok.decode(shown);
  if (a.json) {
    console.log(
      JSON.stringify({ prompt, prompt_tokens: ids, tokens: out, text, finish: res.finish[0], seconds: secs }),
    );
  } else {
    console.log(a.chat ? text : tok.decode([...ids, ...shown]));
    if (!streaming) {
      console.error(`generate: ${out.length} tokens in ${secs.toFixed(2)} s (${res.finish[0]})`);
    }
  }
}
