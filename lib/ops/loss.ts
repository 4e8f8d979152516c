import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, gridRows } from "./common.ts";

/**
 * Invocations per row (the kernels' WG): 256 on GPUs, so that a 152k-word row is a few hundred reads per
 * invocation and a step's rows fill the device; 64 on CPU adapters, where a wider workgroup only adds
 * barrier steps. `wg` overrides it (tests run both).
 */
function rowWorkgroup(gpu: Gpu, wg?: 64 | 256): number {
  return wg ?? (gpu.caps.cpuAdapter ? 64 : 256);
}

/** Per-token masked cross-entropy: loss[r] = mask[r] * (lse[r] - logits[r, targets[r]]). */
export function crossEntropy(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  mask: Tensor,
  loss: Tensor,
  lse: Tensor,
  opts: { wg?: 64 | 256 } = {},
): void {
  const rows = targets.numel, vocab = logits.numel / rows;
  check(Number.isInteger(vocab), () => `cross-entropy: logits size ${logits.numel} is not rows(${rows}) x V`);
  const k = gpu.kernel("loss", "forward", { WG: rowWorkgroup(gpu, opts.wg) });
  gpu.dispatch(k, { rows, vocab, scale: 0 }, {
    1: logits.buffer,
    2: targets.buffer,
    3: mask.buffer,
    4: loss.buffer,
    5: lse.buffer,
  }, gridRows(gpu, rows));
}

/**
 * Training: loss and lse as crossEntropy, and logits overwritten in place by
 * d(sum of scale * loss)/d logits = scale * mask * (softmax - onehot).
 */
export function crossEntropyBackward(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  mask: Tensor,
  loss: Tensor,
  lse: Tensor,
  scale: number,
  /** rowIndex: the rows are a selection; row r's loss goes to loss[rowIndex[r]] */
  opts: { wg?: 64 | 256; rowIndex?: Tensor } = {},
): void {
  const rows = targets.numel, vocab = logits.numel / rows;
  const k = gpu.kernel("loss", "forward_backward", {
    WG: rowWorkgroup(gpu, opts.wg),
    ROW_INDEX: !!opts.rowIndex,
  });
  gpu.dispatch(k, { rows, vocab, scale }, {
    2: targets.buffer,
    3: mask.buffer,
    4: loss.buffer,
    5: lse.buffer,
    6: logits.buffer,
    7: opts.rowIndex?.buffer,
  }, gridRows(gpu, rows));
}
