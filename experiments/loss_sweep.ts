// Loss analysis: per-sample mean loss over the response tokens with and without a defence, and a
// steering-intensity sweep (with and without an IP prompt) reporting the mean loss and the mean
// gradient cosine with the steering vector at each intensity.

import { join } from "node:path";
import { type IpSpec, readIp } from "../defence/defence.ts";
import { type AppliedDefence, defendedPairs, meanTokenCosine, steerVectors } from "../research/analysis.ts";
import { ConfigReader, type Experiment, finite, mean, sem, writeResult } from "./common.ts";
import { loadAll, readBase } from "./analysis_common.ts";
import {
  type Figure,
  FIGURE_HEIGHT,
  FIGURE_WIDTH,
  type Json,
  lineChart,
  type ResultKind,
} from "./result_kind.ts";
import { fig4abCheck, fig4cCheck, sentence } from "./signatures.ts";

interface LossSweepConfig {
  model: string;
  adapter: string | null;
  data: string;
  limit: number;
  vector: string;
  layers: number[];
  coefs: number[];
  ip: IpSpec | null;
  /** Figure 4a's control: steering with a Gaussian vector of the vector's per-layer norms, at each coef */
  random: boolean;
  /** Figure 4b's control: an off-trait (neutral) prompt bank, unsteered */
  control_ip: IpSpec | null;
  /** the PPS coefficient Figure 4a compares with the random vector at (null: the largest of coefs) */
  pps_coef: number | null;
  output: string;
}

/** What was in the forward pass: the trait vector or its random control at `coef`, and which prompt. */
export interface LossSweepVariant {
  /** the trait IP prompt */
  ip: boolean;
  /** the control (neutral) prompt instead */
  control_ip: boolean;
  vector: "trait" | "random";
  coef: number;
}

/** One variant: mean loss over response tokens with it and without any defence, cosine per layer. In the
 * sweep: means over samples with the SE of the loss and the paired SE of (loss - loss_none). */
export interface LossSweepRow extends LossSweepVariant {
  loss: number | null;
  loss_none: number | null;
  cos: (number | null)[];
  /** in the sweep: the SE over samples of each layer's cosine */
  cos_se?: (number | null)[];
  loss_se?: number | null;
  diff_se?: number | null;
}

