// Whole-model gradients: LoRA A/B gradients and dL/dh_l at several layers, from the GPU backward
// pass, against central finite differences of the f64 reference model (tests/ref/model.ts).
// Tolerance: |gpu - fd| <= 3e-5 + 3e-3 |fd| (f32 forward/backward vs f64 differences, h = 1e-4).

import { join } from "node:path";
import assert from "node:assert/strict";
import { loadModel, type Model } from "../models/model.ts";
import { LoraSet, peftName } from "../models/lora.ts";
import { stepHooks } from "../train/step_hooks.ts";
import { backward } from "../train/backward.ts";
import { disposeSaved } from "../models/decoder.ts";
import { type RefExtras, refLoss } from "./ref/model.ts";
import { assertClose, gpuTest, randn, rng, testGpu } from "./helpers.ts";
import { Tensor } from "../lib/tensor.ts";
import { convertedStories, readAllF32, writeTinyQwen2 } from "./fixtures.ts";

const TOL = { atol: 3e-5, rtol: 3e-3 };

async function checkModel(m: Model, W: Map<string, Float32Array>, seqs: number[][], seed: number) {
  const gpu = m.decoder.gpu, cfg = m.cfg;
  const lora = LoraSet.create(gpu, cfg, {
    r: 4,
    alpha: 8,
    dropout: 0,
    targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    rslora: false,
  }, seed);
  // B = 0 at init would make every A gradient zero: use random B
  const host = new Map<string, Float32Array>();
  for (const e of lora.store.entries) {
    const v = e.name.includes("lora_B")
      ? randn(e.numel, seed + e.offset, 0.2)
      : await lora.store.read(e.name);
    lora.store.set(e.name, v);
    host.set(e.name, v);
  }
  const T = Math.max(...seqs.map((s) => s.length)), B = seqs.length, rows = B * T;
  const ids = new Uint32Array(rows), targets = new Uint32Array(rows), mask = new Float32Array(rows);
  const masks = seqs.map((s) => s.map((_, i) => (i < s.length - 1 && i !== 2 ? 1 : 0)));
  seqs.forEach((s, b) => {
    ids.set(s, b * T);
    for (let t = 0; t < s.length - 1; t++) {
      targets[b * T + t] = s[t + 1];
      mask[b * T + t] = masks[b][t];
    }
  });
  const layers = [0, 1, cfg.numLayers];
  const ex = stepHooks(gpu, { lora, rows, hooks: { captureGrads: layers } });
  const { normed, saved } = m.decoder.forward({ ids, batch: B, t: T, save: true, extras: ex.forward });
  const lossT = backward(m.decoder, saved!, normed, { targets, mask, scale: 1 }, ex.backward);
  const gpuLoss = (await lossT.read(gpu)).reduce((a, b) => a + b, 0);
  disposeSaved(saved!);

  const refExtras = (over?: (name: string, v: Float32Array) => Float32Array): RefExtras => {
    const mods = new Map<string, { a: Float32Array; b: Float32Array }>();
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const mod of lora.lora.targetModules) {
        const [an, bn] = [peftName(l, mod, "A"), peftName(l, mod, "B")];
        mods.set(`${l}.${mod}`, {
          a: over ? over(an, host.get(an)!) : host.get(an)!,
          b: over ? over(bn, host.get(bn)!) : host.get(bn)!,
        });
      }
    }
    return { lora: { scale: lora.scale, r: 4, mods } };
  };
  const total = (x: RefExtras, perturb?: { b: number; layer: number; delta: Float64Array }) =>
    seqs.reduce(
      (acc, s, b) => acc + refLoss(cfg, W, s, masks[b], perturb && perturb.b === b ? { ...x, perturb } : x),
      0,
    );
  const base = total(refExtras());
  assert.ok(
    Math.abs(gpuLoss - base) < 1e-4 * Math.max(1, Math.abs(base)),
    `loss ${gpuLoss} vs reference ${base}`,
  );

  const h = 1e-4, r = rng(seed);
  const close = (g: number, fd: number, what: string) =>
    assert.ok(
      Math.abs(g - fd) <= TOL.atol + TOL.rtol * Math.abs(fd),
      `${what}: gpu ${g} vs finite difference ${fd}`,
    );
  // LoRA parameters: a few entries of a few tensors
  const names = lora.store.entries.map((e) => e.name);
  for (let c = 0; c < 10; c++) {
    const name = names[Math.floor(r() * names.length)];
    const grad = await lora.store.readGrad(name);
    const i = Math.floor(r() * grad.length);
    const bump = (d: number) => refExtras((n, v) => n === name ? v.map((x, k) => k === i ? x + d : x) : v);
    const fd = (total(bump(h)) - total(bump(-h))) / (2 * h);
    close(grad[i], fd, `${name}[${i}]`);
  }
  // residual-stream gradients
  const d = cfg.hiddenSize, x0 = refExtras();
  for (const l of layers) {
    const g = await ex.grads.get(l)!.read(gpu);
    for (let c = 0; c < 4; c++) {
      const b = Math.floor(r() * B), t = Math.floor(r() * (seqs[b].length - 1)), j = Math.floor(r() * d);
      const delta = (s: number) => {
        const dd = new Float64Array(seqs[b].length * d);
        dd[t * d + j] = s;
        return { b, layer: l, delta: dd };
      };
      const fd = (total(x0, delta(h)) - total(x0, delta(-h))) / (2 * h);
      close(g[(b * T + t) * d + j], fd, `dL/dh_${l}[b${b}, t${t}, ${j}]`);
    }
  }
  ex.dispose();
  lora.store.destroy();
}

