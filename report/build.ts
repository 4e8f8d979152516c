// `deno task report RUN_DIR`: one self-contained HTML page with a figure for each result JSON under
// RUN_DIR, rendered to SVG headlessly with Vega-Lite → Vega (no scripts needed to view it).

import { join, relative } from "node:path";
import * as vega from "vega";
import { compile } from "vega-lite";
import { atomicWrite } from "../lib/fsutil.ts";
import { outcomeSentences } from "./outcomes.ts";
import { type ReadResults, readResults, resultKinds } from "../experiments/results.ts";
import type { Figure } from "../experiments/result_kind.ts";
import { trainingSpeeds } from "./speed.ts";

export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  // deno-lint-ignore no-explicit-any
  const vg = compile({ $schema: "https://vega.github.io/schema/vega-lite/v6.json", ...spec } as any).spec;
  const view = new vega.View(vega.parse(vg), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]!));

export async function buildReport(
  dir: string,
  out = join(dir, "report.html"),
): Promise<{ path: string; figures: number; skipped: ReadResults["skipped"] }> {
  const read = await readResults(dir);
  const figs: (Figure & { svg: string })[] = [];
  const kinds = resultKinds().filter((k) => k.figures);
  const order = kinds.map((k) => k.kind);
  const loaded = read.results.filter((r) => order.includes(r.json.experiment)).map((r) => ({
    f: r.path,
    j: r.json,
  }));
  loaded.sort((a, b) =>
    order.indexOf(a.j.experiment) - order.indexOf(b.j.experiment) || (a.f < b.f ? -1 : 1)
  );
  for (const { f, j } of loaded) {
    for (const fig of kinds[order.indexOf(j.experiment)].figures!(j, relative(dir, f))) {
      figs.push({ ...fig, svg: await renderSvg(fig.spec) });
    }
  }
  const body = figs.map((f, i) =>
    `<figure id="fig${i + 1}"><h2>${i + 1}. ${esc(f.title)}</h2>${f.svg}<figcaption>${esc(f.caption)}${
      f.signature ? `<p class="signature">${esc(f.signature)}</p>` : ""
    }</figcaption></figure>`
  ).join("\n");
  const outcomes = outcomeSentences(loaded.map(({ f, j }) => ({ file: relative(dir, f), result: j })));
  const outcomeHtml = outcomes.length
    ? `<section id="outcomes"><h2>What came out</h2><ul>${
      outcomes.map((s) => `<li>${esc(s)}</li>`).join("")
    }</ul><p>Computed from the results below (mean ± SEM over judged samples; differences ± their combined SE).</p></section>`
    : "";
  const speeds = await trainingSpeeds(dir);
  const num = (x: number | null, d: number) => x === null ? "–" : x.toFixed(d);
  const speedHtml = speeds.length
    ? `<section id="speed"><h2>Training speed on this machine</h2><table><tr><th>run</th><th>step 1 (s): compiles, first touch</th><th>steady state (s a step)</th><th>steady state (tokens/s)</th><th>warm steps</th></tr>${
      speeds.map((r) =>
        `<tr><td>${esc(r.run)}</td><td>${num(r.first_step_s, 2)}</td><td>${num(r.steady_step_s, 3)}</td><td>${
          num(r.steady_tokens_per_s, 0)
        }</td><td>${r.warm_steps}</td></tr>`
      ).join("")
    }</table><p>The steady state is the median of the warm steps; step 1 is apart because it carries the pipeline compiles.</p></section>`
    : "";
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inoculum report</title>
<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}figure{margin:2em 0;border-top:1px solid #ddd;padding-top:1em}
figcaption{color:#555;font-size:.9em;max-width:760px}.signature{color:#222;font-style:italic}h1{font-size:1.6em}h2{font-size:1.1em}</style></head>
<body><h1>inoculum report</h1><p>${figs.length} figures from ${loaded.length} result files in <code>${
    esc(dir)
  }</code>, built ${new Date().toISOString()}.</p>
${outcomeHtml}
${body}
${speedHtml}
<script>document.title = "inoculum report: " + document.querySelectorAll("figure svg").length + " figures";</script>
</body></html>`;
  await atomicWrite(out, html);
  return { path: out, figures: figs.length, skipped: read.skipped };
}
