// A buffer pool keyed by exact byte size: activations of a step come back with the same shapes
// every step, so exact-size reuse gets full reuse without the 2x waste of power-of-two buckets.

/**
 * Bytes of GPU buffers the engine holds, live and at peak. WebGPU does not report the driver's memory
 * use, so this is what the engine allocated: a floor on the process's GPU memory.
 */
export class MemoryMeter {
  live = 0;
  peak = 0;
  /** Count `buf` until it is destroyed (then `onDestroy` runs, once). */
  track(buf: GPUBuffer, onDestroy?: () => void): GPUBuffer {
    const size = buf.size;
    this.live += size;
    if (this.live > this.peak) this.peak = this.live;
    const destroy = buf.destroy.bind(buf);
    let gone = false;
    buf.destroy = () => {
      if (!gone) {
        gone = true;
        this.live -= size;
        onDestroy?.();
      }
      destroy();
    };
    return buf;
  }
  resetPeak(): void {
    this.peak = this.live;
  }
}

/**
 * A buffer pool for activations. Sizes come in classes (eight per octave, so at most 12.5 % is wasted)
 * and a request may take a free buffer up to twice its class: training batches are padded to their
 * longest sample, so the sequence length, and with it every activation's size, changes from step to step;
 * with exact-size reuse each new length allocated a whole new set of buffers and kept the old ones
 * forever. trimIdle() destroys free buffers that no step has reused since its last call.
 * A step that repeats the previous one gets the same buffers in the same roles: the i-th request of a step
 * (between trimIdle calls) is first offered the buffer the i-th request of the previous step got, so that
 * the bind groups recorded with it are found again instead of created (a LIFO free list shared by tensors of
 * the same size permutes them from step to step).
 */
export class BufferPool {
  /** free buffers by size; `sizes` lists the sizes that have any, ascending */
  private free = new Map<number, GPUBuffer[]>();
  private sizes: number[] = [];
  private live = new Set<GPUBuffer>();
  private releasedIn = new Map<GPUBuffer, number>();
  private epoch = 0;
  /** buffers handed out this step, in request order, and the previous step's */
  private handed: GPUBuffer[] = [];
  private previous: GPUBuffer[] = [];
  private freeSet = new Set<GPUBuffer>();
  bytesLive = 0;
  bytesFree = 0;

  constructor(
    /** creates a storage buffer of exactly `size` bytes (the Gpu's: counted and metered) */
    private create: (size: number, label: string) => GPUBuffer,
    /** largest buffer the pool may hand out (the storage-binding limit) */
    private maxBytes = Infinity,
  ) {}

  /** The size class of a request: 16-byte multiples up to 4 KiB, then eight classes per octave. */
  static sizeClass(bytes: number, maxBytes = Infinity): number {
    const b = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (b <= 4096) return b;
    const step = 2 ** (Math.floor(Math.log2(b)) - 3);
    return Math.max(b, Math.min(Math.ceil(b / step) * step, Math.floor(maxBytes / 16) * 16));
  }

  acquire(bytes: number, label = "pooled"): GPUBuffer {
    const want = BufferPool.sizeClass(bytes, this.maxBytes);
    const limit = Math.min(2 * want, this.maxBytes);
    let buf: GPUBuffer | undefined;
    const again = this.previous[this.handed.length];
    if (again && this.freeSet.has(again) && again.size >= want && again.size <= limit) {
      buf = this.takeThis(again);
    }
    for (const size of buf ? [] : this.sizes) {
      if (size < want) continue;
      if (size > limit) break;
      buf = this.take(size);
      break;
    }
    buf ??= this.create(want, label);
    if (this.handed.length < 1 << 20) this.handed.push(buf); // a caller that never trims must not grow it forever
    this.live.add(buf);
    this.bytesLive += buf.size;
    return buf;
  }

  private take(size: number): GPUBuffer {
    return this.takeThis(this.free.get(size)!.at(-1)!);
  }

  private takeThis(buf: GPUBuffer): GPUBuffer {
    const size = buf.size, list = this.free.get(size)!;
    list.splice(list.lastIndexOf(buf), 1);
    if (!list.length) {
      this.free.delete(size);
      this.sizes.splice(this.sizes.indexOf(size), 1);
    }
    this.freeSet.delete(buf);
    this.releasedIn.delete(buf);
    this.bytesFree -= size;
    return buf;
  }

  /** Return a buffer for reuse. Safe right after recording: the queue orders later uses after earlier ones. */
  release(buf: GPUBuffer): void {
    if (!this.live.delete(buf)) throw new Error(`buffer '${buf.label}' released twice or not from this pool`);
    this.bytesLive -= buf.size;
    this.bytesFree += buf.size;
    let list = this.free.get(buf.size);
    if (!list) {
      this.free.set(buf.size, list = []);
      const i = this.sizes.findIndex((x) => x > buf.size);
      this.sizes.splice(i < 0 ? this.sizes.length : i, 0, buf.size);
    }
    list.push(buf);
    this.freeSet.add(buf);
    this.releasedIn.set(buf, this.epoch);
  }

  /**
   * Destroy the free buffers released before the previous call and not taken since (call once per step:
   * a shape that did not recur for a whole step gives its memory back). `destroy` must wait for the
   * submit of commands already recorded (Gpu.trimPool passes Gpu.retire).
   */
  trimIdle(destroy: (b: GPUBuffer) => void = (b) => b.destroy()): void {
    for (const size of [...this.sizes]) {
      const list = this.free.get(size)!;
      const keep = list.filter((b) => (this.releasedIn.get(b) ?? 0) >= this.epoch);
      for (const b of list) {
        if (!keep.includes(b)) {
          this.releasedIn.delete(b);
          this.freeSet.delete(b);
          this.bytesFree -= b.size;
          destroy(b);
        }
      }
      if (keep.length) this.free.set(size, keep);
      else {
        this.free.delete(size);
        this.sizes.splice(this.sizes.indexOf(size), 1);
      }
    }
    this.epoch++;
    this.previous = this.handed;
    this.handed = [];
  }

  /** Destroy free buffers (e.g. after a large one-off job). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.freeSet.clear();
    this.sizes = [];
    this.releasedIn.clear();
    this.bytesFree = 0;
    this.previous = [];
    this.handed = [];
  }

  destroy(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.bytesLive = 0;
  }
}
