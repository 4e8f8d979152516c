// Every backward kernel: the f64 analytic twin (tests/ref/backward.ts) against central finite
// differences of the f64 forward twin (atol 1e-6), then the GPU kernel against the analytic twin
// (f32 tolerances stated per test). The upstream gradient G is random: L = sum(G * f(x)).

import assert from "node:assert/strict";
import { Tensor } from "../lib/tensor.ts";
import { matmul } from "../lib/ops/matmul.ts";
import { rmsnormBackward, rmsnormWeightGrad } from "../lib/ops/rmsnorm.ts";
import { swigluBackward } from "../lib/ops/swiglu.ts";
import { qkvRope, qkvRopeBackward } from "../lib/ops/rope.ts";
import { attention, attentionBackward } from "../lib/ops/attention.ts";
import { crossEntropyBackward } from "../lib/ops/loss.ts";
import { embeddingBackward } from "../lib/ops/embedding.ts";
import { colsum, dropout } from "../lib/ops/elementwise.ts";
import { inverseFrequencies, ropeTable } from "../models/rope.ts";
import * as ref from "./ref/ops.ts";
import * as bref from "./ref/backward.ts";
import { assertClose, gpuTest, randn, rng, testGpu } from "./helpers.ts";

/** d/dx_i of sum(G * f(x)) by central differences at `n` random coordinates, vs `grad`. */
function fdCheck(
  f: (x: Float64Array) => ArrayLike<number>,
  x: ArrayLike<number>,
  G: ArrayLike<number>,
  grad: ArrayLike<number>,
  what: string,
  n = 12,
) {
  const r = rng(99), h = 1e-5;
  const L = (xx: Float64Array) => {
    const y = f(xx);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += G[i] * y[i];
    return s;
  };
  for (let c = 0; c < n; c++) {
    const i = Math.floor(r() * x.length);
    const xp = Float64Array.from(x), xm = Float64Array.from(x);
    xp[i] += h;
    xm[i] -= h;
    const fd = (L(xp) - L(xm)) / (2 * h);
    assert.ok(
      Math.abs(fd - grad[i]) <= 1e-6 + 1e-6 * Math.abs(fd),
      `${what}[${i}]: analytic ${grad[i]} vs finite difference ${fd}`,
    );
  }
}

Deno.test({
  name: "matmul backward: dX = dY W and dW = dY^T X via [K,N] / [K,M] layouts, chunked W (atol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    {
      const M = 13, K = 36, N = 44;
      const x = randn(M * K, 1), w = randn(N * K, 2), dy = randn(M * N, 3);
      // analytic vs FD (linear, so exact up to rounding)
      const dxRef = ref.matmul(dy, M, N, w, K, { wKN: true });
      fdCheck((xx) => ref.matmul(xx, M, K, w, N), x, dy, dxRef, "dX");
      const dwRef = ref.matmul(dy, N, M, x, K, { aKM: true, wKN: true });
      fdCheck((ww) => ref.matmul(x, M, K, ww, N), w, dy, dwRef, "dW");
      // GPU: W split into 3 row chunks → K-blocks for dX
      const W = Tensor.upload(gpu, w, [N, K], "f32");
      const Wc = new Tensor(
        [N, K],
        "f32",
        [0, 15, 30].map((r0) => {
          const r1 = Math.min(N, r0 + 15);
          return {
            buffer: Tensor.fromF32(gpu, w.subarray(r0 * K, r1 * K), [r1 - r0, K]).chunks[0].buffer,
            rowStart: r0,
            rows: r1 - r0,
          };
        }),
        "w_chunked",
      );
      const dY = Tensor.fromF32(gpu, dy, [M, N]), X = Tensor.fromF32(gpu, x, [M, K]);
      for (const wt of [W, Wc]) {
        const dX = Tensor.empty(gpu, [M, K]);
        matmul(gpu, { a: dY, w: wt, wLayout: "kn", M, out: dX });
        assertClose(await dX.read(gpu), dxRef, { atol: 1e-4, rtol: 1e-4 }, `dX ${wt.chunks.length} chunks`);
      }
      const dW = Tensor.empty(gpu, [N, K]);
      matmul(gpu, { a: dY, aLayout: "km", w: X, wLayout: "kn", M: N, out: dW });
      assertClose(await dW.read(gpu), dwRef, { atol: 1e-4, rtol: 1e-4 }, "dW");
      // bias gradient
      const db = Tensor.fromF32(gpu, new Float32Array(N).fill(0.5), [N]);
      colsum(gpu, dY, M, db);
      const want = new Float64Array(N).fill(0.5);
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) want[n] += dy[m * N + n];
      assertClose(await db.read(gpu), want, { atol: 1e-5 }, "db");
    }
  },
});

