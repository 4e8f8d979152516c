// Gradient-difference PCA: per sample, the loss-token mean of dL/dh_l with the defence minus without,
// stacked, divided by the Frobenius norm; uncentered second moment / (N-1); components up to 95 %
// cumulative variance, each oriented to a non-negative cosine with the trait vector; explained
// variance, cosines with reference vectors, per-sample projections, and the mean difference's cosine.

import { join } from "node:path";
import { checkLayers } from "../defence/defence.ts";
import { cosine, defendedPair, tokenMean } from "../research/analysis.ts";
import { pc1ShareInterval, uncenteredPca } from "../research/pca.ts";
import { ConfigReader, type Experiment, writeResult } from "./common.ts";
import {
  type DefenceSpec,
  loadAll,
  readBase,
  readDefence,
  readVectors,
  toDefence,
  type VectorSpec,
} from "./analysis_common.ts";
import { type Figure, FIGURE_HEIGHT, FIGURE_WIDTH, type Json, type ResultKind } from "./result_kind.ts";
import { gradPcaSignature, pcaComparison } from "./signatures.ts";

interface GradPcaConfig {
  model: string;
  adapter: string | null;
  data: string;
  limit: number;
  layer: number;
  vectors: VectorSpec[];
  random: boolean;
  defence: DefenceSpec;
  threshold: number;
  output: string;
}

