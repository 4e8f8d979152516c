// `exp <name> --config FILE.yaml [--run-dir DIR]`, `exp summarize DIR`, `exp schema`, and a sweep's plan:
// `exp plan` (cells in DIR/plan.json, optionally Slurm job arrays), `exp cell`, `exp finish`.

import { join } from "node:path";
import { experimentOfConfigFile, EXPERIMENTS } from "../experiments/index.ts";
import { type Experiment, type ExperimentContext, readYaml } from "../experiments/common.ts";
import { printTable, summarize } from "../experiments/summarize.ts";
import { resultSchema } from "../experiments/results.ts";
import {
  cellState,
  finishPlan,
  makePlan,
  type Plan,
  readPlan,
  runCellOfPlan,
  runSweepLocally,
} from "../experiments/plan.ts";
import { SLURM_DEFAULTS, type SlurmOptions, slurmScripts } from "../experiments/slurm.ts";
import { buildReport } from "../report/build.ts";
import { atomicWrite, checkRunFolderApart, danglingLink } from "../lib/fsutil.ts";
import { configReads } from "../lib/config.ts";
import { need, parseNumber, startGpu, UsageError } from "./common.ts";

type Flags = Record<string, string | boolean | undefined>;
const progress = (s: string) => console.error(s);

function experimentNamed(name: string | undefined, what: string): Experiment<unknown> {
  const e = name ? EXPERIMENTS[name] : undefined;
  if (!e) {
    throw new UsageError(
      `${what}: expected one of ${
        [...Object.keys(EXPERIMENTS), "summarize", "schema", "plan", "cell", "finish"].join(", ")
      }, got '${name ?? ""}'`,
    );
  }
  return e;
}

async function planOf(a: Flags, cmd: string): Promise<{ plan: Plan; e: Experiment<unknown> }> {
  const path = need(a.plan as string, "plan", cmd);
  const first = await readPlan(path);
  const e = experimentNamed(first.sweep, `${path}: experiment`);
  return { plan: await readPlan(path, e), e };
}

export async function expCommand(a: Flags, pos: string[]): Promise<void> {
  const [name, dir] = pos;
  if (name === "summarize") {
    if (!dir) throw new UsageError("exp summarize: expected a run folder");
    const rows = await summarize(dir);
    console.log(printTable(rows));
    for (const s of rows.skipped) console.error(`skipped ${s.file}: ${s.why}`);
    if (rows.skipped.length) {
      throw new Error(`${dir}: ${rows.skipped.length} result file(s) could not be read (listed above)`);
    }
    return;
  }
  if (name === "schema") {
    console.log(JSON.stringify(resultSchema(), null, 2));
    return;
  }
  if (name === "plan") return await planCommand(a, pos);
  if (name === "cell") {
    const { plan, e } = await planOf(a, "exp cell");
    const index = parseNumber(need(a.index as string, "index", "exp cell"), "index", 0, {
      int: true,
      min: 0,
    });
    const ctx: ExperimentContext = { gpu: await startGpu(), runDir: plan.run_dir, progress };
    await runCellOfPlan(ctx, e, plan, index);
    return;
  }
  if (name === "finish") return await finishCommand(a);
  const e = experimentNamed(name, "exp");
  if (pos.length > 1) throw new UsageError(`exp ${name}: unexpected argument '${pos[1]}'`);
  const file = need(a.config as string, "config", `exp ${name}`);
  const config = e.parseConfig(await readYaml(file), file);
  const runDir = (a["run-dir"] as string) ?? `runs/${name}-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  const dangling = danglingLink(runDir);
  if (dangling) throw new UsageError(`--run-dir: ${dangling}`);
  checkRunFolderApart(runDir, "--run-dir", configInputs(config), false);
  if (!e.sweep) await claimResultFiles(runDir, config, !!a.overwrite);
  else if (a.overwrite) {
    throw new UsageError(
      `exp ${name}: --overwrite is for single results; a sweep continues its plan (a new --run-dir starts again)`,
    );
  }
  await Deno.mkdir(runDir, { recursive: true });
  const ctx: ExperimentContext = { gpu: await startGpu(), runDir, progress };
  if (e.sweep) await runSweepLocally(ctx, e, config, file);
  else await e.run(ctx, config);
  console.error(`results in ${runDir}`);
}

/**
 * The files a one-cell experiment writes (its `output`: NAME.json and NAME.safetensors, or the file named):
 * an earlier run's are refused, or moved aside to NAME.old-TIME with --overwrite — never written over (later
 * runs point at a vector file; a rerun must not change it under them).
 */
async function claimResultFiles(runDir: string, config: unknown, overwrite: boolean): Promise<void> {
  const output = (config as { output?: unknown }).output;
  if (typeof output !== "string") return;
  const files = /\.(json|safetensors)$/.test(output) ? [output] : [`${output}.json`, `${output}.safetensors`];
  const found = files.map((f) => join(runDir, f)).filter((p) => {
    try {
      Deno.lstatSync(p);
      return true;
    } catch {
      return false;
    }
  });
  if (!found.length) return;
  if (!overwrite) {
    throw new UsageError(
      `${
        found[0]
      }: holds an earlier run's result; pass --overwrite to move it aside, or choose another --run-dir or output`,
    );
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  for (const p of found) {
    await Deno.rename(p, `${p}.old-${stamp}`);
    console.error(`moved ${p} to ${p}.old-${stamp}`);
  }
}

/** The config's strings that name an existing file or folder: what the run reads. */
function configInputs(config: unknown): { key: string; path: string }[] {
  return configReads(config).filter(({ value }) => {
    try {
      Deno.statSync(value);
      return value.includes("/") || value.includes(".");
    } catch {
      return false;
    }
  }).map(({ key, value }) => ({ key, path: value }));
}

