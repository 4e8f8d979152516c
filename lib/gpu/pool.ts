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
/** A pooled buffer's bookkeeping, kept on the buffer (no Map lookups per acquire and release). */
interface Slot {
  /** index in its size's free list, or -1 when handed out */
  at: number;
  /** the epoch (trimIdle count) it was released in */
  released: number;
}
const SLOT = Symbol("inoculum.poolSlot");
const slotOf = (b: GPUBuffer): Slot | undefined => (b as unknown as Record<symbol, Slot>)[SLOT];

export class BufferPool {
  /** free buffers by size; `sizes` lists the sizes that have (or had since the last trim) any, ascending */
  private free = new Map<number, GPUBuffer[]>();
  private sizes: number[] = [];
  private liveCount = 0;
  private epoch = 0;
  /** buffers handed out this step, in request order, and the previous step's */
  private handed: GPUBuffer[] = [];
  private previous: GPUBuffer[] = [];
  private owned = new Set<GPUBuffer>();
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
    if (again !== undefined && slotOf(again)?.at! >= 0 && again.size >= want && again.size <= limit) {
      buf = this.takeThis(again);
    } else {
      for (const size of this.sizes) {
        if (size < want) continue;
        if (size > limit) break;
        const list = this.free.get(size)!;
        if (list.length) {
          buf = this.takeThis(list[list.length - 1]);
          break;
        }
      }
    }
    if (!buf) {
      buf = this.create(want, label);
      (buf as unknown as Record<symbol, Slot>)[SLOT] = { at: -1, released: 0 };
      this.owned.add(buf);
    }
    if (this.handed.length < 1 << 20) this.handed.push(buf); // a caller that never trims must not grow it forever
    this.liveCount++;
    this.bytesLive += buf.size;
    return buf;
  }

  /** Take a free buffer out of its size's list (swap with the last: O(1)). */
  private takeThis(buf: GPUBuffer): GPUBuffer {
    const slot = slotOf(buf)!, list = this.free.get(buf.size)!;
    const last = list.pop()!;
    if (last !== buf) {
      list[slot.at] = last;
      slotOf(last)!.at = slot.at;
    }
    slot.at = -1;
    this.bytesFree -= buf.size;
    return buf;
  }

  /** Return a buffer for reuse. Safe right after recording: the queue orders later uses after earlier ones. */
  release(buf: GPUBuffer): void {
    const slot = slotOf(buf);
    if (!slot || slot.at >= 0 || !this.owned.has(buf)) {
      throw new Error(`buffer '${buf.label}' released twice or not from this pool`);
    }
    this.liveCount--;
    this.bytesLive -= buf.size;
    this.bytesFree += buf.size;
    let list = this.free.get(buf.size);
    if (!list) {
      this.free.set(buf.size, list = []);
      const i = this.sizes.findIndex((x) => x > buf.size);
      this.sizes.splice(i < 0 ? this.sizes.length : i, 0, buf.size);
    }
    slot.at = list.length;
    slot.released = this.epoch;
    list.push(buf);
  }

  /**
   * Destroy the free buffers released before the previous call and not taken since (call once per step:
   * a shape that did not recur for a whole step gives its memory back). `destroy` must wait for the
   * submit of commands already recorded (Gpu.trimPool passes Gpu.retire).
   */
  trimIdle(destroy: (b: GPUBuffer) => void = (b) => b.destroy()): void {
    for (const size of [...this.sizes]) {
      const list = this.free.get(size)!;
      const keep = list.filter((b) => slotOf(b)!.released >= this.epoch);
      for (const b of list) {
        if (slotOf(b)!.released < this.epoch) {
          this.owned.delete(b);
          this.bytesFree -= b.size;
          destroy(b);
        }
      }
      keep.forEach((b, i) => slotOf(b)!.at = i);
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
    for (const list of this.free.values()) {
      for (const b of list) {
        this.owned.delete(b);
        b.destroy();
      }
    }
    this.free.clear();
    this.sizes = [];
    this.bytesFree = 0;
    this.previous = [];
    this.handed = [];
  }

  destroy(): void {
    this.trim();
    for (const b of this.owned) b.destroy();
    this.owned.clear();
    this.liveCount = 0;
    this.bytesLive = 0;
  }
}
