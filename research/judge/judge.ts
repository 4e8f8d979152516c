// One Judge interface, three implementations (HTTP / local / rule). A score is the probability-
// weighted mean over the judge's top next-token candidates that parse as integers 0..100:
// sum(k * p_k) / sum(p_k), and no score (null) when that mass is below 0.25 (a refusal or an
// answer in words). A failed call is a missing score, never 0.

export type Rubric = "trait" | "coherence";

export interface JudgeRequest {
  trait: string;
  rubric: Rubric;
  question: string;
  answer: string;
  /** the filled judge prompt (eval_prompt or the coherence prompt) */
  prompt: string;
}

export interface Judge {
  readonly name: string;
  /** the coherence rubric's template ({question}, {answer}); absent = lib/text/trait.ts's COHERENCE_PROMPT */
  readonly coherencePrompt?: string;
  score(req: JudgeRequest): Promise<number | null>;
  /** throws when too many of its calls failed for the scores to stand (an HTTP judge's max_missing) */
  checkHealth?(): void;
  close?(): void | Promise<void>;
}

export interface TokenProb {
  token: string;
  /** natural-log probability */
  logprob: number;
}

export const MIN_NUMERIC_MASS = 0.25;

/** Σ k·p / Σ p over candidates that are integers 0..100 (after trimming), or null below the mass threshold. */
export function aggregateScore(top: TokenProb[]): number | null {
  let mass = 0, sum = 0;
  for (const t of top) {
    const s = t.token.trim();
    if (!/^\d{1,3}$/.test(s)) continue;
    const k = Number(s);
    if (k > 100) continue;
    const p = Math.exp(t.logprob);
    if (!Number.isFinite(p)) continue;
    mass += p;
    sum += k * p;
  }
  return mass < MIN_NUMERIC_MASS || !Number.isFinite(sum / mass) ? null : sum / mass;
}