async function planCommand(a: Flags, pos: string[]): Promise<void> {
  const file = need(a.config as string, "config", "exp plan");
  const runDir = need(a["run-dir"] as string, "run-dir", "exp plan");
  // `exp plan NAME --config …`, or the experiment the config's file name starts with
  const e = pos[1] ? experimentNamed(pos[1], "exp plan") : experimentOfFile(file);
  if (a.submit && !a.emit) {
    throw new UsageError("exp plan: --submit submits what --emit slurm writes; add --emit slurm");
  }
  const o = a.emit ? slurmOptions(a) : null; // checked before anything is written
  const plan = await makePlan(e, e.parseConfig(await readYaml(file), file), runDir, file);
  const states = await Promise.all(plan.cells.map((c) => cellState(plan, c)));
  const rows = plan.cells.map((c, i) =>
    `${String(c.index).padStart(4)}  stage ${c.stage}  ${states[i].padEnd(24)} ${c.name}`
  );
  console.log(
    `${join(plan.run_dir, "plan.json")}: ${plan.sweep}, ${plan.cells.length} cell(s)\n${rows.join("\n")}`,
  );
  const todo = plan.cells.filter((_, i) => states[i] === "to do");
  if (!o) {
    console.log(
      `\nrun a cell: deno task exp cell --plan ${join(plan.run_dir, "plan.json")} --index N` +
        `\nthen:       deno task exp finish --plan ${join(plan.run_dir, "plan.json")}`,
    );
    return;
  }
  const scripts = slurmScripts(plan, todo, o);
  await Deno.mkdir(join(plan.run_dir, "logs"), { recursive: true });
  // an earlier emission's stage scripts that this one does not write would submit done cells again
  for await (const f of Deno.readDir(plan.run_dir)) {
    if (/^(stage-\d+|sweep)\.sbatch$/.test(f.name) && !(f.name in scripts.files)) {
      await Deno.remove(join(plan.run_dir, f.name));
    }
  }
  for (const [f, text] of Object.entries(scripts.files)) {
    await atomicWrite(join(plan.run_dir, f), text);
    await Deno.chmod(join(plan.run_dir, f), f.endsWith(".sh") ? 0o755 : 0o644);
  }
  for (const s of scripts.stages) {
    console.log(`${join(plan.run_dir, s.file)}: ${s.cells.length} cell(s)`);
  }
  const submit = join(plan.run_dir, "submit.sh");
  if (!a.submit) {
    console.log(`\nsubmit (each array after the one before, then finish.sbatch): bash ${submit}`);
    return;
  }
  const out = await new Deno.Command("bash", { args: [submit], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${submit} failed: ${text.trim()}`);
  console.log(text.trim());
}

/** --emit slurm's options, each checked (a value goes into an #SBATCH line as it is). */
function slurmOptions(a: Flags): SlurmOptions {
  if (a.emit !== "slurm") throw new UsageError(`exp plan: --emit takes slurm, got '${a.emit}'`);
  const int = (flag: string, dflt: number | null, min: number) =>
    a[flag] === undefined ? dflt : parseNumber(a[flag] as string, flag, 0, { int: true, min });
  const o: SlurmOptions = {
    ...SLURM_DEFAULTS,
    partition: (a.partition as string) ?? null,
    account: (a.account as string) ?? null,
    time: (a.time as string) ?? null,
    gpusPerTask: int("gpus-per-task", SLURM_DEFAULTS.gpusPerTask, 0)!,
    cpusPerTask: int("cpus-per-task", SLURM_DEFAULTS.cpusPerTask, 1)!,
    memMb: int("mem", null, 1),
    maxParallel: int("max-parallel", null, 1),
    setup: a.setup ? [a.setup as string] : [],
    deno: (a.deno as string) ?? SLURM_DEFAULTS.deno,
  };
  if (o.time && !/^(\d+-)?\d{1,2}(:\d{2}){0,2}$/.test(o.time)) {
    throw new UsageError(`exp plan: --time must be [D-]HH:MM:SS, got '${o.time}'`);
  }
  for (const flag of ["partition", "account"] as const) {
    if (o[flag] !== null && !/^[\w.,-]+$/.test(o[flag]!)) {
      throw new UsageError(
        `exp plan: --${flag} must be a Slurm name (letters, digits, . , _ -), got ${JSON.stringify(o[flag])}`,
      );
    }
  }
  return o;
}

function experimentOfFile(file: string): Experiment<unknown> {
  const name = experimentOfConfigFile(file);
  if (!name) {
    throw new UsageError(
      `exp plan: cannot tell the experiment from '${file}': name it (exp plan NAME --config …) or the file <experiment>_….yaml`,
    );
  }
  return EXPERIMENTS[name];
}

async function finishCommand(a: Flags): Promise<void> {
  const { plan, e } = await planOf(a, "exp finish");
  // finishing reads the cells' outputs and writes files: no GPU is opened (the finishing job has none)
  const ctx: ExperimentContext = { gpu: null as never, runDir: plan.run_dir, progress };
  let failed: Error | null = null;
  try {
    await finishPlan(ctx, e, plan);
  } catch (err) {
    failed = err as Error;
  }
  // summarize and report whatever finished, then fail naming what did not
  const rows = await summarize(plan.run_dir);
  const table = printTable(rows);
  console.log(table);
  await atomicWrite(join(plan.run_dir, "summary.txt"), table + "\n");
  for (const s of rows.skipped) console.error(`skipped ${s.file}: ${s.why}`);
  const rep = await buildReport(plan.run_dir);
  console.error(`report: ${rep.path} (${rep.figures} figures)`);
  if (failed) throw failed;
}
