// `deno task bench`: throughput on this machine's adapter, each figure beside a reference measured
// in the same run (PyTorch CPU through Debian's python3-torch when present), as a ratio.
// A benchmark, not a test: nothing here asserts a speed.

import { join } from "node:path";
import { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { convertLlama2c } from "../models/llama2c.ts";
import { loadModel } from "../models/model.ts";
import { disposeSaved } from "../models/decoder.ts";
import { LORA_MODULES, LoraSet } from "../lib/train/lora.ts";
import { FullParams } from "../lib/train/full.ts";
import { buildExtras } from "../lib/train/extras.ts";
import { backward } from "../lib/train/backward.ts";
import { adamwStep, zeroGrads } from "../lib/ops/optim.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;
const quick = Deno.args.includes("--quick");

async function timeGpu(gpu: Gpu, record: () => void, minSeconds = quick ? 0.3 : 1.5): Promise<number> {
  record();
  await gpu.finish(); // warm-up: pipelines compiled, buffers allocated
  let n = 0;
  const t0 = performance.now();
  while (true) {
    record();
    n++;
    if (n % 4 === 0 || n < 4) await gpu.finish();
    const dt = (performance.now() - t0) / 1000;
    if (dt >= minSeconds && n % 4 === 0) return dt / n;
  }
}

async function torchRef(args: string[]): Promise<Record<string, unknown> | null> {
  // Debian's python3-torch lives in the system interpreter, whatever python3 is first on PATH.
  for (const py of ["/usr/bin/python3", "python3"]) {
    try {
      // OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE work around old-OpenBLAS bugs on some CPUs here but
      // slow a current build down; the reference runs without them so that it is not handicapped.
      const env = Deno.env.toObject();
      delete env.OPENBLAS_CORETYPE;
      delete env.OPENBLAS_L2_SIZE;
      const out = await new Deno.Command(py, {
        args: [new URL("./torch_ref.py", import.meta.url).pathname, ...args],
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (out.success) return JSON.parse(new TextDecoder().decode(out.stdout));
    } catch { /* try the next interpreter */ }
  }
  return null;
}

function row(cells: (string | number)[]): string {
  return cells.map((c, i) =>
    String(typeof c === "number" ? c.toFixed(c < 10 ? 2 : 1) : c).padEnd(i === 0 ? 34 : 14)
  )
    .join("");
}

const gpu = await Gpu.create();
console.log(
  `adapter: ${gpu.caps.description} (backend ${gpu.caps.backend}, shader-f16 ${gpu.caps.shaderF16})`,
);

// --- matmul at Qwen-like shapes (Qwen2.5-0.5B projections at 256 tokens; 7B is out of reach of a CPU adapter)
const shapes: [string, number, number, number][] = [
  ["qkv_proj 256x896 → 1152", 256, 896, 1152],
  ["gate|up 256x896 → 9728", 256, 896, 9728],
  ["down_proj 256x4864 → 896", 256, 4864, 896],
];
const ref = await torchRef(["matmul", ...shapes.flatMap(([, m, k, n]) => [m, k, n]).map(String)]);
const refG = (ref?.matmul as { gflops: number; numpy_gflops?: number }[] | undefined) ?? [];
console.log(
  `\nmatmul GFLOP/s (reference: ${
    ref ? `PyTorch ${ref.torch} CPU, ${ref.threads} threads` : "python3-torch not installed"
  })`,
);
console.log(row(["shape", "f32 weights", "bf16 weights", "torch", "f32 / torch", "numpy", "f32 / numpy"]));
for (let i = 0; i < shapes.length; i++) {
  const [name, M, K, N] = shapes[i];
  const x = Tensor.fromF32(gpu, new Float32Array(M * K).map(() => Math.random() - 0.5), [M, K]);
  const out = Tensor.empty(gpu, [M, N]);
  const res: number[] = [];
  for (const dt of ["f32", "bf16"] as const) {
    const w = dt === "f32"
      ? Tensor.fromF32(gpu, new Float32Array(N * K).map(() => Math.random() - 0.5), [N, K])
      : Tensor.upload(
        gpu,
        new Uint16Array(N * K).map(() => 0x3c00 + (Math.random() * 256 | 0)),
        [N, K],
        "bf16",
      );
    const s = await timeGpu(gpu, () => linear(gpu, x, w, out));
    res.push(2 * M * K * N / s / 1e9);
    w.dispose();
  }
  const r = refG[i]?.gflops, np = refG[i]?.numpy_gflops;
  const ratio = (x?: number) => x ? `${(res[0] / x).toFixed(2)}x` : "n/a";
  console.log(row([name, res[0], res[1], r ?? "n/a", ratio(r), np ?? "n/a", ratio(np)]));
  x.dispose();
  out.dispose();
}

// --- stories260K forward
const dir = await Deno.makeTempDir({ prefix: "bench-stories-" });
const src = join(SHARED, "models", "stories260K");
await convertLlama2c(join(src, "stories260K.bin"), join(src, "tok512.bin"), dir);
const model = await loadModel(gpu, dir, { tokenizer: false });
const B = 4, T = 256;
const ids = new Uint32Array(B * T).map(() => 3 + Math.floor(Math.random() * 500));
const rows = Array.from({ length: B * T }, (_, i) => i);
const forward = () => {
  const { normed } = model.decoder.forward({ ids, batch: B, t: T });
  model.decoder.logits(normed, rows).dispose();
  normed.dispose();
};
const before = gpu.dispatchCount;
forward();
const perForward = gpu.dispatchCount - before;
const fwd = await timeGpu(gpu, forward);
const fref = await torchRef(["forward", dir, String(B), String(T)]);
const ours = B * T / fwd, theirs = fref?.forward_tokens_per_s as number | undefined;
console.log(`\nstories260K forward to logits, batch ${B}x${T}`);
console.log(row(["", "tokens/s", "reference", "ratio"]));
console.log(
  row(["inoculum (WebGPU)", ours, theirs ?? "n/a", theirs ? `${(ours / theirs).toFixed(2)}x` : "n/a"]),
);
console.log(`(${perForward} dispatches per forward)`);

// --- training steps (forward + backward + AdamW) at the same shape, LoRA r=8 on all projections and full-parameter
console.log(`\nstories260K training step, batch ${B}x${T}`);
console.log(row(["", "tokens/s", "reference", "ratio"]));
const targets = new Uint32Array(B * T).map(() => 3 + Math.floor(Math.random() * 500));
const mask = new Float32Array(B * T).fill(1);
for (const kind of ["lora", "full"] as const) {
  const m = await loadModel(gpu, dir, { tokenizer: false, forceF32: true });
  const lora = kind === "lora"
    ? LoraSet.create(gpu, m.cfg, {
      r: 8,
      alpha: 16,
      dropout: 0,
      targetModules: [...LORA_MODULES],
      rslora: false,
    }, 0)
    : null;
  const full = kind === "full" ? FullParams.create(gpu, m.cfg, m.decoder.w) : null;
  const store = (lora?.store ?? full?.store)!;
  const flat = { p: store.p, g: store.g, m: store.m, v: store.v, total: store.total };
  const partials = Tensor.empty(gpu, [Math.ceil(store.total / 4096)]), clip = Tensor.empty(gpu, [4]);
  let n = 0;
  const stepOnce = () => {
    zeroGrads(gpu, flat);
    const ex = buildExtras(gpu, { lora, rows: B * T, dropoutSeed: n++ });
    const { normed, saved } = m.decoder.forward({ ids, batch: B, t: T, save: true, extras: ex.forward });
    backward(
      m.decoder,
      saved!,
      normed,
      { targets, mask, scale: 1 / (B * T) },
      ex.backward,
      full?.grads ?? null,
    ).dispose();
    disposeSaved(saved!);
    ex.dispose();
    adamwStep(
      gpu,
      flat,
      { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: n, maxGradNorm: 1 },
      partials,
      clip,
    );
  };
  const st = await timeGpu(gpu, stepOnce);
  const tref = await torchRef(["train", dir, String(B), String(T), kind]);
  const o2 = B * T / st, t2 = tref?.train_tokens_per_s as number | undefined;
  console.log(
    row([
      `${kind === "lora" ? "LoRA r=8, all projections" : "full-parameter"}`,
      o2,
      t2 ?? "n/a",
      t2 ? `${(o2 / t2).toFixed(2)}x` : "n/a",
    ]),
  );
  store.destroy();
}
gpu.destroy();
