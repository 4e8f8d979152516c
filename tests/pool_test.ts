// The activation pool: size classes, reuse of a somewhat larger free buffer when lengths change, and
// giving back what a whole step did not reuse.

import assert from "node:assert/strict";
import { BufferPool } from "../lib/gpu/pool.ts";
import { Tensor } from "../lib/tensor.ts";
import { gpuTest, testGpu } from "./helpers.ts";

Deno.test("pool size classes: exact to 4 KiB, then eight per octave (at most 12.5 % over), capped at the binding limit", () => {
  assert.equal(BufferPool.sizeClass(1), 16);
  assert.equal(BufferPool.sizeClass(4000), 4000);
  for (const b of [4097, 5000, 70_001, 1_234_567, 99_999_999]) {
    const c = BufferPool.sizeClass(b);
    assert.ok(c >= b && c <= b * 1.125 + 16, `${b} -> ${c}`);
  }
  assert.equal(BufferPool.sizeClass(1_000_000, 1_000_016), 1_000_016, "never past the limit...");
  assert.equal(BufferPool.sizeClass(1_000_000, 900_000), 1_000_000, "...unless the request itself is");
});

Deno.test({
  name:
    "pool: a shorter sequence reuses the longer one's buffers; trimIdle frees what a whole step left unused",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    gpu.pool.trim();
    await gpu.submit();
    const before = gpu.memory.live;
    const step = (T: number) => {
      const ts = [Tensor.empty(gpu, [T, 896]), Tensor.empty(gpu, [T, 4864])];
      for (const t of ts) t.dispose();
    };
    step(512);
    const afterLong = gpu.memory.live - before;
    step(300); // within 2x: no new buffers
    assert.equal(gpu.memory.live - before, afterLong);
    step(100); // more than 2x smaller: new buffers
    assert.ok(gpu.memory.live - before > afterLong);
    gpu.trimPool(); // epoch 0 -> 1: everything was released in this epoch, nothing goes
    await gpu.submit();
    assert.ok(gpu.memory.live - before > afterLong);
    step(100); // reuses the small ones; the long ones are idle for a whole step
    gpu.trimPool();
    await gpu.submit();
    const small = gpu.memory.live - before;
    assert.ok(small < afterLong, `the 512-token buffers were given back (${small} bytes left)`);
    assert.equal(gpu.pool.bytesFree, small);
    gpu.pool.trim();
  },
});
