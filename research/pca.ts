// Uncentered PCA of per-sample gradient differences (rows of X, N x d): X is divided by its
// Frobenius norm, the second-moment matrix is X^T X / (N-1), and its eigenvectors are the components.
// When N < d the N x N Gram matrix X X^T / (N-1) gives the same spectrum cheaply: v = X^T u / |X^T u|.

import { Rng } from "../lib/rng.ts";

/** Eigen-decomposition of a symmetric matrix (cyclic Jacobi), eigenvalues descending. */
export function symmetricEigen(a: Float64Array, n: number): { values: number[]; vectors: Float64Array[] } {
  const A = Float64Array.from(a), V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += A[p * n + q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p], akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k], aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p], vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => A[j * n + j] - A[i * n + i]);
  return {
    values: order.map((i) => A[i * n + i]),
    vectors: order.map((i) => Float64Array.from({ length: n }, (_, k) => V[k * n + i])),
  };
}

export interface PcaResult {
  /** explained-variance fraction of each kept component */
  explained: number[];
  /** kept components (unit, [d]), oriented to a non-negative cosine with `orient` */
  components: Float64Array[];
  /** per-sample projections on each component, [N][k] (of the normalised rows) */
  projections: number[][];
  method: "gram" | "direct";
}

export function uncenteredPca(
  rows: Float64Array[],
  o: { threshold?: number; orient?: ArrayLike<number>; method?: "gram" | "direct" } = {},
): PcaResult {
  const N = rows.length, d = rows[0].length;
  let fro = 0;
  for (const r of rows) for (const x of r) fro += x * x;
  fro = Math.sqrt(fro) || 1;
  const X = rows.map((r) => r.map((x) => x / fro));
  const denom = Math.max(1, N - 1);
  const method = o.method ?? (N < d ? "gram" : "direct");
  let values: number[], comps: Float64Array[];
  if (method === "gram") {
    const G = new Float64Array(N * N);
    for (let i = 0; i < N; i++) {
      for (let j = i; j < N; j++) {
        let s = 0;
        for (let k = 0; k < d; k++) s += X[i][k] * X[j][k];
        G[i * N + j] = G[j * N + i] = s / denom;
      }
    }
    const e = symmetricEigen(G, N);
    values = e.values;
    comps = e.vectors.map((u) => {
      const v = new Float64Array(d);
      for (let i = 0; i < N; i++) for (let k = 0; k < d; k++) v[k] += u[i] * X[i][k];
      const n = Math.hypot(...v);
      return n > 0 ? v.map((x) => x / n) : v;
    });
  } else {
    const M = new Float64Array(d * d);
    for (const r of X) {
      for (let a = 0; a < d; a++) for (let b = a; b < d; b++) M[a * d + b] += (r[a] * r[b]) / denom;
    }
    for (let a = 0; a < d; a++) for (let b = 0; b < a; b++) M[a * d + b] = M[b * d + a];
    const e = symmetricEigen(M, d);
    values = e.values;
    comps = e.vectors;
  }
  const total = values.reduce((a, v) => a + Math.max(0, v), 0) || 1;
  const keep: number[] = [];
  let cum = 0;
  for (let i = 0; i < values.length && cum < (o.threshold ?? 0.95) - 1e-12; i++) {
    keep.push(i);
    cum += Math.max(0, values[i]) / total;
  }
  const components = keep.map((i) => {
    const v = comps[i];
    if (o.orient) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += v[k] * o.orient[k];
      if (dot < 0) return v.map((x) => -x);
    }
    return v;
  });
  return {
    explained: keep.map((i) => Math.max(0, values[i]) / total),
    components,
    projections: X.map((r) => components.map((c) => r.reduce((a, x, k) => a + x * c[k], 0))),
    method,
  };
}

/**
 * A percentile bootstrap interval for PC1's share of the uncentered second moment (Figure 18): samples drawn
 * with replacement `reps` times (seeded), PC1's share of each resample from its Gram matrix (the share is
 * λ1 / trace, unchanged by the Frobenius normalisation and the 1/(N-1)), by power iteration.
 */
export function pc1ShareInterval(
  rows: Float64Array[],
  o: { reps?: number; level?: number; seed?: number } = {},
): { lo: number; hi: number; level: number; reps: number } {
  const N = rows.length, reps = o.reps ?? 500, level = o.level ?? 0.95;
  const K = new Float64Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = i; j < N; j++) {
      let s = 0;
      for (let k = 0; k < rows[i].length; k++) s += rows[i][k] * rows[j][k];
      K[i * N + j] = K[j * N + i] = s;
    }
  }
  const rng = new Rng(o.seed ?? 0);
  const shares: number[] = [];
  const idx = new Int32Array(N), v = new Float64Array(N), w = new Float64Array(N);
  for (let r = 0; r < reps; r++) {
    for (let a = 0; a < N; a++) idx[a] = Math.floor(rng.next() * N);
    let trace = 0;
    for (let a = 0; a < N; a++) trace += K[idx[a] * N + idx[a]];
    if (!(trace > 0)) continue;
    v.fill(1 / Math.sqrt(N));
    let lambda = 0;
    for (let it = 0; it < 300; it++) {
      for (let a = 0; a < N; a++) {
        let s = 0;
        const row = idx[a] * N;
        for (let b = 0; b < N; b++) s += K[row + idx[b]] * v[b];
        w[a] = s;
      }
      const norm = Math.hypot(...w);
      if (!(norm > 0)) break;
      for (let a = 0; a < N; a++) v[a] = w[a] / norm;
      if (Math.abs(norm - lambda) <= 1e-10 * norm) {
        lambda = norm;
        break;
      }
      lambda = norm;
    }
    shares.push(lambda / trace);
  }
  shares.sort((a, b) => a - b);
  const at = (q: number) => shares[Math.min(shares.length - 1, Math.max(0, Math.floor(q * shares.length)))];
  return { lo: at((1 - level) / 2), hi: at(1 - (1 - level) / 2), level, reps: shares.length };
}
