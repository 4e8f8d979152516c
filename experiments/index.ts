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

// deno-lint-ignore no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = Object.fromEntries(
  [
    extractExperiment,
    evaluateExperiment,
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
