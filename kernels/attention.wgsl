// Grouped-query causal attention with a per-sequence key range (left padding) and a KV cache.
//   q  [B*TQ, H*D]               queries of this call, rows b*TQ + t, absolute position past + t
//   kc, vc [B*T_CACHE, HKV*D]    keys / values, rows b*T_CACHE + j
//   kv_start[b]                  first valid key of sequence b (left padding before it is masked)
// Query t of sequence b attends to keys j with kv_start[b] <= j <= past + t. Query head h reads
// key head h / (H / HKV). Output o [B*TQ, H*D] and the row log-sum-exp lse [B, H, TQ] (for the
// backward pass). A query with no valid key (a left-pad row) outputs zeros.
// forward: one invocation per (b, h, t), online softmax over keys, HEAD_DIM a define so that the
// per-invocation accumulators are fixed-size arrays (CPU adapters, where invocations are threads and
// few is right, decode steps included); forward_rows below spreads each row over a workgroup (GPUs).

// split: split decoding's keys per slice (forward_split, split_merge)
struct Params { b: u32, tq: u32, t_cache: u32, heads: u32, kv_heads: u32, past: u32, scale: f32, split: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> kv_start: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

#include "index"

const D = HEAD_DIM;
const NEG_BIG = -3.0e38;

// forward's invocations run over (b, h, t) flattened, t fastest, on a flat grid: a decode step's B*H rows
// fill whole workgroups (with a workgroup per (t-block, h, b) they would run one live lane in WG)
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let n = flat_index(wg, nwg, lid, WG);
  if (n >= params.b * params.heads * params.tq) { return; }
  let t = n % params.tq;
  let h = (n / params.tq) % params.heads;
  let b = n / (params.tq * params.heads);
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
// DPT (a define: ceil(D / WG)) output dims per invocation, in registers acc_0 .. unrolled by #for
var<workgroup> row_a: array<f32, D>; // q (scaled) in forward and dq; k_j in dkv
var<workgroup> row_b: array<f32, D>; // dO_t in dq; v_j in dkv
var<workgroup> chunk_p: array<f32, WG>;
var<workgroup> chunk_ds: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

// sum (or max) of v over the workgroup; every invocation gets the result. Callers publish what they wrote to
// workgroup memory with a barrier of their own before calling it.
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

// one query row's attention over the keys [j_lo, j_hi] (inclusive), unnormalized: the row's share of the
// value sum (this invocation's dims), the running maximum and the denominator at that maximum
struct RowPart {
#for R in 0..DPT
  a_${R}: f32,
#endfor
  mx: f32,
  den: f32,
}

fn attend_row(b: u32, h: u32, qbase: u32, i: u32, j_lo: u32, j_hi: u32) -> RowPart {
  let hk = h / (params.heads / params.kv_heads);
  let kvw = params.kv_heads * D;
  for (var d = i; d < D; d += WG) { row_a[d] = q[qbase + d] * params.scale; }
  workgroupBarrier();
  var r = RowPart();
  r.mx = NEG_BIG;
  // bounds are uniform over the workgroup, so the barriers below are too
  for (var c = j_lo; c <= j_hi; c += WG) {
    let j = c + i;
    var s = NEG_BIG;
    if (j <= j_hi) {
      let kb = (b * params.t_cache + j) * kvw + hk * D;
      s = 0.0;
      for (var d = 0u; d < D; d++) { s = fma(row_a[d], kc[kb + d], s); }
    }
    let m_new = max(r.mx, wg_reduce(s, i, true));
    let p = select(0.0, exp(s - m_new), j <= j_hi);
    chunk_p[i] = p;
    // published by a barrier here, not by the reduction's: Dawn's GL backend on llvmpipe does not make
    // writes before a call visible through the callee's barriers (rows past the first 8 came out wrong)
    workgroupBarrier();
    let corr = exp(r.mx - m_new);
    r.den = r.den * corr + wg_reduce(p, i, false);
    r.mx = m_new;
    let n = min(WG, j_hi + 1u - c);
#for R in 0..DPT
    {
      let d = i + ${R}u * WG;
      if (d < D) {
        var a = r.a_${R} * corr;
        for (var jj = 0u; jj < n; jj++) {
          a = fma(chunk_p[jj], vc[(b * params.t_cache + c + jj) * kvw + hk * D + d], a);
        }
        r.a_${R} = a;
      }
    }
#endfor
    workgroupBarrier(); // chunk_p is rewritten by the next chunk
  }
  return r;
}

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x;
  let h = wg.y;
  let b = wg.z;
  let i = lid.x;
  let qbase = (b * params.tq + t) * params.heads * D + h * D;
  let r = attend_row(b, h, qbase, i, kv_start[b], params.past + t);
  let inv = select(0.0, 1.0 / r.den, r.den > 0.0);
#for R in 0..DPT
  if (i + ${R}u * WG < D) { o[qbase + i + ${R}u * WG] = r.a_${R} * inv; }
#endfor
  if (i == 0u) {
    lse[(b * params.heads + h) * params.tq + t] = select(NEG_BIG, r.mx + log(r.den), r.den > 0.0);
  }
}

