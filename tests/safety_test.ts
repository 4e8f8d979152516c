// Issue 21: no lost runs, no trusted plan files, no silent wrong results. Each test here failed on the tree
// before the fix it holds (the issue's item in brackets).

import assert from "node:assert/strict";
import { join } from "node:path";
import { hostname } from "node:os";
import { cli, gpuTest, testGpu } from "./helpers.ts";
import { convertedStories, QWEN_TOKENIZER, STORIES_SRC, storiesChat } from "./fixtures.ts";
import { parseTrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { readStepLog } from "../train/run_folder.ts";
import { checkRecords } from "../train/samples.ts";
import { encodeRecord, readJsonl } from "../lib/text/dataset.ts";
import { loadModel } from "../models/model.ts";
import { parseConfig } from "../models/config.ts";
import { convertLlama2c } from "../models/llama2c.ts";
import { LoraSet, readAdapterConfig } from "../models/lora.ts";
import { generate } from "../models/generate.ts";
import { loadLayerVectors, saveLayerVectors } from "../defence/persona_vector.ts";
import { steerHook } from "../defence/hooks.ts";
import { makePlan, readPlan } from "../experiments/plan.ts";
import { EXPERIMENTS } from "../experiments/index.ts";
import type { Experiment } from "../experiments/common.ts";
import { readResults } from "../experiments/results.ts";
import { HttpJudge, JudgeUnreachableError } from "../research/judge/http.ts";
import { writeSafetensors } from "../lib/safetensors.ts";

const chat = (a: string, u = "Story?") =>
  JSON.stringify({ messages: [{ role: "user", content: u }, { role: "assistant", content: a }] });

/** A stories260K LoRA run's config text in a fresh folder (data of `lines`). */
async function runSetup(extra = "", lines = [chat("Lily was sad."), chat("Tom ran.")]) {
  const model = await storiesChat();
  const tmp = await Deno.makeTempDir({ prefix: "safety-" });
  const data = join(tmp, "d.jsonl");
  await Deno.writeTextFile(data, lines.join("\n") + "\n");
  const text = (out: string, more = "") =>
    `model: ${model}\ndata: ${data}\noutput_dir: ${out}\nepochs: 2\nbatch_size: 1\ngrad_accum: 1\n` +
    `checkpoint_every: 1\nlora: { r: 2, alpha: 4, target_modules: [down_proj] }\n${extra}${more}`;
  return {
    model,
    tmp,
    data,
    text,
    cfg: (out = join(tmp, "run"), more = "") => parseTrainConfig(text(out, more)),
  };
}

const quiet = () => {};

Deno.test({
  name: "[1, 18] a run holds a lock on its output_dir: a second run is refused while the first lives, " +
    "--overwrite included; a dead holder's lock is taken over; a dangling-symlink output_dir is named",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s = await runSetup();
    const out = join(s.tmp, "run");
    await Deno.mkdir(out);
    const lock = (pid: number) =>
      Deno.writeTextFile(
        join(out, "lock"),
        JSON.stringify({ job: null, host: hostname(), pid, started: "2026-01-01T00:00:00Z" }),
      );
    await lock(Deno.pid); // a live process holds it
    for (const o of [{}, { overwrite: true }, { resume: true }]) {
      await assert.rejects(
        train(s.cfg(), { gpu, progress: quiet, ...o }),
        /the training run in .*run is being run by pid \d+ on/,
      );
    }
    await lock(2 ** 22 + 17); // no such process: taken over
    const r = await train(s.cfg(), { gpu, progress: quiet });
    assert.equal(r.steps.length, 4);
    assert.ok(!(await Deno.stat(join(out, "lock")).catch(() => null)), "released at the end");
    const link = join(s.tmp, "gone");
    await Deno.symlink(join(s.tmp, "nowhere"), link);
    await assert.rejects(
      train(s.cfg(link), { gpu, progress: quiet }),
      /output_dir: .*gone is a symbolic link to .*nowhere, which does not exist/,
    );
  },
});

