// kernels/matmul.wgsl and gemv.wgsl against their f64 twins (tests/ref/ops.ts): every operand layout, the tile
// shapes a GPU picks (forced here: the CPU adapters' own pick is 8x8 / 8x4), groups, dropout on an operand,
// summed input slices, k-splits into slices and through the reduction, the fused LoRA products, chunked
// and packed weights, and the decode-step fusions (norm, RoPE, SwiGLU, LoRA, argmax).
// Tolerances: f32 GPU sums vs f64, inputs ~N(0, 1): atol 1e-4 + rtol 1e-4 up to K ~ 100, 1e-3 past it.
// Few variants on purpose: llvmpipe's GL compiler takes seconds per cold variant.

import assert from "node:assert/strict";
import { Gpu } from "../lib/gpu/context.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, Tensor } from "../lib/tensor.ts";
import { type LoraPhase, matmul, type MatmulSpec, type Tile } from "../lib/ops/matmul.ts";
import { argmaxFinal } from "../lib/ops/sample.ts";
import { gemv, gemvArgmaxGroups } from "../lib/ops/gemv.ts";
import * as ref from "./ref/ops.ts";
import { assertClose, gpuTest, randn, testGpu } from "./helpers.ts";

function packHalf(x: Float32Array, kind: "bf16" | "f16"): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(x.length), values = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    bits[i] = kind === "bf16" ? f32ToBf16(x[i]) : f32ToF16(x[i]);
    values[i] = kind === "bf16" ? bf16ToF32(bits[i]) : f16ToF32(bits[i]);
  }
  return { bits, values };
}

const T = (gpu: Gpu, x: Float32Array, shape: number[]) => Tensor.fromF32(gpu, x, shape);

/** Run one spec on the GPU and its twin; the output starts as `c0`. */
async function check(
  gpu: Gpu,
  s: Omit<MatmulSpec, "a" | "w" | "out" | "bias" | "residual" | "lora"> & {
    a: Float32Array;
    w: Float32Array;
    c0: Float32Array;
    bias?: Float32Array;
    residual?: Float32Array;
    lora?: Omit<LoraPhase, "input" | "w"> & { input: Float32Array; w: Float32Array };
    /** W as packed half values (their rounded values go to the twin) */
    half?: "bf16" | "f16";
  },
  tol: { atol: number; rtol: number },
  what: string,
): Promise<void> {
  const wKN = s.wLayout === "kn";
  const N = s.N ?? 0, K = s.K ?? 0;
  let w: Tensor, wValues: ArrayLike<number> = s.w;
  if (s.half) {
    const p = packHalf(s.w, s.half);
    w = Tensor.upload(gpu, p.bits, [s.w.length / K, K], s.half);
    wValues = p.values;
  } else w = T(gpu, s.w, [s.w.length]);
  const out = T(gpu, s.c0, [s.c0.length]);
  const lora = s.lora
    ? {
      ...s.lora,
      input: T(gpu, s.lora.input, [s.lora.input.length]),
      w: T(gpu, s.lora.w, [s.lora.w.length]),
    }
    : undefined;
  const lda = s.lda ?? (s.aLayout === "km" ? s.M : K);
  const ldw = s.ldw ?? (wKN ? N : K);
  const ldc = s.ldc!;
  matmul(gpu, {
    ...s,
    a: T(gpu, s.a, [s.a.length]),
    w,
    out,
    lda,
    ldw,
    ldc,
    N,
    K,
    bias: s.bias ? T(gpu, s.bias, [s.bias.length]) : undefined,
    residual: s.residual ? T(gpu, s.residual, [s.residual.length]) : undefined,
    lora,
  });
  const want = ref.matmulGeneral({
    a: s.a,
    w: wValues,
    N,
    K,
    aKM: s.aLayout === "km",
    wKN,
    lda,
    ldw,
    ldc,
    c: s.c0,
    groups: s.groups ??
      [{ m: s.M, aOff: s.aOff, wOff: s.wOff, colOffset: s.colOffset, rowOffset: s.rowOffset }],
    alpha: s.alpha,
    bias: s.bias,
    residual: s.residual,
    accumulate: s.accumulate,
    dropout: s.dropout,
    sum: s.sum,
    lora: s.lora,
  });
  assertClose(await out.read(gpu), want, tol, what);
}

