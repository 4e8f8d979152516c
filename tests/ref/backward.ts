// Analytic f64 backward twins of the GPU backward kernels (checked against finite differences of the
// forward twins in tests/backward_test.ts).

import type { Arr, Shape } from "./ops.ts";

export function rmsnormBackward(
  x: Arr,
  w: Arr,
  eps: number,
  dy: Arr,
): { dx: Float64Array; dw: Float64Array } {
  const d = w.length, rows = x.length / d;
  const dx = new Float64Array(x.length), dw = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += x[r * d + j] ** 2;
    const rs = 1 / Math.sqrt(ss / d + eps);
    let c = 0;
    for (let j = 0; j < d; j++) c += dy[r * d + j] * w[j] * x[r * d + j] * rs;
    c /= d;
    for (let j = 0; j < d; j++) {
      dx[r * d + j] = rs * (dy[r * d + j] * w[j] - x[r * d + j] * rs * c);
      dw[j] += dy[r * d + j] * x[r * d + j] * rs;
    }
  }
  return { dx, dw };
}

export function swigluBackward(gu: Arr, dout: Arr, rows: number, inter: number): Float64Array {
  const dgu = new Float64Array(rows * 2 * inter);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < inter; i++) {
      const g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i], s = 1 / (1 + Math.exp(-g));
      const d = dout[r * inter + i];
      dgu[r * 2 * inter + i] = d * u * s * (1 + g * (1 - s));
      dgu[r * 2 * inter + inter + i] = d * g * s;
    }
  }
  return dgu;
}

/** Transpose of qkvRope: gradients of q (rows) and k/v (cache layout) back to the fused qkv. */
export function qkvRopeBackward(s: Shape, dq: Arr, dk: Arr, dv: Arr, pos: Arr, cosSin: Arr): Float64Array {
  const { heads: H, kvHeads: HK, headDim: D } = s;
  const half = D / 2, all = H + 2 * HK, rows = s.batch * s.t;
  const out = new Float64Array(rows * all * D);
  for (let r = 0; r < rows; r++) {
    const b = Math.floor(r / s.t), crow = b * s.tCache + s.past + (r % s.t);
    for (let h = 0; h < all; h++) {
      for (let i = 0; i < half; i++) {
        const dst = r * all * D + h * D + i;
        if (h >= H + HK) {
          const src = crow * HK * D + (h - H - HK) * D + i;
          out[dst] = dv[src];
          out[dst + half] = dv[src + half];
          continue;
        }
        const src = h < H ? r * H * D + h * D + i : crow * HK * D + (h - H) * D + i;
        const g1 = h < H ? dq[src] : dk[src], g2 = h < H ? dq[src + half] : dk[src + half];
        const c = cosSin[2 * (pos[r] * half + i)], sn = cosSin[2 * (pos[r] * half + i) + 1];
        out[dst] = g1 * c + g2 * sn;
        out[dst + half] = g2 * c - g1 * sn;
      }
    }
  }
  return out;
}

export function attentionBackward(
  s: Shape,
  q: Arr,
  k: Arr,
  v: Arr,
  kvStart: Arr,
  dO: Arr,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { heads: H, kvHeads: HK, headDim: D } = s;
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const scale = 1 / Math.sqrt(D);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let t = 0; t < s.t; t++) {
        const qb = (b * s.t + t) * H * D + h * D;
        const js: number[] = [], sc: number[] = [];
        for (let j = kvStart[b]; j <= t; j++) {
          const kb = (b * s.t + j) * HK * D + hk * D;
          let x = 0;
          for (let d = 0; d < D; d++) x += q[qb + d] * k[kb + d];
          js.push(kb);
          sc.push(x * scale);
        }
        if (!js.length) continue;
        const mx = Math.max(...sc);
        const den = sc.reduce((a, x) => a + Math.exp(x - mx), 0);
        const p = sc.map((x) => Math.exp(x - mx) / den);
        const dp = js.map((kb) => {
          let x = 0;
          for (let d = 0; d < D; d++) x += dO[qb + d] * v[kb + d];
          return x;
        });
        const dsum = p.reduce((a, pi, i) => a + pi * dp[i], 0);
        js.forEach((kb, i) => {
          const ds = p[i] * (dp[i] - dsum) * scale;
          for (let d = 0; d < D; d++) {
            dq[qb + d] += ds * k[kb + d];
            dk[kb + d] += ds * q[qb + d];
            dv[kb + d] += p[i] * dO[qb + d];
          }
        });
      }
    }
  }
  return { dq, dk, dv };
}

export function crossEntropyBackward(logits: Arr, targets: Arr, mask: Arr, scale: number): Float64Array {
  const rows = targets.length, V = logits.length / rows;
  const g = new Float64Array(logits.length);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - mx);
    for (let j = 0; j < V; j++) {
      g[r * V + j] = scale * mask[r] * (Math.exp(logits[r * V + j] - mx) / s - (j === targets[r] ? 1 : 0));
    }
  }
  return g;
}
