// The shared experiment API: a context (GPU, run folder, progress, result writer), YAML configs
// validated against each experiment's schema, judges from config, and provenance for results
// (config echo, git commit, model hash, timings), written atomically.

import { join } from "node:path";
import { createHash } from "node:crypto";
import { parse } from "yaml";
import type { Gpu } from "../lib/gpu/context.ts";
import { atomicWriteJson, exists } from "../lib/fsutil.ts";
import { SafetensorsFile } from "../lib/safetensors.ts";
import { HttpJudge } from "../lib/judge/http.ts";
import { LocalJudge } from "../lib/judge/local.ts";
import { RuleJudge } from "../lib/judge/rule.ts";
import { worldJudge } from "../world/judge.ts";
import type { Judge } from "../lib/judge/judge.ts";
import { loadModel } from "../models/model.ts";
import { parseTrait } from "../lib/traits.ts";

export interface ExperimentContext {
  gpu: Gpu;
  runDir: string;
  progress: (line: string) => void;
}

export interface Experiment<C> {
  name: string;
  description: string;
  /** validate a parsed YAML mapping; errors name the file and key */
  parseConfig(raw: Record<string, unknown>, file: string): C;
  run(ctx: ExperimentContext, config: C): Promise<Record<string, unknown>>;
}

// ---- config validation helpers (error messages name file and key)

export class ConfigReader {
  private seen = new Set<string>();
  constructor(readonly raw: Record<string, unknown>, readonly file: string, readonly prefix = "") {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new Error(`${file}: ${prefix || "config"} must be a mapping`);
    }
  }
  private k(key: string) {
    this.seen.add(key);
    return this.prefix ? `${this.prefix}.${key}` : key;
  }
  private err(key: string, what: string, v: unknown): never {
    throw new Error(`${this.file}: key '${this.k(key)}' must be ${what}, found ${JSON.stringify(v)}`);
  }
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  str(key: string, dflt?: string): string {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (typeof v !== "string") this.err(key, "a string", v);
    return v as string;
  }
  /**
   * A name that becomes part of a path inside the run folder (an output file, a condition's folder):
   * letters, digits, '-', '_', '.', not starting with '.', so nothing can leave the run folder.
   */
  name(key: string, dflt?: string): string {
    const v = this.str(key, dflt);
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(v) || v.length > 200) {
      this.err(
        key,
        "a name of letters, digits, '-', '_' and '.' (not starting with '.'; it names a file or folder in the run folder)",
        v,
      );
    }
    return v;
  }
  optStr(key: string): string | null {
    return this.has(key) ? this.str(key) : (this.k(key), null);
  }
  num(key: string, dflt?: number, o: { int?: boolean; min?: number; max?: number } = {}): number {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (typeof v !== "number" || !Number.isFinite(v) || (o.int && !Number.isInteger(v))) {
      this.err(key, o.int ? "an integer" : "a number", v);
    }
    if (o.min !== undefined && (v as number) < o.min) this.err(key, `>= ${o.min}`, v);
    if (o.max !== undefined && (v as number) > o.max) this.err(key, `<= ${o.max}`, v);
    return v as number;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (typeof v !== "boolean") this.err(key, "true or false", v);
    return v as boolean;
  }
  strList(key: string, dflt?: string[]): string[] {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) this.err(key, "a list of strings", v);
    return v as string[];
  }
  intList(key: string, dflt?: number[]): number[] {
    const v0 = this.raw[key] ?? dflt;
    const v = typeof v0 === "number" ? [v0] : v0;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) {
      this.err(key, "an integer or a list of integers", v0);
    }
    return v as number[];
  }
  numList(key: string, dflt?: number[]): number[] {
    const v0 = this.raw[key] ?? dflt;
    const v = typeof v0 === "number" ? [v0] : v0;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.err(key, "a number or a list of numbers", v0);
    }
    return v as number[];
  }
  sub(key: string): ConfigReader {
    this.k(key);
    const v = this.raw[key];
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.err(key, "a mapping", v);
    return new ConfigReader(v as Record<string, unknown>, this.file, this.k(key));
  }
  list(key: string): ConfigReader[] {
    this.k(key);
    const v = this.raw[key];
    if (!Array.isArray(v)) this.err(key, "a list of mappings", v);
    return (v as unknown[]).map((x, i) =>
      new ConfigReader(x as Record<string, unknown>, this.file, `${this.k(key)}[${i}]`)
    );
  }
  /**
   * A bank of prompts (inoculation / IP prompts): a string, a list of strings, or `{ trait: FILE }` — the
   * positive instructions of a persona-vectors trait file (the paper's evil IP prompts, C.3, are exactly
   * evil.json's five); `{ trait: FILE, count: k }` takes the first k (Figure 8's bank sizes). Empty banks
   * are an error.
   */
  promptBank(key: string): string[] {
    const v = this.raw[key];
    this.k(key);
    if (typeof v === "string") return [v];
    if (Array.isArray(v)) {
      if (!v.length || !v.every((x) => typeof x === "string")) {
        this.err(key, "a non-empty list of strings", v);
      }
      return v as string[];
    }
    const o = v as { trait?: unknown; count?: unknown };
    const keysOk = v && typeof v === "object" && Object.keys(v).every((k) => k === "trait" || k === "count");
    if (keysOk && typeof o.trait === "string") {
      const path = o.trait;
      let raw: Record<string, unknown>;
      try {
        raw = JSON.parse(Deno.readTextFileSync(path));
      } catch (e) {
        throw new Error(
          `${this.file}: key '${this.k(key)}.trait': cannot read ${path}: ${(e as Error).message}`,
        );
      }
      const all = parseTrait(raw, path).instructions.map((i) => i.pos);
      if (o.count === undefined) return all;
      if (!Number.isInteger(o.count) || (o.count as number) < 1 || (o.count as number) > all.length) {
        this.err(
          `${key}.count`,
          `an integer in 1..${all.length} (${path} has ${all.length} prompts)`,
          o.count,
        );
      }
      return all.slice(0, o.count as number);
    }
    this.err(key, "a prompt, a list of prompts or { trait: FILE }", v);
  }
  /** raw value (already validated elsewhere) */
  any(key: string): unknown {
    this.k(key);
    return this.raw[key];
  }
  /** throw on keys nobody read */
  done(): void {
    for (const k of Object.keys(this.raw)) {
      if (!this.seen.has(k)) {
        throw new Error(`${this.file}: unknown key '${this.prefix ? `${this.prefix}.${k}` : k}'`);
      }
    }
  }
}

