// `deno task bench`: throughput on this machine's adapter, each figure beside a reference measured in the
// same run (bench/reference.ts: PyTorch on the same GPU, or on the CPU over the BLAS it loaded), as a ratio.
// A benchmark, not a test: nothing here asserts a speed.
//
//   deno task bench [--quick]                 matmul at Qwen2.5-0.5B projection shapes (and 4096³ on a GPU),
//                                             stories260K forward and training steps at 4 x 256
//   deno task bench --model DIR [--batch B] [--len T] [--rank R] [--gen-tokens N] [--skip forward,lora,full,gen]
//                   [--no-ref] [--quick]      any HF folder: forward, LoRA (r R, all projections) and full-parameter
//                                             steps at B x T, greedy generation at batch 1 and 8, peak GPU memory

import { join } from "node:path";
import { parseArgs } from "node:util";
import { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { convertLlama2c } from "../models/llama2c.ts";
import { disposeModel, loadModel } from "../models/model.ts";
import { forwardRecorder, generationTokensPerS, timeGpu, trainStepRecorder } from "./measure.ts";
import { describeRef, type RefResult, torchRef } from "./reference.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean" },
    model: { type: "string" },
    batch: { type: "string" },
    len: { type: "string" },
    rank: { type: "string" },
    "gen-tokens": { type: "string" },
    skip: { type: "string" },
    "no-ref": { type: "boolean" },
  },
});
const quick = !!a.quick;
const minSeconds = quick ? 0.3 : 1.5;
const int = (v: string | undefined, flag: string, d: number) => {
  const n = v === undefined ? d : Number(v);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench: --${flag} expects a positive integer, got '${v}'`);
    Deno.exit(2);
  }
  return n;
};
const SKIPPABLE = ["forward", "lora", "full", "gen"];
const skip = new Set((a.skip ?? "").split(",").filter((s) => s));
for (const s of skip) {
  if (!SKIPPABLE.includes(s)) {
    console.error(`bench: --skip expects a list of ${SKIPPABLE.join(", ")}; got '${s}'`);
    Deno.exit(2);
  }
}

function row(cells: (string | number)[], widths = [46, 14, 14, 10]): string {
  return cells.map((c, i) => String(typeof c === "number" ? fmt(c) : c).padEnd(widths[i] ?? 14)).join("");
}
function fmt(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}
function ratio(ours: number, theirs: unknown): string {
  return typeof theirs === "number" && theirs > 0 ? `${(ours / theirs).toFixed(2)}x` : "n/a";
}

const noRef = !!a["no-ref"];
async function reference(args: string[]): Promise<RefResult | null> {
  if (noRef) return null;
  const r = await torchRef(args);
  if (!r.result) console.log(`  (reference ${args[0]}: ${r.why})`);
  return r.result;
}

const gpu = await Gpu.create();
console.log(
  `inoculum bench, ${
    new Date().toISOString().slice(0, 10)
  }; adapter: ${gpu.caps.description} (backend ${gpu.caps.backend}` +
    `, shader-f16 ${gpu.caps.shaderF16}${gpu.caps.cpuAdapter ? ", a CPU implementation" : ""})`,
);
if (!noRef) {
  const info = await torchRef(["info"]);
  console.log(describeRef(info.result, info.why));
}

if (a.model) await benchModel(a.model);
else await benchDefault();
gpu.destroy();

async function benchModel(dir: string) {
  const B = int(a.batch, "batch", 4), T = int(a.len, "len", 256), rank = int(a.rank, "rank", 64);
  const genTokens = int(a["gen-tokens"], "gen-tokens", 32);
  const m = await loadModel(gpu, dir, { tokenizer: false });
  const c = m.cfg;
  console.log(
    `\nmodel ${dir}: ${c.architecture}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, ` +
      `weights ${m.decoder.w.layers[0].qkv.dtype}; batch ${B} x ${T}`,
  );
  console.log(row(["measure", "inoculum", "reference", "ratio"]));
  const peaks: string[] = [];
  const peak = (what: string) => peaks.push(`${what} ${(gpu.memory.peak / 2 ** 30).toFixed(2)} GiB`);
  gpu.memory.resetPeak();
  if (!skip.has("forward")) {
    const t = await timeGpu(gpu, forwardRecorder(m, B, T), { minSeconds, minRuns: 2 });
    const r = await reference(["forward", dir, String(B), String(T)]);
    const ours = B * T / t.seconds;
    console.log(
      row([
        "forward to logits, tokens/s",
        ours,
        r?.forward_tokens_per_s as number ?? "n/a",
        ratio(ours, r?.forward_tokens_per_s),
      ]),
    );
    peak("forward");
  }
  for (const kind of ["lora", "full"] as const) {
    if (skip.has(kind)) continue;
    // full-parameter training keeps f32 weights (and their Adam moments)
    const mm = kind === "full" ? await loadModel(gpu, dir, { tokenizer: false, forceF32: true }) : m;
    gpu.memory.resetPeak();
    let step;
    try {
      step = trainStepRecorder(gpu, mm, kind, B, T, rank);
    } catch (e) {
      console.log(row([`${kind} step`, `n/a: ${(e as Error).message}`]));
      if (mm !== m) disposeModel(mm);
      continue;
    }
    const t = await timeGpu(gpu, step.record, { minSeconds, minRuns: 2 });
    peak(kind === "lora" ? `LoRA step` : "full step");
    step.dispose();
    if (mm !== m) disposeModel(mm);
    const r = await reference(["train", dir, String(B), String(T), kind, String(rank)]);
    const ours = B * T / t.seconds;
    const label = kind === "lora"
      ? `LoRA step (r ${rank}, all projections), tok/s`
      : "full-parameter step, tok/s";
    console.log(
      row([label, ours, r?.train_tokens_per_s as number ?? "n/a", ratio(ours, r?.train_tokens_per_s)]),
    );
    if (r?.peak_gpu_gb) {
      console.log(`  (reference peak GPU memory ${(r.peak_gpu_gb as number).toFixed(1)} GB)`);
    }
  }
  if (!skip.has("gen")) {
    for (const gb of [1, 8]) {
      gpu.memory.resetPeak();
      const g = await generationTokensPerS(gpu, m, gb, genTokens, minSeconds);
      const r = await reference(["gen", dir, String(gb), String(genTokens)]);
      console.log(
        row([
          `greedy generation, batch ${gb}, tok/s`,
          g.tokensPerS,
          r?.gen_tokens_per_s as number ?? "n/a",
          ratio(g.tokensPerS, r?.gen_tokens_per_s),
        ]),
      );
    }
    peak("generation");
  }
  console.log(
    `peak GPU memory the engine allocated (WebGPU reports no driver figure): ${peaks.join(", ")}`,
  );
}

async function benchDefault() {
  // --- matmul at Qwen2.5-0.5B projection shapes at 256 tokens (and 4096³ where a GPU can do it quickly)
  const shapes: [string, number, number, number][] = [
    ["qkv_proj 256x896 → 1152", 256, 896, 1152],
    ["gate|up 256x896 → 9728", 256, 896, 9728],
    ["down_proj 256x4864 → 896", 256, 4864, 896],
  ];
  if (!gpu.caps.cpuAdapter) shapes.push(["4096x4096 → 4096", 4096, 4096, 4096]);
  const ref = await reference(["matmul", ...shapes.flatMap(([, m, k, n]) => [m, k, n]).map(String)]);
  const refG = (ref?.matmul as { gflops: number; numpy_gflops?: number }[] | undefined) ?? [];
  console.log(`\nmatmul GFLOP/s (f32 activations; weights f32 or packed bf16)`);
  const w7 = [28, 14, 14, 14, 14, 12, 12];
  console.log(row(["shape", "f32 weights", "bf16 weights", "torch", "f32/torch", "numpy", "f32/numpy"], w7));
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
      const t = await timeGpu(gpu, () => linear(gpu, x, w, out), { minSeconds });
      res.push(2 * M * K * N / t.seconds / 1e9);
      w.dispose();
    }
    const r = refG[i]?.gflops, np = refG[i]?.numpy_gflops;
    console.log(
      row([name, res[0], res[1], r ?? "n/a", ratio(res[0], r), np ?? "n/a", ratio(res[0], np)], w7),
    );
    x.dispose();
    out.dispose();
  }

  // --- stories260K (a real pretrained llama2.c model) forward and training steps at 4 x 256
  const dir = await Deno.makeTempDir({ prefix: "bench-stories-" });
  const src = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
  await convertLlama2c(join(src, "stories260K.bin"), join(src, "tok512.bin"), dir);
  const B = 4, T = 256;
  const model = await loadModel(gpu, dir, { tokenizer: false });
  console.log(`\nstories260K, batch ${B}x${T}`);
  console.log(row(["measure", "inoculum", "reference", "ratio"]));
  const before = gpu.dispatchCount;
  forwardRecorder(model, B, T)();
  const perForward = gpu.dispatchCount - before;
  await gpu.finish();
  const fwd = await timeGpu(gpu, forwardRecorder(model, B, T), { minSeconds });
  const fref = await reference(["forward", dir, String(B), String(T)]);
  const ours = B * T / fwd.seconds;
  console.log(
    row([
      `forward to logits, tok/s (${perForward} dispatches)`,
      ours,
      fref?.forward_tokens_per_s as number ?? "n/a",
      ratio(ours, fref?.forward_tokens_per_s),
    ]),
  );
  for (const kind of ["lora", "full"] as const) {
    const m = await loadModel(gpu, dir, { tokenizer: false, forceF32: true });
    const step = trainStepRecorder(gpu, m, kind, B, T, 8);
    const st = await timeGpu(gpu, step.record, { minSeconds });
    step.dispose();
    disposeModel(m);
    const tref = await reference(["train", dir, String(B), String(T), kind, "8"]);
    const o2 = B * T / st.seconds;
    const label = kind === "lora" ? "LoRA step (r 8, all projections), tok/s" : "full-parameter step, tok/s";
    console.log(
      row([label, o2, tref?.train_tokens_per_s as number ?? "n/a", ratio(o2, tref?.train_tokens_per_s)]),
    );
  }
  await Deno.remove(dir, { recursive: true });
}
