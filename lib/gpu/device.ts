// WebGPU adapter/device creation with the adapter's real limits, capability flags,
// and errors that say how to get an adapter when there is none.

export interface GpuOptions {
  /** Force a smaller max storage-buffer binding (bytes) to exercise the tensor-splitting path in tests. */
  maxBindingBytes?: number;
  /** Ask for shader-f16 when the adapter has it (default true). */
  wantF16?: boolean;
  /** Ask for timestamp-query when the adapter has it (the profiler). */
  timestamps?: boolean;
  /** the WebGPU implementation (default: INOCULUM_WEBGPU, else wgpu) */
  impl?: WebGpuImpl;
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

/** The WebGPU implementation: Deno's own (wgpu, naga's WGSL compiler) or Dawn (Chrome's, the Tint compiler). */
export type WebGpuImpl = "wgpu" | "dawn";

/** The npm package Dawn comes from (pinned in package.json; the bench names it). */
export const DAWN_PACKAGE = "webgpu 0.6.2";

export function webGpuImpl(): WebGpuImpl {
  const v = Deno.env.get("INOCULUM_WEBGPU") ?? "wgpu";
  if (v !== "wgpu" && v !== "dawn") {
    throw new NoAdapterError(
      `INOCULUM_WEBGPU: expected wgpu (Deno's WebGPU, the default) or dawn, got '${v}'`,
    );
  }
  return v;
}

// Dawn's instances, one per backend flag set, made once and referenced for the process's life: an instance
// collected by the GC takes its adapters and devices with it (a crash inside dawn.node when a test made a
// second device and the first instance went out of reach)
const dawnInstances = new Map<string, GPU>();

/**
 * Dawn's adapter (npm `webgpu`, Node-API): Dawn's own choice first (Vulkan, Metal, D3D12); where that gives
 * none — Linux without a GPU, whose Mesa lavapipe Dawn's Vulkan refuses — its OpenGL backend at the
 * compatibility feature level (llvmpipe, EGL without a display).
 */
async function dawnAdapter(): Promise<{ adapter: GPUAdapter; backend: string }> {
  if (Deno.build.os === "linux" && !Deno.env.get("EGL_PLATFORM")) Deno.env.set("EGL_PLATFORM", "surfaceless");
  let mod: { create: (flags: string[]) => GPU };
  try {
    mod = await import("webgpu") as unknown as typeof mod;
  } catch (e) {
    throw new NoAdapterError(
      `INOCULUM_WEBGPU=dawn: the npm package 'webgpu' cannot be loaded (${
        (e as Error).message.split("\n")[0]
      }); \`npm ci\` installs it`,
    );
  }
  const tries: { flags: string[]; options: Record<string, unknown>; backend: string }[] = [
    { flags: [], options: { powerPreference: "high-performance" }, backend: "dawn" },
    { flags: ["backend=opengl"], options: { featureLevel: "compatibility" }, backend: "dawn:opengl-compat" },
  ];
  for (const t of tries) {
    const key = t.flags.join(",");
    if (!dawnInstances.has(key)) dawnInstances.set(key, mod.create(t.flags));
    const adapter = await dawnInstances.get(key)!.requestAdapter(t.options as GPURequestAdapterOptions)
      .catch(() => null);
    if (adapter) return { adapter, backend: t.backend };
  }
  throw new NoAdapterError(
    "INOCULUM_WEBGPU=dawn: Dawn found no adapter (neither its default backend nor OpenGL at the compatibility " +
      "feature level; on Linux without a GPU, Mesa's llvmpipe and EGL are needed: apt-get install libegl1 libgl1-mesa-dri)",
  );
}

export async function requestGpu(opts: GpuOptions = {}): Promise<{ device: GPUDevice; caps: GpuCaps }> {
  if ((opts.impl ?? webGpuImpl()) === "dawn") return await deviceOf(await dawnAdapter(), opts);
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
  return await deviceOf({ adapter, backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default" }, opts);
}

async function deviceOf(
  { adapter, backend }: { adapter: GPUAdapter; backend: string },
  opts: GpuOptions,
): Promise<{ device: GPUDevice; caps: GpuCaps }> {
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
    description: [adapter.info?.description, adapter.info?.device].filter(Boolean).join(", ") ||
      adapter.info?.vendor || "unknown adapter",
    backend: backend.startsWith("dawn") ? backend : `wgpu:${backend}`,
    maxBindingBytes: Math.floor(binding / 256) * 256,
    maxBufferBytes: device.limits.maxBufferSize,
    maxWorkgroupsPerDim: device.limits.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerStage: device.limits.maxStorageBuffersPerShaderStage,
    workgroupStorageBytes: device.limits.maxComputeWorkgroupStorageSize,
    shaderF16: device.features.has("shader-f16"),
    timestamps: device.features.has("timestamp-query"),
    uniformAlign: Math.max(256, device.limits.minUniformBufferOffsetAlignment),
    // Dawn's GL backend describes the adapter by its GL version and names llvmpipe in `device`
    cpuAdapter: !!adapter.info?.isFallbackAdapter ||
      /llvmpipe|lavapipe|swiftshader|warp|software/i.test(
        [adapter.info?.description, adapter.info?.device, adapter.info?.architecture].join(" "),
      ),
  };
  // Errors outside our error scopes: report loudly rather than continue with garbage.
  const report = (e: Event) => console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  if (typeof device.addEventListener === "function") device.addEventListener("uncapturederror", report);
  else (device as unknown as { onuncapturederror: unknown }).onuncapturederror = report;
  return { device, caps };
}
