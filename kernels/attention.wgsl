// Grouped-query causal attention with a per-sequence key range (left padding) and a KV cache.
//   q  [B*TQ, H*D]               queries of this call, rows b*TQ + t, absolute position past + t
//   kc, vc [B*T_CACHE, HKV*D]    keys / values, rows b*T_CACHE + j
//   kv_start[b]                  first valid key of sequence b (left padding before it is masked)
// Query t of sequence b attends to keys j with kv_start[b] <= j <= past + t. Query head h reads
// key head h / (H / HKV). Output o [B*TQ, H*D] and the row log-sum-exp lse [B, H, TQ] (for the
// backward pass). A query with no valid key (a left-pad row) outputs zeros.
// forward: one invocation per (b, h, t), online softmax over keys, HEAD_DIM a define so that the
// per-invocation accumulators are fixed-size arrays (CPU adapters, where invocations are threads and
// few is right); forward_rows below spreads each row over a workgroup (GPUs, and decoding everywhere).

struct Params { b: u32, tq: u32, t_cache: u32, heads: u32, kv_heads: u32, past: u32, scale: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> kv_start: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

const D = HEAD_DIM;
const NEG_BIG = -3.0e38;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x * WG + lid.x;
  let h = wg.y;
  let b = wg.z;
  if (t >= params.tq) { return; }
  let hk = h / (params.heads / params.kv_heads);
  let qbase = (b * params.tq + t) * params.heads * D + h * D;
  let kvw = params.kv_heads * D;
  var qv: array<f32, D>;
  var acc: array<f32, D>;
  for (var d = 0u; d < D; d++) {
    qv[d] = q[qbase + d] * params.scale;
    acc[d] = 0.0;
  }
  var mx = NEG_BIG;
  var den = 0.0;
  let last = params.past + t;
  for (var j = kv_start[b]; j <= last; j++) {
    let kb = (b * params.t_cache + j) * kvw + hk * D;
    var s = 0.0;
    for (var d = 0u; d < D; d++) { s = fma(qv[d], kc[kb + d], s); }
    if (s > mx) {
      let corr = exp(mx - s);
      den *= corr;
      for (var d = 0u; d < D; d++) { acc[d] *= corr; }
      mx = s;
    }
    let p = exp(s - mx);
    den += p;
    for (var d = 0u; d < D; d++) { acc[d] = fma(p, vc[kb + d], acc[d]); }
  }
  let inv = select(0.0, 1.0 / den, den > 0.0);
  for (var d = 0u; d < D; d++) { o[qbase + d] = acc[d] * inv; }
  lse[(b * params.heads + h) * params.tq + t] = select(NEG_BIG, mx + log(den), den > 0.0);
}

// ---- Rows: one 64-wide workgroup per (query row t, head h, sequence b) instead of one invocation per
// query, so that no invocation loops serially over the keys with head-dim arrays of its own (the GPUs'
// variant for training, and decoding on every adapter: at TQ = 1 the per-invocation kernel would run B*H
// invocations in all). Keys go in chunks of 64, one per invocation for the scores (online softmax across
// chunks); the weighted sum of values has each invocation own output dims d = lid, lid + 64, ...
// (neighbouring invocations read neighbouring floats). Dispatch [TQ, H, B].
const DPT = (D + WG - 1u) / WG; // output dims per invocation
var<workgroup> row_a: array<f32, D>; // q (scaled) in forward and dq; k_j in dkv
var<workgroup> row_b: array<f32, D>; // dO_t in dq; v_j in dkv
var<workgroup> chunk_p: array<f32, WG>;
var<workgroup> chunk_ds: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

