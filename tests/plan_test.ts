// A sweep's plan without a scheduler (issue 14): cells and stages, plan.json written once and refused for
// another config, locks (a live task's is respected, a dead one's taken over), the Slurm scripts' arrays.
// The same on a real Slurm: tests/slurm_test.ts.

import assert from "node:assert/strict";
import { join } from "node:path";
import { hostname } from "node:os";
import { cellState, makePlan, planCells, runPlanCell } from "../experiments/plan.ts";
import { arrayRanges, SLURM_DEFAULTS, slurmScripts } from "../experiments/slurm.ts";
import { conditionCells } from "../experiments/conditions_cells.ts";
import { EXPERIMENTS } from "../experiments/index.ts";
import type { Experiment, ExperimentContext } from "../experiments/common.ts";

const conditions = EXPERIMENTS.conditions as Experiment<unknown>;
const config = conditions.parseConfig({
  model: "m",
  trait: "t.json",
  judge: { type: "world" },
  vector: "v.safetensors",
  seeds: [0, 1],
  pre: [{ name: "base" }, { name: "medium", data: "medium.jsonl" }],
  post: [{ name: "heavy", data: "heavy.jsonl" }],
  conditions: [{ name: "none" }, { name: "pps", steer: { layers: [1], coef: 2 } }],
}, "sweep.yaml");

Deno.test("a conditions sweep's cells: the baseline and each pre stage first, then every run after the stage it starts from", () => {
  const cells = planCells(conditions, config);
  assert.equal(cells.length, 1 + 2 + 2 * 2 * 1 * 2);
  assert.deepEqual(cells.slice(0, 3).map((c) => [c.name, c.stage]), [
    ["baseline", 0],
    ["pre-medium-seed0", 0],
    ["pre-medium-seed1", 0],
  ]);
  const run = cells.find((c) => c.name === "medium__heavy__pps__seed1")!;
  assert.deepEqual([run.stage, run.after, run.output], [
    1,
    ["pre-medium-seed1"],
    "medium__heavy__pps__seed1",
  ]);
  assert.deepEqual(cells.find((c) => c.name === "base__heavy__none__seed0")!.after, ["baseline"]);
  assert.equal(conditionCells(config as never).length, cells.length);
  assert.deepEqual(cells.map((c) => c.index), cells.map((_, i) => i));
  // an experiment without a sweep is one cell
  const one = planCells(EXPERIMENTS.grad_cosine as Experiment<unknown>, {});
  assert.deepEqual(one.map((c) => [c.name, c.stage, c.output]), [["grad_cosine", 0, "."]]);
});

Deno.test("plan.json is written once, read-only, reused for the same config and refused for another", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plan-" });
  const p = await makePlan(conditions, config, dir, "sweep.yaml");
  const text = await Deno.readTextFile(join(dir, "plan.json"));
  assert.equal((await Deno.stat(join(dir, "plan.json"))).mode! & 0o777, 0o444);
  const again = await makePlan(conditions, JSON.parse(JSON.stringify(config)), dir, "other-name.yaml");
  assert.equal(again.config_hash, p.config_hash);
  assert.equal(await Deno.readTextFile(join(dir, "plan.json")), text, "not rewritten");
  const other = conditions.parseConfig({
    model: "m",
    trait: "t.json",
    judge: { type: "world" },
    post: [{ name: "heavy", data: "heavy.jsonl" }],
    conditions: [{ name: "none" }],
  }, "b.yaml");
  await assert.rejects(
    makePlan(conditions, other, dir, "b.yaml"),
    /plan\.json: this run folder holds a plan for another config/,
  );
});

Deno.test("a cell's lock: a live task's stops a second run of it, a dead task's is taken over; prerequisites must be done", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plan-" });
  const p = await makePlan(conditions, config, dir, "sweep.yaml");
  const ctx = { gpu: null as never, runDir: dir, progress: () => {} } as ExperimentContext;
  const cell = p.cells[0];
  const lockDir = join(dir, "cells", cell.name);
  await Deno.mkdir(lockDir, { recursive: true });
  const lock = (pid: number) =>
    Deno.writeTextFile(
      join(lockDir, "lock"),
      JSON.stringify({ job: null, host: hostname(), pid, started: "2026-01-01T00:00:00Z" }),
    );
  let ran = 0;
  const fake: Experiment<unknown> = {
    ...conditions,
    sweep: { ...conditions.sweep!, runCell: () => Promise.resolve(void ran++) },
  };
  const session = () => Promise.resolve({ dispose() {} });
  await lock(Deno.pid); // this process: alive
  assert.match(await cellState(p, cell), /^running \(pid \d+\)$/);
  await assert.rejects(
    runPlanCell(ctx, fake, p, cell, session),
    /cell 0 \(baseline\) is being run by pid \d+ on/,
  );
  assert.equal(ran, 0);
  await lock(2 ** 22 + 17); // no such process: a task that is gone
  assert.equal(await cellState(p, cell), "to do");
  assert.equal(await runPlanCell(ctx, fake, p, cell, session), true);
  assert.equal(ran, 1);
  assert.equal(await cellState(p, cell), "done");
  assert.equal(await runPlanCell(ctx, fake, p, cell, session), false, "a done cell is not run again");
  assert.equal(ran, 1);
  const needsPre = p.cells.find((c) => c.name === "medium__heavy__none__seed0")!;
  await assert.rejects(
    runPlanCell(ctx, fake, p, needsPre, session),
    /needs cell 1 \(pre-medium-seed0\), which is not done/,
  );
});