// ---- Split decoding (flash-decoding): a decode step's keys in `split` slices of params.split keys, a
// workgroup each (B*H rows alone would leave most of a GPU idle on a long context), then a merge. Slice s
// of row (b, h) writes its unnormalized part to split_part[((b * H + h) * S + s) * (D + 2)]: D sums, the
// maximum and the denominator. Dispatch [S, H, B] (TQ = 1), then split_merge [H, B].
@group(0) @binding(17) var<storage, read_write> split_part: array<f32>;

@compute @workgroup_size(WG)
fn forward_split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let sl = wg.x;
  let h = wg.y;
  let b = wg.z;
  let i = lid.x;
  let qbase = (b * params.tq) * params.heads * D + h * D;
  let first = kv_start[b] + sl * params.split;
  let last = min(params.past, first + params.split - 1u); // past + t at t = 0
  let pbase = ((b * params.heads + h) * nwg.x + sl) * (D + 2u);
  if (first > params.past) { // an empty slice (uniform): no keys
#for R in 0..DPT
    if (i + ${R}u * WG < D) { split_part[pbase + i + ${R}u * WG] = 0.0; }
#endfor
    if (i == 0u) {
      split_part[pbase + D] = NEG_BIG;
      split_part[pbase + D + 1u] = 0.0;
    }
    return;
  }
  let r = attend_row(b, h, qbase, i, first, last);
#for R in 0..DPT
  if (i + ${R}u * WG < D) { split_part[pbase + i + ${R}u * WG] = r.a_${R}; }
#endfor
  if (i == 0u) {
    split_part[pbase + D] = r.mx;
    split_part[pbase + D + 1u] = r.den;
  }
}

// The slices of a row into o and lse: weights exp(m_s - max_s m_s).
@compute @workgroup_size(WG)
fn split_merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.x;
  let b = wg.y;
  let i = lid.x;
  let S = (params.past + 1u + params.split - 1u) / params.split;
  let base = (b * params.heads + h) * S * (D + 2u);
  var m = NEG_BIG;
  for (var s = 0u; s < S; s++) { m = max(m, split_part[base + s * (D + 2u) + D]); }
  var den = 0.0;
  for (var s = 0u; s < S; s++) {
    let ps = base + s * (D + 2u);
    den += exp(split_part[ps + D] - m) * split_part[ps + D + 1u];
  }
  let qbase = b * params.heads * D + h * D;
  let inv = select(0.0, 1.0 / den, den > 0.0);
  for (var d = i; d < D; d += WG) {
    var v = 0.0;
    for (var s = 0u; s < S; s++) {
      let ps = base + s * (D + 2u);
      v += exp(split_part[ps + D] - m) * split_part[ps + d];
    }
    o[qbase + d] = v * inv;
  }
  if (i == 0u) { lse[b * params.heads + h] = select(NEG_BIG, m + log(den), den > 0.0); }
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
  workgroupBarrier(); // publishes row_a / row_b (not left to the reduction's barriers: see attend_row)
  let dsum_t = wg_reduce(part, i, false);
  if (i == 0u) { dsum[li] = dsum_t; }
  let l = lse_in[li];
