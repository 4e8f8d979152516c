// The conditions experiment's two result files: the sweep's conditions.json and each cell's
// result.json (conditions.run): their metrics' schemas, figures, summary rows and report sentences.

import { dirname } from "node:path";
import {
  type Figure,
  FIGURE_HEIGHT,
  FIGURE_WIDTH,
  INT_AXIS,
  type Json,
  meanSem,
  type ResultKind,
  type SummaryCells,
} from "./result_kind.ts";
import { fig2Check, parseForced, sentence, tablesCheck } from "./signatures.ts";
import type { EvalSummary } from "../research/evaluation.ts";
import type { Condition } from "./conditions_cells.ts";

/** conditions.json's metrics: the pre × post × condition matrix (the schema below says the same). */
export interface ConditionsMetrics {
  trait: string;
  judge: string;
  /** null when the baseline cell did not finish */
  baseline: EvalSummary | null;
  runs: ConditionRow[];
  /** cells without an output (failed, cancelled, not run) */
  missing_cells?: string[];
}

export interface ConditionRow {
  id: string;
  pre: string;
  post: string;
  condition: string;
  seed: number;
  trait_after: number | null;
  trait_after_sem: number | null;
  coherence_after: number | null;
  coherence_after_sem?: number | null;
}

/**
 * A (pre, post, condition) over its seeds: the mean of the seeds' means; `within_se`, the SE of that mean
 * from the samples of each run (sqrt(sum sem_i^2) / n); `between_sd`, the seeds' means' standard deviation
 * (n >= 2); and `se`, the larger of within_se and between_sd / sqrt(n) — what the signatures test with.
 */
export interface SeedAggregate {
  pre: string;
  post: string;
  condition: string;
  seeds: number;
  trait: number;
  se: number;
  within_se: number;
  between_sd: number | null;
  coherence: number | null;
  coherence_se: number | null;
}

