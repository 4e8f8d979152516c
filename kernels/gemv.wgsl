// Matrix-vector products for decode steps: M <= 8 rows of A [M, K] (K, lda and a_off multiples of 4) against
// W [N, K], with what a decode step fuses around them, so that a layer is five dispatches:
//   NORM      A is rmsnorm(x) * g, computed here: rstd with the rmsnorm kernel's 64-way reduction and each
//             element as x * rstd * g, so the result equals rmsnorm-then-product bit for bit
//   HAS_BIAS, RESIDUAL, ACCUMULATE as in matmul.wgsl (alpha scales the product)
//   LORA_B    + lora_scale * sum_j U(m, s*r + j) B[b0 + n - c0, j] for the columns [c0, c1) of segment s, U
//             [M, ld2] (its sum_slices copies summed), B the group's stacked lora_B rows (f32)
//   ROPE      a unit is a column pair (i, i + D/2) of one head of the fused q|k|v output: q heads are rotated
//             into q [M, H*D] (cmat), k heads rotated into the K cache and v heads copied into the V cache,
//             at row b * t_cache + past + t; the position is past + t - kv_start[b], as in rope.wgsl
//   SWIGLU    a unit is the pair (gate column i, up column I + i): cmat[m, i] = silu(gate) * up
//   ARGMAX    nothing is stored per column: each workgroup writes, per row, the best (value, index) of its
//             columns (ties to the lower index, NaN never) to partials[row * units_groups + workgroup];
//             sample.wgsl's argmax_final finishes the choice, so the LM head and the argmax are two
//             dispatches that both fill the GPU
// Entry points: gemv_wg (GPUs): a WG-wide workgroup per COLS units, WG / COLS invocations per unit striding
// along k with vec4 loads (neighbouring invocations read neighbouring words), then summing across them;
// gemv_row (CPU adapters): one invocation per unit, streaming its weight rows once. Up to 8 rows' sums live
// in two vec4 per column (constant component indices: CPU adapters keep indexed private arrays in memory).

#include "packed"

struct Params {
  m: u32, n: u32, k: u32, lda: u32,
  ldc: u32, c_off: u32, a_off: u32, c_row_off: u32,
  alpha: f32, eps: f32, units: u32, t: u32,
  lora_r: u32, lora_scale: f32, lora_nseg: u32, ld2: u32,
  sum_slices: u32, sum_stride: u32, heads: u32, kv_heads: u32,
  head_dim: u32, t_cache: u32, past: u32, _p0: u32,
  // LoRA segment s: (c0, c1, b0, _)
  seg: array<vec4<u32>, 4>,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> amat4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> cmat: array<f32>;
#ifdef HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef RESIDUAL
@group(0) @binding(5) var<storage, read> rmat: array<f32>;
#endif
#ifdef LORA_B
@group(0) @binding(6) var<storage, read> lora_in: array<f32>;
@group(0) @binding(7) var<storage, read> lora_w: array<f32>;
#endif
#ifdef NORM
@group(0) @binding(8) var<storage, read> norm_w: array<vec4<f32>>;
#endif
#ifdef ROPE
@group(0) @binding(9) var<storage, read_write> kc: array<f32>;
@group(0) @binding(10) var<storage, read_write> vc: array<f32>;
@group(0) @binding(11) var<storage, read> kv_start: array<u32>;
@group(0) @binding(12) var<storage, read> cos_sin: array<f32>;
#endif
#ifdef ARGMAX
@group(0) @binding(13) var<storage, read_write> partials: array<vec2<u32>>; // (value bits, index)
#endif

// ---- units: a column, or a column pair (PAIR: ROPE or SWIGLU)
#ifdef ROPE
const PAIR = true;
#else
#ifdef SWIGLU
const PAIR = true;
#else
const PAIR = false;
#endif
#endif

// the unit's columns (the second is unused without PAIR)
fn unit_cols(u: u32) -> vec2<u32> {
#ifdef ROPE
  let half = params.head_dim / 2u;
  let c = (u / half) * params.head_dim + u % half;
  return vec2<u32>(c, c + half);
#else
#ifdef SWIGLU
  return vec2<u32>(u, params.n / 2u + u);
#else
  return vec2<u32>(u, u);
#endif
#endif
}

// ---- the normalization: rstd of each row (up to 8) in two vec4, as rmsnorm.wgsl computes it
var<workgroup> red_lo: array<vec4<f32>, WG>;
var<workgroup> red_hi: array<vec4<f32>, WG>;

fn x_at(m: u32, j: u32) -> f32 {
  let i = params.a_off + m * params.lda + j;
  return amat4[i / 4u][i % 4u];
}

// sums of lo/hi over the workgroup (tree order of rmsnorm.wgsl); every invocation gets them
fn wg_sum(lid: u32, lo: vec4<f32>, hi: vec4<f32>) -> array<vec4<f32>, 2> {
  red_lo[lid] = lo;
  red_hi[lid] = hi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red_lo[lid] += red_lo[lid + s];
      red_hi[lid] += red_hi[lid + s];
    }
    workgroupBarrier();
  }
  let r = array<vec4<f32>, 2>(red_lo[0], red_hi[0]);
  workgroupBarrier();
  return r;
}

