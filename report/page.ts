// The report page's parts: HTML escaping, tables, the page shell with its style, the export buttons' script
// (SVG, PNG, CSV, JSON from the page itself: no network) and the self-check the rendering test reads.

export const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]!));

/** A table cell given as HTML (a link, a class), not as a value to escape. */
export class RawCell {
  constructor(readonly html: string, readonly cls = "") {}
}

const cell = (v: unknown) =>
  v instanceof RawCell
    ? v.html
    : v === null || v === undefined
    ? "–"
    : typeof v === "number"
    ? (Number.isInteger(v) ? String(v) : String(Math.round(v * 1e4) / 1e4))
    : typeof v === "object"
    ? esc(JSON.stringify(v))
    : esc(String(v));

export function htmlTable(columns: string[], rows: unknown[][]): string {
  return `<table><tr>${columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>${
    rows.map((r) =>
      `<tr>${
        r.map((v) => `<td${v instanceof RawCell && v.cls ? ` class="${v.cls}"` : ""}>${cell(v)}</td>`).join(
          "",
        )
      }</tr>`
    ).join("")
  }</table>`;
}

/** The rows a chart was drawn from (its top-level data), without the report's helper fields. */
export function chartRows(spec: Record<string, unknown> | undefined): Record<string, unknown>[] {
  if (!spec) return [];
  const own = (spec.data as { values?: unknown } | undefined)?.values;
  // a chart whose data sit in its layers or its faceted spec: theirs, in order
  const values: unknown[] = Array.isArray(own) ? own : [
    ...((spec.layer ?? spec.vconcat ?? spec.hconcat ?? []) as Record<string, unknown>[]).flatMap((l) =>
      chartRows(l)
    ),
    ...(spec.spec ? chartRows(spec.spec as Record<string, unknown>) : []),
  ];
  return values.map((v) =>
    Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([k]) => !k.startsWith("__")))
  );
}

export function rowsTable(rows: Record<string, unknown>[]): string {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return htmlTable(cols, rows.map((r) => cols.map((c) => r[c])));
}

/** JSON for a <script type="application/json"> (no "</script>" can close it early). */
export const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, "\\u003c");

export const STYLE = `body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
section{margin:2.5em 0;border-top:2px solid #ccc;padding-top:.5em}figure{margin:1.5em 0}
figcaption{color:#555;font-size:.9em;max-width:780px}.signature{color:#222;font-style:italic}
h1{font-size:1.6em}h2{font-size:1.25em}h3{font-size:1em}.exp{color:#777;font-weight:normal;font-size:.85em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.shows{color:#176b2c;font-weight:bold}.not{color:#9a1d1d;font-weight:bold}details{font-size:.9em;margin:.3em 0}
.export button{font-size:.8em;margin-right:.4em}`;

/** The export buttons' functions and the page's self-check (read by tests/report_test.ts from the DOM). */
export const SCRIPT = `
function inoFig(id) { return document.getElementById(id); }
function inoDownload(name, blob) {
  var a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
}
function inoSvgText(id) { return new XMLSerializer().serializeToString(inoFig(id).querySelector("svg")); }
function inoData(id) { return JSON.parse(document.getElementById("data-" + id).textContent); }
function inoExport(id, kind) {
  if (kind === "svg") return inoDownload(id + ".svg", new Blob([inoSvgText(id)], { type: "image/svg+xml" }));
  if (kind === "json") return inoDownload(id + ".json", new Blob([JSON.stringify(inoData(id), null, 1)], { type: "application/json" }));
  if (kind === "csv") {
    var rows = inoData(id), cols = [];
    rows.forEach(function (r) { Object.keys(r).forEach(function (k) { if (cols.indexOf(k) < 0) cols.push(k); }); });
    var q = function (v) {
      if (v === null || v === undefined) return "";
      var s = typeof v === "object" ? JSON.stringify(v) : String(v);
      return /[",\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    var text = [cols.join(",")].concat(rows.map(function (r) { return cols.map(function (c) { return q(r[c]); }).join(","); })).join("\\n");
    return inoDownload(id + ".csv", new Blob([text], { type: "text/csv" }));
  }
  var svg = inoFig(id).querySelector("svg"), img = new Image();
  var w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  img.onload = function () {
    var c = document.createElement("canvas"); c.width = 2 * w; c.height = 2 * h;
    var g = c.getContext("2d"); g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
    g.drawImage(img, 0, 0, c.width, c.height);
    c.toBlob(function (b) { inoDownload(id + ".png", b); });
  };
  img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(inoSvgText(id));
}
(function selfCheck() {
  var figs = Array.prototype.slice.call(document.querySelectorAll("figure"));
  var charts = figs.filter(function (f) { return f.querySelector("svg"); });
  var empty = charts.filter(function (f) {
    return !f.querySelector("g.role-mark path, g.role-mark text, g.role-mark line, g.role-mark rect");
  }).map(function (f) { return f.id; });
  var bad = [];
  document.querySelectorAll("figure svg text").forEach(function (t) {
    if (/^-?\\d+\\.\\d*0{4,}$/.test(t.textContent.trim())) bad.push(t.textContent.trim());
  });
  var titles = Array.prototype.map.call(document.querySelectorAll("section > h2, figure > h3"), function (h) {
    return h.textContent.trim();
  });
  var dup = titles.filter(function (t, i) { return titles.indexOf(t) !== i; });
  var tables = 0;
  document.querySelectorAll('script[type="application/json"]').forEach(function (s) {
    if (Array.isArray(JSON.parse(s.textContent))) tables++;
  });
  var result = {
    dataTables: tables,
    figures: figs.length, charts: charts.length, sections: document.querySelectorAll("section").length,
    emptyCharts: empty, badAxisLabels: bad, duplicateTitles: dup,
    exports: document.querySelectorAll(".export button").length
  };
  document.getElementById("selfcheck").textContent = JSON.stringify(result);
  document.title = "inoculum report: " + charts.length + " figures";
})();`;
