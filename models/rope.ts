// RoPE frequencies and the cos/sin table, computed on the host. Frequencies follow HF's f32
// computation (inv_freq in f32, angle = f32(pos * inv_freq)) so that logits track PyTorch's; cos and
// sin of that angle are then taken in f64, since GPU sin/cos of large angles is not accurate.

export interface RopeConfig {
  headDim: number;
  theta: number;
  /** HF `rope_scaling` (null/undefined = none). Supported: linear, llama3. */
  scaling?: Record<string, unknown> | null;
}

export function inverseFrequencies(c: RopeConfig, where = "config.json"): Float32Array {
  const half = c.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = Math.fround(1 / Math.fround(c.theta ** Math.fround((2 * i) / c.headDim)));
  }
  const sc = c.scaling;
  if (!sc) return inv;
  const type = String(sc.rope_type ?? sc.type ?? "");
  if (type === "default") return inv;
  if (type === "linear") {
    const f = Number(sc.factor);
    if (!(f > 0)) {
      throw new Error(`${where}: rope_scaling.factor must be a positive number for linear scaling`);
    }
    return inv.map((x) => x / f);
  }
  if (type === "llama3") {
    const factor = Number(sc.factor), lo = Number(sc.low_freq_factor), hi = Number(sc.high_freq_factor);
    const orig = Number(sc.original_max_position_embeddings);
    if (![factor, lo, hi, orig].every((x) => x > 0)) {
      throw new Error(
        `${where}: rope_scaling (llama3) needs positive factor, low_freq_factor, high_freq_factor, original_max_position_embeddings`,
      );
    }
    const lowWl = orig / lo, highWl = orig / hi;
    return inv.map((f) => {
      const wl = 2 * Math.PI / f;
      if (wl < highWl) return f;
      if (wl > lowWl) return f / factor;
      const smooth = (orig / wl - lo) / (hi - lo);
      return (1 - smooth) * f / factor + smooth * f;
    });
  }
  throw new Error(`${where}: rope_scaling type '${type}' is not supported (supported: linear, llama3)`);
}

/** Table [positions, D/2, 2] of (cos, sin) for positions 0..n-1. */
export function ropeTable(invFreq: Float32Array, n: number): Float32Array {
  const half = invFreq.length;
  const out = new Float32Array(n * half * 2);
  for (let p = 0; p < n; p++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * invFreq[i]);
      out[2 * (p * half + i)] = Math.cos(a);
      out[2 * (p * half + i) + 1] = Math.sin(a);
    }
  }
  return out;
}