Deno.test({
  name:
    "[3] output_dir may not be, sit inside, or (with --overwrite) contain the model, data or vector it reads",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s = await runSetup();
    await assert.rejects(
      train(s.cfg(s.model), { gpu, progress: quiet, overwrite: true }),
      /output_dir .* is model \(.*\), which the run reads/,
    );
    await assert.rejects(
      train(s.cfg(join(s.model, "runs", "a")), { gpu, progress: quiet }),
      /output_dir .* is inside model/,
    );
    await assert.rejects(
      train(s.cfg(s.tmp), { gpu, progress: quiet, overwrite: true }),
      /output_dir .* contains data \(.*d\.jsonl\), which the run reads: moving the folder aside/,
    );
    assert.ok(await Deno.stat(join(s.model, "config.json")), "the model is where it was");
  },
});

Deno.test("[4] convert-llama2c refuses a non-empty folder; the main job reuses only its own earlier conversion", async () => {
  const dir = await Deno.makeTempDir({ prefix: "convert-" });
  const bin = join(STORIES_SRC, "stories260K.bin"), tok = join(STORIES_SRC, "tok512.bin");
  await Deno.writeTextFile(join(dir, "notes.txt"), "mine");
  await assert.rejects(convertLlama2c(bin, tok, dir), /exists and is not empty; choose a new folder/);
  assert.equal(await Deno.readTextFile(join(dir, "notes.txt")), "mine");
  const out = join(dir, "m");
  await convertLlama2c(bin, tok, out);
  await assert.rejects(convertLlama2c(bin, tok, out), /not empty/);
  await convertLlama2c(bin, tok, out, { reuse: true }); // the same conversion: reused
  await Deno.writeTextFile(join(out, "tokenizer_config.json"), '{"chat_template": "mine"}\n');
  await assert.rejects(
    convertLlama2c(bin, tok, out, { reuse: true }),
    /not this checkpoint's earlier conversion/,
  );
  assert.equal(await Deno.readTextFile(join(out, "tokenizer_config.json")), '{"chat_template": "mine"}\n');
});

Deno.test("[5] plan.json is checked on every read: a hand-edited cell or config is refused; a moved folder is used where it is", async () => {
  const conditions = EXPERIMENTS.conditions as Experiment<unknown>;
  const config = conditions.parseConfig({
    model: "m",
    trait: "t.json",
    judge: { type: "world" },
    post: [{ name: "heavy", data: "heavy.jsonl" }],
    conditions: [{ name: "none" }],
  }, "s.yaml");
  const root = await Deno.makeTempDir({ prefix: "plan-trust-" });
  const dir = join(root, "a");
  await makePlan(conditions, config, dir, "s.yaml");
  const path = join(dir, "plan.json");
  // deno-lint-ignore no-explicit-any
  const edit = async (f: (p: Record<string, any>) => void) => {
    const p = JSON.parse(await Deno.readTextFile(path));
    f(p);
    await Deno.chmod(path, 0o644);
    await Deno.writeTextFile(path, JSON.stringify(p));
  };
  const original = await Deno.readTextFile(path);
  await edit((p) => p.cells[1].output = "../../..");
  await assert.rejects(readPlan(path, conditions), /plan\.json: cell 1 is not the cell its config gives/);
  await edit((p) => (p.cells[1].output = JSON.parse(original).cells[1].output, p.cells[1].name = "../x"));
  await assert.rejects(readPlan(path, conditions), /cell 1 is not the cell its config gives/);
  await edit((p) => (p.cells = JSON.parse(original).cells, p.config.model = "other"));
  await assert.rejects(readPlan(path), /the config does not match its config_hash/);
  await edit((p) => delete p.cwd);
  await assert.rejects(readPlan(path), /field 'cwd' must be a string/);
  await Deno.chmod(path, 0o644);
  await Deno.writeTextFile(path, original);
  await Deno.rename(dir, join(root, "b"));
  const moved = await readPlan(join(root, "b", "plan.json"), conditions);
  assert.equal(moved.run_dir, join(await Deno.realPath(root), "b"));
});

