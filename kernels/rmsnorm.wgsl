// RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * w.
// One 64-wide workgroup per row; the reciprocal rms is stored per row for the backward pass.

struct Params { rows: u32, dim: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn row_of(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = row_of(wg, nwg);
  if (row >= params.rows) { return; } // uniform per workgroup, so barriers below stay uniform
  let base = row * params.dim;
  var s = 0.0;
  for (var j = lid.x; j < params.dim; j += WG) {
    let v = x[base + j];
    s = fma(v, v, s);
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(partial[0] / f32(params.dim) + params.eps);
  if (lid.x == 0u) { rstd[row] = r; }
  for (var j = lid.x; j < params.dim; j += WG) {
    y[base + j] = x[base + j] * r * w[j];
  }
}

// Backward: with x_hat = x * rstd and g = dy * w,  dx = rstd * (g - x_hat * mean(g * x_hat)).
// ACCUMULATE adds into dx (the residual stream's gradient already holds the skip path).
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = row_of(wg, nwg);
  if (row >= params.rows) { return; }
  let base = row * params.dim;
  let r = rstd_in[row];
  var s = 0.0;
  for (var j = lid.x; j < params.dim; j += WG) {
    s = fma(dy[base + j] * w[j], x[base + j] * r, s);
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
    workgroupBarrier();
  }
  let c = partial[0] / f32(params.dim);
  for (var j = lid.x; j < params.dim; j += WG) {
    let v = r * (dy[base + j] * w[j] - x[base + j] * r * c);
#ifdef ACCUMULATE
    dx[base + j] += v;
#else
    dx[base + j] = v;
#endif
  }
}

// Weight gradient, accumulated: dw[j] += sum_rows dy[r, j] * x[r, j] * rstd[r]. One invocation per column.
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(WG)
fn weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= params.dim) { return; }
  var s = 0.0;
  for (var r = 0u; r < params.rows; r++) {
    s = fma(dy[r * params.dim + j], x[r * params.dim + j] * rstd_in[r], s);
  }
  dw[j] += s;
}
