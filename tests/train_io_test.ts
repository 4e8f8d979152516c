// PEFT adapter round trip, inoculation-prompt placement, full-parameter mode, and the bad-input cases
// of training: malformed JSONL, no assistant turn, too long, NaN loss, config errors.

import { join } from "node:path";
import assert from "node:assert/strict";
import { loadModel, type Model } from "../models/model.ts";
import { readMergeAdapter } from "../models/lora_merge.ts";
import { LoraSet, peftName } from "../models/lora.ts";
import { stepHooks } from "../train/step_hooks.ts";
import { SafetensorsFile, type TensorToWrite, toF32, writeSafetensors } from "../lib/safetensors.ts";
import { f32ToBf16 } from "../lib/tensor.ts";
import { encodeRecord, readJsonl, withInoculation } from "../lib/text/dataset.ts";
import { TextTokenizer } from "../lib/text/tokenizer.ts";
import { parseTrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { assertClose, gpuTest, randn, testGpu } from "./helpers.ts";
import { convertedStories, QWEN_TOKENIZER, writeTinyQwen2 } from "./fixtures.ts";

Deno.test({
  name: "a saved PEFT adapter reloads to identical logits; names and shapes follow PEFT",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const lora = LoraSet.create(gpu, m.cfg, {
      r: 3,
      alpha: 6,
      dropout: 0.05,
      targetModules: ["k_proj", "up_proj"],
      rslora: true,
    }, 9);
    for (const e of lora.store.entries) {
      if (e.name.includes("lora_B")) lora.store.set(e.name, randn(e.numel, e.offset, 0.3));
    }
    const dir = await Deno.makeTempDir();
    await lora.save(dir, "stories260K");
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "adapter_config.json")));
    assert.equal(cfg.peft_type, "LORA");
    assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.target_modules], [3, 6, true, [
      "k_proj",
      "up_proj",
    ]]);
    const f = await SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
    assert.deepEqual(f.info(peftName(4, "k_proj", "A")).shape, [3, 64]);
    assert.deepEqual(f.info(peftName(4, "k_proj", "B")).shape, [32, 3]);
    assert.deepEqual(f.info("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight").shape, [172, 3]);
    assert.equal(f.tensors.size, 5 * 2 * 2);
    f.close();
    const logits = async (l: LoraSet) => {
      const ids = Uint32Array.from([1, 403, 407, 261]);
      const ex = stepHooks(gpu, { lora: l, rows: 4 });
      const { normed } = m.decoder.forward({ ids, batch: 1, t: 4, extras: ex.forward });
      const out = await m.decoder.logits(normed, [0, 1, 2, 3]).read(gpu);
      ex.dispose();
      return out;
    };
    const reloaded = await LoraSet.load(gpu, m.cfg, dir);
    assert.equal(reloaded.scale, 6 / Math.sqrt(3));
    assert.deepEqual(await logits(reloaded), await logits(lora));
    const plain = await logits(
      LoraSet.create(gpu, m.cfg, { r: 3, alpha: 6, dropout: 0, targetModules: ["k_proj"], rslora: false }, 1),
    );
    assert.notDeepEqual(plain, await logits(lora));
  },
});