#ifdef NORM
fn row_rstd(lid: u32) -> array<vec4<f32>, 2> {
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  for (var j = lid; j < params.k; j += WG) {
    lo.x = fma(x_at(0u, j), x_at(0u, j), lo.x);
    if (params.m > 1u) { lo.y = fma(x_at(1u, j), x_at(1u, j), lo.y); }
    if (params.m > 2u) { lo.z = fma(x_at(2u, j), x_at(2u, j), lo.z); }
    if (params.m > 3u) { lo.w = fma(x_at(3u, j), x_at(3u, j), lo.w); }
    if (params.m > 4u) { hi.x = fma(x_at(4u, j), x_at(4u, j), hi.x); }
    if (params.m > 5u) { hi.y = fma(x_at(5u, j), x_at(5u, j), hi.y); }
    if (params.m > 6u) { hi.z = fma(x_at(6u, j), x_at(6u, j), hi.z); }
    if (params.m > 7u) { hi.w = fma(x_at(7u, j), x_at(7u, j), hi.w); }
  }
  let s = wg_sum(lid, lo, hi);
  let d = vec4<f32>(f32(params.k));
  let e = vec4<f32>(params.eps);
  return array<vec4<f32>, 2>(inverseSqrt(s[0] / d + e), inverseSqrt(s[1] / d + e));
}
#endif

// A's quad q of row m, normalized with NORM (x * rstd * g, as rmsnorm.wgsl's y)
fn a4(m: u32, q: u32, rs: f32) -> vec4<f32> {
  let x = amat4[(params.a_off + m * params.lda) / 4u + q];
#ifdef NORM
  return x * rs * norm_w[q];
#else
  return x;
#endif
}

// column n's dot products with up to 8 rows over quads q0, q0 + stride, ... (gemv's accumulation order)
fn dot_col(n: u32, q0: u32, stride: u32, rs: array<vec4<f32>, 2>, lo: ptr<function, vec4<f32>>,
           hi: ptr<function, vec4<f32>>) {
  let k4 = params.k / 4u;
  if (params.m == 1u) { // batch 1: the common decode case, without the per-row branches
    var s = vec4<f32>(0.0);
    for (var q = q0; q < k4; q += stride) { s = fma(load_w4(n * k4 + q), a4(0u, q, rs[0].x), s); }
    (*lo).x = s.x + s.y + s.z + s.w;
    return;
  }
  for (var q = q0; q < k4; q += stride) {
    let w = load_w4(n * k4 + q);
    (*lo).x += dot(w, a4(0u, q, rs[0].x));
    if (params.m > 1u) { (*lo).y += dot(w, a4(1u, q, rs[0].y)); }
    if (params.m > 2u) { (*lo).z += dot(w, a4(2u, q, rs[0].z)); }
    if (params.m > 3u) { (*lo).w += dot(w, a4(3u, q, rs[0].w)); }
    if (params.m > 4u) { (*hi).x += dot(w, a4(4u, q, rs[1].x)); }
    if (params.m > 5u) { (*hi).y += dot(w, a4(5u, q, rs[1].y)); }
    if (params.m > 6u) { (*hi).z += dot(w, a4(6u, q, rs[1].z)); }
    if (params.m > 7u) { (*hi).w += dot(w, a4(7u, q, rs[1].w)); }
  }
}