export function aggregateSeeds(runs: ConditionRow[]): SeedAggregate[] {
  const groups = new Map<string, ConditionRow[]>();
  for (const r of runs) {
    if (typeof r.trait_after !== "number") continue;
    const k = `${r.pre}\u0000${r.post}\u0000${r.condition}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((rs) => {
    const n = rs.length, mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    const t = rs.map((r) => r.trait_after!);
    const m = mean(t);
    const within = Math.sqrt(rs.reduce((a, r) => a + (r.trait_after_sem ?? 0) ** 2, 0)) / n;
    const sd = n >= 2 ? Math.sqrt(t.reduce((a, x) => a + (x - m) ** 2, 0) / (n - 1)) : null;
    const co = rs.map((r) => r.coherence_after).filter((x): x is number => typeof x === "number");
    const coSe = Math.sqrt(rs.reduce((a, r) => a + (r.coherence_after_sem ?? 0) ** 2, 0)) / n;
    return {
      pre: rs[0].pre,
      post: rs[0].post,
      condition: rs[0].condition,
      seeds: n,
      trait: m,
      se: Math.max(within, sd === null ? 0 : sd / Math.sqrt(n)),
      within_se: within,
      between_sd: sd,
      coherence: co.length ? mean(co) : null,
      coherence_se: co.length ? coSe : null,
    };
  });
}

/** Table 3's peak: the checkpoint with the highest mean trait among those with coherence >= 20. */
export interface PeakTrait {
  step: number;
  trait_mean: number;
  trait_sem: number | null;
  coherence_mean: number;
}

/** A run cell's result.json metrics (kind conditions.run). */
export interface ConditionsRunMetrics {
  id: string;
  seed: number;
  pre: string;
  post: string;
  /** what the run trained: a fresh adapter on the base model ("base", no pre-finetune), on the base with the
   * pre adapter merged ("merged"), or the pre adapter itself ("continue") */
  start?: "base" | "merged" | "continue";
  /** the condition as configured */
  condition: Condition;
  trait: string;
  judge: string;
  before: EvalSummary;
  after: EvalSummary;
  over_training: { step: number; summary: EvalSummary }[];
  peak: PeakTrait | null;
  train_losses: number[];
}

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const conditionsResult: ResultKind = {
  kind: "conditions",
  section: "fig2",
  metricsSchema: {
    type: "object",
    required: ["trait", "judge", "baseline", "runs"],
    properties: {
      // null when the baseline cell did not finish (then it is named in missing_cells)
      baseline: { anyOf: [{ $ref: "summary" }, { type: "null" }] },
      missing_cells: { type: "array", items: { type: "string" } },
      runs: {
        type: "array",
        items: { type: "object", required: ["id", "pre", "post", "condition", "seed", "trait_after"] },
      },
    },
  },
  figures: conditionsFigures,
  outcomes: (rs) => rs.flatMap((r) => conditionSentences(r.file, r.result.metrics)),
};

/** The result file this experiment writes: its metrics' schema, figures and report lines. */
export const conditionsRunResult: ResultKind = {
  kind: "conditions.run",
  section: "fig2_training",
  metricsSchema: {
    type: "object",
    required: [
      "id",
      "seed",
      "pre",
      "post",
      "condition",
      "before",
      "after",
      "over_training",
      "peak",
      "train_losses",
    ],
    properties: {
      before: { $ref: "summary" },
      after: { $ref: "summary" },
      over_training: {
        type: "array",
        items: {
          type: "object",
          required: ["step", "summary"],
          properties: { summary: { $ref: "summary" } },
        },
      },
      peak: {
        description:
          "Table 3: the checkpoint with the highest mean trait among those with mean coherence >= 20",
        type: ["object", "null"],
        required: ["step", "trait_mean", "trait_sem", "coherence_mean"],
        properties: { coherence_mean: { type: "number", minimum: 20 } },
      },
      train_losses: { type: "array", items: { type: "number" } },
    },
  },
  groupFigures: conditionsRunFigures,
  summary: conditionsRunSummary,
};

// ---- the result's figures and report lines

function conditionsFigures(r: Json, file: string): Figure[] {
  const m: ConditionsMetrics = r.metrics;
  const runs = m.runs.map((x) => ({ ...x, cell: `${x.pre} → ${x.post}` }));
  // over seeds: the mean, and bars of ± its SE (the larger of within-run and between-seed)
  const agg = aggregateSeeds(m.runs ?? []).map((a) => ({
    ...a,
    cell: `${a.pre} → ${a.post}`,
    lo: a.trait - a.se,
    hi: a.trait + a.se,
  }));
  const seeds = Math.max(0, ...agg.map((a) => a.seeds));
  const pres = new Set(runs.map((x) => x.pre)), posts = new Set(runs.map((x) => x.post));
  const check = fig2Check(r);
  // a sweep of sign-forced runs only (Tables 1-2) has no Fig. 2 to draw: its numbers are in that table
  const bars = check !== null || !agg.some((a) => parseForced(a.condition).mode !== "default");
  return [
    ...(bars
      ? [{
        title: `Trait after fine-tuning by condition (${r.metrics.trait})`,
        signature: sentence(check),
        caption:
          `${file}: judge ${r.metrics.judge}; mean trait score of the fine-tuned model with the defence removed (error bars ± SE: over samples${
            seeds > 1
              ? `, or over the ${seeds} seeds when their spread is larger (between-seed SD: ${
                agg.filter((a) => a.between_sd !== null).map((a) =>
                  `${a.condition} ${a.between_sd!.toFixed(1)}`
                )
                  .join(", ")
              })`
              : ""
          }); baseline ${r.metrics.baseline?.trait_mean?.toFixed?.(1) ?? "missing"}.${
            r.metrics.missing_cells?.length
              ? ` Cells without a result (failed or not run): ${r.metrics.missing_cells.join(", ")}.`
              : ""
          }`,
        spec: {
          width: FIGURE_WIDTH,
          height: FIGURE_HEIGHT,
          data: { values: agg },
          layer: [{
            mark: "bar",
            encoding: {
              x: { field: "condition", type: "nominal" },
              xOffset: { field: "cell" },
              y: { field: "trait", type: "quantitative", title: "trait score", scale: { domain: [0, 100] } },
              color: { field: "cell", type: "nominal" },
            },
          }, {
            mark: { type: "errorbar" },
            encoding: {
              x: { field: "condition", type: "nominal" },
              xOffset: { field: "cell" },
              y: { field: "lo", type: "quantitative", title: "trait score", scale: { domain: [0, 100] } },
              y2: { field: "hi" },
            },
          }],
        },
      }]
      : []),
    // a matrix only where it has more than one cell along each axis; otherwise the bars above say it all
    ...(pres.size > 1 && posts.size > 1
      ? [{
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
      }]
      : []),
    ...signForcingFigure(r, file),
  ];
}

/**
 * Tables 1 and 2 as a figure: trait after training per defence × ablation vector (rows) and mode (columns),
 * with the coherence of each cell (E.5: sign-forcing costs coherence), over seeds.
 */
function signForcingFigure(r: Json, file: string): Figure[] {
  const agg = aggregateSeeds(r.metrics.runs ?? []);
  if (!agg.some((a) => parseForced(a.condition).mode !== "default")) return [];
  const cells: Json[] = [];
  for (const a of agg) {
    const p = parseForced(a.condition);
    const rows = p.mode === "default" ? ["trait", "random"] : [p.vector];
    for (const v of rows) cells.push({ ...a, row: `${p.defence} / ${v}`, mode: p.mode });
  }
  const forcedRows = new Set(cells.filter((c) => c.mode !== "default").map((c) => c.row));
  const shown = cells.filter((c) => forcedRows.has(c.row)).map((c) => ({
    row: c.row,
    mode: c.mode,
    trait: Math.round(c.trait * 10) / 10,
    label: `${c.trait.toFixed(1)} ± ${c.se.toFixed(1)} (coh ${
      c.coherence === null ? "-" : c.coherence.toFixed(0)
    })`,
  }));
  return [{
    title: `Sign-forcing: trait after training by defence / ablation vector and mode (${r.metrics.trait})`,
    caption:
      `${file}: mean trait score ± SE after fine-tuning with dL/dh_l's component along the unit ablation vector forced non-negative (attenuate), non-positive (amplify) or zero (neutralize) at the transformer layers, and the mean coherence of the same answers; "default" is the same defence without forcing.`,
    signature: sentence(tablesCheck(r)),
    section: "tables12",
    spec: {
      data: { values: shown },
      width: 480,
      height: 34 * forcedRows.size,
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
        { mark: "text", encoding: { text: { field: "label", type: "nominal" } } },
      ],
    },
  }];
}