Deno.test("Slurm scripts: one array per stage over the cells to do, finish after them, submit.sh chaining with afterany", async () => {
  assert.equal(arrayRanges([5, 0, 1, 2, 7, 9, 10]), "0-2,5,7,9-10");
  const dir = await Deno.makeTempDir({ prefix: "plan-" });
  const p = await makePlan(conditions, config, dir, "sweep.yaml");
  const todo = p.cells.filter((c) => c.index !== 1 && c.index !== 4);
  const s = slurmScripts(p, todo, {
    ...SLURM_DEFAULTS,
    partition: "gpu",
    account: "lab",
    time: "12:00:00",
    maxParallel: 3,
    setup: ["module load cuda"],
  });
  assert.deepEqual(Object.keys(s.files).sort(), [
    "finish.sbatch",
    "stage-0.sbatch",
    "submit.sh",
    "sweep.sbatch",
  ]);
  assert.match(s.files["stage-0.sbatch"], /#SBATCH --array=0,2%3\n/);
  assert.match(s.files["sweep.sbatch"], /#SBATCH --array=3,5-10%3\n/);
  for (const f of ["stage-0.sbatch", "sweep.sbatch"]) {
    const t = s.files[f];
    for (
      const line of [
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=12:00:00",
        "#SBATCH --gpus-per-task=1",
        `#SBATCH --output=${join(dir, "logs", "cell-%a.log")}`,
        "module load cuda",
        `exec deno task exp cell --plan '${join(dir, "plan.json")}' --index "$SLURM_ARRAY_TASK_ID"`,
      ]
    ) assert.ok(t.includes(line + "\n"), `${f} lacks '${line}':\n${t}`);
  }
  assert.ok(!s.files["finish.sbatch"].includes("--gpus-per-task"), "finishing needs no GPU");
  assert.match(s.files["finish.sbatch"], /exec deno task exp finish --plan /);
  const submit = s.files["submit.sh"];
  assert.ok(
    submit.indexOf("stage-0.sbatch") < submit.indexOf("sweep.sbatch") &&
      submit.indexOf("sweep.sbatch") < submit.indexOf("finish.sbatch"),
  );
  assert.equal(submit.match(/--dependency=afterany:\$id/g)?.length, 2);
  // nothing left to do: only the finishing job
  const none = slurmScripts(p, [], SLURM_DEFAULTS);
  assert.deepEqual(Object.keys(none.files).sort(), ["finish.sbatch", "submit.sh"]);
});

Deno.test("exp plan / cell: bad flags and files are one-line errors, and a refused plan writes nothing", async () => {
  const { cli } = await import("./helpers.ts");
  const dir = await Deno.makeTempDir({ prefix: "plan-" });
  const file = join(dir, "conditions_x.yaml");
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      model: "m",
      trait: "t.json",
      judge: { type: "world" },
      post: [{ name: "heavy", data: "heavy.jsonl" }],
      conditions: [{ name: "none" }],
    }),
  );
  const run = join(dir, "run");
  for (
    const [flags, msg] of [
      [["--emit", "k8s"], /error: exp plan: --emit takes slurm, got 'k8s'/],
      [["--emit", "slurm", "--time", "5h"], /--time must be \[D-\]HH:MM:SS, got '5h'/],
      [["--emit", "slurm", "--partition", "gpu\n#SBATCH --x"], /--partition must be a Slurm name/],
      [["--submit"], /--submit submits what --emit slurm writes/],
    ] as [string[], RegExp][]
  ) {
    const r = await cli(["exp", "plan", "--config", file, "--run-dir", run, ...flags]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  await assert.rejects(Deno.stat(join(run, "plan.json")), Deno.errors.NotFound);
  const ok = await cli(["exp", "plan", "--config", file, "--run-dir", run]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(
    ok.stdout,
    /plan\.json: conditions, 2 cell\(s\)\n\s+0 {2}stage 0 {2}to do\s+baseline\n\s+1 {2}stage 1 {2}to do\s+base__heavy__none__seed0/,
  );
  const bad = await cli(["exp", "cell", "--plan", join(dir, "nope.json"), "--index", "0"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /nope\.json: cannot read the plan/);
  const past = await cli(["exp", "cell", "--plan", join(run, "plan.json"), "--index", "7"]);
  assert.equal(past.code, 1);
  assert.match(past.stderr, /plan\.json: no cell 7 \(the plan has 0\.\.1\)/);
});
