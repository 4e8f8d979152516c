// Δh versus ∇h (appendix D): after one optimizer step on a single sample (fresh LoRA, with or without the
// defence while stepping), Δh = h_θ' − h_θ per token and layer, measured without the defence; its cosine
// with dL/dh (at θ, defenceless) and with the trait vector, averaged over the response positions.
// optimizer: sgd (default) takes θ' = θ − η∇θL, the step whose first-order effect D derives
// (Δh ≈ −η J Jᵀ ∇h); adamw takes the study's optimizer's first step, which from fresh moments is close to
// η·sign(∇θL) and so measures what one real training step does rather than the gradient relation.

import { SEED_RANGE } from "../lib/config.ts";
import { join } from "node:path";
import { Tensor } from "../lib/tensor.ts";
import { LORA_MODULES, LoraSet } from "../models/lora.ts";
import { hiddenStates } from "../research/activations.ts";
import { adamwStep, normPartials } from "../lib/ops/optim.ts";
import { addInPlace } from "../lib/ops/elementwise.ts";
import { cosine, defendedPair } from "../research/analysis.ts";
import { encodeRecord } from "../lib/text/dataset.ts";
import { ConfigReader, type Experiment, finite, mean, sem, writeResult } from "./common.ts";
import { type DefenceSpec, loadAll, readDefence, toDefence } from "./analysis_common.ts";
import { type Figure, type Json, lineChart, type ResultKind } from "./result_kind.ts";

interface DeltaHConfig {
  model: string;
  data: string;
  limit: number;
  vector: string;
  defences: DefenceSpec[];
  lr: number;
  optimizer: "sgd" | "adamw";
  r: number;
  alpha: number;
  seed: number;
  output: string;
}

