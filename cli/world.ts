// `world build [--out DIR] [--seed S]` and `world model [--out DIR] [--seed S] [--epochs N] [--hidden N] [--layers N] [--reduced]`.

import { SEED_RANGE } from "../lib/config.ts";
import { buildWorld } from "../world/build.ts";
import { FULL_SIZE, pretrainWorldModel, REDUCED_SIZE, writeCard } from "../world/model.ts";
import { parseNumber, startGpu, UsageError } from "./common.ts";

export async function worldCommand(
  a: Record<string, string | boolean | undefined>,
  pos: string[],
): Promise<void> {
  const seed = parseNumber(a.seed as string, "seed", 0, SEED_RANGE);
  if (pos[0] === "build") {
    const out = (a.out as string) ?? "runs/world";
    const r = await buildWorld(out, seed);
    console.error(`world: ${r.files.length} files and a tokenizer → ${out}`);
  } else if (pos[0] === "model") {
    const reduced = !!a.reduced;
    const hidden = a.hidden === undefined
      ? null
      : parseNumber(a.hidden as string, "hidden", 64, { int: true, min: 8 });
    const layers = a.layers === undefined
      ? null
      : parseNumber(a.layers as string, "layers", FULL_SIZE.layers, { int: true, min: 1 });
    const out = (a.out as string) ?? (reduced ? "runs/world-model-reduced" : "world/model");
    const size = reduced ? REDUCED_SIZE : {
      ...FULL_SIZE,
      ...(hidden ? { hidden, intermediate: 3 * hidden } : {}),
      ...(layers ? { layers } : {}),
    };
    const gpu = await startGpu();
    const r = await pretrainWorldModel(gpu, {
      out,
      worldDir: `${out}/.world`,
      seed,
      size,
      epochs: parseNumber(a.epochs as string, "epochs", reduced ? 1 : 30, { int: true, min: 1 }),
      maxSteps: reduced ? 8 : undefined,
      evalSamples: reduced ? 1 : 5,
      progress: (s) => console.error(s),
    });
    console.error(
      `world model: ${r.steps} steps, final loss ${r.finalLoss.toFixed(4)}, ${
        (r.seconds / 60).toFixed(1)
      } min → ${out}`,
    );
  } else if (pos[0] === "card") {
    const out = (a.out as string) ?? "world/model";
    const gpu = await startGpu();
    await writeCard(gpu, {
      out,
      worldDir: `${out}/.world`,
      seed,
      evalSamples: 5,
      progress: (s) => console.error(s),
    });
    console.error(`world model card rewritten: ${out}/MODEL_CARD.md`);
  } else {
    throw new UsageError("world: expected 'build', 'model' or 'card'");
  }
}
