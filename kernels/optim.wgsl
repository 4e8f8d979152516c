// Optimizer kernels over one flat f32 parameter buffer (all trainable tensors side by side).
//   sumsq      partial sums of g^2, one per workgroup (for the global gradient norm)
//   clip       one workgroup: norm = sqrt(sum partials); coef = min(1, max_norm / (norm + 1e-6))
//              (max_norm <= 0: no clipping); writes [coef, norm] so the step needs no readback
//   adamw      decoupled weight decay, bias-corrected moments, gradient scaled by coef

#include "index"

struct Params {
  n: u32, n_partials: u32, lr: f32, beta1: f32,
  beta2: f32, eps: f32, weight_decay: f32, bc1: f32,
  bc2: f32, max_norm: f32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> clip_out: array<f32>; // [coef, norm]
@group(0) @binding(7) var<storage, read> grad: array<f32>;

var<workgroup> red: array<f32, NORM_WG>;

@compute @workgroup_size(NORM_WG)
fn sumsq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let w = wg.y * nwg.x + wg.x;
  var s = 0.0;
  // each workgroup sums a contiguous block of NORM_BLOCK elements
  let start = w * NORM_BLOCK;
  for (var i = start + lid.x; i < min(start + NORM_BLOCK, params.n); i += NORM_WG) {
    let v = grad[i];
    s = fma(v, v, s);
  }
  red[lid.x] = s;
  workgroupBarrier();
  for (var stride = NORM_WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { red[lid.x] += red[lid.x + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partials[w] = red[0]; }
}

@compute @workgroup_size(NORM_WG)
fn clip(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  for (var i = lid.x; i < params.n_partials; i += NORM_WG) { s += partials[i]; }
  red[lid.x] = s;
  workgroupBarrier();
  for (var stride = NORM_WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { red[lid.x] += red[lid.x + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let norm = sqrt(red[0]);
    clip_out[0] = select(1.0, min(1.0, params.max_norm / (norm + 1e-6)), params.max_norm > 0.0);
    clip_out[1] = norm;
  }
}

@group(0) @binding(8) var<storage, read> clip_in: array<f32>;

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.n) { return; }
  let gi = g[i] * clip_in[0];
  let a = params.beta1 * m1[i] + (1.0 - params.beta1) * gi;
  let b = params.beta2 * m2[i] + (1.0 - params.beta2) * gi * gi;
  m1[i] = a;
  m2[i] = b;
  let pi = p[i] * (1.0 - params.lr * params.weight_decay);
  p[i] = pi - params.lr * (a / params.bc1) / (sqrt(b / params.bc2) + params.eps);
}
