// Each forward kernel against its f64 CPU twin (tests/ref/ops.ts) on awkward shapes.
// Runs on whichever backend DENO_WEBGPU_BACKEND selects; CI runs this file on vulkan and gl.
// Tolerances: f32 GPU math vs f64 reference, stated per test (inputs ~N(0,1)).

import { f32bits, Gpu } from "../lib/gpu/context.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { embedding } from "../lib/ops/embedding.ts";
import { rmsnorm } from "../lib/ops/rmsnorm.ts";
import { qkvRope } from "../lib/ops/rope.ts";
import { attention } from "../lib/ops/attention.ts";
import { swiglu } from "../lib/ops/swiglu.ts";
import { crossEntropy } from "../lib/ops/loss.ts";
import { addInPlace } from "../lib/ops/elementwise.ts";
import { argmax, sampleTokens } from "../lib/ops/sample.ts";
import { hashU32 } from "../lib/rng.ts";
import { inverseFrequencies, ropeTable } from "../models/rope.ts";
import * as ref from "./ref/ops.ts";
import { assertClose, gpuTest, randn, testGpu } from "./helpers.ts";
import assert from "node:assert/strict";

function packHalf(x: Float32Array, kind: "bf16" | "f16"): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(x.length), values = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    bits[i] = kind === "bf16" ? f32ToBf16(x[i]) : f32ToF16(x[i]);
    values[i] = kind === "bf16" ? bf16ToF32(bits[i]) : f16ToF32(bits[i]);
  }
  return { bits, values };
}

Deno.test({
  name: "shader-f16 is detected: native f16 kernels compile only where the adapter has it",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const backend = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
    console.log(`  adapter: ${gpu.caps.description} (${backend}); shader-f16: ${gpu.caps.shaderF16}`);
    const k = () => gpu.kernel("matmul", "tile", { W_DTYPE: "f16n", W_BINDING: 2, TM: 4, TN: 4, WGS: 16 });
    if (gpu.caps.shaderF16) {
      k();
      await gpu.submit();
    } else {
      // GL (llvmpipe) has no shader-f16: the runtime must fall back to bit-decoded f16, and a native
      // f16 kernel must be refused with an error rather than miscompute.
      console.log("  this adapter lacks shader-f16: f16 weights are decoded from packed u32");
      let failed = false;
      try {
        k();
        await gpu.submit();
      } catch {
        failed = true;
      }
      assert.ok(failed, "native f16 kernel should be rejected without shader-f16");
    }
  },
});

Deno.test({
  name: "unpack of packed f16 bits is exact on this compiler (incl. negative, subnormal, inf)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const vals = [1.5, -2.25, 0, -0, 6.1e-5, -3e-7, 65504, -1e-3, Infinity, -Infinity, 0.333];
    const { bits, values } = packHalf(new Float32Array(vals), "f16");
    // matmul with x = identity rows reads each weight once: y[m, n] = W[n, m]
    const K = 2, N = vals.length / 1;
    const wbits = new Uint16Array(N * K);
    for (let n = 0; n < N; n++) wbits[n * K] = bits[n];
    const x = Tensor.fromF32(gpu, [1, 0], [1, K]);
    const out = Tensor.empty(gpu, [1, N]);
    linear(gpu, x, Tensor.upload(gpu, wbits, [N, K], "f16"), out);
    const got = await out.read(gpu);
    // exact (a matmul turns -0 into +0, which assertClose treats as equal)
    assertClose(got, values, { atol: 0 }, "f16 values");
  },
});

