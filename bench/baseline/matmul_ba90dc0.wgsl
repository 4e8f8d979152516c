// The tile matmul of commit ba90dc0 (kept unchanged below this header): `deno task bench` times it beside
// kernels/matmul.wgsl's tile kernel in the same run, so the speed-up of the rewrite is measured, not
// remembered. Not used by the engine.
// Matrix multiply, the workhorse of forward and backward:
//   C[c_row_off + m, c_off + n] = alpha * sum_k A(m, k) * W(k, n)  (+ bias[c_off + n]) (+ R or + C)
// A is f32 with leading dimension lda, starting at element a_off:
//   default [M, K]: A(m, k) = a[a_off + m*lda + k]      A_KM [K, M]: A(m, k) = a[a_off + k*lda + m]
// W is a weight chunk in W_DTYPE storage (see packed.wgsl), or an f32 activation:
//   default [N, K] (nn.Linear.weight): W(k, n) = w[n*K + k]   (y = x W^T)
//   W_KN    [K, N]:                     W(k, n) = w[k*N + n]   (dx = dy W, dW = dy^T x)
// A weight split into row-chunks is handled by the caller: with [N, K] storage each chunk is a
// column block of C (c_off); with W_KN each chunk is a K-block, accumulated with ACCUMULATE.
// Variants: HAS_BIAS, RESIDUAL (C = R + ...; R may not alias C), ACCUMULATE (C += ...).
//
// The tilings, chosen by the op wrapper:
//   main        a 16x16 workgroup computes a 64x64 (TM = TN = 4) or 128x128 (TM = TN = 8) tile of C,
//               each invocation a TM x TN block strided by 16, staging BK = 16 deep tiles of A and W
//               in workgroup memory (for GPUs; any layout); SPLIT_K + splitk_reduce split a long k;
//   regtile     (REGTILE, [M,K] x [N,K], K, lda, a_off % 4 == 0) each invocation computes 8x8
//               outputs straight from memory with vec4 loads along k and no barriers;
//   regtile_kn  (REGTILE, W_KN, N % 4 == 0) the same with vec4 loads along n;
//   row_n8      (REGTILE + ROW_N8, N <= 8) one row of C per invocation, for the LoRA rank products;
//   gemv_wg / gemv_row  (GEMV, M <= 8, [M,K] x [N,K]) for decode steps, see below.
// On CPU adapters (llvmpipe, lavapipe) barriers are expensive and workgroup memory is just cache,
// so the register tilings run 5-10x faster there.

#include "packed"

