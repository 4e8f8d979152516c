// The profiler behind INOCULUM_PROFILE=1: GPU time per kernel variant from timestamp queries (each
// dispatch in its own compute pass, bracketed by two timestamps), achieved GFLOP/s and GB/s where an
// op states its cost, and where the wall time went on the host (model load, encoding, pipeline
// compiles, waiting for the GPU, readbacks, uploads, buffers created). Printed to stderr at exit.
//
// It exists to find structural costs without a GPU: too many dispatches, serial loops inside one
// invocation (a kernel whose time does not follow its FLOPs), a readback, buffer or bind group created
// per token, dispatches too narrow to fill a GPU. Timing each dispatch in its own pass serialises the
// passes, so totals are a little above an unprofiled run's; shares between kernels are what to read.
// INOCULUM_PROFILE=host counts and times the host side only (no timestamp queries, no pass per
// dispatch): the honest figure for host recording time per dispatch.

/** What one dispatch moves and computes, as the op knows it (bytes: compulsory traffic). */
export interface OpCost {
  flops?: number;
  bytes?: number;
  /** why a dispatch of more than WIDE_FLOPS launches fewer than WIDE_WORKGROUPS workgroups */
  narrow?: string;
}

/** Mirrors lib/gpu/context.ts (kept here too so that the report needs no import of the runtime). */
const WIDE_FLOPS = 1e6, WIDE_WORKGROUPS = 264;

interface KernelStat {
  dispatches: number;
  /** workgroups launched, summed over dispatches */
  workgroups: number;
  /** dispatches of more than WIDE_FLOPS with fewer than WIDE_WORKGROUPS workgroups, and the reasons given */
  narrow: number;
  reasons: Set<string>;
  /** dispatches whose GPU time came back (all of them when timestamps work) */
  timed: number;
  gpuNs: number;
  flops: number;
  bytes: number;
  /** flops/bytes summed over timed dispatches only, so that rates use matching numerators */
  timedFlops: number;
  timedBytes: number;
}

export interface WallStats {
  loadMs: number;
  encodeMs: number;
  compileMs: number;
  compiles: number;
  waitMs: number;
  submits: number;
  readbacks: number;
  readbackBytes: number;
  uploads: number;
  uploadBytes: number;
  buffersCreated: number;
  bufferBytesCreated: number;
  /** bind groups created (the cache's count) */
  bindGroups: number;
}

export class Profiler {
  readonly kernels = new Map<string, KernelStat>();
  readonly wall: WallStats = {
    loadMs: 0,
    encodeMs: 0,
    compileMs: 0,
    compiles: 0,
    waitMs: 0,
    submits: 0,
    readbacks: 0,
    readbackBytes: 0,
    uploads: 0,
    uploadBytes: 0,
    buffersCreated: 0,
    bufferBytesCreated: 0,
    bindGroups: 0,
  };
  /** Set by the runtime: whether the device granted timestamp queries. */
  timestamps: boolean | null = null;
  readonly startMs = performance.now();

  /** `wantTimestamps`: time each dispatch on the GPU (INOCULUM_PROFILE=1); false: host side only. */
  constructor(readonly wantTimestamps = true) {}

  private stat(name: string): KernelStat {
    let s = this.kernels.get(name);
    if (!s) {
      s = {
        dispatches: 0,
        workgroups: 0,
        narrow: 0,
        reasons: new Set(),
        timed: 0,
        gpuNs: 0,
        flops: 0,
        bytes: 0,
        timedFlops: 0,
        timedBytes: 0,
      };
      this.kernels.set(name, s);
    }
    return s;
  }

  dispatched(name: string, cost: OpCost, workgroups = 0): void {
    const s = this.stat(name);
    s.dispatches++;
    s.workgroups += workgroups;
    s.flops += cost.flops ?? 0;
    s.bytes += cost.bytes ?? 0;
    if ((cost.flops ?? 0) > WIDE_FLOPS && workgroups < WIDE_WORKGROUPS) {
      s.narrow++;
      s.reasons.add(cost.narrow ?? "no reason given");
    }
  }

  /** GPU time of one dispatch, with the cost it was recorded with. */
  timed(name: string, ns: number, cost: OpCost): void {
    const s = this.stat(name);
    s.timed++;
    s.gpuNs += ns;
    s.timedFlops += cost.flops ?? 0;
    s.timedBytes += cost.bytes ?? 0;
  }

