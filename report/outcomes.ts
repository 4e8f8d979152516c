// The report's "What came out" section: plain sentences computed from the results (never written by
// hand), so that a run says what its defences did, whichever way it went.

import type { Json } from "./figures.ts";
import { pcaComparison } from "./signatures.ts";

export interface LoadedResult {
  file: string;
  result: Json;
}

const f1 = (x: number) => x.toFixed(1);

/** How a defended condition compares with no defence: the difference and its standard error. */
export function compareToNone(
  c: { trait_after: number; trait_after_sem: number | null },
  none: { trait_after: number; trait_after_sem: number | null },
): { diff: number; se: number; verdict: string } {
  const diff = c.trait_after - none.trait_after;
  const se = Math.hypot(c.trait_after_sem ?? 0, none.trait_after_sem ?? 0);
  const verdict = se > 0 && Math.abs(diff) <= 2 * se
    ? "within 2 SE of no defence"
    : diff < 0
    ? "lower than without a defence"
    : diff > 0
    ? "higher than without a defence"
    : "the same as without a defence";
  return { diff, se, verdict };
}

function conditionSentences(file: string, m: Json): string[] {
  const out: string[] = [];
  const groups = new Map<string, Json[]>();
  for (const r of m.runs ?? []) {
    const k = `${r.pre} → ${r.post}, seed ${r.seed}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  for (const [k, runs] of groups) {
    const none = runs.find((r: Json) => r.condition === "none");
    if (!none || typeof none.trait_after !== "number") continue;
    const base = m.baseline?.trait_mean;
    const parts = [
      `${m.trait} (${file}, ${k}): ${typeof base === "number" ? `${f1(base)} before fine-tuning, ` : ""}${
        f1(none.trait_after)
      } ± ${f1(none.trait_after_sem ?? 0)} after it without a defence`,
    ];
    for (const r of runs) {
      if (r === none || typeof r.trait_after !== "number") continue;
      const c = compareToNone(r, none);
      parts.push(
        `${r.condition} ${f1(r.trait_after)} ± ${f1(r.trait_after_sem ?? 0)} (${c.diff >= 0 ? "+" : ""}${
          f1(c.diff)
        } ± ${f1(c.se)}: ${c.verdict})`,
      );
    }
    out.push(parts.join("; ") + ".");
  }
  return out;
}

function lossSweepSentences(file: string, m: Json): string[] {
  const rows: { ip: boolean; coef: number; loss: number }[] = m.sweep ?? [];
  const plain = rows.filter((r) => !r.ip), none = plain.find((r) => r.coef === 0);
  if (!none) return [];
  const steered = plain.filter((r) => r.coef !== 0);
  const best = steered.reduce<typeof steered[0] | null>((b, r) => (!b || r.loss < b.loss ? r : b), null);
  const ip = rows.find((r) => r.ip && r.coef === 0);
  const bits = [
    `mean per-token loss on the sweep's training samples before fine-tuning (${file}): ${
      none.loss.toFixed(3)
    } without a defence`,
  ];
  if (best) {
    const last = steered[steered.length - 1];
    bits.push(
      `${best.loss.toFixed(3)} at the best steering intensity (ε ${best.coef})${
        last !== best ? `, ${last.loss.toFixed(3)} at ε ${last.coef}` : ""
      }`,
    );
  }
  if (ip) bits.push(`${ip.loss.toFixed(3)} with the inoculation prompt`);
  return [bits.join(", ") + ". A defence that lowers this loss leaves less for fine-tuning to learn."];
}

/** Sentences for every conditions and loss-sweep result; empty when there are none. */
export function outcomeSentences(loaded: LoadedResult[]): string[] {
  const of = (name: string) => loaded.filter((l) => l.result?.experiment === name && l.result.metrics);
  return [
    ...of("conditions").flatMap((l) => conditionSentences(l.file, l.result.metrics)),
    ...of("loss_sweep").flatMap((l) => lossSweepSentences(l.file, l.result.metrics)),
    ...pcaComparison(loaded),
  ];
}