// k_chunk: SPLIT_K, the depth of each k-slice; SPLIT_REDUCE, the number of slices.
struct Params {
  m: u32, n: u32, k: u32, ldc: u32,
  c_off: u32, a_off: u32, c_row_off: u32, alpha: f32,
  lda: u32, k_chunk: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
#ifdef GEMV
@group(0) @binding(1) var<storage, read> amat4: array<vec4<f32>>;
#else
#ifdef REGTILE
#ifndef W_KN
@group(0) @binding(1) var<storage, read> amat4: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> amat: array<f32>;
#endif
#else
@group(0) @binding(1) var<storage, read> amat: array<f32>;
#endif
#endif
@group(0) @binding(3) var<storage, read_write> cmat: array<f32>;
#ifdef HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef RESIDUAL
@group(0) @binding(5) var<storage, read> rmat: array<f32>;
#endif

fn store_c(m: u32, n: u32, acc: f32) {
  let ci = (params.c_row_off + m) * params.ldc + params.c_off + n;
  var v = params.alpha * acc;
#ifdef HAS_BIAS
  v += bias[params.c_off + n];
#endif
#ifdef RESIDUAL
  v += rmat[ci];
#endif
#ifdef ACCUMULATE
  v += cmat[ci];
#endif
  cmat[ci] = v;
}

#ifdef GEMV
// M <= 8 rows of A (K, lda and a_off multiples of 4) against W [N, K]: the projections and the LM head
// of a decode step, where a tile kernel computes 8 to 64 rows for each useful one.
//   gemv_wg   (GPUs) one 64-wide workgroup per output column n, striding along k with vec4 loads so
//             that neighbouring invocations read neighbouring words, then summing across itself;
//   gemv_row  (CPU adapters, no barriers) one invocation per n, streaming its weight row once.
// The up to 8 sums live in two vec4 with constant components (CPU adapters keep dynamically indexed
// private arrays in memory).
fn a4(m: u32, q: u32) -> vec4<f32> {
  return amat4[(params.a_off + m * params.lda) / 4u + q];
}

fn gemv_dot(n: u32, q0: u32, stride: u32, lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>) {
  let k4 = params.k / 4u;
  if (params.m == 1u) { // batch 1: the common decode case, without the per-row branches
    var s = vec4<f32>(0.0);
    let a0 = params.a_off / 4u;
    for (var q = q0; q < k4; q += stride) { s = fma(load_w4(n * k4 + q), amat4[a0 + q], s); }
    (*lo).x = s.x + s.y + s.z + s.w;
    return;
  }
  for (var q = q0; q < k4; q += stride) {
    let w = load_w4(n * k4 + q);
    (*lo).x += dot(w, a4(0u, q));
    if (params.m > 1u) { (*lo).y += dot(w, a4(1u, q)); }
    if (params.m > 2u) { (*lo).z += dot(w, a4(2u, q)); }
    if (params.m > 3u) { (*lo).w += dot(w, a4(3u, q)); }
    if (params.m > 4u) { (*hi).x += dot(w, a4(4u, q)); }
    if (params.m > 5u) { (*hi).y += dot(w, a4(5u, q)); }
    if (params.m > 6u) { (*hi).z += dot(w, a4(6u, q)); }
    if (params.m > 7u) { (*hi).w += dot(w, a4(7u, q)); }
  }
}

// Column n's first min(M, 8) outputs.
fn store_col8(n: u32, lo: vec4<f32>, hi: vec4<f32>) {
  store_c(0u, n, lo.x);
  if (1u < params.m) { store_c(1u, n, lo.y); }
  if (2u < params.m) { store_c(2u, n, lo.z); }
  if (3u < params.m) { store_c(3u, n, lo.w); }
  if (4u < params.m) { store_c(4u, n, hi.x); }
  if (5u < params.m) { store_c(5u, n, hi.y); }
  if (6u < params.m) { store_c(6u, n, hi.z); }
  if (7u < params.m) { store_c(7u, n, hi.w); }
}

var<workgroup> gemv_lo: array<vec4<f32>, WG>;
var<workgroup> gemv_hi: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn gemv_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let n = wg.y * nwg.x + wg.x;
  if (n >= params.n) { return; } // uniform per workgroup: the barriers below stay uniform
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  gemv_dot(n, lid.x, WG, &lo, &hi);
  gemv_lo[lid.x] = lo;
  gemv_hi[lid.x] = hi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      gemv_lo[lid.x] += gemv_lo[lid.x + s];
      gemv_hi[lid.x] += gemv_hi[lid.x + s];
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) { store_col8(n, gemv_lo[0], gemv_hi[0]); }
}

@compute @workgroup_size(WG)
fn gemv_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = gid.y * nwg.x * WG + gid.x;
  if (n >= params.n) { return; }
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  gemv_dot(n, 0u, 1u, &lo, &hi);
  store_col8(n, lo, hi);
}
#endif

#ifndef REGTILE
#ifndef GEMV
// Workgroup tiles for GPUs: 16 x 16 invocations, each computing TM x TN outputs strided by 16 (so the
// shared-memory reads of a warp are broadcasts along m and consecutive along n); TM = TN = 4 gives a
// 64 x 64 tile, TM = TN = 8 a 128 x 128 tile with 4 FMAs per shared load. Tiles are stored k-major with
// a stride of BM + 1 / BN + 1 floats, so that the transposing stores of a [M,K] / [N,K] operand do not
// all land in one bank.
// SPLIT_K: workgroup z computes the k-range [z * k_chunk, (z + 1) * k_chunk) and stores its partial
// sums to cmat[z * m * n + m * n + n] (no alpha, bias or residual); splitk_reduce adds the slices in
// order (deterministic) and applies them. For shapes with few tiles and a long k (dX of the LM head,
// LoRA's du = dy B, dA = du^T x), which would otherwise leave most of a GPU idle.
// the workgroup is TILE_WG x TILE_WG invocations (a define shared with lib/ops/matmul.ts)
const WG_SIDE: u32 = TILE_WG;
const BM = WG_SIDE * TM;
const BN = WG_SIDE * TN;
const BK = 16u;
const SA = BM + 1u;
const SW = BN + 1u;
var<workgroup> a_tile: array<f32, BK * SA>; // [BK][BM (+1)]
var<workgroup> w_tile: array<f32, BK * SW>; // [BK][BN (+1)]

fn load_a(m: u32, k: u32, k_hi: u32) -> f32 {
  if (m >= params.m || k >= k_hi) { return 0.0; }
#ifdef A_KM
  return amat[params.a_off + k * params.lda + m];
#else
  return amat[params.a_off + m * params.lda + k];
#endif
}

fn load_wt(k: u32, n: u32, k_hi: u32) -> f32 {
  if (n >= params.n || k >= k_hi) { return 0.0; }
#ifdef W_KN
  return load_w(k * params.n + n);
#else
  return load_w(n * params.k + k);
#endif
}

