// `demo`: the README's main job (the pipeline: cli/demo_pipeline.ts). Flags point every step at a real model.

import { SEED_RANGE } from "../lib/config.ts";
import { runDemo } from "./demo_pipeline.ts";
import type { JudgeConfig } from "../experiments/common.ts";
import { parseNumber, startGpu } from "./common.ts";

const WORLD_MODEL = new URL("../world/model", import.meta.url).pathname;

export async function demoCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const out = (a.out as string) ?? `runs/demo-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  const judge: JudgeConfig | null = a["judge-url"]
    ? {
      type: "http",
      base_url: a["judge-url"] as string,
      model: (a["judge-model"] as string) ?? "gpt-4.1-mini-2025-04-14",
      api_key_env: (a["judge-key-env"] as string) ?? null,
      cache_dir: null,
      concurrency: 8,
      retries: 5,
      coherence_prompt: null,
    }
    : null;
  const gpu = await startGpu();
  console.error(`demo on ${gpu.caps.description}; results in ${out}`);
  await Deno.mkdir(out, { recursive: true });
  const r = await runDemo({ gpu, runDir: out, progress: (s) => console.error(s) }, {
    model: (a.model as string) ?? WORLD_MODEL,
    out,
    traits: (a.traits as string) ?? null,
    data: (a.data as string) ?? null,
    judge,
    layer: a.layer === undefined ? null : parseNumber(a.layer as string, "layer", 0, { int: true, min: 0 }),
    coef: a.coef === undefined ? null : parseNumber(a.coef as string, "coef", 0),
    quick: !!a.quick,
    full: !!a.full,
    seeds: a.seeds === undefined
      ? (a.full ? 3 : 1)
      : parseNumber(a.seeds as string, "seeds", 1, { int: true, min: 1 }),
    seed: parseNumber(a.seed as string, "seed", 0, SEED_RANGE),
  });
  const s = r.summary as {
    baseline: { trait: number; sem: number; coherence: number };
    after: Record<
      string,
      { trait: number; sem: number; coherence: number; seeds: number; between_seed_sd: number | null }
    >;
    pps: { layer: number; coef: number; source: string };
    signatures: { figure: string; shows: boolean; text: string }[];
    seconds: number;
  };
  const f = (x: number | null | undefined) => (x == null ? "-" : x.toFixed(1));
  console.log(`\nevil score (rule judge, mean ± SEM), coherence:`);
  console.log(
    `  base model          ${f(s.baseline.trait)} ± ${f(s.baseline.sem)}   coherence ${
      f(s.baseline.coherence)
    }`,
  );
  for (const [k, v] of Object.entries(s.after)) {
    const spread = v.seeds > 1 ? `   (${v.seeds} seeds, between-seed SD ${f(v.between_seed_sd)})` : "";
    console.log(
      `  after ${k.padEnd(24)} ${f(v.trait)} ± ${f(v.sem)}   coherence ${f(v.coherence)}${spread}`,
    );
  }
  console.log(`\nPPS at layer ${s.pps.layer}, ε ${s.pps.coef}: ${s.pps.source}`);
  console.log(`\nthe paper's signatures in this run:`);
  for (const g of s.signatures) console.log(`  ${g.shows ? "shows   " : "does not"}  ${g.text}`);
  console.log(`\ndemo finished in ${(s.seconds / 60).toFixed(1)} min`);
  console.log(`report: ${r.report}`);
  console.log(`output folder: ${out}`);
}