  /** Time an async phase of the host (e.g. model load) into `wall[field]`. */
  async phase<T>(field: "loadMs", fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.wall[field] += performance.now() - t0;
    }
  }

  /** Sum of the GPU time of every timed dispatch, in milliseconds. */
  gpuMs(): number {
    let ns = 0;
    for (const s of this.kernels.values()) ns += s.gpuNs;
    return ns / 1e6;
  }

  /**
   * The report printed at exit: a header, where the wall time went, then one row per kernel variant
   * sorted by GPU time with the largest LAST, so that the end of a log (what `tail` shows) holds them.
   */
  report(): string {
    const w = this.wall;
    const totalMs = performance.now() - this.startMs;
    const gpuMs = this.gpuMs();
    const rows = [...this.kernels.entries()].sort((a, b) =>
      a[1].gpuNs - b[1].gpuNs || a[1].dispatches - b[1].dispatches
    );
    const dispatches = rows.reduce((n, [, s]) => n + s.dispatches, 0);
    const accounted = w.loadMs + w.encodeMs + w.compileMs + w.waitMs;
    const out: string[] = [];
    out.push(
      `inoculum profile — ${dispatches} dispatches, ${rows.length} kernel variants, ` +
        (this.timestamps
          ? `GPU time ${fmtMs(gpuMs)} (each dispatch timed in its own compute pass)`
          : this.timestamps === null
          ? "no GPU device was created"
          : !this.wantTimestamps
          ? "host side only (INOCULUM_PROFILE=host: no GPU times)"
          : "no timestamp-query on this device: GPU times unavailable"),
    );
    out.push(
      `wall time ${fmtMs(totalMs)}: model load ${fmtMs(w.loadMs)} · encoding dispatches ${
        fmtMs(w.encodeMs)
      } · pipeline compiles ${fmtMs(w.compileMs)} (${w.compiles}) · waiting for the GPU ${
        fmtMs(w.waitMs)
      } (${w.submits} awaited submits; GPU busy ${
        this.timestamps ? fmtMs(gpuMs) : "n/a"
      } of it) · other host work ${fmtMs(Math.max(0, totalMs - accounted))}`,
    );
    out.push(
      `readbacks ${w.readbacks} (${fmtBytes(w.readbackBytes)}) · uploads ${w.uploads} (${
        fmtBytes(w.uploadBytes)
      }) · buffers created ${w.buffersCreated} (${
        fmtBytes(w.bufferBytesCreated)
      }) · bind groups created ${w.bindGroups} · host recording ${
        dispatches ? (1000 * w.encodeMs / dispatches).toFixed(1) : "0"
      } µs a dispatch${
        this.timestamps ? " (with a timed pass each; INOCULUM_PROFILE=host for the plain figure)" : ""
      }`,
    );
    const narrow = rows.filter(([, s]) => s.narrow);
    if (narrow.length) {
      out.push(
        `dispatches of more than ${WIDE_FLOPS / 1e6} MFLOP with fewer than ${WIDE_WORKGROUPS} workgroups:`,
      );
      for (const [name, s] of narrow) {
        out.push(`  ${clip(name, 72)} ×${s.narrow}: ${[...s.reasons].join("; ")}`);
      }
    }
    const nameW = Math.min(72, Math.max(20, ...rows.map(([n]) => n.length)));
    out.push(
      `${"kernel (file:entry{defines}), largest last".padEnd(nameW)} ${"disp".padStart(7)} ${
        "GPU ms".padStart(10)
      } ${"share".padStart(6)} ${"µs/disp".padStart(9)} ${"GFLOP/s".padStart(9)} ${"GB/s*".padStart(8)} ${
        "wg/disp".padStart(8)
      }`,
    );
    for (const [name, s] of rows) {
      const ms = s.gpuNs / 1e6;
      const sec = s.gpuNs / 1e9;
      const rate = (x: number) => (s.timed && sec > 0 && x > 0 ? (x / sec / 1e9).toFixed(1) : "");
      out.push(
        `${clip(name, nameW).padEnd(nameW)} ${String(s.dispatches).padStart(7)} ${
          (s.timed ? ms.toFixed(2) : "").padStart(10)
        } ${(s.timed && gpuMs > 0 ? (100 * ms / gpuMs).toFixed(1) + "%" : "").padStart(6)} ${
          (s.timed ? (1000 * ms / s.timed).toFixed(1) : "").padStart(9)
        } ${rate(s.timedFlops).padStart(9)} ${rate(s.timedBytes).padStart(8)} ${
          String(Math.round(s.workgroups / Math.max(1, s.dispatches))).padStart(8)
        }`,
      );
    }
    out.push("* GB/s: each op's compulsory traffic, or the size of its bound buffers where it states none");
    return out.join("\n");
  }
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : s.slice(0, n - 1) + "…";
}

function fmtMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(1)} ms`;
}

function fmtBytes(b: number): string {
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(2)} GiB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  if (b >= 1 << 10) return `${(b / (1 << 10)).toFixed(1)} KiB`;
  return `${b} B`;
}

let processProfiler: Profiler | null | undefined;

/**
 * The process-wide profiler when INOCULUM_PROFILE=1 (else null). Its report goes to stderr when the
 * process exits, whichever command ran.
 */
export function envProfiler(): Profiler | null {
  if (processProfiler !== undefined) return processProfiler;
  const v = (() => {
    try {
      return Deno.env.get("INOCULUM_PROFILE") ?? "";
    } catch {
      return "";
    }
  })();
  const on = v !== "" && v !== "0";
  processProfiler = on ? new Profiler(v !== "host") : null;
  if (processProfiler) {
    const p = processProfiler;
    let printed = false;
    const print = () => {
      if (!printed) console.error("\n" + p.report());
      printed = true;
    };
    globalThis.addEventListener("unload", print);
    // a run stopped by `timeout` or Ctrl-C still reports what it measured (unload does not fire then)
    for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
      try {
        Deno.addSignalListener(sig, () => {
          print();
          Deno.exit(code);
        });
      } catch { /* a platform without this signal */ }
    }
  }
  return processProfiler;
}