/**
 * Fig. 2d-f: every run of a sweep (the runs under one folder) in one chart, a line per condition (the mean
 * over seeds at each checkpoint) with trait and coherence in two panels; runs evaluated only once (no
 * curve to draw) go in a table instead.
 */
function conditionsRunFigures(results: { file: string; result: Json }[]): Figure[] {
  const sweeps = new Map<string, { file: string; m: ConditionsRunMetrics }[]>();
  for (const { file, result } of results) {
    const folder = dirname(dirname(file));
    sweeps.set(folder, [...(sweeps.get(folder) ?? []), { file, m: result.metrics }]);
  }
  const out: Figure[] = [];
  for (const [folder, runs] of [...sweeps].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const where = folder === "." ? "" : ` (${folder})`;
    const cells = new Set(runs.map((r) => `${r.m.pre} → ${r.m.post}`));
    const label = (m: ConditionsRunMetrics) =>
      cells.size > 1 ? `${m.condition.name} (${m.pre} → ${m.post})` : m.condition.name;
    const curves = runs.filter((r) => r.m.over_training.length > 1);
    const single = runs.filter((r) => r.m.over_training.length <= 1);
    if (curves.length) {
      const values = curves.flatMap((r) =>
        r.m.over_training.flatMap((o) => [
          {
            condition: label(r.m),
            seed: r.m.seed,
            step: o.step,
            score: "trait",
            value: o.summary.trait_mean,
          },
          {
            condition: label(r.m),
            seed: r.m.seed,
            step: o.step,
            score: "coherence",
            value: o.summary.coherence_mean,
          },
        ])
      );
      const seeds = new Set(curves.map((r) => r.m.seed)).size;
      out.push({
        title: `Trait and coherence over training, a line per condition${where}`,
        caption: `${
          folder === "." ? "The run folder's runs" : folder
        }: each run's checkpoints judged with the defence removed${
          seeds > 1 ? `; each line the mean over ${seeds} seeds` : ""
        } (${curves.length} runs).`,
        spec: {
          data: { values },
          facet: { row: { field: "score", type: "nominal", title: null, sort: ["trait", "coherence"] } },
          spec: {
            width: FIGURE_WIDTH,
            height: 170,
            mark: { type: "line", point: true },
            encoding: {
              x: { field: "step", type: "quantitative", title: "optimizer step", axis: INT_AXIS },
              y: {
                field: "value",
                type: "quantitative",
                aggregate: "mean",
                title: "mean score",
                scale: { domain: [0, 100] },
              },
              color: { field: "condition", type: "nominal" },
            },
          },
        },
      });
    }
    if (single.length) {
      out.push({
        title: `Runs judged once (after training)${where}`,
        caption:
          `${folder}: runs with no checkpoint before the last have no curve; their scores after training.`,
        table: {
          columns: ["run", "seed", "step", "trait", "coherence"],
          rows: single.map((r) => {
            const o = r.m.over_training[r.m.over_training.length - 1];
            return [
              r.m.id,
              r.m.seed,
              o?.step ?? null,
              round1(o?.summary.trait_mean),
              round1(o?.summary.coherence_mean),
            ];
          }),
        },
      });
    }
  }
  return out;
}

