// Gradient-difference PCA: per sample, the loss-token mean of dL/dh_l with the defence minus without,
// stacked, divided by the Frobenius norm; uncentered second moment / (N-1); components up to 95 %
// cumulative variance, each oriented to a non-negative cosine with the trait vector; explained
// variance, cosines with reference vectors, per-sample projections, and the mean difference's cosine.

import { join } from "node:path";
import { checkLayers } from "../defence/defence.ts";
import { cosine, defendedPair, tokenMean } from "../research/analysis.ts";
import { uncenteredPca } from "../research/pca.ts";
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

export const gradPcaExperiment: Experiment<GradPcaConfig> = {
  name: "grad_pca",
  description: "uncentered PCA of defended - defenceless gradients at a layer",
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
    checkLayers([c.layer], x.L - 1, "grad_pca");
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
    const metrics = {
      samples: rows.length,
      layer: c.layer,
      method: pca.method,
      explained: pca.explained,
      component_cosines: pca.components.map((comp) =>
        Object.fromEntries(refs.map((n) => [n, cosine(comp, row(n))]))
      ),
      mean_difference_cosines: Object.fromEntries(refs.map((n) => [n, cosine(meanDiff, row(n))])),
      projections: pca.projections,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "grad_pca", c, c.model, started, metrics);
    return metrics;
  },
};
