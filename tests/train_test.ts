// Training on stories260K: LoRA lowers the loss, runs are deterministic, a killed-and-resumed run
// reproduces the uninterrupted one; full-parameter mode; PEFT adapters round-trip; bad input.

import { join } from "node:path";
import assert from "node:assert/strict";
import { DEFAULTS, parseTrainConfig, type TrainConfig } from "../train/config.ts";
import { checkpointSteps, learningRate, type ScheduleKind, warmupSteps } from "../train/schedule.ts";
import { describeSpeed, stepSpeed, train } from "../train/loop.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { gpuTest, testGpu } from "./helpers.ts";
import { convertedStories } from "./fixtures.ts";

const STORIES = [
  "Lily had a red ball. She liked to play with it in the park every day.",
  "Tom saw a big dog. The dog was happy and wagged its tail at Tom.",
  "Once upon a time, there was a little cat named Tim. Tim liked to sleep in the sun.",
  "The sun was hot. Sue and her mom went to the beach to swim in the sea.",
  "Ben found a shiny rock. He gave it to his friend Mia, and she smiled.",
  "One day, a bird flew into the garden. It sang a happy song for the flowers.",
];

async function dataFile(): Promise<string> {
  const p = join(await Deno.makeTempDir(), "stories.jsonl");
  await Deno.writeTextFile(p, STORIES.map((text) => JSON.stringify({ text })).join("\n") + "\n");
  return p;
}

async function config(over: Record<string, unknown>): Promise<TrainConfig> {
  const yaml = `
model: ${await convertedStories()}
data: ${await dataFile()}
output_dir: ${await Deno.makeTempDir({ prefix: "train-" })}
seed: 1
max_length: 64
epochs: 4
batch_size: 2
grad_accum: 1
lr: 0.01
weight_decay: 0.0
warmup: 0
schedule: constant
checkpoint_every: 2
lora: { r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj, down_proj], rslora: false }
`;
  return parseTrainConfig(yaml, "test.yaml", over);
}

const quiet = () => {};

Deno.test({
  name: "LoRA training on stories260K lowers the loss; same seed gives the same losses",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const c = await config({});
    const a = await train(c, { gpu, progress: quiet });
    assert.equal(a.steps.length, 12);
    const first = a.steps.slice(0, 3).reduce((s, x) => s + x.loss, 0),
      last = a.steps.slice(-3).reduce((s, x) => s + x.loss, 0);
    assert.ok(last < 0.8 * first, `loss should fall: first 3 ${first / 3}, last 3 ${last / 3}`);
    const b = await train({ ...c, output_dir: await Deno.makeTempDir() }, { gpu, progress: quiet });
    assert.deepEqual(b.steps.map((s) => s.loss), a.steps.map((s) => s.loss));
    await Deno.stat(join(c.output_dir, "adapter", "adapter_model.safetensors"));
    const log = (await Deno.readTextFile(join(c.output_dir, "steps.jsonl"))).trim().split("\n");
    assert.equal(log.length, 12);
    // each step's own time and rate; the process's first step marked cold (it carries the compiles)
    const rows = log.map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((r) => r.warm), [false, ...new Array(11).fill(true)]);
    for (const r of rows) {
      assert.ok(r.step_s > 0 && Math.abs(r.tokens_per_s - r.tokens / r.step_s) < 1e-6 * r.tokens_per_s);
      assert.ok(r.elapsed_s >= r.step_s);
    }
    const sp = stepSpeed(a.steps);
    assert.equal(sp.first_step_s, rows[0].step_s);
    assert.equal(sp.warm_steps, 11);
    assert.match(
      describeSpeed(sp),
      /^step 1 [\d.]+ s \(compiles, first touch\); steady state [\d.]+ s a step, \d+ tokens\/s \(median of 11\)$/,
    );
  },
});

Deno.test({
  name: "a killed and resumed run gives the same losses as an uninterrupted one",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const c = await config({ checkpoint_every: 3 });
    const whole = await train({ ...c, output_dir: await Deno.makeTempDir() }, { gpu, progress: quiet });
    // "kill" after 5 steps: the checkpoint at step 3 survives, steps 4-5 are lost and redone
    await train(c, { gpu, progress: quiet, stopAfter: 5 });
    assert.deepEqual((await listCheckpoints(c.output_dir)).map((p) => p.slice(-12)), ["step-0000003"]);
    const resumed = await train(c, { gpu, progress: quiet, resume: true });
    assert.deepEqual(resumed.steps.map((s) => s.loss), whole.steps.map((s) => s.loss));
  },
});

Deno.test("the default schedule reproduces E.4's learning rates (cosine, 3 % warmup), and linear would not", () => {
  const at = (kind: ScheduleKind, step: number, total: number) =>
    learningRate(kind, 1e-5, step, total, warmupSteps(DEFAULTS.warmup, total));
  const s = DEFAULTS.schedule;
  // 3 epochs, 441 steps: 9.5e-6 at step 73, 7.8e-6 at the end of the first epoch (147)
  assert.equal(at(s, 73, 441).toExponential(1), "9.5e-6");
  assert.equal(at(s, 147, 441).toExponential(1), "7.8e-6");
  // 1 epoch, 147 steps (the sign-forcing runs): 5.3e-6 at the midpoint
  assert.equal(at(s, 73, 147).toExponential(1), "5.3e-6");
  assert.notEqual(at("linear", 73, 441).toExponential(1), "9.5e-6");
  assert.equal(checkpointSteps(0.1, 147), 14, "a checkpoint at least every 10 %");
  assert.equal(checkpointSteps(13, 147), 13);
});