const round1 = (x: number | null | undefined) =>
  x === null || x === undefined ? null : Math.round(x * 10) / 10;

function conditionsRunSummary(m: ConditionsRunMetrics): SummaryCells {
  return {
    what: m.id,
    trait: `${meanSem(m.before.trait_mean)} → ${meanSem(m.after.trait_mean, m.after.trait_sem)}`,
    coherence: meanSem(m.after.coherence_mean, m.after.coherence_sem),
    peak: m.peak === undefined
      ? "-"
      : m.peak === null
      ? "none coherent"
      : `${meanSem(m.peak.trait_mean, m.peak.trait_sem)} @${m.peak.step}`,
    n: String(m.after.n),
  };
}

const f1 = (x: number) => x.toFixed(1);

/** How a defended condition compares with no defence: the difference and its standard error. */
export function compareToNone(
  c: { trait_after: number; trait_after_sem: number | null },
  none: { trait_after: number; trait_after_sem: number | null },
): { diff: number; se: number; verdict: string } {
  const diff = c.trait_after - none.trait_after;
  const se = Math.hypot(c.trait_after_sem ?? 0, none.trait_after_sem ?? 0);
  const verdict = se > 0 && Math.abs(diff) <= 2 * se
    ? "within 2 SE of no defence"
    : diff < 0
    ? "lower than without a defence"
    : diff > 0
    ? "higher than without a defence"
    : "the same as without a defence";
  return { diff, se, verdict };
}

function conditionSentences(file: string, m: ConditionsMetrics): string[] {
  const out: string[] = [];
  const groups = new Map<string, ConditionRow[]>();
  for (const r of m.runs ?? []) {
    const k = `${r.pre} → ${r.post}, seed ${r.seed}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  for (const [k, runs] of groups) {
    const none = runs.find((r) => r.condition === "none");
    if (!none || typeof none.trait_after !== "number") continue;
    const noneAfter = { trait_after: none.trait_after, trait_after_sem: none.trait_after_sem };
    const base = m.baseline?.trait_mean;
    const parts = [
      `${m.trait} (${file}, ${k}): ${typeof base === "number" ? `${f1(base)} before fine-tuning, ` : ""}${
        f1(none.trait_after)
      } ± ${f1(none.trait_after_sem ?? 0)} after it without a defence`,
    ];
    for (const r of runs) {
      if (r === none || typeof r.trait_after !== "number") continue;
      const c = compareToNone({ trait_after: r.trait_after, trait_after_sem: r.trait_after_sem }, noneAfter);
      parts.push(
        `${r.condition} ${f1(r.trait_after)} ± ${f1(r.trait_after_sem ?? 0)} (${c.diff >= 0 ? "+" : ""}${
          f1(c.diff)
        } ± ${f1(c.se)}: ${c.verdict})`,
      );
    }
    out.push(parts.join("; ") + ".");
  }
  return out;
}
