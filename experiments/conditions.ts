// Training conditions from one config: defenceless, PPS (vector, layers, coefficient), IP (prompt
// bank), random-vector PPS (Gaussian rescaled per layer to the vector's norm, seeded), off-trait vector
// PPS, off-trait / neutral IP prompts — each run on every (pre-finetune × post-finetune) cell and
// seed. The pre-finetune stage is defenceless; the condition's defence is applied while training on
// the post-finetune data and removed at evaluation. The trait is evaluated at every checkpoint.

import { SEED_RANGE } from "../lib/config.ts";
import { conditionsResult, conditionsRunResult } from "./conditions_result.ts";
import { parseTrainConfig } from "../train/config.ts";
import { ConfigReader, type Experiment, readJudgeConfig } from "./common.ts";
import { readDefence } from "../defence/defence.ts";
import { runSweepLocally } from "./plan.ts";
import {
  type Condition,
  conditionCells,
  type ConditionsConfig,
  finishConditions,
  mergeTrain,
  openConditionsSession,
  runConditionsCell,
} from "./conditions_cells.ts";

export {
  type Condition,
  type ConditionsConfig,
  mergeTrain,
  PEAK_MIN_COHERENCE,
  peakTrait,
} from "./conditions_cells.ts";

function readCondition(r: ConfigReader): Condition {
  const name = r.name("name");
  const train = r.has("train") ? r.sub("train").raw : (r.any("train"), {});
  const d = readDefence(r, { vectorOptional: true, random: true });
  r.done();
  return { name, steer: d.steer, inoculation: d.ip, sign_force: d.signForce, train };
}

/**
 * Every condition crossed with every sign-forcing mode and ablation vector (the gradient-manipulation runs
 * of Table 1): `trait` forces along the top-level vector, `random` along a Gaussian one with its norms.
 */
export function crossSignForce(
  conds: Condition[],
  modes: ("attenuate" | "amplify" | "neutralize")[],
  vectors: ("trait" | "random")[] = ["trait"],
): Condition[] {
  return conds.flatMap((c) =>
    vectors.flatMap((v) =>
      modes.map((mode) => ({
        ...c,
        name: `${c.name}+${mode}${v === "random" ? "-random" : ""}`,
        sign_force: { mode, vector: null, random: v === "random", layers: "all" as const },
      }))
    )
  );
}

