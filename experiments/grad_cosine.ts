// Gradient cosine analysis: C_t(l, v) = cos(dL/dh_{l,t}, v_l) per token, averaged per sample over the
// loss tokens, for every layer; with the defence included and excluded (per-sample pairs for scatter
// plots) and per-layer means; against several comparison vectors (the trait vector, another trait's,
// a random vector of equal norm). For IP only the tokens after the prompt are compared. Coefficient
// sweeps of a PPS defence give the cross-trait analysis (trait A data, trait B vector).

import { join } from "node:path";
import { defendedPair, meanTokenCosine } from "../research/analysis.ts";
import { LoraSet } from "../models/lora.ts";
import { ConfigReader, type Experiment, finite, mean, writeResult } from "./common.ts";
import {
  type DefenceSpec,
  loadAll,
  readBase,
  readDefence,
  readVectors,
  toDefence,
  type VectorSpec,
} from "./analysis_common.ts";
import {
  type Figure,
  FIGURE_HEIGHT,
  FIGURE_WIDTH,
  type Json,
  lineChart,
  type ResultKind,
} from "./result_kind.ts";
import { gradCosineSignature } from "./signatures.ts";

interface GradCosineConfig {
  model: string;
  adapter: string | null;
  /** also analyse these adapters (e.g. the checkpoints of a training run): per-layer means each */
  checkpoints: { name: string; path: string }[];
  data: string;
  limit: number;
  vectors: VectorSpec[];
  random: boolean;
  defences: DefenceSpec[];
  coefs: number[] | null;
  output: string;
}

/** One (defence, coefficient, vector, layer): the gradient's cosine with the vector, defended and not. */
export interface CosineRow {
  defence: string;
  coef: number | null;
  vector: string;
  layer: number;
  defended: number | null;
  none: number | null;
}

