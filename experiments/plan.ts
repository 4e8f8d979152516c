// A sweep as a plan of cells (issue 14). `exp plan` expands a config into cells and writes DIR/plan.json
// once; `exp cell` runs one cell; `exp <name>` runs them all in turn in one process; `exp finish` assembles
// the result. Every path runs a cell through runPlanCell, so a cell's result does not depend on where it ran.
// Per cell, under DIR/cells/<name>/: `lock` (the live task that runs it), `attempts.jsonl` (one line per
// start) and `done.json` (written last, atomically: the cell is done when it exists).

import { dirname, join, resolve } from "node:path";
import { createHash } from "node:crypto";
import { atomicWriteJson, exists } from "../lib/fsutil.ts";
import { canonicalJson } from "../lib/config.ts";
import { acquireLock, holderAlive, readHolder, thisHolder } from "../lib/lock.ts";
import {
  type Cell,
  type Experiment,
  type ExperimentContext,
  gitCommit,
  type SweepSession,
} from "./common.ts";

export interface PlanCell extends Cell {
  index: number;
  /** 0 for cells that need nothing; otherwise one more than the latest stage they need */
  stage: number;
  /** the cell is done when this file (relative to the run folder) exists */
  done_file: string;
}

export interface Plan {
  version: 1;
  /** the experiment the plan's cells belong to (not `experiment`: a plan is not a result file) */
  sweep: string;
  /** the YAML the plan was made from (for people; the plan holds the parsed config itself) */
  config_file: string | null;
  config_hash: string;
  config: unknown;
  /** where relative paths in the config resolve: every task of the plan runs from here */
  cwd: string;
  run_dir: string;
  created: string;
  git_commit: string | null;
  cells: PlanCell[];
}

export const PLAN_FILE = "plan.json";
const cellDir = (runDir: string, name: string) => join(runDir, "cells", name);

function configHash(config: unknown): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex").slice(0, 16);
}

/** The cells of any experiment: a sweep's own, or the whole experiment as one cell. */
export function planCells(e: Experiment<unknown>, config: unknown): PlanCell[] {
  const cells: Cell[] = e.sweep
    ? e.sweep.cells(config)
    : [{ name: e.name, after: [], config: {}, output: "." }];
  const byName = new Map<string, PlanCell>();
  return cells.map((c, index) => {
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.+-]*$/.test(c.name) || byName.has(c.name)) {
      throw new Error(`${e.name}: cell name '${c.name}' is not a unique plain folder name`);
    }
    const needs = c.after.map((n) => {
      const d = byName.get(n);
      if (!d) throw new Error(`${e.name}: cell '${c.name}' needs '${n}', which is not an earlier cell`);
      return d;
    });
    const cell: PlanCell = {
      ...c,
      index,
      stage: needs.length ? 1 + Math.max(...needs.map((d) => d.stage)) : 0,
      done_file: join("cells", c.name, "done.json"),
    };
    byName.set(c.name, cell);
    return cell;
  });
}

/**
 * DIR/plan.json for this experiment and config: written once (atomically, then read-only), or the existing
 * one when it was made from the same config — a different config in the same folder is an error, since its
 * cells would mix with the first plan's.
 */
export async function makePlan(
  e: Experiment<unknown>,
  config: unknown,
  runDir: string,
  configFile: string | null,
): Promise<Plan> {
  const dir = resolve(runDir), path = join(dir, PLAN_FILE);
  // the config as the plan stores it (and as cells in other processes will see it)
  const stored = JSON.parse(JSON.stringify(config));
  const hash = configHash(stored);
  if (await exists(path)) {
    const old = await readPlan(path);
    if (old.sweep !== e.name || old.config_hash !== hash) {
      throw new Error(
        `${path}: this run folder holds a plan for another config (${old.sweep}, ${
          old.config_file ?? "no file"
        }); use a new --run-dir`,
      );
    }
    return await readPlan(path, e);
  }
  const plan: Plan = {
    version: 1,
    sweep: e.name,
    config_file: configFile && resolve(configFile),
    config_hash: hash,
    config: stored,
    cwd: Deno.cwd(),
    run_dir: dir,
    created: new Date().toISOString(),
    git_commit: await gitCommit(),
    cells: planCells(e, stored),
  };
  await Deno.mkdir(dir, { recursive: true });
  await atomicWriteJson(path, plan);
  await Deno.chmod(path, 0o444);
  return plan;
}

