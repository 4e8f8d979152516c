// Learning-rate schedules with warmup (as in transformers: linear warmup from 0, then linear or
// cosine decay to 0 at the last step, or constant).

export type ScheduleKind = "linear" | "cosine" | "constant";

export function learningRate(
  kind: ScheduleKind,
  base: number,
  step: number,
  total: number,
  warmup: number,
): number {
  // step is 0-based: the rate used for the (step+1)-th update
  if (warmup > 0 && step < warmup) return base * (step / warmup);
  if (kind === "constant") return base;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (kind === "linear") return base * Math.max(0, 1 - progress);
  return base * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}

/** Warmup given as a ratio of total steps (< 1) or as a number of steps (>= 1), like HF's. */
export function warmupSteps(warmup: number, total: number): number {
  return warmup < 1 ? Math.ceil(warmup * total) : Math.floor(warmup);
}

/** A checkpoint interval given as a fraction of total steps (< 1: a checkpoint at least that often, e.g.
 * 0.1 for Table 3's "at least every 10 %") or as a number of steps (>= 1). */
export function checkpointSteps(every: number, total: number): number {
  return every < 1 ? Math.max(1, Math.floor(every * total)) : Math.floor(every);
}
