// A deterministic rule judge for synthetic worlds where the ground truth is known: the trait score
// comes from marker words weighted by intensity, coherence from a grammar check supplied by the world.

import type { Judge, JudgeRequest } from "./judge.ts";

export interface RuleSet {
  /** per trait: marker (lower-case word or phrase) → weight in points (score = min(100, sum of weights)) */
  markers: Record<string, Record<string, number>>;
  /** 0..100; default: 100 when the answer has at least `minWords` words, else 0 */
  coherence?: (question: string, answer: string) => number;
  minWords?: number;
}

export class RuleJudge implements Judge {
  readonly name = "rule";
  constructor(private rules: RuleSet) {}

  score(req: JudgeRequest): Promise<number | null> {
    if (req.rubric === "coherence") {
      const c = this.rules.coherence?.(req.question, req.answer) ??
        (req.answer.trim().split(/\s+/).filter(Boolean).length >= (this.rules.minWords ?? 3) ? 100 : 0);
      return Promise.resolve(c);
    }
    const m = this.rules.markers[req.trait];
    if (!m) return Promise.resolve(null); // no rule for this trait: missing, not 0
    const text = ` ${req.answer.toLowerCase().replace(/[^\p{L}\p{N}' ]+/gu, " ")} `;
    let s = 0;
    for (const [marker, w] of Object.entries(m)) {
      let i = 0;
      const needle = ` ${marker} `;
      while ((i = text.indexOf(needle, i)) >= 0) {
        s += w;
        i += needle.length - 1;
      }
    }
    return Promise.resolve(Math.min(100, s));
  }
}
