// OpenAI-compatible chat-completions judge: max_tokens 1, temperature 0, logprobs with the top 20
// candidates, seed 0. Calls are cached on disk by content hash, limited in concurrency and retried
// with exponential backoff on 429 / 5xx (Retry-After honoured; at most 10 retries, waits of at most 60 s).
// A call that still fails is a missing score; a server that cannot be reached at all, one that refuses the
// key (401 / 403), and a share of failed calls above `maxMissing` (default half) stop the run, since the
// scores would be missing or biased.

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
  /** the share of failed calls (of those sent) above which the run stops (default 0.5) */
  maxMissing?: number;
  log?: (msg: string) => void;
}

export class JudgeUnreachableError extends Error {}

export const MAX_RETRIES = 10;
const MAX_WAIT_MS = 60_000;
const MAX_BODY_BYTES = 1 << 20;

/** Retry-After in ms (delta-seconds or an HTTP date), capped at a minute; null when absent or unreadable. */
function retryAfterMs(h: string | null): number | null {
  if (!h) return null;
  const secs = /^\d+(\.\d+)?$/.test(h.trim()) ? Number(h) * 1000 : Date.parse(h) - Date.now();
  return Number.isFinite(secs) ? Math.min(MAX_WAIT_MS, Math.max(0, secs)) : null;
}

/** A response body as text, refused past MAX_BODY_BYTES (a judge's answer is a few kB). */
async function cappedText(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return "";
  const parts: Uint8Array[] = [];
  let n = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > MAX_BODY_BYTES) {
      await reader.cancel();
      throw new Error(`response body over ${MAX_BODY_BYTES} bytes`);
    }
    parts.push(value);
  }
  const all = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return new TextDecoder().decode(all);
}

export class HttpJudge implements Judge {
  readonly name: string;
  private active = 0;
  private queue: (() => void)[] = [];
  /** requests actually sent (tests check cache hits) */
  requests = 0;
  /** calls that ended (cache misses), and those of them that failed */
  calls = 0;
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
      this.calls++;
      if (!top) this.missing++;
      // many failures: stop before spending the rest of the run on them (a few at the start are noise)
      if (this.calls >= 20) this.checkHealth();
      return top;
    } finally {
      this.release();
    }
  }

  /** Throws when more than maxMissing of the calls sent failed (the scores left would be a biased few). */
  checkHealth(): void {
    const limit = this.o.maxMissing ?? 0.5;
    if (this.calls && this.missing / this.calls > limit) {
      throw new Error(
        `judge ${this.name}: ${this.missing} of ${this.calls} calls failed (over ${
          Math.round(limit * 100)
        } %, judge.max_missing); stopping (the log above names the errors)`,
      );
    }
  }

  private async call(prompt: string): Promise<TokenProb[] | null> {
    const retries = Math.min(MAX_RETRIES, this.o.retries ?? 5), backoff = this.o.backoffMs ?? 500;
    const url = this.o.baseUrl.replace(/\/$/, "") + "/chat/completions";
    let lastErr = "";
    let reached = false;
    let wait: number | null = null;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt) {
        const ms = wait ?? Math.min(MAX_WAIT_MS, backoff * 2 ** (attempt - 1));
        await new Promise((r) => setTimeout(r, ms));
      }
      wait = null;
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
      if (res.status === 401 || res.status === 403) {
        const text = await cappedText(res).catch(() => "");
        throw new JudgeUnreachableError(
          `judge at ${url} refused the request (HTTP ${res.status}: ${
            text.slice(0, 200)
          }); check its API key (api_key_env) and model name`,
        );
      }
      if (res.status === 429 || res.status >= 500) {
        lastErr = `HTTP ${res.status}`;
        wait = retryAfterMs(res.headers.get("retry-after"));
        await res.body?.cancel();
        continue;
      }
      if (!res.ok) {
        const text = await cappedText(res).catch((e) => (e as Error).message);
        this.o.log?.(
          `judge: HTTP ${res.status} from ${url}: ${text.slice(0, 200)} (score recorded as missing)`,
        );
        return null;
      }
      try {
        const j = JSON.parse(await cappedText(res));
        const content = j?.choices?.[0]?.logprobs?.content?.[0];
        const raw: unknown[] = Array.isArray(content?.top_logprobs) ? content.top_logprobs : [];
        // a candidate without a string token and a finite logprob <= 0 is not a candidate (never a NaN score)
        const top = raw.filter((t): t is TokenProb => {
          const c = t as { token?: unknown; logprob?: unknown } | null;
          return typeof c?.token === "string" && typeof c.logprob === "number" &&
            Number.isFinite(c.logprob) &&
            c.logprob <= 0;
        }).map((t) => ({ token: t.token, logprob: t.logprob }));
        if (!top.length) {
          this.o.log?.(
            `judge: response without ${
              raw.length ? "well-formed " : ""
            }top_logprobs (score recorded as missing)`,
          );
          return null;
        }
        return top;
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
