// Split the fused q|k|v projection output [rows, (H + 2*HKV) * D] and apply rotate-half RoPE
// (HF layout: pairs (i, i + D/2) within each head) to q and k:
//   q -> Q [rows, H*D];  k -> K cache, v -> V cache, both [B * t_cache, HKV*D] at row b*t_cache + past + t.
// In training the "cache" is just this step's K/V with t_cache = T and past = 0.
// cos/sin come from a host-computed table [positions, D/2] (f64 on the host: GPU sin/cos of
// large angles is not accurate enough), indexed by each row's position id, which is computed here
// rather than uploaded: row t of sequence b is at position past + t - kv_start[b] (left padding before
// kv_start counts from 0), so a decode step uploads nothing.

#include "index"

struct Params { rows: u32, t: u32, t_cache: u32, past: u32, heads: u32, kv_heads: u32, head_dim: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> kv_start: array<u32>;
@group(0) @binding(3) var<storage, read> cos_sin: array<f32>; // [p][i]: cos at 2*(p*D/2+i), sin at +1
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;

// Where invocation idx works: pair i of head h (q heads, then k, then v) of row `row`; `fused` indexes
// the fused qkv row, `crow` the K/V cache row. `valid` is false past the end.
struct Slot { valid: bool, i: u32, h: u32, row: u32, fused: u32, crow: u32, pos: u32 }

fn slot_of(idx: u32) -> Slot {
  let half = params.head_dim / 2u;
  let heads_all = params.heads + 2u * params.kv_heads;
  let i = idx % half;
  let h = (idx / half) % heads_all;
  let row = idx / (half * heads_all);
  let b = row / params.t;
  let valid = idx < params.rows * heads_all * half;
  let at = params.past + row % params.t;
  let start = select(0u, kv_start[min(b, params.rows / params.t - 1u)], valid);
  return Slot(valid, i, h, row,
              row * heads_all * params.head_dim + h * params.head_dim + i,
              b * params.t_cache + at, select(0u, at - start, at >= start));
}

@compute @workgroup_size(WG)
fn qkv_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let half = params.head_dim / 2u;
  let sl = slot_of(flat_index(wg, nwg, lid, WG));
  if (!sl.valid) { return; }
  let i = sl.i;
  let h = sl.h;
  let row = sl.row;
  let crow = sl.crow;
  let x1 = qkv[sl.fused];
  let x2 = qkv[sl.fused + half];
  let kvw = params.kv_heads * params.head_dim;
  if (h >= params.heads + params.kv_heads) { // v: copy
    let dst = crow * kvw + (h - params.heads - params.kv_heads) * params.head_dim + i;
    vc[dst] = x1;
    vc[dst + half] = x2;
    return;
  }
  let cs = 2u * (sl.pos * half + i);
  let c = cos_sin[cs];
  let s = cos_sin[cs + 1u];
  let y1 = x1 * c - x2 * s;
  let y2 = x2 * c + x1 * s;
  if (h < params.heads) {
    let dst = row * params.heads * params.head_dim + h * params.head_dim + i;
    q[dst] = y1;
    q[dst + half] = y2;
  } else {
    let dst = crow * kvw + (h - params.heads) * params.head_dim + i;
    kc[dst] = y1;
    kc[dst + half] = y2;
  }
}

// Backward: the transpose of the forward — gather dq, dk, dv (K/V in the cache layout of the forward
// pass) into dqkv [rows, (H + 2*HKV) * D], rotating q and k gradients by -angle.
@group(0) @binding(7) var<storage, read> dq: array<f32>;
@group(0) @binding(8) var<storage, read> dk: array<f32>;
@group(0) @binding(9) var<storage, read> dv: array<f32>;
@group(0) @binding(10) var<storage, read_write> dqkv: array<f32>;

@compute @workgroup_size(WG)
fn qkv_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
  let half = params.head_dim / 2u;
  let sl = slot_of(flat_index(wg, nwg, lid, WG));
  if (!sl.valid) { return; }
  let i = sl.i;
  let h = sl.h;
  let row = sl.row;
  let crow = sl.crow;
  let dst = sl.fused;
  let kvw = params.kv_heads * params.head_dim;
  if (h >= params.heads + params.kv_heads) {
    let src = crow * kvw + (h - params.heads - params.kv_heads) * params.head_dim + i;
    dqkv[dst] = dv[src];
    dqkv[dst + half] = dv[src + half];
    return;
  }
  var g1: f32;
  var g2: f32;
  if (h < params.heads) {
    let src = row * params.heads * params.head_dim + h * params.head_dim + i;
    g1 = dq[src];
    g2 = dq[src + half];
  } else {
    let src = crow * kvw + (h - params.heads) * params.head_dim + i;
    g1 = dk[src];
    g2 = dk[src + half];
  }
  let cs = 2u * (sl.pos * half + i);
  let c = cos_sin[cs];
  let s = cos_sin[cs + 1u];
  dqkv[dst] = g1 * c + g2 * s;
  dqkv[dst + half] = g2 * c - g1 * s;
}
