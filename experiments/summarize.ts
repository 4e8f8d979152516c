// `deno task exp summarize DIR`: one table row per result JSON found under DIR.

import { type ReadResults, readResults, resultKinds } from "./results.ts";
import type { SummaryCells } from "./result_kind.ts";

interface Row extends SummaryCells {
  file: string;
  experiment: string;
}

const DASHES: SummaryCells = { what: "", trait: "-", coherence: "-", peak: "-", n: "-" };

/** One row per valid result under `dir` (cells from its experiment's ResultKind.summary); the files skipped
 * (unreadable, or not matching the schema). */
export async function summarize(dir: string): Promise<Row[] & { skipped: ReadResults["skipped"] }> {
  const kinds = new Map(resultKinds().map((k) => [k.kind, k]));
  const read = await readResults(dir);
  const rows: Row[] = read.results.map(({ file, json: j }) => ({
    file,
    experiment: j.experiment === "conditions.run" ? "run" : j.experiment,
    ...(kinds.get(j.experiment)?.summary?.(j.metrics) ?? DASHES),
  }));
  return Object.assign(rows.sort((a, b) => (a.file < b.file ? -1 : 1)), { skipped: read.skipped });
}

export function printTable(rows: Row[]): string {
  const head: Row = {
    file: "file",
    experiment: "experiment",
    what: "what",
    trait: "trait",
    coherence: "coherence",
    peak: "peak (coh>=20)",
    n: "n",
  };
  const cols = Object.keys(head) as (keyof Row)[];
  const w = cols.map((c) => Math.max(...[head, ...rows].map((r) => r[c].length)));
  return [head, ...rows].map((r) => cols.map((c, i) => r[c].padEnd(w[i])).join("  ")).join("\n");
}
