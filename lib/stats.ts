// Summary statistics of judged samples.

export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Standard error of the mean (sample standard deviation / sqrt(n)). */
export function sem(xs: number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1) / xs.length);
}

/** JSON can't hold NaN: summaries write null instead. */
export function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}