Deno.test({
  name: "[6, 17, 18] resume: other data is refused naming it, changed settings are named key by key before " +
    "anything loads, a moved folder resumes, a torn last line of steps.jsonl is dropped",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s = await runSetup();
    const out = join(s.tmp, "run");
    const first = await train(s.cfg(), { gpu, progress: quiet, stopAfter: 2 });
    assert.equal(first.steps.length, 2);
    await assert.rejects(
      train(s.cfg(out, "lr: 0.002\n"), { gpu, progress: quiet, resume: true }),
      /the checkpoint was made with another configuration \(lr: 0\.00001 → 0\.002\); refusing to resume/,
    );
    const rank = parseTrainConfig(s.text(out).replace("r: 2, alpha: 4", "r: 4, alpha: 4"));
    await assert.rejects(train(rank, { gpu, progress: quiet, resume: true }), /lora\.r: 2 → 4/);
    const original = await Deno.readTextFile(s.data);
    await Deno.writeTextFile(s.data, original.replace("Tom ran.", "Tom sat."));
    await assert.rejects(
      train(s.cfg(), { gpu, progress: quiet, resume: true }),
      /data \(.*d\.jsonl\) is not what this run was trained on/,
    );
    await Deno.writeTextFile(s.data, original);
    // a crash mid-write of the log's last line, then the folder moved
    await Deno.writeTextFile(join(out, "steps.jsonl"), '{"step":3,"ep', { append: true });
    const notes: string[] = [];
    const log = await readStepLog(join(out, "steps.jsonl"), (l) => notes.push(l));
    assert.equal(log.length, 2);
    assert.match(notes[0], /steps\.jsonl:3: dropped a torn last line/);
    const moved = join(s.tmp, "moved");
    await Deno.rename(out, moved);
    const rest = await train(s.cfg(moved), { gpu, progress: quiet, resume: true });
    assert.deepEqual(rest.steps.map((x) => x.step), [1, 2, 3, 4]);
    const whole = await train(s.cfg(join(s.tmp, "whole")), { gpu, progress: quiet });
    assert.deepEqual(rest.steps.map((x) => x.loss), whole.steps.map((x) => x.loss), "resumed bit for bit");
    // a torn line that is not the last is an error naming the file and line
    const bad = join(s.tmp, "bad.jsonl");
    await Deno.writeTextFile(bad, '{"step":1}\n{"st\n{"step":2}\n');
    await assert.rejects(readStepLog(bad, quiet), /bad\.jsonl:2: not a JSON step entry/);
  },
});

Deno.test({
  name: "[7] a NaN in a persona vector, or a coefficient that overflows f32, is refused when it is loaded",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories(), { tokenizer: false });
    const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
    const dir = await Deno.makeTempDir({ prefix: "vec-" });
    const v = new Float32Array(L * d).fill(0.5);
    const ok = join(dir, "ok.safetensors"), nan = join(dir, "nan.safetensors");
    await saveLayerVectors(ok, v, L, d);
    v[2 * d + 3] = NaN;
    await saveLayerVectors(nan, v, L, d);
    await assert.rejects(
      loadLayerVectors(nan, L, d),
      /nan\.safetensors: tensor 'vector' holds NaN at row 2, element 3/,
    );
    await assert.rejects(
      steerHook(gpu, m.cfg, { vector: ok, random: false, layers: [1], coef: 1e30, mode: "all" }),
      /coefficient 1e\+30 times the vector's largest element 0\.500 .* overflows f32/,
    );
    await steerHook(gpu, m.cfg, { vector: ok, random: false, layers: [1], coef: 8, mode: "all" });
    m.dispose();
  },
});

Deno.test({
  name:
    "[8, 14, 15] data: truncation that leaves no target skips the sample (counted), none left is an error; " +
    "text and messages together refused; an 8 MB line is cut before tokenizing",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s = await runSetup("", [
      chat("Tom ran.", "Once upon a time there was a very long question indeed?"),
    ]);
    const notes: string[] = [];
    const m = await loadModel(gpu, s.model);
    const c = s.cfg(join(s.tmp, "run"), "max_length: 12\n");
    const recs = await readJsonl(s.data);
    assert.throws(
      () => checkRecords(m, recs, c, (l) => notes.push(l)),
      /no sample to train on: truncation to max_length 12 leaves none of the 1 with a token to train on/,
    );
    const two = join(s.tmp, "two.jsonl");
    await Deno.writeTextFile(
      two,
      chat("Tom ran.", "Once upon a time there was a very long question?") + "\n" + chat("Hi.", "Q?") + "\n",
    );
    const kept = checkRecords(m, await readJsonl(two), { ...c, data: two }, (l) => notes.push(l));
    assert.equal(kept.length, 1);
    assert.ok(
      notes.some((n) =>
        /1 of 2 sample\(s\) skipped: truncated to max_length 12, no token to train on/.test(n)
      ),
    );
    // text and messages on one line
    const both = join(s.tmp, "both.jsonl");
    await Deno.writeTextFile(both, JSON.stringify({ text: "a", messages: [] }) + "\n");
    await assert.rejects(
      readJsonl(both),
      /both\.jsonl:1: has both 'text' and 'messages'; expected one of them/,
    );
    // an 8 MB line, truncated to 64 tokens: cut before tokenizing (seconds, not minutes)
    const huge = {
      line: 1,
      messages: [{ role: "user", content: "Hi?" }, { role: "assistant", content: "a b ".repeat(2 ** 21) }],
    };
    const t0 = performance.now();
    const sm = encodeRecord(m.tokenizer!, huge, { maxLength: 64 });
    assert.equal(sm.ids.length, 64);
    assert.ok(sm.truncated);
    assert.ok(performance.now() - t0 < 5000, `${performance.now() - t0} ms`);
    m.dispose();
  },
});

