// `train --config FILE.yaml [--resume | --overwrite]`

import { loadTrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { need, startGpu, UsageError } from "./common.ts";

export async function trainCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const cfg = await loadTrainConfig(need(a.config as string, "config", "train"));
  const gpu = await startGpu();
  if (a.resume && a.overwrite) throw new UsageError("train: --resume and --overwrite exclude each other");
  const r = await train(cfg, { gpu, resume: !!a.resume, overwrite: !!a.overwrite });
  const last = r.steps[r.steps.length - 1];
  console.error(
    `done: ${r.steps.length} steps, final loss ${last?.loss.toFixed(4)}; outputs in ${r.outputDir}`,
  );
}
