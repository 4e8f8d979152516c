// Experiments end to end on stories260K (with a plain-text chat template) and the rule judge; each
// result validates against schemas/result.schema.json. Plus the persona-vector arithmetic against a
// hand computation, the judge filter, and bad experiment configs.

import { join } from "node:path";
import assert from "node:assert/strict";
import { assertValidResult } from "./schema.ts";
import { experimentOfConfigFile, EXPERIMENTS } from "../experiments/index.ts";
import { extractPersonaVector } from "../experiments/extract_vector.ts";
import { hiddenStates } from "../research/activations.ts";
import { drawPrompt, sharedSuffix } from "../research/analysis.ts";
import { summarize } from "../experiments/summarize.ts";
import { randomLike } from "../defence/persona_vector.ts";
import { loadModel } from "../models/model.ts";
import { loadTrait } from "../lib/text/trait.ts";
import type { Judge, JudgeRequest } from "../research/judge/judge.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { exists } from "../lib/fsutil.ts";
import { gpuTest, testGpu } from "./helpers.ts";
import { SAD_RULES, sadTrait, storiesChat } from "./fixtures.ts";

const assertValid = assertValidResult;

const judge = { type: "rule", markers: SAD_RULES, min_words: 3 };
const quiet = () => {};

Deno.test({
  name: "extract, evaluate, prompt_diff and conditions run end to end and write schema-valid JSON",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const model = await storiesChat(), trait = await sadTrait();
    const runDir = await Deno.makeTempDir({ prefix: "exp-" });
    const ctx = { gpu, runDir, progress: quiet };
    const run = (name: string, raw: Record<string, unknown>) => {
      const e = EXPERIMENTS[name];
      return e.run(ctx, e.parseConfig(raw, `${name}.yaml`));
    };
    await run("extract", {
      model,
      trait,
      judge,
      samples: 2,
      max_new_tokens: 12,
      batch_size: 8,
      keep_all: true,
    });
    const ex = await assertValid(join(runDir, "persona_vector.json"));
    assert.equal(ex.metrics.kept, 2 * 2 * 2);
    const vec = await loadLayerVectors(join(runDir, "persona_vector.safetensors"), 6, 64);
    assert.ok(vec.some((x) => x !== 0));

    await run("evaluate", {
      model,
      trait,
      judge,
      samples: 2,
      max_new_tokens: 10,
      system_prompt: "Tell sad stories.",
      steer: { vector: join(runDir, "persona_vector.safetensors"), layers: [2], coef: 2 },
      projection: { vector: join(runDir, "persona_vector.safetensors"), layer: 3 },
    });
    const ev = await assertValid(join(runDir, "evaluate.json"));
    assert.equal(ev.metrics.summary.n, 4);
    assert.equal(ev.metrics.summary.missing_trait, 0);
    assert.ok(
      ev.metrics.samples.every((s: { projection: number | null }) => typeof s.projection === "number"),
    );

    const data = join(runDir, "chats.jsonl");
    await Deno.writeTextFile(
      data,
      ["Lily was sad and cried.", "Tom lost his ball and cried.", "The dog was hurt and sad."]
        .map((a, i) =>
          JSON.stringify({
            messages: [{ role: "user", content: `Tell story ${i}.` }, { role: "assistant", content: a }],
          })
        ).join("\n"),
    );
    await run("prompt_diff", {
      model,
      data,
      prompts: ["You are sad.", "Everyone cries."],
      vector: join(runDir, "persona_vector.safetensors"),
    });
    const pd = await assertValid(join(runDir, "prompt_diff.json"));
    // one pooled vector, a prompt drawn per sample; Figure 17's cosine with the persona vector per layer
    assert.equal(pd.metrics.prompt_counts.reduce((a: number, b: number) => a + b, 0), pd.metrics.samples);
    const bank = ["You are sad.", "Everyone cries."];
    assert.deepEqual(
      pd.metrics.prompt_counts,
      bank.map((p) => [0, 1, 2].filter((i) => drawPrompt(bank, i, 0) === p).length),
      "sample i draws drawPrompt(bank, i, seed)",
    );
    assert.ok(await exists(pd.metrics.file));
    assert.equal(pd.metrics.vector_cosines.length, pd.metrics.norms.length);

    await run("conditions", {
      model,
      trait,
      judge,
      vector: join(runDir, "persona_vector.safetensors"),
      seeds: [0],
      pre: [{ name: "base", data: null }, { name: "sadpre", data }],
      post: [{ name: "sad", data }],
      conditions: [
        { name: "none" },
        { name: "pps", steer: { layers: [2], coef: 1.5 } },
        { name: "ip", inoculation: ["You are sad.", "Everyone cries."] },
        { name: "random_pps", steer: { layers: [2], coef: 1.5, random: true } },
      ],
      train: {
        epochs: 2,
        batch_size: 1,
        grad_accum: 1,
        lr: 0.01,
        max_length: 48,
        checkpoint_every: 2,
        warmup: 0,
        lora: { r: 2, alpha: 4, target_modules: ["q_proj", "down_proj"] },
      },
      eval: { samples: 1, max_new_tokens: 8 },
    });
    const cond = await assertValid(join(runDir, "conditions.json"));
    assert.equal(cond.metrics.runs.length, 2 * 4);
    const one = await assertValid(join(runDir, "sadpre__sad__pps__seed0", "result.json"));
    assert.ok(one.metrics.over_training.length >= 2, "evaluated at checkpoints and at the end");
    assert.equal(one.metrics.train_losses.length, 6);
    const rows = await summarize(runDir);
    assert.ok(rows.length >= 12);
  },
});