/** loss_sweep.json's metrics (the schema below says the same). */
export interface LossSweepMetrics {
  samples: number;
  layers: number[];
  per_sample: (LossSweepRow & { sample: number })[];
  sweep: LossSweepRow[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const lossSweepResult: ResultKind = {
  kind: "loss_sweep",
  section: "fig4",
  metricsSchema: {
    type: "object",
    required: ["samples", "per_sample", "sweep"],
    properties: {
      sweep: {
        type: "array",
        items: { type: "object", required: ["ip", "coef", "loss", "loss_none", "cos"] },
      },
    },
  },
  figures: lossSweepFigures,
  outcomes: (rs) => rs.flatMap((r) => lossSweepSentences(r.file, r.result.metrics)),
};

/** The variants a config sweeps, in the result's order. */
export function lossSweepVariants(c: Pick<LossSweepConfig, "coefs" | "ip" | "random" | "control_ip">) {
  const v: LossSweepVariant[] = [];
  for (const ip of c.ip ? [false, true] : [false]) {
    for (const coef of c.coefs) v.push({ ip, control_ip: false, vector: "trait", coef });
  }
  if (c.random) {
    for (const coef of c.coefs.filter((k) => k !== 0)) {
      v.push({ ip: false, control_ip: false, vector: "random", coef });
    }
  }
  if (c.control_ip) v.push({ ip: false, control_ip: true, vector: "trait", coef: 0 });
  return v;
}

const variantKey = (v: LossSweepVariant) => `${v.ip}|${v.control_ip}|${v.vector}|${v.coef}`;

export const lossSweepExperiment: Experiment<LossSweepConfig> = {
  name: "loss_sweep",
  description: "loss and gradient cosine against steering intensity, with and without IP",
  results: [lossSweepResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      ...readBase(r, 64),
      vector: r.nonEmpty("vector"),
      layers: r.intList("layers"),
      coefs: r.numList("coefs", [0, 0.5, 1, 1.5, 2, 3, 5]),
      ip: r.nullable("ip", (k) => readIp(r, k)),
      random: r.bool("random", false),
      control_ip: r.nullable("control_ip", (k) => readIp(r, k)),
      pps_coef: r.nullable("pps_coef", (k) => r.num(k)),
      output: r.name("output", "loss_sweep"),
    };
    r.done();
    if (new Set(c.coefs).size !== c.coefs.length) throw new Error(`${file}: key 'coefs' repeats a value`);
    if (c.pps_coef !== null && !c.coefs.includes(c.pps_coef)) {
      throw new Error(`${file}: key 'pps_coef' (${c.pps_coef}) must be one of 'coefs'`);
    }
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, {
      ...c,
      vectors: [{ name: "trait", path: c.vector }],
      random: c.random,
    });
    const vec = x.vectors.get("trait")!;
    const gpuVectors = {
      trait: steerVectors(ctx.gpu, vec, x.boundaries, x.d),
      random: c.random ? steerVectors(ctx.gpu, x.vectors.get("random")!, x.boundaries, x.d) : null,
    };
    const variants = lossSweepVariants(c);
    const applied: AppliedDefence[] = variants.map((v) => {
      const bank = v.ip ? c.ip : v.control_ip ? c.control_ip : null;
      return {
        ip: bank?.prompts ?? null,
        ipPlacement: bank ?? undefined,
        steer: v.coef ? { vectors: gpuVectors[v.vector]!, layers: c.layers, coef: v.coef } : null,
      };
    });
    const perSample: (LossSweepRow & { sample: number })[] = [];
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`loss_sweep: sample ${i + 1}/${x.records.length}`);
      const pairs = await defendedPairs(x.model, x.records[i], applied, { lora: x.lora, index: i });
      pairs.forEach(({ none, defended }, j) =>
        perSample.push({
          sample: i,
          ...variants[j],
          loss: defended.lossTokens ? defended.loss / defended.lossTokens : null,
          loss_none: none.lossTokens ? none.loss / none.lossTokens : null,
          cos: meanTokenCosine(defended, vec, x.d).map(finite),
        })
      );
    }
    for (const g of [gpuVectors.trait, gpuVectors.random]) for (const t of g?.rows ?? []) t?.dispose();
    const sweep: LossSweepRow[] = variants.map((v) => {
      const sel = perSample.filter((p) => variantKey(p) === variantKey(v));
      const paired = sel.filter((p) => p.loss !== null && p.loss_none !== null);
      const loss = sel.map((p) => p.loss).filter((x): x is number => x !== null);
      return {
        ...v,
        loss: finite(mean(loss)),
        loss_none: finite(mean(sel.map((p) => p.loss_none).filter((x): x is number => x !== null))),
        loss_se: finite(sem(loss)),
        diff_se: finite(sem(paired.map((p) => p.loss! - p.loss_none!))),
        cos: Array.from(
          { length: x.boundaries },
          (_, l) => finite(mean(sel.map((p) => p.cos[l]).filter((v): v is number => v !== null))),
        ),
        cos_se: Array.from(
          { length: x.boundaries },
          (_, l) => finite(sem(sel.map((p) => p.cos[l]).filter((v): v is number => v !== null))),
        ),
      };
    });
    const metrics: LossSweepMetrics = {
      samples: x.records.length,
      layers: c.layers,
      per_sample: perSample,
      sweep,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "loss_sweep", c, c.model, started, metrics);
    return metrics;
  },
};

// ---- the result's figures and report lines

