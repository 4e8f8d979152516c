// Hooks at layer boundaries, by layer index l = 0..L (0 = embedding output, l = output of decoder
// layer l), matching a persona vector of shape [L+1, d]. At l = L the hooks act on the last decoder
// layer's output before the final norm (as a PyTorch forward hook on model.layers[L-1] does), while
// hiddenStates' row L, like Hugging Face's hidden_states[L], is after it (lib/activations.ts):
//   steer        add coef * v_l to h_l at every token (PPS), in training and generation
//   signForce    in the backward pass, make the component of dL/dh_l along unit v_l non-negative
//                (attenuate), non-positive (amplify) or zero (neutralize), per token
//   capture      keep h_l and/or dL/dh_l for chosen layers
// All of them run as small WGSL kernels inside the recorded step (lib/ops/hooks.ts).

import type { Gpu } from "./gpu/context.ts";
import { Tensor } from "./tensor.ts";
import type { SignForceMode } from "./ops/hooks.ts";
import { checkLayers } from "./defence.ts";

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
