// Prompt-difference vectors (E.6, to compare IP with an "equivalent" PPS): per layer, the mean over the
// non-prompt tokens of h(with an inoculation prompt) - h(without), one prompt drawn per sample from the
// bank, pooled into one vector over a data split. Tokens are aligned from the end of the conversation:
// everything after the inserted prompt is the same text.

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import type { Model } from "../models/model.ts";
import { loadModel } from "../models/model.ts";
import { hiddenStates } from "../research/activations.ts";
import { cosine, drawPrompt, sharedSuffix } from "../research/analysis.ts";
import { readJsonl, withInoculation } from "../lib/text/dataset.ts";
import type { ChatMessage } from "../lib/text/tokenizer.ts";
import { loadLayerVectors, saveLayerVectors } from "../defence/persona_vector.ts";
import { readPromptBank } from "../defence/defence.ts";
import { ConfigReader, type Experiment, finite, writeResult } from "./common.ts";
import { type ResultKind } from "./result_kind.ts";

/**
 * Per layer, the pooled mean over the samples' aligned non-prompt positions of h(prompted) - h(plain),
 * with one prompt per conversation (`promptFor(i)`). Positions are pooled, so a long sample counts more.
 */
export async function promptDifference(
  m: Model,
  conversations: ChatMessage[][],
  promptFor: (i: number) => string,
  separator = "\n",
  progress?: (msg: string) => void,
): Promise<{ vector: Float32Array; tokens: number; samples: number }> {
  const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
  const sum = new Float64Array(boundaries * d);
  let n = 0, samples = 0;
  for (let i = 0; i < conversations.length; i++) {
    progress?.(`prompt_diff: sample ${i + 1}/${conversations.length}`);
    const msgs = conversations[i];
    const plain = m.tokenizer!.encodeChat(msgs, false);
    const ip = m.tokenizer!.encodeChat(withInoculation(msgs, promptFor(i), separator), false);
    const k = sharedSuffix(plain, ip);
    if (!k) continue;
    const [hp, hi] = [await hiddenStates(m, plain), await hiddenStates(m, ip)];
    for (let l = 0; l < boundaries; l++) {
      for (let t = 0; t < k; t++) {
        const tp = plain.length - k + t, ti = ip.length - k + t;
        for (let j = 0; j < d; j++) sum[l * d + j] += hi[l][ti * d + j] - hp[l][tp * d + j];
      }
    }
    n += k;
    samples++;
  }
  if (!n) throw new Error("prompt difference: no aligned tokens in the data");
  return { vector: Float32Array.from(sum, (x) => x / n), tokens: n, samples };
}

interface PromptDiffConfig {
  model: string;
  data: string;
  offset: number;
  limit: number;
  prompts: string[];
  separator: string;
  seed: number;
  /** a persona vector to compare with, per layer (Figure 17) */
  vector: string | null;
  output: string;
}

/** prompt_diff.json's metrics (the schema below says the same). */
export interface PromptDiffMetrics {
  /** the pooled vector's safetensors file */
  file: string;
  samples: number;
  tokens: number;
  /** how many samples drew each prompt of the bank */
  prompt_counts: number[];
  norms: number[];
  /** Figure 17: cos(persona vector, prompt-difference vector) per layer, when `vector:` is given */
  vector_cosines: (number | null)[] | null;
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const promptDiffResult: ResultKind = {
  kind: "prompt_diff",
  section: "fig16",
  metricsSchema: {
    type: "object",
    required: ["file", "samples", "tokens", "prompt_counts", "norms", "vector_cosines"],
    properties: {
      file: { type: "string" },
      samples: { type: "integer", minimum: 1 },
      tokens: { type: "integer", minimum: 1 },
      prompt_counts: { type: "array", items: { type: "integer", minimum: 0 } },
      norms: { type: "array", items: { type: "number" } },
      vector_cosines: { type: ["array", "null"], items: { type: ["number", "null"] } },
    },
  },
};

export const promptDiffExperiment: Experiment<PromptDiffConfig> = {
  name: "prompt_diff",
  description: "per-layer mean activation difference caused by inoculation prompts, on non-prompt tokens",
  results: [promptDiffResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      model: r.nonEmpty("model"),
      data: r.nonEmpty("data"),
      offset: r.num("offset", 0, { int: true, min: 0 }),
      limit: r.num("limit", 64, { int: true, min: 1 }),
      prompts: readPromptBank(r, "prompts"),
      separator: r.str("separator", "\n"),
      seed: r.num("seed", 0, SEED_RANGE),
      vector: r.optStr("vector"),
      output: r.name("output", "prompt_diff"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const m = await loadModel(ctx.gpu, c.model);
    const recs = (await readJsonl(c.data, { limit: c.offset + c.limit })).slice(c.offset);
    const convs = recs.filter((r) => r.messages).map((r) => r.messages!);
    const boundaries = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    // E.6: a prompt drawn per sample from the bank, one pooled vector per layer
    const drawn = convs.map((_, i) => c.prompts.indexOf(drawPrompt(c.prompts, i, c.seed)));
    const { vector, tokens, samples } = await promptDifference(
      m,
      convs,
      (i) => c.prompts[drawn[i]],
      c.separator,
      ctx.progress,
    );
    const file = join(ctx.runDir, `${c.output}.safetensors`);
    await saveLayerVectors(file, vector, boundaries, d, {
      model: c.model,
      prompts: JSON.stringify(c.prompts),
      data: c.data,
      offset: String(c.offset),
      samples: String(samples),
      tokens: String(tokens),
    });
    const row = (v: Float32Array, l: number) => v.subarray(l * d, (l + 1) * d);
    const pv = c.vector ? await loadLayerVectors(c.vector, boundaries, d) : null;
    const metrics: PromptDiffMetrics = {
      file,
      samples,
      tokens,
      prompt_counts: c.prompts.map((_, p) => drawn.filter((x) => x === p).length),
      norms: Array.from({ length: boundaries }, (_, l) => Math.hypot(...row(vector, l))),
      // Figure 17: cos(persona vector, prompt-difference vector) per layer
      vector_cosines: pv
        ? Array.from({ length: boundaries }, (_, l) => finite(cosine(row(pv, l), row(vector, l))))
        : null,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "prompt_diff", c, c.model, started, metrics);
    return metrics;
  },
};
