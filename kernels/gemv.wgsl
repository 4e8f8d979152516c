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
// in named registers per row (ROWS, a define: CPU adapters keep indexed private arrays in memory).

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

// ---- rows: ROWS (a define: this call's M, 1 to 8) values of a column, in named registers
struct Rows {
#for R in 0..ROWS
  v_${R}: f32,
#endfor
}

// rows into two vec4 (rows 0-3, 4-7) for the workgroup reductions, and back
fn pack_lo(d: Rows) -> vec4<f32> {
  var v = vec4<f32>(0.0);
#for R in 0..ROWS
#if R < 4
  v[${R}] = d.v_${R};
#endif
#endfor
  return v;
}
fn pack_hi(d: Rows) -> vec4<f32> {
  var v = vec4<f32>(0.0);
#for R in 0..ROWS
#if R >= 4
  v[${R - 4}] = d.v_${R};
#endif
#endfor
  return v;
}
fn unpack(lo: vec4<f32>, hi: vec4<f32>) -> Rows {
  var d = Rows();
#for R in 0..ROWS
#if R < 4
  d.v_${R} = lo[${R}];
#else
  d.v_${R} = hi[${R - 4}];
#endif
#endfor
  return d;
}

// ---- the normalization: rstd of each row, as rmsnorm.wgsl computes it
var<workgroup> red_lo: array<vec4<f32>, WG>;
var<workgroup> red_hi: array<vec4<f32>, WG>;

fn x_at(m: u32, j: u32) -> f32 {
  let i = params.a_off + m * params.lda + j;
  return amat4[i / 4u][i % 4u];
}

// sums of lo/hi over the workgroup (tree order of rmsnorm.wgsl); every invocation gets them
fn wg_sum(lid: u32, lo: vec4<f32>, hi: vec4<f32>) -> Rows {
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
  let r = unpack(red_lo[0], red_hi[0]);
  workgroupBarrier();
  return r;
}

#ifdef NORM
fn row_rstd(lid: u32) -> Rows {
  var sq = Rows();
  for (var j = lid; j < params.k; j += WG) {
#for R in 0..ROWS
    sq.v_${R} = fma(x_at(${R}u, j), x_at(${R}u, j), sq.v_${R});
#endfor
  }
  var s = wg_sum(lid, pack_lo(sq), pack_hi(sq));
#for R in 0..ROWS
  s.v_${R} = inverseSqrt(s.v_${R} / f32(params.k) + params.eps);
#endfor
  return s;
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

// column n's dot products with the rows over quads q0, q0 + stride, ... (one row: a vec4 of partial sums
// added at the end; more: a dot per row and quad). Branch-free per ROWS: a loop with per-row branches ran
// ten times slower on lavapipe.
fn dot_col(n: u32, q0: u32, stride: u32, rs: Rows) -> Rows {
  let k4 = params.k / 4u;
  var d = Rows();
#if ROWS == 1
  var s = vec4<f32>(0.0);
  for (var q = q0; q < k4; q += stride) { s = fma(load_w4(n * k4 + q), a4(0u, q, rs.v_0), s); }
  d.v_0 = s.x + s.y + s.z + s.w;
#else
  for (var q = q0; q < k4; q += stride) {
    let w = load_w4(n * k4 + q);
#for R in 0..ROWS
    d.v_${R} += dot(w, a4(${R}u, q, rs.v_${R}));
#endfor
  }
#endif
  return d;
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
  let rs = Rows();
#endif
  let cols = unit_cols(min(u, params.units - 1u));
  var d1 = Rows();
  var d2 = Rows();
  if (live) {
    d1 = dot_col(cols.x, part, TPU, rs);
    if (PAIR) { d2 = dot_col(cols.y, part, TPU, rs); }
  }
  sum1_lo[lid.x] = pack_lo(d1);
  sum1_hi[lid.x] = pack_hi(d1);
  sum2_lo[lid.x] = pack_lo(d2);
  sum2_hi[lid.x] = pack_hi(d2);
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
  let uu = group * COLS + lid.x;
  let mine = lid.x < COLS && uu < params.units;
  let t1 = unpack(sum1_lo[min(lid.x, COLS - 1u) * TPU], sum1_hi[min(lid.x, COLS - 1u) * TPU]);
#for R in 0..ROWS
  argmax_partial(lid.x, ${R}u, select(0.0, value(${R}u, uu, t1.v_${R}), mine), select(NONE, uu, mine), group, groups);
#endfor
#else
  if (part == 0u && live) {
    let t1 = unpack(sum1_lo[lid.x], sum1_hi[lid.x]);
    let t2 = unpack(sum2_lo[lid.x], sum2_hi[lid.x]);
#for R in 0..ROWS
    store_unit(${R}u, u, value(${R}u, cols.x, t1.v_${R}), select(0.0, value(${R}u, cols.y, t2.v_${R}), PAIR));
#endfor
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
  let rs = Rows();
#endif
  let cols = unit_cols(min(u, params.units - 1u));
  var d1 = Rows();
  var d2 = Rows();
  if (live) {
    d1 = dot_col(cols.x, 0u, 1u, rs);
    if (PAIR) { d2 = dot_col(cols.y, 0u, 1u, rs); }
  }
#ifdef ARGMAX
#for R in 0..ROWS
  argmax_partial(lid.x, ${R}u, select(0.0, value(${R}u, u, d1.v_${R}), live), select(NONE, u, live), group, groups);
#endfor
#else
  if (live) {
#for R in 0..ROWS
    store_unit(${R}u, u, value(${R}u, cols.x, d1.v_${R}), select(0.0, value(${R}u, cols.y, d2.v_${R}), PAIR));
#endfor
  }
#endif
}
