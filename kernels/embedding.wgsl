// Embedding lookup: out[t, :] = table[ids[t], :], for one row-chunk [row_start, row_start + rows)
// of the table (a 7B embedding spans several bindings; the caller dispatches once per chunk and
// each dispatch writes only the tokens whose id falls in its chunk).

#include "index"
#include "packed"

struct Params { n_tok: u32, dim: u32, row_start: u32, rows: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, 64u);
  if (i >= params.n_tok * params.dim) { return; }
  let t = i / params.dim;
  let j = i % params.dim;
  let id = ids[t];
  if (id < params.row_start || id >= params.row_start + params.rows) { return; }
  out[i] = load_w((id - params.row_start) * params.dim + j);
}
