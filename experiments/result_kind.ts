// What an experiment declares about the result files it writes, so that the schema, the report's figures,
// `summarize` and the report's sentences are assembled from the experiments (experiments/index.ts) and a
// new experiment cannot be forgotten by one of them.

/** A parsed result file; its `metrics` have been validated against the kind's schema when read. */
// deno-lint-ignore no-explicit-any
export type Json = any;

export interface Figure {
  title: string;
  caption: string;
  /** whether the run shows the paper's signature for this figure, in words (experiments/signatures.ts) */
  signature?: string;
  /** a Vega-Lite chart; absent for a figure that is only a table */
  spec?: Record<string, unknown>;
  /** numbers shown as a table instead of a chart (e.g. runs with one checkpoint); a chart's own numbers are
   * tabled from its data by the report */
  table?: { columns: string[]; rows: (string | number | null)[][] };
  /** the report section (report/sections.ts) it goes in; default: its kind's `section` */
  section?: SectionKey;
}

/** The report's sections, one per figure or table of the paper (report/sections.ts gives their order). */
export type SectionKey =
  | "vectors"
  | "steer"
  | "evaluate"
  | "fig2"
  | "fig2_training"
  | "tables12"
  | "fig3"
  | "fig4"
  | "fig5"
  | "fig6"
  | "fig12"
  | "fig16"
  | "fig18";

/** The cells `deno task exp summarize` prints for a result (beside its file and kind). */
export interface SummaryCells {
  what: string;
  trait: string;
  coherence: string;
  /** Table 3: the peak trait over checkpoints with coherence >= 20 */
  peak: string;
  n: string;
}

export interface ResultKind {
  /** the result file's `experiment` field */
  kind: string;
  /** JSON schema of the result's `metrics` (the envelope is common: experiments/results.ts) */
  metricsSchema: Record<string, unknown>;
  /** the report section its figures go in unless a figure names another */
  section: SectionKey;
  /** the report's figures for one result */
  figures?(r: Json, file: string): Figure[];
  /** figures drawn from every result of this kind at once (curves of many runs overlaid, two defences side
   * by side); used besides `figures` */
  groupFigures?(results: { file: string; result: Json }[]): Figure[];
  /** the summarize row's cells (absent: dashes) */
  summary?(metrics: Json): SummaryCells;
  /** the report's "What came out" sentences over every result of this kind */
  outcomes?(results: { file: string; result: Json }[]): string[];
}

export const FIGURE_WIDTH = 420, FIGURE_HEIGHT = 260;

/** An integer axis (steps, layers, epochs): whole-number ticks, never "13.000000". */
export const INT_AXIS = { format: "d", tickMinStep: 1 } as const;

/** A Vega-Lite line chart with points, one line per value of `color`. */
export const lineChart = (
  values: unknown[],
  x: string,
  y: string,
  color: string,
  title: { x: string; y: string },
  extra: Record<string, unknown> = {},
) => ({
  width: FIGURE_WIDTH,
  height: FIGURE_HEIGHT,
  data: { values },
  mark: { type: "line", point: true },
  encoding: {
    x: { field: x, type: "quantitative", title: title.x, ...intAxis(x) },
    y: { field: y, type: "quantitative", title: title.y },
    color: { field: color, type: "nominal" },
    ...extra,
  },
});

/** Counts on the x axis (layers, steps, positions, epochs) get whole-number ticks. */
const intAxis = (x: string) => INTEGER_FIELDS.has(x) ? { axis: INT_AXIS } : {};
const INTEGER_FIELDS = new Set(["layer", "step", "position", "epoch"]);

/** "12.3 ± 1.4", "12.3", or "-" for a missing mean. */
export const meanSem = (m: number | null | undefined, s?: number | null) =>
  m == null ? "-" : s == null ? m.toFixed(1) : `${m.toFixed(1)} ± ${s.toFixed(1)}`;

/** lineChart with ± one standard error bars: each value carries its SE in the field `se` (null: no bar). */
export const lineChartSe = (
  values: Record<string, unknown>[],
  x: string,
  y: string,
  se: string,
  color: string,
  title: { x: string; y: string },
  xType: "quantitative" | "ordinal" = "quantitative",
) => {
  const withBars = values.map((v) => {
    const m = v[y] as number | null, s = v[se] as number | null;
    return m == null || s == null ? v : { ...v, __lo: m - s, __hi: m + s };
  });
  return {
    width: FIGURE_WIDTH,
    height: FIGURE_HEIGHT,
    data: { values: withBars },
    layer: [
      {
        mark: { type: "line", point: true },
        encoding: {
          x: { field: x, type: xType, title: title.x, ...(xType === "quantitative" ? intAxis(x) : {}) },
          y: { field: y, type: "quantitative", title: title.y },
          color: { field: color, type: "nominal" },
        },
      },
      {
        mark: "errorbar",
        encoding: {
          x: { field: x, type: xType },
          y: { field: "__lo", type: "quantitative" },
          y2: { field: "__hi" },
          color: { field: color, type: "nominal" },
        },
      },
    ],
  };
};
