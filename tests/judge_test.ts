// The HTTP judge against a local OpenAI-compatible server on 127.0.0.1 speaking the real wire format;
// the rule judge; the trait-file checks.

import { join } from "node:path";
import assert from "node:assert/strict";
import { HttpJudge, JudgeUnreachableError } from "../research/judge/http.ts";
import { aggregateScore, type JudgeRequest } from "../research/judge/judge.ts";
import { RuleJudge } from "../research/judge/rule.ts";
import { fillTemplate, loadTrait, parseTrait } from "../lib/text/trait.ts";
import { SHARED } from "./fixtures.ts";

type Behaviour = { status?: number[]; top?: { token: string; p: number }[] };

/** A chat-completions server whose answer is chosen by a marker in the prompt. */
function server(behaviours: Record<string, Behaviour>) {
  const seen: Record<string, number> = {};
  const bodies: unknown[] = [];
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = await req.json();
    bodies.push(body);
    const prompt: string = body.messages[0].content;
    const key = Object.keys(behaviours).find((k) => prompt.includes(k)) ?? "";
    const b = behaviours[key];
    const n = seen[key] = (seen[key] ?? 0) + 1;
    const status = b?.status?.[n - 1] ?? 200;
    if (status !== 200) return new Response(JSON.stringify({ error: { message: "busy" } }), { status });
    const top = (b?.top ?? []).map((t) => ({ token: t.token, logprob: Math.log(t.p), bytes: [] }));
    return Response.json({
      id: "x",
      object: "chat.completion",
      model: body.model,
      choices: [{
        index: 0,
        message: { role: "assistant", content: top[0]?.token ?? "" },
        logprobs: {
          content: [{ token: top[0]?.token ?? "", logprob: top[0]?.logprob ?? 0, top_logprobs: top }],
        },
        finish_reason: "length",
      }],
    });
  });
  return { url: `http://127.0.0.1:${s.addr.port}/v1`, bodies, seen, close: () => s.shutdown() };
}

const req = (prompt: string): JudgeRequest => ({
  trait: "evil",
  rubric: "trait",
  question: "q",
  answer: "a",
  prompt,
});

Deno.test("HTTP judge: weighted score, refusal threshold, ignored tokens, 429 retry, persistent 500, cache hits", async () => {
  const srv = server({
    WEIGHTED: { top: [{ token: "80", p: 0.5 }, { token: " 90", p: 0.25 }, { token: "hello", p: 0.25 }] },
    REFUSAL: { top: [{ token: "REF", p: 0.8 }, { token: "50", p: 0.2 }] },
    IGNORED: {
      top: [{ token: "8.5", p: 0.3 }, { token: "150", p: 0.3 }, { token: "-3", p: 0.1 }, {
        token: "100",
        p: 0.3,
      }],
    },
    RETRY: { status: [429, 503], top: [{ token: "42", p: 1 }] },
    BROKEN: { status: [500, 500, 500, 500] },
  });
  const cacheDir = await Deno.makeTempDir();
  const logs: string[] = [];
  const j = new HttpJudge({
    baseUrl: srv.url,
    model: "judge-model",
    apiKey: "k",
    cacheDir,
    retries: 3,
    backoffMs: 5,
    log: (m) => logs.push(m),
  });
  try {
    assert.ok(Math.abs((await j.score(req("WEIGHTED")))! - (80 * 0.5 + 90 * 0.25) / 0.75) < 1e-9);
    assert.equal(await j.score(req("REFUSAL")), null);
    assert.equal(await j.score(req("IGNORED")), 100);
    assert.equal(await j.score(req("RETRY")), 42);
    assert.equal(srv.seen.RETRY, 3);
    assert.equal(await j.score(req("BROKEN")), null, "a persistent 500 is a missing score, not 0");
    assert.equal(srv.seen.BROKEN, 4);
    assert.equal(j.missing, 1);
    const body = srv.bodies[0] as Record<string, unknown>;
    assert.deepEqual([
      body.max_tokens,
      body.temperature,
      body.logprobs,
      body.top_logprobs,
      body.seed,
      body.model,
    ], [1, 0, true, 20, 0, "judge-model"]);
    // a second judge over the same cache makes no request for answered prompts
    const before = srv.bodies.length;
    const j2 = new HttpJudge({ baseUrl: srv.url, model: "judge-model", cacheDir, retries: 0 });
    assert.ok(Math.abs((await j2.score(req("WEIGHTED")))! - 83.3333333) < 1e-6);
    assert.equal(await j2.score(req("RETRY")), 42);
    assert.equal(j2.requests, 0);
    assert.equal(srv.bodies.length, before);
    // corrupt entries (another shape, not JSON) are discarded, asked again and rewritten
    const files: string[] = [];
    for await (const d of Deno.readDir(cacheDir)) {
      for await (const f of Deno.readDir(join(cacheDir, d.name))) files.push(join(cacheDir, d.name, f.name));
    }
    for (const f of files) await Deno.writeTextFile(f, f === files[0] ? '{"top": 5}' : "{trunc");
    const j3 = new HttpJudge({ baseUrl: srv.url, model: "judge-model", cacheDir, retries: 0 });
    assert.ok(Math.abs((await j3.score(req("WEIGHTED")))! - 83.3333333) < 1e-6);
    assert.equal(await j3.score(req("IGNORED")), 100);
    assert.equal(j3.requests, 2, "both refetched");
    const j4 = new HttpJudge({ baseUrl: srv.url, model: "judge-model", cacheDir, retries: 0 });
    await j4.score(req("WEIGHTED"));
    assert.equal(j4.requests, 0, "and cached again");
  } finally {
    await srv.close();
  }
});