const TILES: Tile[] = [{ tm: 8, tn: 8 }, { tm: 4, tn: 8 }, { tm: 8, tn: 4 }, { tm: 4, tn: 4 }, {
  tm: 2,
  tn: 4,
}, {
  tm: 8,
  tn: 8,
  wgs: 8,
}, { tm: 2, tn: 4, wgs: 8 }];
const tileName = (t: Tile) => `${t.tm}x${t.tn}/${t.wgs ?? 16}`;
const tol = { atol: 1e-4, rtol: 1e-4 }, tolK = { atol: 1e-3, rtol: 1e-4 };

Deno.test({
  name: "matmul: y = x W^T + bias + residual on every tile shape, odd sizes (atol 1e-4 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (const tile of TILES) {
      for (const [M, K, N] of [[37, 29, 83], [130, 16, 9]]) {
        await check(
          gpu,
          {
            a: randn(M * K, 1),
            w: randn(N * K, 2),
            c0: new Float32Array(M * N),
            bias: randn(N, 3),
            residual: randn(M * N, 4),
            M,
            N,
            K,
            ldc: N,
            tile,
          },
          tol,
          `nk ${tileName(tile)} ${M}x${K}x${N}`,
        );
      }
    }
  },
});

Deno.test({
  name: "matmul: transposed layouts, offsets, accumulate, alpha, k-splits through the reduction (atol 1e-3)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // dW = dy^T x: A [K, M] (km) x W [K, N] (kn), 3 k-slices, accumulated with alpha into rows 2.. of a wider C
    const M = 150, K = 700, N = 131;
    await check(
      gpu,
      {
        a: randn(M * K, 11),
        aLayout: "km",
        w: randn(K * N, 12),
        wLayout: "kn",
        c0: randn((M + 2) * (N + 3), 13),
        M,
        N,
        K,
        ldc: N + 3,
        rowOffset: 2,
        colOffset: 3,
        accumulate: true,
        alpha: 0.5,
        tile: { tm: 4, tn: 8 },
        splitK: 3,
      },
      tolK,
      "km x kn, split 3, accumulate",
    );
    // a window of A and of W (offsets, leading dimensions past the row), split with bias and residual
    await check(
      gpu,
      {
        a: randn(60 * 300, 14),
        aOff: 5,
        lda: 300,
        w: randn(40 * 290, 15),
        wOff: 7,
        ldw: 290,
        c0: new Float32Array(50 * 40),
        bias: randn(40, 16),
        residual: randn(50 * 40, 17),
        M: 50,
        N: 40,
        K: 280,
        ldc: 40,
        tile: { tm: 2, tn: 4 },
        splitK: 4,
      },
      tolK,
      "windows, split 4, bias + residual",
    );
  },
});

Deno.test({
  name: "matmul: packed bf16 / f16 weights (and native f16 where the adapter has it), chunked weights " +
    "(atol 1e-4 + rtol 1e-4 vs the rounded weights)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const M = 45, K = 66, N = 70;
    for (const half of ["bf16", "f16"] as const) {
      for (const native of half === "f16" && gpu.caps.shaderF16 ? [false, true] : [false]) {
        gpu.useNativeF16 = native;
        await check(
          gpu,
          { a: randn(M * K, 5), w: randn(N * K, 6), half, c0: new Float32Array(M * N), M, N, K, ldc: N },
          tol,
          `${half}${native ? " native" : ""}`,
        );
      }
    }
    gpu.useNativeF16 = true;
    // weights split into row chunks: [N, K] chunks are column blocks of C, [K, N] chunks k-blocks summed
    const small = await Gpu.create({ maxBindingBytes: 8192 });
    try {
      for (const kn of [false, true]) {
        const Mc = 20, Kc = 90, Nc = 60, a = randn(Mc * Kc, 7), w = randn(Nc * Kc, 8);
        const W = Tensor.fromF32(small, w, kn ? [Kc, Nc] : [Nc, Kc]);
        assert.ok(W.chunks.length > 1, "the weight is split");
        const out = Tensor.empty(small, [Mc, Nc]);
        matmul(small, { a: Tensor.fromF32(small, a, [Mc, Kc]), w: W, wLayout: kn ? "kn" : "nk", M: Mc, out });
        assertClose(
          await out.read(small),
          ref.matmul(a, Mc, Kc, w, Nc, { wKN: kn }),
          tol,
          `chunked ${kn ? "kn" : "nk"}`,
        );
      }
    } finally {
      small.destroy();
    }
  },
});

