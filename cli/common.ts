// Shared CLI plumbing: argument errors that say what was expected, GPU start-up, JSON output.

import { Gpu } from "../lib/gpu/context.ts";
import { NoAdapterError } from "../lib/gpu/device.ts";

export class UsageError extends Error {}

export function need<T>(v: T | undefined, flag: string, cmd: string): T {
  if (v === undefined || v === "") throw new UsageError(`${cmd}: --${flag} is required`);
  return v;
}

export function parseNumber(
  v: string | undefined,
  flag: string,
  dflt: number,
  opts: { int?: boolean; min?: number } = {},
): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw new UsageError(
      `--${flag}: expected ${opts.int ? "an integer" : "a number"}${
        opts.min !== undefined ? ` >= ${opts.min}` : ""
      }, got '${v}'`,
    );
  }
  return n;
}

export function parseTokenList(v: string, flag: string): number[] {
  const ids = v.split(",").map((s) => s.trim()).filter((s) => s.length);
  const out = ids.map((s) => Number(s));
  const bad = ids.find((_s, i) => !Number.isInteger(out[i]) || out[i] < 0);
  if (bad !== undefined || !out.length) {
    throw new UsageError(`--${flag}: expected comma-separated token ids, got '${v}'`);
  }
  return out;
}

export async function startGpu(): Promise<Gpu> {
  try {
    return await Gpu.create();
  } catch (e) {
    if (e instanceof NoAdapterError) throw new UsageError(e.message);
    throw e;
  }
}
