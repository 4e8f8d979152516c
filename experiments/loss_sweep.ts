// Loss analysis: per-sample mean loss over the response tokens with and without a defence, and a
// steering-intensity sweep (with and without an IP prompt) reporting the mean loss and the mean
// gradient cosine with the steering vector at each intensity.

import { join } from "node:path";
import { type IpSpec, readIp } from "../defence/defence.ts";
import { defendedPair, meanTokenCosine, steerVectors } from "../research/analysis.ts";
import { ConfigReader, type Experiment, finite, mean, writeResult } from "./common.ts";
import { loadAll, readBase } from "./analysis_common.ts";
import { type Figure, type Json, lineChart, type ResultKind } from "./result_kind.ts";
import { lossSweepSignature } from "./signatures.ts";

interface LossSweepConfig {
  model: string;
  adapter: string | null;
  data: string;
  limit: number;
  vector: string;
  layers: number[];
  coefs: number[];
  ip: IpSpec | null;
  output: string;
}

/** One (IP or not, coefficient): mean loss over response tokens with and without steering, cosine per layer. */
export interface LossSweepRow {
  ip: boolean;
  coef: number;
  loss: number | null;
  loss_none: number | null;
  cos: (number | null)[];
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

export const lossSweepExperiment: Experiment<LossSweepConfig> = {
  name: "loss_sweep",
  description: "loss and gradient cosine against steering intensity, with and without IP",
  results: [lossSweepResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      ...readBase(r, 64),
      vector: r.str("vector"),
      layers: r.intList("layers"),
      coefs: r.numList("coefs", [0, 0.5, 1, 1.5, 2, 3, 5]),
      ip: r.nullable("ip", (k) => readIp(r, k)),
      output: r.name("output", "loss_sweep"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c, vectors: [{ name: "trait", path: c.vector }], random: false });
    const vec = x.vectors.get("trait")!;
    const vectors = steerVectors(ctx.gpu, vec, x.boundaries, x.d);
    const perSample: {
      sample: number;
      coef: number;
      ip: boolean;
      loss: number | null;
      loss_none: number | null;
      cos: (number | null)[];
    }[] = [];
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`loss_sweep: sample ${i + 1}/${x.records.length}`);
      for (const ip of c.ip ? [false, true] : [false]) {
        for (const coef of c.coefs) {
          const { none, defended } = await defendedPair(x.model, x.records[i], {
            ip: ip ? c.ip!.prompts : null,
            ipPlacement: c.ip ?? undefined,
            steer: { vectors, layers: c.layers, coef },
          }, { lora: x.lora, index: i });
          perSample.push({
            sample: i,
            coef,
            ip,
            loss: defended.lossTokens ? defended.loss / defended.lossTokens : null,
            loss_none: none.lossTokens ? none.loss / none.lossTokens : null,
            cos: meanTokenCosine(defended, vec, x.d).map(finite),
          });
        }
      }
    }
    const sweep = [...new Set(perSample.map((p) => `${p.ip}|${p.coef}`))].map((k) => {
      const sel = perSample.filter((p) => `${p.ip}|${p.coef}` === k);
      return {
        ip: sel[0].ip,
        coef: sel[0].coef,
        loss: finite(mean(sel.map((p) => p.loss).filter((v): v is number => v !== null))),
        loss_none: finite(mean(sel.map((p) => p.loss_none).filter((v): v is number => v !== null))),
        cos: Array.from(
          { length: x.boundaries },
          (_, l) => finite(mean(sel.map((p) => p.cos[l]).filter((v): v is number => v !== null))),
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
      spec: lineChart(vals, "coef", "loss", "series", { x: "ε", y: "mean loss" }),
    },
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
  const plain = rows.filter((r) => !r.ip), none = plain.find((r) => r.coef === 0);
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