/**
 * DIR/plan.json, checked before anything runs from it: its fields by type, the config against its hash, and
 * (with the experiment) every cell against the cells its config gives — a hand-edited cell (an output of
 * `../..`, a name with `..`) is refused, never run. Cells resolve in the plan's own folder (`run_dir` as
 * stored is ignored: a moved run folder is used where it now is).
 */
export async function readPlan(path: string, e?: Experiment<unknown>): Promise<Plan> {
  let p: Plan;
  try {
    p = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new Error(`${path}: cannot read the plan: ${(err as Error).message}`);
  }
  if (p?.version !== 1 || !Array.isArray(p.cells) || typeof p.sweep !== "string") {
    throw new Error(`${path}: not a plan (expected version 1 with sweep and cells)`);
  }
  const fields: [keyof Plan, string][] = [
    ["config_hash", "string"],
    ["config", "object"],
    ["cwd", "string"],
    ["run_dir", "string"],
    ["created", "string"],
  ];
  for (const [k, t] of fields) {
    if (typeof p[k] !== t || p[k] === null) throw new Error(`${path}: field '${k}' must be a ${t}`);
  }
  if (configHash(p.config) !== p.config_hash) {
    throw new Error(`${path}: the config does not match its config_hash (edited by hand?); make a new plan`);
  }
  p.run_dir = dirname(resolve(path));
  if (e) {
    const want = planCells(e, p.config);
    if (want.length !== p.cells.length) {
      throw new Error(
        `${path}: ${p.cells.length} cell(s), but its config gives ${want.length}; make a new plan`,
      );
    }
    want.forEach((w, i) => {
      if (canonicalJson(w) !== canonicalJson(p.cells[i])) {
        throw new Error(
          `${path}: cell ${i} is not the cell its config gives (${w.name}; edited by hand?); make a new plan`,
        );
      }
    });
  }
  return p;
}

export function isDone(plan: Plan, cell: PlanCell): Promise<boolean> {
  return exists(join(plan.run_dir, cell.done_file));
}

// ---- locks: lib/lock.ts

/** "done", "running (Slurm job …)" while a live task holds its lock, or "to do". */
export async function cellState(plan: Plan, cell: PlanCell): Promise<string> {
  if (await isDone(plan, cell)) return "done";
  const holder = await readHolder(join(cellDir(plan.run_dir, cell.name), "lock"));
  if (!holder || !(await holderAlive(holder))) return "to do";
  return `running (${holder.job ? `Slurm job ${holder.job}` : `pid ${holder.pid}`})`;
}

// ---- running cells

/**
 * Run one cell of the plan unless it is done: its prerequisites must be done; it holds the cell's lock while
 * it runs; done.json is written only after the cell's own outputs. Returns whether it ran.
 */
