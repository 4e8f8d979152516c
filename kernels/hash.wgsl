// Counter-based randomness shared by the kernels that need it (dropout, sampling): a pure function of
// its input, so that a random draw is a function of (seed, index) with no state to carry. Included with
// #include "hash"; lib/rng.ts's hashU32 is its host twin.
fn hash_u32(x: u32) -> u32 {
  var h = x * 0x9e3779b9u;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

// uniform in (0, 1) from the top 24 bits of a hash (never 0 or 1, so that log(u) and log(1 - u) are finite)
fn unit_open(h: u32) -> f32 {
  return (f32(h >> 8u) + 0.5) / 16777216.0;
}
