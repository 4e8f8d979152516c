// safetensors reader and writer (format: u64-LE header length N, N bytes of JSON header, raw data).
// The reader opens the file and reads tensors on demand, by row range, so that a 15 GB shard
// never sits whole in memory. Every check names the file and the tensor.

import { atomicWrite } from "./fsutil.ts";

export type SafeDType =
  | "F32"
  | "F16"
  | "BF16"
  | "I32"
  | "I64"
  | "U8"
  | "I8"
  | "F64"
  | "U32"
  | "BOOL"
  | "I16"
  | "U16";
const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  U32: 4,
  I16: 2,
  U16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafeDType;
  shape: number[];
  /** absolute byte offset in the file */
  start: number;
  byteLength: number;
}

export class SafetensorsError extends Error {}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private file: Deno.FsFile,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new SafetensorsError(`${path}: cannot open: ${(e as Error).message}`);
    }
    try {
      const size = (await file.stat()).size;
      if (size < 8) {
        throw new SafetensorsError(`${path}: file is ${size} bytes, too short for a safetensors header`);
      }
      const lenBuf = new Uint8Array(8);
      await readExact(file, lenBuf, 0, path);
      const n = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
      if (n > size - 8 || n > 100_000_000) {
        throw new SafetensorsError(
          `${path}: header length ${n} exceeds the file size ${size} (truncated or not a safetensors file)`,
        );
      }
      const hbuf = new Uint8Array(n);
      await readExact(file, hbuf, 8, path);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(new TextDecoder().decode(hbuf));
      } catch (e) {
        throw new SafetensorsError(`${path}: header is not valid JSON: ${(e as Error).message}`);
      }
      if (typeof header !== "object" || header === null || Array.isArray(header)) {
        throw new SafetensorsError(`${path}: header must be a JSON object`);
      }
      // JSON.parse keeps the last of duplicate keys; the format forbids them (a second tensor by that name)
      const dup = duplicateKey(new TextDecoder().decode(hbuf));
      if (dup !== null) throw new SafetensorsError(`${path}: header names '${dup}' twice`);
      const dataStart = 8 + n, dataSize = size - dataStart;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, v] of Object.entries(header)) {
        if (name === "__metadata__") {
          metadata = (v ?? {}) as Record<string, string>;
          continue;
        }
        const info = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        const where = `${path}: tensor '${name}'`;
        if (typeof info?.dtype !== "string" || !(info.dtype in DTYPE_BYTES)) {
          throw new SafetensorsError(
            `${where}: unknown dtype ${JSON.stringify(info?.dtype)} (expected one of ${
              Object.keys(DTYPE_BYTES).join(", ")
            })`,
          );
        }
        if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isInteger(d) && d >= 0)) {
          throw new SafetensorsError(`${where}: 'shape' must be an array of non-negative integers`);
        }
        const off = info.data_offsets;
        if (
          !Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) ||
          off[1] < off[0]
        ) {
          throw new SafetensorsError(`${where}: 'data_offsets' must be [begin, end] with 0 <= begin <= end`);
        }
        const numel = (info.shape as number[]).reduce((a, b) => a * b, 1);
        const bytes = numel * DTYPE_BYTES[info.dtype];
        if (off[1] - off[0] !== bytes) {
          throw new SafetensorsError(
            `${where}: data_offsets span ${
              off[1] - off[0]
            } bytes but ${info.dtype} [${info.shape}] needs ${bytes}`,
          );
        }
        if (off[1] > dataSize) {
          throw new SafetensorsError(
            `${where}: data ends at byte ${
              off[1]
            } past the end of the data section (${dataSize} bytes): file truncated?`,
          );
        }
        tensors.set(name, {
          name,
          dtype: info.dtype as SafeDType,
          shape: info.shape as number[],
          start: dataStart + off[0],
          byteLength: bytes,
        });
      }
      // as the reference implementation: tensors tile the data section, no overlap, no gap, nothing after
      let end = 0;
      for (
        const t of [...tensors.values()].sort((a, b) => a.start - b.start || a.byteLength - b.byteLength)
      ) {
        const begin = t.start - dataStart;
        if (begin !== end) {
          throw new SafetensorsError(
            `${path}: tensor '${t.name}' starts at data byte ${begin}, expected ${end} (${
              begin < end ? "it overlaps the tensor before it" : "a gap before it"
            }); tensors must tile the data section`,
          );
        }
        end = begin + t.byteLength;
      }
      if (end !== dataSize) {
        throw new SafetensorsError(
          `${path}: the tensors cover ${end} bytes of the ${dataSize}-byte data section (extra bytes at the end)`,
        );
      }
      return new SafetensorsFile(path, file, tensors, metadata);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: tensor '${name}' not found`);
    return t;
  }

  private lock: Promise<unknown> = Promise.resolve();

  /** Raw bytes of rows [r0, r1) of a tensor (dim 0), or all of it. Reads are serialised (seek + read). */
  read(name: string, r0 = 0, r1?: number): Promise<Uint8Array> {
    const p = this.lock.then(() => this.readNow(name, r0, r1));
    this.lock = p.catch(() => {});
    return p;
  }

  private async readNow(name: string, r0: number, r1?: number): Promise<Uint8Array> {
    const t = this.info(name);
    const rows = t.shape[0] ?? 1;
    const rowBytes = rows ? t.byteLength / rows : 0;
    const end = r1 ?? rows;
    const out = new Uint8Array((end - r0) * rowBytes || (t.shape.length === 0 ? t.byteLength : 0));
    await readExact(this.file, out, t.start + r0 * rowBytes, `${this.path}: tensor '${name}'`);
    return out;
  }

  /** A tensor converted to f32 (from F32, F16 or BF16). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    const raw = await this.read(name);
    return toF32(raw, t.dtype, `${this.path}: tensor '${name}'`);
  }

  close(): void {
    this.file.close();
  }
}

async function readExact(file: Deno.FsFile, buf: Uint8Array, pos: number, what: string): Promise<void> {
  await file.seek(pos, Deno.SeekMode.Start);
  let off = 0;
  while (off < buf.length) {
    const n = await file.read(buf.subarray(off));
    if (n === null) throw new SafetensorsError(`${what}: unexpected end of file (truncated)`);
    off += n;
  }
}

export function toF32(raw: Uint8Array, dtype: SafeDType, what: string): Float32Array {
  const aligned = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  if (dtype === "F32") {
    return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4).slice();
  }
  if (dtype === "BF16" || dtype === "F16") {
    const h = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    const out = new Float32Array(h.length);
    const u = new Uint32Array(out.buffer);
    if (dtype === "BF16") { for (let i = 0; i < h.length; i++) u[i] = h[i] << 16; }
    else for (let i = 0; i < h.length; i++) out[i] = f16(h[i]);
    return out;
  }
  throw new SafetensorsError(`${what}: dtype ${dtype} cannot be used as a float tensor`);
}

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export interface TensorToWrite {
  dtype: SafeDType;
  shape: number[];
  /** raw little-endian bytes */
  data: ArrayBufferView;
}

/** Serialize tensors (sorted by name, as the reference implementation does) to safetensors bytes. */
export function encodeSafetensors(
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const n of names) {
    const t = tensors[n];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const bytes = numel * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw new SafetensorsError(
        `tensor '${n}': ${t.data.byteLength} bytes given, ${t.dtype} [${t.shape}] needs ${bytes}`,
      );
    }
    header[n] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let hjson = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (hjson.length % 8)) % 8; // keep the data section 8-byte aligned
  if (pad) hjson = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + hjson.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hjson.length), true);
  out.set(hjson, 8);
  let p = 8 + hjson.length;
  for (const n of names) {
    const d = tensors[n].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), p);
    p += d.byteLength;
  }
  return out;
}

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  await atomicWrite(path, encodeSafetensors(tensors, metadata));
}

export function f32Tensor(data: Float32Array, shape: number[]): TensorToWrite {
  return { dtype: "F32", shape, data };
}

/** The first key that occurs twice at the top level of a JSON object text, or null. */
export function duplicateKey(json: string): string | null {
  const seen = new Set<string>();
  let depth = 0, i = 0;
  while (i < json.length) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      const literal = json.slice(i, j + 1);
      i = j + 1;
      if (depth !== 1) continue;
      while (i < json.length && /\s/.test(json[i])) i++;
      if (json[i] !== ":") continue; // a value, not a key
      const key = JSON.parse(literal) as string;
      if (seen.has(key)) return key;
      seen.add(key);
      continue;
    }
    if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
    i++;
  }
  return null;
}

/** Index of the first NaN or ±Inf element of raw float data, or -1 (exponent bits all set). */
export function firstNonFinite(raw: Uint8Array, dtype: SafeDType): number {
  const aligned = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  if (dtype === "F32") {
    const u = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 2);
    for (let i = 0; i < u.length; i++) if ((u[i] & 0x7f800000) === 0x7f800000) return i;
    return -1;
  }
  if (dtype === "BF16" || dtype === "F16") {
    const mask = dtype === "BF16" ? 0x7f80 : 0x7c00;
    const h = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 1);
    for (let i = 0; i < h.length; i++) if ((h[i] & mask) === mask) return i;
    return -1;
  }
  return -1;
}
