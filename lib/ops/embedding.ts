import type { Gpu } from "../gpu/context.ts";
import type { Tensor } from "../tensor.ts";
import { check, grid1d, weightDtype } from "./common.ts";

/** out[t, :] = table[ids[t], :]; ids u32 [n], table [V, d] (any weight dtype, chunked), out f32 [n, d]. */
export function embedding(gpu: Gpu, ids: Tensor, table: Tensor, out: Tensor): void {
  const n = ids.numel, d = table.rowElems;
  check(out.numel >= n * d, () => `embedding: output too small for ${n} x ${d}`);
  const k = gpu.kernel("embedding", "forward", { W_DTYPE: weightDtype(gpu, table), W_BINDING: 2 });
  for (const c of table.chunks) {
    gpu.dispatch(k, [n, d, c.rowStart, c.rows], [ids.buffer, c.buffer, out.buffer], grid1d(gpu, n * d));
  }
}
