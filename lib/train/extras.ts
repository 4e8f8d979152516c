// Builds the forward/backward extras of one training or analysis step from a LoRA adapter and hooks:
// LoRA products (with seeded dropout), steering, sign-forcing, and capture of h_l and dL/dh_l.

import type { Gpu } from "../gpu/context.ts";
import { Tensor } from "../tensor.ts";
import { linear, matmul } from "../ops/matmul.ts";
import { addInPlace, dropout } from "../ops/elementwise.ts";
import { signForce, steer } from "../ops/hooks.ts";
import type { ForwardExtras, ProjectionName } from "../../models/decoder.ts";
import type { BackwardExtras } from "./backward.ts";
import type { LoraModule, LoraSet } from "./lora.ts";
import { checkHookLayers, type Hooks } from "../hooks.ts";

interface LoraSaved {
  /** u = dropout(x) A^T; dropout(x) itself is recomputed in the backward from the seed (not kept: at 7B
   * the seven dropped copies of each layer's inputs would be ~9 GB at 4 x 512) */
  u: Tensor;
}

export interface StepExtras {
  forward: ForwardExtras;
  backward: BackwardExtras;
  /** captured h_l (after hooks) by layer */
  activations: Map<number, Tensor>;
  /** captured dL/dh_l (after sign-forcing) by layer */
  grads: Map<number, Tensor>;
  /** free the step's temporaries (not the captures) */
  dispose(): void;
}

export interface ExtrasOptions {
  lora?: LoraSet | null;
  hooks?: Hooks;
  /** training: dropout on, with this seed; otherwise dropout is off (evaluation) */
  dropoutSeed?: number | null;
  /** row mask for steering / sign-forcing (default: all rows) */
  rows: number;
  rowMask?: Tensor;
}