Deno.test({
  name:
    "persona vector = hand-computed mean difference of response-averaged hidden states; the judge filter keeps the right pairs",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await storiesChat());
    const trait = await loadTrait(await sadTrait());
    // scripted judge: coherence 80; trait per (pos, neg) pair: (90, 10), (40, 10) → dropped, (90, 60) → dropped, then (90, 10) …
    const script = [[90, 10], [40, 10], [90, 60]];
    let traitCalls = 0;
    const stub: Judge = {
      name: "stub",
      score(r: JudgeRequest) {
        if (r.rubric === "coherence") return Promise.resolve(80);
        const i = traitCalls++, pair = Math.floor(i / 2);
        const s = script[pair] ?? [90, 10];
        return Promise.resolve(s[i % 2]);
      },
    };
    const res = await extractPersonaVector({ gpu, runDir: "", progress: quiet }, m, trait, stub, {
      samples: 1,
      maxNewTokens: 8,
      temperature: 1,
      seed: 3,
      batchSize: 8,
      traitThreshold: 50,
      coherenceThreshold: 50,
      questions: ["Tell me about Lily.", "What did Tom do?"],
    });
    assert.deepEqual(res.pairs.map((p) => p.kept), [true, false, false, true]);
    assert.equal(res.sequences.length, 2);
    // by hand: hidden states of prompt+answer, averaged over the answer tokens, pos minus neg
    const L = 6, d = 64, want = new Float64Array(L * d);
    for (const s of res.sequences) {
      for (const [side, sign] of [[s.pos, 1], [s.neg, -1]] as const) {
        const hs = await hiddenStates(m, [...side.prompt, ...side.answer]);
        for (let l = 0; l < L; l++) {
          for (let j = 0; j < d; j++) {
            let acc = 0;
            for (let t = side.prompt.length; t < side.prompt.length + side.answer.length; t++) {
              acc += hs[l][t * d + j];
            }
            want[l * d + j] += (sign * acc) / side.answer.length / res.sequences.length;
          }
        }
      }
    }
    for (let i = 0; i < want.length; i++) {
      assert.ok(Math.abs(res.vectors.response_avg[i] - want[i]) < 1e-5, `element ${i}`);
    }
  },
});

Deno.test("random control vectors keep each layer's norm; aligned suffixes; bad experiment configs", () => {
  const ref = new Float32Array([3, 4, 0, 0, 0, 1]);
  const r = randomLike(ref, 2, 3, 1);
  assert.ok(
    Math.abs(Math.hypot(r[0], r[1], r[2]) - 5) < 1e-5 && Math.abs(Math.hypot(r[3], r[4], r[5]) - 1) < 1e-5,
  );
  assert.deepEqual(randomLike(ref, 2, 3, 1), r);
  assert.equal(sharedSuffix([1, 2, 3, 4], [9, 9, 2, 3, 4]), 3);
  const e = EXPERIMENTS.evaluate;
  assert.throws(
    () => e.parseConfig({ model: "m", trait: "t", judge, sampels: 3 }, "ev.yaml"),
    /ev\.yaml: unknown key 'sampels'/,
  );
  assert.throws(
    () => e.parseConfig({ model: "m", trait: "t", judge: { type: "magic" } }, "ev.yaml"),
    /key 'judge\.type' must be http, local, rule or world/,
  );
  assert.throws(
    () => e.parseConfig({ model: "m", trait: "t", judge, samples: "ten" }, "ev.yaml"),
    /key 'samples' must be an integer/,
  );
  assert.throws(
    () =>
      EXPERIMENTS.conditions.parseConfig({
        model: "m",
        trait: "t",
        judge,
        post: [{ name: "p", data: "d" }],
        conditions: [{ name: "pps", steer: { layers: [1], coef: 1 } }],
      }, "c.yaml"),
    /condition 'pps' steers but neither it nor the top level names a vector/,
  );
  assert.throws(
    () =>
      EXPERIMENTS.conditions.parseConfig({
        model: "m",
        trait: "t",
        judge,
        post: [{ name: "p", data: "d" }],
        conditions: [{ name: "x" }],
        train: { lr: "fast" },
      }, "c.yaml"),
    /key 'lr' must be a number/,
  );
});

