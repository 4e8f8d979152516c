// Weight storage variants, included by kernels that read weight matrices.
// The including kernel defines W_DTYPE (f32 | bf16 | f16 | f16n) and W_BINDING, and gets
//   fn load_w(i: u32) -> f32     element i of the weight tensor (row-major, as on disk)
// or, with W_VEC4, load_w4 (below).
// bf16/f16 are packed two per u32 (element 2i in the low half), so any adapter can read them;
// f16 is decoded bit by bit rather than with unpack2x16float, whose results differed between
// Mesa's lavapipe and llvmpipe. f16n reads native f16 and needs the shader-f16 feature.

fn bf16_to_f32(h: u32) -> f32 {
  return bitcast<f32>(h << 16u);
}

fn f16_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8; // subnormal: m * 2^-24
    return select(v, -v, sign != 0u);
  }
  if (e == 31u) {
    return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
  }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

#ifdef W_VEC4
// Quad loads for kernels that read four consecutive elements at once (K % 4 == 0):
//   fn load_w4(q: u32) -> vec4<f32>   elements 4q .. 4q+3
#if W_DTYPE == f32
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<vec4<f32>>;
fn load_w4(q: u32) -> vec4<f32> {
  return wmat[q];
}
#endif
#if W_DTYPE == bf16
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<vec2<u32>>;
fn load_w4(q: u32) -> vec4<f32> {
  let p = wmat[q];
  return vec4<f32>(bitcast<f32>(p.x << 16u), bitcast<f32>(p.x & 0xffff0000u),
                   bitcast<f32>(p.y << 16u), bitcast<f32>(p.y & 0xffff0000u));
}
#endif
#if W_DTYPE == f16
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<vec2<u32>>;
fn load_w4(q: u32) -> vec4<f32> {
  let p = wmat[q];
  return vec4<f32>(f16_to_f32(p.x & 0xffffu), f16_to_f32(p.x >> 16u), f16_to_f32(p.y & 0xffffu), f16_to_f32(p.y >> 16u));
}
#endif
#if W_DTYPE == f16n
enable f16;
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<vec4<f16>>;
fn load_w4(q: u32) -> vec4<f32> {
  return vec4<f32>(wmat[q]);
}
#endif
#else
#if W_DTYPE == f32
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<f32>;
fn load_w(i: u32) -> f32 {
  return wmat[i];
}
#endif
#if W_DTYPE == bf16
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<u32>;
fn load_w(i: u32) -> f32 {
  let word = wmat[i >> 1u];
  return bf16_to_f32(select(word & 0xffffu, word >> 16u, (i & 1u) == 1u));
}
#endif
#if W_DTYPE == f16
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<u32>;
fn load_w(i: u32) -> f32 {
  let word = wmat[i >> 1u];
  return f16_to_f32(select(word & 0xffffu, word >> 16u, (i & 1u) == 1u));
}
#endif
#if W_DTYPE == f16n
enable f16;
@group(0) @binding(W_BINDING) var<storage, read> wmat: array<f16>;
fn load_w(i: u32) -> f32 {
  return f32(wmat[i]);
}
#endif
#endif
