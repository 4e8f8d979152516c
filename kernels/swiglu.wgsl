// SwiGLU on the fused gate|up projection output gu [rows, 2*I]: out[r, i] = silu(gate) * up.

#include "index"

struct Params { rows: u32, inter: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = flat_index(wg, nwg, lid, WG);
  if (idx >= params.rows * params.inter) { return; }
  let r = idx / params.inter;
  let i = idx % params.inter;
  let g = gu[r * 2u * params.inter + i];
  let u = gu[r * 2u * params.inter + params.inter + i];
  out[idx] = g / (1.0 + exp(-g)) * u;
}

// Backward: d gate = d out * up * silu'(gate), d up = d out * silu(gate),
// with silu'(g) = s * (1 + g * (1 - s)), s = sigmoid(g).
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgu: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = flat_index(wg, nwg, lid, WG);
  if (idx >= params.rows * params.inter) { return; }
  let r = idx / params.inter;
  let i = idx % params.inter;
  let gi = r * 2u * params.inter + i;
  let g = gu[gi];
  let u = gu[gi + params.inter];
  let s = 1.0 / (1.0 + exp(-g));
  let d = dout[idx];
  dgu[gi] = d * u * s * (1.0 + g * (1.0 - s));
  dgu[gi + params.inter] = d * g * s;
}
