// `generate`: sample a continuation of a prompt (optionally through the chat template).

import { loadModel } from "../models/model.ts";
import { generate } from "../lib/generate.ts";
import { need, parseNumber, startGpu, UsageError } from "./common.ts";
import { LoraSet } from "../lib/train/lora.ts";
import { generationExtras } from "../lib/train/extras.ts";
import { layerVectors } from "../lib/hooks.ts";
import { loadLayerVectors } from "../lib/vectors.ts";

export async function generateCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const dir = need(a.model as string, "model", "generate");
  const prompt = a.prompt as string | undefined;
  if (prompt === undefined) throw new UsageError("generate: --prompt is required");
  const maxNew = parseNumber(a["max-new-tokens"] as string, "max-new-tokens", 128, { int: true, min: 1 });
  const temperature = parseNumber(a.temperature as string, "temperature", 0, { min: 0 });
  const topP = parseNumber(a["top-p"] as string, "top-p", 1, { min: 0, max: 1 });
  if (!(topP > 0)) throw new UsageError("--top-p: expected a number in (0, 1], got 0");
  const seed = parseNumber(a.seed as string, "seed", 0, { int: true });
  const steerMode = (a["steer-mode"] as string | undefined) ?? "all";
  if (!["all", "prompt", "response"].includes(steerMode)) {
    throw new UsageError("--steer-mode: expected all, prompt or response");
  }
  if (a.steer && (a.layer === undefined || a.coef === undefined)) {
    throw new UsageError("generate: --steer needs --layer and --coef");
  }
  for (const k of ["layer", "coef", "steer-mode"]) {
    if (!a.steer && a[k] !== undefined) {
      throw new UsageError(`generate: --${k} needs --steer (a vector file)`);
    }
  }
  const gpu = await startGpu();
  const model = await loadModel(gpu, dir);
  const lora = a.adapter ? await LoraSet.load(gpu, model.cfg, a.adapter as string) : null;
  const L = model.cfg.numLayers + 1, d = model.cfg.hiddenSize;
  const steer = a.steer
    ? [{
      vectors: layerVectors(gpu, await loadLayerVectors(a.steer as string, L, d), L, d),
      layers: (a.layer as string).split(",").map((x) => parseNumber(x, "layer", 0, { int: true, min: 0 })),
      coef: parseNumber(a.coef as string, "coef", 0),
      mode: steerMode as "all" | "prompt" | "response",
    }]
    : [];
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
