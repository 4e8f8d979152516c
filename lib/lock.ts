// Exclusive locks on folders a run writes (a training run's output_dir, a sweep cell): a file created
// exclusively that names its holder (Slurm job, host, pid). A lock whose holder is gone (cancelled, killed,
// timed out) is taken over; a live holder's is an error naming it. Used by train/loop.ts and
// experiments/plan.ts, so a run and a cell follow one rule.

import { join } from "node:path";
import { hostname } from "node:os";

export interface LockHolder {
  job: string | null;
  host: string;
  pid: number;
  started: string;
}

/** This task's Slurm job ("<array job>_<task>" for an array task), or null outside Slurm. */
export function slurmJobId(): string | null {
  const env = Deno.env.toObject();
  if (env.SLURM_ARRAY_JOB_ID && env.SLURM_ARRAY_TASK_ID) {
    return `${env.SLURM_ARRAY_JOB_ID}_${env.SLURM_ARRAY_TASK_ID}`;
  }
  return env.SLURM_JOB_ID ?? null;
}

/** Who this process is, as a lock records it. */
export function thisHolder(): LockHolder {
  return { job: slurmJobId(), host: hostname(), pid: Deno.pid, started: new Date().toISOString() };
}

/**
 * Slurm's state of a job: null when Slurm no longer lists it (it ended), "UNKNOWN" when Slurm cannot be asked
 * (no squeue here, the controller unreachable) — then the holder is taken to be alive, never robbed.
 */
async function slurmState(job: string): Promise<string | null> {
  try {
    const out = await new Deno.Command("squeue", {
      args: ["-h", "-j", job, "-o", "%T"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const s = new TextDecoder().decode(out.stdout).trim().split("\n")[0];
    if (out.success) return s || null;
    return /invalid job id/i.test(new TextDecoder().decode(out.stderr)) ? null : "UNKNOWN";
  } catch {
    return "UNKNOWN";
  }
}

/** Slurm job states in which a task may still run (or start) its work. */
const LIVE_STATES = new Set([
  "PENDING",
  "CONFIGURING",
  "RUNNING",
  "SUSPENDED",
  "REQUEUED",
  "REQUEUE_HOLD",
  "RESIZING",
  "SIGNALING",
  "STAGE_OUT",
  "UNKNOWN",
]);

/** Whether the task that wrote a lock may still be running. */
export async function holderAlive(h: LockHolder): Promise<boolean> {
  if (h.job && h.job === slurmJobId()) return false; // this very job, started again (requeued)
  if (h.job) {
    for (let i = 0; i < 60; i++) {
      const s = await slurmState(h.job);
      if (s !== "COMPLETING") return s !== null && LIVE_STATES.has(s);
      await new Promise((r) => setTimeout(r, 500)); // being killed: wait for it to let go
    }
    return true;
  }
  if (h.host !== hostname()) return true; // another machine, no scheduler to ask: assume it runs
  try {
    Deno.statSync(`/proc/${h.pid}`);
    return true;
  } catch {
    return false;
  }
}

/** The holder a lock file names, or null (absent, or half-written by a task that died at once). */
export async function readHolder(path: string): Promise<LockHolder | null> {
  try {
    const h = JSON.parse(await Deno.readTextFile(path));
    return h && typeof h.host === "string" && typeof h.pid === "number" ? h : null;
  } catch {
    return null;
  }
}

export function describeHolder(h: LockHolder): string {
  return `${h.job ? `Slurm job ${h.job}` : `pid ${h.pid}`} on ${h.host} (since ${h.started})`;
}

/**
 * Take the lock file `path` for `what` (a phrase for the error: "cell 3 (x)", "the run in DIR"). Returns its
 * release. A lock left by a task that is gone is taken over; one of a live task is an error naming it.
 */
export async function acquireLock(path: string, what: string): Promise<() => Promise<void>> {
  const me = thisHolder();
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const f = await Deno.open(path, { createNew: true, write: true });
      await f.write(new TextEncoder().encode(JSON.stringify(me) + "\n"));
      f.close();
      return async () => {
        await Deno.remove(path).catch(() => {});
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    const holder = await readHolder(path);
    if (holder && await holderAlive(holder)) {
      throw new Error(
        `${what} is being run by ${
          describeHolder(holder)
        } (lock ${path}); not running it twice (if that task has ended and Slurm cannot say so, remove the lock)`,
      );
    }
    await Deno.remove(path).catch(() => {});
  }
  throw new Error(`${what}: could not take its lock ${path}`);
}

export const lockIn = (dir: string) => join(dir, "lock");
