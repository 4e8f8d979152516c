// Uniform parameters are filled by the names of each kernel's `struct Params` (issue 13): the packer puts
// them in the struct's order, converts f32 fields to their bits, zeroes padding, and refuses a missing,
// unknown or ill-typed field with the kernel's name. Every dispatch of the kernel tests goes through it.

import assert from "node:assert/strict";
import { f32bits, packParams, paramWords, parseParamsStruct } from "../lib/gpu/context.ts";

const KERNELS = new URL("../kernels/", import.meta.url);

Deno.test("every kernel's struct Params parses as 4-byte scalars (and vec4<u32> arrays) in 16-byte rows", () => {
  let seen = 0;
  for (const e of Deno.readDirSync(KERNELS)) {
    if (!e.name.endsWith(".wgsl")) continue;
    const src = Deno.readTextFileSync(new URL(e.name, KERNELS));
    const body = /struct\s+Params\s*\{([^}]*)\}/.exec(src)?.[1];
    if (body === undefined) continue;
    const fields = parseParamsStruct(body, e.name);
    const words = paramWords(fields);
    assert.ok(fields.length > 0 && words % 4 === 0 && words <= 64, `${e.name}: ${words} words`);
    assert.equal(new Set(fields.map((f) => f.name)).size, fields.length, `${e.name}: a field twice`);
    seen++;
  }
  assert.ok(seen >= 10, `only ${seen} kernels with a struct Params`);
});

const k = {
  name: "test:main",
  paramFields: parseParamsStruct("rows: u32, scale: f32, // a comment\n offset: i32, _pad: u32", "test"),
};

Deno.test("params are packed in the struct's order by name, f32 as bits, padding zero", () => {
  assert.deepEqual(
    [...packParams(k, { scale: 0.5, offset: -2, rows: 7 })],
    [7, f32bits(0.5), (-2) >>> 0, 0],
  );
});

Deno.test("a missing, unknown or ill-typed param names the kernel and the field", () => {
  assert.throws(() => packParams(k, { rows: 1, scale: 1 }), /test:main: param 'offset' \(i32\) is not given/);
  assert.throws(
    () => packParams(k, { rows: 1, scale: 1, offset: 0, cols: 3 }),
    /test:main: param 'cols' is not a field of its struct Params \(rows, scale, offset, _pad\)/,
  );
  assert.throws(
    () => packParams(k, { rows: 1.5, scale: 1, offset: 0 }),
    /param 'rows' must be a u32, got 1.5/,
  );
  assert.throws(() => packParams(k, { rows: -1, scale: 1, offset: 0 }), /param 'rows' must be a u32/);
  assert.throws(() => parseParamsStruct("a: u32, b: vec2<f32>", "x.wgsl"), /x.wgsl: struct Params field 'b/);
});

Deno.test("array<vec4<u32>, N> params take a list of at most 4N integers, zero-filled, at a 16-byte boundary", () => {
  const ka = {
    name: "test:arr",
    paramFields: parseParamsStruct("n: u32, a: f32, _p: u32, _q: u32, grp: array<vec4<u32>, 2>,", "test"),
  };
  assert.equal(paramWords(ka.paramFields), 12);
  assert.deepEqual([...packParams(ka, { n: 3, a: 1, grp: [7, 8, 9] })], [
    3,
    f32bits(1),
    0,
    0,
    7,
    8,
    9,
    0,
    0,
    0,
    0,
    0,
  ]);
  assert.throws(
    () => packParams(ka, { n: 3, a: 1, grp: [1, 2, 3, 4, 5, 6, 7, 8, 9] }),
    /'grp' must be a list of at most 8/,
  );
  assert.throws(() => packParams(ka, { n: 3, a: 1, grp: [1.5] }), /'grp\[0\]' must be a u32/);
  assert.throws(() => packParams(ka, { n: 3, a: 1, grp: 4 }), /'grp' must be a list/);
  assert.throws(
    () => parseParamsStruct("n: u32, grp: array<vec4<u32>, 2>", "test"),
    /'grp' must start at a 16-byte boundary/,
  );
});
