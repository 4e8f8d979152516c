// The paper's signatures, tested on whatever a run produced: one check per figure, each with its statistic
// stated (means with standard errors, differences against 2 SE, a bootstrap interval), saying what the paper
// found, what this run shows, and whether it shows the same thing. Computed from the results, never tuned:
// a world model (or a real one) that does not show a signature is reported as not showing it. Each check
// is a pure function of a result, so tests feed it synthetic results that must pass and must fail.

import type { Json } from "./result_kind.ts";
import { aggregateSeeds, type SeedAggregate } from "./conditions_result.ts";

/** A figure's check: whether the run shows the signature, and the sentence saying so with its numbers. */
export interface SignatureCheck {
  figure: string;
  ok: boolean;
  text: string;
  /** the statistic tested, in words (the report's verdict table) */
  statistic: string;
  /** what this run measured, and what the paper found */
  ours: string;
  paper: string;
}

/** Each check's statistic, as the verdict table states it. */
const STATISTICS: Record<string, string> = {
  "Fig. 2": "mean trait after fine-tuning, each defence minus no defence, against 2 SE",
  "Fig. 3":
    "cos(dL/dh, v) per layer: no defence below 0 and below the random vector by 2 SE; IP within 2 SE of 0",
  "Fig. 4a-b":
    "paired per-sample loss change: trait IP against a control prompt, PPS against the random vector",
  "Fig. 4c": "paired per-sample loss change against no defence, against 2 SE",
  "Fig. 18": "PC1's share of the gradient-difference variance, 95 % bootstrap intervals",
  "Tables 1, 2": "mean trait after sign-forced training against default, by 2 SE",
};

const f1 = (x: number) => x.toFixed(1), f3 = (x: number) => x.toFixed(3);
const verdict = (ok: boolean) => ok ? "shows the paper's signature" : "does not show the paper's signature";
const check = (figure: string, parts: string[], ok: boolean): SignatureCheck => {
  // the paper's findings are the parts that begin "paper:" and the "(paper: …)" asides; the rest is this run's
  const paper = parts.flatMap((p) =>
    p.startsWith("paper:")
      ? [p.slice(6).trim()]
      : [...p.matchAll(/(?:\(|; )paper: ([^;)]*)/g)].map((m) => m[1])
  );
  return {
    figure,
    ok,
    text: `Signature (${figure}): ${parts.join("; ")} — ${verdict(ok)}.`,
    statistic: STATISTICS[figure] ?? "",
    ours: parts.filter((p) => !p.startsWith("paper:")).map((p) =>
      p.replace(/ ?\(paper: [^)]*\)|; paper: [^;)]*/g, "")
    ).join("; "),
    paper: paper.join("; "),
  };
};
/** The sentence of a check, or "" when the result has nothing to check. */
export const sentence = (c: SignatureCheck | null) => c?.text ?? "";

function meanSe(xs: number[]): { mean: number; se: number; n: number } {
  const n = xs.length, mean = xs.reduce((a, x) => a + x, 0) / Math.max(1, n);
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, se: n > 1 ? sd / Math.sqrt(n) : 0, n };
}

// ---- Figure 2: the defences lower the trait, the random vector does not

/** A conditions config's condition, as the checks classify it. */
interface ConditionSpec {
  name: string;
  steer?: { random?: boolean; vector?: string | null } | null;
  inoculation?: unknown;
  sign_force?: unknown;
}

/** The no-defence, PPS, IP and random-vector PPS conditions of a conditions config: "pps" / "ip" by name,
 * else the first trait-vector steering / first IP condition; the first random-vector one. */
export function classifyConditions(
  conds: ConditionSpec[],
): Record<"none" | "pps" | "ip" | "random", string | null> {
  const plain = conds.filter((c) => !c.sign_force);
  const find = (name: string, f: (c: ConditionSpec) => boolean) =>
    plain.find((c) => c.name === name && f(c))?.name ?? plain.find(f)?.name ?? null;
  return {
    none: find("none", (c) => !c.steer && !c.inoculation),
    pps: find("pps", (c) => !!c.steer && !c.steer.random && !c.steer.vector),
    ip: find("ip", (c) => !!c.inoculation),
    random: plain.find((c) => !!c.steer?.random)?.name ?? null,
  };
}

