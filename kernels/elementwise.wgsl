// Element-wise ops on f32 buffers.

#include "index"

struct Params { n: u32, cols: u32, alpha: f32, seed: u32 } // alpha: the scale, or dropout's p
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// dst += alpha * src (residual add when alpha = 1)
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.n) { return; }
  dst[i] += params.alpha * src[i];
}

// Column sums, accumulated: dst[j] += sum_r src[r * cols + j]  (bias gradients). n = rows.
@compute @workgroup_size(WG)
fn colsum(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= params.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < params.n; r++) { s += src[r * params.cols + j]; }
  dst[j] += params.alpha * s;
}

// Inverted dropout with a counter-based hash (deterministic from seed and index, no RNG state):
// dst = src * keep / (1 - p), keep with probability 1 - p. alpha = p, cols = seed.
#include "hash"

@compute @workgroup_size(WG)
fn dropout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.n) { return; }
  let u = f32(hash_u32(i ^ hash_u32(params.seed)) >> 8u) / 16777216.0;
  dst[i] = select(0.0, src[i] / (1.0 - params.alpha), u >= params.alpha);
}
