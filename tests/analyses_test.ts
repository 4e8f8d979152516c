// The mechanistic analyses end to end on stories260K (chat template fixture), each writing
// schema-valid JSON; and the known answers: steering along v with a large coefficient pushes the
// mean gradient cosine with v upward; a one-step update moves h against the gradient.

import { join } from "node:path";
import assert from "node:assert/strict";
import { assertValidResult } from "./schema.ts";
import { EXPERIMENTS } from "../experiments/index.ts";
import { saveLayerVectors } from "../defence/persona_vector.ts";
import { gpuTest, randn, testGpu } from "./helpers.ts";
import { storiesChat } from "./fixtures.ts";

const validate = assertValidResult;

Deno.test({
  name: "gradient analyses: cosines, loss sweep, PCA, IP vs PPS, projections, Δh vs ∇h",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const model = await storiesChat();
    const runDir = await Deno.makeTempDir({ prefix: "analyses-" });
    const data = join(runDir, "chats.jsonl");
    await Deno.writeTextFile(
      data,
      [
        "Lily was sad and cried.",
        "Tom lost his ball and cried.",
        "The dog was hurt and sad.",
        "Sue found a big red ball.",
      ]
        .map((a, i) =>
          JSON.stringify({
            messages: [{ role: "user", content: `Tell story ${i}.` }, { role: "assistant", content: a }],
          })
        ).join("\n"),
    );
    const vec = join(runDir, "v.safetensors"), other = join(runDir, "w.safetensors");
    await saveLayerVectors(vec, randn(6 * 64, 7, 0.5), 6, 64);
    await saveLayerVectors(other, randn(6 * 64, 8, 0.5), 6, 64);
    const ctx = { gpu, runDir, progress: () => {} };
    const run = async (name: string, raw: Record<string, unknown>) => {
      const e = EXPERIMENTS[name];
      await e.run(ctx, e.parseConfig(raw, `${name}.yaml`));
      return await validate(join(runDir, `${name}.json`));
    };
    const vectors = [{ name: "trait", path: vec }, { name: "other", path: other }];

    const gc = await run("grad_cosine", {
      model,
      data,
      vectors,
      defences: [{ name: "pps", steer: { vector: "trait", layers: [2], coef: 1 } }, {
        name: "ip",
        ip: "You are sad.",
      }],
      coefs: [0, 1],
    });
    const at = (defence: string, coef: number | null, layer: number) =>
      gc.metrics.layer_means.find((
        r: { defence: string; coef: number | null; vector: string; layer: number },
      ) => r.defence === defence && r.coef === coef && r.vector === "trait" && r.layer === layer);
    // coef 0 is the same run as no defence
    assert.ok(Math.abs(at("pps", 0, 2).defended - at("pps", 0, 2).none) < 1e-6);
    // a strong push along v (|coef v| about the size of h here) turns the loss gradient at the steered
    // layer towards v: the loss wants the push undone. (Far larger pushes drive the cosine back to ~0:
    // RMSNorm is scale-invariant, so the gradient loses its component along a dominant direction.)
    assert.ok(at("pps", 1, 2).defended > at("pps", 1, 2).none + 0.05, JSON.stringify(at("pps", 1, 2)));
    assert.ok(gc.metrics.layer_means.some((r: { vector: string }) => r.vector === "random"));

    // over training checkpoints: the same analysis on each adapter
    const { LoraSet } = await import("../models/lora.ts");
    const { loadModel } = await import("../models/model.ts");
    const base = await loadModel(gpu, model, { tokenizer: false });
    const ad = LoraSet.create(gpu, base.cfg, {
      r: 2,
      alpha: 4,
      dropout: 0,
      targetModules: ["down_proj"],
      rslora: false,
    }, 1);
    for (const e of ad.store.entries) {
      if (e.name.includes("lora_B")) ad.store.set(e.name, randn(e.numel, 3, 0.5));
    }
    const ck = join(runDir, "ck1");
    await ad.save(ck);
    const gc2 = await run("grad_cosine", {
      model,
      data,
      limit: 2,
      vectors,
      random: false,
      defences: [{ name: "pps", steer: { vector: "trait", layers: [2], coef: 1 } }],
      checkpoints: [{ name: "step-1", path: ck }],
    });
    assert.equal(gc2.metrics.over_checkpoints.length, 1);
    assert.notDeepEqual(gc2.metrics.over_checkpoints[0].layer_means, gc2.metrics.layer_means);

    const ls = await run("loss_sweep", {
      model,
      data,
      vector: vec,
      layers: [2],
      coefs: [0, 5, 20],
      ip: "You are sad.",
    });
    const sw = (ip: boolean, coef: number) =>
      ls.metrics.sweep.find((s: { ip: boolean; coef: number }) => s.ip === ip && s.coef === coef);
    assert.ok(Math.abs(sw(false, 0).loss - sw(false, 0).loss_none) < 1e-6);
    assert.ok(
      sw(false, 20).loss > sw(false, 0).loss,
      "pushing hard along a random direction raises the loss",
    );

    const pca = await run("grad_pca", {
      model,
      data,
      layer: 3,
      vectors,
      defence: { name: "pps", steer: { vector: "trait", layers: [2], coef: 10 } },
    });
    assert.ok(pca.metrics.explained.length >= 1);
    assert.ok(pca.metrics.explained.reduce((a: number, b: number) => a + b, 0) <= 1 + 1e-9);
    assert.ok(pca.metrics.component_cosines[0].trait >= 0, "oriented to the trait vector");

    await EXPERIMENTS.prompt_diff.run(
      ctx,
      EXPERIMENTS.prompt_diff.parseConfig({ model, data, prompts: ["You are sad."] }, "pd.yaml"),
    );
    const ivp = await run("ip_vs_pps", {
      model,
      data,
      ip: "You are sad.",
      prompt_vector: join(runDir, "prompt_diff.safetensors"),
      coefs: [0, 1],
    });
    assert.equal(ivp.metrics.sweep.length, 2);

    const pr = await run("projections", { model, data, adapters: [{ name: "base", path: null }], vectors });
    assert.equal(pr.metrics.projections.length, 3 * 6);

    const dh = await run("delta_h", {
      model,
      data,
      limit: 2,
      vector: vec,
      lr: 1e-3,
      defences: [{ name: "pps", steer: { vector: "trait", layers: [2], coef: 4 } }],
    });
    const last = dh.metrics.layer_means.find((r: { defence: string; layer: number }) =>
      r.defence === "none" && r.layer === 5
    );
    assert.ok(last.cos_grad < 0, `one descent step moves h against dL/dh: ${last.cos_grad}`);
  },
});