@compute @workgroup_size(TILE_WG, TILE_WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  let t = lid.y * WG_SIDE + lid.x;
#ifdef SPLIT_K
  let k_lo = wg.z * params.k_chunk;
  let k_hi = min(params.k, k_lo + params.k_chunk);
#else
  let k_lo = 0u;
  let k_hi = params.k;
#endif
  var acc: array<f32, TM * TN>;
  for (var i = 0u; i < TM * TN; i++) { acc[i] = 0.0; }

  for (var k0 = k_lo; k0 < k_hi; k0 += BK) {
    for (var i = 0u; i < BM * BK / 256u; i++) {
      let e = t + i * 256u;
#ifdef A_KM
      let ar = e % BM; let ak = e / BM;
#else
      let ar = e / BK; let ak = e % BK;
#endif
      a_tile[ak * SA + ar] = load_a(m0 + ar, k0 + ak, k_hi);
    }
    for (var i = 0u; i < BN * BK / 256u; i++) {
      let e = t + i * 256u;
#ifdef W_KN
      let wc = e % BN; let wk = e / BN;
#else
      let wc = e / BK; let wk = e % BK;
#endif
      w_tile[wk * SW + wc] = load_wt(k0 + wk, n0 + wc, k_hi);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var av: array<f32, TM>;
      var wv: array<f32, TN>;
      for (var i = 0u; i < TM; i++) { av[i] = a_tile[kk * SA + lid.y + WG_SIDE * i]; }
      for (var j = 0u; j < TN; j++) { wv[j] = w_tile[kk * SW + lid.x + WG_SIDE * j]; }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
          acc[i * TN + j] = fma(av[i], wv[j], acc[i * TN + j]);
        }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < TM; i++) {
    let m = m0 + lid.y + WG_SIDE * i;
    if (m >= params.m) { continue; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + lid.x + WG_SIDE * j;
      if (n < params.n) {
#ifdef SPLIT_K
        cmat[(wg.z * params.m + m) * params.n + n] = acc[i * TN + j];
#else
        store_c(m, n, acc[i * TN + j]);
#endif
      }
    }
  }
}
#endif
#endif

#ifdef SPLIT_REDUCE
// C = alpha * (sum of the k-slices of a SPLIT_K run, in slice order) (+ bias, residual, accumulate).
@group(0) @binding(6) var<storage, read> partial: array<f32>;

@compute @workgroup_size(WG)
fn splitk_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid.x;
  if (i >= params.m * params.n) { return; }
  var s = 0.0;
  for (var z = 0u; z < params.k_chunk; z++) { s += partial[z * params.m * params.n + i]; }
  store_c(i / params.n, i % params.n, s);
}
#endif

#ifdef REGTILE
// Row m's first min(N, 8) outputs, written with constant component indices (a dynamically indexed
// vector or array would be kept in memory by CPU adapters).
fn store_row8(m: u32, lo: vec4<f32>, hi: vec4<f32>) {
  store_c(m, 0u, lo.x);
  if (1u < params.n) { store_c(m, 1u, lo.y); }
  if (2u < params.n) { store_c(m, 2u, lo.z); }
  if (3u < params.n) { store_c(m, 3u, lo.w); }
  if (4u < params.n) { store_c(m, 4u, hi.x); }
  if (5u < params.n) { store_c(m, 5u, hi.y); }
  if (6u < params.n) { store_c(m, 6u, hi.z); }
  if (7u < params.n) { store_c(m, 7u, hi.w); }
}

// Each invocation computes RM x RN outputs; the workgroup is WG_X (along n) x WG_Y (along m)
// invocations — four defines shared with lib/ops/matmul.ts, which sizes the dispatch from them.
// N <= 8 (LoRA rank products) goes to row_n8 instead, so that the SIMD lanes of a CPU adapter all work
// on different rows instead of idling on columns past N.

#ifndef W_KN
@compute @workgroup_size(WG_X, WG_Y)
fn regtile(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * RM;
  let n0 = gid.x * RN;
  if (m0 >= params.m || n0 >= params.n) { return; } // no barriers here, so early exit is fine
  let k4 = params.k / 4u;
  var acc: array<array<f32, RN>, RM>;
  var arow: array<u32, RM>;
  var wrow: array<u32, RN>;
  // clamp rows instead of branching in the inner loop; out-of-range results are not stored
  for (var i = 0u; i < RM; i++) { arow[i] = (params.a_off + min(m0 + i, params.m - 1u) * params.lda) / 4u; }
  for (var j = 0u; j < RN; j++) { wrow[j] = min(n0 + j, params.n - 1u) * k4; }
  for (var kk = 0u; kk < k4; kk++) {
    var wv: array<vec4<f32>, RN>;
    for (var j = 0u; j < RN; j++) { wv[j] = load_w4(wrow[j] + kk); }
    for (var i = 0u; i < RM; i++) {
      let av = amat4[arow[i] + kk];
      for (var j = 0u; j < RN; j++) { acc[i][j] += dot(av, wv[j]); }
    }
  }
  for (var i = 0u; i < RM; i++) {
    let m = m0 + i;
    if (m >= params.m) { break; }
    for (var j = 0u; j < RN; j++) {
      let n = n0 + j;
      if (n < params.n) { store_c(m, n, acc[i][j]); }
    }
  }
}

