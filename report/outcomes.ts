// The report's "What came out" section: plain sentences computed from the results (never written by
// hand), so that a run says what its defences did, whichever way it went. Each experiment says its own
// (ResultKind.outcomes); this collects them in the registry's order.

import { resultKinds } from "../experiments/results.ts";
import type { Json } from "../experiments/result_kind.ts";

export interface LoadedResult {
  file: string;
  result: Json;
}

/** Sentences for every result whose kind has any; empty when there are none. */
export function outcomeSentences(loaded: LoadedResult[]): string[] {
  return resultKinds().flatMap((k) => {
    const of = loaded.filter((l) => l.result?.experiment === k.kind && l.result.metrics);
    return k.outcomes && of.length ? k.outcomes(of) : [];
  });
}
