// The training runs' speed for the report: every steps.jsonl under a run folder, its first step (pipeline
// compiles, first touch) and its steady state (the median of the warm steps) apart, never one average.

import { join, relative } from "node:path";
import { type StepLog, type StepSpeed, stepSpeed } from "../train/loop.ts";

export interface RunSpeed extends StepSpeed {
  /** the run folder, relative to the report's */
  run: string;
}

function isDirSync(p: string): boolean {
  try {
    return Deno.statSync(p).isDirectory;
  } catch {
    return false;
  }
}

/** Speeds of the training runs under `dir` whose steps.jsonl carries per-step times (depth at most 6). */
export async function trainingSpeeds(dir: string): Promise<RunSpeed[]> {
  const out: RunSpeed[] = [];
  const walk = async (d: string, depth: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)];
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => a.name < b.name ? -1 : 1)) {
      if (e.isFile && e.name === "steps.jsonl") {
        const steps: StepLog[] = [];
        for (const line of (await Deno.readTextFile(join(d, e.name))).split("\n")) {
          try {
            if (line.trim()) steps.push(JSON.parse(line));
          } catch { /* a torn last line: the run's speed is read from the others */ }
        }
        const sp = stepSpeed(steps);
        if (sp.first_step_s !== null || sp.warm_steps) out.push({ run: relative(dir, d) || ".", ...sp });
      } else if (
        (e.isDirectory || (e.isSymlink && isDirSync(join(d, e.name)))) && depth < 6 && !e.name.startsWith(".")
      ) { // a linked run folder is followed (depth bounds a link back up the tree)
        await walk(join(d, e.name), depth + 1);
      }
    }
  };
  await walk(dir, 0);
  return out;
}
