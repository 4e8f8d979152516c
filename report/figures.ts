// Vega-Lite figure specs for each kind of result JSON. Each returns figures with a caption that says
// what was run; the page builder renders them to SVG headlessly.

import {
  gradCosineSignature,
  gradPcaSignature,
  lossSweepSignature,
  signForcingFigure,
} from "./signatures.ts";

/** A parsed result file (shapes vary by experiment; each reader checks what it uses). */
// deno-lint-ignore no-explicit-any
export type Json = any;

export interface Figure {
  title: string;
  caption: string;
  /** whether the run shows the paper's signature for this figure, in words (report/signatures.ts) */
  signature?: string;
  spec: Record<string, unknown>;
}

const W = 420, H = 260;
const line = (
  values: unknown[],
  x: string,
  y: string,
  color: string,
  title: { x: string; y: string },
  extra: Record<string, unknown> = {},
) => ({
  width: W,
  height: H,
  data: { values },
  mark: { type: "line", point: true },
  encoding: {
    x: { field: x, type: "quantitative", title: title.x },
    y: { field: y, type: "quantitative", title: title.y },
    color: { field: color, type: "nominal" },
    ...extra,
  },
});

function gradCosine(r: Json, file: string): Figure[] {
  const m = r.metrics, cfg = r.config;
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
      spec: line([...none, ...means], "layer", "defended", "series", {
        x: "layer l",
        y: "mean cos(∇h L, v)",
      }),
    },
    {
      title: `Per-sample gradient cosine at layer ${layer}: defence included vs excluded`,
      caption:
        `${file}: one point per sample and defence; the dashed line is the identity (no change). Points above it: the defence turned the gradient towards v.`,
      spec: {
        width: W,
        height: H,
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

function lossSweep(r: Json, file: string): Figure[] {
  const m = r.metrics, layer = r.config.layers[0];
  const vals = m.sweep.map((s: Json) => ({
    coef: s.coef,
    loss: s.loss,
    cos: s.cos[layer],
    series: s.ip ? "with IP prompt" : "without IP",
  }));
  return [
    {
      title: "Loss against steering intensity",
      signature: lossSweepSignature(r),
      caption:
        `${file}: mean per-token loss over response tokens of ${m.samples} samples when steering layers ${r.config.layers} with ε·v.`,
      spec: line(vals, "coef", "loss", "series", { x: "ε", y: "mean loss" }),
    },
    {
      title: `Gradient cosine against steering intensity (layer ${layer})`,
      caption: `${file}: mean cos(∇h L, v) at layer ${layer} for each ε.`,
      spec: line(vals, "coef", "cos", "series", { x: "ε", y: "mean cos(∇h L, v)" }),
    },
  ];
}

function gradPca(r: Json, file: string): Figure[] {
  const m = r.metrics;
  const ev = m.explained.map((e: number, i: number) => ({ component: `PC${i + 1}`, explained: e }));
  const cos = m.component_cosines.flatMap((c: Json, i: number) =>
    Object.entries(c).map(([k, v]) => ({ component: `PC${i + 1}`, vector: k, cos: v }))
  );
  return [
    {
      title: "Gradient-difference PCA: explained variance",
      signature: gradPcaSignature(r),
      caption:
        `${file}: uncentered PCA (${m.method} path) of per-sample defended − defenceless gradients at layer ${m.layer}, ${m.samples} samples; components up to 95 % of the variance.`,
      spec: {
        width: W,
        height: H,
        data: { values: ev },
        mark: "bar",
        encoding: {
          x: { field: "component", type: "nominal" },
          y: { field: "explained", type: "quantitative", title: "fraction of variance" },
        },
      },
    },
    {
      title: "PCA components: cosine with reference vectors",
      caption: `${file}: each component is oriented to a non-negative cosine with the trait vector.`,
      spec: {
        width: W,
        height: H,
        data: { values: cos },
        mark: "bar",
        encoding: {
          x: { field: "component", type: "nominal" },
          xOffset: { field: "vector" },
          y: { field: "cos", type: "quantitative" },
          color: { field: "vector", type: "nominal" },
        },
      },
    },
  ];
}

function ipVsPps(r: Json, file: string): Figure[] {
  const vals = r.metrics.sweep.flatMap((s: Json) =>
    s.cos.map((c: number, l: number) => ({ layer: l, cos: c, series: `ε=${s.coef}` }))
  );
  return [{
    title: "IP gradient vs prompt-difference PPS gradient",
    caption:
      `${file}: tokenwise cos between the gradient under the IP prompt and under steering with its prompt-difference vector at all layers, on the aligned tokens after the prompt; ${r.metrics.samples} samples.`,
    spec: line(vals, "layer", "cos", "series", { x: "layer l", y: "mean tokenwise cos" }),
  }];
}

function projections(r: Json, file: string): Figure[] {
  const vals = r.metrics.projections.map((p: Json) => ({ ...p, series: `${p.model} · ${p.vector}` }));
  return [{
    title: "Activation projections",
    caption:
      `${file}: response-averaged activations (defence excluded) projected on each vector, per layer; ${r.metrics.samples} samples.`,
    spec: line(vals, "layer", "mean", "series", { x: "layer l", y: "mean projection a·v/|v|" }),
  }];
}

function deltaH(r: Json, file: string): Figure[] {
  const vals = r.metrics.layer_means.flatMap((x: Json) => [
    { layer: x.layer, cos: x.cos_grad, series: `${x.defence}: cos(Δh, ∇h)` },
    { layer: x.layer, cos: x.cos_vector, series: `${x.defence}: cos(Δh, v)` },
  ]);
  return [{
    title: "Δh after one step vs ∇h and the trait vector",
    caption:
      `${file}: one optimizer step (lr ${r.config.lr}) per sample on a fresh LoRA; Δh measured without the defence; mean over loss tokens and ${r.metrics.samples} samples.`,
    spec: line(vals, "layer", "cos", "series", { x: "layer l", y: "mean cosine" }),
  }];
}

function conditions(r: Json, file: string): Figure[] {
  const runs = r.metrics.runs.map((x: Json) => ({ ...x, cell: `${x.pre} → ${x.post}` }));
  return [
    {
      title: `Trait after fine-tuning by condition (${r.metrics.trait})`,
      caption:
        `${file}: judge ${r.metrics.judge}; mean trait score of the fine-tuned model with the defence removed (error bars ± SEM over samples); baseline ${
          r.metrics.baseline.trait_mean?.toFixed?.(1)
        }.`,
      spec: {
        width: W,
        height: H,
        data: { values: runs },
        layer: [{
          mark: "bar",
          encoding: {
            x: { field: "condition", type: "nominal" },
            xOffset: { field: "cell" },
            y: { field: "trait_after", type: "quantitative", title: "trait score" },
            color: { field: "cell", type: "nominal" },
          },
        }, {
          mark: { type: "errorbar" },
          encoding: {
            x: { field: "condition", type: "nominal" },
            xOffset: { field: "cell" },
            y: { field: "lo", type: "quantitative" },
            y2: { field: "hi" },
          },
          transform: [{ calculate: "datum.trait_after - (datum.trait_after_sem || 0)", as: "lo" }, {
            calculate: "datum.trait_after + (datum.trait_after_sem || 0)",
            as: "hi",
          }],
        }],
      },
    },
    {
      title: "Pre-finetune × post-finetune matrix",
      caption:
        `${file}: mean trait score after the post-finetune stage for each starting model (rows) and training data (columns), one panel per condition.`,
      spec: {
        data: { values: runs },
        facet: { field: "condition", type: "nominal" },
        columns: 3,
        spec: {
          width: 160,
          height: 120,
          mark: "rect",
          encoding: {
            x: { field: "post", type: "nominal" },
            y: { field: "pre", type: "nominal" },
            color: { field: "trait_after", type: "quantitative", aggregate: "mean" },
          },
        },
      },
    },
    ...signForcingFigure(r, file),
  ];
}

function conditionsRun(r: Json, file: string): Figure[] {
  const m = r.metrics;
  const vals = m.over_training.map((o: Json) => ({
    step: o.step,
    trait: o.summary.trait_mean,
    coherence: o.summary.coherence_mean,
  }));
  return [{
    title: `Trait over training: ${m.id}`,
    caption: `${file}: trait and coherence at each checkpoint (defence removed).`,
    spec: {
      width: W,
      height: H,
      data: { values: vals },
      transform: [{ fold: ["trait", "coherence"] }],
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "step", type: "quantitative" },
        y: { field: "value", type: "quantitative", title: "score" },
        color: { field: "key", type: "nominal" },
      },
    },
  }];
}