/** grad_pca.json's metrics (the schema below says the same). */
export interface GradPcaMetrics {
  samples: number;
  layer: number;
  method: "gram" | "direct";
  /** explained-variance fraction per kept component */
  explained: number[];
  /** per component, its cosine with each reference vector */
  component_cosines: Record<string, number>[];
  mean_difference_cosines: Record<string, number>;
  /** [sample][component] */
  projections: number[][];
  /** a percentile bootstrap interval for explained[0] over the samples (research/pca.ts) */
  pc1_interval?: { lo: number; hi: number; level: number; reps: number };
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const gradPcaResult: ResultKind = {
  kind: "grad_pca",
  section: "fig18",
  metricsSchema: {
    type: "object",
    required: [
      "samples",
      "layer",
      "explained",
      "component_cosines",
      "mean_difference_cosines",
      "projections",
    ],
    properties: { explained: { type: "array", items: { type: "number", minimum: 0, maximum: 1 } } },
  },
  groupFigures: gradPcaFigures,
  outcomes: pcaComparison,
};

export const gradPcaExperiment: Experiment<GradPcaConfig> = {
  name: "grad_pca",
  description: "uncentered PCA of defended - defenceless gradients at a layer",
  results: [gradPcaResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      ...readBase(r, 64),
      layer: r.num("layer", undefined, { int: true, min: 0 }),
      vectors: readVectors(r),
      random: r.bool("random", true),
      defence: readDefence(r.sub("defence")),
      threshold: r.num("threshold", 0.95, { min: 0, max: 1 }),
      output: r.name("output", "grad_pca"),
    };
    if (c.limit < 2) throw new Error(`${file}: key 'limit' must be >= 2`);
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c });
    checkLayers([c.layer], x.boundaries - 1, "grad_pca");
    const defence = await toDefence(ctx.gpu, x, c.defence);
    const rows: Float64Array[] = [];
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`grad_pca: sample ${i + 1}/${x.records.length}`);
      const { none, defended } = await defendedPair(x.model, x.records[i], defence, {
        lora: x.lora,
        index: i,
      });
      // F.2: each gradient is the mean over the sequence's non-padding positions (for IP: after the prompt)
      const a = tokenMean(defended, c.layer, x.d, "all"), b = tokenMean(none, c.layer, x.d, "all");
      rows.push(a.map((v, j) => v - b[j]));
    }
    const row = (name: string) => x.vectors.get(name)!.subarray(c.layer * x.d, (c.layer + 1) * x.d);
    const trait = c.vectors.length ? row(c.vectors[0].name) : undefined;
    const pca = uncenteredPca(rows, { threshold: c.threshold, orient: trait });
    const meanDiff = new Float64Array(x.d);
    for (const r of rows) for (let j = 0; j < x.d; j++) meanDiff[j] += r[j] / rows.length;
    const refs = [...x.vectors.keys()];
    const metrics: GradPcaMetrics = {
      samples: rows.length,
      layer: c.layer,
      method: pca.method,
      explained: pca.explained,
      component_cosines: pca.components.map((comp) =>
        Object.fromEntries(refs.map((n) => [n, cosine(comp, row(n))]))
      ),
      mean_difference_cosines: Object.fromEntries(refs.map((n) => [n, cosine(meanDiff, row(n))])),
      projections: pca.projections,
      pc1_interval: pc1ShareInterval(rows, { reps: 500, seed: 0 }),
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "grad_pca", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

/** Fig. 18: every PCA run side by side — explained variance per component (PC1 with its bootstrap interval),
 * a bar group per component with a bar per defence — and the components' cosines, a panel per defence. */
function gradPcaFigures(results: { file: string; result: Json }[]): Figure[] {
  const name = (r: Json) => r.config.defence?.name ?? (r.config.defence?.steer ? "PPS" : "IP");
  const ev = results.flatMap(({ result }) =>
    (result.metrics as GradPcaMetrics).explained.map((e: number, i: number) => {
      const ci = i === 0 ? (result.metrics as GradPcaMetrics).pc1_interval : undefined;
      return {
        defence: name(result),
        component: `PC${i + 1}`,
        explained: e,
        lo: ci?.lo ?? e,
        hi: ci?.hi ?? e,
      };
    })
  );
  const cos = results.flatMap(({ result }) =>
    (result.metrics as GradPcaMetrics).component_cosines.flatMap((c: Json, i: number) =>
      Object.entries(c).map(([k, v]) => ({
        defence: name(result),
        component: `PC${i + 1}`,
        vector: k,
        cos: v,
      }))
    )
  );
  const files = results.map(({ file, result }) =>
    `${file}: ${
      name(result)
    }, layer ${result.metrics.layer}, ${result.metrics.samples} samples (${result.metrics.method} path)`
  ).join("; ");
  return [
    {
      title: "Gradient-difference PCA: explained variance, the defences side by side",
      signature: results.map(({ result }) => gradPcaSignature(result)).filter(Boolean).join(" "),
      caption:
        `Uncentered PCA of per-sample defended − defenceless gradients, components up to 95 % of the variance; PC1's error bar is its 95 % bootstrap interval over samples. ${files}.`,
      spec: {
        width: FIGURE_WIDTH,
        height: FIGURE_HEIGHT,
        data: { values: ev },
        layer: [{
          mark: "bar",
          encoding: {
            x: { field: "component", type: "nominal", sort: null },
            xOffset: { field: "defence" },
            y: { field: "explained", type: "quantitative", title: "fraction of variance" },
            color: { field: "defence", type: "nominal" },
          },
        }, {
          mark: "errorbar",
          encoding: {
            x: { field: "component", type: "nominal", sort: null },
            xOffset: { field: "defence" },
            y: { field: "lo", type: "quantitative", title: "fraction of variance" },
            y2: { field: "hi" },
          },
        }],
      },
    },
    {
      title: "Gradient-difference PCA: components' cosines with the reference vectors",
      caption:
        `Each component is oriented to a non-negative cosine with the trait vector; a panel per defence.`,
      spec: {
        data: { values: cos },
        facet: { column: { field: "defence", type: "nominal", title: null } },
        spec: {
          width: 200,
          height: 200,
          mark: "bar",
          encoding: {
            x: { field: "component", type: "nominal", sort: null },
            xOffset: { field: "vector" },
            y: { field: "cos", type: "quantitative" },
            color: { field: "vector", type: "nominal" },
          },
        },
      },
    },
  ];
}
