// `deno task report RUN_DIR`: one self-contained HTML page for the results under RUN_DIR — first a verdict
// table (one row per paper figure or table the run covers, with the statistic, this run's numbers, the
// paper's and the verdict), a contents list and what came out; then a section per paper figure in the
// paper's order (report/sections.ts), each chart rendered to SVG headlessly (Vega-Lite → Vega, no scripts
// needed to view it) with its numbers in a collapsible table and SVG / PNG / CSV / JSON export.

import { dirname, join, relative } from "node:path";
import * as vega from "vega";
import { compile } from "vega-lite";
import { atomicWrite } from "../lib/fsutil.ts";
import { outcomeSentences } from "./outcomes.ts";
import { type ReadResults, readResults, resultKinds } from "../experiments/results.ts";
import type { Figure, SectionKey } from "../experiments/result_kind.ts";
import { allChecks } from "../experiments/signatures.ts";
import { trainingSpeeds } from "./speed.ts";
import { sectionOfCheck, SECTIONS } from "./sections.ts";
import { chartRows, esc, htmlTable, RawCell, rowsTable, SCRIPT, scriptJson, STYLE } from "./page.ts";

export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  // deno-lint-ignore no-explicit-any
  const vg = compile({ $schema: "https://vega.github.io/schema/vega-lite/v6.json", ...spec } as any).spec;
  const view = new vega.View(vega.parse(vg), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

interface Placed extends Figure {
  section: SectionKey;
  /** the experiment that produced it */
  kind: string;
  /** the folder of the result file(s), to tell apart figures of the same title */
  folder: string;
}

export async function buildReport(
  dir: string,
  out = join(dir, "report.html"),
): Promise<{ path: string; figures: number; sections: number; skipped: ReadResults["skipped"] }> {
  const read = await readResults(dir);
  const kinds = resultKinds();
  const loaded = read.results.map((r) => ({ file: relative(dir, r.path), result: r.json }));
  const figs: Placed[] = [];
  for (const k of kinds) {
    const of = loaded.filter((l) => l.result.experiment === k.kind);
    if (!of.length) continue;
    for (const l of of) {
      for (const f of k.figures?.(l.result, l.file) ?? []) {
        figs.push({ ...f, section: f.section ?? k.section, kind: k.kind, folder: dirname(l.file) });
      }
    }
    for (const f of k.groupFigures?.(of) ?? []) {
      figs.push({ ...f, section: f.section ?? k.section, kind: k.kind, folder: "" });
    }
  }
  // the same title twice (two sweeps, two extractions): each says which folder it is from
  const count = new Map<string, number>();
  for (const f of figs) count.set(f.title, (count.get(f.title) ?? 0) + 1);
  for (const f of figs) if (count.get(f.title)! > 1 && f.folder) f.title += ` (${f.folder})`;

  let n = 0, charts = 0;
  const sectionsHtml: string[] = [];
  const contents: string[] = [];
  for (const s of SECTIONS) {
    const here = figs.filter((f) => f.section === s.key);
    if (!here.length) continue;
    const exps = [...new Set(here.map((f) => f.kind.replace(/\.run$/, "")))];
    const title = `${s.paper}: ${s.title}`;
    contents.push(
      `<li><a href="#sec-${s.key}">${esc(title)}</a> <span class="exp">(${esc(exps.join(", "))})</span></li>`,
    );
    const parts: string[] = [];
    for (const f of here) {
      const id = `fig${++n}`;
      const rows = chartRows(f.spec);
      let body = "";
      if (f.spec) {
        body += await renderSvg(f.spec);
        charts++;
      }
      if (f.table) body += htmlTable(f.table.columns, f.table.rows);
      const kinds = rows.length ? ["svg", "png", "csv", "json"] : ["svg", "png"];
      const numbers = f.spec
        ? (rows.length
          ? `<details><summary>the numbers (${rows.length} rows)</summary>${rowsTable(rows)}</details>` +
            `<script type="application/json" id="data-${id}">${scriptJson(rows)}</script>`
          : "") +
          `<p class="export">${
            kinds.map((k) =>
              `<button type="button" onclick="inoExport('${id}','${k}')">${k.toUpperCase()}</button>`
            ).join("")
          }</p>`
        : "";
      parts.push(
        `<figure id="${id}"><h3>${esc(f.title)}</h3>${body}<figcaption>${esc(f.caption)}${
          f.signature ? `<p class="signature">${esc(f.signature)}</p>` : ""
        }</figcaption>${numbers}</figure>`,
      );
    }
    sectionsHtml.push(
      `<section id="sec-${s.key}"><h2>${esc(title)} <span class="exp">(${esc(exps.join(", "))})</span></h2>${
        parts.join("\n")
      }</section>`,
    );
  }

  const checks = allChecks(loaded);
  const verdicts = checks.length
    ? `<section id="verdicts"><h2>Verdicts: the paper's signatures in this run</h2>${
      htmlTable(
        ["paper", "statistic", "this run", "paper's finding", "verdict"],
        checks.map((c) => {
          const sec = sectionOfCheck(c.figure);
          return [
            sec ? new RawCell(`<a href="#sec-${sec}">${esc(c.figure)}</a>`) : c.figure,
            c.statistic,
            c.ours,
            c.paper,
            new RawCell(c.ok ? "shows it" : "does not show it", c.ok ? "shows" : "not"),
          ];
        }),
      )
    }<p>Each row's statistic is computed from the results below (experiments/signatures.ts); "does not show it" is a finding, not an error.</p></section>`
    : "";
  const outcomes = outcomeSentences(loaded);
  const outcomeHtml = outcomes.length
    ? `<section id="outcomes"><h2>What came out</h2><ul>${
      outcomes.map((s) => `<li>${esc(s)}</li>`).join("")
    }</ul><p>Computed from the results below (mean ± SEM over judged samples; differences ± their combined SE).</p></section>`
    : "";
  const speeds = await trainingSpeeds(dir);
  const num = (x: number | null, d: number) => x === null ? null : Number(x.toFixed(d));
  const speedHtml = speeds.length
    ? `<section id="speed"><h2>Training speed on this machine</h2>${
      htmlTable(
        [
          "run",
          "step 1 (s): compiles, first touch",
          "steady state (s a step)",
          "steady state (tokens/s)",
          "warm steps",
        ],
        speeds.map((r) => [
          r.run,
          num(r.first_step_s, 2),
          num(r.steady_step_s, 3),
          num(r.steady_tokens_per_s, 0),
          r.warm_steps,
        ]),
      )
    }<p>The steady state is the median of the warm steps; step 1 is apart because it carries the pipeline compiles.</p></section>`
    : "";
  if (outcomeHtml) contents.unshift(`<li><a href="#outcomes">What came out</a></li>`);
  if (speedHtml) contents.push(`<li><a href="#speed">Training speed on this machine</a></li>`);
  const contentsHtml = `<section id="contents"><h2>Contents</h2><ol>${contents.join("")}</ol></section>`;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inoculum report</title><style>${STYLE}</style></head>
<body><h1>inoculum report</h1><p>${charts} figures from ${loaded.length} result files in <code>${
    esc(dir)
  }</code>, built ${new Date().toISOString()}.</p>
${verdicts}
${contentsHtml}
${outcomeHtml}
${sectionsHtml.join("\n")}
${speedHtml}
<pre id="selfcheck" hidden></pre>
<script>${SCRIPT}</script>
</body></html>`;
  await atomicWrite(out, html);
  const sections = (html.match(/<section /g) ?? []).length;
  return { path: out, figures: charts, sections, skipped: read.skipped };
}
