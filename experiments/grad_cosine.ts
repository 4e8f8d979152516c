// Gradient cosine analysis: C_t(l, v) = cos(dL/dh_{l,t}, v_l) per token, averaged per sample over the
// loss tokens, for every layer; with the defence included and excluded (per-sample pairs for scatter
// plots) and per-layer means; against several comparison vectors (the trait vector, another trait's,
// a random vector of equal norm). For IP only the tokens after the prompt are compared. Coefficient
// sweeps of a PPS defence give the cross-trait analysis (trait A data, trait B vector).

import { join } from "node:path";
import { type AlignedGradients, cosine, defendedPairs, meanTokenCosine } from "../research/analysis.ts";
import { LoraSet } from "../models/lora.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { ConfigReader, type Experiment, finite, mean, sem, writeResult } from "./common.ts";
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
  lineChartSe,
  type ResultKind,
} from "./result_kind.ts";
import { fig3Check, sentence } from "./signatures.ts";

interface GradCosineConfig {
  model: string;
  adapter: string | null;
  /** also analyse these adapters (e.g. the checkpoints of a training run): per-layer means each */
  checkpoints: { name: string; path: string }[];
  /** Figure 11: training runs (a conditions cell's or a train output folder) whose every checkpoint is
   * analysed under the run's own defence (one of `defences` by name; null: none), step 0 being the
   * analysed model itself */
  over_training: { run: string; defence: string | null }[];
  data: string;
  limit: number;
  vectors: VectorSpec[];
  random: boolean;
  defences: DefenceSpec[];
  coefs: number[] | null;
  output: string;
}

/** One (defence, coefficient, vector, layer): the gradient's cosine with the vector, defended and not. In
 * layer means: the mean over samples and its standard error (per-sample rows carry no SE). */
export interface CosineRow {
  defence: string;
  coef: number | null;
  vector: string;
  layer: number;
  defended: number | null;
  none: number | null;
  defended_se?: number | null;
  none_se?: number | null;
  /** samples behind a layer mean */
  n?: number;
}

/** Response positions 0..POSITION_BINS-1 on their own; the rest pooled in bin POSITION_BINS ("16+"). */
export const POSITION_BINS = 16;

/** The cosine with the trait vector (the first of `vectors`) at one response position bin and layer, under a
 * defence ("none": without one): the mean over samples of each sample's mean over the bin's tokens. */
export interface PositionRow {
  defence: string;
  coef: number | null;
  layer: number;
  /** 0..15, or 16 for every position from 16 on */
  position: number;
  mean: number | null;
  se: number | null;
  n: number;
}

/** grad_cosine.json's metrics (the schema below says the same). */
export interface GradCosineMetrics {
  over_checkpoints: { name: string; layer_means: CosineRow[] }[];
  samples: number;
  /** per sample */
  rows: (CosineRow & { sample: number })[];
  layer_means: CosineRow[];
  positions: PositionRow[];
  /** Figure 11: per run and checkpoint step, the cosine with the trait vector under the run's defence */
  over_training: {
    run: string;
    defence: string | null;
    step: number;
    layers: { layer: number; mean: number | null; se: number | null }[];
  }[];
}

