// A plan as Slurm jobs (`exp plan … --emit slurm`): one job array per stage of cells (the cells that need
// nothing, then those that need them), each task `deno task exp cell --plan … --index $SLURM_ARRAY_TASK_ID`,
// and a finishing job after the last array ends (afterany: it names the cells that failed). submit.sh
// chains them with --dependency; only cells not done (and not held by a live task) are in the arrays, so
// submitting the same plan again runs only what is left. Kubernetes and other schedulers: not written.

import { join } from "node:path";
import type { Plan, PlanCell } from "./plan.ts";

export interface SlurmOptions {
  partition: string | null;
  account: string | null;
  /** HH:MM:SS (or any form sbatch takes) */
  time: string | null;
  /** 0: no --gpus-per-task line (CPU-only clusters, tests) */
  gpusPerTask: number;
  cpusPerTask: number;
  /** MB per task; null: the partition's default */
  memMb: number | null;
  /** at most this many tasks of an array at once (the %K of --array) */
  maxParallel: number | null;
  /** shell lines run before deno in every job (e.g. `module load …`) */
  setup: string[];
  /** the deno binary the jobs run */
  deno: string;
}

export const SLURM_DEFAULTS: SlurmOptions = {
  partition: null,
  account: null,
  time: null,
  gpusPerTask: 1,
  cpusPerTask: 4,
  memMb: null,
  maxParallel: null,
  setup: [],
  deno: "deno",
};

/** "0-3,7,9-10": sbatch's --array list for these indices. */
export function arrayRanges(indices: number[]): string {
  const s = [...indices].sort((a, b) => a - b), out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return out.join(",");
}

const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

function header(name: string, o: SlurmOptions, log: string, extra: string[]): string[] {
  return [
    "#!/bin/bash",
    `#SBATCH --job-name=${name}`,
    `#SBATCH --output=${log}`,
    "#SBATCH --open-mode=append",
    `#SBATCH --cpus-per-task=${o.cpusPerTask}`,
    ...(o.memMb ? [`#SBATCH --mem=${o.memMb}`] : []),
    ...(o.partition ? [`#SBATCH --partition=${o.partition}`] : []),
    ...(o.account ? [`#SBATCH --account=${o.account}`] : []),
    ...(o.time ? [`#SBATCH --time=${o.time}`] : []),
    ...extra,
  ];
}

function body(plan: Plan, o: SlurmOptions, command: string): string[] {
  return [
    "set -euo pipefail",
    `cd ${q(plan.cwd)}`,
    ...o.setup,
    `exec ${o.deno} task exp ${command}`,
  ];
}

export interface SlurmScripts {
  /** file name in the run folder -> contents */
  files: Record<string, string>;
  /** stage arrays in order, with the cells each runs */
  stages: { file: string; cells: PlanCell[] }[];
}

/** The scripts for the cells still to run (`todo`), and finish.sbatch and submit.sh. */
export function slurmScripts(plan: Plan, todo: PlanCell[], o: SlurmOptions): SlurmScripts {
  const dir = plan.run_dir, planPath = join(dir, "plan.json"), logs = join(dir, "logs");
  const lastStage = Math.max(0, ...plan.cells.map((c) => c.stage));
  const name = `inoculum-${plan.sweep}`;
  const files: Record<string, string> = {};
  const stages: SlurmScripts["stages"] = [];
  for (let st = 0; st <= lastStage; st++) {
    const cells = todo.filter((c) => c.stage === st);
    if (!cells.length) continue;
    const file = st === lastStage ? "sweep.sbatch" : `stage-${st}.sbatch`;
    const array = arrayRanges(cells.map((c) => c.index)) + (o.maxParallel ? `%${o.maxParallel}` : "");
    files[file] = [
      ...header(`${name}-${st}`, o, join(logs, "cell-%a.log"), [
        `#SBATCH --array=${array}`,
        ...(o.gpusPerTask > 0 ? [`#SBATCH --gpus-per-task=${o.gpusPerTask}`] : []),
      ]),
      `# stage ${st} of ${plan.run_dir}: cells ${cells.map((c) => `${c.index} ${c.name}`).join(", ")}`,
      ...body(plan, o, `cell --plan ${q(planPath)} --index "$SLURM_ARRAY_TASK_ID"`),
      "",
    ].join("\n");
    stages.push({ file, cells });
  }
  files["finish.sbatch"] = [
    ...header(`${name}-finish`, { ...o, cpusPerTask: 1 }, join(logs, "finish-%j.log"), []),
    `# after every array of ${plan.run_dir}: the experiment's result, summarize and the report`,
    ...body(plan, o, `finish --plan ${q(planPath)}`),
    "",
  ].join("\n");
  const submit = [
    "#!/bin/bash",
    `# submits ${plan.run_dir}'s jobs: each stage's array after the one before (afterany), then finish`,
    "set -euo pipefail",
    `cd ${q(dir)}`,
    'dep=""',
    "ids=()",
  ];
  for (const s of stages) {
    submit.push(
      `id=$(sbatch --parsable $dep ${s.file})`,
      "id=${id%%;*}",
      'ids+=("$id")',
      'dep="--dependency=afterany:$id"',
    );
  }
  submit.push(
    "fin=$(sbatch --parsable $dep finish.sbatch)",
    "fin=${fin%%;*}",
    'echo "submitted: arrays ${ids[*]:-none}, finish $fin"',
    "",
  );
  files["submit.sh"] = submit.join("\n");
  return { files, stages };
}