// sum (or max) of v over the workgroup; every invocation gets the result. Its barriers also publish any
// workgroup memory written before the call.
fn wg_reduce(v: f32, i: u32, is_max: bool) -> f32 {
  red[i] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) {
      red[i] = select(red[i] + red[i + s], max(red[i], red[i + s]), is_max);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x;
  let h = wg.y;
  let b = wg.z;
  let i = lid.x;
  let hk = h / (params.heads / params.kv_heads);
  let qbase = (b * params.tq + t) * params.heads * D + h * D;
  let kvw = params.kv_heads * D;
  for (var d = i; d < D; d += WG) { row_a[d] = q[qbase + d] * params.scale; }
  workgroupBarrier();
  var acc: array<f32, DPT>;
  for (var r = 0u; r < DPT; r++) { acc[r] = 0.0; }
  var mx = NEG_BIG;
  var den = 0.0;
  let first = kv_start[b];
  let last = params.past + t; // inclusive; uniform over the workgroup, so the barriers below are too
  for (var c = first; c <= last; c += WG) {
    let j = c + i;
    var s = NEG_BIG;
    if (j <= last) {
      let kb = (b * params.t_cache + j) * kvw + hk * D;
      s = 0.0;
      for (var d = 0u; d < D; d++) { s = fma(row_a[d], kc[kb + d], s); }
    }
    let m_new = max(mx, wg_reduce(s, i, true));
    let p = select(0.0, exp(s - m_new), j <= last);
    chunk_p[i] = p;
    let corr = exp(mx - m_new);
    den = den * corr + wg_reduce(p, i, false); // the reduction's barriers also publish chunk_p
    mx = m_new;
    let n = min(WG, last + 1u - c);
    for (var r = 0u; r < DPT; r++) {
      let d = i + r * WG;
      if (d < D) {
        var a = acc[r] * corr;
        for (var jj = 0u; jj < n; jj++) {
          a = fma(chunk_p[jj], vc[(b * params.t_cache + c + jj) * kvw + hk * D + d], a);
        }
        acc[r] = a;
      }
    }
    workgroupBarrier(); // chunk_p is rewritten by the next chunk
  }
  let inv = select(0.0, 1.0 / den, den > 0.0);
  for (var r = 0u; r < DPT; r++) {
    let d = i + r * WG;
    if (d < D) { o[qbase + d] = acc[r] * inv; }
  }
  if (i == 0u) {
    lse[(b * params.heads + h) * params.tq + t] = select(NEG_BIG, mx + log(den), den > 0.0);
  }
}

// ---- Backward (training: past = 0, t_cache = TQ). With P = softmax(scale * q k^T) over valid keys,
// dP = dO v^T and Dsum_t = sum_j P_tj dP_tj = dO_t · O_t:
//   dq_t = scale * sum_j P_tj (dP_tj - Dsum_t) k_j
//   dk_j = scale * sum_{h in group, t >= j} P_tj (dP_tj - Dsum_t) q_t,   dv_j = sum P_tj dO_t
// Two passes without atomics: one invocation per query (dq, Dsum), then one per key (dk, dv).
@group(0) @binding(7) var<storage, read> o_in: array<f32>;
@group(0) @binding(8) var<storage, read> lse_in: array<f32>;
@group(0) @binding(9) var<storage, read> d_o: array<f32>;
@group(0) @binding(10) var<storage, read_write> dq: array<f32>;
@group(0) @binding(11) var<storage, read_write> dsum: array<f32>;
@group(0) @binding(12) var<storage, read> dsum_in: array<f32>;
@group(0) @binding(13) var<storage, read_write> dk: array<f32>;
@group(0) @binding(14) var<storage, read_write> dv: array<f32>;

@compute @workgroup_size(WG)
fn backward_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x * WG + lid.x;
  let h = wg.y;
  let b = wg.z;
  if (t >= params.tq) { return; }
  let hk = h / (params.heads / params.kv_heads);
  let qbase = (b * params.tq + t) * params.heads * D + h * D;
  let kvw = params.kv_heads * D;
  let li = (b * params.heads + h) * params.tq + t;
  var qv: array<f32, D>;
  var dov: array<f32, D>;
  var acc: array<f32, D>;
  var dsum_t = 0.0;
  for (var d = 0u; d < D; d++) {
    qv[d] = q[qbase + d] * params.scale;
    dov[d] = d_o[qbase + d];
    dsum_t = fma(dov[d], o_in[qbase + d], dsum_t);
    acc[d] = 0.0;
  }
  dsum[li] = dsum_t;
  let l = lse_in[li];
  let last = params.past + t;
  for (var j = kv_start[b]; j <= last; j++) {
    let kb = (b * params.t_cache + j) * kvw + hk * D;
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < D; d++) {
      s = fma(qv[d], kc[kb + d], s);
      dp = fma(dov[d], vc[kb + d], dp);
    }
    let ds = exp(s - l) * (dp - dsum_t) * params.scale;
    for (var d = 0u; d < D; d++) { acc[d] = fma(ds, kc[kb + d], acc[d]); }
  }
  for (var d = 0u; d < D; d++) { dq[qbase + d] = acc[d]; }
}

