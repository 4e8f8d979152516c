// Reading a run folder's results, for summarize and report: every *.json under it (checkpoint folders
// aside) that is a result — an object with an `experiment` — validated against schemas/result.schema.json.
// A file that cannot be read, is not JSON, or is a result that does not match its schema is returned as
// skipped with the reason, never dropped without a word.

import { join, relative } from "node:path";
import Ajv from "ajv";

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
// deno-lint-ignore no-explicit-any
let validate: any = null;

async function validator() {
  if (!validate) {
    // deno-lint-ignore no-explicit-any
    const ajv = new (Ajv as any)({ allErrors: false });
    ajv.addSchema(JSON.parse(await Deno.readTextFile(new URL("summary.schema.json", SCHEMAS))));
    validate = ajv.compile(JSON.parse(await Deno.readTextFile(new URL("result.schema.json", SCHEMAS))));
  }
  return validate;
}

async function* jsonFiles(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory && e.name !== "checkpoints" && !e.name.startsWith(".")) yield* jsonFiles(p);
    else if (e.isFile && e.name.endsWith(".json") && !e.name.startsWith(".")) yield p;
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
