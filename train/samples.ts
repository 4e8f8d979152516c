// The training data as the loop sees it: every record checked (encoded once) before the first step, then a
// stream of samples in which epoch e visits the records in a seeded permutation and the inoculation prompt
// is drawn per (epoch, sample) — positions, not state, so that a resumed run continues the same stream.

import type { Model } from "../models/model.ts";
import { type DataRecord, encodeRecord, type Sample } from "../lib/text/dataset.ts";
import { hashInts, Rng } from "../lib/rng.ts";
import type { TrainConfig } from "./config.ts";

/** The sample stream: epoch e visits the records in a seeded permutation; IP prompts drawn per (epoch, sample). */
export class SampleStream {
  private orders = new Map<number, number[]>();
  truncated = 0;
  constructor(private model: Model, private records: DataRecord[], private c: TrainConfig) {}

  private order(epoch: number): number[] {
    let o = this.orders.get(epoch);
    if (!o) {
      const rng = new Rng(hashInts(this.c.seed, epoch, 1));
      o = this.records.map((_, i) => i);
      for (let i = o.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [o[i], o[j]] = [o[j], o[i]];
      }
      this.orders.set(epoch, o);
      this.orders.delete(epoch - 2);
    }
    return o;
  }

  /** Sample at global stream position p. */
  get(p: number): { sample: Sample; epoch: number } {
    const n = this.records.length, epoch = Math.floor(p / n), idx = this.order(epoch)[p % n];
    const ip = this.c.inoculation;
    const prompt = ip
      ? ip.prompts[new Rng(hashInts(this.c.seed, epoch, idx, 2)).int(ip.prompts.length)]
      : null;
    const sample = encodeRecord(this.model.tokenizer!, this.records[idx], {
      maxLength: this.c.truncate ? this.c.max_length : Number.MAX_SAFE_INTEGER,
      inoculation: prompt,
      separator: ip?.separator,
      position: ip?.position,
      systemPrompt: this.c.system_prompt,
      path: this.c.data,
    });
    if (!this.c.truncate && sample.ids.length > this.c.max_length) {
      throw new Error(
        `${this.c.data}:${sample.line}: sample has ${sample.ids.length} tokens, over max_length ${this.c.max_length} (set truncate: true to cut it)`,
      );
    }
    if (sample.truncated) this.truncated++;
    return { sample, epoch };
  }
}

/**
 * Every record encoded once before the first step (cheap next to training), so that a chat without an
 * assistant turn or an over-long sample stops the run now — or is skipped with a count under
 * on_bad_line: skip — rather than after hours. Lengths are checked with the longest inoculation prompt.
 */
export function checkRecords(
  model: Model,
  records: DataRecord[],
  c: TrainConfig,
  say: (s: string) => void,
): DataRecord[] {
  const ip = c.inoculation;
  // the prompt that leaves the fewest tokens of a truncated sample: the longest in tokens, not characters
  const tokens = (p: string) => model.tokenizer!.encode(p, false).length;
  const longest = ip ? ip.prompts.reduce((a, p) => (tokens(p) > tokens(a) ? p : a), ip.prompts[0]) : null;
  const kept: DataRecord[] = [];
  let skipped = 0, emptied = 0;
  for (const r of records) {
    try {
      // over max_length for certain (every token covers at most maxTokenChars): said without tokenizing
      const chars = r.text?.length ?? r.messages!.reduce((a, m) => a + m.content.length, 0);
      if (!c.truncate && chars > c.max_length * model.tokenizer!.maxTokenChars) {
        throw new Error(
          `${c.data}:${r.line}: sample has ${chars} characters, over max_length ${c.max_length} tokens (set truncate: true to cut it)`,
        );
      }
      const s = encodeRecord(model.tokenizer!, r, {
        maxLength: c.truncate ? c.max_length : Number.MAX_SAFE_INTEGER,
        inoculation: longest,
        separator: ip?.separator,
        position: ip?.position,
        systemPrompt: c.system_prompt,
        path: c.data,
      });
      if (!c.truncate && s.ids.length > c.max_length) {
        throw new Error(
          `${c.data}:${r.line}: sample has ${s.ids.length} tokens${
            longest ? " with the longest inoculation prompt" : ""
          }, over max_length ${c.max_length} (set truncate: true to cut it)`,
        );
      }
      if (!s.lossMask.some((x) => x)) {
        if (s.truncated) { // its targets are all past max_length: nothing to learn from, not a bad line
          emptied++;
          continue;
        }
        throw new Error(`${c.data}:${r.line}: sample has no token to train on`);
      }
      kept.push(r);
    } catch (e) {
      if (c.on_bad_line !== "skip") {
        throw new Error(`${(e as Error).message} (set on_bad_line: skip to skip such samples)`);
      }
      skipped++;
      say(`skipping ${(e as Error).message}`);
    }
  }
  if (emptied) {
    say(
      `note: ${emptied} of ${records.length} sample(s) skipped: truncated to max_length ${c.max_length}${
        longest ? " (with the longest inoculation prompt)" : ""
      }, no token to train on was left`,
    );
  }
  if (skipped) say(`note: ${skipped} of ${records.length} sample(s) skipped (on_bad_line: skip)`);
  if (!kept.length && emptied) {
    throw new Error(
      `${c.data}: no sample to train on: truncation to max_length ${c.max_length} leaves none of the ${records.length} with a token to train on; raise max_length`,
    );
  }
  if (!kept.length) throw new Error(`${c.data}: no sample to train on`);
  return kept;
}
