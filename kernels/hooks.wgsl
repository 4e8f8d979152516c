// Hooks at layer boundaries (residual stream rows [rows, dim]).
//   steer        h[r, :] += coef * v[:] for rows with row_mask[r] != 0 (PPS: all tokens; also
//                prompt-only / response-only masks in generation)
//   sign_force   per row, with unit vector v and s = g·v:
//                  MODE 0 attenuate   g <- g - s v + |s| v   (component along v made >= 0)
//                  MODE 1 amplify     g <- g - s v - |s| v   (made <= 0)
//                  MODE 2 neutralize  g <- g - s v           (removed)
//                only on rows with row_mask[r] != 0.

#include "index"

struct Params { rows: u32, dim: u32, coef: f32, mode: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> row_mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn steer(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.rows * params.dim) { return; }
  let r = i / params.dim;
  if (row_mask[r] == 0.0) { return; }
  x[i] += params.coef * v[i % params.dim];
}

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn sign_force(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; }
  if (row_mask[row] == 0.0) { return; }
  let base = row * params.dim;
  var s = 0.0;
  for (var j = lid.x; j < params.dim; j += WG) { s = fma(x[base + j], v[j], s); }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
    workgroupBarrier();
  }
  let dot = partial[0];
  var delta: f32;
  if (params.mode == 0u) {
    delta = abs(dot) - dot;
  } else if (params.mode == 1u) {
    delta = -abs(dot) - dot;
  } else {
    delta = -dot;
  }
  for (var j = lid.x; j < params.dim; j += WG) { x[base + j] += delta * v[j]; }
}
