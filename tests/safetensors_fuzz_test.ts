// Property test (issue 12): corrupting a small checkpoint's length prefix and header — truncations,
// flipped, inserted and deleted bytes, edited offsets, shapes and dtypes — never ends in logits different
// from the original's without an error. Either the same logits (the edit did not matter, e.g. whitespace)
// or an Error naming the file; never a crash of another kind, never different numbers with success.
// The data region carries no checksum, so its bytes are left alone.

import { join } from "node:path";
import assert from "node:assert/strict";
import { loadModel } from "../models/model.ts";
import { Rng } from "../lib/rng.ts";
import { gpuTest, testGpu } from "./helpers.ts";
import { writeTinyQwen2 } from "./fixtures.ts";

const CASES = 240;

Deno.test({
  name:
    `safetensors fuzz: ${CASES} seeded header corruptions give the original logits or a clear error, never other logits`,
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "fuzz-" });
    await writeTinyQwen2(dir, "BF16");
    const file = join(dir, "model.safetensors");
    const orig = await Deno.readFile(file);
    const n = Number(new DataView(orig.buffer).getBigUint64(0, true));
    const header = new TextDecoder().decode(orig.subarray(8, 8 + n));
    const data = orig.subarray(8 + n);
    const ids = [3, 1, 4, 1, 5];
    const logits = async () => {
      const m = await loadModel(gpu, dir, { tokenizer: false });
      const { normed } = m.decoder.forward({ ids: Uint32Array.from(ids), batch: 1, t: ids.length });
      const l = m.decoder.logits(normed, ids.map((_, i) => i));
      normed.dispose();
      const out = await l.read(gpu);
      l.dispose();
      return out;
    };
    const want = await logits();
    const assemble = (h: string, prefix?: bigint) => {
      const hb = new TextEncoder().encode(h);
      const out = new Uint8Array(8 + hb.length + data.length);
      new DataView(out.buffer).setBigUint64(0, prefix ?? BigInt(hb.length), true);
      out.set(hb, 8);
      out.set(data, 8 + hb.length);
      return out;
    };
    const rng = new Rng(20261128);
    const pick = <T>(xs: T[]) => xs[rng.int(xs.length)];
    const numbers = [...header.matchAll(/\d+/g)];
    const kinds: Record<string, () => Uint8Array> = {
      truncate: () => orig.slice(0, rng.int(8 + n + 64)),
      prefix: () => assemble(header, BigInt(pick([0, 1, n - 1, n + 1, n * 2, 2 ** 40, rng.int(n + 100)]))),
      flip: () => {
        const b = orig.slice(), i = rng.int(8 + n);
        b[i] ^= 1 << rng.int(8);
        return b;
      },
      insert: () => {
        const i = rng.int(n + 1);
        return assemble(header.slice(0, i) + pick([" ", "x", "0", ",", '"', "}", "9"]) + header.slice(i));
      },
      delete: () => {
        const i = rng.int(n);
        return assemble(header.slice(0, i) + header.slice(i + 1));
      },
      number: () => {
        // an offset or a shape entry changed
        const m = pick(numbers), v = Number(m[0]);
        const nv = pick([0, v + 1, v - 1, v * 2, v + 2, Math.max(0, v - 2)]);
        return assemble(header.slice(0, m.index!) + nv + header.slice(m.index! + m[0].length));
      },
      dtype: () => assemble(header.replace(/"BF16"/, `"${pick(["F16", "F32", "I8", "U8", "F64", "bf16"])}"`)),
      swapShape: () => assemble(header.replace(/"shape":\[(\d+),(\d+)\]/, '"shape":[$2,$1]')),
      duplicate: () => {
        const m = /"(model\.[^"]+)":(\{[^}]*\})/.exec(header)!;
        return assemble(header.replace("{", `{"${m[1]}":${m[2]},`));
      },
    };
    const tally: Record<string, { same: number; error: number }> = {};
    for (let c = 0; c < CASES; c++) {
      const kind = Object.keys(kinds)[c % Object.keys(kinds).length];
      const bytes = kinds[kind]();
      await Deno.writeFile(file, bytes);
      const t = tally[kind] ??= { same: 0, error: 0 };
      let got: Float32Array;
      try {
        got = await logits();
      } catch (e) {
        assert.ok(e instanceof Error, `case ${c} (${kind}): threw a non-Error ${String(e)}`);
        assert.ok(
          e.message.includes(dir),
          `case ${c} (${kind}): the error does not name the file: ${e.message}`,
        );
        t.error++;
        continue;
      }
      assert.deepEqual(got, want, `case ${c} (${kind}): loaded without error but the logits differ`);
      t.same++;
    }
    await Deno.writeFile(file, orig);
    assert.deepEqual(await logits(), want);
    // most corruptions must be caught (whitespace insertions and no-op edits may pass with the same logits)
    const errors = Object.values(tally).reduce((a, t) => a + t.error, 0);
    assert.ok(
      errors > CASES * 0.7,
      `only ${errors} of ${CASES} corruptions were errors: ${JSON.stringify(tally)}`,
    );
  },
});
