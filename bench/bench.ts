// `deno task bench`: throughput on this machine's adapter, each figure beside a reference measured in the
// same run (bench/reference.ts: PyTorch on the same GPU, or on the CPU over the BLAS it loaded), as a ratio.
// A benchmark, not a test: nothing here asserts a speed. Every timed thing reports its first call (pipeline
// compiles, first touch of buffers) apart from its steady state, never an average of both.
//
//   deno task bench [--quick]                 matmul at Qwen2.5-0.5B projection shapes (and 4096³ on a GPU)
//                                             beside ba90dc0's tile kernel; the 0.5B schedule (dispatches);
//                                             stories260K forward, training steps and generation
//   deno task bench --model DIR [--batch B] [--len T] [--rank R] [--gen-tokens N] [--skip forward,lora,full,gen]
//                   [--no-ref] [--quick]      any HF folder: forward, LoRA (r R, all projections, with and
//                                             without activation checkpointing) and full-parameter steps at
//                                             B x T, greedy generation at batch 1 and 8, peak GPU memory

import { join } from "node:path";
import { parseArgs } from "node:util";
import { Gpu } from "../lib/gpu/context.ts";
import { DAWN_PACKAGE, webGpuImpl } from "../lib/gpu/device.ts";
import { Tensor } from "../lib/tensor.ts";
import { linear } from "../lib/ops/matmul.ts";
import { convertLlama2c } from "../models/llama2c.ts";
import { disposeModel, loadModel, type Model } from "../models/model.ts";
import { forwardRecorder, generationSpeed, timeGpu, type Timing, trainStepRecorder } from "./measure.ts";
import { describeRef, type RefResult, torchRef } from "./reference.ts";
import { decodeSchedule, loraStepSchedule } from "./schedule.ts";

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
const MAX = { batch: 1024, len: 32768, rank: 4096, "gen-tokens": 32768 } as const;
const int = (v: string | undefined, flag: keyof typeof MAX, d: number) => {
  const n = v === undefined ? d : Number(v);
  if (!/^\d+$/.test(v ?? String(d)) || !Number.isInteger(n) || n < 1 || n > MAX[flag]) {
    console.error(`bench: --${flag} expects an integer from 1 to ${MAX[flag]}, got '${v}'`);
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

function row(cells: (string | number)[], widths = [50, 14, 14, 10, 40]): string {
  return cells.map((c, i) => String(typeof c === "number" ? fmt(c) : c).padEnd(widths[i] ?? 14)).join("");
}
function fmt(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}
function ratio(ours: number, theirs: unknown): string {
  return typeof theirs === "number" && theirs > 0 ? `${(ours / theirs).toFixed(2)}x` : "n/a";
}
/** The first call and the host's recording cost per dispatch, for a row's note. */
function firstAndHost(t: Timing): string {
  const host = t.dispatches ? `, host ${(1e6 * t.recordSeconds / t.dispatches).toFixed(1)} µs/dispatch` : "";
  return `first ${fmt(t.firstSeconds)} s${host}`;
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
  `inoculum bench, ${new Date().toISOString().slice(0, 10)}; adapter: ${gpu.caps.description} (WebGPU ${
    webGpuImpl() === "dawn" ? `Dawn, npm ${DAWN_PACKAGE}` : `wgpu, Deno ${Deno.version.deno}`
  }; backend ${gpu.caps.backend}` +
    `, shader-f16 ${gpu.caps.shaderF16}${gpu.caps.cpuAdapter ? ", a CPU implementation" : ""})`,
);
console.log(
  "steady state = the mean of the calls after two warm-up calls; 'first' = the first call alone (compiles, " +
    "first touch); host µs/dispatch = recording a call on the host (op wrappers included) over its dispatches, the median of the steady-state calls, each recorded with the device idle",
);
if (!noRef) {
  const info = await torchRef(["info"]);
  console.log(describeRef(info.result, info.why));
}

if (a.model) await benchModel(a.model);
else await benchDefault();
gpu.destroy();

async function trainRows(m: Model, kind: "lora" | "full", B: number, T: number, rank: number, dir: string) {
  // full-parameter training keeps f32 weights (and their Adam moments)
  const mm = kind === "full" ? await loadModel(gpu, dir, { tokenizer: false, forceF32: true }) : m;
  for (const checkpoint of kind === "lora" ? [false, true] : [false]) {
    gpu.memory.resetPeak();
    let step;
    try {
      step = trainStepRecorder(gpu, mm, kind, B, T, rank, { dropout: 0.05, checkpoint });
    } catch (e) {
      console.log(row([`${kind} step`, `n/a: ${(e as Error).message}`]));
      break;
    }
    const t = await timeGpu(gpu, step.record, { minSeconds, minRuns: 2 });
    const peak = gpu.memory.peak;
    step.dispose();
    const r = checkpoint ? null : await reference(["train", dir, String(B), String(T), kind, String(rank)]);
    const ours = B * T / t.seconds;
    const label = kind === "lora"
      ? `LoRA step (r ${rank}, dropout 0.05${checkpoint ? ", checkpointing" : ""}), tok/s`
      : "full-parameter step, tok/s";
    console.log(
      row([
        label,
        ours,
        r?.train_tokens_per_s as number ?? (checkpoint ? "" : "n/a"),
        checkpoint ? "" : ratio(ours, r?.train_tokens_per_s),
        `${firstAndHost(t)}, peak ${(peak / 2 ** 30).toFixed(2)} GiB`,
      ]),
    );
    if (r?.peak_gpu_gb) {
      console.log(`  (reference peak GPU memory ${(r.peak_gpu_gb as number).toFixed(1)} GB)`);
    }
  }
  if (mm !== m) disposeModel(mm);
}

async function genRows(m: Model, dir: string, batches: number[], tokens: number) {
  for (const gb of batches) {
    const g = await generationSpeed(gpu, m, gb, tokens, minSeconds);
    const r = await reference(["gen", dir, String(gb), String(tokens)]);
    console.log(
      row([
        `greedy generation, batch ${gb}, tok/s`,
        g.tokensPerS,
        r?.gen_tokens_per_s as number ?? "n/a",
        ratio(g.tokensPerS, r?.gen_tokens_per_s),
        `prefill ${fmt(g.prefillTokensPerS)} tok/s, decode ${fmt(g.decodeTokensPerS)} tok/s, first ${
          fmt(g.firstSeconds)
        } s`,
      ]),
    );
  }
}

async function benchModel(dir: string) {
  const B = int(a.batch, "batch", 4), T = int(a.len, "len", 256), rank = int(a.rank, "rank", 64);
  const genTokens = int(a["gen-tokens"], "gen-tokens", 32);
  const m = await loadModel(gpu, dir, { tokenizer: false });
  const c = m.cfg;
  console.log(
    `\nmodel ${dir}: ${c.architecture}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, ` +
      `weights ${m.decoder.w.layers[0].qkv.dtype}; batch ${B} x ${T}`,
  );
  console.log(row(["measure (steady state)", "inoculum", "reference", "ratio", "notes"]));
  gpu.memory.resetPeak();
  if (!skip.has("forward")) {
    const t = await timeGpu(gpu, forwardRecorder(m, B, T), { minSeconds, minRuns: 2 });
    const r = await reference(["forward", dir, String(B), String(T)]);
    const ours = B * T / t.seconds;
    console.log(
      row([
        "forward to logits, tok/s",
        ours,
        r?.forward_tokens_per_s as number ?? "n/a",
        ratio(ours, r?.forward_tokens_per_s),
        firstAndHost(t),
      ]),
    );
  }
  for (const kind of ["lora", "full"] as const) {
    if (!skip.has(kind)) await trainRows(m, kind, B, T, rank, dir);
  }
  if (!skip.has("gen")) await genRows(m, dir, [1, 8], genTokens);
  console.log(`peak GPU memory the engine allocated (WebGPU reports no driver figure): see each row's notes`);
}

/** ba90dc0's tile kernel (bench/baseline), the GPU tiling this commit replaced, on [M,K] x [N,K] f32. */
function baselineMatmul(x: Tensor, w: Tensor, out: Tensor, M: number, K: number, N: number) {
  const src = Deno.readTextFileSync(new URL("./baseline/matmul_ba90dc0.wgsl", import.meta.url));
  const T = M >= 128 && N >= 128 ? 8 : 4;
  const k = gpu.kernelFromSource("matmul_ba90dc0", src, "main", {
    TM: T,
    TN: T,
    TILE_WG: 16,
    W_DTYPE: "f32",
    W_BINDING: 2,
  });
  return () =>
    gpu.dispatch(
      k,
      { m: M, n: N, k: K, ldc: N, c_off: 0, a_off: 0, c_row_off: 0, alpha: 1, lda: K, k_chunk: 0 },
      { 1: x.buffer, 2: w.buffer, 3: out.buffer },
      [Math.ceil(N / (16 * T)), Math.ceil(M / (16 * T))],
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
  console.log(`\nmatmul GFLOP/s, steady state (f32 activations; weights f32 or packed bf16)`);
  const w8 = [28, 13, 13, 13, 10, 12, 11, 12, 11];
  console.log(
    row([
      "shape",
      "f32 weights",
      "bf16 weights",
      "ba90dc0 f32",
      "new/old",
      "torch",
      "f32/torch",
      "numpy",
      "f32/numpy",
    ], w8),
  );
  for (let i = 0; i < shapes.length; i++) {
    const [name, M, K, N] = shapes[i];
    const x = Tensor.fromF32(gpu, new Float32Array(M * K).map(() => Math.random() - 0.5), [M, K]);
    const out = Tensor.empty(gpu, [M, N]);
    const res: number[] = [];
    const wf = Tensor.fromF32(gpu, new Float32Array(N * K).map(() => Math.random() - 0.5), [N, K]);
    for (const dt of ["f32", "bf16"] as const) {
      const w = dt === "f32" ? wf : Tensor.upload(
        gpu,
        new Uint16Array(N * K).map(() => 0x3c00 + (Math.random() * 256 | 0)),
        [N, K],
        "bf16",
      );
      const t = await timeGpu(gpu, () => linear(gpu, x, w, out), { minSeconds });
      res.push(2 * M * K * N / t.seconds / 1e9);
      if (w !== wf) w.dispose();
    }
    const old = await timeGpu(gpu, baselineMatmul(x, wf, out, M, K, N), { minSeconds });
    const oldG = 2 * M * K * N / old.seconds / 1e9;
    wf.dispose();
    const r = refG[i]?.gflops, np = refG[i]?.numpy_gflops;
    console.log(
      row([
        name,
        res[0],
        res[1],
        oldG,
        ratio(res[0], oldG),
        r ?? "n/a",
        ratio(res[0], r),
        np ?? "n/a",
        ratio(res[0], np),
      ], w8),
    );
    x.dispose();
    out.dispose();
  }

  // --- the 0.5B schedule (dry run: counts, not timings)
  const step = loraStepSchedule(), tok = await decodeSchedule();
  console.log(
    `\nQwen2.5-0.5B schedule (bench:schedule, a dry run): LoRA step 4x256 r 64 ${step.dispatches} dispatches, ` +
      `decode token ${tok.dispatches}; warm: ${step.bindGroups + tok.bindGroups} bind groups and ${
        step.buffers + tok.buffers
      } buffers created`,
  );

  // --- stories260K (a real pretrained llama2.c model): forward, training steps and generation
  const dir = await Deno.makeTempDir({ prefix: "bench-stories-" });
  const src = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
  await convertLlama2c(join(src, "stories260K.bin"), join(src, "tok512.bin"), dir);
  const B = 4, T = 256;
  const model = await loadModel(gpu, dir, { tokenizer: false });
  console.log(`\nstories260K, batch ${B}x${T}`);
  console.log(row(["measure (steady state)", "inoculum", "reference", "ratio", "notes"]));
  const fwd = await timeGpu(gpu, forwardRecorder(model, B, T), { minSeconds });
  const fref = await reference(["forward", dir, String(B), String(T)]);
  const ours = B * T / fwd.seconds;
  console.log(
    row([
      `forward to logits, tok/s`,
      ours,
      fref?.forward_tokens_per_s as number ?? "n/a",
      ratio(ours, fref?.forward_tokens_per_s),
      `${firstAndHost(fwd)}, ${fwd.dispatches} dispatches`,
    ]),
  );
  const f32 = await loadModel(gpu, dir, { tokenizer: false, forceF32: true });
  await trainRows(f32, "lora", B, T, 8, dir);
  await trainRows(f32, "full", B, T, 8, dir);
  await genRows(model, dir, [1], quick ? 16 : 64);
  disposeModel(f32);
  await Deno.remove(dir, { recursive: true });
}