Deno.test({
  name: "matmul + embedding: weights split across bindings (forced 4 KiB binding limit)",
  ...gpuTest,
  fn: async () => {
    const small = await Gpu.create({ maxBindingBytes: 4096 });
    try {
      const M = 3, K = 30, N = 300;
      const a = randn(M * K, 7), { bits, values } = packHalf(randn(N * K, 8), "bf16");
      const W = Tensor.upload(small, bits, [N, K], "bf16", "w");
      assert.ok(W.chunks.length >= 5, `expected many chunks, got ${W.chunks.length}`);
      const ids = [0, 299, 67, 68, 136, 3];
      const table = Tensor.upload(small, bits, [N, K], "bf16", "table");
      const x = Tensor.fromF32(small, a, [M, K]);
      const out = Tensor.empty(small, [M, N]);
      linear(small, x, W, out);
      assertClose(await out.read(small), ref.matmul(a, M, K, values, N), { atol: 1e-4, rtol: 1e-4 }, "split");
      const emb = Tensor.empty(small, [ids.length, K]);
      embedding(small, Tensor.fromU32(small, ids, [ids.length]), table, emb);
      assertClose(await emb.read(small), ref.embedding(ids, values, K), { atol: 0 }, "split embedding");
      assert.throws(() => Tensor.empty(small, [2000]), /binding limit/);
    } finally {
      small.destroy();
    }
  },
});

Deno.test({
  name: "embedding: f32 table, repeated ids (exact)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const V = 13, d = 7, ids = [3, 0, 12, 3, 5];
    const table = randn(V * d, 9);
    const out = Tensor.empty(gpu, [ids.length, d]);
    embedding(gpu, Tensor.fromU32(gpu, ids, [ids.length]), Tensor.fromF32(gpu, table, [V, d]), out);
    assertClose(await out.read(gpu), ref.embedding(ids, table, d), { atol: 0 }, "embedding");
  },
});

Deno.test({
  name: "rmsnorm: dims 1, 63, 130 (rtol 1e-5)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (const d of [1, 63, 130]) {
      const rows = 11, x = randn(rows * d, d), w = randn(d, d + 1);
      const y = Tensor.empty(gpu, [rows, d]), rstd = Tensor.empty(gpu, [rows]);
      rmsnorm(gpu, Tensor.fromF32(gpu, x, [rows, d]), Tensor.fromF32(gpu, w, [d]), 1e-6, y, rstd);
      const want = ref.rmsnorm(x, w, 1e-6);
      assertClose(await y.read(gpu), want.y, { atol: 1e-5, rtol: 1e-5 }, `y d=${d}`);
      assertClose(await rstd.read(gpu), want.rstd, { atol: 0, rtol: 1e-5 }, `rstd d=${d}`);
    }
  },
});

const attnCases = [
  { name: "MHA (GQA ratio 1), T=67", batch: 2, t: 67, heads: 3, kvHeads: 3, headDim: 8, starts: [0, 0] },
  {
    name: "GQA ratio 4, left padding",
    batch: 3,
    t: 19,
    heads: 8,
    kvHeads: 2,
    headDim: 16,
    starts: [0, 5, 18],
  },
  { name: "GQA ratio 2, head_dim 6", batch: 1, t: 70, heads: 4, kvHeads: 2, headDim: 6, starts: [3] },
  // head dims past the 64 invocations of a row workgroup, keys past its 64-key chunk, a fully padded row
  { name: "GQA ratio 2, head_dim 72", batch: 2, t: 66, heads: 2, kvHeads: 1, headDim: 72, starts: [0, 4] },
];
for (const c of attnCases) {
  Deno.test({
    name: `rope + attention: ${c.name} (atol 2e-5)`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const s = { ...c, tCache: c.t, past: 0 };
      const rows = c.batch * c.t, all = c.heads + 2 * c.kvHeads;
      const qkv = randn(rows * all * c.headDim, 11);
      const pos = Array.from(
        { length: rows },
        (_, r) => Math.max(0, (r % c.t) - c.starts[Math.floor(r / c.t)]),
      );
      const table = ropeTable(inverseFrequencies({ headDim: c.headDim, theta: 10000 }), c.t);
      const q = Tensor.empty(gpu, [rows, c.heads * c.headDim]);
      const kc = Tensor.empty(gpu, [rows, c.kvHeads * c.headDim]),
        vc = Tensor.empty(gpu, [rows, c.kvHeads * c.headDim]);
      qkvRope(
        gpu,
        s,
        Tensor.fromF32(gpu, qkv, [rows, all * c.headDim]),
        Tensor.fromU32(gpu, c.starts, [c.batch]), // positions follow from the starts: r % t - starts[b]
        Tensor.fromF32(gpu, table, [table.length]),
        q,
        kc,
        vc,
      );
      const rkc = new Float64Array(kc.numel), rvc = new Float64Array(vc.numel);
      const rq = ref.qkvRope(s, qkv, pos, table, rkc, rvc);
      assertClose(await q.read(gpu), rq, { atol: 1e-5 }, "q");
      assertClose(await kc.read(gpu), rkc, { atol: 1e-5 }, "k cache");
      assertClose(await vc.read(gpu), rvc, { atol: 0 }, "v cache");
      const o = Tensor.empty(gpu, [rows, c.heads * c.headDim]),
        lse = Tensor.empty(gpu, [c.batch * c.heads * c.t]);
      const want = ref.attention(s, rq, rkc, rvc, c.starts);
      const wl = Array.from(want.lse, (x) => x === -Infinity ? -3e38 : x);
      // an invocation per query (CPU adapters' default), a workgroup per query row, and flash tiles (GPUs')
      for (const kernel of ["invocation", "rows", "flash"] as const) {
        attention(gpu, s, q, kc, vc, Tensor.fromU32(gpu, c.starts, [c.batch]), o, lse, { kernel });
        assertClose(await o.read(gpu), want.o, { atol: 2e-5 }, `o (${kernel})`);
        assertClose(await lse.read(gpu), wl, { atol: 2e-5, rtol: 1e-6 }, `lse (${kernel})`);
      }
    },
  });
}

