// inoculum command line: parses arguments and dispatches to cli/*. No logic lives here.

import { parseArgs } from "node:util";
import { UsageError } from "./cli/common.ts";
import { forwardCommand } from "./cli/forward.ts";
import { generateCommand } from "./cli/generate.ts";
import { convertCommand } from "./cli/convert.ts";
import { mainJob } from "./cli/main_job.ts";
import { trainCommand } from "./cli/train.ts";
import { gradsCommand } from "./cli/grads.ts";
import { expCommand } from "./cli/exp.ts";
import { reportCommand } from "./cli/report.ts";
import { worldCommand } from "./cli/world.ts";
import { demoCommand } from "./cli/demo.ts";
import { randomModelCommand } from "./cli/random_model.ts";
import { studyCheckCommand } from "./cli/study_check.ts";

const USAGE = `usage: deno task <command> [flags]
  forward          --model DIR (--text STR | --tokens 1,2,3) --out FILE.json
  generate         --model DIR --prompt STR [--chat] [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--json]
                   [--adapter DIR] [--steer FILE.safetensors --layer L[,L…] --coef C [--steer-mode all|prompt|response]]
  convert-llama2c  <model.bin> <tok.bin> <out-dir>
  train            --config FILE.yaml [--resume | --overwrite]
  grads            --model DIR [--adapter DIR] (--data FILE.jsonl [--limit N] | --tokens 1,2,3)
                   [--steer FILE.safetensors --layer L --coef C] [--ip-prompt STR] --out FILE.safetensors
  exp              <experiment> --config FILE.yaml [--run-dir DIR] [--overwrite]   (extract, evaluate, steer,
                   conditions, prompt_diff, grad_cosine, loss_sweep, grad_pca, ip_vs_pps, projections, delta_h,
                   cross_trait); a result already in DIR is refused, or moved aside (to NAME.old-TIME) by --overwrite
  exp summarize    DIR
  exp schema       the JSON schema of every result file
  exp plan         --config FILE.yaml --run-dir DIR [--emit slurm [--partition P] [--account A] [--time HH:MM:SS]
                   [--gpus-per-task N] [--cpus-per-task N] [--mem MB] [--max-parallel K] [--setup CMD] [--submit]]
                   a sweep's cells in DIR/plan.json (and Slurm job arrays for those not done)
  exp cell         --plan DIR/plan.json --index N      run one cell of a plan (what each array task runs)
  exp finish       --plan DIR/plan.json                the experiment's result from its cells, summary, report
  report           RUN_DIR [OUT.html]
  study:check      [DIR]   every path the study configs read exists, with the paper's sample counts
  world build      [--out DIR] [--seed S]            the synthetic persona world's data, traits, tokenizer
  world model      [--out DIR] [--seed S] [--epochs N] [--hidden N] [--layers N] [--reduced]   pretrain it
  world card       [--out DIR] [--seed S]            re-measure a world model, rewrite its MODEL_CARD.md
  demo             [--model DIR] [--out DIR] [--traits DIR] [--data FILE] [--judge-url URL --judge-model M
                   --judge-key-env VAR] [--layer L] [--coef C] [--quick] [--full] [--seeds N] [--seed S]
                   the whole pipeline (README); PPS's ε is chosen by steering unless --coef is given
  stories          convert ../shared/models/stories260K and generate from it [--out DIR]
  model:random     --like qwen2.5-0.5b|qwen2.5-7b|llama-3.2-1b --out DIR [--dtype bf16|f16|f32] [--layers N]
                   [--seed S] [--tokenizer DIR] [--shard-gb G]   random weights of a real shape, Hub layout`;

const COMMANDS: Record<
  string,
  {
    run: (a: Record<string, string | boolean | undefined>, pos: string[]) => Promise<void>;
    /** the most positional arguments it takes (default none): one more is an error, never ignored */
    positionals?: number;
    flags: Record<string, "string" | "boolean">;
  }
> = {
  forward: {
    run: forwardCommand,
    flags: { model: "string", text: "string", tokens: "string", out: "string" },
  },
  generate: {
    run: generateCommand,
    flags: {
      model: "string",
      prompt: "string",
      chat: "boolean",
      "max-new-tokens": "string",
      temperature: "string",
      "top-p": "string",
      seed: "string",
      json: "boolean",
      adapter: "string",
      steer: "string",
      layer: "string",
      coef: "string",
      "steer-mode": "string",
    },
  },
  "convert-llama2c": { run: (_a, pos) => convertCommand(pos), flags: {}, positionals: 3 },
  stories: { run: mainJob, flags: { out: "string", shared: "string" } },
  demo: {
    run: demoCommand,
    flags: {
      model: "string",
      out: "string",
      traits: "string",
      data: "string",
      "judge-url": "string",
      "judge-model": "string",
      "judge-key-env": "string",
      layer: "string",
      coef: "string",
      quick: "boolean",
      full: "boolean",
      seeds: "string",
      seed: "string",
    },
  },
  report: { run: reportCommand, flags: {}, positionals: 2 },
  "study:check": { run: studyCheckCommand, flags: {}, positionals: 1 },
  world: {
    run: worldCommand,
    positionals: 1,
    flags: {
      out: "string",
      seed: "string",
      epochs: "string",
      reduced: "boolean",
      hidden: "string",
      layers: "string",
    },
  },
  "model:random": {
    run: randomModelCommand,
    flags: {
      like: "string",
      out: "string",
      dtype: "string",
      layers: "string",
      seed: "string",
      tokenizer: "string",
      "shard-gb": "string",
    },
  },
  exp: {
    run: expCommand,
    positionals: 2,
    flags: {
      config: "string",
      "run-dir": "string",
      overwrite: "boolean",
      plan: "string",
      index: "string",
      emit: "string",
      submit: "boolean",
      partition: "string",
      account: "string",
      time: "string",
      "gpus-per-task": "string",
      "cpus-per-task": "string",
      mem: "string",
      "max-parallel": "string",
      setup: "string",
      deno: "string",
    },
  },
  train: { run: trainCommand, flags: { config: "string", resume: "boolean", overwrite: "boolean" } },
  grads: {
    run: gradsCommand,
    flags: {
      model: "string",
      adapter: "string",
      data: "string",
      limit: "string",
      tokens: "string",
      steer: "string",
      layer: "string",
      coef: "string",
      "ip-prompt": "string",
      out: "string",
    },
  },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "help" || cmd === "--help") {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`unknown command '${cmd}'\n${USAGE}`);
    return 2;
  }
  try {
    const options = Object.fromEntries(Object.entries(c.flags).map(([k, type]) => [k, { type }]));
    const { values, positionals } = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
    if (positionals.length > (c.positionals ?? 0)) {
      throw new UsageError(
        `${cmd}: unexpected argument '${positionals[c.positionals ?? 0]}' (it takes ${
          c.positionals ? `at most ${c.positionals}` : "none"
        }; see main.ts help)`,
      );
    }
    await c.run(values as Record<string, string | boolean | undefined>, positionals);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (e instanceof UsageError || err.code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`error: ${err.message}`);
      return 2;
    }
    // Errors from our loaders already name the file and field; print them without a stack.
    console.error(`error: ${err.message}`);
    if (Deno.env.get("INOCULUM_DEBUG")) console.error(err.stack);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