#for R in 0..DPT
  var acc_${R} = 0.0;
#endfor
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
#for R in 0..DPT
    {
      let d = i + ${R}u * WG;
      if (d < D) {
        var a = acc_${R};
        for (var jj = 0u; jj < n; jj++) {
          a = fma(chunk_ds[jj], kc[(b * params.t_cache + c + jj) * kvw + hk * D + d], a);
        }
        acc_${R} = a;
      }
    }
#endfor
    workgroupBarrier();
  }
#for R in 0..DPT
  if (i + ${R}u * WG < D) { dq[qbase + i + ${R}u * WG] = acc_${R}; }
#endfor
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
#for R in 0..DPT
  var dka_${R} = 0.0;
  var dva_${R} = 0.0;
#endfor
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
#for R in 0..DPT
        {
          let d = i + ${R}u * WG;
          if (d < D) {
            var ak = dka_${R};
            var av = dva_${R};
            for (var tt = 0u; tt < n; tt++) {
              let qb = (b * params.tq + c + tt) * params.heads * D + h * D + d;
              av = fma(chunk_p[tt], d_o[qb], av);
              ak = fma(chunk_ds[tt], q[qb], ak);
            }
            dka_${R} = ak;
            dva_${R} = av;
          }
        }
#endfor
        workgroupBarrier();
      }
    }
  }
#for R in 0..DPT
  if (i + ${R}u * WG < D) {
    dk[ob + i + ${R}u * WG] = dka_${R};
    dv[ob + i + ${R}u * WG] = dva_${R};
  }
#endfor
}

#ifdef FLASH
// ---- Flash attention for training: a workgroup per tile of BQ queries (forward, dq) or BQ keys (dk/dv) of
// one head and sequence, TPR invocations per row, taking the other side in tiles of BKV rows through
// workgroup memory, so that each K/V (or Q/dO) row is read once per tile rather than once per row. A tile
// step is two phases: the BQ x BKV pair values (scores, dS, P) into workgroup memory, every invocation a
// few pairs, each a whole-row dot product; then every row's TPR invocations update their slices of the
// row's accumulators (CPT = ceil(D4 / TPR) vec4 each, unrolled registers) from them. Rows are stored RS = D4 + 1 vec4 apart
// so that neighbouring invocations reading one column of different rows hit different banks. BQ, BKV and
// TPR and CPT are defines (lib/ops/attention.ts sizes them to the device's workgroup memory); dispatch
// [ceil(T / BQ), H (or HKV), B].
const D4 = (D + 3u) / 4u;
const RS = D4 + 1u;
const FT = BQ * TPR;

var<workgroup> fa_q: array<vec4<f32>, BQ * RS>;   // forward/dq: the query tile; dk/dv: its own keys
var<workgroup> fa_o: array<vec4<f32>, BQ * RS>;   // dq: dO of the query tile; dk/dv: its own values
var<workgroup> fa_k: array<vec4<f32>, BKV * RS>;  // forward/dq: a key tile; dk/dv: a query tile
var<workgroup> fa_v: array<vec4<f32>, BKV * RS>;  // forward/dq: a value tile; dk/dv: dO of the query tile
var<workgroup> fa_s: array<f32, BQ * BKV>;        // scores (forward), dS (dq), P (dk/dv)
var<workgroup> fa_t: array<f32, BQ * BKV>;        // dS (dk/dv)
var<workgroup> fa_l: array<f32, BKV>;             // dk/dv: the query tile's lse
var<workgroup> fa_d: array<f32, BKV>;             // dk/dv: the query tile's Dsum