Deno.test({
  name: "matmul: groups with their own rows, depth, offsets and dropout seeds; summed input slices; output " +
    "slices (atol 1e-4 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // u = dropout(x) A^T for three modules: x [R, d], stacked A [3r, d], u [R, 3r]; each group its own mask
    const R = 70, d = 40, r = 12, p = 0.3;
    const groups = [0, 1, 2].map((s) => ({ m: R, wOff: s * r * d, colOffset: s * r, seed: 100 + s }));
    for (const tile of [{ tm: 2, tn: 4 }, { tm: 8, tn: 8 }, { tm: 8, tn: 8, wgs: 8 }] as Tile[]) {
      await check(
        gpu,
        {
          a: randn(R * d, 21),
          w: randn(3 * r * d, 22),
          c0: new Float32Array(R * 3 * r),
          M: R,
          N: r,
          K: d,
          ldc: 3 * r,
          groups,
          dropout: { operand: "a", p },
          tile,
        },
        tol,
        `u, dropout on A, ${tileName(tile)}`,
      );
    }
    // dA = du^T dropout(x): du [R, 2r] in 3 slices (summed as read), groups of r rows, dropout on W = x
    const du = randn(3 * R * 2 * r, 23);
    await check(
      gpu,
      {
        a: du,
        aLayout: "km",
        lda: 2 * r,
        w: randn(R * d, 24),
        wLayout: "kn",
        c0: randn(2 * r * d, 25),
        accumulate: true,
        M: r,
        N: d,
        K: R,
        ldc: d,
        groups: [0, 1].map((s) => ({ m: r, aOff: s * r, rowOffset: s * r, seed: 7 + s })),
        dropout: { operand: "w", p },
        sum: { operand: "a", slices: 3, stride: R * 2 * r },
        tile: { tm: 4, tn: 4 },
      },
      tol,
      "dA, summed A, dropout on W",
    );
    // dB = s dy^T u: groups of different widths (rows) and depths, W = u summed over 2 slices
    await check(
      gpu,
      {
        a: randn(R * 50, 26),
        aLayout: "km",
        lda: 50,
        w: randn(2 * R * 2 * r, 27),
        wLayout: "kn",
        ldw: 2 * r,
        c0: new Float32Array(50 * r),
        M: 0,
        N: r,
        K: R,
        ldc: r,
        alpha: 0.7,
        groups: [{ m: 30, aOff: 0, wOff: 0, rowOffset: 0 }, { m: 20, aOff: 30, wOff: r, rowOffset: 30 }],
        sum: { operand: "w", slices: 2, stride: R * 2 * r },
        tile: { tm: 2, tn: 4 },
      },
      tol,
      "dB, summed W, groups of 30 and 20 rows",
    );
    // du split into 4 output slices (their sum is the product), groups with their own depth
    const out = Tensor.fromF32(gpu, new Float32Array(4 * R * 2 * r).fill(9), [4 * R * 2 * r]);
    const a = randn(R * 60, 28), w = randn(60 * r, 29);
    matmul(gpu, {
      a: T(gpu, a, [R * 60]),
      lda: 60,
      w: T(gpu, w, [60 * r]),
      wLayout: "kn",
      ldw: r,
      N: r,
      K: 60,
      M: R,
      out,
      ldc: 2 * r,
      groups: [{ m: R, k: 40, aOff: 0, wOff: 0, colOffset: 0 }, {
        m: R,
        k: 20,
        aOff: 40,
        wOff: 40 * r,
        colOffset: r,
      }],
      slices: { count: 4, stride: R * 2 * r },
      tile: { tm: 2, tn: 4 },
    });
    const got = await out.read(gpu), sum = new Float64Array(R * 2 * r);
    for (let z = 0; z < 4; z++) for (let i = 0; i < sum.length; i++) sum[i] += got[z * sum.length + i];
    const want = ref.matmulGeneral({
      a,
      w,
      N: r,
      K: 60,
      wKN: true,
      lda: 60,
      ldw: r,
      ldc: 2 * r,
      c: new Float64Array(R * 2 * r),
      groups: [{ m: R, k: 40, aOff: 0, wOff: 0, colOffset: 0 }, {
        m: R,
        k: 20,
        aOff: 40,
        wOff: 40 * r,
        colOffset: r,
      }],
    });
    assertClose(sum, want, tol, "du in 4 output slices");
  },
});