Deno.test({
  name: "a vector whose shape does not match the model is a clear error",
  ...gpuTest,
  fn: async () => {
    const { saveLayerVectors } = await import("../defence/persona_vector.ts");
    const p = join(await Deno.makeTempDir(), "v.safetensors");
    await saveLayerVectors(p, new Float32Array(4 * 32), 4, 32);
    await assert.rejects(
      loadLayerVectors(p, 6, 64),
      /v\.safetensors: tensor 'vector' has shape \[4,32\], but the model needs \[6, 64\]/,
    );
  },
});

Deno.test("drawPrompt: uniform over the bank (20,000 draws within 5 sigma), reproducible, seed-dependent", () => {
  const bank = ["a", "b", "c", "d", "e"], n = 20000;
  const draws = Array.from({ length: n }, (_, i) => drawPrompt(bank, i, 3));
  for (const p of bank) {
    const k = draws.filter((x) => x === p).length, sd = Math.sqrt(n * 0.2 * 0.8);
    assert.ok(Math.abs(k - n / 5) < 5 * sd, `${p} drawn ${k} times of ${n}`);
  }
  assert.deepEqual(draws.slice(0, 50), Array.from({ length: 50 }, (_, i) => drawPrompt(bank, i, 3)));
  const other = Array.from({ length: 50 }, (_, i) => drawPrompt(bank, i, 4));
  assert.ok(other.some((x, i) => x !== draws[i]), "another seed draws otherwise");
});

Deno.test("every shipped study config parses (each file is named after its experiment)", async () => {
  const { readYaml } = await import("../experiments/common.ts");
  const dir = new URL("../configs/study/", import.meta.url).pathname;
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".yaml")).sort();
  assert.ok(files.length >= 14, `${files.length} study configs`);
  for (const file of files) {
    // manipulation_* are conditions runs with sign-forcing; otherwise the longest experiment-name prefix
    const exp = experimentOfConfigFile(file);
    assert.ok(exp, `${file}: no experiment of that name`);
    // relative paths in the configs (../shared/...) are relative to the repository root
    const cwd = Deno.cwd();
    Deno.chdir(new URL("..", import.meta.url).pathname);
    try {
      EXPERIMENTS[exp].parseConfig(await readYaml(join(dir, file)), file);
    } finally {
      Deno.chdir(cwd);
    }
  }
});

Deno.test({
  name: "gradient-manipulation runs: conditions crossed with sign-forcing modes train and evaluate",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const model = await storiesChat(), trait = await sadTrait();
    const runDir = await Deno.makeTempDir({ prefix: "manip-" });
    const { saveLayerVectors } = await import("../defence/persona_vector.ts");
    const vec = join(runDir, "v.safetensors");
    await saveLayerVectors(vec, Float32Array.from({ length: 6 * 64 }, (_, i) => Math.sin(i)), 6, 64);
    const data = join(runDir, "chats.jsonl");
    await Deno.writeTextFile(
      data,
      ["Lily was sad.", "Tom cried."].map((a) =>
        JSON.stringify({ messages: [{ role: "user", content: "Story?" }, { role: "assistant", content: a }] })
      ).join("\n"),
    );
    const e = EXPERIMENTS.conditions;
    const c = e.parseConfig({
      model,
      trait,
      judge,
      vector: vec,
      post: [{ name: "sad", data }],
      conditions: [{ name: "none" }],
      sign_force_modes: ["attenuate", "neutralize"],
      train: {
        epochs: 1,
        schedule: "cosine",
        batch_size: 1,
        grad_accum: 1,
        lora: { r: 2, alpha: 4, target_modules: ["down_proj"] },
      },
      eval: { samples: 1, max_new_tokens: 4, at_checkpoints: false },
    }, "m.yaml");
    // deno-lint-ignore no-explicit-any
    assert.deepEqual((c as any).conditions.map((x: { name: string }) => x.name), [
      "none",
      "none+attenuate",
      "none+neutralize",
    ]);
    await e.run({ gpu, runDir, progress: quiet }, c);
    const res = await assertValid(join(runDir, "conditions.json"));
    assert.equal(res.metrics.runs.length, 3);
    const tc = JSON.parse(
      await Deno.readTextFile(join(runDir, "base__sad__none+attenuate__seed0", "train_config.json")),
    );
    assert.deepEqual(tc.sign_force, { vector: vec, layers: "all", mode: "attenuate" });
  },
});
