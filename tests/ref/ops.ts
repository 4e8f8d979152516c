// Plain-TypeScript f64 twins of the GPU ops, written for clarity, not speed.
// Each mirrors the signature of its lib/ops wrapper on flat row-major arrays.

import { hashU32 } from "../../lib/rng.ts";

export type Arr = ArrayLike<number>;

/** C[m, n] = alpha * sum_k A(m,k) W(k,n) + bias[n] + residual[m, n] (W as [N,K] unless wKN). */
export function matmul(
  a: Arr,
  M: number,
  K: number,
  w: Arr,
  N: number,
  o: { aKM?: boolean; wKN?: boolean; bias?: Arr; residual?: Arr; alpha?: number } = {},
): Float64Array {
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = o.aKM ? a[k * M + m] : a[m * K + k];
        const wv = o.wKN ? w[k * N + n] : w[n * K + k];
        s += av * wv;
      }
      c[m * N + n] = (o.alpha ?? 1) * s + (o.bias ? o.bias[n] : 0) + (o.residual ? o.residual[m * N + n] : 0);
    }
  }
  return c;
}

export function embedding(ids: Arr, table: Arr, d: number): Float64Array {
  const out = new Float64Array(ids.length * d);
  for (let t = 0; t < ids.length; t++) for (let j = 0; j < d; j++) out[t * d + j] = table[ids[t] * d + j];
  return out;
}

export function rmsnorm(x: Arr, w: Arr, eps: number): { y: Float64Array; rstd: Float64Array } {
  const d = w.length, rows = x.length / d;
  const y = new Float64Array(x.length), rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[r * d + j] ** 2;
    const inv = 1 / Math.sqrt(s / d + eps);
    rstd[r] = inv;
    for (let j = 0; j < d; j++) y[r * d + j] = x[r * d + j] * inv * w[j];
  }
  return { y, rstd };
}

export interface Shape {
  batch: number;
  t: number;
  tCache: number;
  past: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** cos/sin of position p, frequency i: table[2*(p*D/2+i)], [..+1] (same layout as the GPU table). */
export function qkvRope(
  s: Shape,
  qkv: Arr,
  pos: Arr,
  cosSin: Arr,
  kc: Float64Array,
  vc: Float64Array,
): Float64Array {
  const { heads: H, kvHeads: HK, headDim: D } = s;
  const half = D / 2, all = H + 2 * HK, rows = s.batch * s.t;
  const q = new Float64Array(rows * H * D);
  for (let r = 0; r < rows; r++) {
    const b = Math.floor(r / s.t), crow = b * s.tCache + s.past + (r % s.t);
    for (let h = 0; h < all; h++) {
      for (let i = 0; i < half; i++) {
        const src = r * all * D + h * D + i;
        const x1 = qkv[src], x2 = qkv[src + half];
        if (h >= H + HK) {
          const dst = crow * HK * D + (h - H - HK) * D + i;
          vc[dst] = x1;
          vc[dst + half] = x2;
          continue;
        }
        const c = cosSin[2 * (pos[r] * half + i)], sn = cosSin[2 * (pos[r] * half + i) + 1];
        const y1 = x1 * c - x2 * sn, y2 = x2 * c + x1 * sn;
        if (h < H) {
          q[r * H * D + h * D + i] = y1;
          q[r * H * D + h * D + i + half] = y2;
        } else {
          kc[crow * HK * D + (h - H) * D + i] = y1;
          kc[crow * HK * D + (h - H) * D + i + half] = y2;
        }
      }
    }
  }
  return q;
}

export function attention(
  s: Shape,
  q: Arr,
  kc: Arr,
  vc: Arr,
  kvStart: Arr,
): { o: Float64Array; lse: Float64Array } {
  const { heads: H, kvHeads: HK, headDim: D } = s;
  const o = new Float64Array(s.batch * s.t * H * D);
  const lse = new Float64Array(s.batch * H * s.t);
  const scale = 1 / Math.sqrt(D);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let t = 0; t < s.t; t++) {
        const qb = (b * s.t + t) * H * D + h * D;
        const scores: number[] = [], idx: number[] = [];
        for (let j = kvStart[b]; j <= s.past + t; j++) {
          const kb = (b * s.tCache + j) * HK * D + hk * D;
          let sc = 0;
          for (let d = 0; d < D; d++) sc += q[qb + d] * kc[kb + d];
          scores.push(sc * scale);
          idx.push(kb);
        }
        if (!scores.length) {
          lse[(b * H + h) * s.t + t] = -Infinity;
          continue;
        }
        const mx = Math.max(...scores);
        const den = scores.reduce((a, x) => a + Math.exp(x - mx), 0);
        lse[(b * H + h) * s.t + t] = mx + Math.log(den);
        for (let n = 0; n < scores.length; n++) {
          const p = Math.exp(scores[n] - mx) / den;
          for (let d = 0; d < D; d++) o[qb + d] += p * vc[idx[n] + d];
        }
      }
    }
  }
  return { o, lse };
}

