// The GPU runtime: device + caps, pipeline cache (kernel + entry + defines), buffer pool,
// a recorder that puts a whole step into one command encoder / compute pass, and batched readback.
//
// Errors: a validation/OOM error scope is open from the first pipeline or dispatch after a submit
// until the next submit; when it reports an error we throw it together with the kernels recorded
// in that window, so a bad binding or shader names the kernel instead of failing silently.

import { type GpuCaps, type GpuOptions, requestGpu } from "./device.ts";
import { type Defines, preprocess } from "./preprocess.ts";
import { BufferPool } from "./pool.ts";

const KERNEL_DIR = new URL("../../kernels/", import.meta.url);

export interface Kernel {
  name: string; // "file:entry{defines}" — used in error messages and as the cache key
  pipeline: GPUComputePipeline;
  usesParams: boolean;
}

export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

interface PendingRead {
  staging: GPUBuffer;
  size: number;
  resolve: (b: ArrayBuffer) => void;
  reject: (e: unknown) => void;
}

const PARAM_SLOT_WORDS = 64; // 256 bytes per dispatch's uniform block; kernels use at most 16 words
const PARAM_SLOTS = 8192;

export class Gpu {
  readonly pool: BufferPool;
  private kernels = new Map<string, Kernel>();
  private sources = new Map<string, string>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private scopeOpen = false;
  private recorded: string[] = [];
  private pendingReads: PendingRead[] = [];
  private retired: GPUBuffer[] = [];
  private paramsCpu = new Uint32Array(PARAM_SLOT_WORDS * PARAM_SLOTS);
  private paramsGpu: GPUBuffer;
  private slotWords: number;
  private paramSlots = 0;
  /** Dispatches recorded since creation (for benchmarks and tests of dispatch counts). */
  dispatchCount = 0;
  /** Read f16 weights as native f16 when the device has shader-f16 (else bit-decoded from u32). */
  useNativeF16 = true;
  /** Matmul tiling: workgroup-memory tiles for GPUs, register tiles for CPU adapters. */
  matmulTiling: "workgroup" | "register";

