// File helpers: atomic writes (temporary file in the same folder, fsync, rename) so that a killed
// run never leaves a half-written result, and JSON reading with errors that name the file.

import { basename, dirname, join, resolve } from "node:path";

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
    throw writeError(path, e, bytes.length);
  }
}

/** A failed write as one line naming the path (a full disk said as such; nothing was put in place). */
export function writeError(path: string, e: unknown, bytes: number): Error {
  const msg = (e as Error)?.message ?? String(e);
  if (e instanceof Deno.errors.IsADirectory || msg.includes("Is a directory")) {
    return new Error(`${path}: is a directory; expected a file path to write`);
  }
  if (/No space left|ENOSPC|os error 28/i.test(msg)) {
    return new Error(`${path}: the disk is full (${bytes} bytes to write); nothing was written`);
  }
  return msg.includes(path) ? e as Error : new Error(`${path}: cannot write: ${msg}`);
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

/** A path made absolute with every existing part's symlinks resolved (the rest, not yet made, appended). */
export function realPathOf(path: string): string {
  let head = resolve(path);
  const tail: string[] = [];
  while (true) {
    try {
      return join(Deno.realPathSync(head), ...tail.reverse());
    } catch {
      const up = dirname(head);
      if (up === head) return resolve(path);
      tail.push(basename(head));
      head = up;
    }
  }
}

/**
 * A run folder may not be, or sit inside, anything the run reads (a model, an adapter, a data file, a
 * vector): it would write into it, and --overwrite would move it away. When the folder is about to be moved
 * aside (`moving`), it may not contain one either. `where` names the setting ("output_dir", "--run-dir").
 */
export function checkRunFolderApart(
  runDir: string,
  where: string,
  inputs: { key: string; path: string | null | undefined }[],
  moving: boolean,
): void {
  const run = realPathOf(runDir);
  for (const { key, path } of inputs) {
    if (!path) continue;
    const inp = realPathOf(path);
    const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith("/") ? b : b + "/");
    if (inside(run, inp)) {
      throw new Error(
        `${where} ${runDir} ${run === inp ? "is" : "is inside"} ${key} (${path}), which the run reads; ` +
          `choose a folder of its own`,
      );
    }
    if (moving && inside(inp, run)) {
      throw new Error(
        `${where} ${runDir} contains ${key} (${path}), which the run reads: moving the folder aside would ` +
          `take it away; choose another folder or move ${key} out first`,
      );
    }
  }
}

/** An error for a dangling symlink at `path` (naming its target), or null. */
export function danglingLink(path: string): string | null {
  try {
    if (!Deno.lstatSync(path).isSymlink) return null;
  } catch {
    return null;
  }
  try {
    Deno.statSync(path);
    return null;
  } catch {
    return `${path} is a symbolic link to ${Deno.readLinkSync(path)}, which does not exist`;
  }
}