Deno.test({
  name: "matmul: the fused LoRA products, forward (segments across tile edges) and backward into dx with " +
    "per-module dropout (atol 1e-4 + rtol 1e-4)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // qkv-like: 3 segments of widths 40, 24, 24 (not tile multiples), u [M, 3r] in 2 slices
    const M = 50, K = 36, r = 8, widths = [40, 24, 24], N = 88;
    const segments = [{ c0: 0, c1: 40, b0: 0, seed: 0 }, { c0: 40, c1: 64, b0: 40, seed: 0 }, {
      c0: 64,
      c1: 88,
      b0: 64,
      seed: 0,
    }];
    for (const tile of [{ tm: 8, tn: 8 }, { tm: 2, tn: 4 }, { tm: 8, tn: 8, wgs: 8 }] as Tile[]) {
      await check(
        gpu,
        {
          a: randn(M * K, 31),
          w: randn(N * K, 32),
          c0: new Float32Array(M * N),
          bias: randn(N, 33),
          M,
          N,
          K,
          ldc: N,
          tile,
          lora: {
            kind: "b",
            input: randn(2 * M * 3 * r, 34),
            ld: 3 * r,
            slices: 2,
            stride: M * 3 * r,
            w: randn(widths.reduce((a, b) => a + b) * r, 35),
            r,
            scale: 1.5,
            segments,
            p: 0,
          },
        },
        tol,
        `LoRA B ${tileName(tile)}`,
      );
    }
    // only two of three modules (a gap between segments), one slice
    await check(
      gpu,
      {
        a: randn(M * K, 36),
        w: randn(N * K, 37),
        c0: new Float32Array(M * N),
        M,
        N,
        K,
        ldc: N,
        tile: { tm: 4, tn: 4 },
        lora: {
          kind: "b",
          input: randn(M * 2 * r, 38),
          ld: 2 * r,
          slices: 1,
          stride: 0,
          w: randn(64 * r, 39),
          r,
          scale: 0.5,
          segments: [{ c0: 0, c1: 40, b0: 0, seed: 0 }, { c0: 64, c1: 88, b0: 40, seed: 0 }],
          p: 0,
        },
      },
      tol,
      "LoRA B, q and v only",
    );
    // backward: dx = dy W + sum_s mask_s * (du_s A_s): dy [M, N], W [N, K] as kn (K = inF), du [M, 3r]
    for (const p of [0, 0.25]) {
      for (const tile of [{ tm: 4, tn: 4 }, { tm: 8, tn: 8 }, { tm: 8, tn: 8, wgs: 8 }] as Tile[]) {
        await check(
          gpu,
          {
            a: randn(M * N, 41),
            w: randn(N * K, 42),
            wLayout: "kn",
            c0: new Float32Array(M * K),
            M,
            N: K,
            K: N,
            ldw: K,
            ldc: K,
            tile,
            lora: {
              kind: "a",
              input: randn(3 * M * 3 * r, 43),
              ld: 3 * r,
              slices: 3,
              stride: M * 3 * r,
              w: randn(3 * r * K, 44),
              r,
              scale: 1,
              segments: [0, 1, 2].map((s) => ({ c0: 0, c1: 0, b0: 0, seed: 50 + s })),
              p,
            },
          },
          tol,
          `LoRA A p ${p} ${tileName(tile)}`,
        );
      }
    }
  },
});

