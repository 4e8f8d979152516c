// The GPU runtime: device + caps, pipeline cache (kernel + entry + defines), buffer pool,
// a recorder that puts a whole step into one command encoder / compute pass, and batched readback.
//
// Errors: a validation/OOM error scope is open from the first pipeline or dispatch after a submit
// until the next submit; when it reports an error we throw it together with the kernels recorded
// in that window, so a bad binding or shader names the kernel instead of failing silently.

import { type GpuCaps, type GpuOptions, requestGpu } from "./device.ts";
import { type Defines, preprocess } from "./preprocess.ts";
import { BufferPool, MemoryMeter } from "./pool.ts";
import { envProfiler, type OpCost, type Profiler } from "./profile.ts";
import { BindGroupCache, type BindingDecl, type BufferBinding, entryBindings } from "./bindings.ts";
import { dryCaps, dryDevice } from "./dry.ts";

const KERNEL_DIR = new URL("../../kernels/", import.meta.url);

export interface Kernel {
  name: string; // "file:entry{defines}" — used in error messages and as the cache key
  pipeline: GPUComputePipeline;
  usesParams: boolean;
  /** the bindings the entry point uses, ascending (binding 0 is the params uniform when usesParams) */
  bindings: BindingDecl[];
  layout: GPUBindGroupLayout;
  /** layouts with the same bindings share a key (and so their bind groups) */
  layoutKey: number;
  /** dispatches whose bindings were checked for extras */
  checked: number;
  /** the WGSL it was compiled from (tests read it) */
  code: string;
  /** the shader's `struct Params` (4-byte scalars, in order): the contract a dispatch's params fill by
   * name; fields named `_…` are padding */
  paramFields: ParamField[];
}

/**
 * The workgroup size of the elementwise and one-workgroup-per-row kernels: the shaders get it as the WG
 * define (unless a wrapper passes its own WG) and grid1d sizes their dispatches with it.
 */
export const DEFAULT_WG = 64;

export interface ParamField {
  name: string;
  type: "u32" | "i32" | "f32" | "u32x4";
  /** 4-byte words it takes, and its first word */
  words: number;
  offset: number;
}

/** A dispatch's uniform parameters by the kernel's field names; f32 fields take floats, u32/i32 integers,
 * array<vec4<u32>, N> fields lists of integers. */
export type Params = Record<string, number | number[]>;

/** Storage bindings of a dispatch, by the binding numbers the kernel declares ({1: a, 3: out}). */
export type Bindings = Record<number, Binding | undefined>;

export type Binding = GPUBuffer | BufferBinding;

/** One recorded dispatch, as a trace keeps it (Gpu.startTrace). */
export interface DispatchRecord {
  name: string;
  groups: [number, number, number];
  workgroups: number;
  flops: number;
  bytes: number;
  /** why the op launches few workgroups, when it says */
  narrow?: string;
}

/** A dispatch of more than this many FLOPs should fill a GPU: at least WIDE_WORKGROUPS workgroups. */
export const WIDE_FLOPS = 1e6;
/** Two workgroups per SM of an H200 (132 SMs): what an op that matters launches, or says why not. */
export const WIDE_WORKGROUPS = 264;

function isBuffer(b: Binding): b is GPUBuffer {
  return !("buffer" in b);
}

interface PendingRead {
  staging: GPUBuffer;
  size: number;
  resolve: (b: ArrayBuffer) => void;
  reject: (e: unknown) => void;
}

/** Usage of activation buffers (a function: GPUBufferUsage exists only when WebGPU is enabled). */
const poolUsage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Timestamp queries resolved per batch (the WebGPU maximum query-set size). */
const QUERY_CAPACITY = 4096;

interface ProfiledDispatch {
  name: string;
  cost: OpCost;
}

/** Resolved timestamps of a batch of profiled dispatches, read after the submit that carries them. */
interface PendingTimestamps {
  staging: GPUBuffer;
  dispatches: ProfiledDispatch[];
}

const PARAM_SLOT_WORDS = 64; // 256 bytes per dispatch's uniform block (kernels use at most 64 words)
const PARAM_SLOTS = 8192;
/** Bytes of host data uploaded per submit through the upload arena before a flush. */
const UPLOAD_ARENA_BYTES = 4 * 2 ** 20;

