// Trainable parameters live side by side in one flat f32 buffer (with gradient and Adam moment
// buffers of the same layout), each tensor a 256-byte-aligned view. The optimizer and the
// gradient norm then take a handful of dispatches however many tensors there are. A spec with `pack`
// follows its predecessor without padding, so that a run of tensors (a LoRA group's stacked lora_A) is
// one contiguous matrix that a kernel binds as one view; only the run's start is aligned.

import type { Gpu } from "./gpu/context.ts";
import { Tensor } from "./tensor.ts";
import { hashInts } from "./rng.ts";

export interface ParamEntry {
  name: string;
  shape: number[];
  /** float offset in the flat buffers */
  offset: number;
  numel: number;
  param: Tensor;
  grad: Tensor;
}

const ALIGN_FLOATS = 64; // 256 bytes: the storage-binding offset alignment WebGPU guarantees

export class ParamStore {
  readonly entries: ParamEntry[] = [];
  readonly byName = new Map<string, ParamEntry>();
  readonly total: number;
  readonly p: GPUBuffer;
  readonly g: GPUBuffer;
  readonly m: GPUBuffer;
  readonly v: GPUBuffer;

  constructor(private gpu: Gpu, specs: { name: string; shape: number[]; pack?: boolean }[]) {
    let off = 0;
    const layout = specs.map((s) => {
      const numel = s.shape.reduce((a, b) => a * b, 1);
      if (!s.pack) off = Math.ceil(off / ALIGN_FLOATS) * ALIGN_FLOATS;
      const e = { name: s.name, shape: s.shape, offset: off, numel };
      off += numel;
      return e;
    });
    off = Math.ceil(off / ALIGN_FLOATS) * ALIGN_FLOATS;
    this.total = Math.max(off, ALIGN_FLOATS);
    const bytes = this.total * 4;
    if (bytes > gpu.caps.maxBindingBytes) {
      throw new Error(
        `trainable parameters need ${bytes} bytes in one binding, over this adapter's ${gpu.caps.maxBindingBytes}: ` +
          `train fewer modules or a lower LoRA rank`,
      );
    }
    const mk = (n: string) => gpu.createBuffer(bytes, n);
    this.p = mk("params");
    this.g = mk("grads");
    this.m = mk("adam_m");
    this.v = mk("adam_v");
    for (const e of layout) {
      const entry: ParamEntry = {
        ...e,
        param: Tensor.view(this.p, e.offset * 4, e.shape, "f32", e.name),
        grad: Tensor.view(this.g, e.offset * 4, e.shape, "f32", `grad:${e.name}`),
      };
      this.entries.push(entry);
      this.byName.set(e.name, entry);
    }
  }

  /** Names, shapes and offsets of the flat layout, hashed: a checkpoint's optimizer state is only
   * meaningful for the layout it was written with. */
  layoutHash(): string {
    let h = 0;
    for (const e of this.entries) {
      h = hashInts(h, ...new TextEncoder().encode(`${e.name}:${e.shape.join("x")}@${e.offset}`));
    }
    return h.toString(16);
  }

  /** A view of the parameters (or gradients) from `first`'s start over `numel` floats: a packed run. */
  span(first: string, numel: number, shape: number[], grad = false): Tensor {
    const e = this.get(first);
    if (e.offset * 4 % 256) throw new Error(`parameter '${first}' does not start a 256-byte aligned run`);
    if (e.offset + numel > this.total) throw new Error(`a span of ${numel} from '${first}' passes the end`);
    return Tensor.view(grad ? this.g : this.p, e.offset * 4, shape, "f32", `${grad ? "grad:" : ""}${first}+`);
  }

  get(name: string): ParamEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`no trainable parameter '${name}'`);
    return e;
  }

  /** Write a parameter's values (f32, same numel). */
  set(name: string, data: Float32Array): void {
    const e = this.get(name);
    if (data.length !== e.numel) throw new Error(`parameter '${name}': ${data.length} values for ${e.numel}`);
    this.gpu.writeBuffer(this.p, e.offset * 4, data);
  }

  /** Copy an existing GPU tensor (single chunk, f32) into a parameter. */
  copyFrom(name: string, t: Tensor): void {
    const e = this.get(name);
    if (t.dtype !== "f32" || t.numel !== e.numel) {
      throw new Error(`parameter '${name}': cannot copy from [${t.shape}] ${t.dtype}`);
    }
    this.gpu.copy(t.raw.buffer, t.raw.offset, this.p, e.offset * 4, e.numel * 4);
  }

  /** Read all flat buffers back (checkpoints). */
  async readAll(): Promise<{ p: Float32Array; m: Float32Array; v: Float32Array }> {
    const n = this.total * 4;
    const [p, m, v] = [
      this.gpu.readLater(this.p, 0, n),
      this.gpu.readLater(this.m, 0, n),
      this.gpu.readLater(this.v, 0, n),
    ];
    await this.gpu.submit();
    return { p: new Float32Array(await p), m: new Float32Array(await m), v: new Float32Array(await v) };
  }

  writeAll(s: { p: Float32Array; m: Float32Array; v: Float32Array }): void {
    for (const [buf, data] of [[this.p, s.p], [this.m, s.m], [this.v, s.v]] as const) {
      if (data.length !== this.total) {
        throw new Error(`optimizer state has ${data.length} values, expected ${this.total}`);
      }
      this.gpu.writeBuffer(buf, 0, data);
    }
  }

  /** Values of every parameter, from one readback of the flat buffer (each readback costs >= 10 ms in
   * Deno: one per tensor made saving an adapter of 196 tensors take seconds). */
  async readParams(): Promise<Map<string, Float32Array>> {
    const all = new Float32Array(await this.gpu.read(this.p, 0, this.total * 4));
    return new Map(this.entries.map((e) => [e.name, all.slice(e.offset, e.offset + e.numel)]));
  }

  /** Values of one parameter. */
  async read(name: string): Promise<Float32Array> {
    const e = this.get(name);
    return await e.param.read(this.gpu);
  }

  async readGrad(name: string): Promise<Float32Array> {
    return await this.get(name).grad.read(this.gpu);
  }

  destroy(): void {
    for (const b of [this.p, this.g, this.m, this.v]) b.destroy();
  }
}
