// Token choice on the GPU, so that generation needs no readback of the logits per token.
//   argmax   logits [rows, V] -> next[row] = the first index of the row's maximum (ties -> lowest id,
//            NaN never chosen; a row with no finite maximum gives 0), also written to
//            hist[hist_off + row] (the ids of several decode steps, read back together).
//   sample   the same outputs, drawn from softmax(logits / T) restricted to the nucleus: the tokens
//            whose logit is at least tau, tau the largest logit value whose tokens carry at least top_p
//            of the mass (ties at the boundary are all in). The draw is a Gumbel-max: argmax over the
//            nucleus of (x_i - max) / T + g_i, g_i = -log(-log(u_i)) with u_i a hash of (seed, step,
//            row, i) — an exact sample from that distribution, reproducible from the seed, no state.
//   argmax_final   the same outputs from the per-workgroup (value, index) partials of an ARGMAX gemv over the
//            logits (kernels/gemv.wgsl): `vocab` is the number of partials per row here. The LM head's
//            workgroups did the first stage, so neither stage leaves a GPU idle.
// One WG-wide workgroup per row; WG is the workgroup size, a define shared with the op wrapper.

#include "hash"

// dim: argmax_final with EMBED (the embedding width)
struct Params { rows: u32, vocab: u32, hist_off: u32, seed: u32, step: u32, inv_temp: f32, top_p: f32, dim: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> next: array<u32>;
@group(0) @binding(3) var<storage, read_write> hist: array<u32>;

const NONE = 0xffffffffu;
const F32_MAX = 3.4028234e38;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_out: atomic<u32>;

// (v, i) beats (w, j): larger value, or the same value at a lower index; an empty slot (NONE) never wins
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
  if (i == NONE) { return false; }
  if (j == NONE) { return true; }
  return v > w || (v == w && i < j);
}

// the winning (value, index) of each invocation's candidates over the workgroup -> next / hist
fn finish_choice(row: u32, lid: u32, v: f32, idx: u32) {
  best_v[lid] = v;
  best_i[lid] = idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && beats(best_v[lid + s], best_i[lid + s], best_v[lid], best_i[lid])) {
      best_v[lid] = best_v[lid + s];
      best_i[lid] = best_i[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let i = select(best_i[0], 0u, best_i[0] == NONE);
    next[row] = i;
    hist[params.hist_off + row] = i;
  }
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; } // uniform per workgroup: barriers below stay uniform
  let base = row * params.vocab;
  var v = 0.0;
  var idx = NONE;
  // strided scan in increasing index: a later equal value never replaces an earlier one
  for (var j = lid.x; j < params.vocab; j += WG) {
    let x = logits[base + j];
    if (x == x && (idx == NONE || x > v)) {
      v = x;
      idx = j;
    }
  }
  finish_choice(row, lid.x, v, idx);
}

// sum (or max) over the workgroup; every invocation gets the result
fn wg_reduce(v: f32, i: u32, is_max: bool) -> f32 {
  red[i] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) { red[i] = select(red[i] + red[i + s], max(red[i], red[i + s]), is_max); }
    workgroupBarrier();
  }
  // the result goes out through an atomic: Mesa's GL compiler (Dawn's GL backend on llvmpipe) hoisted a plain
  // load of red[0] out of the nucleus bisection's loop, so every step saw the first step's mass
  if (i == 0u) { atomicStore(&red_out, bitcast<u32>(red[0])); }
  workgroupBarrier();
  let r = bitcast<f32>(atomicLoad(&red_out));
  workgroupBarrier();
  return r;
}

fn finite(x: f32) -> bool { return x == x && abs(x) <= F32_MAX; }

// order-preserving map of finite f32 to u32 (and back), for a bisection over logit values
fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b ^ 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn from_key(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k ^ 0x80000000u, (k & 0x80000000u) != 0u));
}

// unnormalised softmax mass of the row's finite logits >= tau
fn mass_from(base: u32, lid: u32, m: f32, tau: f32) -> f32 {
  var s = 0.0;
  for (var j = lid; j < params.vocab; j += WG) {
    let x = logits[base + j];
    if (finite(x) && x >= tau) { s += exp((x - m) * params.inv_temp); }
  }
  return wg_reduce(s, lid, false);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; } // uniform per workgroup: barriers below stay uniform
  let base = row * params.vocab;
  var mx = -F32_MAX;
  for (var j = lid.x; j < params.vocab; j += WG) {
    let x = logits[base + j];
    if (finite(x)) { mx = max(mx, x); }
  }
  let m = wg_reduce(mx, lid.x, true);
  // nucleus threshold: bisect over the ordered values for the largest tau with mass(>= tau) >= top_p
  // mass; 32 fixed steps (the key range halves each step), so control flow stays uniform
  var tau = -F32_MAX;
  if (params.top_p < 1.0) {
    let want = params.top_p * mass_from(base, lid.x, m, -F32_MAX);
    var lo = order_key(-F32_MAX); // mass(lo) = all >= want
    var hi = order_key(m);
    if (mass_from(base, lid.x, m, m) >= want) {
      lo = hi;
    }
    for (var it = 0u; it < 32u; it++) {
      let mid = lo + (hi - lo) / 2u;
      let enough = mass_from(base, lid.x, m, from_key(mid)) >= want;
      if (hi - lo > 1u) {
        if (enough) { lo = mid; } else { hi = mid; }
      }
    }
    tau = from_key(lo);
  }
  let key = hash_u32(hash_u32(hash_u32(params.seed) ^ params.step) ^ row);
  var v = 0.0;
  var idx = NONE;
  for (var j = lid.x; j < params.vocab; j += WG) {
    let x = logits[base + j];
    if (finite(x) && x >= tau) {
      let g = -log(-log(unit_open(hash_u32(j ^ key))));
      let score = (x - m) * params.inv_temp + g;
      if (idx == NONE || score > v) {
        v = score;
        idx = j;
      }
    }
  }
  finish_choice(row, lid.x, v, idx);
}

@group(0) @binding(4) var<storage, read> partials: array<vec2<u32>>; // (value bits, index; NONE if none)
#ifdef EMBED
#include "packed"
@group(0) @binding(6) var<storage, read_write> h0: array<f32>;
#endif

@compute @workgroup_size(WG)
fn argmax_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; } // uniform per workgroup
  let base = row * params.vocab;
  var v = 0.0;
  var idx = NONE;
  // partials come in index order, so a strided scan keeps the first of equal values as argmax does
  for (var j = lid.x; j < params.vocab; j += WG) {
    let p = partials[base + j];
    let x = bitcast<f32>(p.x);
    if (p.y != NONE && beats(x, p.y, v, idx)) {
      v = x;
      idx = p.y;
    }
  }
  finish_choice(row, lid.x, v, idx);
#ifdef EMBED
  workgroupBarrier();
  let id = select(best_i[0], 0u, best_i[0] == NONE);
  for (var j = lid.x; j < params.dim; j += WG) { h0[row * params.dim + j] = load_w(id * params.dim + j); }
#endif
}
