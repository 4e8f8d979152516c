// Hooks at layer boundaries, by layer index l = 0..L (0 = embedding output, l = output of decoder
// layer l), matching a persona vector of shape [L+1, d]. At l = L the hooks act on the last decoder
// layer's output before the final norm (as a PyTorch forward hook on model.layers[L-1] does), while
// hiddenStates' row L, like Hugging Face's hidden_states[L], is after it (research/activations.ts):
//   steer        add coef * v_l to h_l at every token (PPS), in training and generation
//   signForce    in the backward pass, make the component of dL/dh_l along unit v_l non-negative
//                (attenuate), non-positive (amplify) or zero (neutralize), per token
//   capture      keep h_l and/or dL/dh_l for chosen layers
// All of them run as small WGSL kernels inside the recorded step (lib/ops/hooks.ts). forwardHooks runs a
// forward pass's hook points as a whole (an adapter's products beside steering and captures), and
// generationExtras does so per decoding phase; the backward side is train/step_hooks.ts.

import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { signForce, type SignForceMode, steer } from "../lib/ops/hooks.ts";
import type { ForwardExtras } from "../models/decoder.ts";
import { type LoraDropout, loraGroupForward, type LoraSet } from "../models/lora.ts";
import { checkLayers, signForceLayers, type SignForceSpec, steerLayers, type SteerSpec } from "./defence.ts";
import { loadLayerVectors } from "./persona_vector.ts";

export interface LayerVectors {
  /** one f32 tensor [d] per layer 0..L (only the hooked layers need be present) */
  rows: (Tensor | null)[];
}

/** Upload rows of a [L+1, d] host matrix as per-layer vectors; `unit` normalises each row. */
export function layerVectors(
  gpu: Gpu,
  data: Float32Array,
  layers: number,
  d: number,
  unit = false,
  name = "vector",
): LayerVectors {
  if (data.length !== layers * d) {
    throw new Error(`${name}: ${data.length} values, expected [${layers}, ${d}]`);
  }
  return {
    rows: Array.from({ length: layers }, (_, l) => {
      const row = data.slice(l * d, (l + 1) * d);
      if (unit) {
        const n = Math.hypot(...row);
        if (!(n > 0)) return null;
        for (let j = 0; j < d; j++) row[j] /= n;
      }
      return Tensor.fromF32(gpu, row, [d], `${name}[${l}]`);
    }),
  };
}

export interface SteerHook {
  vectors: LayerVectors;
  layers: number[];
  coef: number;
  /** generation only: which positions are steered (training steers all) */
  mode?: "all" | "prompt" | "response";
}

export interface SignForceHook {
  /** unit vectors per layer */
  vectors: LayerVectors;
  layers: number[];
  mode: SignForceMode;
}

export interface Hooks {
  steer?: SteerHook[];
  signForce?: SignForceHook;
  /** layers whose activations h_l to keep */
  captureActivations?: number[];
  /** layers whose gradients dL/dh_l to keep */
  captureGrads?: number[];
}

/**
 * Every steering and sign-forcing layer names a boundary the vectors have, 0..L: a layer outside is an
 * error here, not a hook that silently never runs (then generation or evaluation would report a steered
 * result that was not steered).
 */
export function checkHookLayers(hooks: Hooks): void {
  const check = (what: string, v: LayerVectors, layers: number[], unit: boolean) => {
    checkLayers(layers, v.rows.length - 1, what);
    for (const l of layers) {
      if (!v.rows[l]) {
        throw new Error(
          `${what} layer ${l}: the vector's row ${l} is ${unit ? "zero (no direction)" : "missing"}`,
        );
      }
    }
  };
  for (const s of hooks.steer ?? []) check("steering", s.vectors, s.layers, false);
  if (hooks.signForce) check("sign-forcing", hooks.signForce.vectors, hooks.signForce.layers, true);
}

/** A model's shape as hooks need it. */
export interface HookShape {
  numLayers: number;
  hiddenSize: number;
}

/**
 * The steering hook of a spec whose vector is a file of [L+1, d] rows, its layers checked against the model
 * (`what` names the key in errors, e.g. "steer.layers").
 */
/**
 * coef · v is added to activations that RMSNorm then squares and sums in f32: past ~1e15 that overflows (to
 * Inf, then NaN: empty answers scored 0 ± 0) at any hidden size this engine loads. Refused, naming both.
 */
export function checkSteerScale(
  data: Float32Array,
  layers: number[],
  d: number,
  coef: number,
  what: string,
  path: string,
): void {
  let maxAbs = 0;
  for (const l of layers) for (let i = 0; i < d; i++) maxAbs = Math.max(maxAbs, Math.abs(data[l * d + i]));
  if (!Number.isFinite(coef) || Math.abs(coef) * maxAbs > 1e15) {
    throw new Error(
      `${what}: coefficient ${coef} times the vector's largest element ${
        maxAbs.toPrecision(3)
      } (${path}) overflows f32 in the model's next normalization; use a coefficient whose product stays below 1e15`,
    );
  }
}

export async function steerHook(
  gpu: Gpu,
  shape: HookShape,
  spec: SteerSpec,
  what = "steering",
): Promise<SteerHook> {
  const boundaries = shape.numLayers + 1, d = shape.hiddenSize;
  const layers = steerLayers(spec.layers, shape.numLayers, what);
  const data = await loadLayerVectors(spec.vector!, boundaries, d);
  checkSteerScale(data, layers, d, spec.coef, what, spec.vector!);
  return {
    vectors: layerVectors(
      gpu,
      data,
      boundaries,
      d,
      false,
      "steer",
    ),
    layers,
    coef: spec.coef,
    mode: spec.mode,
  };
}