export class Gpu {
  readonly pool: BufferPool;
  /** Bytes of buffers the engine holds, live and at peak (pool, weights, uploads, readback staging). */
  readonly memory = new MemoryMeter();
  /** Bind groups by layout and buffers: a step recorded again creates none. */
  readonly bindGroups: BindGroupCache;
  private kernels = new Map<string, Kernel>();
  private sources = new Map<string, string>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private lastPipeline: GPUComputePipeline | null = null;
  private lastGroup: GPUBindGroup | null = null;
  private lastOffset = -1;
  private scopeOpen = false;
  private recorded: string[] = [];
  private pendingReads: PendingRead[] = [];
  private retired: GPUBuffer[] = [];
  private paramsCpu: Uint32Array<ArrayBuffer>;
  private paramsGpu: GPUBuffer;
  private slotWords: number;
  private paramSlots = 0;
  private dynamicOffset = new Uint32Array(1);
  private uploadArena: GPUBuffer | null = null;
  private uploadUsed = 0;
  private staging = new Map<number, GPUBuffer[]>();
  /** Dispatches recorded since creation (for benchmarks and tests of dispatch counts). */
  dispatchCount = 0;
  /** Buffers created since creation (weights, pool, staging, uploads): the counts' tests read it. */
  buffersCreated = 0;
  /** When set, every dispatch is appended (Gpu.startTrace). */
  trace: DispatchRecord[] | null = null;
  /** Read f16 weights as native f16 when the device has shader-f16 (else bit-decoded from u32). */
  useNativeF16 = true;
  /** Matmul tiling: workgroup-memory tiles for GPUs, register tiles for CPU adapters. */
  matmulTiling: "workgroup" | "register";
  /** Attention over many queries (training, prompts; lib/ops/attention.ts): flash tiles sharing K/V tiles in
   * workgroup memory (GPUs), a workgroup per row, or an invocation per row (CPU adapters, where invocations
   * are threads). Decoding goes by rows everywhere. INOCULUM_ATTENTION=flash|rows|invocation. */
  attention: "flash" | "rows" | "invocation";
  /** Per-kernel GPU times and host wall-time breakdown (INOCULUM_PROFILE=1, or given to create()). */
  readonly profiler: Profiler | null;
  private querySet: GPUQuerySet | null = null;
  private queriesUsed = 0;
  private profiled: ProfiledDispatch[] = [];
  private pendingTimestamps: PendingTimestamps[] = [];

  private constructor(readonly device: GPUDevice, readonly caps: GpuCaps, profiler: Profiler | null) {
    this.profiler = profiler;
    if (profiler) {
      profiler.timestamps = caps.timestamps;
      if (caps.timestamps) {
        this.querySet = device.createQuerySet({ type: "timestamp", count: QUERY_CAPACITY });
      }
    }
    this.bindGroups = new BindGroupCache(device);
    this.pool = new BufferPool(
      (size, label) => this.newBuffer(size, label, poolUsage()),
      caps.maxBindingBytes,
    );
    const forced = Deno.env.get("INOCULUM_MATMUL");
    this.matmulTiling = forced === "workgroup" || forced === "register"
      ? forced
      : caps.cpuAdapter
      ? "register"
      : "workgroup";
    const attn = Deno.env.get("INOCULUM_ATTENTION");
    this.attention = attn === "flash" || attn === "rows" || attn === "invocation"
      ? attn
      : caps.cpuAdapter
      ? "invocation"
      : "flash";
    this.slotWords = Math.max(PARAM_SLOT_WORDS, caps.uniformAlign / 4);
    this.paramsCpu = new Uint32Array(this.slotWords * PARAM_SLOTS);
    this.paramsGpu = this.newBuffer(
      this.paramsCpu.byteLength,
      "params-arena",
      GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    );
  }

  /** `profiler`: record into this one (tests); by default the process's when INOCULUM_PROFILE=1. */
  static async create(opts: GpuOptions & { profiler?: Profiler | null } = {}): Promise<Gpu> {
    const profiler = opts.profiler === undefined ? envProfiler() : opts.profiler;
    const { device, caps } = await requestGpu({
      ...opts,
      timestamps: opts.timestamps ?? !!profiler?.wantTimestamps,
    });
    return new Gpu(device, caps, profiler);
  }

