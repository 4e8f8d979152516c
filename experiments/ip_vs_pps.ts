// IP compared with an "equivalent" PPS (E.6): steer at all layers with the prompt-difference vector over a
// coefficient sweep, and compare token by token the IP gradient with the steered gradient at every aligned
// position after the inserted prompt. Pooled: the mean over all (sample, position) cosines per layer and
// coefficient. The IP prompt is drawn per sample from the bank (seeded); the samples should be held out
// from those the vector was built on (`offset`).

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import { type IpSpec, readIp } from "../defence/defence.ts";
import { cosine, defendedPairs, drawPrompt, steerVectors } from "../research/analysis.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { ConfigReader, type Experiment, finite, writeResult } from "./common.ts";
import { loadAll, readBase } from "./analysis_common.ts";
import { type Figure, type Json, lineChartSe, type ResultKind } from "./result_kind.ts";

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
  /** per coefficient, the mean tokenwise cosine per layer, pooled over positions and samples, and its SE
   * with the samples as clusters (a sample's positions are not independent) */
  sweep: { coef: number; cos: (number | null)[]; cos_se?: (number | null)[] }[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const ipVsPpsResult: ResultKind = {
  kind: "ip_vs_pps",
  section: "fig16",
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
      seed: r.num("seed", 0, SEED_RANGE),
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
    // per coefficient, layer and sample: the sum of tokenwise cosines and the positions counted
    const sums = c.coefs.map(() => all.map(() => [] as number[])),
      counts = c.coefs.map(() => all.map(() => [] as number[]));
    const defences = c.coefs.map((coef) => ({ steer: { vectors, layers: all, coef } }));
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`ip_vs_pps: sample ${i + 1}/${x.records.length}`);
      const prompt = drawPrompt(c.ip.prompts, i, c.seed);
      // the plain pass once, for the IP run and every coefficient
      const [ipPair, ...steered] = await defendedPairs(
        x.model,
        x.records[i],
        [{ ip: prompt, ipPlacement: c.ip }, ...defences],
        { lora: x.lora },
      );
      const ip = ipPair.defended;
      for (let ci = 0; ci < c.coefs.length; ci++) {
        const st = steered[ci].defended;
        // aligned from the end: the IP run's tokens after the prompt against the plain run's last K tokens
        const K = ip.predicts.length, off = st.predicts.length - K;
        for (const l of all) {
          let s = 0;
          for (let t = 0; t < K; t++) s += cosine(ip.grad[l], st.grad[l], t * x.d, (off + t) * x.d, x.d);
          sums[ci][l].push(s);
          counts[ci][l].push(K);
        }
      }
    }
    const sweep = c.coefs.map((coef, ci) => {
      const pooled = all.map((l) => pooledMean(sums[ci][l], counts[ci][l]));
      return { coef, cos: pooled.map((p) => finite(p.mean)), cos_se: pooled.map((p) => finite(p.se)) };
    });
    const positions = counts[0]?.[0]?.reduce((a, k) => a + k, 0) ?? 0;
    const metrics: IpVsPpsMetrics = { samples: x.records.length, positions, sweep };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "ip_vs_pps", c, c.model, started, metrics);
    return metrics;
  },
};

/** The pooled mean sum(s_i) / sum(n_i) of per-sample sums over n_i positions, and its SE with the samples as
 * clusters: sqrt(N / (N - 1) * sum((s_i - R n_i)^2)) / sum(n_i). */
export function pooledMean(sums: number[], counts: number[]): { mean: number; se: number } {
  const n = counts.reduce((a, k) => a + k, 0), N = sums.length;
  if (!n) return { mean: NaN, se: NaN };
  const R = sums.reduce((a, x) => a + x, 0) / n;
  if (N < 2) return { mean: R, se: NaN };
  const ss = sums.reduce((a, s, i) => a + (s - R * counts[i]) ** 2, 0);
  return { mean: R, se: Math.sqrt((N / (N - 1)) * ss) / n };
}

// ---- the result's figures and report lines

function ipVsPpsFigures(r: Json, file: string): Figure[] {
  const m: IpVsPpsMetrics = r.metrics;
  const vals = m.sweep.flatMap((s: Json) =>
    s.cos.map((c: number, l: number) => ({
      layer: l,
      cos: c,
      se: s.cos_se?.[l] ?? null,
      series: `ε=${s.coef}`,
    }))
  );
  return [{
    title: "IP gradient vs prompt-difference PPS gradient",
    caption:
      `${file}: tokenwise cos between the gradient under the IP prompt and under steering with its prompt-difference vector at all layers, on the aligned tokens after the prompt, pooled over positions and ${m.samples} samples (bars ± 1 SE, samples as clusters).`,
    spec: lineChartSe(vals, "layer", "cos", "se", "series", { x: "layer l", y: "mean tokenwise cos" }),
  }];
}
