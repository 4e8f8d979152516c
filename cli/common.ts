// Shared CLI plumbing: argument errors that say what was expected, GPU start-up, JSON output.

import { Gpu } from "../lib/gpu/context.ts";
import { NoAdapterError } from "../lib/gpu/device.ts";
import type { SteerPhase, SteerSpec } from "../defence/defence.ts";

export class UsageError extends Error {}

export function need<T>(v: T | undefined, flag: string, cmd: string): T {
  if (v === undefined || v === "") throw new UsageError(`${cmd}: --${flag} is required`);
  return v;
}

export function parseNumber(
  v: string | undefined,
  flag: string,
  dflt: number,
  opts: { int?: boolean; min?: number; max?: number } = {},
): number {
  if (v === undefined) return dflt;
  // decimal only: Number() would also take "0x10", "1e2", "" and " 3 "
  const n = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v) && !(opts.int && /[.eE]/.test(v))
    ? Number(v)
    : NaN;
  if (
    !Number.isFinite(n) || (opts.int && !Number.isSafeInteger(n)) ||
    (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)
  ) {
    const range = [
      opts.min !== undefined ? `>= ${opts.min}` : "",
      opts.max !== undefined ? `<= ${opts.max}` : "",
    ]
      .filter(Boolean).join(" and ");
    throw new UsageError(
      `--${flag}: expected ${opts.int ? "an integer" : "a number"}${range ? ` ${range}` : ""}, got '${v}'`,
    );
  }
  return n;
}

/** Comma-separated decimal token ids, each below `vocab` (ids are u32 on the GPU: nothing may wrap). */
export function parseTokenList(v: string, flag: string, vocab = 2 ** 32): number[] {
  const ids = v.split(",").map((s) => s.trim()).filter((s) => s.length);
  if (!ids.length) throw new UsageError(`--${flag}: expected comma-separated token ids, got '${v}'`);
  return ids.map((s) => {
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n) || n >= vocab) {
      throw new UsageError(
        `--${flag}: '${s}' is not a token id (expected a decimal integer in 0..${vocab - 1}), in '${v}'`,
      );
    }
    return n;
  });
}

export async function startGpu(): Promise<Gpu> {
  try {
    return await Gpu.create();
  } catch (e) {
    if (e instanceof NoAdapterError) throw new UsageError(e.message);
    throw e;
  }
}

/**
 * `--steer FILE --layer L[,L…] --coef C [--steer-mode all|prompt|response]` as a defence/defence.ts SteerSpec
 * (null without --steer); the layers are checked against the model where it is loaded (steerLayers).
 */
export function steerFromFlags(
  a: Record<string, string | boolean | undefined>,
  cmd: string,
  phase = false,
): SteerSpec | null {
  const flags = ["layer", "coef", ...(phase ? ["steer-mode"] : [])];
  if (!a.steer) {
    for (const k of flags) {
      if (a[k] !== undefined) throw new UsageError(`${cmd}: --${k} needs --steer (a vector file)`);
    }
    return null;
  }
  if (a.layer === undefined || a.coef === undefined) {
    throw new UsageError(`${cmd}: --steer needs --layer and --coef`);
  }
  const mode = (a["steer-mode"] as string | undefined) ?? "all";
  if (!["all", "prompt", "response"].includes(mode)) {
    throw new UsageError("--steer-mode: expected all, prompt or response");
  }
  return {
    vector: a.steer as string,
    random: false,
    layers: String(a.layer).split(",").map((x) => parseNumber(x, "layer", 0, { int: true, min: 0 })),
    coef: parseNumber(a.coef as string, "coef", 0),
    mode: mode as SteerPhase,
  };
}
