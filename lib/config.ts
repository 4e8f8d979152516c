// One reader for every YAML the project reads (training configs, experiment configs, sweeps): keys read by
// name with types, ranges and defaults, unknown keys refused, every error one line naming the file and
// the key's full path.

import { parse } from "yaml";

export class ConfigReader {
  private seen = new Set<string>();
  constructor(readonly raw: Record<string, unknown>, readonly file: string, readonly prefix = "") {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new Error(`${file}: ${prefix || "config"} must be a mapping`);
    }
  }
  /** the key's full path (as error messages name it) */
  path(key: string): string {
    return this.prefix ? `${this.prefix}.${key}` : key;
  }
  private k(key: string) {
    this.seen.add(key);
    return this.prefix ? `${this.prefix}.${key}` : key;
  }
  /** throw "FILE: key 'K' must be WHAT, found V" (for readers built on this one) */
  fail(key: string, what: string, v: unknown): never {
    throw new Error(`${this.file}: key '${this.k(key)}' must be ${what}, found ${shown(v)}`);
  }
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  str(key: string, dflt?: string): string {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (typeof v !== "string") this.fail(key, "a string", v);
    return v as string;
  }
  /**
   * A name that becomes part of a path inside the run folder (an output file, a condition's folder):
   * letters, digits, '-', '_', '.', not starting with '.', so nothing can leave the run folder.
   */
  name(key: string, dflt?: string): string {
    const v = this.str(key, dflt);
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(v) || v.length > 200) {
      this.fail(
        key,
        "a name of letters, digits, '-', '_' and '.' (not starting with '.'; it names a file or folder in the run folder)",
        v,
      );
    }
    return v;
  }
  optStr(key: string): string | null {
    return this.has(key) ? this.str(key) : (this.k(key), null);
  }
  /** a non-empty string (a path, a name of a thing elsewhere) */
  nonEmpty(key: string, dflt?: string): string {
    const v = this.str(key, dflt);
    if (!v) this.fail(key, "a non-empty string", v);
    return v;
  }
  oneOf<T extends string>(key: string, options: readonly T[], dflt?: T): T {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
      this.fail(key, `one of ${options.join(", ")}`, v);
    }
    return v as T;
  }
  /** null when absent or null, else the value `read` returns */
  nullable<T>(key: string, read: (key: string) => T): T | null {
    if (!this.has(key)) {
      this.k(key);
      return null;
    }
    return read(key);
  }
  num(
    key: string,
    dflt?: number,
    o: { int?: boolean; min?: number; max?: number; gt?: number; lt?: number } = {},
  ): number {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (typeof v !== "number" || !Number.isFinite(v) || (o.int && !Number.isInteger(v))) {
      this.fail(key, o.int ? "an integer" : "a number", v);
    }
    if (o.min !== undefined && (v as number) < o.min) this.fail(key, `>= ${o.min}`, v);
    if (o.max !== undefined && (v as number) > o.max) this.fail(key, `<= ${o.max}`, v);
    if (o.gt !== undefined && (v as number) <= o.gt) this.fail(key, `> ${o.gt}`, v);
    if (o.lt !== undefined && (v as number) >= o.lt) this.fail(key, `< ${o.lt}`, v);
    return v as number;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (typeof v !== "boolean") this.fail(key, "true or false", v);
    return v as boolean;
  }
  strList(key: string, dflt?: string[]): string[] {
    const v = this.raw[key] ?? dflt;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) this.fail(key, "a list of strings", v);
    return v as string[];
  }
  intList(key: string, dflt?: number[]): number[] {
    const v0 = this.raw[key] ?? dflt;
    const v = typeof v0 === "number" ? [v0] : v0;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) {
      this.fail(key, "an integer or a list of integers", v0);
    }
    return v as number[];
  }
  numList(key: string, dflt?: number[]): number[] {
    const v0 = this.raw[key] ?? dflt;
    const v = typeof v0 === "number" ? [v0] : v0;
    this.k(key);
    if (v === undefined) throw new Error(`${this.file}: key '${this.k(key)}' is required`);
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.fail(key, "a number or a list of numbers", v0);
    }
    return v as number[];
  }
  sub(key: string): ConfigReader {
    this.k(key);
    const v = this.raw[key];
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(key, "a mapping", v);
    return new ConfigReader(v as Record<string, unknown>, this.file, this.k(key));
  }
  list(key: string): ConfigReader[] {
    this.k(key);
    const v = this.raw[key];
    if (!Array.isArray(v)) this.fail(key, "a list of mappings", v);
    return (v as unknown[]).map((x, i) =>
      new ConfigReader(x as Record<string, unknown>, this.file, `${this.k(key)}[${i}]`)
    );
  }
  /** raw value (already validated elsewhere) */
  any(key: string): unknown {
    this.k(key);
    return this.raw[key];
  }
  /** throw on keys nobody read */
  done(): void {
    for (const k of Object.keys(this.raw)) {
      if (!this.seen.has(k)) {
        throw new Error(`${this.file}: unknown key '${this.prefix ? `${this.prefix}.${k}` : k}'`);
      }
    }
  }
}

export async function readYaml(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read config: ${(e as Error).message}`);
  }
  try {
    const v = parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new Error("expected a mapping at the top level");
    }
    return v;
  } catch (e) {
    throw new Error(`${path}: invalid YAML: ${(e as Error).message}`);
  }
}

/** JSON with object keys sorted at every level: a hash of a config must not depend on the order keys were read in. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** A value as an error shows it: JSON, except the numbers JSON cannot write (YAML's .inf, .nan) */
function shown(v: unknown): string {
  return typeof v === "number" && !Number.isFinite(v) ? String(v) : JSON.stringify(v);
}

/** A seed's range: the generators take 32-bit seeds, and a larger one would wrap onto another seed's stream. */
export const SEED_RANGE = { int: true, min: 0, max: 2 ** 32 - 1 } as const;

/**
 * The strings of a parsed config that may name something it reads, with their key paths ("post[1].data"):
 * every string but URLs and those under keys that are outputs, caches (made on demand) or rubric text. Callers
 * decide what counts as a path (an existing file; anything with a "/").
 */
export function configReads(v: unknown, key = ""): { key: string; value: string }[] {
  if (typeof v === "string") {
    const skip = /(^|\.)(output|cache_dir|coherence_prompt|base_url)$/.test(key) || /^https?:/.test(v);
    return skip ? [] : [{ key, value: v }];
  }
  if (Array.isArray(v)) return v.flatMap((x, i) => configReads(x, `${key}[${i}]`));
  if (v && typeof v === "object") {
    return Object.entries(v).flatMap(([k, x]) => configReads(x, key ? `${key}.${k}` : k));
  }
  return [];
}
