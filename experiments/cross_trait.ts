// Cross-trait prediction: on trait-A data, steering with trait B's vector over a coefficient sweep,
// the gradient cosines with both traits' vectors across layers, before any training — next to the
// trait scores the models trained that way reached (read from a `conditions` result, when given).

import { join } from "node:path";
import { defendedPairs, meanTokenCosine, steerVectors } from "../research/analysis.ts";
import { ConfigReader, type Experiment, finite, mean, sem, writeResult } from "./common.ts";
import { loadAll } from "./analysis_common.ts";
import {
  type Figure,
  FIGURE_HEIGHT,
  FIGURE_WIDTH,
  type Json,
  lineChart,
  type ResultKind,
} from "./result_kind.ts";

interface CrossTraitConfig {
  model: string;
  data: string;
  limit: number;
  trait_a: { name: string; vector: string };
  trait_b: { name: string; vector: string };
  layers: number[];
  coefs: number[];
  /** conditions.json of training runs on trait-A data (their PPS conditions' coefficients are matched) */
  after: string | null;
  output: string;
}

/** cross_trait.json's metrics (the schema below says the same). */
export interface CrossTraitMetrics {
  samples: number;
  trait_a: string;
  trait_b: string;
  /** per (coefficient of trait B's vector, vector compared): the mean cosine per layer */
  /** per coefficient and vector, the mean over samples per layer and its SE */
  cosines: { coef: number; vector: string; cos: (number | null)[]; cos_se?: (number | null)[] }[];
  /** trait-A scores reached by training that way (from `after:`'s conditions.json) */
  after: { condition: string; trait_after: number | null; trait_after_sem: number | null }[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const crossTraitResult: ResultKind = {
  kind: "cross_trait",
  section: "fig5",
  metricsSchema: {
    type: "object",
    required: ["samples", "trait_a", "trait_b", "cosines", "after"],
    properties: {
      cosines: { type: "array", items: { type: "object", required: ["coef", "vector", "cos"] } },
    },
  },
  figures: crossTraitFigures,
};

export const crossTraitExperiment: Experiment<CrossTraitConfig> = {
  name: "cross_trait",
  description: "trait-A data, trait-B steering: gradient cosines with both vectors vs trait after training",
  results: [crossTraitResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const t = (k: string) => {
      const x = r.sub(k);
      const o = { name: x.str("name"), vector: x.str("vector") };
      x.done();
      return o;
    };
    const c = {
      model: r.nonEmpty("model"),
      data: r.nonEmpty("data"),
      limit: r.num("limit", 64, { int: true, min: 1 }),
      trait_a: t("trait_a"),
      trait_b: t("trait_b"),
      layers: r.intList("layers"),
      coefs: r.numList("coefs", [0, 0.5, 1, 1.5, 2]),
      after: r.optStr("after"),
      output: r.name("output", "cross_trait"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, {
      model: c.model,
      adapter: null,
      data: c.data,
      limit: c.limit,
      vectors: [{ name: c.trait_a.name, path: c.trait_a.vector }, {
        name: c.trait_b.name,
        path: c.trait_b.vector,
      }],
      random: false,
    });
    const steerB = steerVectors(ctx.gpu, x.vectors.get(c.trait_b.name)!, x.boundaries, x.d);
    const acc = new Map<string, number[][]>();
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`cross_trait: sample ${i + 1}/${x.records.length}`);
      const pairs = await defendedPairs(
        x.model,
        x.records[i],
        c.coefs.map((coef) => ({ steer: { vectors: steerB, layers: c.layers, coef } })),
      );
      for (const [ci, coef] of c.coefs.entries()) {
        const { defended } = pairs[ci];
        for (const [name, v] of x.vectors) {
          const k = `${coef}|${name}`;
          (acc.get(k) ?? acc.set(k, []).get(k)!).push(meanTokenCosine(defended, v, x.d));
        }
      }
    }
    const cosines = [...acc].map(([k, list]) => {
      const [coef, vector] = k.split("|");
      return {
        coef: Number(coef),
        vector,
        cos: Array.from(
          { length: x.boundaries },
          (_, l) => finite(mean(list.map((p) => p[l]).filter(Number.isFinite))),
        ),
        cos_se: Array.from(
          { length: x.boundaries },
          (_, l) => finite(sem(list.map((p) => p[l]).filter(Number.isFinite))),
        ),
      };
    });
    let after: { condition: string; trait_after: number | null; trait_after_sem: number | null }[] = [];
    if (c.after) {
      const res = JSON.parse(await Deno.readTextFile(c.after)).metrics;
      after = res.runs.map((
        r: { condition: string; trait_after: number | null; trait_after_sem: number | null },
      ) => ({
        condition: r.condition,
        trait_after: r.trait_after,
        trait_after_sem: r.trait_after_sem,
      }));
    }
    const metrics: CrossTraitMetrics = {
      samples: x.records.length,
      trait_a: c.trait_a.name,
      trait_b: c.trait_b.name,
      cosines,
      after,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "cross_trait", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function crossTraitFigures(r: Json, file: string): Figure[] {
  const m: CrossTraitMetrics = r.metrics, layer = r.config.layers[0];
  const vals = m.cosines.map((c: Json) => ({
    coef: c.coef,
    cos: c.cos[layer],
    series: `cos with ${c.vector}`,
  }));
  const figs: Figure[] = [{
    title: `Cross-trait: ${m.trait_a} data steered with the ${m.trait_b} vector`,
    caption:
      `${file}: mean cos(∇h L, v) at layer ${layer} against the steering coefficient, with both traits' vectors, before training; ${m.samples} samples.`,
    spec: lineChart(vals, "coef", "cos", "series", {
      x: "ε (trait-B vector)",
      y: "mean cos(∇h L, v)",
    }),
  }];
  if (m.after.length) {
    figs.push({
      title: `Cross-trait: ${m.trait_a} after training`,
      caption:
        `${file}: trait-${m.trait_a} score after training on the same data under each condition (from ${r.config.after}).`,
      spec: {
        width: FIGURE_WIDTH,
        height: FIGURE_HEIGHT,
        data: { values: m.after },
        mark: "bar",
        encoding: {
          x: { field: "condition", type: "nominal" },
          y: {
            field: "trait_after",
            type: "quantitative",
            title: "trait score after",
            scale: { domain: [0, 100] },
          },
        },
      },
    });
  }
  return figs;
}
