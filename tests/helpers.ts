// Test helpers: a shared GPU per test file, a seeded RNG, and array comparison with stated tolerances.

import { Gpu } from "../lib/gpu/context.ts";

let shared: Promise<Gpu> | null = null;
/** One device per test process (creating devices is slow on the software adapters). */
export function testGpu(): Promise<Gpu> {
  return shared ??= Gpu.create();
}

/** Deno's resource sanitizers do not understand WebGPU handles. */
export const gpuTest = { sanitizeResources: false, sanitizeOps: false } as const;

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/**
 * Assert |got - want| <= atol + rtol * |want| element-wise; the message names the worst element.
 */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: { atol: number; rtol?: number },
  what = "",
): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length} != ${want.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < got.length; i++) {
    const lim = tol.atol + (tol.rtol ?? 0) * Math.abs(want[i]);
    if (got[i] === want[i]) continue; // also inf == inf
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= lim) && (worst < 0 || err - lim > worstExcess || Number.isNaN(err))) {
      worst = i;
      worstExcess = err - lim;
      if (Number.isNaN(err)) break;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${got[worst]}, expected ${want[worst]} (atol ${tol.atol}, rtol ${
        tol.rtol ?? 0
      })`,
    );
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a script of this repository (path from the repository root) in a fresh Deno with WebGPU. */
export async function runScript(
  script: string,
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
): Promise<RunResult> {
  // from another directory Deno would not find deno.json (and its npm imports) by itself
  const config = cwd ? ["--config", new URL("../deno.json", import.meta.url).pathname] : [];
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...config,
      "--unstable-webgpu",
      "-A",
      new URL(`../${script}`, import.meta.url).pathname,
      ...args,
    ],
    env,
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: r.code,
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
  };
}

/** `deno task <command>` as a user runs it: main.ts with these arguments. */
export function cli(args: string[], env: Record<string, string> = {}, cwd?: string): Promise<RunResult> {
  return runScript("main.ts", args, env, cwd);
}

// ---- headless Chromium (the report's rendering tests)

export const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

export async function chromium(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const profile = await Deno.makeTempDir();
  const r = await new Deno.Command(CHROMIUM!, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      "--enable-logging=stderr",
      "--v=0",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
    code: r.code,
  };
}

export interface RenderedReport {
  /** the page's own check after rendering (report/page.ts) */
  check: {
    figures: number;
    charts: number;
    sections: number;
    emptyCharts: string[];
    badAxisLabels: string[];
    duplicateTitles: string[];
    exports: number;
    /** charts whose numbers are embedded for CSV / JSON export (and parse) */
    dataTables: number;
  };
  consoleErrors: string[];
  dom: string;
}

/** A report rendered by headless Chromium: its self-check and the console's errors. */
export async function renderedReport(path: string): Promise<RenderedReport> {
  if (!CHROMIUM) {
    throw new Error("Chromium is needed for this test: apt-get install chromium (scripts/setup.sh does)");
  }
  const dom = await chromium(["--dump-dom", `file://${path}`]);
  if (dom.code !== 0) throw new Error(`chromium failed: ${dom.stderr.slice(-2000)}`);
  const m = /<pre id="selfcheck"[^>]*>([^<]*)<\/pre>/.exec(dom.stdout);
  if (!m) throw new Error("the rendered report has no self-check (its script did not run)");
  return {
    check: JSON.parse(m[1].replace(/&quot;/g, '"').replace(/&amp;/g, "&")),
    consoleErrors: dom.stderr.split("\n").filter((l) => /CONSOLE/.test(l) && /(error|Uncaught)/i.test(l)),
    dom: dom.stdout,
  };
}
