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

export const gradCosineExperiment: Experiment<GradCosineConfig> = {
  name: "grad_cosine",
  description: "cos(dL/dh_l, v) per layer, sample and defence",
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
    const metrics = {
      over_checkpoints: overCheckpoints,
      samples: x.records.length,
      rows: rows.map((r) => ({ ...r, defended: finite(r.defended), none: finite(r.none) })),
      layer_means: layerMeans,
    };
    await writeResult(join(ctx.runDir, `${c.output}.json`), "grad_cosine", c, c.model, started, metrics);
    return metrics;
  },
};
