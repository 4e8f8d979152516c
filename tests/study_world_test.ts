// Every shipped study config runs end to end on the world model organism, reduced (issue 11): the same
// YAML with the 7B model, the persona-vectors files and runs/study mapped onto the world's model, data and a
// temporary run folder, the paper's layer numbers scaled to the world's 6 layers, and every count cut down.
// Each result is validated against the schema. What the numbers say is the demo's business, not this test's.

import { join } from "node:path";
import assert from "node:assert/strict";
import { EXPERIMENTS } from "../experiments/index.ts";
import { readYaml } from "../experiments/common.ts";
import { buildWorld } from "../world/build.ts";
import { assertValidResult } from "./schema.ts";
import { gpuTest, testGpu } from "./helpers.ts";

const STUDY = new URL("../configs/study/", import.meta.url).pathname;
const WORLD_MODEL = new URL("../world/model", import.meta.url).pathname;
const PV = "../shared/data/persona_vectors/";

/** Run order: what a config reads must have been written by an earlier one. */
const ORDER = [
  "extract_evil",
  "extract_sycophantic",
  "steer_evil",
  "evaluate_base",
  "conditions_evil",
  "conditions_system_prompt_evil",
  "conditions_sweep_ip_count_evil",
  "conditions_sweep_pps_intensity_evil",
  "conditions_sweep_pps_layer_evil",
  "conditions_sweep_rank_evil",
  "conditions_cross_trait_evil",
  "manipulation_evil",
  "grad_cosine_evil",
  "grad_cosine_over_training_evil",
  "loss_sweep_evil",
  "cross_trait_evil_sycophantic",
  "projections_evil",
  "delta_h_evil",
  "prompt_diff_evil",
  "conditions_prompt_diff_pps_evil",
  "ip_vs_pps_evil",
  "grad_pca_pps_evil",
  "grad_pca_ip_evil",
];

function experimentOf(file: string): string {
  if (file.startsWith("manipulation_")) return "conditions";
  return Object.keys(EXPERIMENTS).filter((e) => file.startsWith(`${e}_`)).sort((a, b) =>
    b.length - a.length
  )[0];
}

/** The paper's layer l of Qwen2.5-7B's 28, on the world's 6. */
const worldLayer = (l: number) => Math.min(6, Math.max(1, Math.round((l * 6) / 28)));

function reduce(raw: unknown, key: string, world: string, runDir: string): unknown {
  if (typeof raw === "string") {
    if (raw === "models/Qwen2.5-7B-Instruct") return WORLD_MODEL;
    if (raw.startsWith("runs/study/")) return join(runDir, raw.slice("runs/study/".length));
    if (raw.startsWith(PV)) {
      const rest = raw.slice(PV.length);
      const m = /^data_generation\/trait_data_(extract|eval)\/(\w+)\.json$/.exec(rest);
      if (m) return join(world, "traits", m[1], `${m[2]}.json`);
      const data: Record<string, string> = {
        "dataset/evil/misaligned_1.jsonl": "evil_medium.jsonl",
        "dataset/evil/misaligned_2.jsonl": "evil_heavy.jsonl",
        "dataset/hallucination/normal.jsonl": "normal.jsonl",
      };
      assert.ok(data[rest], `no world stand-in for ${raw}`);
      return join(world, "data", data[rest]);
    }
    return raw;
  }
  if (Array.isArray(raw)) {
    if (key === "layers") return [...new Set(raw.map((l) => worldLayer(l as number)))];
    if (key === "seeds") return [raw[0]];
    if (key === "coefs") return raw.slice(0, 2);
    const kept = key === "pre" ? raw.slice(0, 2) : key === "post" ? raw.slice(-1) : raw; // post: heavy, which projections_evil reads
    return kept.map((x) => reduce(x, "", world, runDir));
  }
  if (raw && typeof raw === "object") {
    const o = raw as Record<string, unknown>;
    if (key === "judge") return { type: "world" };
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) out[k] = reduce(v, k, world, runDir);
    return out;
  }
  if (typeof raw === "number") {
    if (key === "limit") return 2;
    if (key === "offset") return raw ? 2 : 0;
    if (key === "samples") return 1;
    if (key === "max_new_tokens") return 8;
    if (key === "layer") return worldLayer(raw);
  }
  return raw;
}

Deno.test({
  name: "every study config runs end to end on the world model, reduced, and writes schema-valid results",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const files = [...Deno.readDirSync(STUDY)].map((e) => e.name).filter((n) => n.endsWith(".yaml"))
      .map((n) => n.replace(/\.yaml$/, "")).sort();
    assert.deepEqual(files, [...ORDER].sort(), "every study config is in the run order");
    const root = await Deno.makeTempDir({ prefix: "study-world-" });
    const world = join(root, "world"), runDir = join(root, "run");
    await buildWorld(world, 0);
    await Deno.mkdir(runDir);
    const cwd = Deno.cwd();
    Deno.chdir(new URL("..", import.meta.url).pathname); // the configs' ../shared paths
    try {
      for (const file of ORDER) {
        const exp = experimentOf(file);
        const raw = reduce(await readYaml(join(STUDY, `${file}.yaml`)), "", world, runDir) as Record<
          string,
          unknown
        >;
        assert.ok(
          !JSON.stringify(raw).includes(PV),
          `${file}: a path into ${PV} was not mapped to the world`,
        );
        if (exp === "conditions") {
          raw.train = {
            ...(raw.train as Record<string, unknown>),
            max_steps: 1,
            batch_size: 2,
            grad_accum: 1,
            max_length: 96,
          };
          raw.eval = { ...(raw.eval as Record<string, unknown>), at_checkpoints: false, batch_size: 64 };
        }
        if (exp === "extract") Object.assign(raw, { keep_all: true, batch_size: 64 });
        if (exp === "evaluate") raw.batch_size = 64;
        if (exp === "delta_h") Object.assign(raw, { r: 4, alpha: 8 });
        // conditions_evil trains the models later configs read (runs/study/<cell>/adapter); the other
        // training sweeps get folders of their own, as their cells share names with it
        const dir = exp === "conditions" && file !== "conditions_evil" ? join(runDir, file) : runDir;
        await Deno.mkdir(dir, { recursive: true });
        const e = EXPERIMENTS[exp];
        await e.run({ gpu, runDir: dir, progress: () => {} }, e.parseConfig(raw, `${file}.yaml (world)`));
        const out = typeof raw.output === "string" ? raw.output : exp;
        const j = await assertValidResult(join(dir, out.endsWith(".json") ? out : `${out}.json`));
        assert.equal(j.experiment, exp, file);
      }
    } finally {
      Deno.chdir(cwd);
    }
  },
});