Deno.test({
  name: "rmsnorm backward: dx (plain and accumulated) and dw (atol 1e-5 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 9, d = 70, eps = 1e-5;
    const x = randn(rows * d, 4), w = randn(d, 5), dy = randn(rows * d, 6);
    const { dx, dw } = bref.rmsnormBackward(x, w, eps, dy);
    fdCheck((xx) => ref.rmsnorm(xx, w, eps).y, x, dy, dx, "dx");
    fdCheck((ww) => ref.rmsnorm(x, ww, eps).y, w, dy, dw, "dw");
    const X = Tensor.fromF32(gpu, x, [rows, d]),
      W = Tensor.fromF32(gpu, w, [d]),
      DY = Tensor.fromF32(gpu, dy, [rows, d]);
    const rstd = Tensor.fromF32(gpu, Float32Array.from(ref.rmsnorm(x, w, eps).rstd), [rows]);
    const DX = Tensor.fromF32(gpu, new Float32Array(rows * d).fill(1), [rows, d]);
    rmsnormBackward(gpu, X, W, DY, rstd, DX, true);
    assertClose(await DX.read(gpu), dx.map((v) => v + 1), { atol: 1e-5, rtol: 1e-4 }, "dx accumulated");
    rmsnormBackward(gpu, X, W, DY, rstd, DX);
    assertClose(await DX.read(gpu), dx, { atol: 1e-5, rtol: 1e-4 }, "dx");
    const DW = Tensor.fromF32(gpu, new Float32Array(d), [d]);
    rmsnormWeightGrad(gpu, X, DY, rstd, DW);
    assertClose(await DW.read(gpu), dw, { atol: 1e-5, rtol: 1e-4 }, "dw");
  },
});

Deno.test({
  name: "swiglu backward (atol 1e-6 + rtol 1e-5)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 5, I = 37, gu = randn(rows * 2 * I, 7, 2), dout = randn(rows * I, 8);
    const want = bref.swigluBackward(gu, dout, rows, I);
    fdCheck((x) => ref.swiglu(x, rows, I), gu, dout, want, "dgu");
    const out = Tensor.empty(gpu, [rows, 2 * I]);
    swigluBackward(
      gpu,
      Tensor.fromF32(gpu, gu, [rows, 2 * I]),
      Tensor.fromF32(gpu, dout, [rows, I]),
      out,
      rows,
      I,
    );
    assertClose(await out.read(gpu), want, { atol: 1e-6, rtol: 1e-5 }, "dgu");
  },
});

Deno.test({
  name:
    "rope + attention backward: GQA ratios 1, 3 and 2 (head dim 72), left padding (atol 2e-5 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (
      const c of [{ batch: 2, t: 11, heads: 2, kvHeads: 2, headDim: 8, starts: [0, 3] }, {
        batch: 1,
        t: 70,
        heads: 6,
        kvHeads: 2,
        headDim: 4,
        starts: [0],
      }, { batch: 2, t: 66, heads: 2, kvHeads: 1, headDim: 72, starts: [0, 4] }]
    ) {
      const s = { ...c, tCache: c.t, past: 0 };
      const rows = c.batch * c.t, all = c.heads + 2 * c.kvHeads, D = c.headDim;
      const qkv = randn(rows * all * D, 11), dO = randn(rows * c.heads * D, 12);
      for (let b = 0; b < c.batch; b++) {
        for (let t = 0; t < c.starts[b]; t++) {
          dO.fill(0, (b * c.t + t) * c.heads * D, (b * c.t + t + 1) * c.heads * D);
        }
      }
      const pos = Array.from(
        { length: rows },
        (_, r) => Math.max(0, (r % c.t) - c.starts[Math.floor(r / c.t)]),
      );
      const table = ropeTable(inverseFrequencies({ headDim: D, theta: 10000 }), c.t);
      // f(qkv) = attention output: the whole chain rope → attention
      const f = (x: Float64Array) => {
        const kc = new Float64Array(rows * c.kvHeads * D), vc = new Float64Array(kc.length);
        const q = ref.qkvRope(s, x, pos, table, kc, vc);
        return ref.attention(s, q, kc, vc, c.starts).o;
      };
      const kc = new Float64Array(rows * c.kvHeads * D), vc = new Float64Array(kc.length);
      const q = ref.qkvRope(s, qkv, pos, table, kc, vc);
      const g = bref.attentionBackward(s, q, kc, vc, c.starts, dO);
      const dqkv = bref.qkvRopeBackward(s, g.dq, g.dk, g.dv, pos, table);
      fdCheck(f, qkv, dO, dqkv, "dqkv", 20);
      // GPU
      const T = (x: ArrayLike<number>, shape: number[]) => Tensor.fromF32(gpu, Float32Array.from(x), shape);
      const Q = Tensor.empty(gpu, [rows, c.heads * D]),
        K = Tensor.empty(gpu, [rows, c.kvHeads * D]),
        V = Tensor.empty(gpu, [rows, c.kvHeads * D]);
      const cs = T(table, [table.length]),
        st = Tensor.fromU32(gpu, c.starts, [c.batch]);
      qkvRope(gpu, s, T(qkv, [rows, all * D]), st, cs, Q, K, V);
      const O = Tensor.empty(gpu, [rows, c.heads * D]), lse = Tensor.empty(gpu, [c.batch * c.heads * c.t]);
      attention(gpu, s, Q, K, V, st, O, lse);
      const dq = Tensor.empty(gpu, [rows, c.heads * D]),
        dk = Tensor.empty(gpu, [rows, c.kvHeads * D]),
        dv = Tensor.empty(gpu, [rows, c.kvHeads * D]);
      // dk/dv per kv head and per query head summed per group; an invocation per row (CPU adapters), a
      // workgroup per row, and flash tiles (GPUs)
      for (
        const [perHead, kernel] of [
          [true, "invocation"],
          [false, "invocation"],
          [true, "rows"],
          [false, "rows"],
          [true, "flash"],
          [false, "flash"],
        ] as const
      ) {
        attentionBackward(
          gpu,
          s,
          { q: Q, k: K, v: V, kvStart: st, o: O, lse, dO: T(dO, [rows, c.heads * D]) },
          {
            dq,
            dk,
            dv,
            dsum: Tensor.empty(gpu, [c.batch * c.heads * c.t]),
          },
          { perHead, kernel },
        );
        const v = `(per head: ${perHead}, ${kernel})`;
        assertClose(await dq.read(gpu), g.dq, { atol: 2e-5, rtol: 1e-4 }, `dq ${v}`);
        assertClose(await dk.read(gpu), g.dk, { atol: 2e-5, rtol: 1e-4 }, `dk ${v}`);
        assertClose(await dv.read(gpu), g.dv, { atol: 2e-5, rtol: 1e-4 }, `dv ${v}`);
      }
      const DQKV = Tensor.empty(gpu, [rows, all * D]);
      qkvRopeBackward(gpu, s, dq, dk, dv, st, cs, DQKV);
      assertClose(await DQKV.read(gpu), dqkv, { atol: 2e-5, rtol: 1e-4 }, "dqkv");
    }
  },
});