export const conditionsExperiment: Experiment<ConditionsConfig> = {
  name: "conditions",
  description:
    "LoRA fine-tuning under defence conditions (none / PPS / IP / controls), pre → post chains, judged over training",
  results: [conditionsResult, conditionsRunResult],
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const ev = r.has("eval") ? r.sub("eval") : new ConfigReader({}, file, "eval");
    const c: ConditionsConfig = {
      model: r.nonEmpty("model"),
      trait: r.nonEmpty("trait"),
      judge: readJudgeConfig(r.sub("judge")),
      vector: r.optStr("vector"),
      seeds: r.intList("seeds", [0]),
      pre: r.has("pre")
        ? r.list("pre").map((p) => {
          const o = { name: p.name("name"), data: p.optStr("data") };
          p.done();
          return o;
        })
        : (r.any("pre"), [{ name: "base", data: null }]),
      post: r.list("post").map((p) => {
        const o = { name: p.name("name"), data: p.nonEmpty("data") };
        p.done();
        return o;
      }),
      conditions: r.list("conditions").map(readCondition),
      sign_force_modes: r.has("sign_force_modes")
        ? r.strList("sign_force_modes") as ConditionsConfig["sign_force_modes"]
        : (r.any("sign_force_modes"), []),
      sign_force_vectors: r.strList("sign_force_vectors", [
        "trait",
      ]) as ConditionsConfig["sign_force_vectors"],
      sign_force_conditions: r.has("sign_force_conditions")
        ? r.strList("sign_force_conditions")
        : (r.any("sign_force_conditions"), null),
      post_start: r.oneOf("post_start", ["merged", "continue"] as const, "merged"),
      train: r.has("train") ? (r.sub("train").raw) : (r.any("train"), {}),
      eval: {
        samples: ev.num("samples", 10, { int: true, min: 1 }),
        max_new_tokens: ev.num("max_new_tokens", 256, { int: true, min: 1 }),
        batch_size: ev.num("batch_size", 16, { int: true, min: 1 }),
        temperature: ev.num("temperature", 1, { min: 0 }),
        seed: ev.num("seed", 0, SEED_RANGE),
        at_checkpoints: Array.isArray(ev.raw.at_checkpoints)
          ? ev.strList("at_checkpoints")
          : ev.bool("at_checkpoints", true),
        // null: the chat template's default (Qwen's own system prompt); Figures 7 and 19 compare
        system_prompt: ev.optStr("system_prompt"),
      },
    };
    ev.done();
    r.done();
    for (const m of c.sign_force_modes) {
      if (!["attenuate", "amplify", "neutralize"].includes(m)) {
        throw new Error(
          `${file}: key 'sign_force_modes' lists '${m}'; expected attenuate, amplify, neutralize`,
        );
      }
    }
    for (const v of c.sign_force_vectors) {
      if (v !== "trait" && v !== "random") {
        throw new Error(`${file}: key 'sign_force_vectors' lists '${v}'; expected trait, random`);
      }
    }
    const names = c.conditions.map((x) => x.name);
    for (const n of c.sign_force_conditions ?? []) {
      if (!names.includes(n)) {
        throw new Error(
          `${file}: key 'sign_force_conditions' names '${n}', which is not a condition (${names.join(", ")})`,
        );
      }
    }
    if (c.sign_force_modes.length) {
      const crossed = c.conditions.filter((x) => c.sign_force_conditions?.includes(x.name) ?? true);
      c.conditions = [...c.conditions, ...crossSignForce(crossed, c.sign_force_modes, c.sign_force_vectors)];
    } else if (c.sign_force_conditions) {
      throw new Error(`${file}: key 'sign_force_conditions' needs 'sign_force_modes'`);
    }
    if (Array.isArray(c.eval.at_checkpoints)) {
      const all = c.conditions.map((x) => x.name);
      for (const n of c.eval.at_checkpoints) {
        if (!all.includes(n)) {
          throw new Error(`${file}: key 'eval.at_checkpoints' names '${n}', which is not a condition`);
        }
      }
    }
    // names become folders (<pre>__<post>__<condition>__seed<k>): a repeated one would overwrite a run
    for (const [key, list] of [["pre", c.pre], ["post", c.post], ["conditions", c.conditions]] as const) {
      const seen = new Set<string>();
      for (const { name } of list) {
        if (seen.has(name)) {
          throw new Error(`${file}: key '${key}' names '${name}' twice; names must be unique`);
        }
        seen.add(name);
      }
    }
    // validate the shared training keys now, not after hours of the first run
    parseTrainConfig("", `${file} (train)`, { ...c.train, model: c.model, data: "x", output_dir: "x" });
    for (const cond of c.conditions) {
      parseTrainConfig("", `${file} (condition '${cond.name}' train)`, {
        ...mergeTrain(c.train, cond.train),
        model: c.model,
        data: "x",
        output_dir: "x",
      });
      if (cond.steer && !cond.steer.vector && !c.vector) {
        throw new Error(
          `${file}: condition '${cond.name}' steers but neither it nor the top level names a vector`,
        );
      }
      if (cond.sign_force && !cond.sign_force.vector && !c.vector) {
        throw new Error(
          `${file}: condition '${cond.name}' sign-forces but neither it nor the top level names a vector`,
        );
      }
    }
    return c;
  },
  run: (ctx, c) => runSweepLocally(ctx, conditionsExperiment, c),
  sweep: {
    cells: conditionCells,
    open: openConditionsSession,
    runCell: runConditionsCell,
    finish: finishConditions,
  },
};