  /**
   * A Gpu on a device that records and never runs (lib/gpu/dry.ts), with a GPU's limits by default: for
   * counting what a step at a real shape dispatches and creates, without the device or its memory.
   */
  static dry(caps: Partial<GpuCaps> = {}, profiler: Profiler | null = null): Gpu {
    const c = dryCaps(caps);
    return new Gpu(dryDevice(c), c, profiler);
  }

  /** Every kernel variant compiled so far (name and WGSL). */
  compiledKernels(): { name: string; code: string }[] {
    return [...this.kernels.values()].map((k) => ({ name: k.name, code: k.code }));
  }

  /** Start keeping a record of every dispatch (returned; also at `trace`). */
  startTrace(): DispatchRecord[] {
    return this.trace = [];
  }

  /** Every buffer the engine creates goes through here: counted, metered, and forgotten by the bind group
   * cache when destroyed. */
  private newBuffer(size: number, label: string, usage: number): GPUBuffer {
    const buf = this.device.createBuffer({ label, size, usage });
    this.buffersCreated++;
    if (this.profiler) {
      this.profiler.wall.buffersCreated++;
      this.profiler.wall.bufferBytesCreated += size;
    }
    this.memory.track(buf, () => this.bindGroups.forget(buf));
    return buf;
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
    return this.preprocessed(this.kernelSource(file), defines, `${file}.wgsl`);
  }

  private preprocessed(source: string, defines: Defines, fileName: string): string {
    const d: Defines = { WG: DEFAULT_WG, ...defines };
    if (this.caps.shaderF16) d.HAS_F16 = true;
    const code = preprocess(source, d, (n) => this.kernelSource(n), fileName);
    // `enable` must precede all declarations, but an include may bring one in mid-file.
    const lines = code.split("\n");
    const enables = lines.filter((l) => /^\s*enable\s+\w+\s*;/.test(l));
    return enables.length ? [...enables, ...lines.filter((l) => !enables.includes(l))].join("\n") : code;
  }

  /** The name a kernel variant is cached and reported under: "file:entry{A=1,B=x}". */
  static kernelName(file: string, entry: string, defines: Defines = {}): string {
    const keyDefs = Object.entries(defines).filter(([, v]) => v !== false).sort(([a], [b]) => a < b ? -1 : 1);
    return `${file}:${entry}${
      keyDefs.length ? "{" + keyDefs.map(([k, v]) => `${k}=${v}`).join(",") + "}" : ""
    }`;
  }

  /** The compute pipeline for `file`'s `entry` under `defines`, compiled once and cached. Looked up first by
   * the defines in the caller's order (no sort: this runs for every dispatch), then by the sorted name. */
  kernel(file: string, entry: string, defines: Defines = {}): Kernel {
    let fast = file + ":" + entry;
    for (const k in defines) {
      const v = defines[k];
      if (v !== false) fast += "," + k + "=" + v;
    }
    const hit = this.fastKernels.get(fast);
    if (hit) return hit;
    const name = Gpu.kernelName(file, entry, defines);
    const k = this.kernels.get(name) ?? this.compile(name, () => this.wgsl(file, defines), entry);
    this.fastKernels.set(fast, k);
    return k;
  }
  private fastKernels = new Map<string, Kernel>();

  /**
   * kernel() for the hot op wrappers: looked up by a compact key the caller derives from its typed pipeline
   * key (a few characters), the defines only built when the variant is new.
   */
  kernelByKey(key: string, file: string, entry: string, defines: () => Defines): Kernel {
    const hit = this.keyedKernels.get(key);
    if (hit) return hit;
    const k = this.kernel(file, entry, defines());
    this.keyedKernels.set(key, k);
    return k;
  }
  private keyedKernels = new Map<string, Kernel>();

  /**
   * A kernel from WGSL text rather than kernels/ (the bench's baseline of an earlier kernel); `name`
   * must be unique to the source.
   */
  kernelFromSource(name: string, source: string, entry: string, defines: Defines = {}): Kernel {
    const full = Gpu.kernelName(name, entry, defines);
    return this.kernels.get(full) ??
      this.compile(full, () => this.preprocessed(source, defines, name), entry);
  }

