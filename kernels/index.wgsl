// Flat invocation index for 1-D work spread over a 2-D grid (x ≤ 65535 workgroups per dimension).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, wg_size: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * wg_size + lid.x;
}