for (
  const c of [
    { T: 9, heads: 4, kvHeads: 2, headDim: 8, starts: [0, 2], tCache: 12, prefill: 6 },
    // keys past one 64-key chunk of the decode kernel, and head dims past its 64 invocations
    { T: 150, heads: 4, kvHeads: 1, headDim: 72, starts: [0, 70], tCache: 160, prefill: 136 },
  ]
) {
  Deno.test({
    name:
      `attention with a KV cache: decoding token by token equals one full pass, T ${c.T}, head dim ${c.headDim} ` +
      `(atol 2e-5); the rows and invocation layouts and split decoding equal it (atol 2e-6 + rtol 1e-5)`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const { T, heads, kvHeads, headDim, starts, tCache } = c, batch = 2;
      const cache = () =>
        Tensor.fromF32(gpu, new Float32Array(batch * tCache * kvHeads * headDim), [
          batch * tCache,
          kvHeads * headDim,
        ]);
      const kc = cache(), vc = cache();
      const qkvAll = randn(batch * T * (heads + 2 * kvHeads) * headDim, 21);
      const width = (heads + 2 * kvHeads) * headDim;
      const table = ropeTable(inverseFrequencies({ headDim, theta: 10000 }), tCache);
      const cs = Tensor.fromF32(gpu, table, [table.length]), st = Tensor.fromU32(gpu, starts, [batch]);
      const outs: Float32Array[] = [];
      // prefill, then single steps
      const steps = [
        [0, c.prefill],
        ...Array.from({ length: T - c.prefill }, (_, i) => [c.prefill + i, c.prefill + i + 1]),
      ];
      for (const [t0, t1] of steps) {
        const t = t1 - t0;
        const qkv = new Float32Array(batch * t * width);
        for (let b = 0; b < batch; b++) {
          for (let i = 0; i < t; i++) {
            qkv.set(
              qkvAll.subarray((b * T + t0 + i) * width, (b * T + t0 + i + 1) * width),
              (b * t + i) * width,
            );
          }
        }
        const s = { batch, t, tCache, past: t0, heads, kvHeads, headDim };
        const q = Tensor.empty(gpu, [batch * t, heads * headDim]),
          o = Tensor.empty(gpu, [batch * t, heads * headDim]);
        const lse = Tensor.empty(gpu, [batch * heads * t]);
        qkvRope(
          gpu,
          s,
          Tensor.fromF32(gpu, qkv, [batch * t, width]),
          st, // the rows' positions, t0 + i - starts[b], are computed on the GPU
          cs,
          q,
          kc,
          vc,
        );
        attention(gpu, s, q, kc, vc, st, o, lse);
        outs.push(await o.read(gpu));
        if (t === 1) {
          // both decode layouts (rows on GPUs, invocations on CPU adapters) give the same
          for (const kernel of ["rows", "invocation"] as const) {
            const o2 = Tensor.empty(gpu, [batch, heads * headDim]), lse2 = Tensor.empty(gpu, [batch * heads]);
            attention(gpu, s, q, kc, vc, st, o2, lse2, { kernel });
            const [a, b, la, lb] = await Tensor.readMany(gpu, [o, o2, lse, lse2]);
            assertClose(b, a, { atol: 2e-6, rtol: 1e-5 }, `${kernel}, past ${t0}: o`);
            assertClose(lb, la, { atol: 2e-6, rtol: 1e-6 }, `${kernel}, past ${t0}: lse`);
          }
          // split decoding (GPUs, long contexts): slices of 7 and of 64 keys, merged, give the same
          for (const splitKeys of [7, 64]) {
            const o2 = Tensor.empty(gpu, [batch, heads * headDim]), lse2 = Tensor.empty(gpu, [batch * heads]);
            attention(gpu, s, q, kc, vc, st, o2, lse2, { splitKeys });
            const [a, b, la, lb] = await Tensor.readMany(gpu, [o, o2, lse, lse2]);
            assertClose(b, a, { atol: 2e-6, rtol: 1e-5 }, `split ${splitKeys}, past ${t0}: o`);
            assertClose(lb, la, { atol: 2e-6, rtol: 1e-6 }, `split ${splitKeys}, past ${t0}: lse`);
          }
        }
      }
      // reference: full pass
      const pos = Array.from(
        { length: batch * T },
        (_, r) => Math.max(0, (r % T) - starts[Math.floor(r / T)]),
      );
      const s = { batch, t: T, tCache: T, past: 0, heads, kvHeads, headDim };
      const rkc = new Float64Array(batch * T * kvHeads * headDim), rvc = new Float64Array(rkc.length);
      const rq = ref.qkvRope(s, qkvAll, pos, table, rkc, rvc);
      const want = ref.attention(s, rq, rkc, rvc, starts).o;
      const D = heads * headDim;
      for (let si = 0; si < steps.length; si++) {
        const [t0, t1] = steps[si];
        for (let b = 0; b < batch; b++) {
          for (let i = 0; i < t1 - t0; i++) {
            const got = outs[si].subarray((b * (t1 - t0) + i) * D, (b * (t1 - t0) + i + 1) * D);
            assertClose(
              got,
              want.subarray((b * T + t0 + i) * D, (b * T + t0 + i + 1) * D),
              { atol: 2e-5 },
              `step ${si} b${b}`,
            );
          }
        }
      }
    },
  });
}