// The query heads [h_first, h_end) whose gradients key j of sequence b collects in workgroup row wg_y (a kv
// head, or with PER_HEAD one query head), the key's kv head hk, and where its dk/dv output row starts.
struct KvSlot { h_first: u32, h_end: u32, hk: u32, ob: u32 }

fn kv_slot(b: u32, j: u32, wg_y: u32) -> KvSlot {
  let group = params.heads / params.kv_heads;
#ifdef PER_HEAD
  return KvSlot(wg_y, wg_y + 1u, wg_y / group, (b * params.t_cache + j) * params.heads * D + wg_y * D);
#else
  return KvSlot(wg_y * group, wg_y * group + group, wg_y, (b * params.t_cache + j) * params.kv_heads * D + wg_y * D);
#endif
}

// PER_HEAD (grouped-query attention): one invocation per (key, query head) instead of per (key, kv
// head), writing that head's share of dk/dv to dk/dv laid out [B*T, H*D]; group_sum then adds the
// group's shares in head order. Group-size times more invocations for the same work.
@compute @workgroup_size(WG)
fn backward_dkv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let j = wg.x * WG + lid.x;
  let b = wg.z;
  if (j >= params.tq) { return; }
  let ks = kv_slot(b, j, wg.y);
  let h_first = ks.h_first;
  let h_end = ks.h_end;
  let hk = ks.hk;
  let ob = ks.ob;
  let kvw = params.kv_heads * D;
  let kb = (b * params.t_cache + j) * kvw + hk * D;
  var kv: array<f32, D>;
  var vv: array<f32, D>;
  var dka: array<f32, D>;
  var dva: array<f32, D>;
  for (var d = 0u; d < D; d++) {
    kv[d] = kc[kb + d];
    vv[d] = vc[kb + d];
    dka[d] = 0.0;
    dva[d] = 0.0;
  }
  if (j >= kv_start[b]) {
    for (var h = h_first; h < h_end; h++) {
      for (var t = j; t < params.tq; t++) {
        let qbase = (b * params.tq + t) * params.heads * D + h * D;
        let li = (b * params.heads + h) * params.tq + t;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D; d++) {
          s = fma(q[qbase + d], kv[d], s);
          dp = fma(d_o[qbase + d], vv[d], dp);
        }
        let p = exp(s * params.scale - lse_in[li]);
        let ds = p * (dp - dsum_in[li]) * params.scale;
        for (var d = 0u; d < D; d++) {
          dva[d] = fma(p, d_o[qbase + d], dva[d]);
          dka[d] = fma(ds, q[qbase + d], dka[d]);
        }
      }
    }
  }
  for (var d = 0u; d < D; d++) {
    dk[ob + d] = dka[d];
    dv[ob + d] = dva[d];
  }
}

// dk/dv [B*T, HKV*D] = the sum over each kv head's group of the per-head shares [B*T, H*D], in order.
@group(0) @binding(15) var<storage, read> dk_heads: array<f32>;
@group(0) @binding(16) var<storage, read> dv_heads: array<f32>;

@compute @workgroup_size(WG)
fn group_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid.x;
  let kvw = params.kv_heads * D;
  if (i >= params.b * params.tq * kvw) { return; }
  let row = i / kvw;
  let hk = (i % kvw) / D;
  let d = i % D;
  let group = params.heads / params.kv_heads;
  var sk = 0.0;
  var sv = 0.0;
  for (var g = 0u; g < group; g++) {
    let src = row * params.heads * D + (hk * group + g) * D + d;
    sk += dk_heads[src];
    sv += dv_heads[src];
  }
  dk[i] = sk;
  dv[i] = sv;
}

