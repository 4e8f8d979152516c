// One training or analysis step's hooks, forward and backward: the adapter's products (with seeded
// dropout), steering and captures of h_l in the forward (defence/hooks.ts), and in the backward the
// adapter's gradients, sign-forcing and captures of dL/dh_l.

import type { Gpu } from "../lib/gpu/context.ts";
import type { Tensor } from "../lib/tensor.ts";
import type { ForwardExtras } from "../models/decoder.ts";
import { backwardBoundary, forwardHooks, type HookOptions } from "../defence/hooks.ts";
import type { BackwardExtras } from "./backward.ts";
import { loraGroupBackward } from "./lora.ts";

export type { HookOptions };

export interface StepHooks {
  forward: ForwardExtras;
  backward: BackwardExtras;
  /** captured h_l (after hooks) by layer */
  activations: Map<number, Tensor>;
  /** captured dL/dh_l (after sign-forcing) by layer */
  grads: Map<number, Tensor>;
  /** free the step's temporaries (not the captures) */
  dispose(): void;
}

export function stepHooks(gpu: Gpu, o: HookOptions): StepHooks {
  const f = forwardHooks(gpu, o);
  const grads = new Map<number, Tensor>();
  const lora = o.lora ?? null, hooks = o.hooks ?? {};
  const backward: BackwardExtras = {
    project(l, group, input, dy) {
      const g = lora?.groups[l].get(group);
      const u = f.loraU.get(`${l}.${group}`);
      if (!g || !u) return null;
      return loraGroupBackward(gpu, lora!, g, u.u, u.slices, input, dy, f.dropout);
    },
    boundary(l, dh) {
      backwardBoundary(gpu, hooks, f.rowMask, grads, l, dh);
    },
    release(l) {
      f.forward.release?.(l);
    },
  };
  return { forward: f.forward, backward, activations: f.activations, grads, dispose: () => f.dispose() };
}
