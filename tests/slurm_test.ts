// A sweep on a real Slurm (issue 14): a one-node cluster on this machine (scripts/slurm-local.sh: munged,
// slurmctld, slurmd from our own slurm.conf under a temporary folder), a world-model conditions sweep
// submitted with the emitted job arrays, one cell cancelled mid-training and the plan submitted again.
// Checked: every cell's result and conditions.json equal a local sequential run of the same plan (same
// seeds: same numbers, bit for bit); the cancelled cell resumed from its checkpoint; the resubmission ran
// only that cell; plan.json never changed. Needs root and Debian's slurm-wlm + munge (scripts/setup.sh);
// without them the test fails saying why — it is never skipped.

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildWorld } from "../world/build.ts";
import { cli, type RunResult } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLUSTER = join(ROOT, "scripts", "slurm-local.sh");

async function sh(cmd: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const r = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  return {
    code: r.code,
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

const json = async (p: string) => JSON.parse(await Deno.readTextFile(p));
const lines = async (p: string) => (await Deno.readTextFile(p)).trim().split("\n").length;

Deno.test({
  name:
    "Slurm: a 4-run world-model sweep as job arrays equals the local run; a cell cancelled mid-training resumes on resubmission, which runs only it",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "slurm-" });
    const slurmDir = join(tmp, "slurm");
    await buildWorld(join(tmp, "world"), 0);
    const w = (p: string) => join(tmp, "world", p);
    // 4 runs (pre {base, medium} x conditions {none, ip}) after 2 preparing cells (the base model's
    // evaluation, the medium pre-finetune): two stages, so the arrays' dependency is exercised too
    const config = join(tmp, "conditions_slurm.yaml");
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        model: join(ROOT, "world", "model"),
        trait: w("traits/eval/evil.json"),
        judge: { type: "world" },
        seeds: [0],
        pre: [{ name: "base" }, { name: "medium", data: w("data/evil_medium.jsonl") }],
        post: [{ name: "heavy", data: w("data/evil_heavy.jsonl") }],
        conditions: [{ name: "none" }, { name: "ip", inoculation: ["You are evil.", "Be cruel."] }],
        train: {
          epochs: 1,
          max_steps: 24,
          batch_size: 4,
          grad_accum: 1,
          lr: 0.002,
          warmup: 0,
          max_length: 128,
          checkpoint_every: 3,
          lora: { r: 4, alpha: 8, dropout: 0, target_modules: ["q_proj", "v_proj", "down_proj"] },
        },
        eval: { samples: 1, max_new_tokens: 16, batch_size: 64 },
      }),
    );
    const start = await sh("bash", [CLUSTER, "start", slurmDir]);
    assert.equal(
      start.code,
      0,
      `the one-node Slurm cluster did not start (this test needs root and scripts/setup.sh's slurm-wlm and munge): ${start.stderr}${start.stdout}`,
    );
    const env = { SLURM_CONF: join(slurmDir, "slurm.conf") };
    const squeue = async (job: string) =>
      (await sh("squeue", ["-h", "-j", job, "-o", "%T"], env)).stdout.trim();
    const waitGone = async (job: string, what: string) => {
      for (let i = 0; i < 1200; i++) {
        if (!(await squeue(job))) return;
        await sleep(250);
      }
      throw new Error(`${what} (job ${job}) still in the queue after 5 minutes`);
    };
    try {
      const local = join(tmp, "local"), cluster = join(tmp, "cluster");
      const loc = await cli(["exp", "conditions", "--config", config, "--run-dir", local]);
      assert.equal(loc.code, 0, loc.stderr);

      const submit = () =>
        cli([
          "exp",
          "plan",
          "conditions",
          "--config",
          config,
          "--run-dir",
          cluster,
          "--emit",
          "slurm",
          "--gpus-per-task",
          "0",
          "--cpus-per-task",
          "1",
          "--mem",
          "3000",
          "--deno",
          Deno.execPath(),
          "--submit",
        ], env);
      const first = await submit();
      assert.equal(first.code, 0, first.stderr);
      const ids = /submitted: arrays (\S+) (\S+), finish (\S+)/.exec(first.stdout);
      assert.ok(ids, `two arrays and a finishing job expected:\n${first.stdout}`);
      const [, , sweepJob, finishJob] = ids;
      const planText = await Deno.readTextFile(join(cluster, "plan.json"));
      const plan = JSON.parse(planText);
      assert.equal(plan.cells.length, 6);
      assert.equal(
        (await Deno.stat(join(cluster, "plan.json"))).mode! & 0o777,
        0o444,
        "plan.json is read-only",
      );

      // cancel the last run cell once its training has written a checkpoint, before it has an adapter
      const victim = plan.cells[5];
      const ckpts = join(cluster, victim.output, "checkpoints");
      let cancelledAt = "";
      for (let i = 0; i < 2400 && !cancelledAt; i++) {
        const names = (await exists(ckpts)) ? [...Deno.readDirSync(ckpts)].map((e) => e.name) : [];
        const step = names.filter((n) => /^step-\d+$/.test(n)).sort()[0];
        if (step) {
          const r = await sh("scancel", [`${sweepJob}_${victim.index}`], env);
          assert.equal(r.code, 0, r.stderr);
          cancelledAt = step;
        } else await sleep(50);
      }
      assert.ok(cancelledAt, `cell ${victim.name} never wrote a checkpoint`);
      await waitGone(finishJob, "the finishing job");
      assert.ok(
        !(await exists(join(cluster, victim.output, "adapter"))),
        `cell ${victim.name} finished its training before the cancel reached it (cancelled at ${cancelledAt})`,
      );
      assert.ok(!(await exists(join(cluster, victim.done_file))), "the cancelled cell is not done");
      const finishLog = await Deno.readTextFile(join(cluster, "logs", `finish-${finishJob}.log`));
      assert.match(finishLog, new RegExp(`did not finish: 5 \\(${victim.name.replaceAll("+", "\\+")}\\)`));
      assert.deepEqual((await json(join(cluster, "conditions.json"))).metrics.missing_cells, [victim.name]);

      // the same plan again: only the cancelled cell is submitted; it resumes from its checkpoint
      const second = await submit();
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /sweep\.sbatch: 1 cell\(s\)/);
      assert.doesNotMatch(second.stdout, /stage-0\.sbatch/);
      assert.ok(!(await exists(join(cluster, "stage-0.sbatch"))), "the done stage's script is gone");
      const fin2 = /finish (\S+)/.exec(second.stdout)![1];
      await waitGone(fin2, "the second finishing job");
      const log = await Deno.readTextFile(join(cluster, "logs", `cell-${victim.index}.log`));
      assert.match(log, /resuming from .*step-\d+/, "the resubmitted cell continued from its checkpoint");
      for (const c of plan.cells) {
        assert.ok(await exists(join(cluster, c.done_file)), `cell ${c.name} is done`);
        const attempts = await lines(join(cluster, "cells", c.name, "attempts.jsonl"));
        assert.equal(
          attempts,
          c.index === victim.index ? 2 : 1,
          `cell ${c.name} started ${attempts} time(s)`,
        );
      }
      assert.equal(await Deno.readTextFile(join(cluster, "plan.json")), planText, "plan.json unchanged");

      // same numbers as the local sequential run: every run cell and the assembled result
      for (const c of plan.cells.filter((c: { config: { role: string } }) => c.config.role === "run")) {
        const a = await json(join(local, c.output, "result.json"));
        const b = await json(join(cluster, c.output, "result.json"));
        assert.deepEqual(b.metrics, a.metrics, `cell ${c.name}: cluster and local results differ`);
        assert.equal(a.metrics.train_losses.length, 24);
      }
      const a = await json(join(local, "conditions.json")), b = await json(join(cluster, "conditions.json"));
      assert.deepEqual(b.metrics, a.metrics);
      assert.equal(b.metrics.missing_cells, undefined);
      assert.ok(await exists(join(cluster, "report.html")) && await exists(join(cluster, "summary.txt")));
    } finally {
      const stop = await sh("bash", [CLUSTER, "stop", slurmDir]);
      assert.equal(stop.code, 0, stop.stderr);
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