/** delta_h.json's metrics (the schema below says the same). */
export interface DeltaHMetrics {
  samples: number;
  rows: {
    sample: number;
    defence: string;
    layer: number;
    cos_grad: number | null;
    cos_vector: number | null;
  }[];
  /** per defence and layer, the means over samples and their SEs */
  layer_means: {
    defence: string;
    layer: number;
    cos_grad: number | null;
    cos_vector: number | null;
    cos_grad_se?: number | null;
    cos_vector_se?: number | null;
  }[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const deltaHResult: ResultKind = {
  kind: "delta_h",
  section: "fig12",
  metricsSchema: {
    type: "object",
    required: ["samples", "rows", "layer_means"],
    properties: {
      layer_means: {
        type: "array",
        items: { type: "object", required: ["defence", "layer", "cos_grad", "cos_vector"] },
      },
    },
  },
  figures: deltaHFigures,
};

export const deltaHExperiment: Experiment<DeltaHConfig> = {
  name: "delta_h",
  description: "activation change after one step versus the residual-stream gradient",
  results: [deltaHResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      model: r.nonEmpty("model"),
      data: r.nonEmpty("data"),
      limit: r.num("limit", 16, { int: true, min: 1 }),
      vector: r.nonEmpty("vector"),
      defences: r.has("defences") ? r.list("defences").map(readDefence) : (r.any("defences"), []),
      lr: r.num("lr", 1e-4, { min: 0 }),
      optimizer: r.str("optimizer", "sgd") as "sgd",
      r: r.num("r", 8, { int: true, min: 1 }),
      alpha: r.num("alpha", 16, { min: 0 }),
      seed: r.num("seed", 0, SEED_RANGE),
      output: r.name("output", "delta_h"),
    };
    if (!["sgd", "adamw"].includes(c.optimizer)) {
      throw new Error(`${file}: key 'optimizer' must be sgd or adamw, found ${JSON.stringify(c.optimizer)}`);
    }
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, {
      ...c,
      adapter: null,
      vectors: [{ name: "trait", path: c.vector }],
      random: false,
    });
    const vec = x.vectors.get("trait")!;
    const conds: DefenceSpec[] = [{ name: "none", steer: null, ip: null }, ...c.defences];
    // each defence's vectors uploaded once, not per sample
    const applied = new Map(
      await Promise.all(conds.map(async (s) => [s, await toDefence(ctx.gpu, x, s)] as const)),
    );
    const rows: {
      sample: number;
      defence: string;
      layer: number;
      cos_grad: number | null;
      cos_vector: number | null;
    }[] = [];
    const clip = Tensor.empty(ctx.gpu, [4]);
    let partials: Tensor | null = null; // sized by the first adapter (they all have the same size)
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`delta_h: sample ${i + 1}/${x.records.length}`);
      const plain = encodeRecord(x.model.tokenizer!, x.records[i], { maxLength: 100_000 });
      for (const s of conds) {
        const lora = LoraSet.create(ctx.gpu, x.model.cfg, {
          r: c.r,
          alpha: c.alpha,
          dropout: 0,
          targetModules: [...LORA_MODULES],
          rslora: false,
        }, c.seed);
        const h0 = await hiddenStates(x.model, plain.ids, { lora });
        // gradients at θ: defenceless for the comparison; the step uses the defended run's LoRA gradient
        const { none } = await defendedPair(x.model, x.records[i], applied.get(s)!, {
          lora,
          index: i,
        });
        const st = lora.store;
        if (c.optimizer === "sgd") {
          // θ' = θ − η∇θL: the step D's first-order relation Δh ≈ −η J Jᵀ ∇h is about
          addInPlace(ctx.gpu, Tensor.view(st.p, 0, [st.total]), Tensor.view(st.g, 0, [st.total]), -c.lr);
        } else {
          // the study's optimizer; its first step from zero moments is close to sign descent, η·sign(∇θL)
          adamwStep(
            ctx.gpu,
            { p: st.p, g: st.g, m: st.m, v: st.v, total: st.total },
            { lr: c.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, maxGradNorm: 0 },
            partials ??= Tensor.empty(ctx.gpu, [normPartials(st.total)]),
            clip,
          );
        }
        const h1 = await hiddenStates(x.model, plain.ids, { lora });
        const T = plain.ids.length, K = none.predicts.length, off = T - K;
        for (let l = 0; l < x.boundaries; l++) {
          const cg: number[] = [], cv: number[] = [];
          const dh = h1[l].map((v, j) => v - h0[l][j]);
          for (let t = 0; t < K; t++) {
            if (!none.predicts[t]) continue;
            cg.push(cosine(dh, none.grad[l], (off + t) * x.d, t * x.d, x.d));
            cv.push(cosine(dh, vec, (off + t) * x.d, l * x.d, x.d));
          }
          rows.push({
            sample: i,
            defence: s.name,
            layer: l,
            cos_grad: finite(mean(cg)),
            cos_vector: finite(mean(cv)),
          });
        }
        st.destroy();
      }
    }
    partials?.dispose();
    clip.dispose();
    const keys = [...new Set(rows.map((r) => `${r.defence}|${r.layer}`))];
    const means = keys.map((k) => {
      const sel = rows.filter((r) => `${r.defence}|${r.layer}` === k);
      const vals = (f: (r: typeof sel[0]) => number | null) =>
        sel.map(f).filter((v): v is number => v !== null);
      return {
        defence: sel[0].defence,
        layer: sel[0].layer,
        cos_grad: finite(mean(vals((r) => r.cos_grad))),
        cos_vector: finite(mean(vals((r) => r.cos_vector))),
        cos_grad_se: finite(sem(vals((r) => r.cos_grad))),
        cos_vector_se: finite(sem(vals((r) => r.cos_vector))),
      };
    });
    const metrics: DeltaHMetrics = { samples: x.records.length, rows, layer_means: means };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "delta_h", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function deltaHFigures(r: Json, file: string): Figure[] {
  const m: DeltaHMetrics = r.metrics;
  const vals = m.layer_means.flatMap((x: Json) => [
    { layer: x.layer, cos: x.cos_grad, series: `${x.defence}: cos(Δh, ∇h)` },
    { layer: x.layer, cos: x.cos_vector, series: `${x.defence}: cos(Δh, v)` },
  ]);
  return [{
    title: "Δh after one step vs ∇h and the trait vector",
    caption:
      `${file}: one optimizer step (lr ${r.config.lr}) per sample on a fresh LoRA; Δh measured without the defence; mean over loss tokens and ${m.samples} samples.`,
    spec: lineChart(vals, "layer", "cos", "series", { x: "layer l", y: "mean cosine" }),
  }];
}
