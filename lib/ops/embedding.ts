import type { Gpu } from "../gpu/context.ts";
import { Tensor } from "../tensor.ts";
import { check, grid1d, weightDtype } from "./common.ts";

/** out[t, :] = table[ids[t], :]; ids u32 [n], table [V, d] (any weight dtype, chunked), out f32 [n, d]. */
export function embedding(gpu: Gpu, ids: Tensor, table: Tensor, out: Tensor): void {
  const n = ids.numel, d = table.rowElems;
  check(out.numel >= n * d, () => `embedding: output too small for ${n} x ${d}`);
  const k = gpu.kernel("embedding", "forward", { W_DTYPE: weightDtype(gpu, table), W_BINDING: 2 });
  for (const c of table.chunks) {
    gpu.dispatch(k, { n_tok: n, dim: d, row_start: c.rowStart, rows: c.rows }, {
      1: ids.buffer,
      2: table.chunkBinding(c),
      3: out.buffer,
    }, grid1d(gpu, n * d));
  }
}

/** dtable [V, d] += scatter of grad [n, d] by ids (host-sorted, deterministic, no atomics). */
export function embeddingBackward(gpu: Gpu, ids: ArrayLike<number>, grad: Tensor, dtable: Tensor): void {
  const d = dtable.rowElems;
  const order = Array.from({ length: ids.length }, (_, i) => i).sort((a, b) => ids[a] - ids[b] || a - b);
  const uniq: number[] = [], starts: number[] = [];
  order.forEach((p, i) => {
    if (i === 0 || ids[p] !== ids[order[i - 1]]) {
      uniq.push(ids[p]);
      starts.push(i);
    }
  });
  starts.push(order.length);
  const o = Tensor.uploadPooled(gpu, Uint32Array.from(order), [order.length], "u32", "emb_order");
  const st = Tensor.uploadPooled(gpu, Uint32Array.from(starts), [starts.length], "u32", "emb_starts");
  const u = Tensor.uploadPooled(gpu, Uint32Array.from(uniq), [uniq.length], "u32", "emb_uniq");
  const k = gpu.kernel("embedding", "backward", { W_DTYPE: "f32", W_BINDING: 2 });
  gpu.dispatch(k, { n_tok: uniq.length, dim: d, row_start: 0, rows: 0 }, {
    5: grad.buffer,
    6: o.buffer,
    7: st.buffer,
    8: u.buffer,
    9: dtable.buffer,
  }, grid1d(gpu, uniq.length * d));
  for (const t of [o, st, u]) t.dispose();
}
