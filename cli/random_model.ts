// `model:random`: a random-weight model of a real checkpoint's shape in the Hub layout.

import { SEED_RANGE } from "../lib/config.ts";
import { fileURLToPath } from "node:url";
import { PRESETS, type RandomDType, writeRandomModel } from "../models/random.ts";
import { need, parseNumber, UsageError } from "./common.ts";

const DEFAULT_TOKENIZER = fileURLToPath(new URL("../../shared/models/qwen3-tokenizer", import.meta.url));

export async function randomModelCommand(a: Record<string, string | boolean | undefined>): Promise<void> {
  const like = need(a.like as string | undefined, "like", "model:random");
  if (!PRESETS[like]) {
    throw new UsageError(`--like: unknown model '${like}' (known: ${Object.keys(PRESETS).join(", ")})`);
  }
  const dtype = (a.dtype as string | undefined) ?? "bf16";
  if (!["bf16", "f16", "f32"].includes(dtype)) {
    throw new UsageError(`--dtype: expected bf16, f16 or f32, got '${dtype}'`);
  }
  const out = need(a.out as string | undefined, "out", "model:random");
  const layers = a.layers === undefined
    ? undefined
    : parseNumber(a.layers as string, "layers", 0, { int: true, min: 1 });
  const seed = parseNumber(a.seed as string | undefined, "seed", 0, SEED_RANGE);
  const shardGb = parseNumber(a["shard-gb"] as string | undefined, "shard-gb", 2, { min: 0.001 });
  const t0 = performance.now();
  const s = await writeRandomModel({
    like,
    dtype: dtype as RandomDType,
    out,
    layers,
    seed,
    shardBytes: Math.floor(shardGb * 2 ** 30),
    tokenizer: (a.tokenizer as string | undefined) ?? DEFAULT_TOKENIZER,
  });
  for (const n of s.notes) console.error(`note: ${n}`);
  console.error(
    `model:random: ${like}${layers ? ` cut to ${layers} layers` : ""}, ${(s.parameters / 1e9).toFixed(3)}B ` +
      `parameters, ${dtype}, ${s.shards} shard(s), ${(s.bytes / 2 ** 30).toFixed(2)} GiB → ${s.out} ` +
      `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
}
