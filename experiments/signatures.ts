// The paper's signatures, checked on whatever a run produced: one sentence per figure saying what the paper
// found, what this run shows, and whether it shows the same thing. Computed from the results, never tuned:
// a world model (or a real one) that does not show a signature is reported as not showing it.

import type { Figure, Json } from "./result_kind.ts";

const f2 = (x: number) => x.toFixed(3);
const verdict = (ok: boolean) => ok ? "shows the paper's signature" : "does not show the paper's signature";

/**
 * Figure 3/10: without a defence the gradient's cosine with the trait vector is negative (amplifying); with
 * PPS along that vector it turns positive (attenuating); with IP it moves towards zero. Checked over the
 * layers after the steering layer's input (l >= 1), by majority of layers.
 */
export function gradCosineSignature(r: Json): string {
  const m = r.metrics, cfg = r.config;
  const trait = cfg.vectors?.[0]?.name ?? "trait";
  const rows = (m.layer_means as Json[]).filter((x) => x.vector === trait && x.layer >= 1);
  const defences = (cfg.defences ?? []) as Json[];
  // a defence's own rows: PPS at its configured coefficient (a `coefs` sweep adds others), IP without one
  const byDefence = (name: string): Json[] => {
    const d = defences.find((x) => x.name === name);
    const coef = d?.steer ? d.steer.coef : null;
    return rows.filter((x) =>
      x.defence === name && x.coef === coef && x.none !== null && x.defended !== null
    );
  };
  const parts: string[] = [];
  let ok = true, checked = 0;
  const first: Json[] = defences[0] ? byDefence(defences[0].name) : [];
  if (first.length) {
    const neg = first.filter((x) => x.none < 0).length;
    parts.push(
      `without a defence the cosine is negative at ${neg} of ${first.length} layers (paper: negative)`,
    );
    ok &&= neg > first.length / 2;
    checked++;
  }
  for (const d of defences) {
    const sel = byDefence(d.name);
    if (!sel.length) continue;
    if (d.steer && d.steer.vector === trait) {
      const pos = sel.filter((x) => x.defended > 0).length;
      parts.push(`with ${d.name} it is positive at ${pos} of ${sel.length} (paper: positive)`);
      ok &&= pos > sel.length / 2;
      checked++;
    } else if (d.ip && !/neutral|random/.test(d.name)) {
      const nearer = sel.filter((x) => Math.abs(x.defended) < Math.abs(x.none)).length;
      parts.push(
        `with ${d.name} it is nearer zero than without at ${nearer} of ${sel.length} (paper: near zero)`,
      );
      ok &&= nearer > sel.length / 2;
      checked++;
    }
  }
  if (!checked) return "";
  return `Signature (Fig. 3): ${parts.join("; ")} — ${verdict(ok)}.`;
}

/**
 * Figure 4c: the inoculation prompt lowers the loss on trait data; PPS lowers it a little at low intensity
 * but raises it at the largest (effective) intensities.
 */
export function lossSweepSignature(r: Json): string {
  const rows: Json[] = r.metrics.sweep ?? [];
  const plain = rows.filter((x) => !x.ip && x.loss !== null), none = plain.find((x) => x.coef === 0);
  const ip = rows.find((x) => x.ip && x.coef === 0 && x.loss !== null);
  if (!none) return "";
  const parts: string[] = [];
  let ok = true;
  if (ip) {
    parts.push(`IP takes the loss from ${f2(none.loss)} to ${f2(ip.loss)} (paper: lower)`);
    ok &&= ip.loss < none.loss;
  }
  const steered = plain.filter((x) => x.coef > 0);
  if (steered.length) {
    const min = Math.min(...steered.map((x) => x.loss)), last = steered[steered.length - 1];
    parts.push(
      `PPS at ε ${last.coef} gives ${f2(last.loss)}, against its minimum ${f2(min)} (paper: higher)`,
    );
    ok &&= last.loss > min;
  }
  return parts.length ? `Signature (Fig. 4c): ${parts.join("; ")} — ${verdict(ok)}.` : "";
}

/** Figure 18: PC1's share of the variance (paper: 60.3 % for PPS, 29.2 % for IP). */
export function gradPcaSignature(r: Json): string {
  const m = r.metrics, d = r.config.defence;
  const pc1 = m.explained?.[0];
  if (typeof pc1 !== "number") return "";
  const kind = d?.steer ? "PPS" : d?.ip ? "IP" : "this defence";
  return `PC1 explains ${
    (100 * pc1).toFixed(1)
  } % of the variance for ${kind} (paper: 60.3 % for PPS, 29.2 % for IP; the comparison of the two is under "What came out").`;
}

/** The "What came out" sentence comparing PC1 shares of PPS and IP runs. */
export function pcaComparison(results: { file: string; result: Json }[]): string[] {
  const pcs = results.filter((l) =>
    l.result?.experiment === "grad_pca" && l.result.metrics?.explained?.length
  );
  const share = (kind: "steer" | "ip") =>
    pcs.find((l) => l.result.config.defence?.[kind])?.result.metrics.explained[0] as number | undefined;
  const pps = share("steer"), ip = share("ip");
  if (pps === undefined || ip === undefined) return [];
  return [
    `Gradient-difference PCA: PC1 explains ${(100 * pps).toFixed(1)} % for PPS and ${
      (100 * ip).toFixed(1)
    } % for IP (paper: 60.3 % and 29.2 %, PPS's change concentrated in one direction) — ${
      verdict(pps > ip)
    }.`,
  ];
}