// row m's component of (lo, hi), by selects (no dynamically indexed private vector)
fn pick(lo: vec4<f32>, hi: vec4<f32>, m: u32) -> f32 {
  let v = select(lo, hi, m >= 4u);
  let j = m % 4u;
  return select(select(select(v.x, v.y, j == 1u), v.z, j == 2u), v.w, j == 3u);
}

// C's element of row m, column n before it is stored or paired: alpha * dot (+ bias) (+ LoRA)
fn value(m: u32, n: u32, d: f32) -> f32 {
  var v = params.alpha * d;
#ifdef HAS_BIAS
  v += bias[params.c_off + n];
#endif
#ifdef LORA_B
  let r = params.lora_r;
  for (var s = 0u; s < params.lora_nseg; s++) {
    let sg = params.seg[s];
    if (n >= sg.x && n < sg.y) {
      var l = 0.0;
      for (var j = 0u; j < r; j++) {
        var u = 0.0;
        let i = m * params.ld2 + s * r + j;
        for (var z = 0u; z < params.sum_slices; z++) { u += lora_in[i + z * params.sum_stride]; }
        l = fma(u, lora_w[(sg.z + n - sg.x) * r + j], l);
      }
      v += params.lora_scale * l;
    }
  }
#endif
  return v;
}

fn store_plain(m: u32, n: u32, v0: f32) {
  let ci = (params.c_row_off + m) * params.ldc + params.c_off + n;
  var v = v0;
#ifdef RESIDUAL
  v += rmat[ci];
#endif
#ifdef ACCUMULATE
  v += cmat[ci];
#endif
  cmat[ci] = v;
}

// the unit's outputs for row m, from its column values y1 (and y2 with PAIR)
fn store_unit(m: u32, u: u32, y1: f32, y2: f32) {
#ifdef ROPE
  let half = params.head_dim / 2u;
  let h = u / half;
  let i = u % half;
  let b = m / params.t;
  let at = params.past + m % params.t;
  let crow = b * params.t_cache + at;
  let kvw = params.kv_heads * params.head_dim;
  if (h >= params.heads + params.kv_heads) { // v: copy
    let dst = crow * kvw + (h - params.heads - params.kv_heads) * params.head_dim + i;
    vc[dst] = y1;
    vc[dst + half] = y2;
    return;
  }
  let start = kv_start[b];
  let pos = select(0u, at - start, at >= start);
  let c = cos_sin[2u * (pos * half + i)];
  let s = cos_sin[2u * (pos * half + i) + 1u];
  let r1 = y1 * c - y2 * s;
  let r2 = y2 * c + y1 * s;
  if (h < params.heads) {
    let dst = m * params.heads * params.head_dim + h * params.head_dim + i;
    cmat[dst] = r1;
    cmat[dst + half] = r2;
  } else {
    let dst = crow * kvw + (h - params.heads) * params.head_dim + i;
    kc[dst] = r1;
    kc[dst + half] = r2;
  }
#else
#ifdef SWIGLU
  store_plain(m, u, y1 / (1.0 + exp(-y1)) * y2);
#else
  store_plain(m, u, y1);
#endif
#endif
}

#ifdef ARGMAX
const NONE = 0xffffffffu;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

// (v, i) beats (w, j): larger value, or the same value at a lower index; an empty slot (NONE) never wins
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
  if (i == NONE) { return false; }
  if (j == NONE) { return true; }
  return v > w || (v == w && i < j);
}

// the best (value, index) over the workgroup's slots, into partials[row * groups + group]
fn argmax_partial(lid: u32, row: u32, v: f32, idx: u32, group: u32, groups: u32) {
  best_v[lid] = v;
  best_i[lid] = select(NONE, idx, v == v);
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && beats(best_v[lid + s], best_i[lid + s], best_v[lid], best_i[lid])) {
      best_v[lid] = best_v[lid + s];
      best_i[lid] = best_i[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[row * groups + group] = vec2<u32>(bitcast<u32>(best_v[0]), best_i[0]); }
  workgroupBarrier();
}
#endif

var<workgroup> sum1_lo: array<vec4<f32>, WG>;
var<workgroup> sum1_hi: array<vec4<f32>, WG>;
var<workgroup> sum2_lo: array<vec4<f32>, WG>;
var<workgroup> sum2_hi: array<vec4<f32>, WG>;

// GPUs: COLS units per workgroup, TPU = WG / COLS invocations per unit
const TPU = WG / COLS;

