// The experiment registry: `deno task exp <name> --config FILE.yaml`.

import type { Experiment } from "./common.ts";
import { evaluateExperiment } from "./evaluate.ts";
import { extractExperiment } from "./extract_vector.ts";
import { conditionsExperiment } from "./conditions.ts";
import { promptDiffExperiment } from "./prompt_diff.ts";

// deno-lint-ignore no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = Object.fromEntries(
  [extractExperiment, evaluateExperiment, conditionsExperiment, promptDiffExperiment].map((e) => [e.name, e]),
);