// ---- Backward by rows (GPUs): the two passes above with a 64-wide workgroup per query row (dq, Dsum) and
// per key row (dk, dv) instead of one invocation each; chunks of 64 keys (queries) give each invocation
// one score pair, then each invocation accumulates its own output dims over the chunk. Dispatch [T, H, B]
// for dq, [T, H or HKV (PER_HEAD), B] for dk/dv.
@compute @workgroup_size(WG)
fn backward_dq_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x;
  let h = wg.y;
  let b = wg.z;
  let i = lid.x;
  let hk = h / (params.heads / params.kv_heads);
  let qbase = (b * params.tq + t) * params.heads * D + h * D;
  let kvw = params.kv_heads * D;
  let li = (b * params.heads + h) * params.tq + t;
  var part = 0.0;
  for (var d = i; d < D; d += WG) {
    row_a[d] = q[qbase + d] * params.scale;
    row_b[d] = d_o[qbase + d];
    part = fma(row_b[d], o_in[qbase + d], part);
  }
  let dsum_t = wg_reduce(part, i, false); // its barriers publish row_a / row_b
  if (i == 0u) { dsum[li] = dsum_t; }
  let l = lse_in[li];
  var acc: array<f32, DPT>;
  for (var r = 0u; r < DPT; r++) { acc[r] = 0.0; }
  let last = params.past + t;
  for (var c = kv_start[b]; c <= last; c += WG) {
    let j = c + i;
    var ds = 0.0;
    if (j <= last) {
      let kb = (b * params.t_cache + j) * kvw + hk * D;
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < D; d++) {
        s = fma(row_a[d], kc[kb + d], s);
        dp = fma(row_b[d], vc[kb + d], dp);
      }
      ds = exp(s - l) * (dp - dsum_t) * params.scale;
    }
    chunk_ds[i] = ds;
    workgroupBarrier();
    let n = min(WG, last + 1u - c);
    for (var r = 0u; r < DPT; r++) {
      let d = i + r * WG;
      if (d < D) {
        var a = acc[r];
        for (var jj = 0u; jj < n; jj++) {
          a = fma(chunk_ds[jj], kc[(b * params.t_cache + c + jj) * kvw + hk * D + d], a);
        }
        acc[r] = a;
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < DPT; r++) {
    let d = i + r * WG;
    if (d < D) { dq[qbase + d] = acc[r]; }
  }
}

@compute @workgroup_size(WG)
fn backward_dkv_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let j = wg.x;
  let b = wg.z;
  let i = lid.x;
  let ks = kv_slot(b, j, wg.y);
  let h_first = ks.h_first;
  let h_end = ks.h_end;
  let hk = ks.hk;
  let ob = ks.ob;
  let kb = (b * params.t_cache + j) * params.kv_heads * D + hk * D;
  for (var d = i; d < D; d += WG) {
    row_a[d] = kc[kb + d];
    row_b[d] = vc[kb + d];
  }
  workgroupBarrier();
  var dka: array<f32, DPT>;
  var dva: array<f32, DPT>;
  for (var r = 0u; r < DPT; r++) {
    dka[r] = 0.0;
    dva[r] = 0.0;
  }
  if (j >= kv_start[b]) { // uniform over the workgroup
    for (var h = h_first; h < h_end; h++) {
      for (var c = j; c < params.tq; c += WG) {
        let t = c + i;
        var p = 0.0;
        var ds = 0.0;
        if (t < params.tq) {
          let qbase = (b * params.tq + t) * params.heads * D + h * D;
          let li = (b * params.heads + h) * params.tq + t;
          var s = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            s = fma(q[qbase + d], row_a[d], s);
            dp = fma(d_o[qbase + d], row_b[d], dp);
          }
          p = exp(s * params.scale - lse_in[li]);
          ds = p * (dp - dsum_in[li]) * params.scale;
        }
        chunk_p[i] = p;
        chunk_ds[i] = ds;
        workgroupBarrier();
        let n = min(WG, params.tq - c);
        for (var r = 0u; r < DPT; r++) {
          let d = i + r * WG;
          if (d < D) {
            var ak = dka[r];
            var av = dva[r];
            for (var tt = 0u; tt < n; tt++) {
              let qb = (b * params.tq + c + tt) * params.heads * D + h * D + d;
              av = fma(chunk_p[tt], d_o[qb], av);
              ak = fma(chunk_ds[tt], q[qb], ak);
            }
            dka[r] = ak;
            dva[r] = av;
          }
        }
        workgroupBarrier();
      }
    }
  }
  for (var r = 0u; r < DPT; r++) {
    let d = i + r * WG;
    if (d < D) {
      dk[ob + d] = dka[r];
      dv[ob + d] = dva[r];
    }
  }
}
