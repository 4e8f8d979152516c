// `deno task study:check [DIR]`: before a study run, every path the study configs (configs/study) read
// exists — the checkpoint, the persona-vectors data and trait files — with the sample counts the paper
// states (4,681 for each evil training set, 3.1). Paths under runs/ are made by earlier configs and listed
// as such. One line per path; exit 1 when anything is missing or of another size.

import { join } from "node:path";
import { experimentOfConfigFile, EXPERIMENTS } from "../experiments/index.ts";
import { readYaml } from "../experiments/common.ts";
import { configReads } from "../lib/config.ts";
import { UsageError } from "./common.ts";

/** The paper's sample counts by the data file's path ending (3.1: "4,681 samples"). */
const PAPER_COUNTS: [RegExp, number][] = [[/dataset\/evil\/(misaligned_[12]|normal)\.jsonl$/, 4681]];

const HOW = {
  model: "download it (README: Getting the model and data for the study): " +
    "hf download Qwen/Qwen2.5-7B-Instruct --local-dir models/Qwen2.5-7B-Instruct",
  data:
    "clone github.com/safety-research/persona_vectors into ../shared/data/persona_vectors and unzip its " +
    "dataset.zip there (README: Getting the model and data for the study)",
};

export interface StudyCheck {
  lines: string[];
  ok: boolean;
}

function countLines(path: string): number {
  const text = Deno.readTextFileSync(path);
  let n = 0;
  for (const line of text.split("\n")) if (line.trim()) n++;
  return n;
}

export async function studyCheck(dir = "configs/study"): Promise<StudyCheck> {
  const readers = new Map<string, { key: string; files: string[] }>();
  const lines: string[] = [];
  let ok = true;
  const files = [...Deno.readDirSync(dir)].filter((e) => e.isFile && e.name.endsWith(".yaml")).map((e) =>
    e.name
  )
    .sort();
  if (!files.length) throw new UsageError(`study:check: no .yaml configs in ${dir}`);
  for (const f of files) {
    const file = join(dir, f);
    const name = experimentOfConfigFile(file);
    if (!name) {
      lines.push(`BAD      ${file}: not named after an experiment`);
      ok = false;
      continue;
    }
    try {
      const config = EXPERIMENTS[name].parseConfig(await readYaml(file), file);
      for (const { key, value } of configReads(config)) {
        if (!value.includes("/")) continue; // names (a judge model, a trait) are not paths
        const r = readers.get(value) ?? { key, files: [] };
        r.files.push(f);
        readers.set(value, r);
      }
    } catch (e) {
      lines.push(`BAD      ${(e as Error).message}`);
      ok = false;
    }
  }
  for (const [path, r] of [...readers].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const fs = [...new Set(r.files)];
    const by = `(${r.key}; ${fs.length} config(s): ${fs.slice(0, 3).join(", ")}${
      fs.length > 3 ? ", …" : ""
    })`;
    if (path.startsWith("runs/")) {
      lines.push(`made by  ${path} ${by}`);
      continue;
    }
    let st: Deno.FileInfo | null = null;
    try {
      st = Deno.statSync(path);
    } catch { /* missing */ }
    const how = r.key === "model" || r.key.endsWith(".model") ? HOW.model : HOW.data;
    if (!st) {
      lines.push(`MISSING  ${path} ${by}: ${how}`);
      ok = false;
      continue;
    }
    if (st.isDirectory) {
      const names = [...Deno.readDirSync(path)].map((e) => e.name);
      if (!names.includes("config.json") || !names.some((n) => n.endsWith(".safetensors"))) {
        lines.push(
          `BAD      ${path} ${by}: not a model folder (config.json and *.safetensors expected): ${how}`,
        );
        ok = false;
      } else lines.push(`ok       ${path} ${by}`);
      continue;
    }
    if (path.endsWith(".jsonl")) {
      const n = countLines(path);
      const want = PAPER_COUNTS.find(([re]) => re.test(path))?.[1];
      if (want !== undefined && n !== want) {
        lines.push(
          `BAD      ${path} ${by}: ${n.toLocaleString("en")} samples, the paper's ${
            want.toLocaleString("en")
          } (3.1): ${how}`,
        );
        ok = false;
      } else lines.push(`ok       ${path} ${by}: ${n.toLocaleString("en")} samples`);
      continue;
    }
    lines.push(`ok       ${path} ${by}`);
  }
  return { lines, ok };
}

export async function studyCheckCommand(_a: unknown, pos: string[]): Promise<void> {
  const r = await studyCheck(pos[0] ?? "configs/study");
  for (const l of r.lines) console.log(l);
  if (!r.ok) throw new Error("study:check: the study cannot run yet (the lines above say what is missing)");
  console.error("study:check: every path the study configs read is there");
}
