// Prompt-difference vectors (to compare IP with an "equivalent" PPS): per layer, the mean over the
// non-prompt tokens of h(with the inoculation prompt) - h(without), over a data split. Tokens are
// aligned from the end of the conversation: everything after the inserted prompt is the same text.

import { join } from "node:path";
import type { Model } from "../models/model.ts";
import { loadModel } from "../models/model.ts";
import { hiddenStates } from "../lib/activations.ts";
import { sharedSuffix } from "../lib/analysis.ts";
import { readJsonl, withInoculation } from "../lib/text/dataset.ts";
import type { ChatMessage } from "../lib/text/tokenizer.ts";
import { saveLayerVectors } from "../lib/vectors.ts";
import { ConfigReader, type Experiment, writeResult } from "./common.ts";

export async function promptDifference(
  m: Model,
  conversations: ChatMessage[][],
  prompt: string,
  separator = "\n",
): Promise<{ vector: Float32Array; tokens: number }> {
  const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
  const sum = new Float64Array(L * d);
  let n = 0;
  for (const msgs of conversations) {
    const plain = m.tokenizer!.encodeChat(msgs, false);
    const ip = m.tokenizer!.encodeChat(withInoculation(msgs, prompt, separator), false);
    const k = sharedSuffix(plain, ip);
    if (!k) continue;
    const [hp, hi] = [await hiddenStates(m, plain), await hiddenStates(m, ip)];
    for (let l = 0; l < L; l++) {
      for (let t = 0; t < k; t++) {
        const tp = plain.length - k + t, ti = ip.length - k + t;
        for (let j = 0; j < d; j++) sum[l * d + j] += hi[l][ti * d + j] - hp[l][tp * d + j];
      }
    }
    n += k;
  }
  if (!n) throw new Error("prompt difference: no aligned tokens in the data");
  return { vector: Float32Array.from(sum, (x) => x / n), tokens: n };
}

interface PromptDiffConfig {
  model: string;
  data: string;
  limit: number;
  prompts: string[];
  separator: string;
  output: string;
}

export const promptDiffExperiment: Experiment<PromptDiffConfig> = {
  name: "prompt_diff",
  description: "per-layer mean activation difference caused by inoculation prompts, on non-prompt tokens",
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      model: r.str("model"),
      data: r.str("data"),
      limit: r.num("limit", 64, { int: true, min: 1 }),
      prompts: r.strList("prompts"),
      separator: r.str("separator", "\n"),
      output: r.str("output", "prompt_diff"),
    };
    if (!c.prompts.length) throw new Error(`${file}: key 'prompts' must not be empty`);
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    const recs = await readJsonl(c.data, { limit: c.limit });
    const convs = recs.filter((r) => r.messages).map((r) => r.messages!);
    const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    const out: { prompt: string; file: string; tokens: number; norms: number[] }[] = [];
    for (let i = 0; i < c.prompts.length; i++) {
      ctx.progress(`prompt_diff: prompt ${i + 1}/${c.prompts.length}`);
      const { vector, tokens } = await promptDifference(m, convs, c.prompts[i], c.separator);
      const file = join(ctx.runDir, `${c.output}-${i}.safetensors`);
      await saveLayerVectors(file, vector, L, d, {
        model: c.model,
        prompt: c.prompts[i],
        data: c.data,
        tokens: String(tokens),
      });
      out.push({
        prompt: c.prompts[i],
        file,
        tokens,
        norms: Array.from({ length: L }, (_, l) => Math.hypot(...vector.subarray(l * d, (l + 1) * d))),
      });
    }
    const metrics = { vectors: out, samples: convs.length };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "prompt_diff", c, c.model, started, metrics);
    return metrics;
  },
};