/** The sign-forcing hook of a spec whose vector is a file (unit rows; "all" = layers 1..L-1). */
export async function signForceHook(gpu: Gpu, shape: HookShape, spec: SignForceSpec): Promise<SignForceHook> {
  const boundaries = shape.numLayers + 1, d = shape.hiddenSize;
  const layers = signForceLayers(spec.layers, shape.numLayers);
  return {
    vectors: layerVectors(
      gpu,
      await loadLayerVectors(spec.vector!, boundaries, d),
      boundaries,
      d,
      true,
      "sign_force",
    ),
    layers,
    mode: spec.mode,
  };
}

export interface HookOptions {
  lora?: LoraSet | null;
  hooks?: Hooks;
  /** training: LoRA dropout on, with this step seed; otherwise off (evaluation, generation) */
  dropoutSeed?: number | null;
  /** rows of the step (batch x tokens) */
  rows: number;
  /** row mask for steering / sign-forcing (default: all rows) */
  rowMask?: Tensor;
}

/** What runs at the decoder's hook points in one forward pass: the adapter's products, steering, captures. */
export interface ForwardHooks {
  forward: ForwardExtras;
  /** captured h_l (after steering) by layer; the caller owns them */
  activations: Map<number, Tensor>;
  /** u = dropout(x) A^T per "layer.group" (with its k-slices), for a backward pass */
  loraU: Map<string, { u: Tensor; slices: number }>;
  /** the row mask the hooks use (1 on every row unless given) */
  rowMask: Tensor;
  dropout: LoraDropout | null;
  /** free the step's temporaries (not the captures) */
  dispose(): void;
}

/** Copy t into a new tensor kept in `map` under layer l. */
export function captureInto(gpu: Gpu, map: Map<number, Tensor>, l: number, t: Tensor, name: string): void {
  const c = Tensor.empty(gpu, t.shape, "f32", name);
  gpu.copy(t.raw.buffer, t.raw.offset, c.raw.buffer, c.raw.offset, t.byteSize);
  map.set(l, c);
}

export function forwardHooks(gpu: Gpu, o: HookOptions): ForwardHooks {
  checkHookLayers(o.hooks ?? {});
  const loraU = new Map<string, { u: Tensor; slices: number }>();
  const activations = new Map<number, Tensor>();
  const lora = o.lora ?? null, hooks = o.hooks ?? {};
  const rowMask = o.rowMask ??
    Tensor.uploadPooled(gpu, new Float32Array(o.rows).fill(1), [o.rows], "f32", "all_rows");
  const drop = o.dropoutSeed != null && lora ? { p: lora.lora.dropout, seed: o.dropoutSeed } : null;
  const forward: ForwardExtras = {
    project(l, group, input, rows) {
      const g = lora?.groups[l].get(group);
      if (!g) return null;
      const f = loraGroupForward(gpu, lora!, g, input, rows, drop);
      loraU.get(`${l}.${group}`)?.u.dispose(); // a recomputation (activation checkpointing) replaces it
      loraU.set(`${l}.${group}`, { u: f.u, slices: f.phase.slices });
      return f.phase;
    },
    release(l) {
      for (const key of [...loraU.keys()]) {
        if (key.startsWith(`${l}.`)) {
          loraU.get(key)!.u.dispose();
          loraU.delete(key);
        }
      }
    },
    boundary(l, h) {
      for (const s of hooks.steer ?? []) {
        const v = s.vectors.rows[l];
        if (s.layers.includes(l) && v && s.coef !== 0) steer(gpu, h, v, s.coef, rowMask);
      }
      if (hooks.captureActivations?.includes(l)) captureInto(gpu, activations, l, h, `h${l}`);
    },
  };
  return {
    forward,
    activations,
    loraU,
    rowMask,
    dropout: drop,
    dispose() {
      for (const { u } of loraU.values()) u.dispose();
      loraU.clear();
      if (!o.rowMask) rowMask.dispose();
    },
  };
}

/** In the backward pass at boundary l: sign-forcing of dL/dh_l (hooks.signForce), then its capture. */
export function backwardBoundary(
  gpu: Gpu,
  hooks: Hooks,
  rowMask: Tensor,
  grads: Map<number, Tensor>,
  l: number,
  dh: Tensor,
): void {
  const sf = hooks.signForce;
  const v = sf?.vectors.rows[l];
  if (sf && v && sf.layers.includes(l)) signForce(gpu, dh, v, sf.mode, rowMask);
  if (hooks.captureGrads?.includes(l)) captureInto(gpu, grads, l, dh, `dh${l}`);
}

/**
 * Hooks for generation: an adapter (no dropout) and steering, honouring each steer hook's mode: "all"
 * steers the prompt and the generated tokens, "prompt" / "response" only one of them.
 */
export function generationExtras(gpu: Gpu, lora: LoraSet | null, hooks: Hooks = {}) {
  checkHookLayers(hooks); // before any token, not at the first step's hooks
  const live: ForwardHooks[] = [];
  return {
    extras(phase: "prompt" | "response", rows: number): ForwardExtras {
      const steer = (hooks.steer ?? []).filter((s) => (s.mode ?? "all") === "all" || s.mode === phase);
      const fh = forwardHooks(gpu, { lora, hooks: { steer }, rows });
      live.push(fh);
      return fh.forward;
    },
    dispose() {
      for (const e of live) e.dispose();
      live.length = 0;
    },
  };
}