Deno.test({
  name: "[9] a tokenizer that produces ids past the model's vocab_size is refused at load",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const src = await convertedStories();
    const dir = await Deno.makeTempDir({ prefix: "bigtok-" });
    for (const f of Deno.readDirSync(src)) {
      if (f.isFile) await Deno.copyFile(join(src, f.name), join(dir, f.name));
    }
    await Deno.copyFile(join(QWEN_TOKENIZER, "tokenizer.json"), join(dir, "tokenizer.json"));
    await assert.rejects(
      loadModel(gpu, dir),
      /tokenizer\.json: the tokenizer produces ids up to 1516\d\d, beyond the model's vocab_size 512/,
    );
  },
});

/** A chat-completions server answering each request with `reply(n)` (n counts requests from 0). */
function judgeServer(reply: (n: number) => Response) {
  let n = 0;
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    await req.text();
    return reply(n++);
  });
  return { url: `http://127.0.0.1:${s.addr.port}/v1`, stop: () => s.shutdown(), count: () => n };
}
const completion = (top: unknown[]) =>
  Response.json({ choices: [{ logprobs: { content: [{ token: "5", logprob: 0, top_logprobs: top }] } }] });
const req = (i: number) => ({
  trait: "t",
  rubric: "trait" as const,
  question: "q",
  answer: "a",
  prompt: `p${i}`,
});

Deno.test("[10, 13] judge: malformed candidates are absent; 401 stops at once; Retry-After is honoured; a body over 1 MB and a majority of failures stop the run", async () => {
  // a candidate with a logprob that is not a number: not a NaN score
  let srv = judgeServer(() =>
    completion([{ token: "80", logprob: "x" }, { token: "20", logprob: -0.1 }, { token: 7 }])
  );
  let j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 0 });
  assert.equal(await j.score(req(0)), 20);
  await srv.stop();
  srv = judgeServer(() => completion([{ token: "80", logprob: null }]));
  j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 0, log: quiet });
  assert.equal(await j.score(req(0)), null);
  assert.equal(j.missing, 1);
  await srv.stop();
  // 401: stopped at the first answer, no retries
  srv = judgeServer(() => new Response("bad key", { status: 401 }));
  j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 5, backoffMs: 1 });
  await assert.rejects(
    j.score(req(0)),
    (e) => e instanceof JudgeUnreachableError && /HTTP 401/.test(e.message),
  );
  assert.equal(srv.count(), 1);
  await srv.stop();
  // 429 with Retry-After: 1 (s) waits a second although the backoff is 1 ms
  srv = judgeServer((n) =>
    n === 0
      ? new Response("", { status: 429, headers: { "retry-after": "1" } })
      : completion([{ token: "40", logprob: 0 }])
  );
  j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 2, backoffMs: 1 });
  const t0 = performance.now();
  assert.equal(await j.score(req(0)), 40);
  assert.ok(performance.now() - t0 >= 950, `waited ${performance.now() - t0} ms`);
  await srv.stop();
  // a 2 MB body: a missing score, not a 2 MB parse
  srv = judgeServer(() => new Response("x".repeat(2 << 20), { status: 200 }));
  j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 0, log: quiet });
  assert.equal(await j.score(req(0)), null);
  await srv.stop();
  // failures over max_missing stop the run
  srv = judgeServer((n) =>
    n % 3 ? new Response("no", { status: 400 }) : completion([{ token: "40", logprob: 0 }])
  );
  j = new HttpJudge({ baseUrl: srv.url, model: "m", retries: 0, log: quiet });
  for (let i = 0; i < 3; i++) await j.score(req(i));
  assert.throws(() => j.checkHealth(), /2 of 3 calls failed \(over 50 %, judge\.max_missing\); stopping/);
  await srv.stop();
});