// chunk c (dims 4c .. 4c+3, zeros past D) of the row from element `base` of q, K, V or dO (components
// spelled out: no dynamically indexed private vector)
fn chunk_q(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  return vec4<f32>(select(0.0, q[base + d], d < D), select(0.0, q[base + d + 1u], d + 1u < D),
                   select(0.0, q[base + d + 2u], d + 2u < D), select(0.0, q[base + d + 3u], d + 3u < D));
}
fn chunk_k(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  return vec4<f32>(select(0.0, kc[base + d], d < D), select(0.0, kc[base + d + 1u], d + 1u < D),
                   select(0.0, kc[base + d + 2u], d + 2u < D), select(0.0, kc[base + d + 3u], d + 3u < D));
}
fn chunk_v(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  return vec4<f32>(select(0.0, vc[base + d], d < D), select(0.0, vc[base + d + 1u], d + 1u < D),
                   select(0.0, vc[base + d + 2u], d + 2u < D), select(0.0, vc[base + d + 3u], d + 3u < D));
}
fn chunk_do(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  return vec4<f32>(select(0.0, d_o[base + d], d < D), select(0.0, d_o[base + d + 1u], d + 1u < D),
                   select(0.0, d_o[base + d + 2u], d + 2u < D), select(0.0, d_o[base + d + 3u], d + 3u < D));
}

// whole-row dot products between rows of the tiles (workgroup pointers cannot be parameters in WGSL)
fn dot_qk(rq: u32, rk: u32) -> f32 {
  var s = 0.0;
  for (var c = 0u; c < D4; c++) { s += dot(fa_q[rq * RS + c], fa_k[rk * RS + c]); }
  return s;
}
fn dot_ov(ro: u32, rv: u32) -> f32 {
  var s = 0.0;
  for (var c = 0u; c < D4; c++) { s += dot(fa_o[ro * RS + c], fa_v[rv * RS + c]); }
  return s;
}

@compute @workgroup_size(FT)
fn flash_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let b = wg.z;
  let row = lid.x / TPR;
  let part = lid.x % TPR;
  let t = wg.x * BQ + row;
  let live = t < params.tq;
  let hk = h / (params.heads / params.kv_heads);
  let kvw = params.kv_heads * D;
  let start = kv_start[b];
  for (var e = lid.x; e < BQ * D4; e += FT) {
    let r = e / D4;
    let tr = wg.x * BQ + r;
    var v = vec4<f32>(0.0);
    if (tr < params.tq) { v = chunk_q((b * params.tq + tr) * params.heads * D + h * D, e % D4) * params.scale; }
    fa_q[r * RS + e % D4] = v;
  }
#for C in 0..CPT
  var acc_${C} = vec4<f32>(0.0);
#endfor
  var m = NEG_BIG;
  var l = 0.0;
  let last = params.past + min(params.tq - 1u, wg.x * BQ + BQ - 1u); // the tile's last key: uniform
  for (var j0 = (start / BKV) * BKV; j0 <= last; j0 += BKV) {
    for (var e = lid.x; e < BKV * D4; e += FT) {
      let r = e / D4;
      let j = j0 + r;
      var kv = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (j < params.t_cache) {
        let base = (b * params.t_cache + j) * kvw + hk * D;
        kv = chunk_k(base, e % D4);
        vv = chunk_v(base, e % D4);
      }
      fa_k[r * RS + e % D4] = kv;
      fa_v[r * RS + e % D4] = vv;
    }
    workgroupBarrier();
    for (var i = part; i < BKV; i += TPR) {
      let j = j0 + i;
      var s = NEG_BIG;
      if (live && j >= start && j <= params.past + t) { s = dot_qk(row, i); }
      fa_s[row * BKV + i] = s;
    }
    workgroupBarrier();
    // the row's softmax bookkeeping (each of its TPR invocations does the same, in the same order)
    var mt = NEG_BIG;
    for (var i = 0u; i < BKV; i++) { mt = max(mt, fa_s[row * BKV + i]); }
    let mn = max(m, mt);
    let corr = exp(m - mn);
    var lt = 0.0;
#for C in 0..CPT
    acc_${C} *= corr;
#endfor
    for (var i = 0u; i < BKV; i++) {
      let s = fa_s[row * BKV + i];
      let p = select(0.0, exp(s - mn), s > NEG_BIG);
      lt += p;
#for C in 0..CPT
      acc_${C} = fma(vec4<f32>(p), fa_v[i * RS + min(${C}u * TPR + part, D4 - 1u)], acc_${C});
#endfor
    }
    l = l * corr + lt;
    m = mn;
    workgroupBarrier();
  }
  if (live) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let qbase = (b * params.tq + t) * params.heads * D + h * D;
