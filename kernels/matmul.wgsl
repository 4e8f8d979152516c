// Matrix multiply, the workhorse of forward and backward: one tile kernel for GPUs and CPU adapters.
//   C[c_row_off + m, c_off + n] (+)= alpha * sum_k A(m, k) W(k, n)  (+ bias[c_off + n]) (+ R[same element])
//                                    (+ the adapter's part: LORA_B / LORA_A below)
// A is f32 with leading dimension lda, from element a_off:
//   default [M, K]: A(m, k) = a[a_off + m*lda + k]      A_KM [K, M]: A(m, k) = a[a_off + k*lda + m]
// W is a weight in W_DTYPE storage (packed.wgsl) or an f32 activation, leading dimension ldw, from w_off:
//   default [N, K] (nn.Linear.weight): W(k, n) = w[w_off + n*ldw + k]
//   W_KN    [K, N]:                     W(k, n) = w[w_off + k*ldw + n]
// A weight split into row chunks (a 7B embedding) is handled by the caller, one dispatch per chunk.
//
// Groups: up to 4 problems of the same N, layouts and buffers in one dispatch, stacked along the y tiles;
// group g has its own m, k, a_off, w_off, c_off, c_row_off and dropout seed (grp[2g], grp[2g+1]). The rank
// products of a LoRA projection group (q, k, v) are one dispatch so.
// Variants (defines; lib/ops/matmul.ts's MatmulKey names every one):
//   HAS_BIAS, RESIDUAL (C = R + ...; R may not alias C), ACCUMULATE (C += ...)
//   DROP_A / DROP_W   inverted dropout applied as the operand is read: element i of the bound buffer is kept
//                     when hash(i ^ hash(seed)) (24 bits) >= p, and scaled by 1 / (1 - p); a pure function of
//                     (seed, i), so the forward and the backward draw the same mask without keeping it
//   SUM_A / SUM_W     the operand is the sum of sum_slices copies sum_stride elements apart (the k-slices of
//                     an earlier split product, summed where they are read instead of by a pass of their own)
//   SPLIT_K           workgroup z takes k in [z * k_chunk, (z + 1) * k_chunk) and writes alpha * its partial
//                     sum to the slice at C + z * slice_stride (no bias, residual or accumulate): for products
//                     with few tiles and a long k; `reduce` (below) or a SUM_ reader adds the slices
//   LORA_B            forward of a LoRA projection group fused after the base product: for the output columns
//                     [c0, c1) of segment s (seg[s]),
//                       C[m, n] += lora_scale * sum_j U(m, s*r + j) B[b0 + n - c0, j]
//                     U [M, nseg*r] (lora_in, ld2, its sum_slices summed) and B the group's stacked lora_B
//                     rows [sum of widths, r] (lora_w)
//   LORA_A            backward of the same, into dx: C[m, n] += sum_s mask_s(m, n) sum_{c in s} dU(m, c) A[c, n]
//                     with dU [M, nseg*r] (lora_in) and A the stacked lora_A [nseg*r, N] (lora_w); LORA_DROP
//                     applies each segment's dropout mask (seed seg[s].w) at C's element index, which is
//                     x's (dx is [M, N] from element 0)
//   A_ROWS / C_ROWS   row m of A (an [M, K] A) / of C is row row_index[m] of its buffer: the LM head of a
//                     training step reads and writes only the rows whose next token is a loss target
//
// Tiles: WGS x WGS invocations; invocation (tx, ty) owns TM rows (ty*TM ...) and TN columns (tx*TN ...) of a
// BM x BN = WGS*TM x WGS*TN tile of C, kept in registers as TM x TN/4 named vec4 accumulators (the #for
// loops unroll them: a private array indexed by a loop variable can live in local memory on GPUs and in
// memory on CPU adapters). Tiles of A and W, BK deep, go through workgroup memory as vec4 rows (each
// invocation reads its rows and columns as vec4, A's broadcast across the tile row), and the next tile is
// fetched into registers while this one is multiplied. TM in {2, 4, 8}, TN in {4, 8}.

#include "packed"
#include "hash"