  private compile(name: string, wgsl: () => string, entry: string): Kernel {
    const t0 = performance.now();
    const code = wgsl();
    const bindings = entryBindings(code, entry, name);
    const { layout, key } = this.bindGroups.layout(bindings);
    this.openScope();
    this.recorded.push(`compile ${name}`);
    const module = this.device.createShaderModule({ label: name, code });
    const pipeline = this.device.createComputePipeline({
      label: name,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: entry },
    });
    const struct = /struct\s+Params\s*\{([^}]*)\}/.exec(code)?.[1] ?? "";
    const paramFields = parseParamsStruct(struct, name);
    if (paramWords(paramFields) > this.slotWords) {
      throw new Error(
        `${name}: struct Params takes ${paramWords(paramFields)} words, a params slot ${this.slotWords}`,
      );
    }
    const usesParams = bindings.some((b) => b.binding === 0 && b.kind === "uniform");
    if (bindings.some((b) => (b.binding === 0) !== (b.kind === "uniform"))) {
      throw new Error(`${name}: binding 0 must be the params uniform and the only uniform`);
    }
    const k: Kernel = {
      name,
      pipeline,
      usesParams,
      paramFields,
      bindings,
      layout,
      layoutKey: key,
      checked: 0,
      code,
    };
    this.kernels.set(name, k);
    if (this.profiler) {
      this.profiler.wall.compiles++;
      this.profiler.wall.compileMs += performance.now() - t0;
    }
    return k;
  }

  private ensurePass(): GPUComputePassEncoder {
    this.openScope();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) {
      this.pass = this.encoder.beginComputePass();
      this.lastPipeline = null;
      this.lastGroup = null;
    }
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
   * Record one dispatch. `params` fill the kernel's `struct Params` by field name (binding 0 when the kernel
   * declares `var<uniform> params`): a missing, unknown or ill-typed field is an error naming the kernel;
   * padding fields (`_…`) are zero. Bindings by number, exactly those the entry point uses ({1: a, 3: out}).
   * Nothing is created in steady state: params go to a slot of one arena buffer (a dynamic offset) and the
   * bind group comes from the cache.
   */
  dispatch(
    k: Kernel,
    params: Params,
    bindings: Bindings,
    groups: [number, number?, number?],
    cost?: OpCost,
  ): void {
    const t0 = this.profiler ? performance.now() : 0;
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const lim = this.caps.maxWorkgroupsPerDim;
    if (gx > lim || gy > lim || gz > lim) {
      throw new Error(`${k.name}: dispatch ${gx}x${gy}x${gz} exceeds ${lim} workgroups per dimension`);
    }
    if (this.paramSlots >= PARAM_SLOTS) this.flushParamsBySubmit();
    const entries: BufferBinding[] = [], numbers: number[] = [];
    let given = 0;
    for (const d of k.bindings) {
      if (d.binding === 0) {
        entries.push({ buffer: this.paramsGpu, offset: 0, size: 256 });
        numbers.push(0);
        continue;
      }
      const b = bindings[d.binding];
      if (!b) throw new Error(`${k.name}: binding ${d.binding} ('${d.name}') is not given`);
      entries.push(isBuffer(b) ? { buffer: b } : b);
      numbers.push(d.binding);
      given++;
    }
    // a binding the entry point does not use is a call site's bug: looked for in a kernel's first dispatches
    // (each call site passes the same bindings every time), not in every one (this runs per dispatch)
    let offered = given;
    if (k.checked < 8) {
      k.checked++;
      offered = 0;
      for (const n in bindings) if (bindings[n as unknown as number]) offered++;
    }
    if (offered !== given) {
      const extra = Object.keys(bindings).find((n) =>
        bindings[Number(n)] && !k.bindings.some((d) => d.binding === Number(n))
      );
      throw new Error(`${k.name}: binding ${extra} is given but the entry point does not use it`);
    }
    let offset = 0;
    if (k.usesParams) {
      const slot = this.paramSlots++;
      packParams(k, params, this.paramsCpu, slot * this.slotWords);
      offset = slot * this.slotWords * 4;
    }
    const timed = this.querySet !== null;
    const pass = timed ? this.beginTimedPass() : this.ensurePass();
    const bg = this.bindGroups.get(k.layoutKey, k.layout, k.name, entries, numbers);
    if (k.pipeline !== this.lastPipeline) {
      pass.setPipeline(k.pipeline);
      this.lastPipeline = k.pipeline;
    }
    if (bg !== this.lastGroup || offset !== this.lastOffset) {
      if (k.usesParams) {
        this.dynamicOffset[0] = offset;
        pass.setBindGroup(0, bg, this.dynamicOffset, 0, 1);
      } else pass.setBindGroup(0, bg);
      this.lastGroup = bg;
      this.lastOffset = offset;
    }
    pass.dispatchWorkgroups(gx, gy, gz);
    this.recorded.push(k.name);
    this.dispatchCount++;
    if (this.trace || this.profiler) {
      const c = cost ?? { bytes: boundBytes(entries) };
      this.trace?.push({
        name: k.name,
        groups: [gx, gy, gz],
        workgroups: gx * gy * gz,
        flops: c.flops ?? 0,
        bytes: c.bytes ?? 0,
        narrow: c.narrow,
      });
      if (this.profiler) {
        if (timed) {
          pass.end();
          this.pass = null;
          this.profiled.push({ name: k.name, cost: c });
        }
        this.profiler.dispatched(k.name, c, gx * gy * gz);
        this.profiler.wall.encodeMs += performance.now() - t0;
        this.profiler.wall.bindGroups = this.bindGroups.created;
      }
    }
  }

  /** Profiling: a compute pass of its own for the next dispatch, with a timestamp at each end. */
  private beginTimedPass(): GPUComputePassEncoder {
    const enc = this.endPass();
    if (this.queriesUsed + 2 > QUERY_CAPACITY) this.resolveTimestamps();
    const i = this.queriesUsed;
    this.queriesUsed += 2;
    this.pass = enc.beginComputePass({
      timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 },
    });
    this.lastPipeline = null;
    this.lastGroup = null;
    return this.pass;
  }

  /** Copy the timestamps written so far out of the query set (which is then reused) into a staging buffer. */
  private resolveTimestamps(): void {
    if (!this.queriesUsed) return;
    const bytes = this.queriesUsed * 8;
    const resolved = this.newBuffer(
      bytes,
      "timestamps",
      GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    );
    const staging = this.newBuffer(
      bytes,
      "timestamps-staging",
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    );
    const enc = this.endPass();
    enc.resolveQuerySet(this.querySet!, 0, this.queriesUsed, resolved, 0);
    enc.copyBufferToBuffer(resolved, 0, staging, 0, bytes);
    this.retired.push(resolved);
    this.pendingTimestamps.push({ staging, dispatches: this.profiled });
    this.profiled = [];
    this.queriesUsed = 0;
  }

  /** Read back resolved timestamps (after their submit) into the profiler. */
  private async collectTimestamps(): Promise<void> {
    const batches = this.pendingTimestamps;
    this.pendingTimestamps = [];
    // map all at once: every mapAsync waits at least one 10 ms poll interval in Deno
    await Promise.all(batches.map((b) => b.staging.mapAsync(GPUMapMode.READ)));
    for (const b of batches) {
      const t = new BigUint64Array(b.staging.getMappedRange());
      b.dispatches.forEach((d, i) => {
        const ns = t[2 * i + 1] - t[2 * i];
        // an end before its begin means the counter wrapped or was reset: drop that sample
        if (ns >= 0n) this.profiler!.timed(d.name, Number(ns), d.cost);
      });
      b.staging.unmap();
      b.staging.destroy();
    }
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size === 0) return;
    this.endPass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.recorded.push("copy");
  }

  /** Zero `size` bytes of `buf` from `offset` (both multiples of 4), in order with the recorded work. */
  clear(buf: GPUBuffer, offset = 0, size = buf.size - offset): void {
    if (size === 0) return;
    this.endPass().clearBuffer(buf, offset, size);
    this.recorded.push("clear");
  }

  /**
   * Host data into `dst` (a buffer or a range of one) in order with the recorded work: the bytes go to a
   * region of the upload arena (queue.writeBuffer, which runs before the next submit's commands) and a copy
   * recorded here moves them. So a pooled buffer that earlier recorded work still reads can be refilled,
   * and uploads create nothing in steady state.
   */
  upload(dst: Binding, data: ArrayBufferView): void {
    const { buffer, offset = 0 } = isBuffer(dst) ? { buffer: dst } : dst;
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const n = Math.ceil(bytes.byteLength / 4) * 4;
    if (n === 0) return;
    if (this.profiler) {
      this.profiler.wall.uploads++;
      this.profiler.wall.uploadBytes += n;
    }
    if (n > UPLOAD_ARENA_BYTES) {
      // too large for the arena: write straight into the destination once earlier work is submitted
      this.flushParamsBySubmit();
      this.writeBuffer(buffer, offset, data);
      return;
    }
    if (this.uploadUsed + n > UPLOAD_ARENA_BYTES) this.flushParamsBySubmit();
    this.uploadArena ??= this.newBuffer(
      UPLOAD_ARENA_BYTES,
      "upload-arena",
      GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    );
    const at = this.uploadUsed;
    this.uploadUsed += Math.ceil(n / 256) * 256;
    if (bytes.byteLength === n) this.device.queue.writeBuffer(this.uploadArena, at, bytes);
    else {
      const padded = new Uint8Array(n);
      padded.set(bytes);
      this.device.queue.writeBuffer(this.uploadArena, at, padded);
    }
    this.copy(this.uploadArena, at, buffer, offset, n);
  }

  /** A mappable staging buffer of `size` bytes, reused across readbacks of the same size. */
  private stagingBuffer(size: number): GPUBuffer {
    const free = this.staging.get(size);
    return free?.pop() ?? this.newBuffer(size, "readback", GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  }

  private releaseStaging(buf: GPUBuffer): void {
    let free = this.staging.get(buf.size);
    if (!free) this.staging.set(buf.size, free = []);
    if (free.length < 4) free.push(buf);
    else buf.destroy();
  }

  /** Schedule a readback; the promise resolves after the next submit(). */
  readLater(src: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const padded = Math.ceil(size / 4) * 4;
    if (this.profiler) {
      this.profiler.wall.readbacks++;
      this.profiler.wall.readbackBytes += size;
    }
    const staging = this.stagingBuffer(padded);
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
    // The params or upload arena is full: submit what we have (queue order keeps earlier dispatches on
    // their params and uploads) and start over. Errors surface at the next awaited submit, and readbacks
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
    this.uploadUsed = 0;
    if (this.querySet) this.resolveTimestamps();
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
    const t0 = this.profiler ? performance.now() : 0;
    try {
      await this.submitAndWait();
    } finally {
      if (this.profiler) {
        this.profiler.wall.submits++;
        this.profiler.wall.waitMs += performance.now() - t0;
      }
    }
  }

  private async submitAndWait(): Promise<void> {
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
      this.releaseStaging(r.staging);
    }));
    if (this.pendingTimestamps.length) await this.collectTimestamps();
  }

  /** Wait until the GPU has finished all submitted work (benchmarks). */
  async finish(): Promise<void> {
    await this.submit();
    const t0 = this.profiler ? performance.now() : 0;
    await this.device.queue.onSubmittedWorkDone();
    if (this.profiler) this.profiler.wall.waitMs += performance.now() - t0;
  }

  createBuffer(size: number, label = "", extraUsage = 0): GPUBuffer {
    return this.newBuffer(
      Math.max(16, Math.ceil(size / 16) * 16),
      label,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    );
  }

  /** Give back pooled buffers that no step has reused since the last call (once per training step). */
  trimPool(): void {
    this.pool.trimIdle((b) => this.retire(b));
  }

  /** Destroy a buffer once the commands recorded so far are submitted (it may still be in use by them). */
  retire(buf: GPUBuffer): void {
    if (this.encoder) this.retired.push(buf);
    else buf.destroy();
  }

  /**
   * Let queued uploads retire once more than `bytes` were written since the last time: writeBuffer
   * copies into staging memory that is only released after a submit completes, so loading a 15 GB model
   * without this holds a second copy of it (in GPU-visible memory on many drivers) until the first step.
   */
  async settleUploads(bytes = 256 * 2 ** 20): Promise<void> {
    if (this.uploadedSinceSettle < bytes) return;
    this.uploadedSinceSettle = 0;
    await this.finish();
  }
  private uploadedSinceSettle = 0;

  /**
   * Host data straight into a buffer through the queue: it lands before the next submit's commands, so the
   * buffer must not be read by work recorded but not yet submitted (weights at load time, fresh buffers).
   * In a step, use upload().
   */
  writeBuffer(buf: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.uploadedSinceSettle += data.byteLength;
    // writeBuffer needs a size that is a multiple of 4
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (this.profiler) {
      this.profiler.wall.uploads++;
      this.profiler.wall.uploadBytes += bytes.byteLength;
    }
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
    this.uploadArena?.destroy();
    for (const list of this.staging.values()) for (const b of list) b.destroy();
    this.querySet?.destroy();
    this.device.destroy();
  }
}