#ifdef ROW_N8
// One output row per invocation and at most 8 columns (N <= 8: the LoRA product u = x A^T), as
// row_n8 below for [K, N] weights: eight accumulators in registers, vec4 loads along k.
@compute @workgroup_size(WG)
fn row_n8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m = gid.x;
  if (m >= params.m) { return; }
  let k4 = params.k / 4u;
  let arow = (params.a_off + m * params.lda) / 4u;
  let last = params.n - 1u;
  let w0 = 0u;
  let w1 = min(1u, last) * k4;
  let w2 = min(2u, last) * k4;
  let w3 = min(3u, last) * k4;
  let w4 = min(4u, last) * k4;
  let w5 = min(5u, last) * k4;
  let w6 = min(6u, last) * k4;
  let w7 = min(7u, last) * k4;
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  for (var kk = 0u; kk < k4; kk++) {
    let av = amat4[arow + kk];
    lo += vec4<f32>(
      dot(av, load_w4(w0 + kk)),
      dot(av, load_w4(w1 + kk)),
      dot(av, load_w4(w2 + kk)),
      dot(av, load_w4(w3 + kk)),
    );
    hi += vec4<f32>(
      dot(av, load_w4(w4 + kk)),
      dot(av, load_w4(w5 + kk)),
      dot(av, load_w4(w6 + kk)),
      dot(av, load_w4(w7 + kk)),
    );
  }
  store_row8(m, lo, hi);
}
#endif
#else
fn load_a(m: u32, k: u32) -> f32 {
#ifdef A_KM
  return amat[params.a_off + k * params.lda + m];
#else
  return amat[params.a_off + m * params.lda + k];
#endif
}

@compute @workgroup_size(WG_X, WG_Y)
fn regtile_kn(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * RM;
  let n0 = gid.x * RN;
  if (m0 >= params.m || n0 >= params.n) { return; }
  let n4 = params.n / 4u;
  let q0 = min(n0 / 4u, n4 - 1u);
  let q1 = min(n0 / 4u + 1u, n4 - 1u);
  var acc: array<array<vec4<f32>, 2>, RM>;
  var mrow: array<u32, RM>;
  for (var i = 0u; i < RM; i++) { mrow[i] = min(m0 + i, params.m - 1u); }
  for (var k = 0u; k < params.k; k++) {
    let w0 = load_w4(k * n4 + q0);
    let w1 = load_w4(k * n4 + q1);
    for (var i = 0u; i < RM; i++) {
      let a = load_a(mrow[i], k);
      acc[i][0] = fma(vec4<f32>(a), w0, acc[i][0]);
      acc[i][1] = fma(vec4<f32>(a), w1, acc[i][1]);
    }
  }
  for (var i = 0u; i < RM; i++) {
    let m = m0 + i;
    if (m >= params.m) { break; }
    let lo = acc[i][0];
    let hi = acc[i][1];
    if (n0 < params.n) { store_c(m, n0, lo.x); }
    if (n0 + 1u < params.n) { store_c(m, n0 + 1u, lo.y); }
    if (n0 + 2u < params.n) { store_c(m, n0 + 2u, lo.z); }
    if (n0 + 3u < params.n) { store_c(m, n0 + 3u, lo.w); }
    if (n0 + 4u < params.n) { store_c(m, n0 + 4u, hi.x); }
    if (n0 + 5u < params.n) { store_c(m, n0 + 5u, hi.y); }
    if (n0 + 6u < params.n) { store_c(m, n0 + 6u, hi.z); }
    if (n0 + 7u < params.n) { store_c(m, n0 + 7u, hi.w); }
  }
}

#ifdef ROW_N8
// One output row per invocation and at most 8 columns (N <= 8, N % 4 == 0: the LoRA rank products
// dB = dy^T u and du = dy B). Eight accumulators stay in registers on CPU adapters, where the 8x8
// tile of regtile_kn spills, and neighbouring invocations work on neighbouring rows.
@compute @workgroup_size(WG)
fn row_n8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m = gid.x;
  if (m >= params.m) { return; }
  let n4 = params.n / 4u;
  let q1 = min(1u, n4 - 1u);
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  for (var k = 0u; k < params.k; k++) {
    let a = vec4<f32>(load_a(m, k));
    lo = fma(a, load_w4(k * n4), lo);
    hi = fma(a, load_w4(k * n4 + q1), hi);
  }
  store_row8(m, lo, hi);
}
#endif
#endif
#endif
