// File helpers: atomic writes (temporary file in the same folder, fsync, rename) so that a killed
// run never leaves a half-written result, and JSON reading with errors that name the file.

import { basename, dirname, join } from "node:path";

export async function atomicWrite(path: string, data: Uint8Array | string): Promise<void> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    // no temporary file left behind, whatever failed (a full disk, a directory at `path`, …)
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof Deno.errors.IsADirectory || (e as Error).message?.includes("Is a directory")) {
      throw new Error(`${path}: is a directory; expected a file path to write`);
    }
    throw e;
  }
}

export function atomicWriteJson(path: string, value: unknown): Promise<void> {
  return atomicWrite(path, JSON.stringify(value, null, 1) + "\n");
}

export async function readJson(path: string, what = "file"): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: ${what} not found`);
    throw new Error(`${path}: cannot read ${what}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("expected a JSON object");
    return v;
  } catch (e) {
    throw new Error(`${path}: invalid JSON in ${what}: ${(e as Error).message}`);
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