function evaluate(r: Json, file: string): Figure[] {
  const s = r.metrics.summary;
  return [{
    title: `Evaluation: ${r.metrics.trait}`,
    caption:
      `${file}: ${s.n} answers (${s.missing_trait} missing trait scores), judge ${r.metrics.judge}; model ${r.config.model}${
        r.config.adapter ? ` + ${r.config.adapter}` : ""
      }.`,
    spec: {
      width: 240,
      height: H,
      data: {
        values: [{ k: "trait", v: s.trait_mean, e: s.trait_sem ?? 0 }, {
          k: "coherence",
          v: s.coherence_mean,
          e: s.coherence_sem ?? 0,
        }],
      },
      mark: "bar",
      encoding: {
        x: { field: "k", type: "nominal", title: "" },
        y: { field: "v", type: "quantitative", title: "mean score" },
      },
    },
  }];
}

function extract(r: Json, file: string): Figure[] {
  const vals = r.metrics.norms.map((n: number, l: number) => ({
    layer: l,
    norm: n,
    series: r.metrics.trait,
  }));
  return [{
    title: `Persona vector norm per layer (${r.metrics.trait})`,
    caption: `${file}: ${r.metrics.kept} of ${r.metrics.total} pairs kept.`,
    spec: line(vals, "layer", "norm", "series", { x: "layer l", y: "|v_l|" }),
  }];
}

