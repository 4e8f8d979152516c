// The signature checks (experiments/signatures.ts) on synthetic results: each must pass on a result that
// shows the paper's pattern by more than its stated margin, and fail on one that misses it by a little —
// so none can pass by accident. Plus the statistics they rest on: seed aggregation, the PC1 bootstrap and
// the steering experiment's choice of ε. No GPU.

import assert from "node:assert/strict";
import {
  allChecks,
  checkedLayers,
  classifyConditions,
  fig18Check,
  fig2Check,
  fig3Check,
  fig4abCheck,
  fig4cCheck,
  tablesCheck,
} from "../experiments/signatures.ts";
import { aggregateSeeds, type ConditionRow } from "../experiments/conditions_result.ts";
import { pc1ShareInterval } from "../research/pca.ts";
import { chooseCoefficient } from "../experiments/steer.ts";
import { Rng } from "../lib/rng.ts";

const row = (condition: string, t: number, sem = 1, seed = 0): ConditionRow => ({
  id: `${condition}-${seed}`,
  pre: "base",
  post: "heavy",
  condition,
  seed,
  trait_after: t,
  trait_after_sem: sem,
  coherence_after: 90,
  coherence_after_sem: 1,
});

const conditionsConfig = {
  conditions: [
    { name: "none" },
    { name: "pps", steer: { layers: [3], coef: 3 } },
    { name: "ip", inoculation: { prompts: ["x"] } },
    { name: "random_pps", steer: { layers: [3], coef: 3, random: true } },
  ],
};

Deno.test("signatures: conditions are classified by name, then by kind; sign-forced ones are not defences", () => {
  assert.deepEqual(classifyConditions(conditionsConfig.conditions), {
    none: "none",
    pps: "pps",
    ip: "ip",
    random: "random_pps",
  });
  assert.deepEqual(
    classifyConditions([
      { name: "plain" },
      { name: "none+amplify", sign_force: {} },
      { name: "steered", steer: { vector: null } },
      { name: "prompted", inoculation: {} },
    ]),
    { none: "plain", pps: "steered", ip: "prompted", random: null },
  );
});