Deno.test({
  name: "cross-entropy forward+backward in place, 64 and 256 invocations per row (atol 1e-6 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 7,
      V = 300,
      logits = randn(rows * V, 13, 2),
      targets = [0, 299, 5, 5, 100, 7, 1],
      mask = [1, 1, 0, 1, 1, 0.5, 1];
    const scale = 1 / 5;
    const want = bref.crossEntropyBackward(logits, targets, mask, scale);
    fdCheck(
      (x) => ref.crossEntropy(x, targets, mask).loss,
      logits,
      new Array(rows).fill(scale),
      want,
      "dlogits",
    );
    for (const wg of [64, 256] as const) {
      const L = Tensor.fromF32(gpu, logits, [rows, V]),
        loss = Tensor.empty(gpu, [rows]),
        lse = Tensor.empty(gpu, [rows]);
      crossEntropyBackward(
        gpu,
        L,
        Tensor.fromU32(gpu, targets, [rows]),
        Tensor.fromF32(gpu, mask, [rows]),
        loss,
        lse,
        scale,
        { wg },
      );
      assertClose(await L.read(gpu), want, { atol: 1e-6, rtol: 1e-4 }, `dlogits, ${wg} per row`);
      assertClose(await loss.read(gpu), ref.crossEntropy(logits, targets, mask).loss, {
        atol: 1e-5,
        rtol: 1e-5,
      }, `loss, ${wg} per row`);
    }
  },
});

Deno.test({
  name: "embedding backward scatters repeated ids deterministically (atol 1e-6); dropout masks are seeded",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const V = 11, d = 5, ids = [3, 7, 3, 0, 10, 3, 7], g = randn(ids.length * d, 14);
    const dt = Tensor.fromF32(gpu, new Float32Array(V * d).fill(1), [V, d]);
    embeddingBackward(gpu, ids, Tensor.fromF32(gpu, g, [ids.length, d]), dt);
    const want = new Float64Array(V * d).fill(1);
    ids.forEach((id, t) => {
      for (let j = 0; j < d; j++) want[id * d + j] += g[t * d + j];
    });
    assertClose(await dt.read(gpu), want, { atol: 1e-6 }, "dtable");
    const x = Tensor.fromF32(gpu, new Float32Array(4000).fill(1), [4000]);
    const a = Tensor.empty(gpu, [4000]), b = Tensor.empty(gpu, [4000]), c = Tensor.empty(gpu, [4000]);
    dropout(gpu, x, a, 0.25, 7);
    dropout(gpu, x, b, 0.25, 7);
    dropout(gpu, x, c, 0.25, 8);
    const [ra, rb, rc] = [await a.read(gpu), await b.read(gpu), await c.read(gpu)];
    assert.deepEqual(ra, rb);
    assert.notDeepEqual(ra, rc);
    const kept = ra.filter((v) => v !== 0);
    assert.ok(Math.abs(kept.length / 4000 - 0.75) < 0.04, `keep rate ${kept.length / 4000}`);
    assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6));
  },
});
