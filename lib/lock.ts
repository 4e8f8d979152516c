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
  if (h.job && h.job === slurmJobId()) {
    // this very job: started again after a requeue (the old process is gone), or a second run inside the same
    // allocation (alive): the process decides
    return h.host === hostname() && pidAlive(h.pid);
  }
  if (h.job) {
    for (let i = 0; i < 60; i++) {
      const s = await slurmState(h.job);
      if (s !== "COMPLETING") return s !== null && LIVE_STATES.has(s);
      await new Promise((r) => setTimeout(r, 500)); // being killed: wait for it to let go
    }
    return true;
  }
  if (h.host !== hostname()) return true; // another machine, no scheduler to ask: assume it runs
  return pidAlive(h.pid);
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
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
 * The lock appears with its content at once (written to a private file, then hard-linked into place, which
 * fails if a lock exists); a stale lock is taken over by renaming it away and checking that what was renamed
 * is the lock judged stale (another task taking it over at the same time cannot lose its fresh lock); the
 * release removes the lock only while it is still this process's.
 */
export async function acquireLock(path: string, what: string): Promise<() => Promise<void>> {
  const me = JSON.stringify(thisHolder()) + "\n";
  const mine = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(mine, me);
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await Deno.link(mine, path);
        return async () => {
          if ((await Deno.readTextFile(path).catch(() => null)) === me) {
            await Deno.remove(path).catch(() => {});
          }
        };
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
      const seen = await Deno.readTextFile(path).catch(() => null);
      if (seen === null) continue; // released meanwhile: try again
      let holder: LockHolder | null = null;
      try {
        holder = JSON.parse(seen);
      } catch { /* unreadable: a lock is never written partly (see above), so it is no one's */ }
      if (holder && await holderAlive(holder)) {
        throw new Error(
          `${what} is being run by ${
            describeHolder(holder)
          } (lock ${path}); not running it twice (if that task has ended and Slurm cannot say so, remove the lock)`,
        );
      }
      const away = `${path}.stale-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await Deno.rename(path, away);
      } catch {
        continue; // someone else moved it first
      }
      const moved = await Deno.readTextFile(away).catch(() => null);
      if (moved !== seen) {
        // a fresh lock of a task that took the stale one over first: put it back, and stop
        await Deno.link(away, path).catch(() => {});
        await Deno.remove(away).catch(() => {});
        throw new Error(
          `${what}: another task took over its stale lock ${path} at the same moment; not running it twice`,
        );
      }
      await Deno.remove(away).catch(() => {});
    }
    throw new Error(`${what}: could not take its lock ${path}`);
  } finally {
    await Deno.remove(mine).catch(() => {});
  }
}

export const lockIn = (dir: string) => join(dir, "lock");
