// Token choice on the GPU, so that generation needs no readback of the logits per token.
//   argmax   logits [rows, V] -> next[row] = the first index of the row's maximum (ties -> lowest id,
//            NaN never chosen; a row with no finite maximum gives 0, as the host sampler does), also
//            written to hist[hist_off + row] (the ids of several decode steps, read back together).
// One WG-wide workgroup per row; WG is the workgroup size, a define shared with the op wrapper.

struct Params { rows: u32, vocab: u32, hist_off: u32, _p: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> next: array<u32>;
@group(0) @binding(3) var<storage, read_write> hist: array<u32>;

const NONE = 0xffffffffu;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

// (v, i) beats (w, j): larger value, or the same value at a lower index; an empty slot (NONE) never wins
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
  if (i == NONE) { return false; }
  if (j == NONE) { return true; }
  return v > w || (v == w && i < j);
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
  best_v[lid.x] = v;
  best_i[lid.x] = idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s && beats(best_v[lid.x + s], best_i[lid.x + s], best_v[lid.x], best_i[lid.x])) {
      best_v[lid.x] = best_v[lid.x + s];
      best_i[lid.x] = best_i[lid.x + s];
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let i = select(best_i[0], 0u, best_i[0] == NONE);
    next[row] = i;
    hist[params.hist_off + row] = i;
  }
}
