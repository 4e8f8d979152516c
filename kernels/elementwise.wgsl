// Element-wise ops on f32 buffers.

#include "index"

struct Params { n: u32, cols: u32, alpha: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// dst += alpha * src (residual add when alpha = 1)
@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, 64u);
  if (i >= params.n) { return; }
  dst[i] += params.alpha * src[i];
}
