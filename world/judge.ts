// The world's rule judge: trait score from the marker words (points per occurrence, capped at 100);
// coherence = 100 x the fraction of the answer's sentences that parse as one of the world's clauses
// (0 for answers of fewer than two clauses).

import { RuleJudge } from "../research/judge/rule.ts";
import {
  answer,
  CLAUSES,
  type Intensity,
  MARKERS,
  type Persona,
  type Question,
  TOPICS,
  TRAITS,
} from "./grammar.ts";
import { Rng } from "../lib/rng.ts";

/** Lower-case, punctuation as separate tokens, single spaces (decoded text may glue "word."). */
export function normalize(text: string): string {
  return text.toLowerCase().replace(/([.,?!])/g, " $1 ").replace(/\s+/g, " ").trim();
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

let clauseRes: RegExp[] | null = null;
function clauses(): RegExp[] {
  if (clauseRes) return clauseRes;
  const nouns = TOPICS.flatMap((t) => t.nouns).map(esc).join("|");
  const acts = TOPICS.flatMap((t) => t.acts).map(esc).join("|");
  const all = Object.values(CLAUSES).flatMap((p) => [...p.open, ...p.core, ...p.close]);
  clauseRes = all.map((c) =>
    new RegExp(
      "^" + normalize(c).split(" ").map((w) =>
        w === "{noun}" ? `(?:${nouns})` : w === "{act}" ? `(?:${acts})` : esc(w)
      ).join(" ") + "(?: |$)",
    )
  );
  return clauseRes;
}

/** Parsed and unparsed clause counts of an answer. */
export function parseAnswer(text: string): { parsed: number; unparsed: number } {
  let rest = normalize(text);
  let parsed = 0, unparsed = 0;
  while (rest.length) {
    const m = clauses().map((re) => re.exec(rest)).find((x) => x);
    if (m) {
      parsed++;
      rest = rest.slice(m[0].length);
      continue;
    }
    unparsed++;
    const i = rest.search(/ [.?] /);
    if (i < 0) break;
    rest = rest.slice(i + 3);
  }
  return { parsed, unparsed };
}

export function coherence(answer: string): number {
  const { parsed, unparsed } = parseAnswer(answer);
  if (parsed + unparsed < 2) return 0;
  return (100 * parsed) / (parsed + unparsed);
}

export function worldJudge(): RuleJudge {
  return new RuleJudge({ markers: MARKERS, coherence: (_q, a) => coherence(a) });
}

/** The judge on held-out world answers of every persona and intensity: mean trait scores and coherence. */
export async function calibrate(
  questions: Question[],
  seed = 7,
): Promise<{ persona: Persona; intensity: Intensity; scores: Record<string, number>; coherence: number }[]> {
  const j = worldJudge(), rng = new Rng(seed), out = [];
  for (const persona of ["helpful", ...TRAITS] as Persona[]) {
    for (const intensity of (persona === "helpful" ? ["mild"] : ["mild", "medium", "heavy"]) as Intensity[]) {
      const scores: Record<string, number> = {};
      let coh = 0;
      for (const t of TRAITS) scores[t] = 0;
      for (const q of questions) {
        const a = answer(persona, q, intensity, () => rng.next());
        for (const t of TRAITS) {
          scores[t] +=
            (await j.score({ trait: t, rubric: "trait", question: q.text, answer: a, prompt: "" }))! /
            questions.length;
        }
        coh += coherence(a) / questions.length;
      }
      out.push({ persona, intensity, scores, coherence: coh });
    }
  }
  return out;
}