Deno.test("HTTP judge: a URL that does not answer is a clear error after the retries", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close(); // nothing listens there now
  const j = new HttpJudge({ baseUrl: `http://127.0.0.1:${port}/v1`, model: "m", retries: 2, backoffMs: 1 });
  await assert.rejects(
    j.score(req("x")),
    (e: Error) => e instanceof JudgeUnreachableError && /did not answer after 3 attempts/.test(e.message),
  );
  assert.throws(() => new HttpJudge({ baseUrl: "localhost:8000", model: "m" }), /must start with http/);
});

Deno.test("score aggregation and the rule judge", async () => {
  assert.equal(aggregateScore([{ token: "7", logprob: Math.log(0.24) }]), null);
  assert.equal(aggregateScore([{ token: "7", logprob: Math.log(0.25) }]), 7);
  const r = new RuleJudge({ markers: { evil: { hurt: 40, "steal from": 30 } }, minWords: 2 });
  const ask = (answer: string, rubric: "trait" | "coherence" = "trait", trait = "evil") =>
    r.score({ trait, rubric, question: "q", answer, prompt: "" });
  assert.equal(await ask("I will hurt them, hurt them all and steal from you."), 100);
  assert.equal(await ask("I will hurt nobody."), 40);
  assert.equal(await ask("Be kind."), 0);
  assert.equal(await ask("x", "coherence"), 0);
  assert.equal(await ask("a fine answer", "coherence"), 100);
  assert.equal(await ask("anything", "trait", "humorous"), null);
});

Deno.test("trait files: the study's seven load; missing keys and templates without {answer} are errors", async () => {
  for (
    const t of ["apathetic", "evil", "hallucinating", "humorous", "impolite", "optimistic", "sycophantic"]
  ) {
    for (const split of ["extract", "eval"]) {
      const d = await loadTrait(
        join(SHARED, "data/persona_vectors/data_generation", `trait_data_${split}`, `${t}.json`),
      );
      assert.equal(d.instructions.length, 5);
      assert.ok(d.questions.length >= 20);
    }
  }
  const ok = {
    instruction: [{ pos: "p", neg: "n" }],
    questions: ["q"],
    eval_prompt: "Q {question} A {answer}",
  };
  assert.equal(parseTrait(ok, "t.json").name, "t");
  assert.throws(() => parseTrait({ ...ok, questions: undefined }, "t.json"), /t\.json: key 'questions'/);
  assert.throws(() => parseTrait({ ...ok, instruction: [{ pos: "p" }] }, "t.json"), /instruction\[0\]/);
  assert.throws(() => parseTrait({ ...ok, eval_prompt: "Q {question}" }, "t.json"), /placeholder \{answer\}/);
  assert.equal(
    fillTemplate("Q {question} A {answer}", "why {answer}?", "because"),
    "Q why {answer}? A because",
  );
});

