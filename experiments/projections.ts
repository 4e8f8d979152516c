// Activation projections: response-averaged activations of several models (base, and adapters trained
// defenceless / with PPS / with IP) on the same responses, with the defence excluded, projected on the
// trait vector and controls at every layer.

import { join } from "node:path";
import { LoraSet } from "../models/lora.ts";
import { encodeRecord } from "../lib/text/dataset.ts";
import { projection, sequenceActivations } from "../research/activations.ts";
import { ConfigReader, type Experiment, finite, mean, writeResult } from "./common.ts";
import { loadAll, readVectors, type VectorSpec } from "./analysis_common.ts";
import { type Figure, type Json, lineChart, type ResultKind } from "./result_kind.ts";

interface ProjectionsConfig {
  model: string;
  adapters: { name: string; path: string | null }[];
  data: string;
  limit: number;
  vectors: VectorSpec[];
  random: boolean;
  output: string;
}

/** projections.json's metrics (the schema below says the same). */
export interface ProjectionsMetrics {
  samples: number;
  /** mean projection a·v/|v| of response-averaged activations, per model, vector and layer */
  projections: { model: string; vector: string; layer: number; mean: number | null }[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const projectionsResult: ResultKind = {
  kind: "projections",
  section: "fig6",
  metricsSchema: {
    type: "object",
    required: ["samples", "projections"],
    properties: {
      projections: {
        type: "array",
        items: { type: "object", required: ["model", "vector", "layer", "mean"] },
      },
    },
  },
  figures: projectionsFigures,
};

export const projectionsExperiment: Experiment<ProjectionsConfig> = {
  name: "projections",
  description: "response-averaged activations of several models projected on trait and control vectors",
  results: [projectionsResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      model: r.nonEmpty("model"),
      adapters: r.list("adapters").map((a) => {
        const o = { name: a.str("name"), path: a.optStr("path") };
        a.done();
        return o;
      }),
      data: r.nonEmpty("data"),
      limit: r.num("limit", 64, { int: true, min: 1 }),
      vectors: readVectors(r),
      random: r.bool("random", true),
      output: r.name("output", "projections"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c, adapter: null });
    const out: { model: string; vector: string; layer: number; mean: number | null }[] = [];
    for (const a of c.adapters) {
      const lora = a.path ? await LoraSet.load(ctx.gpu, x.model.cfg, a.path) : null;
      const acc = new Map<string, number[][]>();
      for (let i = 0; i < x.records.length; i++) {
        ctx.progress(`projections: ${a.name} sample ${i + 1}/${x.records.length}`);
        const s = encodeRecord(x.model.tokenizer!, x.records[i], { maxLength: 100_000 });
        const first = s.lossMask.indexOf(1);
        if (first <= 0) continue;
        const acts = await sequenceActivations(x.model, s.ids.slice(0, first), s.ids.slice(first), { lora });
        for (const [n, v] of x.vectors) {
          const list = acc.get(n) ?? acc.set(n, []).get(n)!;
          list.push(Array.from({ length: x.boundaries }, (_, l) => projection(acts.responseAvg, v, l, x.d)));
        }
      }
      for (const [n, list] of acc) {
        for (let l = 0; l < x.boundaries; l++) {
          out.push({
            model: a.name,
            vector: n,
            layer: l,
            mean: finite(mean(list.map((p) => p[l]))),
          });
        }
      }
      lora?.store.destroy();
    }
    const metrics: ProjectionsMetrics = { samples: x.records.length, projections: out };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "projections", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function projectionsFigures(r: Json, file: string): Figure[] {
  const m: ProjectionsMetrics = r.metrics;
  const vals = m.projections.map((p: Json) => ({ ...p, series: `${p.model} · ${p.vector}` }));
  return [{
    title: "Activation projections",
    caption:
      `${file}: response-averaged activations (defence excluded) projected on each vector, per layer; ${m.samples} samples.`,
    spec: lineChart(vals, "layer", "mean", "series", { x: "layer l", y: "mean projection a·v/|v|" }),
  }];
}