Deno.test({
  name: "swiglu and residual add (rtol 1e-5)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 7, inter = 43, gu = randn(rows * 2 * inter, 31);
    const out = Tensor.empty(gpu, [rows, inter]);
    swiglu(gpu, Tensor.fromF32(gpu, gu, [rows, 2 * inter]), out, rows, inter);
    assertClose(await out.read(gpu), ref.swiglu(gu, rows, inter), { atol: 1e-6, rtol: 1e-5 }, "swiglu");
    const a = randn(101, 32), b = randn(101, 33);
    const ta = Tensor.fromF32(gpu, a, [101]);
    addInPlace(gpu, ta, Tensor.fromF32(gpu, b, [101]), -0.5);
    assertClose(await ta.read(gpu), a.map((x, i) => x - 0.5 * b[i]), { atol: 1e-6 }, "add");
  },
});

Deno.test({
  name:
    "cross-entropy with loss mask, V=1000 and V=3, 64 and 256 invocations per row (atol 1e-5 + rtol 1e-5)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (const [V, wg] of [[1000, 64], [3, 64], [1000, 256], [3, 256]] as const) {
      const rows = 6,
        logits = randn(rows * V, V, 3),
        targets = [0, V - 1, 1, 2, 0, 1],
        mask = [1, 0, 1, 1, 0.5, 1];
      const loss = Tensor.empty(gpu, [rows]), lse = Tensor.empty(gpu, [rows]);
      crossEntropy(
        gpu,
        Tensor.fromF32(gpu, logits, [rows, V]),
        Tensor.fromU32(gpu, targets, [rows]),
        Tensor.fromF32(gpu, mask, [rows]),
        loss,
        lse,
        { wg },
      );
      const want = ref.crossEntropy(logits, targets, mask);
      assertClose(await loss.read(gpu), want.loss, { atol: 1e-5, rtol: 1e-5 }, `loss V=${V}, ${wg} per row`);
      assertClose(await lse.read(gpu), want.lse, { atol: 1e-5, rtol: 1e-5 }, `lse V=${V}, ${wg} per row`);
    }
  },
});

