// Config pieces shared by the gradient analyses: data, vectors (with a random equal-norm control),
// defences (PPS / IP), and the model with an optional adapter.

import type { Gpu } from "../lib/gpu/context.ts";
import { loadModel, type Model } from "../models/model.ts";
import { LoraSet } from "../models/lora.ts";
import { readJsonl } from "../lib/text/dataset.ts";
import type { DataRecord } from "../lib/text/dataset.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import { type AppliedDefence, steerVectors } from "../research/analysis.ts";
import { randomLike } from "../defence/persona_vector.ts";
import type { ConfigReader } from "./common.ts";
import { type IpSpec, readIp, readSteer, steerLayers, type SteerSpec } from "../defence/defence.ts";

export interface VectorSpec {
  name: string;
  path: string;
}

/** A named defence of an analysis (defence/defence.ts): PPS with `vector` one of the config's `vectors` (by
 * name) or a file, or IP from a bank (each sample draws one prompt, research/analysis.ts drawPrompt). */
export interface DefenceSpec {
  name: string;
  steer: SteerSpec | null;
  ip: IpSpec | null;
}

/** The keys every gradient analysis shares: the model, an optional adapter, and the data. */
export function readBase(
  r: ConfigReader,
  limit = 64,
): { model: string; adapter: string | null; data: string; offset: number; limit: number } {
  return {
    model: r.nonEmpty("model"),
    adapter: r.optStr("adapter"),
    data: r.nonEmpty("data"),
    // records skipped first: a split held out from another analysis' first `limit` (E.6)
    offset: r.num("offset", 0, { int: true, min: 0 }),
    limit: r.num("limit", limit, { int: true, min: 1 }),
  };
}

export function readVectors(r: ConfigReader, key = "vectors"): VectorSpec[] {
  return r.list(key).map((v) => {
    const o = { name: v.str("name"), path: v.str("path") };
    v.done();
    return o;
  });
}

export function readDefence(r: ConfigReader): DefenceSpec {
  const d: DefenceSpec = {
    name: r.str("name"),
    steer: r.nullable("steer", (k) => readSteer(r.sub(k))),
    ip: r.nullable("ip", (k) => readIp(r, k)),
  };
  r.done();
  return d;
}

export interface Loaded {
  model: Model;
  lora: LoraSet | null;
  records: DataRecord[];
  boundaries: number;
  d: number;
  /** vectors by name ([L+1, d]); "random" added when asked */
  vectors: Map<string, Float32Array>;
}

export async function loadAll(
  gpu: Gpu,
  o: {
    model: string;
    adapter: string | null;
    data: string;
    offset?: number;
    limit: number;
    vectors: VectorSpec[];
    random: boolean;
    seed?: number;
  },
): Promise<Loaded> {
  const model = await loadModel(gpu, o.model);
  const boundaries = model.cfg.numLayers + 1, d = model.cfg.hiddenSize;
  const lora = o.adapter ? await LoraSet.load(gpu, model.cfg, o.adapter) : null;
  const offset = o.offset ?? 0;
  const records = (await readJsonl(o.data, { limit: offset + o.limit })).slice(offset).filter((r) =>
    r.messages || r.text !== undefined
  );
  if (!records.length) throw new Error(`${o.data}: no records after offset ${offset}`);
  const vectors = new Map<string, Float32Array>();
  for (const v of o.vectors) vectors.set(v.name, await loadLayerVectors(v.path, boundaries, d));
  if (o.random && o.vectors.length) {
    vectors.set("random", randomLike(vectors.get(o.vectors[0].name)!, boundaries, d, o.seed ?? 12345));
  }
  return { model, lora, records, boundaries, d, vectors };
}

/** A defence spec made concrete: vector resolved by name (or file), layers expanded. */
export async function toDefence(gpu: Gpu, x: Loaded, s: DefenceSpec, coef?: number): Promise<AppliedDefence> {
  const ip = s.ip?.prompts ?? null;
  const ipPlacement = s.ip ? { separator: s.ip.separator, position: s.ip.position } : undefined;
  if (!s.steer) return { ip, ipPlacement };
  const name = s.steer.vector!;
  const vec = x.vectors.get(name) ?? await loadLayerVectors(name, x.boundaries, x.d);
  const layers = steerLayers(s.steer.layers, x.boundaries - 1);
  return {
    ip,
    ipPlacement,
    steer: { vectors: steerVectors(gpu, vec, x.boundaries, x.d), layers, coef: coef ?? s.steer.coef },
  };
}
