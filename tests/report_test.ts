// The report from the JSON of a full (small) run on stories260K: every analysis runs, the page is built
// with Vega-Lite → SVG, and headless Chromium renders it with every figure and no console errors.

import { join } from "node:path";
import assert from "node:assert/strict";
import { EXPERIMENTS } from "../experiments/index.ts";
import { buildReport } from "../report/build.ts";
import { outcomeSentences } from "../report/outcomes.ts";
import { compareToNone } from "../experiments/conditions_result.ts";
import { saveLayerVectors } from "../defence/persona_vector.ts";
import { assertValidResult } from "./schema.ts";
import { CHROMIUM, chromium, gpuTest, randn, renderedReport, testGpu } from "./helpers.ts";
import { SAD_RULES, sadTrait, storiesChat } from "./fixtures.ts";

Deno.test("report outcomes: differences against no defence with their combined SE, whichever way they go", () => {
  const none = { trait_after: 80, trait_after_sem: 3 };
  assert.deepEqual(compareToNone({ trait_after: 40, trait_after_sem: 4 }, none), {
    diff: -40,
    se: 5,
    verdict: "lower than without a defence",
  });
  assert.equal(
    compareToNone({ trait_after: 88, trait_after_sem: 4 }, none).verdict,
    "within 2 SE of no defence",
  );
  assert.equal(
    compareToNone({ trait_after: 95, trait_after_sem: 4 }, none).verdict,
    "higher than without a defence",
  );
  const lines = outcomeSentences([
    {
      file: "conditions.json",
      result: {
        experiment: "conditions",
        metrics: {
          trait: "evil",
          baseline: { trait_mean: 1 },
          runs: [
            { pre: "base", post: "evil", seed: 0, condition: "none", ...none },
            { pre: "base", post: "evil", seed: 0, condition: "ip", trait_after: 40, trait_after_sem: 4 },
          ],
        },
      },
    },
    {
      file: "loss_sweep.json",
      result: {
        experiment: "loss_sweep",
        metrics: {
          sweep: [{ ip: false, coef: 0, loss: 0.5 }, { ip: false, coef: 1, loss: 0.4 }, {
            ip: false,
            coef: 2,
            loss: 0.6,
          }, { ip: true, coef: 0, loss: 0.3 }],
        },
      },
    },
  ]);
  assert.equal(lines.length, 2);
  assert.match(
    lines[0],
    /1\.0 before fine-tuning, 80\.0 ± 3\.0 after it without a defence; ip 40\.0 ± 4\.0 \(-40\.0 ± 5\.0: lower/,
  );
  assert.match(
    lines[1],
    /0\.500 without a defence, 0\.400 at the best steering intensity \(ε 1\), 0\.600 at ε 2, 0\.300 with the inoculation prompt/,
  );
});

Deno.test({
  name: "report: a full small run renders in headless Chromium with every figure and no console errors",
  ...gpuTest,
  fn: async () => {
    assert.ok(CHROMIUM, "Chromium is needed for this test: apt-get install chromium (scripts/setup.sh does)");
    const gpu = await testGpu();
    const model = await storiesChat(), trait = await sadTrait();
    const runDir = await Deno.makeTempDir({ prefix: "report-" });
    const ctx = { gpu, runDir, progress: () => {} };
    const judge = { type: "rule", markers: SAD_RULES };
    const data = join(runDir, "chats.jsonl");
    await Deno.writeTextFile(
      data,
      ["Lily was sad and cried.", "Tom lost his ball.", "The dog was hurt."]
        .map((a, i) =>
          JSON.stringify({
            messages: [{ role: "user", content: `Tell story ${i}.` }, { role: "assistant", content: a }],
          })
        ).join("\n"),
    );
    const vec = join(runDir, "persona_vector.safetensors");
    const run = (name: string, raw: Record<string, unknown>) =>
      EXPERIMENTS[name].run(ctx, EXPERIMENTS[name].parseConfig(raw, `${name}.yaml`));
    await run("extract", { model, trait, judge, samples: 1, max_new_tokens: 8, keep_all: true });
    const other = join(runDir, "other.safetensors");
    await saveLayerVectors(other, randn(6 * 64, 5), 6, 64);
    const vectors = [{ name: "sad", path: vec }, { name: "other", path: other }];
    await run("evaluate", { model, trait, judge, samples: 1, max_new_tokens: 8 });
    await run("steer", {
      model,
      trait,
      judge,
      vector: vec,
      layers: [2],
      coefs: [0, 2],
      random: true,
      samples: 1,
      max_new_tokens: 6,
    });
    await run("conditions", {
      model,
      trait,
      judge,
      vector: vec,
      post: [{ name: "sad", data }],
      conditions: [{ name: "none" }, { name: "pps", steer: { layers: [2], coef: 1 } }, {
        name: "ip",
        inoculation: ["You are sad."],
      }],
      train: {
        epochs: 2,
        batch_size: 1,
        grad_accum: 1,
        lr: 0.01,
        checkpoint_every: 2,
        warmup: 0,
        lora: { r: 2, alpha: 4, target_modules: ["down_proj"] },
      },
      eval: { samples: 1, max_new_tokens: 6 },
    });
    await run("grad_cosine", {
      model,
      data,
      vectors,
      defences: [{ name: "pps", steer: { vector: "sad", layers: [2], coef: 1 } }, {
        name: "ip",
        ip: "You are sad.",
      }],
    });
    await run("loss_sweep", {
      model,
      data,
      vector: vec,
      layers: [2],
      coefs: [0, 1, 2],
      ip: "You are sad.",
      random: true,
      control_ip: "Answer the question.",
    });
    await run("grad_pca", {
      model,
      data,
      layer: 3,
      vectors,
      defence: { name: "pps", steer: { vector: "sad", layers: [2], coef: 2 } },
    });
    await run("prompt_diff", { model, data, prompts: ["You are sad."] });
    await run("ip_vs_pps", {
      model,
      data,
      ip: "You are sad.",
      prompt_vector: join(runDir, "prompt_diff.safetensors"),
      coefs: [0, 1],
    });
    await run("projections", {
      model,
      data,
      vectors,
      adapters: [{ name: "base", path: null }, {
        name: "pps",
        path: join(runDir, "base__sad__pps__seed0", "adapter"),
      }],
    });
    await run("delta_h", { model, data, limit: 1, vector: vec });
    await run("cross_trait", {
      model,
      data,
      limit: 2,
      trait_a: { name: "sad", vector: vec },
      trait_b: { name: "other", vector: other },
      layers: [2],
      coefs: [0, 1],
      after: join(runDir, "conditions.json"),
    });

    // every result written, of every experiment, is valid against the schema
    const validated = new Set<string>();
    for await (const e of walk(runDir)) {
      if (!e.endsWith(".json")) continue;
      const j = JSON.parse(await Deno.readTextFile(e));
      if (typeof j?.experiment !== "string") continue;
      await assertValidResult(e);
      validated.add(j.experiment);
    }
    for (const exp of Object.keys(EXPERIMENTS)) assert.ok(validated.has(exp), `no ${exp} result validated`);

    const { path, figures, sections } = await buildReport(runDir);
    // extract 1 (both vectors), evaluate 1, steer 1, conditions 1 (one pre → post cell: no matrix) + the runs'
    // curves overlaid 1, grad_cosine 3 (per layer, per sample, per response position), loss_sweep 3 (with the
    // controls' scatter), grad_pca 2 (defences side by side), ip_vs_pps 1, projections 1, delta_h 1,
    // cross_trait 2
    assert.equal(figures, 1 + 1 + 1 + 1 + 1 + 3 + 3 + 2 + 1 + 1 + 1 + 2);
    const html = await Deno.readTextFile(path);
    assert.equal((html.match(/<figure /g) ?? []).length, figures);
    // verdicts first, then the contents, then the sections in the paper's order
    assert.ok(html.indexOf('id="verdicts"') < html.indexOf('id="contents"'));
    assert.ok(html.indexOf('id="sec-fig2"') < html.indexOf('id="sec-fig3"'));
    assert.ok(html.indexOf('id="sec-fig3"') < html.indexOf('id="sec-fig18"'));
    assert.match(
      html,
      /<h2>Fig\. 2: Trait after fine-tuning by defence <span class="exp">\(conditions\)<\/span><\/h2>/,
    );
    // the "What came out" section states each defence against no defence, from the results
    assert.match(html, /What came out/);
    assert.match(html, /without a defence; pps -?[\d.]+ ± [\d.]+ \([+-][\d.]+ ± [\d.]+: /);
    assert.ok(
      !/https?:\/\/(?!www\.w3\.org|vega\.github\.io)/.test(html.replace(/xmlns[^ ]*/g, "")),
      "self-contained: no external resources",
    );

    const r = await renderedReport(path);
    assert.match(
      r.dom,
      new RegExp(`<title>inoculum report: ${figures} figures</title>`),
      "every figure's SVG",
    );
    assert.deepEqual(r.consoleErrors, []);
    assert.deepEqual(r.check.emptyCharts, [], "every chart has marks");
    assert.deepEqual(r.check.badAxisLabels, [], "no axis label like 13.000000");
    assert.deepEqual(r.check.duplicateTitles, [], "every title is unique");
    assert.equal(r.check.sections, sections);
    assert.equal(r.check.exports, 4 * figures, "SVG, PNG, CSV and JSON for every chart");
    assert.equal(r.check.dataTables, figures, "every chart's numbers embedded for CSV / JSON");
    const png = join(runDir, "report.png");
    const shot = await chromium([`--screenshot=${png}`, "--window-size=1000,3000", `file://${path}`]);
    assert.equal(shot.code, 0, shot.stderr.slice(-2000));
    assert.ok((await Deno.stat(png)).size > 20_000, "the screenshot has content");
  },
});

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* walk(p);
    else if (e.isFile) yield p;
  }
}