function crossTrait(r: Json, file: string): Figure[] {
  const m = r.metrics, layer = r.config.layers[0];
  const vals = m.cosines.map((c: Json) => ({
    coef: c.coef,
    cos: c.cos[layer],
    series: `cos with ${c.vector}`,
  }));
  const figs: Figure[] = [{
    title: `Cross-trait: ${m.trait_a} data steered with the ${m.trait_b} vector`,
    caption:
      `${file}: mean cos(∇h L, v) at layer ${layer} against the steering coefficient, with both traits' vectors, before training; ${m.samples} samples.`,
    spec: line(vals, "coef", "cos", "series", { x: "ε (trait-B vector)", y: "mean cos(∇h L, v)" }),
  }];
  if (m.after.length) {
    figs.push({
      title: `Cross-trait: ${m.trait_a} after training`,
      caption:
        `${file}: trait-${m.trait_a} score after training on the same data under each condition (from ${r.config.after}).`,
      spec: {
        width: W,
        height: H,
        data: { values: m.after },
        mark: "bar",
        encoding: {
          x: { field: "condition", type: "nominal" },
          y: { field: "trait_after", type: "quantitative", title: "trait score after" },
        },
      },
    });
  }
  return figs;
}

export const FIGURES: Record<string, (r: Json, file: string) => Figure[]> = {
  grad_cosine: gradCosine,
  loss_sweep: lossSweep,
  grad_pca: gradPca,
  ip_vs_pps: ipVsPps,
  projections,
  delta_h: deltaH,
  cross_trait: crossTrait,
  conditions,
  "conditions.run": conditionsRun,
  evaluate,
  extract,
};