/** Bytes of the buffers bound to a dispatch: the default cost of an op that states none. */
function boundBytes(entries: BufferBinding[]): number {
  let n = 0;
  for (const b of entries) n += b.size ?? b.buffer.size - (b.offset ?? 0);
  return n;
}

/** The bits of an f32, for passing floats among u32 uniform words. */
const f32buf = new Float32Array(1);
const u32view = new Uint32Array(f32buf.buffer);
export function f32bits(x: number): number {
  f32buf[0] = x;
  return u32view[0];
}

/** The fields of a WGSL `struct Params { a: u32, b: f32, … }` body (4-byte scalars only). */
export function parseParamsStruct(body: string, kernel: string): ParamField[] {
  let at = 0;
  return body.replace(/\/\/[^\n]*/g, "").split(/,(?![^<]*>)/).map((f) => f.trim()).filter(Boolean).map(
    (f) => {
      const m = /^(\w+)\s*:\s*(u32|i32|f32)$/.exec(f);
      const a = /^(\w+)\s*:\s*array<\s*vec4<\s*u32\s*>\s*,\s*(\d+)\s*>$/.exec(f);
      if (!m && !a) {
        throw new Error(
          `${kernel}: struct Params field '${f}' is not a u32, i32 or f32 scalar or array<vec4<u32>, N>`,
        );
      }
      if (a && at % 4) {
        throw new Error(`${kernel}: struct Params field '${a[1]}' must start at a 16-byte boundary`);
      }
      const field: ParamField = m
        ? { name: m[1], type: m[2] as "u32" | "i32" | "f32", words: 1, offset: at }
        : { name: a![1], type: "u32x4", words: 4 * Number(a![2]), offset: at };
      at += field.words;
      return field;
    },
  );
}

