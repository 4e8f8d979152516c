// The shared experiment API: a context (GPU, run folder, progress, result writer), YAML configs
// validated against each experiment's schema, judges from config, and provenance for results
// (config echo, git commit, model hash, timings), written atomically.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { atomicWriteJson, exists } from "../lib/fsutil.ts";
import { modelHash } from "../lib/fingerprint.ts";
import { HttpJudge } from "../research/judge/http.ts";
import { LocalJudge } from "../research/judge/local.ts";
import { RuleJudge } from "../research/judge/rule.ts";
import { worldJudge } from "../world/judge.ts";
import type { Judge } from "../research/judge/judge.ts";
import { loadModel } from "../models/model.ts";

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
  /** runs it and returns its metrics (also written to its result file) */
  run(ctx: ExperimentContext, config: C): Promise<object>;
  /** the result files it writes: schema, figures, summary rows, report sentences */
  results: ResultKind[];
  /** a sweep's cells (experiments/plan.ts); without it the experiment is one cell */
  sweep?: Sweep<C>;
}

/**
 * One unit of a sweep that runs on its own (one process, one GPU): its name (a folder name), the cells it
 * needs done first, and its own resolved config. A cell writes only under its `output` folder.
 */
export interface Cell {
  name: string;
  /** names of the cells whose outputs it reads */
  after: string[];
  /** the cell's own config: what, with the plan's config, determines its result */
  config: Record<string, unknown>;
  /** its folder, relative to the run folder */
  output: string;
}

/** What a sweep state shared by cells in one process (a loaded base model, a judge) looks like. */
export interface SweepSession {
  dispose(): void;
}

/**
 * A sweep splits an experiment into cells that run anywhere — in turn in one process (`exp <name>`), or one
 * per Slurm array task (`exp cell`) — through the same runCell, so a cell's result does not depend on where
 * it ran; finish assembles the experiment's result from the cells' outputs.
 */
export interface Sweep<C> {
  cells(config: C): Cell[];
  /** state shared by the cells run in one process (loaded once) */
  open(ctx: ExperimentContext, config: C): Promise<SweepSession>;
  runCell(ctx: ExperimentContext, config: C, session: SweepSession, cell: Cell): Promise<void>;
  /** the experiment's result from the cells' outputs (written, and returned); `missing` lists cells whose
   * outputs are absent */
  finish(
    ctx: ExperimentContext,
    config: C,
    cells: Cell[],
  ): Promise<{ missing: string[]; metrics: object }>;
}

export { ConfigReader, readYaml } from "../lib/config.ts";
import type { ResultKind } from "./result_kind.ts";
import { ConfigReader } from "../lib/config.ts";

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
    /** the share of failed calls above which a run stops (absent: 0.5; absent rather than written, so that
     * plans made before the key existed keep their config hash) */
    max_missing?: number;
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
      model: r.nonEmpty("model"),
      api_key_env: r.optStr("api_key_env"),
      cache_dir: r.optStr("cache_dir"),
      concurrency: r.num("concurrency", 8, { int: true, min: 1 }),
      retries: r.num("retries", 5, { int: true, min: 0, max: 10 }),
      ...(r.has("max_missing") ? { max_missing: r.num("max_missing", 0.5, { min: 0, max: 1 }) } : {}),
      coherence_prompt: readRubric(r, "coherence_prompt"),
    };
  } else if (type === "local") {
    c = { type, model: r.nonEmpty("model"), coherence_prompt: readRubric(r, "coherence_prompt") };
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
    checkHealth: judge.checkHealth && (() => judge.checkHealth!()),
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
      maxMissing: c.max_missing ?? 0.5,
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

export interface ResultEnvelope {
  experiment: string;
  config: unknown;
  git_commit: string | null;
  model_hash: string | null;
  started: string;
  seconds: number;
  metrics: object;
}

export async function writeResult(
  path: string,
  experiment: string,
  config: unknown,
  model: string | null,
  started: Date,
  metrics: object,
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
