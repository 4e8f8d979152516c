// Validates a result file against the result schema the experiments declare (experiments/results.ts, the
// same as schemas/result.schema.json), with ajv; returns the parsed JSON.

import assert from "node:assert/strict";
import Ajv from "ajv";

import { resultSchema, summarySchema } from "../experiments/results.ts";
// deno-lint-ignore no-explicit-any
let validate: any = null;

export async function assertValidResult(path: string) {
  if (!validate) {
    // deno-lint-ignore no-explicit-any
    const ajv = new (Ajv as any)({ allErrors: true });
    ajv.addSchema(await summarySchema());
    validate = ajv.compile(resultSchema());
  }
  const j = JSON.parse(await Deno.readTextFile(path));
  assert.ok(validate(j), `${path}: ${JSON.stringify(validate.errors)}`);
  return j;
}
