// Every kernel variant the engine creates (bench/variants.ts: the pipeline keys its op wrappers use for
// steps, decoding and the defences' hooks, on GPU- and CPU-shaped devices) compiles under Dawn's Tint — the
// compiler behind Chrome's WebGPU and the MSL / HLSL / SPIR-V that Metal, D3D12 and Vulkan run — and
// becomes a pipeline. A failure names the variant, Tint's message and the kernels/ file and line.

import assert from "node:assert/strict";
import { requestGpu } from "../lib/gpu/device.ts";
import { engineVariants } from "../bench/variants.ts";
import { gpuTest } from "./helpers.ts";

const KERNELS = new URL("../kernels/", import.meta.url).pathname;

/** The kernels/ file and line a preprocessed line came from (found by its text), or the preprocessed line. */
function sourceLine(file: string, code: string, line: number): string {
  const text = code.split("\n")[line - 1]?.trim() ?? "";
  try {
    const src = Deno.readTextFileSync(`${KERNELS}${file}.wgsl`).split("\n");
    const hits = src.flatMap((l, i) => (l.trim() === text ? [i + 1] : []));
    if (hits.length) return `kernels/${file}.wgsl:${hits.join("/")}`;
  } catch { /* a kernel from source text */ }
  return `preprocessed line ${line} (${text.slice(0, 80)})`;
}

Deno.test({
  name: "every kernel variant the engine creates compiles under Dawn's Tint and becomes a pipeline",
  ...gpuTest,
  fn: async () => {
    const { device, caps } = await requestGpu({ impl: "dawn" });
    // the variants the engine picks under this device's limits (32 KiB of workgroup memory on Dawn's GL)
    const variants = await engineVariants(caps);
    assert.ok(variants.length >= 100, `${variants.length} variants`);
    const failures: string[] = [];
    for (const v of variants) {
      device.pushErrorScope("validation");
      const module = device.createShaderModule({ label: v.name, code: v.code });
      const info = await module.getCompilationInfo();
      device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: v.entry } });
      const err = await device.popErrorScope();
      const file = v.name.split(":")[0];
      const msgs = info.messages.filter((m) => m.type === "error").map((m) =>
        `${sourceLine(file, v.code, m.lineNum)}: ${m.message}`
      );
      if (msgs.length) failures.push(`${v.name}: ${msgs.join("; ")}`);
      else if (err) failures.push(`${v.name}: ${err.message.split("\n")[0]}`);
    }
    device.destroy();
    assert.deepEqual(failures, [], `on ${caps.description} (${caps.backend})`);
  },
});