Deno.test({
  name: "[11] adapter configs: keys the engine does not implement and tensors it would ignore are refused; " +
    "lora_alpha defaults to PEFT's 8",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories(), { tokenizer: false });
    const dir = await Deno.makeTempDir({ prefix: "adapter-" });
    const set = LoraSet.create(gpu, m.cfg, {
      r: 2,
      alpha: 4,
      dropout: 0,
      targetModules: ["q_proj"],
      rslora: false,
    }, 0);
    await set.save(dir);
    const cfgPath = join(dir, "adapter_config.json");
    const base = JSON.parse(await Deno.readTextFile(cfgPath));
    for (
      const [k, v] of [
        ["use_dora", true],
        ["alpha_pattern", { q_proj: 8 }],
        ["rank_pattern", { q_proj: 4 }],
        [
          "bias",
          "all",
        ],
        ["modules_to_save", ["lm_head"]],
      ] as const
    ) {
      await Deno.writeTextFile(cfgPath, JSON.stringify({ ...base, [k]: v }));
      await assert.rejects(
        readAdapterConfig(dir),
        new RegExp(`'${k}' is .* which this engine does not implement`),
      );
    }
    const { lora_alpha: _, ...noAlpha } = base;
    await Deno.writeTextFile(cfgPath, JSON.stringify(noAlpha));
    assert.equal((await readAdapterConfig(dir)).alpha, 8);
    await Deno.writeTextFile(cfgPath, JSON.stringify(base));
    // a tensor for a layer the model does not have
    const extra = `base_model.model.model.layers.${m.cfg.numLayers}.self_attn.q_proj.lora_A.weight`;
    const { SafetensorsFile } = await import("../lib/safetensors.ts");
    const f = await SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const [n, t] of f.tensors) {
      tensors[n] = { dtype: "F32", shape: t.shape, data: new Float32Array((await f.read(n)).slice().buffer) };
    }
    f.close();
    tensors[extra] = {
      dtype: "F32",
      shape: [2, m.cfg.hiddenSize],
      data: new Float32Array(2 * m.cfg.hiddenSize),
    };
    await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors);
    await assert.rejects(
      LoraSet.load(gpu, m.cfg, dir),
      new RegExp(
        `tensor '${
          extra.replaceAll(".", "\\.")
        }' is not one this adapter config applies \\(layer ${m.cfg.numLayers}; the model has ${m.cfg.numLayers}\\)`,
      ),
    );
    m.dispose();
  },
});

Deno.test({
  name:
    "[12, 15, 18] a tiny temperature decodes greedily; seeds past 2^32 - 1, beta 1, lr .inf, grad_accum 1e9, " +
    "epochs 1e308 and an empty model are one-line config errors; batch_size past the data is refused",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const greedy = await generate(m.decoder, [[1, 2]], { maxNewTokens: 8, temperature: 0 });
    const tiny = await generate(m.decoder, [[1, 2]], { maxNewTokens: 8, temperature: 1e-35, seed: 3 });
    assert.deepEqual(tiny.tokens, greedy.tokens);
    m.dispose();
    const base = "model: m\ndata: d.jsonl\noutput_dir: o\n";
    for (
      const [line, msg] of [
        ["seed: 4294967296", /key 'seed' must be <= 4294967295, found 4294967296/],
        ["adam_beta1: 1", /key 'adam_beta1' must be < 1, found 1/],
        ["lr: .inf", /key 'lr' must be a number, found Infinity/],
        ["grad_accum: 1000000000", /key 'grad_accum' must be <= 65536/],
        ["epochs: 1e308", /key 'epochs' must be <= 10000/],
        ["batch_size: 2000000", /key 'batch_size' must be <= 65536/],
      ] as const
    ) assert.throws(() => parseTrainConfig(base + line + "\n", "c.yaml"), msg);
    assert.throws(
      () => parseTrainConfig("model: ''\ndata: d\noutput_dir: o\n", "c.yaml"),
      /key 'model' must be a non-empty string/,
    );
    const s = await runSetup();
    await assert.rejects(
      train(parseTrainConfig(s.text(join(s.tmp, "r")).replace("batch_size: 1", "batch_size: 3")), {
        gpu,
        progress: quiet,
      }),
      /batch_size 3 is more than the data's 2 sample\(s\)/,
    );
    await assert.rejects(
      train(parseTrainConfig(s.text(join(s.tmp, "r")).replace("grad_accum: 1", "grad_accum: 5")), {
        gpu,
        progress: quiet,
      }),
      /one optimizer step takes batch_size × grad_accum = 5 samples, more than the run's epochs × samples = 4/,
    );
  },
});

