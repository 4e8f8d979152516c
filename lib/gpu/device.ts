// WebGPU adapter/device creation with the adapter's real limits, capability flags,
// and errors that say how to get an adapter when there is none.

export interface GpuOptions {
  /** Force a smaller max storage-buffer binding (bytes) to exercise the tensor-splitting path in tests. */
  maxBindingBytes?: number;
  /** Ask for shader-f16 when the adapter has it (default true). */
  wantF16?: boolean;
  /** Ask for timestamp-query when the adapter has it (the profiler). */
  timestamps?: boolean;
}

export interface GpuCaps {
  description: string;
  backend: string;
  /** Largest storage-buffer binding we will use, in bytes (a multiple of 256). */
  maxBindingBytes: number;
  maxBufferBytes: number;
  maxWorkgroupsPerDim: number;
  maxStorageBuffersPerStage: number;
  workgroupStorageBytes: number;
  shaderF16: boolean;
  uniformAlign: number;
  /** A CPU implementation (llvmpipe, lavapipe, SwiftShader, WARP): kernels pick CPU-friendly tilings. */
  cpuAdapter: boolean;
  /** timestamp-query was granted (only requested when profiling) */
  timestamps: boolean;
}

export class NoAdapterError extends Error {}

export async function requestGpu(opts: GpuOptions = {}): Promise<{ device: GPUDevice; caps: GpuCaps }> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new NoAdapterError(
      "WebGPU is not available in this runtime: run Deno with --unstable-webgpu (the deno tasks do).",
    );
  }
  // Mesa's Vulkan WSI layer complains on every start when XDG_RUNTIME_DIR is unset (headless servers, CI).
  if (Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")) {
    Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new NoAdapterError(
      "No WebGPU adapter found. Install a GPU driver with Vulkan/Metal/DX12 support, or Mesa's software " +
        "drivers: `apt-get install -y mesa-vulkan-drivers` (lavapipe, Vulkan) and run with " +
        "DENO_WEBGPU_BACKEND=vulkan, or use llvmpipe through GL with DENO_WEBGPU_BACKEND=gl. " +
        "On Vulkan, XDG_RUNTIME_DIR must also be set (e.g. XDG_RUNTIME_DIR=/tmp).",
    );
  }
  const al = adapter.limits;
  // Request everything the adapter offers: the WebGPU defaults (128/256 MiB) are too small for 7B models.
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxBufferSize: al.maxBufferSize,
    maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: al.maxComputeWorkgroupsPerDimension,
  };
  const features: GPUFeatureName[] = [];
  const hasF16 = adapter.features.has("shader-f16") && opts.wantF16 !== false;
  if (hasF16) features.push("shader-f16");
  if (opts.timestamps && adapter.features.has("timestamp-query")) features.push("timestamp-query");
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  const binding = Math.min(
    device.limits.maxStorageBufferBindingSize,
    device.limits.maxBufferSize,
    opts.maxBindingBytes ?? Infinity,
  );
  const caps: GpuCaps = {
    description: adapter.info?.description || adapter.info?.vendor || "unknown adapter",
    backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default",
    maxBindingBytes: Math.floor(binding / 256) * 256,
    maxBufferBytes: device.limits.maxBufferSize,
    maxWorkgroupsPerDim: device.limits.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerStage: device.limits.maxStorageBuffersPerShaderStage,
    workgroupStorageBytes: device.limits.maxComputeWorkgroupStorageSize,
    shaderF16: device.features.has("shader-f16"),
    timestamps: device.features.has("timestamp-query"),
    uniformAlign: Math.max(256, device.limits.minUniformBufferOffsetAlignment),
    cpuAdapter: !!adapter.info?.isFallbackAdapter ||
      /llvmpipe|lavapipe|swiftshader|warp|software/i.test(adapter.info?.description ?? ""),
  };
  device.addEventListener("uncapturederror", (e) => {
    // Errors outside our error scopes: report loudly rather than continue with garbage.
    console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  return { device, caps };
}