function mix(a: number, b: number): number {
  let h = (a ^ Math.imul(b + 0x9e3779b9, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export function buildExtras(gpu: Gpu, o: ExtrasOptions): StepExtras {
  checkHookLayers(o.hooks ?? {});
  const saved = new Map<string, LoraSaved>();
  const temps: Tensor[] = [];
  const activations = new Map<number, Tensor>(), grads = new Map<number, Tensor>();
  const lora = o.lora ?? null, hooks = o.hooks ?? {};
  const ones = o.rowMask ?? Tensor.fromF32(gpu, new Float32Array(o.rows).fill(1), [o.rows], "all_rows");
  if (!o.rowMask) temps.push(ones);
  const pDrop = o.dropoutSeed != null && lora ? lora.lora.dropout : 0;
  const moduleIndex = (m: ProjectionName) =>
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].indexOf(m);
  const seedOf = (l: number, m: ProjectionName) => mix(mix(o.dropoutSeed ?? 0, l), moduleIndex(m));
  const capture = (map: Map<number, Tensor>, l: number, t: Tensor, name: string) => {
    const c = Tensor.empty(gpu, t.shape, "f32", name);
    gpu.copy(t.raw.buffer, t.raw.offset, c.raw.buffer, c.raw.offset, t.byteSize);
    map.set(l, c);
  };

  const forward: ForwardExtras = {
    project(l, m, input, out, colOffset) {
      const p = lora?.layers[l].get(m as LoraModule);
      if (!p) return;
      const rows = input.rows;
      let xin = input, xd: Tensor | null = null;
      if (pDrop > 0) {
        xd = Tensor.empty(gpu, input.shape, "f32", "lora_dropout");
        dropout(gpu, input, xd, pDrop, seedOf(l, m));
        xin = xd;
      }
      const u = Tensor.empty(gpu, [rows, lora!.lora.r], "f32", "lora_u");
      linear(gpu, xin, p.a, u);
      linear(gpu, u, p.b, out, { accumulate: true, colOffset, alpha: lora!.scale });
      xd?.dispose(); // released after recording: later users of the buffer run after these reads
      saved.set(`${l}.${m}`, { u });
    },
    boundary(l, h) {
      for (const s of hooks.steer ?? []) {
        const v = s.vectors.rows[l];
        if (s.layers.includes(l) && v && s.coef !== 0) steer(gpu, h, v, s.coef, ones);
      }
      if (hooks.captureActivations?.includes(l)) capture(activations, l, h, `h${l}`);
    },
  };

  const backward: BackwardExtras = {
    project(l, m, input, dy, dyOff, dInput) {
      const p = lora?.layers[l].get(m as LoraModule);
      const sv = saved.get(`${l}.${m}`);
      if (!p || !sv) return;
      const rows = input.rows, r = lora!.lora.r, s = lora!.scale;
      const gA = lora!.store.get(p.a.name).grad, gB = lora!.store.get(p.b.name).grad;
      let xd: Tensor | null = null;
      if (pDrop > 0) {
        xd = Tensor.empty(gpu, input.shape, "f32", "lora_dropout");
        dropout(gpu, input, xd, pDrop, seedOf(l, m)); // the forward's mask again: same seed, same kernel
      }
      const xin = xd ?? input;
      // dB += s dy^T u ;  du = s dy B ;  dA += du^T x ;  dx += dropout'(du A)
      matmul(gpu, {
        a: dy,
        aLayout: "km",
        lda: dy.rowElems,
        aOff: dyOff,
        w: sv.u,
        wLayout: "kn",
        M: p.outF,
        out: gB,
        accumulate: true,
        alpha: s,
      });
      const du = Tensor.empty(gpu, [rows, r], "f32", "lora_du");
      matmul(gpu, {
        a: dy,
        lda: dy.rowElems,
        aOff: dyOff,
        w: p.b,
        wLayout: "kn",
        M: rows,
        out: du,
        alpha: s,
      });
      matmul(gpu, { a: du, aLayout: "km", w: xin, wLayout: "kn", M: r, out: gA, accumulate: true });
      if (xd) {
        const dxd = Tensor.empty(gpu, input.shape, "f32", "lora_dx");
        matmul(gpu, { a: du, w: p.a, wLayout: "kn", M: rows, out: dxd });
        dropout(gpu, dxd, xd, pDrop, seedOf(l, m)); // same mask; xd is no longer needed
        addInPlace(gpu, dInput, xd);
        dxd.dispose();
        xd.dispose();
      } else {
        matmul(gpu, { a: du, w: p.a, wLayout: "kn", M: rows, out: dInput, accumulate: true });
      }
      du.dispose();
    },
    boundary(l, dh) {
      const sf = hooks.signForce;
      const v = sf?.vectors.rows[l];
      if (sf && v && sf.layers.includes(l)) signForce(gpu, dh, v, sf.mode, ones);
      if (hooks.captureGrads?.includes(l)) capture(grads, l, dh, `dh${l}`);
    },
  };

  return {
    forward,
    backward,
    activations,
    grads,
    dispose() {
      for (const sv of saved.values()) sv.u.dispose();
      saved.clear();
      for (const t of temps) t.dispose();
    },
  };
}

/**
 * Extras for generation: an adapter (no dropout) and steering hooks, honouring each steer hook's
 * mode: "all" steers the prompt and the generated tokens, "prompt" / "response" only one of them.
 */
export function generationExtras(gpu: Gpu, lora: LoraSet | null, hooks: Hooks = {}) {
  checkHookLayers(hooks); // before any token, not at the first step's hooks
  const live: StepExtras[] = [];
  return {
    extras(phase: "prompt" | "response", rows: number): ForwardExtras {
      const steer = (hooks.steer ?? []).filter((s) => (s.mode ?? "all") === "all" || s.mode === phase);
      const ex = buildExtras(gpu, { lora, hooks: { steer }, rows });
      live.push(ex);
      return ex.forward;
    },
    dispose() {
      for (const e of live) e.dispose();
      live.length = 0;
    },
  };
}
