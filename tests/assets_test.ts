// scripts/fetch-test-assets.sh against a local HTTP server (no network): every asset fetched and checked
// against its pinned SHA-256, a partial download resumed with a Range request, a corrupt copy refused and
// nothing put in place unchecked; and the test run's first line when ../shared is missing.

import assert from "node:assert/strict";
import { join } from "node:path";
import { SHARED } from "./fixtures.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The mirror's file names (fetch-test-assets.sh's first argument to fetch) → the files in ../shared. */
function mirrorFiles(): Record<string, string> {
  const files: Record<string, string> = {
    "stories260K.bin": "models/stories260K/stories260K.bin",
    "tok512.bin": "models/stories260K/tok512.bin",
    "qwen3-tokenizer.json": "models/qwen3-tokenizer/tokenizer.json",
    "qwen3-tokenizer_config.json": "models/qwen3-tokenizer/tokenizer_config.json",
  };
  for (const split of ["extract", "eval"]) {
    for (
      const t of ["apathetic", "evil", "hallucinating", "humorous", "impolite", "optimistic", "sycophantic"]
    ) {
      files[`trait_data_${split}_${t}.json`] =
        `data/persona_vectors/data_generation/trait_data_${split}/${t}.json`;
    }
  }
  return files;
}

function serve(corrupt: Set<string>) {
  const files = mirrorFiles();
  const ranges: string[] = [];
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const name = decodeURIComponent(new URL(req.url).pathname.slice(1));
    if (!files[name]) return new Response("not found", { status: 404 });
    let body = await Deno.readFile(join(SHARED, files[name]));
    if (corrupt.has(name)) body = body.map((b, i) => (i === 10 ? b ^ 1 : b));
    const range = req.headers.get("range");
    if (range) {
      ranges.push(`${name} ${range}`);
      const from = Number(/bytes=(\d+)-/.exec(range)![1]);
      return new Response(body.slice(from), {
        status: 206,
        headers: { "content-range": `bytes ${from}-${body.length - 1}/${body.length}` },
      });
    }
    return new Response(body);
  });
  return { url: `http://127.0.0.1:${s.addr.port}`, ranges, stop: () => s.shutdown() };
}

async function fetchAssets(dest: string, mirror: string) {
  const out = await new Deno.Command("bash", {
    args: [join(ROOT, "scripts/fetch-test-assets.sh"), dest],
    env: { INOCULUM_ASSET_MIRROR: mirror, INOCULUM_ASSET_MIRROR_ONLY: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
  };
}

Deno.test("fetch-test-assets: every asset by URL with its pinned SHA-256, a partial download resumed, a corrupt copy refused", async () => {
  const dest = await Deno.makeTempDir({ prefix: "assets-" });
  // a corrupt mirror: refused, nothing put in place
  let srv = serve(new Set(["tok512.bin"]));
  let r = await fetchAssets(dest, srv.url);
  await srv.stop();
  assert.equal(r.code, 1, r.text);
  assert.match(r.text, /tok512\.bin: SHA-256 [0-9a-f]{64}, expected 037cb335[0-9a-f]+; discarded/);
  assert.match(r.text, /could not fetch .*tok512\.bin/);
  assert.ok(!(await Deno.stat(join(dest, "models/stories260K/tok512.bin")).catch(() => null)));
  // half of a download left by a killed fetch: resumed from where it stopped
  const bin = await Deno.readFile(join(SHARED, "models/stories260K/stories260K.bin"));
  await Deno.remove(join(dest, "models/stories260K/stories260K.bin"));
  await Deno.mkdir(join(dest, ".partial"), { recursive: true });
  await Deno.writeFile(join(dest, ".partial/stories260K.bin.part"), bin.slice(0, 500_000));
  srv = serve(new Set());
  await Deno.writeTextFile(join(dest, ".partial/stories260K.bin.part.url"), `${srv.url}/stories260K.bin\n`);
  r = await fetchAssets(dest, srv.url);
  await srv.stop();
  assert.equal(r.code, 0, r.text);
  assert.deepEqual(srv.ranges, ["stories260K.bin bytes=500000-"]);
  for (const path of Object.values(mirrorFiles())) {
    assert.deepEqual(await Deno.readFile(join(dest, path)), await Deno.readFile(join(SHARED, path)), path);
  }
  assert.ok(!(await Deno.stat(join(dest, ".partial")).catch(() => null)), "no partial files left");
  // run again: everything present and checked, nothing fetched
  srv = serve(new Set());
  r = await fetchAssets(dest, srv.url);
  await srv.stop();
  assert.equal(r.code, 0);
  assert.doesNotMatch(r.text, /^fetch /m);
});

Deno.test("the test run's first line names what is missing from ../shared and how to get it", async () => {
  const out = await new Deno.Command("bash", {
    args: [join(ROOT, "scripts/test-all.sh")],
    env: { INOCULUM_SHARED: "/nonexistent/shared" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1);
  assert.match(
    text.split("\n")[0],
    /^the tests need \/nonexistent\/shared\/models\/stories260K\/stories260K\.bin .*: bash scripts\/fetch-test-assets\.sh/,
  );
});