const diffText = (a: SeedAggregate, b: SeedAggregate) => {
  const d = a.trait - b.trait, se = Math.hypot(a.se, b.se);
  return { d, se, text: `${d >= 0 ? "+" : ""}${f1(d)} ± ${f1(se)}` };
};

/**
 * Figure 2 (3.1, 3.2): after fine-tuning on trait data, PPS and IP end below no defence by more than 2 SE of
 * the difference, and random-vector PPS does not. Per (pre, post) cell, over seeds (conditions_result.ts
 * aggregateSeeds: the SE is the larger of the within-run and the between-seed one).
 */
export function fig2Check(r: Json): SignatureCheck | null {
  const cls = classifyConditions(r.config?.conditions ?? []);
  if (!cls.none || (!cls.pps && !cls.ip)) return null;
  const agg = aggregateSeeds(r.metrics.runs ?? []);
  const cells = [...new Set(agg.map((a) => `${a.pre} → ${a.post}`))];
  const parts: string[] = [];
  let ok = true, checked = 0;
  for (const cell of cells) {
    const at = (name: string | null) =>
      agg.find((a) => `${a.pre} → ${a.post}` === cell && a.condition === name);
    const none = at(cls.none);
    if (!none) continue;
    const seeds = none.seeds > 1 ? `, ${none.seeds} seeds` : "";
    const bits = [`${cell}${seeds}: no defence ${f1(none.trait)} ± ${f1(none.se)}`];
    for (const [kind, label] of [["pps", "PPS"], ["ip", "IP"]] as const) {
      const a = at(cls[kind]);
      if (!a) continue;
      const d = diffText(a, none), lower = d.d < -2 * d.se;
      bits.push(`${label} ${f1(a.trait)} (${d.text}${lower ? "" : ", not lower by more than 2 SE"})`);
      ok &&= lower;
      checked++;
    }
    const rnd = at(cls.random);
    if (rnd) {
      const d = diffText(rnd, none), lower = d.d < -2 * d.se;
      bits.push(`random-vector PPS ${f1(rnd.trait)} (${d.text}${lower ? ", lower by more than 2 SE" : ""})`);
      ok &&= !lower;
      checked++;
    }
    parts.push(bits.join(", "));
  }
  if (!checked) return null;
  parts.push("paper: PPS and IP lower than no defence, the random vector not (Fig. 2b, 2d)");
  return check("Fig. 2", parts, ok);
}

// ---- Figure 3: the gradient's cosine with the trait vector

/** The layers the gradient checks read: 1..L-1. Row L of a persona vector (HF's hidden_states[L]) is after
 * the final norm while dL/dh_L is taken before it, so the two live in different spaces there. */
export function checkedLayers(maxLayer: number): number[] {
  return Array.from({ length: Math.max(0, maxLayer - 1) }, (_, i) => i + 1);
}

/**
 * Figure 3 (4.1): without a defence the cosine with the trait vector is negative (amplifying) by more than
 * 2 SE and below the random vector's by more than 2 SE of the paired difference; with PPS along the trait
 * vector it is positive by more than 2 SE; with IP within 2 SE of zero. Per layer of checkedLayers, over
 * samples; a part holds when it holds at a majority of those layers.
 */