/** Per response-position bin, per layer: the sample's mean cos(dL/dh_{l,t}, v_l) over the bin's tokens. */
export function positionCosines(g: AlignedGradients, vec: Float32Array, d: number): number[][] {
  return g.grad.map((h, l) => {
    const sum = new Array(POSITION_BINS + 1).fill(0), cnt = new Array(POSITION_BINS + 1).fill(0);
    let p = 0;
    for (let t = 0; t < g.predicts.length; t++) {
      if (!g.predicts[t]) continue;
      const bin = Math.min(p++, POSITION_BINS);
      sum[bin] += cosine(h, vec, t * d, l * d, d);
      cnt[bin]++;
    }
    return sum.map((x, i) => (cnt[i] ? x / cnt[i] : NaN));
  });
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const gradCosineResult: ResultKind = {
  kind: "grad_cosine",
  section: "fig3",
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
      positions: {
        type: "array",
        items: { type: "object", required: ["defence", "coef", "layer", "position", "mean", "se", "n"] },
      },
      over_training: {
        type: "array",
        items: { type: "object", required: ["run", "defence", "step", "layers"] },
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
      over_training: r.has("over_training")
        ? r.list("over_training").map((k) => {
          const o = { run: k.str("run"), defence: k.optStr("defence") };
          k.done();
          return o;
        })
        : (r.any("over_training"), []),
      vectors: readVectors(r),
      random: r.bool("random", true),
      defences: r.list("defences").map(readDefence),
      coefs: r.has("coefs") ? r.numList("coefs") : (r.any("coefs"), null),
      output: r.name("output", "grad_cosine"),
    };
    r.done();
    for (const o of c.over_training) {
      if (o.defence !== null && !c.defences.some((d) => d.name === o.defence)) {
        throw new Error(
          `${file}: key 'over_training' names defence '${o.defence}', which 'defences' does not define`,
        );
      }
    }
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    // the runs' checkpoints are listed before any work: a wrong folder is an error now, not after hours
    const runs = await Promise.all(c.over_training.map(async (o) => {
      const cks = await listCheckpoints(o.run);
      if (!cks.length) throw new Error(`over_training: ${o.run} has no checkpoints (checkpoints/step-*)`);
      return { ...o, checkpoints: cks.map((path) => ({ path, step: Number(/step-(\d+)$/.exec(path)![1]) })) };
    }));
    const x = await loadAll(ctx.gpu, { ...c });
    const variants = c.defences.flatMap((s) =>
      s.steer && c.coefs ? c.coefs.map((k) => ({ s, coef: k as number | null })) : [{ s, coef: null }]
    );
    // each defence's vectors uploaded once, not per sample
    const applied = await Promise.all(variants.map((v) => toDefence(ctx.gpu, x, v.s, v.coef ?? undefined)));
    const trait = c.vectors[0]?.name;
    const analyse = async (lora: LoraSet | null, label: string, only?: number) => {
      const rows: {
        sample: number;
        defence: string;
        coef: number | null;
        vector: string;
        layer: number;
        defended: number;
        none: number;
      }[] = [];
      // per (defence | coef | layer | bin): each sample's value
      const pos = new Map<
        string,
        { defence: string; coef: number | null; layer: number; bin: number; xs: number[] }
      >();
      const addPositions = (defence: string, coef: number | null, g: AlignedGradients) => {
        positionCosines(g, x.vectors.get(trait)!, x.d).forEach((bins, layer) =>
          bins.forEach((v, bin) => {
            if (!Number.isFinite(v)) return;
            const k = `${defence}|${coef}|${layer}|${bin}`;
            if (!pos.has(k)) pos.set(k, { defence, coef, layer, bin, xs: [] });
            pos.get(k)!.xs.push(v);
          })
        );
      };
      for (let i = 0; i < x.records.length; i++) {
        ctx.progress(`grad_cosine${label}: sample ${i + 1}/${x.records.length}`);
        const chosen = variants.map((_, vi) => vi).filter((vi) => only === undefined || vi === only);
        const pairs = await defendedPairs(x.model, x.records[i], chosen.map((vi) => applied[vi]), {
          lora,
          index: i,
        });
        for (const [j, vi] of chosen.entries()) {
          const { s, coef } = variants[vi];
          const { none, defended } = pairs[j];
          const rowCoef = coef ?? s.steer?.coef ?? null;
          if (trait) {
            if (vi === (only ?? 0)) addPositions("none", null, none);
            addPositions(s.name, rowCoef, defended);
          }
          for (const [name, vec] of x.vectors) {
            const a = meanTokenCosine(defended, vec, x.d), b = meanTokenCosine(none, vec, x.d);
            a.forEach((v, l) =>
              rows.push({
                sample: i,
                defence: s.name,
                coef: rowCoef,
                vector: name,
                layer: l,
                defended: v,
                none: b[l],
              })
            );
          }
        }
      }
      const groups = new Map<string, typeof rows>();
      for (const r of rows) {
        const k = `${r.defence}|${r.coef}|${r.vector}|${r.layer}`;
        if (!groups.has(k)) groups.set(k, []);
        groups.get(k)!.push(r);
      }
      const layerMeans: CosineRow[] = [...groups.values()].map((sel) => {
        const f = sel[0];
        const dx = sel.map((r) => r.defended).filter(Number.isFinite);
        const nx = sel.map((r) => r.none).filter(Number.isFinite);
        return {
          defence: f.defence,
          coef: f.coef,
          vector: f.vector,
          layer: f.layer,
          defended: finite(mean(dx)),
          none: finite(mean(nx)),
          defended_se: finite(sem(dx)),
          none_se: finite(sem(nx)),
          n: Math.min(dx.length, nx.length),
        };
      });
      const positions: PositionRow[] = [...pos.values()].map((p) => ({
        defence: p.defence,
        coef: p.coef,
        layer: p.layer,
        position: p.bin,
        mean: finite(mean(p.xs)),
        se: finite(sem(p.xs)),
        n: p.xs.length,
      }));
      return { rows, layerMeans, positions };
    };
    const { rows, layerMeans, positions } = await analyse(x.lora, "");
    const overCheckpoints = [];
    for (const k of c.checkpoints) {
      const lora = await LoraSet.load(ctx.gpu, x.model.cfg, k.path);
      overCheckpoints.push({ name: k.name, layer_means: (await analyse(lora, ` [${k.name}]`)).layerMeans });
      lora.store.destroy();
    }
    // Figure 11: each run's checkpoints under its own defence (the trait vector only)
    const overTraining: GradCosineMetrics["over_training"] = [];
    for (const o of runs) {
      const vi = o.defence === null ? 0 : variants.findIndex((v) => v.s.name === o.defence);
      const pick = (means: CosineRow[]) =>
        means.filter((m) => m.vector === trait).map((m) => ({
          layer: m.layer,
          mean: o.defence === null ? m.none : m.defended,
          se: (o.defence === null ? m.none_se : m.defended_se) ?? null,
        }));
      const v = variants[vi], vCoef = v.coef ?? v.s.steer?.coef ?? null;
      const start = layerMeans.filter((m) => m.defence === v.s.name && m.coef === vCoef);
      overTraining.push({ run: o.run, defence: o.defence, step: 0, layers: pick(start) });
      for (const ck of o.checkpoints) {
        const lora = await LoraSet.load(ctx.gpu, x.model.cfg, ck.path);
        try {
          const means = (await analyse(lora, ` [${o.run} step ${ck.step}]`, vi)).layerMeans;
          overTraining.push({ run: o.run, defence: o.defence, step: ck.step, layers: pick(means) });
        } finally {
          lora.store.destroy();
        }
      }
    }
    const metrics: GradCosineMetrics = {
      over_checkpoints: overCheckpoints,
      over_training: overTraining,
      samples: x.records.length,
      rows: rows.map((r) => ({ ...r, defended: finite(r.defended), none: finite(r.none) })),
      layer_means: layerMeans,
      positions,
    };
    for (const d of applied) for (const t of d.steer?.vectors.rows ?? []) t?.dispose();
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
  ).map((x: Json) => ({ ...x, series: "no defence", defended: x.none, defended_se: x.none_se }));
  const layer =
    cfg.defences?.find((d: Json) => d.steer?.layers && d.steer.layers !== "all")?.steer.layers[0] ??
      Math.floor(m.layer_means.reduce((a: number, x: Json) => Math.max(a, x.layer), 0) / 2);
  const scatter = m.rows.filter((x: Json) =>
    x.vector === trait && x.layer === layer && x.defended !== null && x.none !== null
  );
  return [
    {
      title: `Gradient cosine with the ${trait} vector, per layer`,
      signature: sentence(fig3Check(r)),
      caption:
        `${file}: mean over ${m.samples} samples (bars ± 1 SE) of the per-sample mean over the response positions of cos(dL/dh_l, v_l), with each defence and without (no defence). At the last layer the vector's row is after the final norm and the gradient before it (the signature leaves that layer out). Model ${cfg.model}.`,
      spec: lineChartSe([...none, ...means], "layer", "defended", "defended_se", "series", {
        x: "layer l",
        y: "mean cos(∇h L, v)",
      }),
    },
    ...positionFigure(m, trait, layer, file),
    ...overTrainingFigure(m, trait, layer, file),
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

/** Figure: the cosine per response position at the steering layer, with and without each defence. */
function positionFigure(m: GradCosineMetrics, trait: string, layer: number, file: string): Figure[] {
  const rows = (m.positions ?? []).filter((p) => p.layer === layer);
  if (!rows.length) return [];
  const values = rows.map((p) => ({
    ...p,
    series: `${p.defence === "none" ? "no defence" : p.defence}${p.coef !== null ? ` ε=${p.coef}` : ""}`,
    at: p.position < POSITION_BINS ? String(p.position) : `${POSITION_BINS}+`,
  }));
  return [{
    title: `Gradient cosine with the ${trait} vector per response position, layer ${layer}`,
    caption:
      `${file}: mean over samples (bars ± 1 SE) of cos(dL/dh_{l,t}, v_l) at the t-th response position (0 = the first response token's prediction; ${POSITION_BINS}+ = each sample's mean over the rest).`,
    spec: lineChartSe(
      values,
      "at",
      "mean",
      "se",
      "series",
      { x: "response position", y: "mean cos" },
      "ordinal",
    ),
  }];
}

/** Figure 11: the cosine at the steering layer over each run's training, under its own defence. */
function overTrainingFigure(m: GradCosineMetrics, trait: string, layer: number, file: string): Figure[] {
  const values = (m.over_training ?? []).flatMap((o) =>
    o.layers.filter((x) => x.layer === layer).map((x) => ({
      step: o.step,
      mean: x.mean,
      se: x.se,
      series: `${o.run.split("/").pop()} (${o.defence ?? "no defence"})`,
    }))
  );
  if (!values.length) return [];
  return [{
    title: `Gradient cosine with the ${trait} vector over training, layer ${layer} (Fig. 11)`,
    caption:
      `${file}: at each checkpoint of each run, the mean over samples (bars ± 1 SE) of cos(dL/dh_l, v_l) with the run's own defence in the forward pass; step 0 is the analysed model.`,
    spec: lineChartSe(values, "step", "mean", "se", "series", { x: "training step", y: "mean cos" }),
  }];
}