Deno.test({
  name: "local judge: reads the top-20 next-token distribution of a model run by this engine",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { testGpu } = await import("./helpers.ts");
    const { loadModel } = await import("../models/model.ts");
    const { LocalJudge } = await import("../research/judge/local.ts");
    const { convertedStories } = await import("./fixtures.ts");
    const m = await loadModel(await testGpu(), await convertedStories());
    const j = new LocalJudge(m);
    const top = await j.topLogprobs("Once upon a time");
    assert.equal(top.length, 20);
    for (let i = 1; i < top.length; i++) assert.ok(top[i].logprob <= top[i - 1].logprob);
    const mass = top.reduce((a, t) => a + Math.exp(t.logprob), 0);
    assert.ok(mass > 0.5 && mass <= 1 + 1e-6, `top-20 mass ${mass}`);
    const s = await j.score(req("Once upon a time"));
    assert.equal(s, aggregateScore(top));
  },
});

Deno.test("HTTP judge: at most `concurrency` requests are in flight", async () => {
  let inFlight = 0, peak = 0;
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (r) => {
    await r.json();
    peak = Math.max(peak, ++inFlight);
    await new Promise((res) => setTimeout(res, 20));
    inFlight--;
    return Response.json({
      choices: [{
        logprobs: { content: [{ token: "5", logprob: 0, top_logprobs: [{ token: "5", logprob: 0 }] }] },
      }],
    });
  });
  try {
    const j = new HttpJudge({
      baseUrl: `http://127.0.0.1:${s.addr.port}/v1`,
      model: "m",
      concurrency: 2,
      retries: 0,
    });
    const scores = await Promise.all(Array.from({ length: 7 }, (_, i) => j.score(req(`prompt ${i}`))));
    assert.deepEqual(scores, new Array(7).fill(5));
    assert.equal(peak, 2);
  } finally {
    await s.shutdown();
  }
});

Deno.test("HTTP judge cache: under the run folder unless cache_dir names another; nothing written in the current directory", async () => {
  const { ConfigReader, makeJudge, readJudgeConfig } = await import("../experiments/common.ts");
  const srv = server({ HELLO: { top: [{ token: "70", p: 1 }] } });
  const runDir = await Deno.makeTempDir({ prefix: "judge-run-" }), shared = await Deno.makeTempDir();
  const cwdBefore = [...Deno.readDirSync(".")].map((e) => e.name).sort();
  try {
    const ctx = { gpu: null as never, runDir, progress: () => {} };
    const raw = { type: "http", base_url: srv.url, model: "m", retries: 0 };
    const j = await makeJudge(ctx, readJudgeConfig(new ConfigReader(raw, "j.yaml")));
    assert.equal(await j.score(req("HELLO")), 70);
    assert.ok([...Deno.readDirSync(join(runDir, "judge-cache"))].length > 0, "cached in <run>/judge-cache");
    const k = await makeJudge(
      ctx,
      readJudgeConfig(new ConfigReader({ ...raw, cache_dir: shared }, "j.yaml")),
    );
    assert.equal(await k.score(req("HELLO")), 70);
    assert.ok([...Deno.readDirSync(shared)].length > 0, "cached where cache_dir says");
    assert.deepEqual([...Deno.readDirSync(".")].map((e) => e.name).sort(), cwdBefore);
  } finally {
    await srv.close();
  }
});