Deno.test({
  name: "a shader error names the kernel",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    let msg = "";
    try {
      // W_BINDING missing: the include's binding attribute is invalid WGSL
      gpu.kernel("matmul", "tile", { W_DTYPE: "f32", W_BINDING: "x", TM: 4, TN: 4, WGS: 16 });
      await gpu.submit();
    } catch (e) {
      msg = (e as Error).message;
    }
    assert.match(msg, /matmul:tile/);
    void f32bits;
  },
});

Deno.test({
  name: "more dispatches than the params arena holds: earlier readbacks still resolve, results stay right",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const a = Tensor.fromF32(gpu, new Float32Array(64).fill(0), [64]);
    const one = Tensor.fromF32(gpu, new Float32Array(64).fill(1), [64]);
    addInPlace(gpu, a, one);
    const early = a.read(gpu); // scheduled (and submitted) before the flood below
    const first = await early;
    assert.equal(first[0], 1);
    const pending = gpu.readLater(a.raw.buffer, 0, 64 * 4);
    for (let i = 0; i < 9000; i++) addInPlace(gpu, a, one); // > 8192 dispatches: the arena flushes mid-way
    const last = a.read(gpu);
    assert.equal(new Float32Array(await pending)[0], 1, "a readback scheduled before the flush resolves");
    assert.equal((await last)[0], 9001);
  },
});

Deno.test({
  name: "argmax on the GPU equals its twin: ties, -inf, NaN, V = 1, 7, 300 and 151936 (exact)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (const V of [1, 7, 300, 151936]) {
      const rows = 5;
      const x = randn(rows * V, V);
      if (V > 1) {
        // row 1: a tie between two maxima (the first wins); row 2: all -inf but one NaN (host gives 0)
        x[V + V - 1] = x[V + 1] = 9;
        for (let j = 0; j < V; j++) x[2 * V + j] = -Infinity;
        x[2 * V + V - 1] = NaN;
        x[3 * V + 0] = -Infinity; // row 3: -inf at index 0 must not win
      }
      const logits = Tensor.fromF32(gpu, x, [rows, V]);
      const next = Tensor.empty(gpu, [rows], "u32");
      const hist = Tensor.empty(gpu, [3 * rows], "u32");
      argmax(gpu, logits, next, hist, rows);
      const got = await next.readU32(gpu), h = await hist.readU32(gpu);
      const want = Array.from({ length: rows }, (_, r) => ref.argmax(x.subarray(r * V, (r + 1) * V)));
      assert.deepEqual([...got], want, `V = ${V}`);
      assert.deepEqual([...h.subarray(rows, 2 * rows)], want, `V = ${V}: history at its offset`);
      for (const t of [logits, next, hist]) t.dispose();
    }
  },
});

