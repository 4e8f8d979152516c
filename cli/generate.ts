// `generate`: sample a continuation of a prompt (optionally through the chat template).

import { SEED_RANGE } from "../lib/config.ts";
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
  const seed = parseNumber(a.seed as string, "seed", 0, SEED_RANGE);
  const spec = steerFromFlags(a, "generate", true);
  const gpu = await startGpu();
  const tLoad = performance.now();
  const model = await loadModel(gpu, dir);
  const lora = a.adapter ? await LoraSet.load(gpu, model.cfg, a.adapter as string) : null;
  const steer = spec ? [await steerHook(gpu, model.cfg, spec)] : [];
  const gx = lora || steer.length ? generationExtras(gpu, lora, { steer }) : null;
  const tok = model.tokenizer!;
  const ids = a.chat ? tok.encodeChat([{ role: "user", content: prompt }], true) : tok.encode(prompt, true);
  const loadS = (performance.now() - tLoad) / 1000;
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
    timing: !!a.json,
  });
  gx?.dispose();
  const secs = (performance.now() - t0) / 1000;
  const out = res.tokens[0];
  const shown = out.filter((t) => !tok.stopIds.includes(t));
  const text = tok.decode(shown);
  if (a.json) {
    // load, the prompt pass and the decode steps apart: each has its own rate (the prompt pass and the
    // first decode chunk also carry the pipeline compiles of a fresh process)
    const t = res.timing!;
    const decodeS = t.chunks.reduce((a, c) => a + c.seconds, 0),
      decodeSteps = t.chunks.reduce((a, c) => a + c.steps, 0);
    const later = t.chunks.slice(1), laterS = later.reduce((a, c) => a + c.seconds, 0);
    const laterSteps = later.reduce((a, c) => a + c.steps, 0);
    console.log(JSON.stringify({
      prompt,
      prompt_tokens: ids,
      tokens: out,
      text,
      finish: res.finish[0],
      seconds: secs,
      load_s: loadS,
      prefill_s: t.prefillS,
      prefill_tokens_per_s: t.prefillTokens / t.prefillS,
      decode_s: decodeS,
      decode_tokens: decodeSteps,
      decode_tokens_per_s: decodeSteps ? decodeSteps / decodeS : null,
      // after the first readback chunk (whose steps carry the decode kernels' compiles): the steady state
      decode_steady_tokens_per_s: laterSteps ? laterSteps / laterS : null,
    }));
  } else {
    console.log(a.chat ? text : tok.decode([...ids, ...shown]));
    if (!streaming) {
      console.error(`generate: ${out.length} tokens in ${secs.toFixed(2)} s (${res.finish[0]})`);
    }
  }
}
