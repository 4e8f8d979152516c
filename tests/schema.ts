// Validates a result file against schemas/result.schema.json (with ajv); returns the parsed JSON.

import assert from "node:assert/strict";
import Ajv from "ajv";

const dir = new URL("../schemas/", import.meta.url);
// deno-lint-ignore no-explicit-any
let validate: any = null;

export async function assertValidResult(path: string) {
  if (!validate) {
    // deno-lint-ignore no-explicit-any
    const ajv = new (Ajv as any)({ allErrors: true });
    ajv.addSchema(JSON.parse(await Deno.readTextFile(new URL("summary.schema.json", dir))));
    validate = ajv.compile(JSON.parse(await Deno.readTextFile(new URL("result.schema.json", dir))));
  }
  const j = JSON.parse(await Deno.readTextFile(path));
  assert.ok(validate(j), `${path}: ${JSON.stringify(validate.errors)}`);
  return j;
}
