// deno task bench --model and bench:memory run end to end on small models (figures are not asserted:
// speed lives in the benchmark, never in tests); the reference line says plainly what it measured against.

import assert from "node:assert/strict";
import { describeRef } from "../bench/reference.ts";
import { convertedStories } from "./fixtures.ts";
import { runScript } from "./helpers.ts";

Deno.test("the bench reference line names the BLAS and warns when it is the reference BLAS", () => {
  const cpu = { torch: "1.13", device: "cpu", threads: 2, impl: "plain torch" };
  assert.match(describeRef({ ...cpu, blas: "OpenBLAS" }), /on CPU, 2 threads, BLAS: OpenBLAS$/);
  assert.match(
    describeRef({
      ...cpu,
      blas: "reference BLAS (netlib libblas; not a baseline: install libopenblas0-pthread)",
    }),
    /WARNING: this reference is not a baseline/,
  );
  assert.match(describeRef({ ...cpu, device: "cuda", gpu: "NVIDIA H200" }), /on GPU NVIDIA H200$/);
  assert.match(
    describeRef(null, "python3 with torch not found"),
    /^reference: none \(python3 with torch not found\)/,
  );
});

Deno.test({
  name:
    "bench --model DIR: forward, LoRA (with and without checkpointing) and full-parameter steps, generation " +
    "at batch 1 and 8: the steady state, the first call and the host's cost per dispatch apart, peak memory",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await convertedStories();
    const r = await runScript("bench/bench.ts", [
      "--model",
      dir,
      "--quick",
      "--batch",
      "2",
      "--len",
      "32",
      "--gen-tokens",
      "4",
      "--rank",
      "4",
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    for (
      const row of [
        /^forward to logits, tok\/s\s+[\d.]+\s+(n\/a|[\d.]+)\s+(n\/a|[\d.]+x)\s+first [\d.]+ s, host [\d.]+ µs\/dispatch/m,
        /^LoRA step \(r 4, dropout 0.05\), tok\/s\s+[\d.]+.*first [\d.]+ s, host [\d.]+ µs\/dispatch, peak [\d.]+ GiB/m,
        /^LoRA step \(r 4, dropout 0.05, checkpointing\), tok\/s\s*[\d.]+/m,
        /^full-parameter step, tok\/s\s+[\d.]+/m,
        /^greedy generation, batch 1, tok\/s\s+[\d.]+.*prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s, first [\d.]+ s/m,
        /^greedy generation, batch 8, tok\/s\s+[\d.]+/m,
        /^steady state = the mean of the calls after two warm-up calls; 'first' = the first call alone/m,
        /^reference: (none \(|PyTorch )/m,
      ]
    ) assert.match(r.stdout, row);
    const bad = await runScript("bench/bench.ts", ["--model", dir, "--skip", "backward"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--skip expects a list of forward, lora, full, gen; got 'backward'/);
    for (const batch of ["0x2", "100000"]) {
      const big = await runScript("bench/bench.ts", ["--model", dir, "--batch", batch]);
      assert.equal(big.code, 2);
      assert.match(big.stderr, new RegExp(`--batch expects an integer from 1 to 1024, got '${batch}'`));
    }
  },
});

Deno.test({
  name: "bench:memory records a LoRA step at full depth on a dry-run device, with and without activation " +
    "checkpointing (checkpointing needs less)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await runScript("bench/memory.ts", [
      "--like",
      "qwen2.5-0.5b",
      "--batch",
      "1",
      "--len",
      "64",
      "--rank",
      "8",
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const rows = [
      ...r.stdout.matchAll(
        /gradient_checkpointing (off|on) ?: peak ([\d.]+) GiB .*weights ([\d.]+) GiB, 24 layers/g,
      ),
    ];
    assert.equal(rows.length, 2, r.stdout);
    for (const [, , peak, weights] of rows) assert.ok(Number(peak) > Number(weights), r.stdout);
    assert.ok(Number(rows[1][2]) <= Number(rows[0][2]), "checkpointing never needs more");
    const bad = await runScript("bench/memory.ts", ["--batch", "0x2"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--batch expects a positive integer, got '0x2'/);
  },
});