Deno.test({
  name: "tiny Qwen2: LoRA gradients and dL/dh_l match finite differences of the f64 reference",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "tiny-qwen2-grad-" });
    await writeTinyQwen2(dir, "F32");
    const m = await loadModel(gpu, dir, { tokenizer: false });
    await checkModel(m, await readAllF32(join(dir, "model.safetensors")), [
      [5, 17, 99, 0, 42, 42, 7, 100, 3],
      [1, 2, 3, 50, 60, 70],
    ], 3);
  },
});

Deno.test({
  name: "stories260K: LoRA gradients and dL/dh_l match finite differences of the f64 reference",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await convertedStories();
    const m = await loadModel(gpu, dir);
    await checkModel(m, await readAllF32(join(dir, "model.safetensors")), [[
      1,
      403,
      407,
      261,
      378,
      432,
      383,
      286,
    ], [1, 376, 298, 315, 421]], 5);
  },
});

Deno.test({
  name:
    "the LM head on the loss rows only, and activation checkpointing, give the loss and gradients of the " +
    "plain step (atol 1e-6; checkpointing bit for bit)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const m = await loadModel(gpu, await convertedStories());
    const cfg = m.cfg, B = 2, T = 24, rows = B * T;
    const ids = Uint32Array.from({ length: rows }, (_, i) => 1 + (i * 37) % 500);
    const targets = Uint32Array.from({ length: rows }, (_, i) => (i * 11 + 3) % 500);
    // a chat-like mask: the first 15 tokens of each row are the prompt
    const mask = Float32Array.from({ length: rows }, (_, i) => (i % T) >= 15 && (i % T) < T - 1 ? 1 : 0);
    const run = async (o: { allRows?: boolean; checkpoint?: boolean }) => {
      const lora = LoraSet.create(gpu, cfg, {
        r: 4,
        alpha: 8,
        dropout: 0.1,
        targetModules: ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rslora: false,
      }, 7);
      for (const e of lora.store.entries) {
        if (e.name.includes("lora_B")) lora.store.set(e.name, randn(e.numel, e.offset, 0.2));
      }
      const ex = stepHooks(gpu, { lora, rows, dropoutSeed: 99, hooks: { captureGrads: [0, 3] } });
      const { normed, saved } = m.decoder.forward({
        ids,
        batch: B,
        t: T,
        save: true,
        checkpoint: o.checkpoint,
        extras: ex.forward,
      });
      const lossT = backward(
        m.decoder,
        saved!,
        normed,
        { targets, mask, scale: 1, allRows: o.allRows },
        ex.backward,
      );
      disposeSaved(saved!);
      const [loss, g0, g3, grads] = await Tensor.readMany(gpu, [
        lossT,
        ex.grads.get(0)!,
        ex.grads.get(3)!,
        Tensor.view(lora.store.g, 0, [lora.store.total]),
      ]);
      lossT.dispose();
      for (const t of ex.grads.values()) t.dispose();
      ex.dispose();
      lora.store.destroy();
      return { loss, g0, g3, grads };
    };
    const all = await run({ allRows: true }), sel = await run({}), ck = await run({ checkpoint: true });
    for (const k of ["loss", "g0", "g3", "grads"] as const) {
      assertClose(sel[k], all[k], { atol: 1e-6 }, `loss rows only: ${k}`);
      assert.deepEqual([...ck[k]], [...sel[k]], `checkpointing: ${k} bit for bit`);
    }
    assert.ok(sel.loss.some((x) => x > 0) && sel.loss.filter((_, i) => mask[i] === 0).every((x) => x === 0));
  },
});
