// The experiment registry: `deno task exp <name> --config FILE.yaml`.

import type { Experiment } from "./common.ts";
import { evaluateExperiment } from "./evaluate.ts";
import { extractExperiment } from "./extract_vector.ts";
import { conditionsExperiment } from "./conditions.ts";
import { promptDiffExperiment } from "./prompt_diff.ts";
import { gradCosineExperiment } from "./grad_cosine.ts";
import { lossSweepExperiment } from "./loss_sweep.ts";
import { gradPcaExperiment } from "./grad_pca.ts";
import { ipVsPpsExperiment } from "./ip_vs_pps.ts";
import { projectionsExperiment } from "./projections.ts";
import { deltaHExperiment } from "./delta_h.ts";
import { crossTraitExperiment } from "./cross_trait.ts";
import { steerExperiment } from "./steer.ts";

// deno-lint-ignore no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = Object.fromEntries(
  [
    extractExperiment,
    evaluateExperiment,
    steerExperiment,
    conditionsExperiment,
    promptDiffExperiment,
    gradCosineExperiment,
    lossSweepExperiment,
    gradPcaExperiment,
    ipVsPpsExperiment,
    projectionsExperiment,
    deltaHExperiment,
    crossTraitExperiment,
  ].map((e) => [e.name, e]),
);

/**
 * The experiment a config file is for, from its name: the longest experiment name it starts with
 * (`grad_pca_ip_evil.yaml` → grad_pca); `manipulation_*` are conditions runs with sign-forcing. Null if none.
 */
export function experimentOfConfigFile(file: string): string | null {
  const base = file.split("/").pop()!.replace(/\.ya?ml$/, "");
  if (base.startsWith("manipulation")) return "conditions";
  return Object.keys(EXPERIMENTS).filter((n) => base === n || base.startsWith(`${n}_`))
    .sort((x, y) => y.length - x.length)[0] ?? null;
}
