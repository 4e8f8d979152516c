// The same-run reference of `deno task bench`: bench/torch_ref.py under the system Python, which runs
// transformers + PEFT (on CUDA when there is a GPU) when they import, and a plain-PyTorch model on the CPU
// otherwise. It reports the BLAS library it actually loaded, so that a figure against the reference BLAS
// (Debian's default without libopenblas0-pthread, ~3 GFLOP/s) is never passed off as a baseline.

export type RefResult = Record<string, unknown> & {
  torch?: string;
  device?: string;
  threads?: number;
  blas?: string;
  impl?: string;
  gpu?: string;
};

export interface RefOutcome {
  result: RefResult | null;
  /** why there is no result (python3-torch missing, the script failed: its last stderr line) */
  why?: string;
}

export async function torchRef(args: string[]): Promise<RefOutcome> {
  let why = "python3 with torch not found (INOCULUM_BENCH_REF=1 bash scripts/setup.sh installs it)";
  // Debian's python3-torch lives in the system interpreter, whatever python3 is first on PATH.
  for (const py of ["/usr/bin/python3", "python3"]) {
    try {
      // OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE work around old-OpenBLAS bugs on some CPUs here but slow
      // a current build down; the reference runs without them so that it is not handicapped.
      const env = Deno.env.toObject();
      delete env.OPENBLAS_CORETYPE;
      delete env.OPENBLAS_L2_SIZE;
      const out = await new Deno.Command(py, {
        args: [new URL("./torch_ref.py", import.meta.url).pathname, ...args],
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (out.success) return { result: JSON.parse(new TextDecoder().decode(out.stdout)) };
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
      if (!/No module named 'torch'/.test(err)) why = `torch_ref.py ${args[0]} failed: ${err}`;
    } catch { /* try the next interpreter */ }
  }
  return { result: null, why };
}

/** One line saying what the reference is, and plainly when it is no baseline. */
export function describeRef(r: RefResult | null, why?: string): string {
  if (!r) return `reference: none (${why})`;
  const where = r.device === "cuda" ? `GPU ${r.gpu ?? ""}` : `CPU, ${r.threads} threads, BLAS: ${r.blas}`;
  const warn = r.device !== "cuda" && !/OpenBLAS|MKL|BLIS/.test(r.blas ?? "")
    ? "\n  WARNING: this reference is not a baseline a user would pick; ratios against it overstate the engine"
    : "";
  return `reference: PyTorch ${r.torch} (${r.impl ?? "torch"}) on ${where}${warn}`;
}
