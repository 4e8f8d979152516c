// IP compared with an "equivalent" PPS (E.6): steer at all layers with the prompt-difference vector over a
// coefficient sweep, and compare token by token the IP gradient with the steered gradient at every aligned
// position after the inserted prompt. Pooled: the mean over all (sample, position) cosines per layer and
// coefficient. The IP prompt is drawn per sample from the bank (seeded); the samples should be held out
// from those the vector was built on (`offset`).

import { join } from "node:path";
import { type IpSpec, readIp } from "../defence/defence.ts";
import { cosine, defendedPair, drawPrompt, steerVectors } from "../research/analysis.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { ConfigReader, type Experiment, finite, writeResult } from "./common.ts";
import { loadAll, readBase } from "./analysis_common.ts";
import { type Figure, type Json, lineChart, type ResultKind } from "./result_kind.ts";

interface IpVsPpsConfig {
  model: string;
  adapter: string | null;
  data: string;
  offset: number;
  limit: number;
  ip: IpSpec;
  prompt_vector: string;
  coefs: number[];
  seed: number;
  output: string;
}

/** E.6's 13 steering coefficients. */
const PAPER_COEFS = [-3, -2, -1.5, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 1.5, 2, 3];

/** ip_vs_pps.json's metrics (the schema below says the same). */
export interface IpVsPpsMetrics {
  samples: number;
  /** aligned positions after the prompt, pooled over samples */
  positions: number;
  /** per coefficient, the mean tokenwise cosine per layer */
  sweep: { coef: number; cos: (number | null)[] }[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const ipVsPpsResult: ResultKind = {
  kind: "ip_vs_pps",
  metricsSchema: {
    type: "object",
    required: ["samples", "sweep"],
    properties: { sweep: { type: "array", items: { type: "object", required: ["coef", "cos"] } } },
  },
  figures: ipVsPpsFigures,
};

export const ipVsPpsExperiment: Experiment<IpVsPpsConfig> = {
  name: "ip_vs_pps",
  description: "tokenwise cosine between IP gradients and prompt-difference-steered gradients",
  results: [ipVsPpsResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      ...readBase(r, 200),
      ip: readIp(r, "ip"),
      prompt_vector: r.str("prompt_vector"),
      coefs: r.numList("coefs", PAPER_COEFS),
      seed: r.num("seed", 0, { int: true }),
      output: r.name("output", "ip_vs_pps"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c, vectors: [], random: false });
    const vectors = steerVectors(
      ctx.gpu,
      await loadLayerVectors(c.prompt_vector, x.boundaries, x.d),
      x.boundaries,
      x.d,
    );
    const all = Array.from({ length: x.boundaries }, (_, l) => l);
    // pooled sums of cosines and position counts, per coefficient and layer
    const sum = c.coefs.map(() => new Float64Array(x.boundaries)),
      count = c.coefs.map(() => new Float64Array(x.boundaries));
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`ip_vs_pps: sample ${i + 1}/${x.records.length}`);
      const prompt = drawPrompt(c.ip.prompts, i, c.seed);
      const ip =
        (await defendedPair(x.model, x.records[i], { ip: prompt, ipPlacement: c.ip }, { lora: x.lora }))
          .defended;
      for (let ci = 0; ci < c.coefs.length; ci++) {
        const st = (await defendedPair(x.model, x.records[i], {
          steer: { vectors, layers: all, coef: c.coefs[ci] },
        }, { lora: x.lora })).defended;
        // aligned from the end: the IP run's tokens after the prompt against the plain run's last K tokens
        const K = ip.predicts.length, off = st.predicts.length - K;
        for (const l of all) {
          for (let t = 0; t < K; t++) {
            sum[ci][l] += cosine(ip.grad[l], st.grad[l], t * x.d, (off + t) * x.d, x.d);
            count[ci][l]++;
          }
        }
      }
    }
    const sweep = c.coefs.map((coef, ci) => ({
      coef,
      cos: all.map((l) => finite(count[ci][l] ? sum[ci][l] / count[ci][l] : NaN)),
    }));
    const metrics: IpVsPpsMetrics = { samples: x.records.length, positions: count[0]?.[0] ?? 0, sweep };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "ip_vs_pps", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function ipVsPpsFigures(r: Json, file: string): Figure[] {
  const m: IpVsPpsMetrics = r.metrics;
  const vals = m.sweep.flatMap((s: Json) =>
    s.cos.map((c: number, l: number) => ({ layer: l, cos: c, series: `ε=${s.coef}` }))
  );
  return [{
    title: "IP gradient vs prompt-difference PPS gradient",
    caption:
      `${file}: tokenwise cos between the gradient under the IP prompt and under steering with its prompt-difference vector at all layers, on the aligned tokens after the prompt; ${m.samples} samples.`,
    spec: lineChart(vals, "layer", "cos", "series", { x: "layer l", y: "mean tokenwise cos" }),
  }];
}
