// OpenAI-compatible chat-completions judge: max_tokens 1, temperature 0, logprobs with the top 20
// candidates, seed 0. Calls are cached on disk by content hash, limited in concurrency and retried
// with exponential backoff on 429 / 5xx. A call that still fails is a missing score; a server that
// cannot be reached at all is an error (after the retries), since every score would be missing.

import { join } from "node:path";
import { createHash } from "node:crypto";
import { atomicWriteJson } from "../../lib/fsutil.ts";
import { aggregateScore, type Judge, type JudgeRequest, type TokenProb } from "./judge.ts";

export interface HttpJudgeOptions {
  baseUrl: string;
  model: string;
  apiKey?: string;
  cacheDir?: string | null;
  concurrency?: number;
  retries?: number;
  /** first backoff in ms (doubles each retry) */
  backoffMs?: number;
  timeoutMs?: number;
  log?: (msg: string) => void;
}

export class JudgeUnreachableError extends Error {}

export class HttpJudge implements Judge {
  readonly name: string;
  private active = 0;
  private queue: (() => void)[] = [];
  /** requests actually sent (tests check cache hits) */
  requests = 0;
  missing = 0;

  constructor(private o: HttpJudgeOptions) {
    this.name = `http:${o.model}`;
    if (!/^https?:\/\//.test(o.baseUrl)) {
      throw new Error(`judge base URL '${o.baseUrl}' must start with http:// or https://`);
    }
  }

  private body(prompt: string) {
    return {
      model: this.o.model,
      messages: [{ role: "user", content: prompt }],
      max_tokens: 1,
      temperature: 0,
      logprobs: true,
      top_logprobs: 20,
      seed: 0,
    };
  }

  private key(prompt: string): string {
    return createHash("sha256").update(JSON.stringify([this.o.baseUrl, this.body(prompt)])).digest("hex");
  }

  async score(req: JudgeRequest): Promise<number | null> {
    const top = await this.topLogprobs(req.prompt);
    return top ? aggregateScore(top) : null;
  }

  /** The top candidates of the judge's first token, or null when the call failed (missing score). */
  async topLogprobs(prompt: string): Promise<TokenProb[] | null> {
    const key = this.key(prompt);
    const cachePath = this.o.cacheDir ? join(this.o.cacheDir, key.slice(0, 2), `${key}.json`) : null;
    if (cachePath) {
      let cached: unknown = null;
      try {
        cached = JSON.parse(await Deno.readTextFile(cachePath));
      } catch { /* not cached, or not JSON: asked again and rewritten */ }
      const top = (cached as { top?: unknown } | null)?.top;
      // an entry of another shape (hand-edited, or a bug) is discarded and fetched again, never trusted
      if (
        Array.isArray(top) &&
        top.every((t) => typeof t?.token === "string" && typeof t?.logprob === "number" && t.logprob <= 0)
      ) return top as TokenProb[];
    }
    await this.acquire();
    try {
      const top = await this.call(prompt);
      if (top && cachePath) await atomicWriteJson(cachePath, { top });
      if (!top) this.missing++;
      return top;
    } finally {
      this.release();
    }
  }

  private async call(prompt: string): Promise<TokenProb[] | null> {
    const retries = this.o.retries ?? 5, backoff = this.o.backoffMs ?? 500;
    const url = this.o.baseUrl.replace(/\/$/, "") + "/chat/completions";
    let lastErr = "";
    let reached = false;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt) await new Promise((r) => setTimeout(r, backoff * 2 ** (attempt - 1)));
      let res: Response;
      try {
        this.requests++;
        res = await fetch(url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(this.o.apiKey ? { authorization: `Bearer ${this.o.apiKey}` } : {}),
          },
          body: JSON.stringify(this.body(prompt)),
          signal: AbortSignal.timeout(this.o.timeoutMs ?? 60_000),
        });
      } catch (e) {
        lastErr = (e as Error).message;
        continue;
      }
      reached = true;
      if (res.status === 429 || res.status >= 500) {
        lastErr = `HTTP ${res.status}`;
        await res.body?.cancel();
        continue;
      }
      if (!res.ok) {
        const text = await res.text();
        this.o.log?.(
          `judge: HTTP ${res.status} from ${url}: ${text.slice(0, 200)} (score recorded as missing)`,
        );
        return null;
      }
      try {
        const j = await res.json();
        const content = j?.choices?.[0]?.logprobs?.content?.[0];
        const top = (content?.top_logprobs ?? []) as TokenProb[];
        if (!Array.isArray(top) || !top.length) {
          this.o.log?.(`judge: response without top_logprobs (score recorded as missing)`);
          return null;
        }
        return top.map((t) => ({ token: String(t.token), logprob: Number(t.logprob) }));
      } catch (e) {
        this.o.log?.(`judge: unreadable response: ${(e as Error).message} (score recorded as missing)`);
        return null;
      }
    }
    if (!reached) {
      throw new JudgeUnreachableError(
        `judge at ${url} did not answer after ${retries + 1} attempts: ${lastErr}`,
      );
    }
    this.o.log?.(`judge: giving up after ${retries + 1} attempts (${lastErr}); score recorded as missing`);
    return null;
  }

  private async acquire(): Promise<void> {
    if (this.active < (this.o.concurrency ?? 8)) {
      this.active++;
      return;
    }
    // the releasing call hands its slot over directly, so `active` never exceeds the limit
    await new Promise<void>((r) => this.queue.push(r));
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.active--;
  }
}
