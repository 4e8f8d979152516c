// The study's central noun, in one place: a defence against picking up a trait during fine-tuning, as
// configs and command lines state it — PPS (steering), IP (an inoculation prompt bank), sign-forcing of
// dL/dh — with one type per part, one parser for every YAML that names one (training configs, conditions,
// analyses, evaluations) and one resolution of layer lists against a model. The GPU side (vectors
// uploaded, hooks recorded) is defence/hooks.ts.

import type { ConfigReader } from "../lib/config.ts";
import { parseTrait } from "../lib/text/trait.ts";
import { IP_POSITIONS, type IpPosition } from "../lib/text/dataset.ts";
import type { SignForceMode } from "../lib/ops/hooks.ts";

export type { SignForceMode };
export const SIGN_FORCE_MODES: readonly SignForceMode[] = ["attenuate", "amplify", "neutralize"];
export type SteerPhase = "all" | "prompt" | "response";

/** PPS: add coef · v_l to the residual stream at these layers. */
export interface SteerSpec {
  /** a vector file (or, in analyses, the name of one of the config's vectors); null = the config's own */
  vector: string | null;
  /** a Gaussian vector with the given vector's per-layer norms instead (the random-vector control);
   * present only where the context allows it (a conditions cell) */
  random?: boolean;
  /** boundaries 0..L; "all" = every one */
  layers: number[] | "all";
  coef: number;
  /** generation only: steer the prompt, the response or both (absent = all) */
  mode?: SteerPhase;
}

/** IP: a prompt drawn from the bank per sample (and epoch), put in front of the first user message, in
 * front of the system prompt, or in its place (lib/text/dataset.ts IpPosition). */
export interface IpSpec {
  prompts: string[];
  separator: string;
  position: IpPosition;
}

/** Sign-forcing: dL/dh_l's component along the unit vector forced >= 0, <= 0 or to 0. */
export interface SignForceSpec {
  vector: string | null;
  random?: boolean;
  /** "all" = the transformer layers 1..L-1 (E.3) */
  layers: number[] | "all";
  mode: SignForceMode;
}

export interface Defence {
  steer: SteerSpec | null;
  ip: IpSpec | null;
  signForce: SignForceSpec | null;
}

/** What a context allows: a training config names its vector, a conditions cell may use the sweep's. */
export interface DefenceRules {
  /** `vector` may be left out (null: the surrounding config's vector) */
  vectorOptional?: boolean;
  /** `random: true` allowed */
  random?: boolean;
  /** steering `mode` (prompt / response) allowed: generation and evaluation */
  phase?: boolean;
}

function layerList(r: ConfigReader, key: string, dflt?: "all"): number[] | "all" {
  const v = r.any(key);
  if (v === "all" || (v === undefined && dflt === "all")) return "all";
  const list = r.intList(key);
  if (list.some((l) => l < 0)) {
    throw new Error(
      `${r.file}: key '${r.path(key)}' must be layer indices >= 0 or 'all', found ${JSON.stringify(v)}`,
    );
  }
  return list;
}

function vectorOf(r: ConfigReader, rules: DefenceRules): string | null {
  return rules.vectorOptional ? r.optStr("vector") : r.nonEmpty("vector");
}

/** `steer: { vector, layers, coef[, random][, mode] }` */
export function readSteer(r: ConfigReader, rules: DefenceRules = {}): SteerSpec {
  const s: SteerSpec = {
    vector: vectorOf(r, rules),
    ...(rules.random ? { random: r.bool("random", false) } : {}),
    layers: layerList(r, "layers"),
    coef: r.num("coef"),
    ...(rules.phase ? { mode: r.oneOf("mode", ["all", "prompt", "response"] as const, "all") } : {}),
  };
  r.done();
  return s;
}

/**
 * `inoculation:` (or `ip:`) — a bank: a prompt, a list of prompts, `{ trait: FILE[, count: k] }` — or a
 * mapping `{ prompts: <bank>, separator, position }`.
 */