Deno.test("signatures: Fig. 2 needs PPS and IP below no defence by > 2 SE of the difference, the random vector not", () => {
  const fig2 = (pps: number, ip: number, rnd: number) =>
    fig2Check({
      config: conditionsConfig,
      metrics: {
        runs: [row("none", 80, 2), row("pps", pps, 2), row("ip", ip, 2), row("random_pps", rnd, 2)],
      },
    })!;
  // 2 SE of the difference: 2 * hypot(2, 2) = 5.66
  assert.equal(fig2(70, 10, 79).ok, true);
  assert.match(fig2(70, 10, 79).text, /PPS 70\.0 \(-10\.0 ± 2\.8\).* — shows the paper's signature/);
  assert.equal(fig2(75, 10, 79).ok, false, "PPS lower by 5 < 5.66 is not lower");
  assert.match(fig2(75, 10, 79).text, /PPS 75\.0 \(-5\.0 ± 2\.8, not lower by more than 2 SE\)/);
  assert.equal(fig2(70, 75, 79).ok, false, "IP within 2 SE");
  assert.equal(fig2(70, 10, 70).ok, false, "the random vector lowering it as much fails the control");
  assert.equal(fig2Check({ config: { conditions: [{ name: "none" }] }, metrics: { runs: [] } }), null);
});

Deno.test("signatures: seeds — the SE is the larger of the within-run and the between-seed one", () => {
  const [a] = aggregateSeeds([row("none", 70, 2, 0), row("none", 80, 2, 1), row("none", 90, 2, 2)]);
  assert.equal(a.seeds, 3);
  assert.equal(a.trait, 80);
  assert.ok(Math.abs(a.within_se - Math.sqrt(12) / 3) < 1e-12);
  assert.equal(a.between_sd, 10);
  assert.ok(Math.abs(a.se - 10 / Math.sqrt(3)) < 1e-12, "between-seed spread dominates");
  const [b] = aggregateSeeds([row("none", 80, 6, 0), row("none", 80.1, 6, 1)]);
  assert.ok(Math.abs(b.se - Math.sqrt(72) / 2) < 1e-12, "within-run SE dominates when seeds agree");
  const [c] = aggregateSeeds([row("none", 80, 2)]);
  assert.equal(c.between_sd, null);
  assert.equal(c.se, 2);
  // a seed spread that makes a difference vanish: PPS 70 ± 2 per run but seeds 55 / 85
  const spread = fig2Check({
    config: conditionsConfig,
    metrics: {
      runs: [row("none", 80, 2, 0), row("none", 80, 2, 1), row("pps", 55, 2, 0), row("pps", 85, 2, 1)],
    },
  })!;
  assert.equal(spread.ok, false);
  assert.match(spread.text, /2 seeds/);
});

/** A grad_cosine result: per sample, per layer 0..L, rows of the trait and the random vector. */
function gradCosine(o: { none: number; random: number; pps: number; ip: number; noise: number; n?: number }) {
  const rng = new Rng(7), rows: Record<string, unknown>[] = [];
  const n = o.n ?? 40, L = 6;
  for (let sample = 0; sample < n; sample++) {
    for (let layer = 0; layer <= L; layer++) {
      const e = () => o.noise * rng.normal();
      const none = o.none + e(), noneRandom = o.random + e();
      for (const [defence, coef, defended] of [["pps", 3, o.pps + e()], ["ip", null, o.ip + e()]] as const) {
        rows.push({ sample, defence, coef, vector: "evil", layer, none, defended });
        rows.push({ sample, defence, coef, vector: "random", layer, none: noneRandom, defended: 0 });
      }
    }
  }
  return {
    config: {
      vectors: [{ name: "evil" }],
      defences: [{ name: "pps", steer: { vector: "evil", layers: [3], coef: 3 } }, { name: "ip", ip: ["x"] }],
    },
    metrics: { rows },
  };
}

Deno.test("signatures: Fig. 3 per layer against 2 SE — none below zero and below the random vector, PPS above, IP near zero", () => {
  assert.deepEqual(checkedLayers(6), [1, 2, 3, 4, 5], "row L (after the final norm) is left out");
  const good = fig3Check(gradCosine({ none: -0.1, random: 0, pps: 0.1, ip: 0, noise: 0.05 }))!;
  assert.equal(good.ok, true, good.text);
  assert.match(
    good.text,
    /below zero by more than 2 SE at 5 of 5 layers \(1\.\.5\) and below the random vector's by more than 2 SE at 5/,
  );
  // the none cosine is negative, but no more than the random vector's: the control fails it
  const sameAsRandom = fig3Check(gradCosine({ none: -0.1, random: -0.1, pps: 0.1, ip: 0, noise: 0.05 }))!;
  assert.equal(sameAsRandom.ok, false);
  assert.match(sameAsRandom.text, /below the random vector's by more than 2 SE at [0-2]\b/);
  // the none cosine within noise of zero (n = 40, noise 0.05: SE ~ 0.008)
  assert.equal(
    fig3Check(gradCosine({ none: -0.005, random: 0.02, pps: 0.1, ip: 0, noise: 0.05 }))!.ok,
    false,
  );
  // IP still clearly negative is not "near zero"
  assert.equal(fig3Check(gradCosine({ none: -0.1, random: 0, pps: 0.1, ip: -0.05, noise: 0.05 }))!.ok, false);
  // PPS only slightly positive, within noise
  assert.equal(fig3Check(gradCosine({ none: -0.1, random: 0, pps: 0.004, ip: 0, noise: 0.05 }))!.ok, false);
  // without the random vector the none part cannot hold
  const noRandom = gradCosine({ none: -0.1, random: 0, pps: 0.1, ip: 0, noise: 0.05 });
  noRandom.metrics.rows = noRandom.metrics.rows.filter((r) => r.vector !== "random");
  assert.equal(fig3Check(noRandom)!.ok, false);
});

/** A loss_sweep result with per-sample losses: unsteered `base`, IP, the largest ε, the controls. */
function lossSweep(o: { ip: number; top: number; control: number; random: number; noise: number }) {
  const rng = new Rng(3), per_sample: Record<string, unknown>[] = [];
  const sweep: Record<string, unknown>[] = [];
  for (let sample = 0; sample < 24; sample++) {
    const base = 1 + 0.3 * rng.normal();
    const at = (d: number) => base + d + o.noise * rng.normal();
    const push = (v: Record<string, unknown>, loss: number) =>
      per_sample.push({
        sample,
        ip: false,
        control_ip: false,
        vector: "trait",
        cos: [],
        ...v,
        loss,
        loss_none: base,
      });
    push({ coef: 0 }, base);
    push({ coef: 5 }, at(o.top));
    push({ ip: true, coef: 0 }, at(o.ip));
    push({ vector: "random", coef: 5 }, at(o.random));
    push({ control_ip: true, coef: 0 }, at(o.control));
  }
  for (const v of [{ coef: 0 }, { coef: 5 }, { ip: true, coef: 0 }]) {
    sweep.push({ ip: false, control_ip: false, vector: "trait", loss: 0, loss_none: 0, cos: [], ...v });
  }
  return { config: {}, metrics: { per_sample, sweep } };
}

Deno.test("signatures: Fig. 4c — IP lowers and the largest ε raises the loss, paired over samples against 2 SE", () => {
  assert.equal(fig4cCheck(lossSweep({ ip: -0.2, top: 0.5, control: 0, random: 0.5, noise: 0.05 }))!.ok, true);
  // the largest ε raises the loss by less than 2 SE (noise 0.05 over 24 samples: SE ~ 0.01)
  const flat = fig4cCheck(lossSweep({ ip: -0.2, top: 0.01, control: 0, random: 0.5, noise: 0.05 }))!;
  assert.equal(flat.ok, false, flat.text);
  assert.equal(
    fig4cCheck(lossSweep({ ip: 0.01, top: 0.5, control: 0, random: 0.5, noise: 0.05 }))!.ok,
    false,
  );
  // the old test (the largest ε above the lowest steered loss) would pass this one: the loss falls with ε
  assert.equal(
    fig4cCheck(lossSweep({ ip: -0.2, top: -0.3, control: 0, random: 0.5, noise: 0.05 }))!.ok,
    false,
  );
});

Deno.test("signatures: Fig. 4a-b — IP below its control prompt, PPS not below the random vector", () => {
  assert.equal(
    fig4abCheck(lossSweep({ ip: -0.2, top: 0.5, control: 0, random: 0.5, noise: 0.05 }))!.ok,
    true,
  );
  assert.equal(
    fig4abCheck(lossSweep({ ip: -0.2, top: 0.5, control: -0.2, random: 0.5, noise: 0.05 }))!.ok,
    false,
    "a control prompt lowering the loss as much",
  );
  assert.equal(
    fig4abCheck(lossSweep({ ip: -0.2, top: 0.1, control: 0, random: 0.5, noise: 0.05 }))!.ok,
    false,
    "the trait vector lowering the loss against the random one",
  );
});

Deno.test("signatures: Fig. 18 — PPS's PC1 bootstrap interval must lie above IP's", () => {
  const pca = (kind: "steer" | "ip", pc1: number, lo: number, hi: number) => ({
    file: kind,
    result: {
      experiment: "grad_pca",
      config: { defence: { [kind]: {} } },
      metrics: { explained: [pc1, 0.1], pc1_interval: { lo, hi, level: 0.95, reps: 500 } },
    },
  });
  assert.equal(fig18Check([pca("steer", 0.6, 0.5, 0.7), pca("ip", 0.3, 0.2, 0.4)])!.ok, true);
  assert.equal(fig18Check([pca("steer", 0.6, 0.35, 0.7), pca("ip", 0.3, 0.2, 0.4)])!.ok, false, "overlap");
  assert.equal(fig18Check([pca("steer", 0.3, 0.2, 0.4), pca("ip", 0.6, 0.5, 0.7)])!.ok, false);
  const noInterval = pca("steer", 0.6, 0, 0);
  delete (noInterval.result.metrics as { pc1_interval?: unknown }).pc1_interval;
  assert.equal(fig18Check([noInterval, pca("ip", 0.3, 0.2, 0.4)])!.ok, false);
});

Deno.test("PC1 share bootstrap: one direction gives [1, 1]; isotropic rows give a wide interval well below 1", () => {
  const rng = new Rng(1), d = 10;
  const dir = Float64Array.from({ length: d }, () => rng.normal());
  const oneDir = Array.from({ length: 30 }, () => {
    const a = rng.normal();
    return dir.map((x) => a * x);
  });
  const one = pc1ShareInterval(oneDir, { reps: 200 });
  assert.ok(one.lo > 0.999 && one.hi <= 1 + 1e-9, JSON.stringify(one));
  const iso = pc1ShareInterval(
    Array.from({ length: 30 }, () => Float64Array.from({ length: d }, () => rng.normal())),
    {
      reps: 200,
    },
  );
  assert.ok(iso.hi < 0.5 && iso.lo > 0.1 && iso.hi - iso.lo > 0.02, JSON.stringify(iso));
  assert.equal(iso.reps, 200);
});

Deno.test("signatures: Tables 1-2 — attenuate below, amplify above, neutralize within 2 SE; random moves nothing", () => {
  const sf = (att: number, amp: number, neu: number, rndAmp = 74) => ({
    config: {},
    metrics: {
      runs: [
        row("none", 76, 2),
        row("none+attenuate", att, 2),
        row("none+amplify", amp, 1),
        row("none+neutralize", neu, 2),
        row("none+attenuate-random", 78, 2),
        row("none+amplify-random", rndAmp, 2),
        row("none+neutralize-random", 75, 2),
      ],
    },
  });
  const good = tablesCheck(sf(9, 94, 78))!;
  assert.equal(good.ok, true, good.text);
  assert.match(good.text, /coherence 90\.0/);
  assert.equal(tablesCheck(sf(72, 94, 78))!.ok, false, "attenuate within 2 SE");
  assert.equal(tablesCheck(sf(9, 79, 78))!.ok, false, "amplify above by 3 < 2 * hypot(1, 2)");
  assert.equal(tablesCheck(sf(9, 94, 60))!.ok, false, "neutralize moving it fails");
  assert.equal(tablesCheck(sf(9, 94, 78, 90))!.ok, false, "the random vector moving it fails");
  assert.equal(tablesCheck({ config: {}, metrics: { runs: [row("none", 76)] } }), null);
});

Deno.test("signatures: allChecks collects each figure's check from a run's results", () => {
  const results = [
    {
      file: "conditions.json",
      result: {
        experiment: "conditions",
        config: conditionsConfig,
        metrics: { runs: [row("none", 80), row("pps", 60), row("none+attenuate", 10)] },
      },
    },
    {
      file: "grad_cosine.json",
      result: {
        experiment: "grad_cosine",
        ...gradCosine({ none: -0.1, random: 0, pps: 0.1, ip: 0, noise: 0.05 }),
      },
    },
  ];
  assert.deepEqual(allChecks(results).map((c) => c.figure), ["Fig. 2", "Fig. 3", "Tables 1, 2"]);
});

Deno.test("steer: the chosen ε is the smallest grid value reaching the target, else the largest (not reached)", () => {
  const curve = [{ coef: 0, trait: 0 }, { coef: 3, trait: 72.9 }, { coef: 1.5, trait: 2.1 }, {
    coef: 5,
    trait: 99,
  }];
  assert.deepEqual(chooseCoefficient(curve, 71.5), { coef: 3, reached: true });
  assert.deepEqual(chooseCoefficient(curve, 73), { coef: 5, reached: true });
  assert.deepEqual(chooseCoefficient(curve, 99.5), { coef: 5, reached: false });
  assert.deepEqual(chooseCoefficient([{ coef: 2, trait: null }, { coef: 4, trait: 80 }], 50), {
    coef: 4,
    reached: true,
  });
  assert.equal(chooseCoefficient(curve, null), null);
  assert.equal(chooseCoefficient([{ coef: 0, trait: 0 }], 10), null, "ε = 0 is not a choice");
});
