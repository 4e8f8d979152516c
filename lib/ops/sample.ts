// Token choice on the GPU (kernels/sample.wgsl): greedy argmax, or a seeded draw from the temperature /
// nucleus distribution, over each row of logits.

import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, gridRows, weightDtype } from "./common.ts";

/** Workgroup size of sample.wgsl's kernels (passed to the shader as WG). */
const WG = 256;

function checkOutputs(op: string, logits: Tensor, next: Tensor, hist: Tensor, histOffset: number): void {
  const rows = logits.rows;
  check(next.numel >= rows, () => `${op}: next holds ${next.numel} ids, ${rows} rows given`);
  check(
    hist.numel >= histOffset + rows,
    () => `${op}: history too small for offset ${histOffset} + ${rows}`,
  );
}

/**
 * next[r] = argmax(logits[r]) (first maximum; NaN never chosen; 0 for a row without one), also written
 * to hist[histOffset + r]. logits f32 [rows, V]; next, hist u32.
 */
export function argmax(gpu: Gpu, logits: Tensor, next: Tensor, hist: Tensor, histOffset: number): void {
  checkOutputs("argmax", logits, next, hist, histOffset);
  const rows = logits.rows, V = logits.rowElems;
  const k = gpu.kernel("sample", "argmax", { WG });
  gpu.dispatch(
    k,
    { rows, vocab: V, hist_off: histOffset, seed: 0, step: 0, inv_temp: 0, top_p: 0, dim: 0 },
    { 1: logits.buffer, 2: next.buffer, 3: hist.buffer },
    gridRows(gpu, rows),
    {
      bytes: rows * V * 4 + rows * 8,
      narrow:
        "one workgroup per row over logits already written (decoding takes the fused LM head + argmaxFinal)",
    },
  );
}

/**
 * The argmax's second stage: next[r] (and hist[histOffset + r]) from the `groups` (value, index) partials per
 * row that an argmax gemv wrote (lib/ops/gemv.ts), with argmax's result and ties.
 */
export function argmaxFinal(
  gpu: Gpu,
  partials: Tensor,
  rows: number,
  groups: number,
  next: Tensor,
  hist: Tensor,
  histOffset: number,
  /** also write each chosen token's embedding row into `out` [rows, d] (a table in one binding) */
  embed?: { table: Tensor; out: Tensor },
): void {
  check(
    partials.numel >= rows * groups * 2,
    () => `argmax: ${partials.numel / 2} partials for ${rows} x ${groups}`,
  );
  check(next.numel >= rows && hist.numel >= histOffset + rows, () => "argmax: next or history too small");
  const dim = embed?.table.rowElems ?? 0;
  if (embed) {
    check(embed.table.chunks.length === 1, () => "argmax: an embedding table split across bindings");
    check(embed.out.numel >= rows * dim, () => "argmax: embedding output too small");
  }
  const k = gpu.kernel("sample", "argmax_final", {
    WG,
    EMBED: !!embed,
    ...(embed ? { W_DTYPE: weightDtype(gpu, embed.table), W_BINDING: 5 } : {}),
  });
  gpu.dispatch(
    k,
    { rows, vocab: groups, hist_off: histOffset, seed: 0, step: 0, inv_temp: 0, top_p: 0, dim },
    {
      2: next.buffer,
      3: hist.buffer,
      4: partials.buffer,
      5: embed?.table.chunkBinding(embed.table.chunks[0]),
      6: embed?.out.buffer,
    },
    gridRows(gpu, rows),
    {
      bytes: rows * groups * 8 + rows * 8 + 4 * rows * dim,
      narrow: "a row's last stage: the LM head's workgroups did the first",
    },
  );
}

export interface SampleDraw {
  /** > 0 */
  temperature: number;
  /** nucleus mass in (0, 1]; 1 = the whole vocabulary */
  topP: number;
  seed: number;
  /** which decode step this is: the draw of row r at step s is a function of (seed, s, r) */
  step: number;
}

/**
 * next[r] ~ softmax(logits[r] / temperature) over the nucleus of mass topP (the tokens whose logit is at
 * least the largest threshold keeping that mass), also written to hist[histOffset + r]. A Gumbel-max
 * draw with counter-based noise: reproducible from (seed, step, r), no state on the host.
 */
export function sampleTokens(
  gpu: Gpu,
  logits: Tensor,
  next: Tensor,
  hist: Tensor,
  histOffset: number,
  d: SampleDraw,
): void {
  checkOutputs("sample", logits, next, hist, histOffset);
  check(
    d.temperature > 0 && Number.isFinite(d.temperature),
    () => `sample: temperature ${d.temperature}, expected > 0`,
  );
  check(d.topP > 0 && d.topP <= 1, () => `sample: top_p ${d.topP}, expected in (0, 1]`);
  const rows = logits.rows, V = logits.rowElems;
  const k = gpu.kernel("sample", "sample", { WG });
  // one pass for the maximum, one for the draw, 34 more for the nucleus bisection when topP < 1
  const passes = d.topP < 1 ? 36 : 2;
  gpu.dispatch(
    k,
    {
      rows,
      vocab: V,
      hist_off: histOffset,
      seed: d.seed >>> 0,
      step: d.step >>> 0,
      inv_temp: 1 / d.temperature,
      top_p: d.topP,
      dim: 0,
    },
    { 1: logits.buffer, 2: next.buffer, 3: hist.buffer },
    gridRows(gpu, rows),
    {
      bytes: passes * rows * V * 4 + rows * 8,
      narrow: "one workgroup per row: the draw needs the row's maximum and nucleus threshold before it",
    },
  );
}