export function readIp(r: ConfigReader, key: string): IpSpec {
  const v = r.any(key);
  const isMapping = v && typeof v === "object" && !Array.isArray(v) && "prompts" in v;
  if (!isMapping) return { prompts: readPromptBank(r, key), separator: "\n", position: "user" };
  const s = r.sub(key);
  const ip: IpSpec = {
    prompts: readPromptBank(s, "prompts"),
    separator: s.str("separator", "\n"),
    position: s.oneOf("position", IP_POSITIONS, "user"),
  };
  if (ip.prompts.some((p) => !p)) {
    throw new Error(`${r.file}: key '${s.path("prompts")}' has an empty prompt`);
  }
  s.done();
  return ip;
}

/** `sign_force: { mode[, vector][, layers][, random] }` */
export function readSignForce(r: ConfigReader, rules: DefenceRules = {}): SignForceSpec {
  const s: SignForceSpec = {
    vector: vectorOf(r, rules),
    ...(rules.random ? { random: r.bool("random", false) } : {}),
    layers: layerList(r, "layers", "all"),
    mode: r.oneOf("mode", SIGN_FORCE_MODES),
  };
  r.done();
  return s;
}

/** The three parts under their YAML keys (`steer`, `ipKey`, `sign_force`), each optional. */
export function readDefence(r: ConfigReader, rules: DefenceRules = {}, ipKey = "inoculation"): Defence {
  return {
    steer: r.nullable("steer", (k) => readSteer(r.sub(k), rules)),
    ip: r.nullable(ipKey, (k) => readIp(r, k)),
    signForce: r.nullable("sign_force", (k) => readSignForce(r.sub(k), rules)),
  };
}

/** Steering layers as indices, each a boundary the model has (0..numLayers); "all" = every one. */
export function steerLayers(layers: number[] | "all", numLayers: number, what = "steering"): number[] {
  const ls = layers === "all" ? Array.from({ length: numLayers + 1 }, (_, l) => l) : layers;
  checkLayers(ls, numLayers, what);
  return ls;
}

/**
 * Sign-forcing layers as indices: "all" is E.3's "all transformer layers (1-27)" of a 28-layer model —
 * every boundary between two decoder layers, 1..L-1, not the embedding (0) nor the last layer's output.
 */
export function signForceLayers(layers: number[] | "all", numLayers: number): number[] {
  const ls = layers === "all" ? Array.from({ length: Math.max(0, numLayers - 1) }, (_, i) => i + 1) : layers;
  checkLayers(ls, numLayers, "sign-forcing");
  return ls;
}

/** Every layer a boundary the model has, 0..numLayers: the one range check of a layer list. */
export function checkLayers(ls: number[], numLayers: number, what: string): void {
  for (const l of ls) {
    if (!Number.isInteger(l) || l < 0 || l > numLayers) {
      throw new Error(`${what} layer ${l} is out of range 0..${numLayers} (the model's layer boundaries)`);
    }
  }
}

/**
 * A bank of prompts (inoculation / IP prompts): a string, a list of strings, or `{ trait: FILE }` — the
 * positive instructions of a persona-vectors trait file (the paper's evil IP prompts, C.3, are exactly
 * evil.json's five); `{ trait: FILE, count: k }` takes the first k (Figure 8's bank sizes). Empty banks
 * are an error.
 */
export function readPromptBank(r: ConfigReader, key: string): string[] {
  const v = r.any(key);
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) {
    if (!v.length || !v.every((x) => typeof x === "string")) {
      r.fail(key, "a non-empty list of strings", v);
    }
    return v as string[];
  }
  const o = v as { trait?: unknown; count?: unknown };
  const keysOk = v && typeof v === "object" && Object.keys(v).every((k) => k === "trait" || k === "count");
  if (keysOk && typeof o.trait === "string") {
    const path = o.trait;
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(Deno.readTextFileSync(path));
    } catch (e) {
      throw new Error(
        `${r.file}: key '${r.path(key)}.trait': cannot read ${path}: ${(e as Error).message}`,
      );
    }
    const all = parseTrait(raw, path).instructions.map((i) => i.pos);
    if (o.count === undefined) return all;
    if (!Number.isInteger(o.count) || (o.count as number) < 1 || (o.count as number) > all.length) {
      r.fail(
        `${key}.count`,
        `an integer in 1..${all.length} (${path} has ${all.length} prompts)`,
        o.count,
      );
    }
    return all.slice(0, o.count as number);
  }
  r.fail(key, "a prompt, a list of prompts or { trait: FILE }", v);
}
