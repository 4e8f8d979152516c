// Cross-entropy over the vocabulary with a per-token loss mask.
//   logits [rows, V], targets[rows] (u32), mask[rows] (f32; 0 drops the token)
//   loss[row] = mask * (logsumexp(logits[row]) - logits[row, target]);  lse[row] kept for backward.
// One WG-wide workgroup per row (WG a define shared with the op wrapper: 256 on GPUs, so that a
// 151,936-word row is 594 reads per invocation and a step's rows fill the device; 64 on CPU adapters).

struct Params { rows: u32, vocab: u32, scale: f32, _p1: u32 } // scale: backward only
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> red: array<f32, WG>;

fn reduce_max(v: f32, i: u32) -> f32 {
  red[i] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) { red[i] = max(red[i], red[i + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(v: f32, i: u32) -> f32 {
  red[i] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) { red[i] += red[i + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; }
  let base = row * params.vocab;
  var m = -3.0e38;
  for (var j = lid.x; j < params.vocab; j += WG) { m = max(m, logits[base + j]); }
  m = reduce_max(m, lid.x);
  var s = 0.0;
  for (var j = lid.x; j < params.vocab; j += WG) { s += exp(logits[base + j] - m); }
  s = reduce_sum(s, lid.x);
  if (lid.x == 0u) {
    let l = m + log(s);
    lse[row] = l;
    let w = mask[row];
    loss[row] = select(0.0, w * (l - logits[base + min(targets[row], params.vocab - 1u)]), w != 0.0);
  }
}

// Fused forward + backward for training: loss and lse as above, then the logits are overwritten in
// place by their gradient  scale * mask * (softmax - onehot(target)). ROW_INDEX: the rows are a selection
// (the loss rows of a step) and row r's loss goes to loss[row_index[r]].
@group(0) @binding(6) var<storage, read_write> logits_rw: array<f32>;
@group(0) @binding(7) var<storage, read> row_index: array<u32>;

fn loss_slot(row: u32) -> u32 {
#ifdef ROW_INDEX
  return row_index[row];
#else
  return row;
#endif
}

@compute @workgroup_size(WG)
fn forward_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) { return; }
  let base = row * params.vocab;
  var m = -3.0e38;
  for (var j = lid.x; j < params.vocab; j += WG) { m = max(m, logits_rw[base + j]); }
  m = reduce_max(m, lid.x);
  var s = 0.0;
  for (var j = lid.x; j < params.vocab; j += WG) { s += exp(logits_rw[base + j] - m); }
  s = reduce_sum(s, lid.x);
  let l = m + log(s);
  let w = mask[row];
  let tgt = min(targets[row], params.vocab - 1u);
  if (lid.x == 0u) {
    lse[row] = l;
    loss[loss_slot(row)] = select(0.0, w * (l - logits_rw[base + tgt]), w != 0.0);
  }
  workgroupBarrier();
  let c = w * params.scale;
  for (var j = lid.x; j < params.vocab; j += WG) {
    let p = exp(logits_rw[base + j] - l);
    logits_rw[base + j] = c * (p - select(0.0, 1.0, j == tgt));
  }
}