struct Params {
  n: u32, lda: u32, ldw: u32, ldc: u32,
  alpha: f32, groups: u32, slice_stride: u32, k_chunk: u32,
  sum_slices: u32, sum_stride: u32, p_drop: f32, lora_r: u32,
  lora_scale: f32, lora_nseg: u32, ld2: u32, _p0: u32,
  // group g: grp[2g] = (m, k, a_off, w_off), grp[2g + 1] = (c_off, c_row_off, seed, first y tile)
  grp: array<vec4<u32>, 8>,
  // LoRA segment s: (c0, c1, b0, dropout seed)
  seg: array<vec4<u32>, 4>,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> amat: array<f32>;
@group(0) @binding(3) var<storage, read_write> cmat: array<f32>;
#ifdef HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef RESIDUAL
@group(0) @binding(5) var<storage, read> rmat: array<f32>;
#endif
@group(0) @binding(6) var<storage, read> lora_in: array<f32>;
@group(0) @binding(7) var<storage, read> lora_w: array<f32>;
@group(0) @binding(8) var<storage, read> partial: array<f32>;
@group(0) @binding(9) var<storage, read> row_index: array<u32>;

fn a_row(m: u32) -> u32 {
#ifdef A_ROWS
  return row_index[m];
#else
  return m;
#endif
}

// WGS x WGS invocations a workgroup (a define: 16 on GPUs, 8 on CPU adapters, whose invocations are SIMD
// lanes of a few threads: a smaller workgroup has fewer barrier rounds to run through); NT of them
const BK = 16u;
const BM = WGS * TM;
const BN = WGS * TN;
const NT = WGS * WGS;

struct Group { m: u32, k: u32, a_off: u32, w_off: u32, c_off: u32, c_row_off: u32, seed: u32, tile0: u32 }

fn group_at(g: u32) -> Group {
  let p = params.grp[2u * g];
  let q = params.grp[2u * g + 1u];
  return Group(p.x, p.y, p.z, p.w, q.x, q.y, q.z, q.w);
}

// the group whose y tiles include tile `y` (groups are stacked in order)
fn group_of(y: u32) -> u32 {
  var g = 0u;
  for (var i = 1u; i < params.groups; i++) {
    if (y >= params.grp[2u * i + 1u].w) { g = i; }
  }
  return g;
}

fn dropped(v: f32, i: u32, seed: u32) -> f32 {
  let u = f32(hash_u32(i ^ hash_u32(seed)) >> 8u) / 16777216.0;
  return select(0.0, v / (1.0 - params.p_drop), u >= params.p_drop);
}

fn read_a(i: u32, seed: u32) -> f32 {
#ifdef SUM_A
  var v = 0.0;
  for (var z = 0u; z < params.sum_slices; z++) { v += amat[i + z * params.sum_stride]; }
#else
  let v = amat[i];
#endif
#ifdef DROP_A
  return dropped(v, i, seed);
#else
  return v;
#endif
}

fn read_w(i: u32, seed: u32) -> f32 {
#ifdef SUM_W
  var v = 0.0;
  for (var z = 0u; z < params.sum_slices; z++) { v += load_w(i + z * params.sum_stride); }
#else
  let v = load_w(i);
#endif
#ifdef DROP_W
  return dropped(v, i, seed);
#else
  return v;
#endif
}

// Tile element e (0 .. BK*BM or BK*BN) of A or W: its (row or column, k) for the layout, chosen so that
// neighbouring invocations read neighbouring words of memory.
fn a_coord(e: u32) -> vec2<u32> {
#ifdef A_KM
  return vec2<u32>(e % BM, e / BM);
#else
  return vec2<u32>(e / BK, e % BK);
#endif
}

fn w_coord(e: u32) -> vec2<u32> {
#ifdef W_KN
  return vec2<u32>(e % BN, e / BN);
#else
  return vec2<u32>(e / BK, e % BK);
#endif
}

fn fetch_a(g: Group, m0: u32, k0: u32, k_hi: u32, e: u32) -> f32 {
  let c = a_coord(e);
  let m = m0 + c.x;
  let k = k0 + c.y;
  if (m >= g.m || k >= k_hi) { return 0.0; }
#ifdef A_KM
  return read_a(g.a_off + k * params.lda + m, g.seed);
#else
  return read_a(g.a_off + a_row(m) * params.lda + k, g.seed);
#endif
}

fn fetch_w(g: Group, n0: u32, k0: u32, k_hi: u32, e: u32) -> f32 {
  let c = w_coord(e);
  let n = n0 + c.x;
  let k = k0 + c.y;
  if (n >= params.n || k >= k_hi) { return 0.0; }
#ifdef W_KN
  return read_w(g.w_off + k * params.ldw + n, g.seed);
#else
  return read_w(g.w_off + n * params.ldw + k, g.seed);
#endif
}

var<workgroup> a_sh: array<vec4<f32>, BK * BM / 4u>; // [BK][BM]
var<workgroup> w_sh: array<vec4<f32>, BK * BN / 4u>; // [BK][BN]

fn put_a(e: u32, v: f32) {
  let c = a_coord(e);
  let i = c.y * BM + c.x;
  a_sh[i / 4u][i % 4u] = v;
}

fn put_w(e: u32, v: f32) {
  let c = w_coord(e);
  let i = c.y * BN + c.x;
  w_sh[i / 4u][i % 4u] = v;
}

// The invocation's TM x TN outputs: row I, columns 4J .. 4J+3 in v_I_J.
struct Acc {
#for I in 0..TM
#for J in 0..TN / 4
  v_${I}_${J}: vec4<f32>,
#endfor
#endfor
}

// acc += (row kk of the A tile, the invocation's rows) x (row kk of the W tile, its columns)
fn acc_step(acc: ptr<function, Acc>, kk: u32, tx: u32, ty: u32) {
#if TM >= 4
#for I in 0..TM / 4
  let a_${I} = a_sh[kk * (BM / 4u) + ty * (TM / 4u) + ${I}u];
#endfor
#else
  let a_q = a_sh[(kk * BM + ty * TM) / 4u]; // TM = 2: both rows lie in one vec4, at (ty % 2) * 2
  let a_at = (ty % 2u) * 2u;
#endif
#for J in 0..TN / 4
  let w_${J} = w_sh[kk * (BN / 4u) + tx * (TN / 4u) + ${J}u];
#endfor
#for I in 0..TM
#if TM >= 4
  let ar_${I} = vec4<f32>(a_${I / 4}[${I % 4}]);
#else
  let ar_${I} = vec4<f32>(a_q[a_at + ${I}u]);
#endif
#for J in 0..TN / 4
  (*acc).v_${I}_${J} = fma(ar_${I}, w_${J}, (*acc).v_${I}_${J});
#endfor
#endfor
}

fn tile_product(acc: ptr<function, Acc>, tx: u32, ty: u32) {
  for (var kk = 0u; kk < BK; kk++) { acc_step(acc, kk, tx, ty); }
}

// C's element (m, n) of this group: its index and value after the epilogue (not the LoRA part)
fn c_index(g: Group, m: u32, n: u32) -> u32 {
#ifdef C_ROWS
  return (g.c_row_off + row_index[m]) * params.ldc + g.c_off + n;
#else
  return (g.c_row_off + m) * params.ldc + g.c_off + n;
#endif
}

fn store_c(g: Group, m: u32, n: u32, acc: f32, z: u32) {
  let ci = c_index(g, m, n);
#ifdef SPLIT_K
  cmat[ci + z * params.slice_stride] = params.alpha * acc;
#else
  var v = params.alpha * acc;
#ifdef HAS_BIAS
  v += bias[g.c_off + n];
#endif
#ifdef RESIDUAL
  v += rmat[ci];
#endif
#ifdef ACCUMULATE
  v += cmat[ci];
#endif
  cmat[ci] = v;
#endif
}

#ifdef LORA_B
// The second product of the forward, segment by segment: U's columns s*r .. s*r + r against B's rows for
// this tile's columns in [c0, c1) (zero elsewhere), so tiles across a segment boundary are right too.
fn lora_b_phase(acc: ptr<function, Acc>, g: Group, m0: u32, n0: u32, tx: u32, ty: u32, t: u32) {
  let r = params.lora_r;
  for (var s = 0u; s < params.lora_nseg; s++) {
    let sg = params.seg[s];
    if (sg.y <= n0 || sg.x >= n0 + BN) { continue; } // uniform: no column of this tile in the segment
    for (var j0 = 0u; j0 < r; j0 += BK) {
#for I in 0..16 * TM / WGS
      {
        let e = t + ${I * WGS * WGS}u;
        let c = a_coord_mk(e);
        let m = m0 + c.x;
        let j = j0 + c.y;
        var v = 0.0;
        if (m < g.m && j < r) {
          let i = m * params.ld2 + s * r + j;
          for (var z = 0u; z < params.sum_slices; z++) { v += lora_in[i + z * params.sum_stride]; }
        }
        put_a_mk(e, v * params.lora_scale);
      }
#endfor
#for I in 0..16 * TN / WGS
      {
        let e = t + ${I * WGS * WGS}u;
        let c = vec2<u32>(e / BK, e % BK); // (column, j)
        let n = n0 + c.x;
        let j = j0 + c.y;
        var v = 0.0;
        if (n >= sg.x && n < sg.y && n < params.n && j < r) { v = lora_w[(sg.z + n - sg.x) * r + j]; }
        let i = c.y * BN + c.x;
        w_sh[i / 4u][i % 4u] = v;
      }
#endfor
      workgroupBarrier();
      tile_product(acc, tx, ty);
      workgroupBarrier();
    }
  }
}
#endif

#ifdef LORA_A
// The second product of the backward into dx: dU's columns c (all segments) against the stacked lora_A rows
// [c, n]; with LORA_DROP each segment's product is masked by that module's dropout before it is added.
fn lora_a_phase(acc: ptr<function, Acc>, g: Group, m0: u32, n0: u32, tx: u32, ty: u32, t: u32) {
  let r = params.lora_r;
  for (var s = 0u; s < params.lora_nseg; s++) {
#ifdef LORA_DROP
    var part = Acc(); // explicitly zeroed each segment (a bare declaration in a loop may be hoisted)
#endif
    for (var j0 = 0u; j0 < r; j0 += BK) {
#for I in 0..16 * TM / WGS
      {
        let e = t + ${I * WGS * WGS}u;
        let c = a_coord_mk(e);
        let m = m0 + c.x;
        let j = j0 + c.y;
        var v = 0.0;
        if (m < g.m && j < r) {
          let i = m * params.ld2 + s * r + j;
          for (var z = 0u; z < params.sum_slices; z++) { v += lora_in[i + z * params.sum_stride]; }
        }
        put_a_mk(e, v);
      }
#endfor
#for I in 0..16 * TN / WGS
      {
        let e = t + ${I * WGS * WGS}u;
        let c = vec2<u32>(e % BN, e / BN); // (column, j): rows of lora_A are contiguous along n
        let n = n0 + c.x;
        let j = j0 + c.y;
        var v = 0.0;
        if (n < params.n && j < r) { v = lora_w[(s * r + j) * params.n + n]; }
        let i = c.y * BN + c.x;
        w_sh[i / 4u][i % 4u] = v;
      }
#endfor
      workgroupBarrier();
#ifdef LORA_DROP
      tile_product(&part, tx, ty);
#else
      tile_product(acc, tx, ty);
#endif
      workgroupBarrier();
    }
#ifdef LORA_DROP
    let seed = params.seg[s].w;
#for I in 0..TM
#for J in 0..TN / 4
    {
      let m = m0 + ty * TM + ${I}u;
      let n = n0 + tx * TN + ${J * 4}u;
      let ci = c_index(g, min(m, g.m - 1u), 0u) + n;
      let keep = vec4<f32>(dropped(1.0, ci, seed), dropped(1.0, ci + 1u, seed), dropped(1.0, ci + 2u, seed),
                           dropped(1.0, ci + 3u, seed));
      (*acc).v_${I}_${J} = fma(keep, part.v_${I}_${J}, (*acc).v_${I}_${J});
    }
#endfor
#endfor
#endif
  }
}
#endif

#ifdef LORA
// phase-2 tiles read U / dU [M, ld2] along their rows, like an [M, K] A
fn a_coord_mk(e: u32) -> vec2<u32> {
  return vec2<u32>(e / BK, e % BK);
}

fn put_a_mk(e: u32, v: f32) {
  let c = a_coord_mk(e);
  let i = c.y * BM + c.x;
  a_sh[i / 4u][i % 4u] = v;
}
#endif

@compute @workgroup_size(WGS, WGS)
fn tile(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let gi = group_of(wg.y);
  let g = group_at(gi);
  let m0 = (wg.y - g.tile0) * BM;
  let n0 = wg.x * BN;
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * WGS + tx;
#ifdef SPLIT_K
  let k_lo = min(g.k, wg.z * params.k_chunk);
  let k_hi = min(g.k, k_lo + params.k_chunk);
#else
  let k_lo = 0u;
  let k_hi = g.k;
#endif
  var acc = Acc();
  // this tile's elements of A and W, fetched a tile ahead
#for I in 0..16 * TM / WGS
  var pa_${I} = fetch_a(g, m0, k_lo, k_hi, t + ${I * WGS * WGS}u);
#endfor
#for I in 0..16 * TN / WGS
  var pw_${I} = fetch_w(g, n0, k_lo, k_hi, t + ${I * WGS * WGS}u);
#endfor
  for (var k0 = k_lo; k0 < k_hi; k0 += BK) {
#for I in 0..16 * TM / WGS
    put_a(t + ${I * WGS * WGS}u, pa_${I});
#endfor
#for I in 0..16 * TN / WGS
    put_w(t + ${I * WGS * WGS}u, pw_${I});
#endfor
    workgroupBarrier();
    let k1 = k0 + BK;
    if (k1 < k_hi) {
#for I in 0..16 * TM / WGS
      pa_${I} = fetch_a(g, m0, k1, k_hi, t + ${I * WGS * WGS}u);
#endfor
#for I in 0..16 * TN / WGS
      pw_${I} = fetch_w(g, n0, k1, k_hi, t + ${I * WGS * WGS}u);
#endfor
    }
    tile_product(&acc, tx, ty);
    workgroupBarrier();
  }
#ifdef LORA_B
  lora_b_phase(&acc, g, m0, n0, tx, ty, t);
#endif
#ifdef LORA_A
  lora_a_phase(&acc, g, m0, n0, tx, ty, t);
#endif
#for I in 0..TM
  {
    let m = m0 + ty * TM + ${I}u;
    if (m < g.m) {
#for J in 0..TN / 4
#for C in 0..4
      if (n0 + tx * TN + ${J * 4 + C}u < params.n) { store_c(g, m, n0 + tx * TN + ${J * 4 + C}u, acc.v_${I}_${J}[${C}], wg.z); }
#endfor
#endfor
    }
  }
#endfor
}

// Sums the k-slices of SPLIT_K runs into their outputs: C (+)= alpha * sum_z slice_z (+ bias, residual), in
// slice order (the result does not depend on timing). Up to 2 jobs, flattened along x: job j (grp[2j] =
// (m, n, partial offset, slices), grp[2j + 1] = (c_off, c_row_off, ldc, first flat index)).
@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let f = (wg.y * nwg.x + wg.x) * WG + lid.x;
  let job = select(0u, 1u, params.groups > 1u && f >= params.grp[3].w);
  let p = params.grp[2u * job];
  let q = params.grp[2u * job + 1u];
  let i = f - q.w;
  if (i >= p.x * p.y) { return; }
  var s = 0.0;
  for (var z = 0u; z < p.w; z++) { s += partial[p.z + z * p.x * p.y + i]; }
  let ci = (q.y + i / p.y) * q.z + q.x + i % p.y;
  var v = params.alpha * s;
#ifdef HAS_BIAS
  v += bias[q.x + i % p.y];
#endif
#ifdef RESIDUAL
  v += rmat[ci];
#endif
#ifdef ACCUMULATE
  v += cmat[ci];
#endif
  cmat[ci] = v;
}
