// A GPU tensor handle: shape, storage dtype, and one or more row-chunks, each its own buffer.
// A tensor larger than one storage binding (e.g. a 7B embedding matrix, >1 GiB) is split along
// dim 0 so that every chunk fits a binding; ops that take weights loop over the chunks.

import type { Gpu } from "./gpu/context.ts";

/** Storage dtypes. bf16/f16 are packed two per u32 word (element 2i in the low half). */
export type DType = "f32" | "bf16" | "f16" | "u32";

export function bytesPerElement(d: DType): number {
  return d === "bf16" || d === "f16" ? 2 : 4;
}

export interface Chunk {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
  /** byte offset of the chunk in its buffer (views into a flat buffer; 256-aligned) */
  offset?: number;
}

export class Tensor {
  constructor(
    readonly shape: number[],
    readonly dtype: DType,
    readonly chunks: Chunk[],
    readonly name = "",
    private readonly pooled: Gpu | null = null,
    private readonly owner: Gpu | null = null,
  ) {}

  get rows(): number {
    return this.shape[0];
  }
  /** Elements per row (product of dims after the first). */
  get rowElems(): number {
    return this.shape.slice(1).reduce((a, b) => a * b, 1);
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get byteSize(): number {
    return this.numel * bytesPerElement(this.dtype);
  }
  /** The binding of an unsplit tensor (activations are never split); a view binds its byte range. */
  get buffer(): GPUBufferBinding {
    if (this.chunks.length !== 1) {
      throw new Error(
        `tensor '${this.name}' is split into ${this.chunks.length} chunks; this op needs one buffer`,
      );
    }
    const c = this.chunks[0];
    if (!this.isView) return { buffer: c.buffer };
    return {
      buffer: c.buffer,
      offset: c.offset ?? 0,
      size: Math.max(16, Math.ceil(this.byteSize / 16) * 16),
    };
  }

  /** The binding of one row-chunk (weights may be split; views carry an offset). */
  chunkBinding(c: Chunk): GPUBufferBinding {
    if (!c.offset && !this.isView) return { buffer: c.buffer };
    const bytes = c.rows * this.rowElems * bytesPerElement(this.dtype);
    return { buffer: c.buffer, offset: c.offset ?? 0, size: Math.max(16, Math.ceil(bytes / 16) * 16) };
  }

  /** The GPU buffer and byte offset of an unsplit tensor (for copies and readback). */
  get raw(): { buffer: GPUBuffer; offset: number } {
    const b = this.buffer;
    return { buffer: b.buffer, offset: b.offset ?? 0 };
  }

  /** A view of `shape` at byte `offset` of `buffer` (not owned: disposing it does nothing). */
  static view(buffer: GPUBuffer, offset: number, shape: number[], dtype: DType = "f32", name = ""): Tensor {
    const t = new Tensor(shape, dtype, [{ buffer, rowStart: 0, rows: shape[0], offset }], name);
    t.isView = true;
    return t;
  }
  private isView = false;

  /** Give pooled buffers back (activations); uploaded buffers are destroyed after the next submit. */
  dispose(): void {
    if (this.isView) return;
    for (const c of this.chunks) {
      if (this.pooled) this.pooled.pool.release(c.buffer);
      else if (this.owner) this.owner.retire(c.buffer);
      else c.buffer.destroy();
    }
    this.chunks.length = 0;
  }

  /** A pooled f32/u32 activation tensor (never split; callers keep activations under one binding). */
  static empty(gpu: Gpu, shape: number[], dtype: DType = "f32", name = ""): Tensor {
    const bytes = shape.reduce((a, b) => a * b, 1) * bytesPerElement(dtype);
    if (bytes > gpu.caps.maxBindingBytes) {
      throw new Error(
        `activation '${name}' of shape [${shape}] needs ${bytes} bytes, over the ${gpu.caps.maxBindingBytes}-byte ` +
          `storage binding limit of this adapter: use a smaller batch or sequence length`,
      );
    }
    return new Tensor(
      shape,
      dtype,
      [{ buffer: gpu.pool.acquire(bytes, name), rowStart: 0, rows: shape[0] }],
      name,
      gpu,
    );
  }

  /**
   * Upload host data. `data` holds the raw storage bytes (for bf16/f16: the 2-byte values as in a
   * safetensors file). Splits along dim 0 so that each chunk fits one binding.
   */
  static upload(gpu: Gpu, data: ArrayBufferView, shape: number[], dtype: DType, name = ""): Tensor {
    const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * bytesPerElement(dtype);
    const total = shape[0] * rowBytes;
    if (data.byteLength !== total) {
      throw new Error(
        `tensor '${name}': ${data.byteLength} bytes given, shape [${shape}] ${dtype} needs ${total}`,
      );
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return Tensor.uploadRows(
      gpu,
      shape,
      dtype,
      name,
      (r0, r1) => bytes.subarray(r0 * rowBytes, r1 * rowBytes),
    );
  }

  /** Upload chunk by chunk from a row-range reader, so a huge tensor never sits whole in host memory. */
  static uploadRows(
    gpu: Gpu,
    shape: number[],
    dtype: DType,
    name: string,
    readRows: (r0: number, r1: number) => Uint8Array,
  ): Tensor {
    const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * bytesPerElement(dtype);
    const rowsPerChunk = Tensor.rowsPerChunk(gpu, shape, dtype, name);
    const chunks: Chunk[] = [];
    for (let r0 = 0; r0 < shape[0] || (shape[0] === 0 && r0 === 0); r0 += rowsPerChunk) {
      const r1 = Math.min(shape[0], r0 + rowsPerChunk);
      const buf = gpu.createBuffer(Math.max(4, (r1 - r0) * rowBytes), name);
      if (r1 > r0) gpu.writeBuffer(buf, 0, readRows(r0, r1));
      chunks.push({ buffer: buf, rowStart: r0, rows: r1 - r0 });
      if (shape[0] === 0) break;
    }
    return new Tensor(shape, dtype, chunks, name, null, gpu);
  }

  static rowsPerChunk(gpu: Gpu, shape: number[], dtype: DType, name: string): number {
    const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * bytesPerElement(dtype);
    if ((dtype === "bf16" || dtype === "f16") && (rowBytes % 4) !== 0 && shape[0] > 1) {
      throw new Error(
        `tensor '${name}': packed ${dtype} rows need an even number of elements, shape [${shape}]`,
      );
    }
    const rows = Math.floor(gpu.caps.maxBindingBytes / Math.max(rowBytes, 1));
    if (rows < 1) throw new Error(`tensor '${name}': one row of ${rowBytes} bytes exceeds the binding limit`);
    return rows;
  }

  /**
   * A pooled tensor filled from the host in order with the recorded work (Gpu.upload): a step's inputs
   * (token ids, targets, masks), which then reuse the same buffers, and bind groups, every step.
   */
  static uploadPooled(
    gpu: Gpu,
    data: ArrayBufferView,
    shape: number[],
    dtype: "f32" | "u32",
    name = "",
  ): Tensor {
    const t = Tensor.empty(gpu, shape, dtype, name);
    if (data.byteLength !== t.byteSize) {
      t.dispose();
      throw new Error(
        `tensor '${name}': ${data.byteLength} bytes given, shape [${shape}] ${dtype} needs ${t.byteSize}`,
      );
    }
    gpu.upload(t.chunks[0].buffer, data);
    return t;
  }

  static fromF32(gpu: Gpu, data: Float32Array | number[], shape: number[], name = ""): Tensor {
    return Tensor.upload(
      gpu,
      data instanceof Float32Array ? data : new Float32Array(data),
      shape,
      "f32",
      name,
    );
  }

  static fromU32(gpu: Gpu, data: Uint32Array | number[], shape: number[], name = ""): Tensor {
    return Tensor.upload(gpu, data instanceof Uint32Array ? data : new Uint32Array(data), shape, "u32", name);
  }

  /** Read back (all chunks) as f32 (or raw u32 for u32 tensors). Submits. */
  async read(gpu: Gpu): Promise<Float32Array> {
    return (await Tensor.readMany(gpu, [this]))[0];
  }

  /** Read several tensors back with one submit (each awaited readback costs >= 10 ms in Deno). */
  static async readMany(gpu: Gpu, ts: Tensor[]): Promise<Float32Array[]> {
    const parts = ts.map((t) => t.scheduleRead(gpu));
    await gpu.submit();
    return await Promise.all(parts.map((p, i) => ts[i].assemble(p)));
  }

  private scheduleRead(gpu: Gpu): Promise<ArrayBuffer>[] {
    return this.chunks.map((c) =>
      gpu.readLater(c.buffer, c.offset ?? 0, c.rows * this.rowElems * bytesPerElement(this.dtype))
    );
  }

  private async assemble(parts: Promise<ArrayBuffer>[]): Promise<Float32Array> {
    const out = new Float32Array(this.numel);
    let o = 0;
    for (const p of parts) {
      const buf = await p;
      if (this.dtype === "bf16" || this.dtype === "f16") {
        const h = new Uint16Array(buf);
        for (let i = 0; i < h.length; i++) {
          out[o + i] = this.dtype === "bf16" ? bf16ToF32(h[i]) : f16ToF32(h[i]);
        }
        o += h.length;
      } else {
        const f = new Float32Array(buf);
        out.set(f, o);
        o += f.length;
      }
    }
    return out;
  }

  async readU32(gpu: Gpu): Promise<Uint32Array> {
    return new Uint32Array((await this.read(gpu)).buffer);
  }
}

const cvt = new DataView(new ArrayBuffer(4));
export function bf16ToF32(h: number): number {
  cvt.setUint32(0, h << 16, true);
  return cvt.getFloat32(0, true);
}
/** Round-to-nearest-even f32 → bf16 bits. */
export function f32ToBf16(x: number): number {
  cvt.setFloat32(0, x, true);
  const u = cvt.getUint32(0, true);
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0; // NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
export function f32ToF16(x: number): number {
  // Round to nearest even via Math.fround-free arithmetic on the f32 bit pattern
  cvt.setFloat32(0, x, true);
  const u = cvt.getUint32(0, true);
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}
