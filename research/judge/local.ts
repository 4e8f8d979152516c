// A judge model run by this engine: the filled prompt as one user turn through the judge's chat
// template, and the same top-20 distribution read from its next-token logits.

import type { Model } from "../../models/model.ts";
import { aggregateScore, type Judge, type JudgeRequest, type TokenProb } from "./judge.ts";

export class LocalJudge implements Judge {
  readonly name: string;
  constructor(private m: Model, private topK = 20) {
    this.name = `local:${m.dir}`;
    if (!m.tokenizer) throw new Error(`${m.dir}: the local judge needs a tokenizer`);
  }

  async topLogprobs(prompt: string): Promise<TokenProb[]> {
    const tok = this.m.tokenizer!;
    const ids = tok.hasChatTemplate
      ? tok.encodeChat([{ role: "user", content: prompt }], true)
      : tok.encode(prompt, true);
    const dec = this.m.decoder;
    const { normed } = dec.forward({ ids: Uint32Array.from(ids), batch: 1, t: ids.length });
    const l = dec.logits(normed, [ids.length - 1]);
    normed.dispose();
    const logits = await l.read(dec.gpu);
    l.dispose();
    let mx = -Infinity;
    for (const x of logits) mx = Math.max(mx, x);
    let z = 0;
    for (const x of logits) z += Math.exp(x - mx);
    const lz = mx + Math.log(z);
    const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b).slice(
      0,
      this.topK,
    );
    return order.map((id) => ({ token: tok.decode([id], false), logprob: logits[id] - lz }));
  }

  async score(req: JudgeRequest): Promise<number | null> {
    return aggregateScore(await this.topLogprobs(req.prompt));
  }
}