function lossSweepFigures(r: Json, file: string): Figure[] {
  const m: LossSweepMetrics = r.metrics, layer = r.config.layers[0];
  const vals = m.sweep.filter((s: Json) => !s.control_ip).map((s: Json) => ({
    coef: s.coef,
    loss: s.loss,
    cos: s.cos[layer],
    series: s.vector === "random" ? "random vector (same norms)" : s.ip ? "with IP prompt" : "without IP",
  }));
  return [
    {
      title: "Loss against steering intensity",
      signature: sentence(fig4cCheck(r)),
      caption:
        `${file}: mean per-token loss over response tokens of ${m.samples} samples when steering layers ${r.config.layers} with ε·v.`,
      spec: lineChart(vals, "coef", "loss", "series", { x: "ε", y: "mean loss" }),
    },
    ...controlScatter(r, file),
    {
      title: `Gradient cosine against steering intensity (layer ${layer})`,
      caption: `${file}: mean cos(∇h L, v) at layer ${layer} for each ε.`,
      spec: lineChart(vals, "coef", "cos", "series", { x: "ε", y: "mean cos(∇h L, v)" }),
    },
  ];
}

function lossSweepSentences(file: string, m: LossSweepMetrics): string[] {
  // a coefficient whose loss is missing (no response token counted) says nothing here
  const rows = (m.sweep ?? []).filter((r): r is LossSweepRow & { loss: number } => r.loss !== null);
  const plain = rows.filter((r) => !r.ip && !r.control_ip && r.vector !== "random");
  const none = plain.find((r) => r.coef === 0);
  if (!none) return [];
  const steered = plain.filter((r) => r.coef !== 0);
  const best = steered.reduce<typeof steered[0] | null>((b, r) => (!b || r.loss < b.loss ? r : b), null);
  const ip = rows.find((r) => r.ip && r.coef === 0);
  const bits = [
    `mean per-token loss on the sweep's training samples before fine-tuning (${file}): ${
      none.loss.toFixed(3)
    } without a defence`,
  ];
  if (best) {
    const last = steered[steered.length - 1];
    bits.push(
      `${best.loss.toFixed(3)} at the best steering intensity (ε ${best.coef})${
        last !== best ? `, ${last.loss.toFixed(3)} at ε ${last.coef}` : ""
      }`,
    );
  }
  if (ip) bits.push(`${ip.loss.toFixed(3)} with the inoculation prompt`);
  return [bits.join(", ") + ". A defence that lowers this loss leaves less for fine-tuning to learn."];
}

/** Figures 4a-b: per-sample loss with each defence against without, beside its control (the random vector at
 * the same ε; the control prompt). */
function controlScatter(r: Json, file: string): Figure[] {
  const ps: Json[] = r.metrics.per_sample ?? [];
  const rnd = ps.filter((x) => x.vector === "random");
  const k: number | null = r.config.pps_coef ?? (rnd.length ? Math.max(...rnd.map((x) => x.coef)) : null);
  const pick = (x: Json): string | null =>
    x.control_ip
      ? "control prompt"
      : x.ip && x.coef === 0
      ? "IP prompt"
      : k !== null && x.coef === k && !x.ip
      ? x.vector === "random" ? `random vector ε ${k}` : `trait vector ε ${k}`
      : null;
  const values = ps.filter((x) => pick(x) && x.loss !== null && x.loss_none !== null).map((x) => ({
    without: x.loss_none,
    with: x.loss,
    series: pick(x),
  }));
  if (!values.some((v) => /control|random/.test(v.series!))) return [];
  const all = values.flatMap((v) => [v.without, v.with]);
  const lo = Math.min(...all), hi = Math.max(...all);
  return [{
    title: "Per-sample loss with a defence against without it, beside the controls (Fig. 4a-b)",
    caption:
      `${file}: one point per sample and variant: mean per-token loss over response tokens without any defence (x) and with it (y); points below the dashed identity: the defence lowers the loss.`,
    signature: sentence(fig4abCheck(r, k ?? undefined)),
    spec: {
      width: FIGURE_WIDTH,
      height: FIGURE_HEIGHT,
      layer: [
        {
          data: { values },
          mark: "point",
          encoding: {
            x: { field: "without", type: "quantitative", title: "loss without defence" },
            y: { field: "with", type: "quantitative", title: "loss with it" },
            color: { field: "series", type: "nominal" },
          },
        },
        {
          data: { values: [{ v: lo }, { v: hi }] },
          mark: { type: "line", strokeDash: [4, 4], color: "gray" },
          encoding: { x: { field: "v", type: "quantitative" }, y: { field: "v", type: "quantitative" } },
        },
      ],
    },
  }];
}
