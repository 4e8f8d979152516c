// PCA of gradient differences: rank-one data gives one ~100 % component; the Gram-matrix path equals
// the direct path on a small d; components are oriented to the reference vector; Jacobi is exact.

import assert from "node:assert/strict";
import { symmetricEigen, uncenteredPca } from "../research/pca.ts";
import { randn } from "./helpers.ts";

Deno.test("symmetric eigen-decomposition reconstructs the matrix (1e-10)", () => {
  const n = 6, r = randn(n * n, 1);
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i * n + j] = r[i * n + j] + r[j * n + i];
  const { values, vectors } = symmetricEigen(A, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const rec = values.reduce((s, v, k) => s + v * vectors[k][i] * vectors[k][j], 0);
      assert.ok(Math.abs(rec - A[i * n + j]) < 1e-10);
    }
  }
  for (let k = 1; k < n; k++) assert.ok(values[k] <= values[k - 1]);
});

Deno.test("PCA: rank-one differences give one component with ~100 % variance, oriented to the trait vector", () => {
  const d = 40, dir = Float64Array.from(randn(d, 2)), coefs = randn(12, 3);
  const rows = Array.from(coefs, (c) => dir.map((x) => -x * c));
  const r = uncenteredPca(rows, { orient: dir });
  assert.equal(r.components.length, 1);
  assert.ok(r.explained[0] > 0.999999);
  const n = Math.hypot(...dir);
  const cos = r.components[0].reduce((a, x, i) => a + x * dir[i], 0) / n;
  assert.ok(cos > 0.999999, `cos ${cos}`);
  assert.equal(r.method, "gram");
});

Deno.test("PCA: the Gram-matrix path equals the direct path (1e-9)", () => {
  const d = 7, N = 5;
  const rows = Array.from({ length: N }, (_, i) => Float64Array.from(randn(d, 10 + i)));
  const orient = randn(d, 99);
  const g = uncenteredPca(rows, { method: "gram", orient, threshold: 0.999 });
  const x = uncenteredPca(rows, { method: "direct", orient, threshold: 0.999 });
  assert.equal(g.components.length, x.components.length);
  g.explained.forEach((e, i) => assert.ok(Math.abs(e - x.explained[i]) < 1e-9));
  g.components.forEach((c, i) =>
    c.forEach((v, k) => assert.ok(Math.abs(v - x.components[i][k]) < 1e-7, `component ${i}[${k}]`))
  );
});
