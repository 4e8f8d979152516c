// The result schema, assembled from what each experiment declares of its result files (ResultKind), and
// reading a run folder's results for summarize and report: every *.json under it (checkpoint folders
// aside) that is a result — an object with an `experiment` — validated against that schema.
// A file that cannot be read, is not JSON, or is a result that does not match its schema is returned as
// skipped with the reason, never dropped without a word.

import { join, relative } from "node:path";
import Ajv from "ajv";
import { EXPERIMENTS } from "./index.ts";
import type { ResultKind } from "./result_kind.ts";

export interface LoadedResult {
  /** path relative to the run folder */
  file: string;
  path: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

export interface ReadResults {
  results: LoadedResult[];
  skipped: { file: string; why: string }[];
}

const SCHEMAS = new URL("../schemas/", import.meta.url);

/** Every kind of result file, in the registry's order. */
export function resultKinds(): ResultKind[] {
  return Object.values(EXPERIMENTS).flatMap((e) => e.results);
}

/** The JSON schema of every result file (schemas/result.schema.json is this, written by `exp schema`). */
export function resultSchema(): Record<string, unknown> {
  const kinds = resultKinds();
  return {
    $id: "result",
    description: "Every experiment result file: provenance plus the experiment's metrics.",
    type: "object",
    required: ["experiment", "config", "git_commit", "model_hash", "started", "seconds", "metrics"],
    properties: {
      experiment: { enum: kinds.map((k) => k.kind) },
      config: { type: "object" },
      git_commit: { type: ["string", "null"] },
      model_hash: { type: ["string", "null"] },
      started: { type: "string" },
      seconds: { type: "number", minimum: 0 },
      metrics: { type: "object" },
    },
    allOf: kinds.map((k) => ({
      if: { properties: { experiment: { const: k.kind } } },
      then: { properties: { metrics: k.metricsSchema } },
    })),
  };
}

/** schemas/summary.schema.json: an evaluation summary, referenced by the metrics of several kinds. */
export async function summarySchema(): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(new URL("summary.schema.json", SCHEMAS)));
}
// deno-lint-ignore no-explicit-any
let validate: any = null;

async function validator() {
  if (!validate) {
    // deno-lint-ignore no-explicit-any
    const ajv = new (Ajv as any)({ allErrors: false });
    ajv.addSchema(await summarySchema());
    validate = ajv.compile(resultSchema());
  }
  return validate;
}

/** The .json files under dir; symbolic links are followed (a linked run folder is read, never skipped),
 * each real folder once (a link back up the tree is not a loop). */
async function* jsonFiles(dir: string, seen = new Set<string>()): AsyncGenerator<string> {
  const real = await Deno.realPath(dir);
  if (seen.has(real)) return;
  seen.add(real);
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.name.startsWith(".")) continue;
    let isDir = e.isDirectory, isFile = e.isFile;
    if (e.isSymlink) {
      const st = await Deno.stat(p).catch(() => null);
      if (!st) throw new Error(`${p}: a symbolic link to ${await Deno.readLink(p)}, which does not exist`);
      isDir = st.isDirectory;
      isFile = st.isFile;
    }
    if (isDir && e.name !== "checkpoints") yield* jsonFiles(p, seen);
    else if (isFile && e.name.endsWith(".json")) yield p;
  }
}

export async function readResults(dir: string): Promise<ReadResults> {
  const v = await validator();
  const out: ReadResults = { results: [], skipped: [] };
  for await (const path of jsonFiles(dir)) {
    const file = relative(dir, path);
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      out.skipped.push({ file, why: `not readable JSON (${(e as Error).message.split("\n")[0]})` });
      continue;
    }
    if (typeof (json as { experiment?: unknown })?.experiment !== "string") continue; // not a result
    if (!v(json)) {
      const err = v.errors?.[0];
      out.skipped.push({
        file,
        why: `does not match the result schema: ${err?.instancePath || "(top)"} ${err?.message ?? ""}`.trim(),
      });
      continue;
    }
    out.results.push({ file, path, json });
  }
  out.results.sort((a, b) => (a.file < b.file ? -1 : 1));
  out.skipped.sort((a, b) => (a.file < b.file ? -1 : 1));
  return out;
}