@compute @workgroup_size(WG)
fn gemv_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let group = wg.y * nwg.x + wg.x;
  let groups = (params.units + COLS - 1u) / COLS;
  if (group >= groups) { return; } // uniform per workgroup: the barriers below stay uniform
  let slot = lid.x / TPU; // which of the COLS units
  let part = lid.x % TPU;
  let u = group * COLS + slot;
  let live = u < params.units;
#ifdef NORM
  let rs = row_rstd(lid.x);
#else
  let rs = array<vec4<f32>, 2>(vec4<f32>(1.0), vec4<f32>(1.0));
#endif
  let cols = unit_cols(min(u, params.units - 1u));
  var lo1 = vec4<f32>(0.0);
  var hi1 = vec4<f32>(0.0);
  var lo2 = vec4<f32>(0.0);
  var hi2 = vec4<f32>(0.0);
  if (live) {
    dot_col(cols.x, part, TPU, rs, &lo1, &hi1);
    if (PAIR) { dot_col(cols.y, part, TPU, rs, &lo2, &hi2); }
  }
  sum1_lo[lid.x] = lo1;
  sum1_hi[lid.x] = hi1;
  sum2_lo[lid.x] = lo2;
  sum2_hi[lid.x] = hi2;
  workgroupBarrier();
  for (var s = TPU / 2u; s > 0u; s >>= 1u) {
    if (part < s) {
      sum1_lo[lid.x] += sum1_lo[lid.x + s];
      sum1_hi[lid.x] += sum1_hi[lid.x + s];
      sum2_lo[lid.x] += sum2_lo[lid.x + s];
      sum2_hi[lid.x] += sum2_hi[lid.x + s];
    }
    workgroupBarrier();
  }
#ifdef ARGMAX
  // invocation `slot` (< COLS) brings unit `slot`'s value for each row
  for (var m = 0u; m < params.m; m++) {
    let uu = group * COLS + lid.x;
    var v = 0.0;
    var idx = NONE;
    if (lid.x < COLS && uu < params.units) {
      v = value(m, uu, pick(sum1_lo[lid.x * TPU], sum1_hi[lid.x * TPU], m));
      idx = uu;
    }
    argmax_partial(lid.x, m, v, idx, group, groups);
  }
#else
  if (part == 0u && live) {
    for (var m = 0u; m < params.m; m++) {
      let y1 = value(m, cols.x, pick(sum1_lo[lid.x], sum1_hi[lid.x], m));
      var y2 = 0.0;
      if (PAIR) { y2 = value(m, cols.y, pick(sum2_lo[lid.x], sum2_hi[lid.x], m)); }
      store_unit(m, u, y1, y2);
    }
  }
#endif
}

// CPU adapters: one invocation per unit (the workgroup only shares the norm's and the argmax's reductions)
@compute @workgroup_size(WG)
fn gemv_row(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let group = wg.y * nwg.x + wg.x;
  let groups = (params.units + WG - 1u) / WG;
  if (group >= groups) { return; } // uniform per workgroup
  let u = group * WG + lid.x;
  let live = u < params.units;
#ifdef NORM
  let rs = row_rstd(lid.x);
#else
  let rs = array<vec4<f32>, 2>(vec4<f32>(1.0), vec4<f32>(1.0));
#endif
  let cols = unit_cols(min(u, params.units - 1u));
  var lo1 = vec4<f32>(0.0);
  var hi1 = vec4<f32>(0.0);
  var lo2 = vec4<f32>(0.0);
  var hi2 = vec4<f32>(0.0);
  if (live) {
    dot_col(cols.x, 0u, 1u, rs, &lo1, &hi1);
    if (PAIR) { dot_col(cols.y, 0u, 1u, rs, &lo2, &hi2); }
  }
#ifdef ARGMAX
  for (var m = 0u; m < params.m; m++) {
    var v = 0.0;
    var idx = NONE;
    if (live) {
      v = value(m, u, pick(lo1, hi1, m));
      idx = u;
    }
    argmax_partial(lid.x, m, v, idx, group, groups);
  }
#else
  if (live) {
    for (var m = 0u; m < params.m; m++) {
      let y1 = value(m, cols.x, pick(lo1, hi1, m));
      var y2 = 0.0;
      if (PAIR) { y2 = value(m, cols.y, pick(lo2, hi2, m)); }
      store_unit(m, u, y1, y2);
    }
  }
#endif
}
