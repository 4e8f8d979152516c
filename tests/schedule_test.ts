// The engine's schedule at Qwen2.5-0.5B's shape (24 layers), counted on a dry-run device with a GPU's limits
// (bench/schedule.ts): what a GPU punishes and a CPU adapter hides, held here so that it cannot creep back.
// Nothing runs, so these are exact counts, not timings.

import assert from "node:assert/strict";
import { WIDE_FLOPS, WIDE_WORKGROUPS } from "../lib/gpu/context.ts";
import { dynamicPrivateArrays } from "../lib/gpu/wgsl_lint.ts";
import { decodeSchedule, loraStepSchedule, narrowDispatches } from "../bench/schedule.ts";
import { engineVariants } from "../bench/variants.ts";

Deno.test(
  "a 0.5B LoRA step (4 x 256, r 64 on every projection, dropout 0.05) is at most 1,000 dispatches, " +
    "and a warm step creates no bind group and no buffer",
  () => {
    const c = loraStepSchedule({ like: "qwen2.5-0.5b", batch: 4, len: 256, rank: 64, dropout: 0.05 });
    assert.ok(c.dispatches <= 1000, `${c.dispatches} dispatches`);
    assert.ok(
      c.dispatches >= 24 * 30,
      `${c.dispatches}: fewer than the layers need (the count is of the whole step)`,
    );
    assert.equal(c.bindGroups, 0, "bind groups created by a warm step");
    assert.equal(c.buffers, 0, "buffers created by a warm step");
    assert.ok(c.firstBindGroups > 0 && c.firstBuffers > 0, "the first step creates them");
  },
);

Deno.test("a 0.5B greedy decode token (context ~200) is at most 122 dispatches and creates nothing once warm", async () => {
  // 5 a layer (the norm, RoPE, SwiGLU and LoRA fused into the products) + the LM head with the argmax's first
  // stage + its last stage, which writes the next token's embedding
  const c = await decodeSchedule({ like: "qwen2.5-0.5b", context: 200 });
  assert.ok(c.dispatches <= 122, `${c.dispatches} dispatches a token`);
  assert.equal(c.bindGroups, 0);
  assert.equal(c.buffers, 0);
});

Deno.test(
  "every dispatch of more than 1 MFLOP in the step and the decode token launches >= 264 workgroups " +
    "or names why not",
  async () => {
    for (const c of [loraStepSchedule(), await decodeSchedule()]) {
      for (const [name, e] of narrowDispatches(c.trace)) {
        assert.ok(!e.reasons.has("no reason given"), `${name}: ${e.count} narrow dispatches with no reason`);
      }
      // the products that matter (matmul, gemv) are all wide
      for (const d of c.trace) {
        if (d.flops > WIDE_FLOPS && /^(matmul|gemv):/.test(d.name)) {
          assert.ok(
            d.workgroups >= WIDE_WORKGROUPS,
            `${d.name}: ${d.workgroups} workgroups for ${d.flops} FLOPs`,
          );
        }
      }
      // no dispatch launches more than a few empty workgroups (the flat grids: fewer than a row of y)
      for (const d of c.trace) assert.ok(d.groups[1] < 64 || d.groups[0] * d.groups[1] < 70000, d.name);
    }
  },
);

Deno.test(
  "the hot kernels (matmul, gemv, attention) index no private array by a variable, on GPUs and " +
    "CPU adapters",
  async () => {
    // every variant the engine creates (bench/variants.ts: GPU- and CPU-shaped devices, steps, decoding)
    const kernels = (await engineVariants()).filter((k) => /^(matmul|gemv|attention):/.test(k.name));
    assert.ok(kernels.length >= 10, `${kernels.length} variants`);
    for (const k of kernels) {
      // the CPU adapters' invocation attention keeps a head's vectors in arrays (threads are CPU cores there);
      // the GPU schedule never compiles it
      if (/^attention:(forward|backward_dq|backward_dkv)\{/.test(k.name)) continue;
      assert.deepEqual(dynamicPrivateArrays(k.code, k.entry), [], k.name);
    }
    // the check itself finds one
    assert.deepEqual(
      dynamicPrivateArrays(
        "fn f() { var a: array<f32, 4>; for (var i = 0u; i < 4u; i++) { a[i] = 1.0; } a[2] = 0.0; }",
      ),
      ["f: a[i]"],
    );
  },
);