/** Sign-forced runs of a conditions result: `<defence>+<mode>[-random]`. */
function parseForced(name: string): { defence: string; mode: string; vector: string } {
  const m = /^(.*)\+(attenuate|amplify|neutralize)(-random)?$/.exec(name);
  return m
    ? { defence: m[1], mode: m[2], vector: m[3] ? "random" : "trait" }
    : { defence: name, mode: "default", vector: "" };
}

/**
 * Tables 1 and 2 as a figure: trait after training per defence × ablation vector (rows) and mode (columns).
 * The signature: along the trait vector, attenuate lowers the trait and amplify does not lower it; along a
 * random vector no mode moves it much (within 2 SE or 10 points of the default).
 */
export function signForcingFigure(r: Json, file: string): Figure[] {
  const runs: Json[] = r.metrics.runs ?? [];
  if (!runs.some((x) => parseForced(x.condition).mode !== "default")) return [];
  const cells: Json[] = [];
  for (const x of runs) {
    const p = parseForced(x.condition);
    if (p.mode === "default") {
      for (const v of ["trait", "random"]) {
        cells.push({ ...x, row: `${p.defence} / ${v}`, mode: "default", vector: v, defence: p.defence });
      }
    } else {cells.push({
        ...x,
        row: `${p.defence} / ${p.vector}`,
        mode: p.mode,
        vector: p.vector,
        defence: p.defence,
      });}
  }
  const rows = [...new Set(cells.filter((c) => c.mode !== "default").map((c) => c.row))];
  const shown = cells.filter((c) => rows.includes(c.row) && typeof c.trait_after === "number");
  const at = (defence: string, vector: string, mode: string) =>
    shown.find((c) => c.defence === defence && c.vector === vector && c.mode === mode);
  const parts: string[] = [];
  let ok = true;
  const d0 = at("none", "trait", "default");
  const att = at("none", "trait", "attenuate"), amp = at("none", "trait", "amplify");
  if (d0 && att) {
    const se = Math.hypot(att.trait_after_sem ?? 0, d0.trait_after_sem ?? 0);
    const lower = att.trait_after < d0.trait_after - 2 * se;
    parts.push(
      `along the trait vector attenuate gives ${att.trait_after.toFixed(1)} against ${
        d0.trait_after.toFixed(1)
      } by default (paper: 9 vs 76, lower${lower ? "" : "; here not by more than 2 SE"})`,
    );
    ok &&= lower;
  }
  if (d0 && amp) {
    parts.push(`amplify ${amp.trait_after.toFixed(1)} (paper: 93.8, not lower)`);
    ok &&=
      amp.trait_after >= d0.trait_after - 2 * Math.hypot(amp.trait_after_sem ?? 0, d0.trait_after_sem ?? 0);
  }
  const r0 = at("none", "random", "default");
  const randomMoves = ["attenuate", "amplify", "neutralize"].map((mode) => at("none", "random", mode)).filter(
    Boolean,
  )
    .filter((c) =>
      r0 &&
      Math.abs(c.trait_after - r0.trait_after) >
        Math.max(10, 2 * Math.hypot(c.trait_after_sem ?? 0, r0.trait_after_sem ?? 0))
    );
  if (r0) {
    parts.push(
      `along a random vector ${
        randomMoves.length
          ? randomMoves.map((c) => c.mode).join(", ") + " moved it by more than 10 points and 2 SE"
          : "no mode moved it by more than 10 points or 2 SE"
      } (paper: little change)`,
    );
    ok &&= randomMoves.length === 0;
  }
  const signature = parts.length ? `Signature (Tables 1, 2): ${parts.join("; ")} — ${verdict(ok)}.` : "";
  return [{
    title: `Sign-forcing: trait after training by defence / ablation vector and mode (${r.metrics.trait})`,
    caption:
      `${file}: mean trait score after fine-tuning with dL/dh_l's component along the unit ablation vector forced non-negative (attenuate), non-positive (amplify) or zero (neutralize) at the transformer layers; "default" is the same defence without forcing.`,
    signature,
    spec: {
      data: {
        values: shown.map((c) => ({ row: c.row, mode: c.mode, trait: Math.round(c.trait_after * 10) / 10 })),
      },
      width: 320,
      height: 30 * rows.length,
      encoding: {
        x: {
          field: "mode",
          type: "nominal",
          sort: ["default", "attenuate", "amplify", "neutralize"],
          title: "",
        },
        y: { field: "row", type: "nominal", title: "defence / ablation vector" },
      },
      layer: [
        {
          mark: "rect",
          encoding: { color: { field: "trait", type: "quantitative", scale: { domain: [0, 100] } } },
        },
        { mark: "text", encoding: { text: { field: "trait", type: "quantitative" } } },
      ],
    },
  }];
}
