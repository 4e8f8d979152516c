// `deno task exp summarize DIR`: one table row per result JSON found under DIR.

import { type ReadResults, readResults } from "./results.ts";

interface Row {
  file: string;
  experiment: string;
  what: string;
  trait: string;
  coherence: string;
  /** Table 3: the peak trait over checkpoints with coherence >= 20 */
  peak: string;
  n: string;
}

const fmt = (m: number | null | undefined, s?: number | null) =>
  m == null ? "-" : s == null ? m.toFixed(1) : `${m.toFixed(1)} ± ${s.toFixed(1)}`;

/** One row per valid result under `dir`; the files skipped (unreadable, or not matching the schema). */
export async function summarize(dir: string): Promise<Row[] & { skipped: ReadResults["skipped"] }> {
  const rows: Row[] = [];
  const read = await readResults(dir);
  for (const { file, json: j } of read.results) {
    const m = j.metrics;
    if (j.experiment === "evaluate") {
      const s = m.summary;
      rows.push({
        file,
        experiment: "evaluate",
        what: m.trait,
        trait: fmt(s.trait_mean, s.trait_sem),
        coherence: fmt(s.coherence_mean, s.coherence_sem),
        peak: "-",
        n: `${s.n} (${s.missing_trait} missing)`,
      });
    } else if (j.experiment === "conditions.run") {
      rows.push({
        file,
        experiment: "run",
        what: m.id,
        trait: `${fmt(m.before.trait_mean)} → ${fmt(m.after.trait_mean, m.after.trait_sem)}`,
        coherence: fmt(m.after.coherence_mean, m.after.coherence_sem),
        peak: m.peak === undefined
          ? "-"
          : m.peak === null
          ? "none coherent"
          : `${fmt(m.peak.trait_mean, m.peak.trait_sem)} @${m.peak.step}`,
        n: String(m.after.n),
      });
    } else if (j.experiment === "extract") {
      rows.push({
        file,
        experiment: "extract",
        what: m.trait,
        trait: "-",
        coherence: "-",
        peak: "-",
        n: `${m.kept}/${m.total} pairs kept`,
      });
    } else {
      rows.push({
        file,
        experiment: j.experiment as string,
        what: "",
        trait: "-",
        coherence: "-",
        peak: "-",
        n: "-",
      });
    }
  }
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