/**
 * Pack params into the uniform words of k's struct Params, in its order, checking names and types; into
 * `out` at `offset` (the dispatch's slot of the params arena), or a new array. An array<vec4<u32>, N> field
 * takes a list of at most 4N integers (the rest is zero).
 */
export function packParams(
  k: Pick<Kernel, "name" | "paramFields">,
  params: Params,
  out = new Uint32Array(paramWords(k.paramFields)),
  offset = 0,
): Uint32Array {
  let given = 0;
  for (const f of k.paramFields) {
    const v = params[f.name];
    const at = offset + f.offset;
    if (v === undefined) {
      if (!f.name.startsWith("_")) throw new Error(`${k.name}: param '${f.name}' (${f.type}) is not given`);
      out.fill(0, at, at + f.words);
      continue;
    }
    given++;
    if (f.type === "u32x4") {
      if (!Array.isArray(v) || v.length > f.words) {
        throw new Error(`${k.name}: param '${f.name}' must be a list of at most ${f.words} u32, got ${v}`);
      }
      for (let i = 0; i < f.words; i++) {
        const x = i < v.length ? v[i] : 0;
        if (x >>> 0 !== x) throw new Error(`${k.name}: param '${f.name}[${i}]' must be a u32, got ${x}`);
        out[at + i] = x;
      }
    } else if (typeof v !== "number") {
      throw new Error(`${k.name}: param '${f.name}' must be a ${f.type}, got ${v}`);
    } else if (f.type === "f32") out[at] = f32bits(v);
    else if (f.type === "u32" && v >>> 0 === v) out[at] = v;
    else if (f.type === "i32" && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31) {
      out[at] = v >>> 0;
    } else throw new Error(`${k.name}: param '${f.name}' must be a ${f.type}, got ${v}`);
  }
  if (Object.keys(params).length !== given) { // a key that is no field (checked only then: dispatches are hot)
    const fields = k.paramFields.map((f) => f.name);
    const key = Object.keys(params).find((x) => !fields.includes(x));
    throw new Error(`${k.name}: param '${key}' is not a field of its struct Params (${fields.join(", ")})`);
  }
  return out;
}

/** Uniform words of a struct Params. */
export function paramWords(fields: ParamField[]): number {
  return fields.reduce((n, f) => Math.max(n, f.offset + f.words), 0);
}
