// Each experiment owns its result files (issue 13): it declares their kind, metrics schema, figures, summary
// cells and report sentences (experiments/result_kind.ts); the schema, report and summarize are assembled
// from those declarations. These tests hold the assembly and the committed schema file to them.

import assert from "node:assert/strict";
import { EXPERIMENTS } from "../experiments/index.ts";
import { resultKinds, resultSchema } from "../experiments/results.ts";

Deno.test("schemas/result.schema.json is the schema the experiments declare (regenerate: deno task exp schema)", async () => {
  const file = JSON.parse(await Deno.readTextFile(new URL("../schemas/result.schema.json", import.meta.url)));
  assert.deepEqual(
    file,
    resultSchema(),
    "schemas/result.schema.json is stale: run `deno task exp schema > schemas/result.schema.json`",
  );
});

Deno.test("every experiment declares its result kinds: unique, each with an object schema naming what it requires", () => {
  const kinds = resultKinds().map((k) => k.kind);
  assert.equal(new Set(kinds).size, kinds.length, `a result kind declared twice: ${kinds}`);
  for (const e of Object.values(EXPERIMENTS)) {
    assert.ok(e.results.length >= 1, `${e.name} declares no result`);
    assert.ok(e.results.some((k) => k.kind === e.name), `${e.name}: no result kind named after it`);
    for (const k of e.results) {
      assert.equal(k.metricsSchema.type, "object", `${k.kind}: metrics schema is not an object schema`);
      assert.ok(
        Array.isArray(k.metricsSchema.required) && k.metricsSchema.required.length > 0,
        `${k.kind}: its metrics schema requires nothing`,
      );
    }
  }
  const schema = resultSchema() as { properties: { experiment: { enum: string[] } }; allOf: unknown[] };
  assert.deepEqual(schema.properties.experiment.enum, kinds);
  assert.equal(schema.allOf.length, kinds.length);
});

Deno.test("a result of a kind nobody declares does not validate", async () => {
  const { default: Ajv } = await import("ajv");
  const { summarySchema } = await import("../experiments/results.ts");
  // deno-lint-ignore no-explicit-any
  const ajv = new (Ajv as any)();
  ajv.addSchema(await summarySchema());
  const validate = ajv.compile(resultSchema());
  const envelope = { config: {}, git_commit: null, model_hash: null, started: "", seconds: 0, metrics: {} };
  assert.equal(validate({ experiment: "no_such_kind", ...envelope }), false);
  assert.equal(validate({ experiment: "grad_pca", ...envelope }), false, "grad_pca metrics missing fields");
});