export function swiglu(gu: Arr, rows: number, inter: number): Float64Array {
  const out = new Float64Array(rows * inter);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < inter; i++) {
      const g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
      out[r * inter + i] = g / (1 + Math.exp(-g)) * u;
    }
  }
  return out;
}

export function crossEntropy(
  logits: Arr,
  targets: Arr,
  mask: Arr,
): { loss: Float64Array; lse: Float64Array } {
  const rows = targets.length, V = logits.length / rows;
  const loss = new Float64Array(rows), lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - mx);
    lse[r] = mx + Math.log(s);
    loss[r] = mask[r] === 0 ? 0 : mask[r] * (lse[r] - logits[r * V + targets[r]]);
  }
  return { loss, lse };
}

/** Index of the first maximum of a row, NaN never chosen, 0 when there is none (sample.wgsl's argmax). */
export function argmax(x: Arr): number {
  let best = -1;
  for (let i = 0; i < x.length; i++) {
    if (!Number.isNaN(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  }
  return Math.max(best, 0);
}

/**
 * sample.wgsl's draw in f64: the nucleus {x >= tau}, tau the largest logit value whose tokens carry at least
 * topP of softmax(x / temperature)'s mass; Gumbel-max over it with u_i from the kernel's hash of (seed, step,
 * row, i). Returns the chosen id, each token's perturbed score (-Infinity outside the nucleus) and tau.
 */
export function sampleDraw(
  x: Arr,
  d: { temperature: number; topP: number; seed: number; step: number; row: number },
  hash: (v: number) => number,
): { id: number; score: Float64Array; tau: number } {
  const finite = (v: number) => Number.isFinite(v);
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (finite(x[i])) m = Math.max(m, x[i]);
  const w = Array.from(x, (v) => finite(v) ? Math.exp((v - m) / d.temperature) : 0);
  let tau = -Infinity;
  if (d.topP < 1) {
    const total = w.reduce((a, b) => a + b, 0);
    const values = [...new Set(Array.from(x).filter(finite))].sort((a, b) => b - a);
    let cum = 0, k = 0;
    const order = Array.from({ length: x.length }, (_, i) => i).filter((i) => finite(x[i]))
      .sort((a, b) => x[b] - x[a]);
    for (const v of values) {
      while (k < order.length && x[order[k]] >= v) cum += w[order[k++]];
      if (cum >= d.topP * total) {
        tau = v;
        break;
      }
    }
  }
  const key = hash((hash((hash(d.seed) ^ d.step) >>> 0) ^ d.row) >>> 0);
  const score = new Float64Array(x.length).fill(-Infinity);
  let id = 0;
  for (let i = 0; i < x.length; i++) {
    if (!finite(x[i]) || x[i] < tau) continue;
    const u = ((hash((i ^ key) >>> 0) >>> 8) + 0.5) / 16777216;
    score[i] = (x[i] - m) / d.temperature - Math.log(-Math.log(u));
    if (score[i] > score[id]) id = i;
  }
  return { id, score, tau };
}

/** Inverted dropout's mask (kernels: hash of the element index and the seed): keep scale, or 0. */
export function dropoutKeep(i: number, seed: number, p: number): number {
  const u = (hashU32((i ^ hashU32(seed >>> 0)) >>> 0) >>> 8) / 16777216;
  return u >= p ? 1 / (1 - p) : 0;
}

export interface GeneralMatmul {
  a: Arr;
  w: Arr;
  N: number;
  K: number;
  aKM?: boolean;
  wKN?: boolean;
  lda: number;
  ldw: number;
  ldc: number;
  /** C before the product (returned updated) */
  c: Arr;
  groups: {
    m: number;
    k?: number;
    aOff?: number;
    wOff?: number;
    colOffset?: number;
    rowOffset?: number;
    seed?: number;
  }[];
  alpha?: number;
  bias?: Arr;
  residual?: Arr;
  accumulate?: boolean;
  dropout?: { operand: "a" | "w"; p: number };
  sum?: { operand: "a" | "w"; slices: number; stride: number };
  lora?: {
    kind: "b" | "a";
    input: Arr;
    ld: number;
    slices: number;
    stride: number;
    w: Arr;
    r: number;
    scale: number;
    segments: { c0: number; c1: number; b0: number; seed: number }[];
    p: number;
  };
}

/** kernels/matmul.wgsl's tile in f64, read straight from its definition (groups, dropout, slices, LoRA). */
export function matmulGeneral(s: GeneralMatmul): Float64Array {
  const c = Float64Array.from(s.c);
  const sum = (arr: Arr, i: number, op: "a" | "w") =>
    s.sum?.operand === op
      ? Array.from({ length: s.sum.slices }, (_, z) => arr[i + z * s.sum!.stride]).reduce((x, y) => x + y, 0)
      : arr[i];
  for (const g of s.groups) {
    const K = g.k ?? s.K,
      aOff = g.aOff ?? 0,
      wOff = g.wOff ?? 0,
      co = g.colOffset ?? 0,
      ro = g.rowOffset ?? 0;
    for (let m = 0; m < g.m; m++) {
      for (let n = 0; n < s.N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) {
          const ai = aOff + (s.aKM ? k * s.lda + m : m * s.lda + k);
          const wi = wOff + (s.wKN ? k * s.ldw + n : n * s.ldw + k);
          let av = sum(s.a, ai, "a"), wv = sum(s.w, wi, "w");
          if (s.dropout?.operand === "a") av *= dropoutKeep(ai, g.seed ?? 0, s.dropout.p);
          if (s.dropout?.operand === "w") wv *= dropoutKeep(wi, g.seed ?? 0, s.dropout.p);
          acc += av * wv;
        }
        const ci = (ro + m) * s.ldc + co + n;
        let v = (s.alpha ?? 1) * acc;
        const l = s.lora;
        if (l) {
          l.segments.forEach((sg, si) => {
            if (l.kind === "b" && !(n >= sg.c0 && n < sg.c1)) return;
            let part = 0;
            for (let j = 0; j < l.r; j++) {
              let u = 0;
              for (let z = 0; z < l.slices; z++) u += l.input[m * l.ld + si * l.r + j + z * l.stride];
              part += l.kind === "b"
                ? u * l.w[(sg.b0 + n - sg.c0) * l.r + j]
                : u * l.w[(si * l.r + j) * s.N + n];
            }
            if (l.kind === "b") v += l.scale * part;
            else v += (l.p > 0 ? dropoutKeep(ci, sg.seed, l.p) : 1) * part;
          });
        }
        if (s.bias) v += s.bias[co + n];
        if (s.residual) v += s.residual[ci];
        if (s.accumulate) v += c[ci];
        c[ci] = v;
      }
    }
  }
  return c;
}
