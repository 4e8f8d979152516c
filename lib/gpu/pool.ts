// A buffer pool keyed by exact byte size: activations of a step come back with the same shapes
// every step, so exact-size reuse gets full reuse without the 2x waste of power-of-two buckets.

import type { Profiler } from "./profile.ts";

/**
 * Bytes of GPU buffers the engine holds, live and at peak. WebGPU does not report the driver's memory
 * use, so this is what the engine allocated: a floor on the process's GPU memory.
 */
export class MemoryMeter {
  live = 0;
  peak = 0;
  /** Count `buf` until it is destroyed. */
  track(buf: GPUBuffer): GPUBuffer {
    const size = buf.size;
    this.live += size;
    if (this.live > this.peak) this.peak = this.live;
    const destroy = buf.destroy.bind(buf);
    let gone = false;
    buf.destroy = () => {
      if (!gone) {
        gone = true;
        this.live -= size;
      }
      destroy();
    };
    return buf;
  }
  resetPeak(): void {
    this.peak = this.live;
  }
}

const USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private live = new Set<GPUBuffer>();
  bytesLive = 0;
  bytesFree = 0;

  constructor(
    private device: GPUDevice,
    private profiler: Profiler | null = null,
    private memory: MemoryMeter | null = null,
  ) {}

  static roundSize(bytes: number): number {
    return Math.max(16, Math.ceil(bytes / 16) * 16);
  }

  acquire(bytes: number, label = "pooled"): GPUBuffer {
    const size = BufferPool.roundSize(bytes);
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.bytesFree -= size;
    } else {
      buf = this.device.createBuffer({ label, size, usage: USAGE });
      this.memory?.track(buf);
      if (this.profiler) {
        this.profiler.wall.buffersCreated++;
        this.profiler.wall.bufferBytesCreated += size;
      }
    }
    this.live.add(buf);
    this.bytesLive += size;
    return buf;
  }

  /** Return a buffer for reuse. Safe right after recording: the queue orders later uses after earlier ones. */
  release(buf: GPUBuffer): void {
    if (!this.live.delete(buf)) throw new Error(`buffer '${buf.label}' released twice or not from this pool`);
    this.bytesLive -= buf.size;
    this.bytesFree += buf.size;
    let list = this.free.get(buf.size);
    if (!list) this.free.set(buf.size, list = []);
    list.push(buf);
  }

  /** Destroy free buffers (e.g. after a large one-off job). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.bytesFree = 0;
  }

  destroy(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.bytesLive = 0;
  }
}