Deno.test({
  name:
    "sampling on the GPU equals its f64 twin (same hash): temperatures 0.3-1.5, top-p 1 / 0.9 / 0.2, V = 7, 1000, 151936 (same id, or a near-tie within 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    let nearTies = 0, draws = 0;
    for (const V of [7, 1000, 151936]) {
      const rows = V > 1000 ? 3 : 16;
      const x = randn(rows * V, V + 1, 3);
      if (V === 1000) {
        x[5] = x[6] = 9; // row 0: a tie at the top, both in every nucleus
        x[V + 3] = NaN; // row 1: NaN and -inf never drawn
        x[V + 4] = -Infinity;
      }
      const logits = Tensor.fromF32(gpu, x, [rows, V]);
      const next = Tensor.empty(gpu, [rows], "u32"), hist = Tensor.empty(gpu, [2 * rows], "u32");
      for (const [temperature, topP] of [[1, 1], [0.3, 0.9], [1.5, 0.9], [1, 0.2]]) {
        for (const step of [0, 7]) {
          const d = { temperature, topP, seed: 1234, step };
          sampleTokens(gpu, logits, next, hist, rows, d);
          const got = await next.readU32(gpu), h = await hist.readU32(gpu);
          assert.deepEqual([...h.subarray(rows)], [...got], "history at its offset");
          for (let r = 0; r < rows; r++) {
            const w = ref.sampleDraw(x.subarray(r * V, (r + 1) * V), { ...d, row: r }, hashU32);
            const what = `V ${V}, T ${temperature}, top-p ${topP}, step ${step}, row ${r}`;
            assert.ok(Number.isFinite(w.score[got[r]]), `${what}: drew ${got[r]} outside the nucleus`);
            draws++;
            if (got[r] !== w.id) {
              assert.ok(w.score[w.id] - w.score[got[r]] < 1e-4, `${what}: drew ${got[r]}, twin ${w.id}`);
              nearTies++;
            }
          }
        }
      }
      for (const t of [logits, next, hist]) t.dispose();
    }
    assert.ok(nearTies <= 2, `${nearTies} of ${draws} draws differ from the twin by a near-tie`);
  },
});

Deno.test({
  name:
    "sampling on the GPU: frequencies over 16,384 rows follow softmax(x / T) within 5 sigma, top-p renormalised; seeds and steps give new draws",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const row = [2, 1, 0.5, 0, -1, -3], V = row.length, rows = 16384;
    const x = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) x.set(row, r * V);
    const logits = Tensor.fromF32(gpu, x, [rows, V]);
    const next = Tensor.empty(gpu, [rows], "u32"), hist = Tensor.empty(gpu, [rows], "u32");
    const draw = async (d: { temperature: number; topP: number; seed: number; step: number }) => {
      sampleTokens(gpu, logits, next, hist, 0, d);
      return await next.readU32(gpu);
    };
    for (const [temperature, topP] of [[1, 1], [0.7, 1], [1, 0.8]]) {
      const got = await draw({ temperature, topP, seed: 5, step: 0 });
      const w = row.map((v) => Math.exp(v / temperature));
      // the nucleus: the fewest top tokens holding topP of the mass (these logits are distinct)
      const total = w.reduce((a, b) => a + b, 0);
      let keep = 0, cum = 0;
      while (cum < topP * total) cum += w[keep++];
      const z = w.slice(0, keep).reduce((a, b) => a + b, 0);
      for (let i = 0; i < V; i++) {
        const p = i < keep ? w[i] / z : 0;
        const n = got.filter((t) => t === i).length;
        const sigma = Math.sqrt(rows * p * (1 - p));
        assert.ok(
          Math.abs(n - rows * p) <= 5 * sigma + (p === 0 ? 0 : 1),
          `T ${temperature}, top-p ${topP}: token ${i} drawn ${n} times, expected ${(rows * p).toFixed(0)}`,
        );
      }
    }
    const a = await draw({ temperature: 1, topP: 1, seed: 5, step: 0 });
    assert.deepEqual(
      [...await draw({ temperature: 1, topP: 1, seed: 5, step: 0 })],
      [...a],
      "same seed and step",
    );
    const diff = (b: Uint32Array) => b.filter((t, i) => t !== a[i]).length;
    assert.ok(diff(await draw({ temperature: 1, topP: 1, seed: 6, step: 0 })) > rows / 4, "another seed");
    assert.ok(diff(await draw({ temperature: 1, topP: 1, seed: 5, step: 1 })) > rows / 4, "another step");
    for (const t of [logits, next, hist]) t.dispose();
  },
});