/** grad_cosine.json's metrics (the schema below says the same). */
export interface GradCosineMetrics {
  over_checkpoints: { name: string; layer_means: CosineRow[] }[];
  samples: number;
  /** per sample */
  rows: (CosineRow & { sample: number })[];
  layer_means: CosineRow[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const gradCosineResult: ResultKind = {
  kind: "grad_cosine",
  metricsSchema: {
    type: "object",
    required: ["samples", "rows", "layer_means"],
    properties: {
      layer_means: {
        type: "array",
        items: { type: "object", required: ["defence", "coef", "vector", "layer", "defended", "none"] },
      },
      rows: {
        type: "array",
        items: { type: "object", required: ["sample", "defence", "vector", "layer", "defended", "none"] },
      },
    },
  },
  figures: gradCosineFigures,
};

export const gradCosineExperiment: Experiment<GradCosineConfig> = {
  name: "grad_cosine",
  description: "cos(dL/dh_l, v) per layer, sample and defence",
  results: [gradCosineResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c: GradCosineConfig = {
      ...readBase(r, 64),
      checkpoints: r.has("checkpoints")
        ? r.list("checkpoints").map((k) => {
          const o = { name: k.str("name"), path: k.str("path") };
          k.done();
          return o;
        })
        : (r.any("checkpoints"), []),
      vectors: readVectors(r),
      random: r.bool("random", true),
      defences: r.list("defences").map(readDefence),
      coefs: r.has("coefs") ? r.numList("coefs") : (r.any("coefs"), null),
      output: r.name("output", "grad_cosine"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c });
    const analyse = async (lora: LoraSet | null, label: string) => {
      const rows: {
        sample: number;
        defence: string;
        coef: number | null;
        vector: string;
        layer: number;
        defended: number;
        none: number;
      }[] = [];
      const variants = c.defences.flatMap((
        s,
      ) => (s.steer && c.coefs
        ? c.coefs.map((k) => ({ s, coef: k as number | null }))
        : [{ s, coef: null }])
      );
      for (let i = 0; i < x.records.length; i++) {
        ctx.progress(`grad_cosine${label}: sample ${i + 1}/${x.records.length}`);
        for (const { s, coef } of variants) {
          const { none, defended } = await defendedPair(
            x.model,
            x.records[i],
            await toDefence(ctx.gpu, x, s, coef ?? undefined),
            { lora, index: i },
          );
          for (const [name, vec] of x.vectors) {
            const a = meanTokenCosine(defended, vec, x.d), b = meanTokenCosine(none, vec, x.d);
            a.forEach((v, l) =>
              rows.push({
                sample: i,
                defence: s.name,
                coef: coef ?? s.steer?.coef ?? null,
                vector: name,
                layer: l,
                defended: v,
                none: b[l],
              })
            );
          }
        }
      }
      const keys = [...new Set(rows.map((r) => `${r.defence}|${r.coef}|${r.vector}|${r.layer}`))];
      const layerMeans = keys.map((k) => {
        const sel = rows.filter((r) => `${r.defence}|${r.coef}|${r.vector}|${r.layer}` === k);
        const f = sel[0];
        return {
          defence: f.defence,
          coef: f.coef,
          vector: f.vector,
          layer: f.layer,
          defended: finite(mean(sel.map((r) => r.defended).filter(Number.isFinite))),
          none: finite(mean(sel.map((r) => r.none).filter(Number.isFinite))),
        };
      });
      return { rows, layerMeans };
    };
    const { rows, layerMeans } = await analyse(x.lora, "");
    const overCheckpoints = [];
    for (const k of c.checkpoints) {
      const lora = await LoraSet.load(ctx.gpu, x.model.cfg, k.path);
      overCheckpoints.push({ name: k.name, layer_means: (await analyse(lora, ` [${k.name}]`)).layerMeans });
      lora.store.destroy();
    }
    const metrics: GradCosineMetrics = {
      over_checkpoints: overCheckpoints,
      samples: x.records.length,
      rows: rows.map((r) => ({ ...r, defended: finite(r.defended), none: finite(r.none) })),
      layer_means: layerMeans,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "grad_cosine", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function gradCosineFigures(r: Json, file: string): Figure[] {
  const m: GradCosineMetrics = r.metrics, cfg = r.config;
  const trait = cfg.vectors?.[0]?.name ?? "trait";
  const means = m.layer_means.filter((x: Json) => x.vector === trait).map((x: Json) => ({
    ...x,
    series: `${x.defence}${x.coef !== null ? ` ε=${x.coef}` : ""}`,
  }));
  const none = m.layer_means.filter((x: Json) =>
    x.vector === trait && x.defence === m.layer_means[0].defence && x.coef === m.layer_means[0].coef
  ).map((x: Json) => ({ ...x, series: "no defence", defended: x.none }));
  const layer =
    cfg.defences?.find((d: Json) => d.steer?.layers && d.steer.layers !== "all")?.steer.layers[0] ??
      Math.floor(m.layer_means.reduce((a: number, x: Json) => Math.max(a, x.layer), 0) / 2);
  const scatter = m.rows.filter((x: Json) =>
    x.vector === trait && x.layer === layer && x.defended !== null && x.none !== null
  );
  return [
    {
      title: `Gradient cosine with the ${trait} vector, per layer`,
      signature: gradCosineSignature(r),
      caption:
        `${file}: mean over ${m.samples} samples of the per-sample mean over loss tokens of cos(dL/dh_l, v_l), with each defence and without (no defence). Model ${cfg.model}.`,
      spec: lineChart([...none, ...means], "layer", "defended", "series", {
        x: "layer l",
        y: "mean cos(∇h L, v)",
      }),
    },
    {
      title: `Per-sample gradient cosine at layer ${layer}: defence included vs excluded`,
      caption:
        `${file}: one point per sample and defence; the dashed line is the identity (no change). Points above it: the defence turned the gradient towards v.`,
      spec: {
        width: FIGURE_WIDTH,
        height: FIGURE_HEIGHT,
        layer: [
          {
            data: { values: scatter },
            mark: "point",
            encoding: {
              x: { field: "none", type: "quantitative", title: "cos without defence" },
              y: { field: "defended", type: "quantitative", title: "cos with defence" },
              color: { field: "defence", type: "nominal" },
            },
          },
          {
            data: { values: [{ v: -1 }, { v: 1 }] },
            mark: { type: "line", strokeDash: [4, 4], color: "gray" },
            encoding: { x: { field: "v", type: "quantitative" }, y: { field: "v", type: "quantitative" } },
          },
        ],
      },
    },
  ];
}
