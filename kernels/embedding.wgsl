// Embedding lookup: out[t, :] = table[ids[t], :], for one row-chunk [row_start, row_start + rows)
// of the table (a 7B embedding spans several bindings; the caller dispatches once per chunk and
// each dispatch writes only the tokens whose id falls in its chunk).

#include "index"
#include "packed"

struct Params { n_tok: u32, dim: u32, row_start: u32, rows: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.n_tok * params.dim) { return; }
  let t = i / params.dim;
  let j = i % params.dim;
  let id = ids[t];
  if (id < params.row_start || id >= params.row_start + params.rows) { return; }
  out[i] = load_w((id - params.row_start) * params.dim + j);
}

// Backward (full-parameter training), deterministic without float atomics: the host sorts the
// token positions by id (CSR: `order`, with `starts[u]..starts[u+1]` the positions of unique id
// `uniq[u]`), and one invocation per (unique id, column) sums its rows into the table gradient.
// params.n_tok holds the number of unique ids here.
@group(0) @binding(5) var<storage, read> grad: array<f32>;
@group(0) @binding(6) var<storage, read> order: array<u32>;
@group(0) @binding(7) var<storage, read> starts: array<u32>;
@group(0) @binding(8) var<storage, read> uniq: array<u32>;
@group(0) @binding(9) var<storage, read_write> dtable: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = flat_index(wg, nwg, lid, WG);
  if (i >= params.n_tok * params.dim) { return; }
  let u = i / params.dim;
  let j = i % params.dim;
  var s = 0.0;
  for (var p = starts[u]; p < starts[u + 1u]; p++) { s += grad[order[p] * params.dim + j]; }
  dtable[uniq[u] * params.dim + j] += s;
}
