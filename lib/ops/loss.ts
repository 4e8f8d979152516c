import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, gridRows } from "./common.ts";

/** Per-token masked cross-entropy: loss[r] = mask[r] * (lse[r] - logits[r, targets[r]]). */
export function crossEntropy(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  mask: Tensor,
  loss: Tensor,
  lse: Tensor,
): void {
  const rows = targets.numel, vocab = logits.numel / rows;
  check(Number.isInteger(vocab), () => `cross-entropy: logits size ${logits.numel} is not rows(${rows}) x V`);
  const k = gpu.kernel("loss", "forward");
  gpu.dispatch(
    k,
    [rows, vocab, 0, 0],
    [logits.buffer, targets.buffer, mask.buffer, loss.buffer, lse.buffer],
    gridRows(gpu, rows),
  );
}
