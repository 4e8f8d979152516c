// Hooks: steering with coef 0 changes nothing; steering moves h_l by coef * v; sign-forcing gives every
// token the required sign of dL/dh_l · v and the change reaches the LoRA gradients of lower layers.

import assert from "node:assert/strict";
import { loadModel, type Model } from "../models/model.ts";
import { LoraSet } from "../models/lora.ts";
import { stepHooks } from "../train/step_hooks.ts";
import { backward } from "../train/backward.ts";
import { disposeSaved } from "../models/decoder.ts";
import { type Hooks, layerVectors } from "../defence/hooks.ts";
import type { SignForceMode } from "../lib/ops/hooks.ts";
import { gpuTest, randn, testGpu } from "./helpers.ts";
import { convertedStories } from "./fixtures.ts";

const SEQ = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376];

async function step(m: Model, lora: LoraSet, hooks: Hooks) {
  const gpu = m.decoder.gpu, T = SEQ.length;
  const ids = Uint32Array.from(SEQ), targets = new Uint32Array(T), mask = new Float32Array(T);
  for (let t = 0; t < T - 1; t++) [targets[t], mask[t]] = [SEQ[t + 1], 1];
  await gpu.submit();
  gpu.device.queue.writeBuffer(lora.store.g, 0, new Float32Array(lora.store.total));
  const ex = stepHooks(gpu, { lora, hooks, rows: T });
  const { normed, saved } = m.decoder.forward({ ids, batch: 1, t: T, save: true, extras: ex.forward });
  const loss = backward(m.decoder, saved!, normed, { targets, mask, scale: 1 }, ex.backward);
  disposeSaved(saved!);
  const out = {
    loss: await loss.read(gpu),
    grads: new Float32Array(0),
    acts: new Map<number, Float32Array>(),
    dh: new Map<number, Float32Array>(),
  };
  out.grads = new Float32Array(await gpu.read(lora.store.g, 0, lora.store.total * 4));
  for (const [l, t] of ex.activations) out.acts.set(l, await t.read(gpu));
  for (const [l, t] of ex.grads) out.dh.set(l, await t.read(gpu));
  ex.dispose();
  return out;
}

async function setup() {
  const gpu = await testGpu();
  const m = await loadModel(gpu, await convertedStories());
  const lora = LoraSet.create(gpu, m.cfg, {
    r: 4,
    alpha: 8,
    dropout: 0,
    targetModules: ["q_proj", "o_proj", "down_proj"],
    rslora: false,
  }, 2);
  for (const e of lora.store.entries) {
    if (e.name.includes("lora_B")) lora.store.set(e.name, randn(e.numel, e.offset, 0.1));
  }
  const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
  const v = randn(L * d, 42);
  return { gpu, m, lora, L, d, v };
}

Deno.test({
  name: "steering with coef 0 is identical to no steering; coef c moves h_l by exactly c v_l",
  ...gpuTest,
  fn: async () => {
    const { gpu, m, lora, L, d, v } = await setup();
    const vectors = layerVectors(gpu, v, L, d);
    const none = await step(m, lora, { captureActivations: [2] });
    const zero = await step(m, lora, {
      steer: [{ vectors, layers: [2, 3], coef: 0 }],
      captureActivations: [2],
    });
    assert.deepEqual(zero.loss, none.loss);
    assert.deepEqual(zero.grads, none.grads);
    const steered = await step(m, lora, {
      steer: [{ vectors, layers: [2], coef: 1.5 }],
      captureActivations: [2],
    });
    const a = none.acts.get(2)!, b = steered.acts.get(2)!;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(b[i] - a[i] - 1.5 * v[2 * d + (i % d)]) < 1e-5);
    assert.notDeepEqual(steered.loss, none.loss);
  },
});

Deno.test({
  name:
    "sign-forcing: per token s >= 0 (attenuate), <= 0 (amplify), = 0 (neutralize); gradients below change",
  ...gpuTest,
  fn: async () => {
    const { gpu, m, lora, L, d, v } = await setup();
    const unit = layerVectors(gpu, v, L, d, true);
    const l = 3;
    const base = await step(m, lora, { captureGrads: [l] });
    const dots = (g: Float32Array) => {
      const u = unit.rows[l]!, out: number[] = [];
      return (async () => {
        const uv = await u.read(gpu);
        for (let t = 0; t < g.length / d; t++) {
          let s = 0;
          for (let j = 0; j < d; j++) s += g[t * d + j] * uv[j];
          out.push(s);
        }
        return out;
      })();
    };
    const s0 = await dots(base.dh.get(l)!);
    assert.ok(s0.some((x) => x > 1e-6) && s0.some((x) => x < -1e-6), "the unforced gradient has both signs");
    for (const mode of ["attenuate", "amplify", "neutralize"] as SignForceMode[]) {
      const r = await step(m, lora, { signForce: { vectors: unit, layers: [l], mode }, captureGrads: [l] });
      const s = await dots(r.dh.get(l)!);
      s.forEach((x, t) => {
        const scale = Math.abs(s0[t]) + 1e-6;
        if (mode === "attenuate") assert.ok(x >= -1e-5 * scale, `token ${t}: ${x}`);
        if (mode === "amplify") assert.ok(x <= 1e-5 * scale, `token ${t}: ${x}`);
        if (mode === "neutralize") assert.ok(Math.abs(x) <= 1e-5 * scale, `token ${t}: ${x}`);
        if (mode === "attenuate") assert.ok(Math.abs(x - Math.abs(s0[t])) <= 1e-4 * scale + 1e-7);
      });
      // the loss is the same (a backward hook), but gradients of layers below l change
      assert.deepEqual(r.loss, base.loss);
      const below = lora.store.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
      const gb = base.grads.subarray(below.offset, below.offset + below.numel),
        gr = r.grads.subarray(below.offset, below.offset + below.numel);
      assert.notDeepEqual(gr, gb, `${mode} reaches layer-0 parameters`);
      const above = lora.store.get(`base_model.model.model.layers.${l}.mlp.down_proj.lora_B.weight`);
      assert.deepEqual(
        r.grads.subarray(above.offset, above.offset + above.numel),
        base.grads.subarray(above.offset, above.offset + above.numel),
        "parameters above the hook keep their gradient",
      );
    }
  },
});

Deno.test({
  name: "generation with steering: coef 0 leaves greedy output unchanged; prompt/response modes differ",
  ...gpuTest,
  fn: async () => {
    const { gpu, m, L, d, v } = await setup();
    const { generate } = await import("../models/generate.ts");
    const { generationExtras } = await import("../defence/hooks.ts");
    const vectors = layerVectors(gpu, v, L, d);
    const run = async (coef: number, mode: "all" | "prompt" | "response") => {
      const g = generationExtras(gpu, null, { steer: [{ vectors, layers: [1, 2, 3], coef, mode }] });
      const r = await generate(m.decoder, [[1, 403, 407]], { maxNewTokens: 12, extras: g.extras });
      g.dispose();
      return r.tokens[0];
    };
    const plain = (await generate(m.decoder, [[1, 403, 407]], { maxNewTokens: 12 })).tokens[0];
    assert.deepEqual(await run(0, "all"), plain);
    const all = await run(4, "all"), prompt = await run(4, "prompt"), response = await run(4, "response");
    assert.notDeepEqual(all, plain);
    assert.notDeepEqual(prompt, response);
  },
});