#for C in 0..CPT
#for E in 0..4
    if (4u * (${C}u * TPR + part) + ${E}u < D) { o[qbase + 4u * (${C}u * TPR + part) + ${E}u] = acc_${C}[${E}] * inv; }
#endfor
#endfor
    if (part == 0u) { lse[(b * params.heads + h) * params.tq + t] = select(NEG_BIG, m + log(l), l > 0.0); }
  }
}

// dq and Dsum for a tile of queries (the backward's first pass): the key tiles as in the forward; the pair
// values are dS = P (dP - Dsum) * scale.
@compute @workgroup_size(FT)
fn flash_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let b = wg.z;
  let row = lid.x / TPR;
  let part = lid.x % TPR;
  let t = wg.x * BQ + row;
  let live = t < params.tq;
  let hk = h / (params.heads / params.kv_heads);
  let kvw = params.kv_heads * D;
  let start = kv_start[b];
  for (var e = lid.x; e < BQ * D4; e += FT) {
    let r = e / D4;
    let tr = wg.x * BQ + r;
    var qv = vec4<f32>(0.0);
    var ov = vec4<f32>(0.0);
    if (tr < params.tq) {
      let base = (b * params.tq + tr) * params.heads * D + h * D;
      qv = chunk_q(base, e % D4) * params.scale;
      ov = chunk_do(base, e % D4);
    }
    fa_q[r * RS + e % D4] = qv;
    fa_o[r * RS + e % D4] = ov;
  }
  // the row's Dsum = dO_t . O_t (each of its invocations computes it alike; one stores it) and lse
  let qbase = (b * params.tq + min(t, params.tq - 1u)) * params.heads * D + h * D;
  let li = (b * params.heads + h) * params.tq + min(t, params.tq - 1u);
  var dsum_t = 0.0;
  for (var d = 0u; d < D; d++) { dsum_t = fma(d_o[qbase + d], o_in[qbase + d], dsum_t); }
  let l = lse_in[li];
  if (live && part == 0u) { dsum[li] = dsum_t; }
#for C in 0..CPT
  var acc_${C} = vec4<f32>(0.0);
#endfor
  let last = params.past + min(params.tq - 1u, wg.x * BQ + BQ - 1u);
  for (var j0 = (start / BKV) * BKV; j0 <= last; j0 += BKV) {
    for (var e = lid.x; e < BKV * D4; e += FT) {
      let r = e / D4;
      let j = j0 + r;
      var kv = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (j < params.t_cache) {
        let base = (b * params.t_cache + j) * kvw + hk * D;
        kv = chunk_k(base, e % D4);
        vv = chunk_v(base, e % D4);
      }
      fa_k[r * RS + e % D4] = kv;
      fa_v[r * RS + e % D4] = vv;
    }
    workgroupBarrier();
    for (var i = part; i < BKV; i += TPR) {
      let j = j0 + i;
      var ds = 0.0;
      if (live && j >= start && j <= params.past + t) {
        ds = exp(dot_qk(row, i) - l) * (dot_ov(row, i) - dsum_t) * params.scale;
      }
      fa_s[row * BKV + i] = ds;
    }
    workgroupBarrier();
    for (var i = 0u; i < BKV; i++) {
      let ds = vec4<f32>(fa_s[row * BKV + i]);
#for C in 0..CPT
      acc_${C} = fma(ds, fa_k[i * RS + min(${C}u * TPR + part, D4 - 1u)], acc_${C});
#endfor
    }
    workgroupBarrier();
  }
  if (live) {
#for C in 0..CPT
#for E in 0..4
    if (4u * (${C}u * TPR + part) + ${E}u < D) { dq[qbase + 4u * (${C}u * TPR + part) + ${E}u] = acc_${C}[${E}]; }
#endfor
#endfor
  }
}