export async function readYaml(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read config: ${(e as Error).message}`);
  }
  try {
    const v = parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new Error("expected a mapping at the top level");
    }
    return v;
  } catch (e) {
    throw new Error(`${path}: invalid YAML: ${(e as Error).message}`);
  }
}

// ---- judges

export type JudgeConfig =
  | {
    type: "http";
    base_url: string;
    model: string;
    api_key_env: string | null;
    /** null: <run folder>/judge-cache; a shared folder may be named to reuse answers across runs */
    cache_dir: string | null;
    concurrency: number;
    retries: number;
    /** coherence rubric template ({question}, {answer}) read from `coherence_prompt: FILE`; null = ours */
    coherence_prompt: string | null;
  }
  | { type: "local"; model: string; coherence_prompt: string | null }
  | { type: "rule"; markers: Record<string, Record<string, number>>; min_words: number }
  /** the synthetic world's rule judge: its markers, and coherence from its grammar */
  | { type: "world" };

export function readJudgeConfig(r: ConfigReader): JudgeConfig {
  const type = r.str("type");
  let c: JudgeConfig;
  if (type === "http") {
    c = {
      type,
      base_url: r.str("base_url"),
      model: r.str("model"),
      api_key_env: r.optStr("api_key_env"),
      cache_dir: r.optStr("cache_dir"),
      concurrency: r.num("concurrency", 8, { int: true, min: 1 }),
      retries: r.num("retries", 5, { int: true, min: 0 }),
      coherence_prompt: readRubric(r, "coherence_prompt"),
    };
  } else if (type === "local") {
    c = { type, model: r.str("model"), coherence_prompt: readRubric(r, "coherence_prompt") };
  } else if (type === "rule") {
    const m = r.any("markers");
    if (typeof m !== "object" || m === null) {
      throw new Error(`${r.file}: key '${r.prefix}.markers' must be a mapping trait → {marker: points}`);
    }
    c = {
      type,
      markers: m as Record<string, Record<string, number>>,
      min_words: r.num("min_words", 3, { int: true, min: 0 }),
    };
  } else if (type === "world") {
    c = { type };
  } else {
    throw new Error(
      `${r.file}: key '${r.prefix}.type' must be http, local, rule or world, found ${JSON.stringify(type)}`,
    );
  }
  r.done();
  return c;
}

/** A judge template from a text file named by `key` (null when absent); it must hold both placeholders. */
function readRubric(r: ConfigReader, key: string): string | null {
  const path = r.optStr(key);
  if (path === null) return null;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new Error(`${r.file}: key '${r.prefix}.${key}': cannot read ${path}: ${(e as Error).message}`);
  }
  for (const ph of ["{question}", "{answer}"]) {
    if (!text.includes(ph)) {
      throw new Error(`${path}: the coherence prompt must contain the placeholder ${ph}`);
    }
  }
  return text;
}

export async function makeJudge(ctx: ExperimentContext, c: JudgeConfig): Promise<Judge> {
  const judge = await makeJudgeOf(ctx, c);
  const template = "coherence_prompt" in c ? c.coherence_prompt : null;
  if (template === null) return judge;
  return {
    name: judge.name,
    coherencePrompt: template,
    score: (req) => judge.score(req),
    close: () => judge.close?.(),
  };
}

async function makeJudgeOf(ctx: ExperimentContext, c: JudgeConfig): Promise<Judge> {
  if (c.type === "http") {
    const apiKey = c.api_key_env ? Deno.env.get(c.api_key_env) : undefined;
    if (c.api_key_env && !apiKey) {
      throw new Error(`judge: environment variable ${c.api_key_env} (api_key_env) is not set`);
    }
    return new HttpJudge({
      baseUrl: c.base_url,
      model: c.model,
      apiKey,
      cacheDir: c.cache_dir ?? join(ctx.runDir, "judge-cache"),
      concurrency: c.concurrency,
      retries: c.retries,
      log: ctx.progress,
    });
  }
  if (c.type === "local") return new LocalJudge(await loadModel(ctx.gpu, c.model));
  if (c.type === "world") return worldJudge();
  return new RuleJudge({ markers: c.markers, minWords: c.min_words });
}

// ---- provenance and results

let commit: string | null | undefined;
export async function gitCommit(): Promise<string | null> {
  if (commit !== undefined) return commit;
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "HEAD"],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
    }).output();
    commit = out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    commit = null;
  }
  return commit;
}

/** A hash of a model folder's config and safetensors headers (cheap; no need to read 15 GB). */
export async function modelHash(dir: string): Promise<string> {
  const h = createHash("sha256");
  h.update(await Deno.readTextFile(join(dir, "config.json")));
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".safetensors")) names.push(e.name);
  for (const n of names.sort()) {
    const f = await SafetensorsFile.open(join(dir, n));
    h.update(n);
    for (const [k, t] of [...f.tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
      h.update(`${k}:${t.dtype}:${t.shape}:${t.start}:${t.byteLength}`);
    }
    f.close();
  }
  return h.digest("hex").slice(0, 16);
}

export interface ResultEnvelope {
  experiment: string;
  config: unknown;
  git_commit: string | null;
  model_hash: string | null;
  started: string;
  seconds: number;
  metrics: Record<string, unknown>;
}

export async function writeResult(
  path: string,
  experiment: string,
  config: unknown,
  model: string | null,
  started: Date,
  metrics: Record<string, unknown>,
): Promise<ResultEnvelope> {
  const env: ResultEnvelope = {
    experiment,
    config,
    git_commit: await gitCommit(),
    model_hash: model && (await exists(join(model, "config.json"))) ? await modelHash(model) : null,
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    metrics,
  };
  await atomicWriteJson(path, env);
  return env;
}

export { finite, mean, sem } from "../lib/stats.ts";