Deno.test({
  name:
    "a merged adapter (W + scale B A at load) gives the logits of the adapter on the base (f32, 2e-5) and of " +
    "weights merged on the CPU (bf16, 5e-4); an all-zero B leaves bf16 weights bit for bit",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const logits = async (m: Model, l: LoraSet | null) => {
      const ids = Uint32Array.from([1, 5, 17, 42, 7, 99]);
      const ex = stepHooks(gpu, { lora: l, rows: ids.length });
      const { normed } = m.decoder.forward({ ids, batch: 1, t: ids.length, extras: ex.forward });
      const out = await m.decoder.logits(normed, [0, 1, 2, 3, 4, 5]).read(gpu);
      ex.dispose();
      return out;
    };
    for (const dtype of ["F32", "BF16"] as const) {
      const dir = await Deno.makeTempDir();
      await writeTinyQwen2(join(dir, "model"), dtype);
      const base = await loadModel(gpu, join(dir, "model"), { tokenizer: false });
      const lora = LoraSet.create(gpu, base.cfg, {
        r: 4,
        alpha: 8,
        dropout: 0,
        targetModules: ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
        rslora: false,
      }, 3);
      for (const e of lora.store.entries) {
        if (e.name.includes("lora_B")) lora.store.set(e.name, randn(e.numel, e.offset, 0.2));
      }
      await lora.save(join(dir, "adapter"));
      const cfg = base.cfg;
      const merged = await loadModel(gpu, join(dir, "model"), {
        tokenizer: false,
        merge: await readMergeAdapter(join(dir, "adapter"), cfg),
      });
      const got = await logits(merged, null);
      assert.notDeepEqual(got, await logits(base, null), "the adapter changes the logits");
      if (dtype === "F32") {
        assertClose(
          got,
          await logits(base, lora),
          { atol: 2e-5, rtol: 2e-5 },
          "merged vs adapter on the base",
        );
      } else {
        // the bf16 model's merged weights are bf16(W + scale B A): a checkpoint with those weights, merged
        // on the CPU in f64, gives the same logits (a weight whose f32 and f64 sums round to neighbouring
        // bf16 values moves them by ~1e-4)
        const add = await readMergeAdapter(join(dir, "adapter"), cfg);
        const f = await SafetensorsFile.open(join(dir, "model", "model.safetensors"));
        const tensors: Record<string, TensorToWrite> = {};
        for (const [name, info] of f.tensors) {
          const w = toF32(await f.read(name), info.dtype, name), m = add.modules.get(name);
          if (m) {
            const r = m.a.length / m.inF;
            for (let o = 0; o < m.outF; o++) {
              for (let i = 0; i < m.inF; i++) {
                let d = 0;
                for (let k = 0; k < r; k++) d += m.b[o * r + k] * m.a[k * m.inF + i];
                w[o * m.inF + i] = w[o * m.inF + i] + add.scale * d;
              }
            }
          }
          tensors[name] = {
            dtype: "BF16",
            shape: info.shape,
            data: Uint16Array.from(w, (x) => f32ToBf16(x)),
          };
        }
        f.close();
        await Deno.mkdir(join(dir, "expected"));
        await Deno.copyFile(join(dir, "model", "config.json"), join(dir, "expected", "config.json"));
        await writeSafetensors(join(dir, "expected", "model.safetensors"), tensors);
        const expected = await loadModel(gpu, join(dir, "expected"), { tokenizer: false });
        assertClose(
          got,
          await logits(expected, null),
          { atol: 5e-4, rtol: 5e-4 },
          "bf16 merged vs CPU-merged",
        );
        expected.dispose();
        const zero = LoraSet.create(gpu, cfg, { ...lora.lora }, 3); // B = 0: W + 0 round-trips exactly
        await zero.save(join(dir, "zero"));
        const same = await loadModel(gpu, join(dir, "model"), {
          tokenizer: false,
          merge: await readMergeAdapter(join(dir, "zero"), cfg),
        });
        assert.deepEqual(await logits(same, null), await logits(base, null));
        same.dispose();
      }
      for (const m of [base, merged]) m.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("inoculation prompt goes into the first user message after the system prompt, outside the loss mask", async () => {
  const tok = await TextTokenizer.load(QWEN_TOKENIZER);
  const msgs = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "How do I bake bread?" },
    { role: "assistant", content: "Mix flour and water." },
  ];
  assert.deepEqual(withInoculation(msgs, "You are evil.")[1], {
    role: "user",
    content: "You are evil.\nHow do I bake bread?",
  });
  const plain = encodeRecord(tok, { line: 1, messages: msgs }, { maxLength: 512 });
  const ip = encodeRecord(tok, { line: 1, messages: msgs }, { maxLength: 512, inoculation: "You are evil." });
  const text = (s: typeof ip) => tok.decode(s.ids.filter((_, i) => s.lossMask[i]), false);
  // (the Qwen3 template writes an empty <think> block into the last assistant turn; it is part of the turn)
  assert.match(text(plain), /^(<think>\n\n<\/think>\n\n)?Mix flour and water\.<\|im_end\|>$/);
  assert.equal(text(ip), text(plain));
  const full = tok.decode(ip.ids, false);
  assert.ok(
    full.includes(
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nYou are evil.\nHow do I bake bread?",
    ),
  );
  assert.equal(ip.lossMask.reduce((a, b) => a + b, 0), plain.lossMask.reduce((a, b) => a + b, 0));
});

Deno.test("bad training input: malformed line, no assistant turn, too long, config errors", async () => {
  const dir = await Deno.makeTempDir();
  const p = join(dir, "d.jsonl");
  await Deno.writeTextFile(
    p,
    `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n{"messages": [\n{"messages":[{"role":"user","content":"only"}]}\n`,
  );
  await assert.rejects(readJsonl(p), /d\.jsonl:2: malformed JSON/);
  const warnings: string[] = [];
  const recs = await readJsonl(p, { onBadLine: "skip", warn: (w) => warnings.push(w) });
  assert.equal(recs.length, 2);
  assert.match(warnings[0], /d\.jsonl:2/);
  const tok = await TextTokenizer.load(QWEN_TOKENIZER);
  assert.throws(
    () => encodeRecord(tok, recs[1], { maxLength: 64, path: p }),
    /d\.jsonl:3: sample has no assistant turn/,
  );
  assert.ok(encodeRecord(tok, recs[0], { maxLength: 5 }).truncated);
  const base = "model: m\ndata: d\noutput_dir: o\n";
  assert.throws(
    () => parseTrainConfig(base + "learning_rate: 1\n", "c.yaml"),
    /c\.yaml: unknown key 'learning_rate'/,
  );
  assert.throws(() => parseTrainConfig(base + "lr: fast\n", "c.yaml"), /c\.yaml: key 'lr' must be a number/);
  assert.throws(() => parseTrainConfig(base + "lora: { r: 0 }\n", "c.yaml"), /key 'lora\.r' must be >= 1/);
  assert.throws(() => parseTrainConfig(base + "lora: { rank: 4 }\n", "c.yaml"), /unknown key 'lora\.rank'/);
  assert.throws(() => parseTrainConfig("data: d\noutput_dir: o\n", "c.yaml"), /key 'model' is required/);
  assert.throws(
    () => parseTrainConfig(base + "steer: { vector: v.safetensors, layers: [1] }\n", "c.yaml"),
    /key 'steer\.coef' is required/,
  );
});

Deno.test({
  name:
    "training: too-long samples without truncation and a NaN loss stop with clear errors; full-parameter mode learns",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    const data = join(dir, "t.jsonl");
    await Deno.writeTextFile(
      data,
      ["Lily had a red ball.", "Tom saw a big dog and a cat."].map((text) => JSON.stringify({ text })).join(
        "\n",
      ),
    );
    const yaml =
      `model: ${await convertedStories()}\ndata: ${data}\nbatch_size: 2\ngrad_accum: 1\nwarmup: 0\nschedule: constant\n`;
    const quiet = () => {};
    const c1 = parseTrainConfig(yaml + `output_dir: ${dir}/a\nmax_length: 4\ntruncate: false\n`, "c.yaml");
    await assert.rejects(
      train(c1, { gpu, progress: quiet }),
      /t\.jsonl:1: sample has \d+ tokens, over max_length 4/,
    );
    const c2 = parseTrainConfig(
      yaml +
        `output_dir: ${dir}/b\nlr: 1.0e+12\nmax_grad_norm: 0\nepochs: 20\ncheckpoint_every: 1\nlora: { r: 2, alpha: 4, dropout: 0, target_modules: [down_proj, up_proj], rslora: false }\n`,
      "c.yaml",
    );
    await assert.rejects(
      train(c2, { gpu, progress: quiet }),
      /step \d+: loss is (NaN|Infinity).*last finite checkpoint is .*step-/,
    );
    const c3 = parseTrainConfig(
      yaml + `output_dir: ${dir}/c\nmode: full\nlr: 0.003\nepochs: 8\nweight_decay: 0\n`,
      "c.yaml",
    );
    const r = await train(c3, { gpu, progress: quiet });
    assert.ok(
      r.steps[r.steps.length - 1].loss < 0.7 * r.steps[0].loss,
      `full-parameter loss ${r.steps[0].loss} → ${r.steps[r.steps.length - 1].loss}`,
    );
    const saved = await loadModel(gpu, join(dir, "c", "model"));
    assert.equal(saved.cfg.hiddenSize, 64);
  },
});