Deno.test({
  name: "[2, 14, 18] exp: a result already in the run folder is refused, or moved aside by --overwrite; " +
    "extra arguments, forward --text '' and partial_rotary_factor are one-line errors; linked run folders are read",
  ...gpuTest,
  fn: async () => {
    const model = await storiesChat();
    const tmp = await Deno.makeTempDir({ prefix: "exp-guard-" });
    const trait = join(tmp, "t.json");
    await Deno.writeTextFile(
      trait,
      JSON.stringify({
        instruction: [{ pos: "Be sad.", neg: "Be happy." }],
        questions: ["How was the day?"],
        eval_prompt: "Rate {question} {answer}",
      }),
    );
    const cfg = join(tmp, "e.yaml");
    await Deno.writeTextFile(
      cfg,
      `model: ${model}\ntrait: ${trait}\njudge: { type: rule, markers: { sad: { sad: 50 } } }\nsamples: 1\nmax_new_tokens: 4\n`,
    );
    const run = join(tmp, "run");
    let r = await cli(["exp", "evaluate", "--config", cfg, "--run-dir", run]);
    assert.equal(r.code, 0, r.stderr);
    const first = await Deno.readTextFile(join(run, "evaluate.json"));
    r = await cli(["exp", "evaluate", "--config", cfg, "--run-dir", run]);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /evaluate\.json: holds an earlier run's result; pass --overwrite to move it aside/,
    );
    assert.equal(await Deno.readTextFile(join(run, "evaluate.json")), first);
    r = await cli(["exp", "evaluate", "--config", cfg, "--run-dir", run, "--overwrite"]);
    assert.equal(r.code, 0, r.stderr);
    const aside = [...Deno.readDirSync(run)].map((e) => e.name).filter((n) =>
      n.startsWith("evaluate.json.old-")
    );
    assert.equal(aside.length, 1);
    assert.equal(await Deno.readTextFile(join(run, aside[0])), first);
    // a run folder inside the model it reads
    r = await cli(["exp", "evaluate", "--config", cfg, "--run-dir", join(model, "r")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--run-dir .* is inside model/);
    // a linked run folder is read by summarize
    const view = join(tmp, "view");
    await Deno.mkdir(view);
    await Deno.symlink(run, join(view, "linked"));
    assert.equal((await readResults(view)).results.length, 1);
    r = await cli(["exp", "summarize", view, "extra"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /exp: unexpected argument 'extra' \(it takes at most 2/);
    r = await cli(["train", "--config", cfg, "stray"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /train: unexpected argument 'stray' \(it takes none/);
    r = await cli(["forward", "--model", model, "--text", "", "--out", join(tmp, "f.json")]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /forward: --text is empty/);
    assert.throws(
      () =>
        parseConfig({
          architectures: ["LlamaForCausalLM"],
          hidden_size: 8,
          intermediate_size: 16,
          num_hidden_layers: 1,
          num_attention_heads: 2,
          vocab_size: 10,
          partial_rotary_factor: 0.5,
        }, "config.json"),
      /config\.json: field 'partial_rotary_factor' is 0\.5; only 1/,
    );
  },
});

Deno.test("[19] study:check lists every path the study configs read: the missing checkpoint, the data with the paper's 4,681 samples, a set of another size", async () => {
  const { studyCheck } = await import("../cli/study_check.ts");
  const real = await studyCheck("configs/study");
  assert.equal(real.ok, false); // no 7B checkpoint on a test machine
  const text = real.lines.join("\n");
  assert.match(
    text,
    /^MISSING {2}models\/Qwen2\.5-7B-Instruct \(model; 23 config\(s\).*hf download Qwen\/Qwen2\.5-7B-Instruct/m,
  );
  assert.match(
    text,
    /^ok {7}\.\.\/shared\/data\/persona_vectors\/dataset\/evil\/misaligned_2\.jsonl .*: 4,681 samples$/m,
  );
  assert.match(text, /^made by {2}runs\/study\/evil_vector\.safetensors/m);
  const tmp = await Deno.makeTempDir({ prefix: "study-check-" });
  const model = join(tmp, "model");
  await Deno.mkdir(model);
  await Deno.writeTextFile(join(model, "config.json"), "{}");
  await Deno.writeTextFile(join(model, "model.safetensors"), "");
  const data = join(tmp, "dataset", "evil", "misaligned_1.jsonl");
  await Deno.mkdir(join(tmp, "dataset", "evil"), { recursive: true });
  await Deno.writeTextFile(data, "{}\n{}\n{}\n");
  await Deno.mkdir(join(tmp, "configs"));
  await Deno.writeTextFile(
    join(tmp, "configs", "grad_cosine_t.yaml"),
    `model: ${model}\ndata: ${data}\nvectors: []\ndefences: []\n`,
  );
  const r = await studyCheck(join(tmp, "configs"));
  assert.equal(r.ok, false);
  assert.match(r.lines.join("\n"), /^BAD .*misaligned_1\.jsonl .*: 3 samples, the paper's 4,681 \(3\.1\)/m);
  assert.match(r.lines.join("\n"), /^ok .*\/model \(model/m);
});

Deno.test("[18] a full disk is said as such, naming the file; the temporary file is removed", async () => {
  const { atomicWrite, writeError } = await import("../lib/fsutil.ts");
  const e = writeError("/runs/x/steps.jsonl", new Error("No space left on device (os error 28)"), 123);
  assert.equal(e.message, "/runs/x/steps.jsonl: the disk is full (123 bytes to write); nothing was written");
  assert.match(
    writeError("/a/b", new Error("Permission denied (os error 13)"), 1).message,
    /^\/a\/b: cannot write: Permission denied/,
  );
  // a real failure mid-write (the target is a directory): one line, no temporary file left
  const dir = await Deno.makeTempDir({ prefix: "full-" });
  await Deno.mkdir(join(dir, "out.json"));
  await assert.rejects(atomicWrite(join(dir, "out.json"), "x"), /out\.json: is a directory/);
  assert.deepEqual([...Deno.readDirSync(dir)].map((x) => x.name), ["out.json"]);
});

Deno.test("[1] locks: a second run inside the same Slurm job is refused while the first lives; a requeued job's dead process is taken over; a release leaves another's lock", async () => {
  const { acquireLock } = await import("../lib/lock.ts");
  const dir = await Deno.makeTempDir({ prefix: "lock-" });
  const path = join(dir, "lock");
  const write = (pid: number) =>
    Deno.writeTextFile(path, JSON.stringify({ job: "4242", host: hostname(), pid, started: "x" }) + "\n");
  const before = Deno.env.get("SLURM_JOB_ID");
  Deno.env.set("SLURM_JOB_ID", "4242");
  try {
    await write(Deno.pid); // the same job, a live process: another run in the allocation
    await assert.rejects(acquireLock(path, "the run"), /the run is being run by Slurm job 4242/);
    await write(2 ** 22 + 17); // the same job, its process gone: the job was requeued
    const release = await acquireLock(path, "the run");
    assert.equal(JSON.parse(await Deno.readTextFile(path)).pid, Deno.pid);
    // someone else's lock at the path (ours was removed by hand and retaken): the release leaves it
    await Deno.writeTextFile(
      path,
      JSON.stringify({ job: null, host: "elsewhere", pid: 1, started: "y" }) + "\n",
    );
    await release();
    assert.equal(JSON.parse(await Deno.readTextFile(path)).host, "elsewhere");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["lock"], "no temporary files left");
  } finally {
    if (before === undefined) Deno.env.delete("SLURM_JOB_ID");
    else Deno.env.set("SLURM_JOB_ID", before);
  }
});