Deno.test({
  name: "gemv: decode products with the fused norm, bias, residual, LoRA, SwiGLU, RoPE into the caches and " +
    "the two-stage argmax, on both workgroup layouts (atol 1e-4 + rtol 1e-4; argmax exact)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const K = 64, N = 40, eps = 1e-5;
    for (const tiling of ["workgroup", "register"] as const) {
      for (const M of [1, 3, 8]) {
        const x = randn(M * K, 51),
          g = randn(K, 52),
          w = randn(N * K, 53),
          bias = randn(N, 54),
          res = randn(M * N, 55);
        const normed = ref.rmsnorm(x, g, eps).y;
        // norm + bias + residual + LoRA (segments [0, 24) and [24, 40), r 4)
        const u = randn(M * 8, 56), B = randn(N * 4, 57);
        const out = Tensor.empty(gpu, [M, N]);
        gemv(gpu, {
          x: T(gpu, x, [M, K]),
          w: T(gpu, w, [N, K]),
          M,
          out,
          bias: T(gpu, bias, [N]),
          residual: T(gpu, res, [M, N]),
          norm: { weight: T(gpu, g, [K]), eps },
          lora: {
            kind: "b",
            input: T(gpu, u, [M * 8]),
            ld: 8,
            slices: 1,
            stride: 0,
            w: T(gpu, B, [N * 4]),
            r: 4,
            scale: 2,
            segments: [{ c0: 0, c1: 24, b0: 0, seed: 0 }, { c0: 24, c1: 40, b0: 24, seed: 0 }],
            p: 0,
          },
          tiling,
        });
        const want = ref.matmulGeneral({
          a: normed,
          w,
          N,
          K,
          lda: K,
          ldw: K,
          ldc: N,
          c: new Float64Array(M * N),
          groups: [{ m: M }],
          bias,
          residual: res,
          lora: {
            kind: "b",
            input: u,
            ld: 8,
            slices: 1,
            stride: 0,
            w: B,
            r: 4,
            scale: 2,
            segments: [{ c0: 0, c1: 24, b0: 0, seed: 0 }, { c0: 24, c1: 40, b0: 24, seed: 0 }],
            p: 0,
          },
        });
        assertClose(await out.read(gpu), want, tol, `${tiling} M ${M}: norm, bias, residual, LoRA`);
        // SwiGLU pairs: out [M, N/2]
        const act = Tensor.empty(gpu, [M, N / 2]);
        gemv(gpu, { x: T(gpu, x, [M, K]), w: T(gpu, w, [N, K]), M, out: act, swiglu: true, tiling });
        const gu = ref.matmul(x, M, K, w, N);
        const wantAct = new Float64Array(M * N / 2);
        for (let m = 0; m < M; m++) {
          for (let i = 0; i < N / 2; i++) {
            const gv = gu[m * N + i], uv = gu[m * N + N / 2 + i];
            wantAct[m * N / 2 + i] = gv / (1 + Math.exp(-gv)) * uv;
          }
        }
        assertClose(await act.read(gpu), wantAct, tol, `${tiling} M ${M}: swiglu`);
        // argmax over 300 columns, with a tie between the largest two (the lower index wins)
        const V = 300, wl = randn(V * K, 58);
        for (let j = 0; j < K; j++) wl[250 * K + j] = wl[17 * K + j];
        const logits = ref.matmul(x, M, K, wl, V);
        const groups = gemvArgmaxGroups(gpu, V, tiling);
        const partials = Tensor.empty(gpu, [M * groups * 2], "u32");
        gemv(gpu, {
          x: T(gpu, x, [M, K]),
          w: T(gpu, wl, [V, K]),
          M,
          out: partials,
          argmax: { partials },
          tiling,
        });
        const next = Tensor.empty(gpu, [M], "u32"), hist = Tensor.empty(gpu, [2 * M], "u32");
        argmaxFinal(gpu, partials, M, groups, next, hist, M);
        const got = [...await next.readU32(gpu)];
        const wantIds = Array.from({ length: M }, (_, m) => ref.argmax(logits.subarray(m * V, (m + 1) * V)));
        assert.deepEqual(got, wantIds, `${tiling} M ${M}: argmax`);
        assert.deepEqual([...(await hist.readU32(gpu)).subarray(M)], wantIds, "history at its offset");
      }
    }
  },
});