export async function runPlanCell(
  ctx: ExperimentContext,
  e: Experiment<unknown>,
  plan: Plan,
  cell: PlanCell,
  session: () => Promise<SweepSession | null>,
): Promise<boolean> {
  if (await isDone(plan, cell)) {
    ctx.progress(`cell ${cell.index} (${cell.name}) is done already`);
    return false;
  }
  for (const n of cell.after) {
    const d = plan.cells.find((x) => x.name === n)!;
    if (!(await isDone(plan, d))) {
      throw new Error(
        `cell ${cell.index} (${cell.name}) needs cell ${d.index} (${d.name}), which is not done`,
      );
    }
  }
  const dir = cellDir(plan.run_dir, cell.name);
  await Deno.mkdir(dir, { recursive: true });
  const release = await acquireLock(join(dir, "lock"), `cell ${cell.index} (${cell.name})`);
  try {
    if (await isDone(plan, cell)) { // finished by another task between the check above and the lock
      ctx.progress(`cell ${cell.index} (${cell.name}) is done already`);
      return false;
    }
    const started = new Date();
    const attempt = { ...thisHolder(), started: started.toISOString() };
    await Deno.writeTextFile(join(dir, "attempts.jsonl"), JSON.stringify(attempt) + "\n", { append: true });
    ctx.progress(`cell ${cell.index} (${cell.name}): running`);
    const cctx = { ...ctx, runDir: plan.run_dir };
    if (e.sweep) {
      await e.sweep.runCell(cctx, plan.config, (await session())!, cell);
    } else {
      await e.run(cctx, plan.config);
    }
    await atomicWriteJson(join(dir, "done.json"), {
      cell: cell.name,
      index: cell.index,
      ...attempt,
      seconds: (Date.now() - started.getTime()) / 1000,
    });
    return true;
  } finally {
    await release();
  }
}

/** A session opened on first use and kept for the process's cells. */
function lazySession(ctx: ExperimentContext, e: Experiment<unknown>, config: unknown) {
  let s: Promise<SweepSession> | null = null;
  return {
    get: () => e.sweep ? (s ??= e.sweep.open(ctx, config)) : Promise.resolve(null),
    async dispose() {
      // a session that failed to open has nothing to free (and its error is already on its way)
      if (s) (await s.catch(() => null))?.dispose();
    },
  };
}

/** `exp cell --plan P --index N`: one cell, in its own process. */
export async function runCellOfPlan(
  ctx: ExperimentContext,
  e: Experiment<unknown>,
  plan: Plan,
  index: number,
) {
  const cell = plan.cells[index];
  if (!cell || cell.index !== index) {
    throw new Error(
      `${join(plan.run_dir, PLAN_FILE)}: no cell ${index} (the plan has 0..${plan.cells.length - 1})`,
    );
  }
  const s = lazySession(ctx, e, plan.config);
  try {
    await runPlanCell(ctx, e, plan, cell, s.get);
  } finally {
    await s.dispose();
  }
}

/** The experiment's result from its cells (`exp finish`); throws naming the cells without output. */
export async function finishPlan(
  ctx: ExperimentContext,
  e: Experiment<unknown>,
  plan: Plan,
): Promise<object> {
  const cctx = { ...ctx, runDir: plan.run_dir };
  const notDone: string[] = [];
  for (const c of plan.cells) if (!(await isDone(plan, c))) notDone.push(`${c.index} (${c.name})`);
  const done = e.sweep ? await e.sweep.finish(cctx, plan.config, plan.cells) : { missing: [], metrics: {} };
  const missing = done.missing;
  if (notDone.length || missing.length) {
    throw new Error(
      `${plan.run_dir}: ${notDone.length} of ${plan.cells.length} cell(s) did not finish: ${
        notDone.join(", ")
      }; rerun them (exp plan … --emit slurm --submit again, or exp cell --index N)`,
    );
  }
  return done.metrics;
}

/**
 * `exp <sweep>`: the plan in ctx.runDir (made, or the same config's reused), every cell not yet done in
 * turn in this process with one shared session, then finish. A killed run continues where it stopped.
 */
export async function runSweepLocally<C>(
  ctx: ExperimentContext,
  e: Experiment<C>,
  config: C,
  configFile: string | null = null,
): Promise<object> {
  const ex = e as Experiment<unknown>;
  const plan = await makePlan(ex, config, ctx.runDir, configFile);
  const s = lazySession(ctx, ex, plan.config);
  try {
    for (const cell of plan.cells) await runPlanCell(ctx, ex, plan, cell, s.get);
  } finally {
    await s.dispose();
  }
  return await finishPlan(ctx, ex, plan);
}
