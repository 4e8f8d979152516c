// A WebGPU device that records and never runs: buffers hold nothing, shaders are not compiled, submits do
// nothing and readbacks return zeros. The engine's schedule (which kernels, how many dispatches, how many
// workgroups each, what is created per step) is a function of shapes alone, so a dry run at a real model's
// shape counts it on any machine, with a GPU's limits, in milliseconds and without its memory.

import type { GpuCaps } from "./device.ts";

/** An H200's limits as Deno's wgpu reports them on Vulkan (see ../shared/gpu/README.md). */
export function dryCaps(over: Partial<GpuCaps> = {}): GpuCaps {
  return {
    description: "dry run (no device; a GPU's limits)",
    backend: "dry",
    maxBindingBytes: 2 ** 31 - 256,
    maxBufferBytes: 2 ** 32,
    maxWorkgroupsPerDim: 65535,
    maxStorageBuffersPerStage: 16,
    workgroupStorageBytes: 48 * 1024,
    shaderF16: true,
    uniformAlign: 256,
    cpuAdapter: false,
    timestamps: false,
    ...over,
  };
}

class DryBuffer {
  private mapped: ArrayBuffer | null = null;
  destroyed = false;
  constructor(readonly size: number, readonly usage: number, readonly label: string) {}
  destroy() {
    this.destroyed = true;
  }
  mapAsync(): Promise<void> {
    this.mapped = new ArrayBuffer(this.size);
    return Promise.resolve();
  }
  getMappedRange(offset = 0, size?: number): ArrayBuffer {
    if (!this.mapped) throw new Error(`dry buffer '${this.label}' is not mapped`);
    return this.mapped.slice(offset, size === undefined ? undefined : offset + size);
  }
  unmap() {
    this.mapped = null;
  }
}

const noop = () => {};

/** The device: every call the engine makes, answered without work. */
export function dryDevice(caps: GpuCaps): GPUDevice {
  const pass = {
    setPipeline: noop,
    setBindGroup: noop,
    dispatchWorkgroups: noop,
    end: noop,
  };
  const encoder = {
    beginComputePass: () => pass,
    copyBufferToBuffer: noop,
    clearBuffer: noop,
    resolveQuerySet: noop,
    finish: () => ({}),
  };
  const device = {
    limits: {
      maxStorageBufferBindingSize: caps.maxBindingBytes,
      maxBufferSize: caps.maxBufferBytes,
      minUniformBufferOffsetAlignment: caps.uniformAlign,
      maxComputeWorkgroupsPerDimension: caps.maxWorkgroupsPerDim,
    },
    features: new Set<string>(caps.shaderF16 ? ["shader-f16"] : []),
    queue: {
      writeBuffer: noop,
      submit: noop,
      onSubmittedWorkDone: () => Promise.resolve(),
    },
    createBuffer: (d: GPUBufferDescriptor) => new DryBuffer(d.size, d.usage, d.label ?? ""),
    createQuerySet: () => ({ destroy: noop }),
    createShaderModule: () => ({}),
    createComputePipeline: () => ({}),
    createBindGroupLayout: () => ({}),
    createPipelineLayout: () => ({}),
    createBindGroup: () => ({}),
    createCommandEncoder: () => encoder,
    pushErrorScope: noop,
    popErrorScope: () => Promise.resolve(null),
    addEventListener: noop,
    destroy: noop,
  };
  return device as unknown as GPUDevice;
}
