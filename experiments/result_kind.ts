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
  spec: Record<string, unknown>;
}

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
  /** the report's figures for one result */
  figures?(r: Json, file: string): Figure[];
  /** the summarize row's cells (absent: dashes) */
  summary?(metrics: Json): SummaryCells;
  /** the report's "What came out" sentences over every result of this kind */
  outcomes?(results: { file: string; result: Json }[]): string[];
}

export const FIGURE_WIDTH = 420, FIGURE_HEIGHT = 260;

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
    x: { field: x, type: "quantitative", title: title.x },
    y: { field: y, type: "quantitative", title: title.y },
    color: { field: color, type: "nominal" },
    ...extra,
  },
});

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
          x: { field: x, type: xType, title: title.x },
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
