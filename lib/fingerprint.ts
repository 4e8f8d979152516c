// Content fingerprints of what a run reads (a data file, a model folder, a vector, an adapter), so that a
// resumed run can tell that its inputs are the ones it started with, wherever they now live.

import { join } from "node:path";
import { createHash } from "node:crypto";
import { SafetensorsFile } from "./safetensors.ts";

/** "<bytes>:<sha256 prefix>" of a file's content, read in chunks. */
export async function fileFingerprint(path: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(path, { read: true });
  let size = 0;
  try {
    const buf = new Uint8Array(1 << 20);
    while (true) {
      const n = await f.read(buf);
      if (n === null) break;
      size += n;
      h.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return `${size}:${h.digest("hex").slice(0, 16)}`;
}

/** A hash of a model folder's config and safetensors headers (cheap; no need to read 15 GB). */
export async function modelHash(dir: string): Promise<string> {
  const h = createHash("sha256");
  h.update(await Deno.readTextFile(join(dir, "config.json")));
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".safetensors")) names.push(e.name);
  for (const n of names.sort()) {
    const f = await SafetensorsFile.open(join(dir, n));
    h.update(n);
    for (const [k, t] of [...f.tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
      h.update(`${k}:${t.dtype}:${t.shape}:${t.start}:${t.byteLength}`);
    }
    f.close();
  }
  return h.digest("hex").slice(0, 16);
}

/** A file's fingerprint, or a folder's: a model's hash, or its files' fingerprints (an adapter folder). */
export async function pathFingerprint(path: string): Promise<string> {
  const st = await Deno.stat(path);
  if (!st.isDirectory) return await fileFingerprint(path);
  try {
    await Deno.stat(join(path, "config.json"));
    return "model:" + await modelHash(path);
  } catch {
    const h = createHash("sha256");
    const names: string[] = [];
    for await (const e of Deno.readDir(path)) if (e.isFile) names.push(e.name);
    for (const n of names.sort()) h.update(`${n}=${await fileFingerprint(join(path, n))};`);
    return "folder:" + h.digest("hex").slice(0, 16);
  }
}