  private constructor(readonly device: GPUDevice, readonly caps: GpuCaps) {
    this.pool = new BufferPool(device);
    const forced = Deno.env.get("INOCULUM_MATMUL");
    this.matmulTiling = forced === "workgroup" || forced === "register"
      ? forced
      : caps.cpuAdapter
      ? "register"
      : "workgroup";
    this.slotWords = Math.max(PARAM_SLOT_WORDS, caps.uniformAlign / 4);
    this.paramsCpu = new Uint32Array(this.slotWords * PARAM_SLOTS);
    this.paramsGpu = device.createBuffer({
      label: "params-arena",
      size: this.paramsCpu.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  static async create(opts: GpuOptions = {}): Promise<Gpu> {
    const { device, caps } = await requestGpu(opts);
    return new Gpu(device, caps);
  }

  private openScope() {
    if (this.scopeOpen) return;
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    this.scopeOpen = true;
  }

  private kernelSource(file: string): string {
    let src = this.sources.get(file);
    if (src === undefined) {
      try {
        src = Deno.readTextFileSync(new URL(`${file}.wgsl`, KERNEL_DIR));
      } catch (e) {
        throw new Error(`kernel file kernels/${file}.wgsl cannot be read: ${(e as Error).message}`);
      }
      this.sources.set(file, src);
    }
    return src;
  }

  /** Preprocessed WGSL for a kernel variant (exposed for tests and debugging). */
  wgsl(file: string, defines: Defines = {}): string {
    const d: Defines = { ...defines };
    if (this.caps.shaderF16) d.HAS_F16 = true;
    const code = preprocess(this.kernelSource(file), d, (n) => this.kernelSource(n), `${file}.wgsl`);
    // `enable` must precede all declarations, but an include may bring one in mid-file.
    const lines = code.split("\n");
    const enables = lines.filter((l) => /^\s*enable\s+\w+\s*;/.test(l));
    return enables.length ? [...enables, ...lines.filter((l) => !enables.includes(l))].join("\n") : code;
  }

  /** The compute pipeline for `file`'s `entry` under `defines`, compiled once and cached. */
  kernel(file: string, entry: string, defines: Defines = {}): Kernel {
    const keyDefs = Object.entries(defines).filter(([, v]) => v !== false).sort(([a], [b]) => a < b ? -1 : 1);
    const name = `${file}:${entry}${
      keyDefs.length ? "{" + keyDefs.map(([k, v]) => `${k}=${v}`).join(",") + "}" : ""
    }`;
    let k = this.kernels.get(name);
    if (k) return k;
    const code = this.wgsl(file, defines);
    this.openScope();
    this.recorded.push(`compile ${name}`);
    const module = this.device.createShaderModule({ label: name, code });
    const pipeline = this.device.createComputePipeline({
      label: name,
      layout: "auto",
      compute: { module, entryPoint: entry },
    });
    k = { name, pipeline, usesParams: /var<uniform>\s+params\b/.test(code) };
    this.kernels.set(name, k);
    return k;
  }

  private ensurePass(): GPUComputePassEncoder {
    this.openScope();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  private endPass(): GPUCommandEncoder {
    this.openScope();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    return this.encoder;
  }

  /**
   * Record one dispatch. `params` are the uniform words (binding 0 when the kernel declares
   * `var<uniform> params`); `buffers[i]` binds to binding i + 1, `undefined` leaving a hole for a
   * binding the variant does not declare.
   */
  dispatch(
    k: Kernel,
    params: ArrayLike<number>,
    buffers: (Binding | undefined)[],
    groups: [number, number?, number?],
  ): void {
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const lim = this.caps.maxWorkgroupsPerDim;
    if (gx > lim || gy > lim || gz > lim) {
      throw new Error(`${k.name}: dispatch ${gx}x${gy}x${gz} exceeds ${lim} workgroups per dimension`);
    }
    if (this.paramSlots >= PARAM_SLOTS) this.flushParamsBySubmit();
    const entries: GPUBindGroupEntry[] = [];
    if (k.usesParams) {
      if (params.length > this.slotWords) throw new Error(`${k.name}: too many params`);
      const slot = this.paramSlots++;
      this.paramsCpu.set(params, slot * this.slotWords);
      entries.push({
        binding: 0,
        resource: { buffer: this.paramsGpu, offset: slot * this.slotWords * 4, size: 256 },
      });
    }
    buffers.forEach((b, i) => {
      if (b) {
        entries.push({
          binding: i + 1,
          resource: b instanceof GPUBuffer ? { buffer: b } : b as GPUBufferBinding,
        });
      }
    });
    const pass = this.ensurePass();
    const bg = this.device.createBindGroup({
      label: k.name,
      layout: k.pipeline.getBindGroupLayout(0),
      entries,
    });
    pass.setPipeline(k.pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.recorded.push(k.name);
    this.dispatchCount++;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size === 0) return;
    this.endPass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.recorded.push("copy");
  }

  /** Schedule a readback; the promise resolves after the next submit(). */
  readLater(src: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const padded = Math.ceil(size / 4) * 4;
    const staging = this.device.createBuffer({
      size: padded,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.endPass().copyBufferToBuffer(src, offset, staging, 0, padded);
    return new Promise((resolve, reject) => this.pendingReads.push({ staging, size, resolve, reject }));
  }

  /** Schedule a readback and submit now. */
  async read(src: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const p = this.readLater(src, offset, size);
    await this.submit();
    return p;
  }

  private flushParamsBySubmit() {
    // The params arena is full: submit what we have (queue order keeps earlier dispatches on
    // their params) and start over. Errors surface at the next awaited submit, and readbacks
    // scheduled so far stay pending until then (their copies are already in the submitted work).
    const reads = this.submitSync();
    this.pendingReads.unshift(...reads);
  }

  private submitSync(): PendingRead[] {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.paramSlots) {
      this.device.queue.writeBuffer(this.paramsGpu, 0, this.paramsCpu, 0, this.paramSlots * this.slotWords);
      this.paramSlots = 0;
    }
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
    }
    // destroying after submit is safe: the implementation keeps them alive until the GPU is done
    for (const b of this.retired) b.destroy();
    this.retired = [];
    const reads = this.pendingReads;
    this.pendingReads = [];
    return reads;
  }

  /** Submit everything recorded, check the error scope, and resolve pending readbacks. */
  async submit(): Promise<void> {
    const reads = this.submitSync();
    const recorded = this.recorded;
    this.recorded = [];
    if (this.scopeOpen) {
      this.scopeOpen = false;
      const validation = await this.device.popErrorScope();
      const oom = await this.device.popErrorScope();
      const err = validation ?? oom;
      if (err) {
        const e = new Error(
          `WebGPU ${validation ? "validation" : "out-of-memory"} error in one of [${
            [...new Set(recorded)].slice(-12).join(", ")
          }]: ${err.message}`,
        );
        for (const r of reads) r.reject(e);
        throw e;
      }
    }
    await Promise.all(reads.map(async (r) => {
      await r.staging.mapAsync(GPUMapMode.READ);
      r.resolve(r.staging.getMappedRange().slice(0, r.size));
      r.staging.unmap();
      r.staging.destroy();
    }));
  }

  /** Wait until the GPU has finished all submitted work (benchmarks). */
  async finish(): Promise<void> {
    await this.submit();
    await this.device.queue.onSubmittedWorkDone();
  }

  createBuffer(size: number, label = "", extraUsage = 0): GPUBuffer {
    return this.device.createBuffer({
      label,
      size: Math.max(16, Math.ceil(size / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    });
  }

  /** Destroy a buffer once the commands recorded so far are submitted (it may still be in use by them). */
  retire(buf: GPUBuffer): void {
    if (this.encoder) this.retired.push(buf);
    else buf.destroy();
  }

  writeBuffer(buf: GPUBuffer, offset: number, data: ArrayBufferView): void {
    // writeBuffer needs a size that is a multiple of 4
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(buf, offset, bytes);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.device.queue.writeBuffer(buf, offset, padded);
    }
  }

  destroy(): void {
    this.pool.destroy();
    this.paramsGpu.destroy();
    this.device.destroy();
  }
}

/** The bits of an f32, for passing floats among u32 uniform words. */
const f32buf = new Float32Array(1);
const u32view = new Uint32Array(f32buf.buffer);
export function f32bits(x: number): number {
  f32buf[0] = x;
  return u32view[0];
}
