// Learning-rate schedules (as transformers' get_{linear,cosine}_schedule_with_warmup) and warmup parsing.

import assert from "node:assert/strict";
import { learningRate, warmupSteps } from "../train/schedule.ts";

Deno.test("linear and cosine schedules with warmup; warmup as ratio or steps", () => {
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
  close(learningRate("linear", 1, 0, 100, 10), 0);
  close(learningRate("linear", 1, 5, 100, 10), 0.5);
  close(learningRate("linear", 1, 10, 100, 10), 1);
  close(learningRate("linear", 1, 55, 100, 10), 0.5);
  close(learningRate("linear", 1, 100, 100, 10), 0);
  close(learningRate("cosine", 2, 10, 110, 10), 2);
  close(learningRate("cosine", 2, 60, 110, 10), 1);
  close(learningRate("cosine", 2, 110, 110, 10), 0);
  close(learningRate("constant", 3, 50, 100, 0), 3);
  assert.equal(warmupSteps(0.03, 100), 3);
  assert.equal(warmupSteps(0.03, 101), 4);
  assert.equal(warmupSteps(7, 100), 7);
  assert.equal(warmupSteps(0, 100), 0);
});