// dk and dv for a tile of keys (the second pass): the query tiles of each query head in the key's group (or,
// PER_HEAD, of one head: group_sum adds the shares), from the first query that sees the tile's first key.
@compute @workgroup_size(FT)
fn flash_dkv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wg.z;
  let row = lid.x / TPR;
  let part = lid.x % TPR;
  let j = wg.x * BQ + row;
  let live = j < params.tq;
  let ks = kv_slot(b, min(j, params.tq - 1u), wg.y);
  // the head range from the workgroup alone: the loop holds barriers, and Tint's uniformity analysis takes
  // anything computed from the invocation's key j as non-uniform
  let heads = kv_slot(b, 0u, wg.y);
  let kvw = params.kv_heads * D;
  let start = kv_start[b];
  for (var e = lid.x; e < BQ * D4; e += FT) {
    let r = e / D4;
    let jr = wg.x * BQ + r;
    var kv = vec4<f32>(0.0);
    var vv = vec4<f32>(0.0);
    if (jr < params.tq) {
      let base = (b * params.t_cache + jr) * kvw + ks.hk * D;
      kv = chunk_k(base, e % D4);
      vv = chunk_v(base, e % D4);
    }
    fa_q[r * RS + e % D4] = kv;
    fa_o[r * RS + e % D4] = vv;
  }
#for C in 0..CPT
  var dk_${C} = vec4<f32>(0.0);
  var dv_${C} = vec4<f32>(0.0);
#endfor
  for (var h = heads.h_first; h < heads.h_end; h++) {
    for (var t0 = (wg.x * BQ / BKV) * BKV; t0 < params.tq; t0 += BKV) {
      for (var e = lid.x; e < BKV * D4; e += FT) {
        let r = e / D4;
        let tr = t0 + r;
        var qv = vec4<f32>(0.0);
        var ov = vec4<f32>(0.0);
        if (tr < params.tq) {
          let base = (b * params.tq + tr) * params.heads * D + h * D;
          qv = chunk_q(base, e % D4);
          ov = chunk_do(base, e % D4);
        }
        fa_k[r * RS + e % D4] = qv;
        fa_v[r * RS + e % D4] = ov;
      }
      for (var r = lid.x; r < BKV; r += FT) {
        let li = (b * params.heads + h) * params.tq + min(t0 + r, params.tq - 1u);
        fa_l[r] = lse_in[li];
        fa_d[r] = dsum_in[li];
      }
      workgroupBarrier();
      for (var i = part; i < BKV; i += TPR) {
        let t = t0 + i;
        var p = 0.0;
        var ds = 0.0;
        if (live && j >= start && t >= j && t < params.tq) {
          p = exp(dot_qk(row, i) * params.scale - fa_l[i]);
          ds = p * (dot_ov(row, i) - fa_d[i]) * params.scale;
        }
        fa_s[row * BKV + i] = p;
        fa_t[row * BKV + i] = ds;
      }
      workgroupBarrier();
      for (var i = 0u; i < BKV; i++) {
        let p = vec4<f32>(fa_s[row * BKV + i]);
        let ds = vec4<f32>(fa_t[row * BKV + i]);
#for C in 0..CPT
        dv_${C} = fma(p, fa_v[i * RS + min(${C}u * TPR + part, D4 - 1u)], dv_${C});
        dk_${C} = fma(ds, fa_k[i * RS + min(${C}u * TPR + part, D4 - 1u)], dk_${C});
#endfor
      }
      workgroupBarrier();
    }
  }
  if (live) {
#for C in 0..CPT
#for E in 0..4
    if (4u * (${C}u * TPR + part) + ${E}u < D) {
      dk[ks.ob + 4u * (${C}u * TPR + part) + ${E}u] = dk_${C}[${E}];
      dv[ks.ob + 4u * (${C}u * TPR + part) + ${E}u] = dv_${C}[${E}];
    }
#endfor
#endfor
  }
}
#endif