export function fig3Check(r: Json): SignatureCheck | null {
  const m = r.metrics, cfg = r.config;
  const trait: string | undefined = cfg.vectors?.[0]?.name;
  const rows: Json[] = m.rows ?? [];
  if (!trait || !rows.length) return null;
  const maxLayer = rows.reduce((a, x) => Math.max(a, x.layer), 0);
  const layers = checkedLayers(maxLayer);
  const defences: Json[] = cfg.defences ?? [];
  const coefOf = (d: Json) => d?.steer ? d.steer.coef : null;
  const sel = (defence: string, vector: string, layer: number) =>
    rows.filter((x) =>
      x.defence === defence && x.vector === vector && x.layer === layer &&
      x.coef === coefOf(defences.find((d) => d.name === defence))
    );
  const parts: string[] = [];
  let ok = true, checked = 0;
  const majority = (hits: number) => hits > layers.length / 2;
  const first = defences[0]?.name;
  if (first && layers.length) {
    let neg = 0, belowRandom = 0;
    const hasRandom = rows.some((x) => x.vector === "random");
    for (const l of layers) {
      const t = sel(first, trait, l).filter((x) => x.none !== null);
      const s = meanSe(t.map((x) => x.none));
      if (s.mean < -2 * s.se) neg++;
      if (hasRandom) {
        const rnd = new Map(sel(first, "random", l).map((x) => [x.sample, x.none]));
        const diffs = t.filter((x) => rnd.get(x.sample) != null).map((x) => x.none - rnd.get(x.sample)!);
        const dd = meanSe(diffs);
        if (diffs.length && dd.mean < -2 * dd.se) belowRandom++;
      }
    }
    parts.push(
      `without a defence the cosine is below zero by more than 2 SE at ${neg} of ${layers.length} layers (1..${
        maxLayer - 1
      })${
        hasRandom
          ? ` and below the random vector's by more than 2 SE at ${belowRandom}`
          : ", no random-vector control"
      } (paper: negative, amplifying)`,
    );
    ok &&= majority(neg) && hasRandom && majority(belowRandom);
    checked++;
  }
  for (const d of defences) {
    const isPps = d.steer && d.steer.vector === trait;
    const isIp = d.ip && !/neutral|random|control/.test(d.name);
    if (!isPps && !isIp) continue;
    let hits = 0;
    for (const l of layers) {
      const s = meanSe(sel(d.name, trait, l).filter((x) => x.defended !== null).map((x) => x.defended));
      if (isPps ? s.mean > 2 * s.se : Math.abs(s.mean) <= 2 * s.se) hits++;
    }
    parts.push(
      isPps
        ? `with ${d.name} it is above zero by more than 2 SE at ${hits} of ${layers.length} (paper: positive, attenuating)`
        : `with ${d.name} it is within 2 SE of zero at ${hits} of ${layers.length} (paper: near zero)`,
    );
    ok &&= majority(hits);
    checked++;
  }
  if (!checked) return null;
  return check("Fig. 3", parts, ok);
}

// ---- Figure 4: the loss

/** The per-sample paired difference loss(variant) - loss(no defence) of a loss_sweep sweep row. */
function lossDiff(m: Json, pick: (x: Json) => boolean) {
  const xs = (m.per_sample ?? []).filter((x: Json) => pick(x) && x.loss !== null && x.loss_none !== null);
  return xs.length ? meanSe(xs.map((x: Json) => x.loss - x.loss_none)) : null;
}

/**
 * Figure 4c (5.1): the inoculation prompt lowers the loss on trait data by more than 2 SE, and PPS at the
 * sweep's largest ε raises it above the unsteered loss by more than 2 SE (paired over samples).
 */
export function fig4cCheck(r: Json): SignatureCheck | null {
  const m = r.metrics;
  const main = (x: Json) => !x.control_ip && x.vector !== "random";
  const coefs: number[] = (m.sweep ?? []).filter((x: Json) => main(x) && !x.ip).map((x: Json) => x.coef);
  const top = coefs.length ? Math.max(...coefs) : 0;
  const parts: string[] = [];
  let ok = true, checked = 0;
  const ip = lossDiff(m, (x) => main(x) && x.ip && x.coef === 0);
  if (ip) {
    const lower = ip.mean < -2 * ip.se;
    parts.push(`IP changes the loss by ${f3(ip.mean)} ± ${f3(ip.se)} (paper: lower)`);
    ok &&= lower;
    checked++;
  }
  const pps = top > 0 ? lossDiff(m, (x) => main(x) && !x.ip && x.coef === top) : null;
  if (pps) {
    const higher = pps.mean > 2 * pps.se;
    parts.push(`PPS at the largest ε, ${top}, changes it by ${f3(pps.mean)} ± ${f3(pps.se)} (paper: higher)`);
    ok &&= higher;
    checked++;
  }
  if (!checked) return null;
  return check("Fig. 4c", [...parts, "paired over samples, against 2 SE"], ok);
}

/**
 * Figure 4a-b (5.1): the trait IP prompt lowers the loss more than the control prompt does (by more than 2 SE
 * of the paired difference), while trait-vector PPS at `coef` (else the config's pps_coef, else the largest
 * ε) does not lower it more than the random vector at the same ε and norm.
 */
export function fig4abCheck(r: Json, coef?: number): SignatureCheck | null {
  const ps: Json[] = r.metrics.per_sample ?? [];
  const parts: string[] = [];
  let ok = true, checked = 0;
  const bySample = (pick: (x: Json) => boolean) =>
    new Map(ps.filter((x) => pick(x) && x.loss !== null).map((x) => [x.sample, x.loss as number]));
  const ip = bySample((x) => x.ip && x.coef === 0 && !x.control_ip && x.vector !== "random");
  const ctl = bySample((x) => x.control_ip);
  if (ip.size && ctl.size) {
    const d = meanSe([...ip].filter(([s]) => ctl.has(s)).map(([s, v]) => v - ctl.get(s)!));
    const lower = d.mean < -2 * d.se;
    parts.push(
      `the IP prompt's loss minus the control prompt's: ${f3(d.mean)} ± ${f3(d.se)} (paper: lower, Fig. 4b)`,
    );
    ok &&= lower;
    checked++;
  }
  const coefs = ps.filter((x) => x.vector === "random").map((x) => x.coef as number);
  const k = coef ?? r.config?.pps_coef ?? (coefs.length ? Math.max(...coefs) : undefined);
  if (k !== undefined) {
    const trait = bySample((x) => !x.ip && !x.control_ip && x.vector !== "random" && x.coef === k);
    const rnd = bySample((x) => x.vector === "random" && x.coef === k);
    if (trait.size && rnd.size) {
      const d = meanSe([...trait].filter(([s]) => rnd.has(s)).map(([s, v]) => v - rnd.get(s)!));
      const lower = d.mean < -2 * d.se;
      parts.push(
        `PPS at ε ${k} minus the random vector at the same ε: ${f3(d.mean)} ± ${
          f3(d.se)
        } (paper: not lower, Fig. 4a)`,
      );
      ok &&= !lower;
      checked++;
    }
  }
  if (!checked) return null;
  return check("Fig. 4a-b", parts, ok);
}

// ---- Figure 18: PC1's share

/** Figure 18: PC1's share of one PCA run, with its bootstrap interval. */
export function gradPcaSignature(r: Json): string {
  const m = r.metrics, d = r.config.defence;
  const pc1 = m.explained?.[0];
  if (typeof pc1 !== "number") return "";
  const kind = d?.steer ? "PPS" : d?.ip ? "IP" : "this defence";
  const ci = m.pc1_interval;
  return `PC1 explains ${(100 * pc1).toFixed(1)} % of the variance for ${kind}${
    ci
      ? ` (${Math.round(100 * ci.level)} % bootstrap interval ${(100 * ci.lo).toFixed(1)}-${
        (100 * ci.hi).toFixed(1)
      } %)`
      : ""
  } (paper: 60.3 % for PPS, 29.2 % for IP; the comparison of the two is under "What came out").`;
}

/**
 * Figure 18 (4.3): PC1's share of the gradient-difference variance is larger for PPS than for IP — PPS's
 * bootstrap interval lies wholly above IP's.
 */
export function fig18Check(results: { file: string; result: Json }[]): SignatureCheck | null {
  const pcs = results.filter((l) =>
    l.result?.experiment === "grad_pca" && l.result.metrics?.explained?.length
  );
  const of = (kind: "steer" | "ip") => pcs.find((l) => l.result.config.defence?.[kind])?.result.metrics;
  const pps = of("steer"), ip = of("ip");
  if (!pps || !ip) return null;
  const show = (m: Json) =>
    `${(100 * m.explained[0]).toFixed(1)} %${
      m.pc1_interval
        ? ` [${(100 * m.pc1_interval.lo).toFixed(1)}, ${(100 * m.pc1_interval.hi).toFixed(1)}]`
        : ""
    }`;
  const ok = !!(pps.pc1_interval && ip.pc1_interval) && pps.pc1_interval.lo > ip.pc1_interval.hi;
  return check("Fig. 18", [
    `PC1 explains ${show(pps)} for PPS and ${show(ip)} for IP (95 % bootstrap intervals over samples)`,
    `paper: 60.3 % and 29.2 %; shown when PPS's interval lies above IP's${
      pps.pc1_interval && ip.pc1_interval ? "" : " (an interval is missing)"
    }`,
  ], ok);
}

/** The "What came out" sentence comparing PC1 shares of PPS and IP runs. */
export function pcaComparison(results: { file: string; result: Json }[]): string[] {
  const c = fig18Check(results);
  return c ? [c.text] : [];
}

// ---- Tables 1-2: sign-forcing

/** Sign-forced runs of a conditions result: `<defence>+<mode>[-random]`. */
export function parseForced(name: string): { defence: string; mode: string; vector: string } {
  const m = /^(.*)\+(attenuate|amplify|neutralize)(-random)?$/.exec(name);
  return m
    ? { defence: m[1], mode: m[2], vector: m[3] ? "random" : "trait" }
    : { defence: name, mode: "default", vector: "" };
}

/**
 * Tables 1-2 (4.2): along the trait vector, without a defence, attenuate ends below the default by more than
 * 2 SE, amplify above it by more than 2 SE, and neutralize within 2 SE of it; along the random vector no
 * mode moves it by more than 2 SE. Per (pre, post) cell, over seeds.
 */
export function tablesCheck(r: Json): SignatureCheck | null {
  const agg = aggregateSeeds(r.metrics.runs ?? []);
  const forced = agg.filter((a) => parseForced(a.condition).mode !== "default");
  if (!forced.length) return null;
  const cell = `${forced[0].pre} → ${forced[0].post}`;
  const find = (mode: string, vector: string) =>
    agg.find((a) => {
      const p = parseForced(a.condition);
      return `${a.pre} → ${a.post}` === cell && p.defence === "none" && p.mode === mode &&
        (mode === "default" || p.vector === vector);
    });
  const def = find("default", "");
  if (!def) return null;
  const parts = [`${cell}: default ${f1(def.trait)} ± ${f1(def.se)}`];
  let ok = true, checked = 0;
  const expect = { attenuate: "below", amplify: "above", neutralize: "within" } as const;
  for (const vector of ["trait", "random"]) {
    const bits: string[] = [];
    for (const mode of ["attenuate", "amplify", "neutralize"] as const) {
      const a = find(mode, vector);
      if (!a) continue;
      const d = diffText(a, def);
      const want = vector === "random" ? "within" : expect[mode];
      const holds = want === "below"
        ? d.d < -2 * d.se
        : want === "above"
        ? d.d > 2 * d.se
        : Math.abs(d.d) <= 2 * d.se;
      bits.push(
        `${mode} ${f1(a.trait)} (${d.text}; coherence ${
          a.coherence === null ? "-" : f1(a.coherence)
        }; paper: ${want === "within" ? "within 2 SE" : `${want} by more than 2 SE`}${
          holds ? "" : ", not here"
        })`,
      );
      ok &&= holds;
      checked++;
    }
    if (bits.length) {
      parts.push(`along the ${vector === "trait" ? "trait" : "random"} vector ${bits.join(", ")}`);
    }
  }
  if (!checked) return null;
  return check("Tables 1, 2", parts, ok);
}

/** Every check a set of results supports, in the paper's order (the demo summary and the report). */
export function allChecks(results: { file: string; result: Json }[]): SignatureCheck[] {
  const out: SignatureCheck[] = [];
  const of = (kind: string) => results.filter((l) => l.result?.experiment === kind);
  for (const l of of("conditions")) {
    const c = fig2Check(l.result);
    if (c) out.push(c);
  }
  for (const l of of("grad_cosine")) {
    const c = fig3Check(l.result);
    if (c) out.push(c);
  }
  for (const l of of("loss_sweep")) {
    for (const c of [fig4abCheck(l.result), fig4cCheck(l.result)]) if (c) out.push(c);
  }
  const pca = fig18Check(results);
  if (pca) out.push(pca);
  for (const l of of("conditions")) {
    const c = tablesCheck(l.result);
    if (c) out.push(c);
  }
  return out;
}
