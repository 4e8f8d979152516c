// IP compared with an "equivalent" PPS: steer (at all layers) with prompt-difference vectors over a
// coefficient sweep, and compare token by token the IP gradient with the steered gradient on the
// aligned tokens after the prompt: the mean cosine per layer and coefficient.

import { join } from "node:path";
import { cosine, defendedPair, steerVectors } from "../lib/analysis.ts";
import { loadLayerVectors } from "../lib/vectors.ts";
import { ConfigReader, type Experiment, finite, mean, writeResult } from "./common.ts";
import { loadAll, readBase } from "./analysis_common.ts";

interface IpVsPpsConfig {
  model: string;
  adapter: string | null;
  data: string;
  limit: number;
  ip: string;
  prompt_vector: string;
  coefs: number[];
  output: string;
}

export const ipVsPpsExperiment: Experiment<IpVsPpsConfig> = {
  name: "ip_vs_pps",
  description: "tokenwise cosine between IP gradients and prompt-difference-steered gradients",
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const c = {
      ...readBase(r, 64),
      ip: r.str("ip"),
      prompt_vector: r.str("prompt_vector"),
      coefs: r.numList("coefs", [0, 0.25, 0.5, 1, 2]),
      output: r.str("output", "ip_vs_pps"),
    };
    r.done();
    return c;
  },
  async run(ctx, c) {
    const started = new Date();
    const x = await loadAll(ctx.gpu, { ...c, vectors: [], random: false });
    const vectors = steerVectors(ctx.gpu, await loadLayerVectors(c.prompt_vector, x.L, x.d), x.L, x.d);
    const all = Array.from({ length: x.L }, (_, l) => l);
    const acc = new Map<number, number[][]>(); // coef → per layer the per-sample means
    for (let i = 0; i < x.records.length; i++) {
      ctx.progress(`ip_vs_pps: sample ${i + 1}/${x.records.length}`);
      const ip = (await defendedPair(x.model, x.records[i], { ip: c.ip }, { lora: x.lora })).defended;
      for (const coef of c.coefs) {
        const st = (await defendedPair(x.model, x.records[i], { steer: { vectors, layers: all, coef } }, {
          lora: x.lora,
        })).defended;
        // aligned from the end: the IP run's tokens after the prompt against the plain run's last K tokens
        const K = ip.mask.length, off = st.mask.length - K;
        const perLayer = all.map((l) => {
          let s = 0, n = 0;
          for (let t = 0; t < K; t++) {
            if (!ip.mask[t]) continue;
            s += cosine(ip.grad[l], st.grad[l], t * x.d, (off + t) * x.d, x.d);
            n++;
          }
          return n ? s / n : NaN;
        });
        const list = acc.get(coef) ?? acc.set(coef, []).get(coef)!;
        list.push(perLayer);
      }
    }
    const sweep = c.coefs.map((coef) => ({
      coef,
      cos: all.map((l) => finite(mean(acc.get(coef)!.map((p) => p[l]).filter(Number.isFinite)))),
    }));
    const metrics = { samples: x.records.length, sweep };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "ip_vs_pps", c, c.model, started, metrics);
    return metrics;
  },
};
