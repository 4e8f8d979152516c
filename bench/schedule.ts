// The engine's schedule at a real model's shape, counted on a dry-run device (lib/gpu/dry.ts: nothing is
// executed, a GPU's limits): dispatches, workgroups per dispatch, and what a step or a decode token creates
// (bind groups, buffers) once warm. These are the structural costs a GPU punishes and a CPU adapter hides;
// they depend on shapes alone, so they are counted exactly here and held by tests/schedule_test.ts.
//
//   deno task bench:schedule [--like qwen2.5-0.5b] [--batch 4] [--len 256] [--rank 64] [--context 200]

import { type DispatchRecord, Gpu, WIDE_FLOPS, WIDE_WORKGROUPS } from "../lib/gpu/context.ts";
import { dryModel } from "../models/dry.ts";
import { DECODE_CHUNK, generate } from "../models/generate.ts";
import { trainStepRecorder } from "./measure.ts";

export interface ScheduleCount {
  /** dispatches of one step (or token), warm */
  dispatches: number;
  /** bind groups and buffers the warm step (token) created */
  bindGroups: number;
  buffers: number;
  /** the first step's (token's) creations, for comparison */
  firstBindGroups: number;
  firstBuffers: number;
  /** the warm step's (token's) dispatches */
  trace: DispatchRecord[];
}

export interface ScheduleOptions {
  like?: string;
  layers?: number;
  batch?: number;
  len?: number;
  rank?: number;
  dropout?: number;
}

/** One LoRA step (forward, backward, AdamW; all projections) recorded three times; the third is counted
 * (the first creates the buffers, the second finds them in their roles). */
export function loraStepSchedule(o: ScheduleOptions = {}): ScheduleCount {
  const gpu = Gpu.dry();
  const m = dryModel(gpu, o.like ?? "qwen2.5-0.5b", { layers: o.layers });
  const step = trainStepRecorder(gpu, m, "lora", o.batch ?? 4, o.len ?? 256, o.rank ?? 64, {
    dropout: o.dropout ?? 0.05,
  });
  const snap = () => ({ b: gpu.bindGroups.created, n: gpu.buffersCreated });
  const s0 = snap();
  step.record();
  const s1 = snap();
  step.record();
  const s1b = snap();
  const trace = gpu.startTrace();
  step.record();
  const s2 = snap();
  gpu.trace = null;
  return {
    dispatches: trace.length,
    bindGroups: s2.b - s1b.b,
    buffers: s2.n - s1b.n,
    firstBindGroups: s1.b - s0.b,
    firstBuffers: s1.n - s0.n,
    trace,
  };
}

/**
 * Greedy decoding of batch-1 prompts of `context` tokens: the tokens of the third readback chunk are the
 * warm ones (the first token of the first chunk is the prompt pass); returns one token's share of them.
 */
export async function decodeSchedule(o: ScheduleOptions & { context?: number } = {}): Promise<ScheduleCount> {
  const gpu = Gpu.dry();
  const m = dryModel(gpu, o.like ?? "qwen2.5-0.5b", { layers: o.layers });
  const context = o.context ?? 200;
  const prompt = Array.from({ length: context - 2 * DECODE_CHUNK }, (_, i) => 3 + i);
  const marks: { d: number; b: number; n: number }[] = [];
  let seen = 0;
  const before = { b: gpu.bindGroups.created, n: gpu.buffersCreated };
  const trace = gpu.startTrace();
  await generate(m.decoder, [prompt], {
    maxNewTokens: 3 * DECODE_CHUNK,
    temperature: 0,
    // called per token after each chunk's readback: mark the counters at the first token of each chunk
    onToken: () => {
      if (seen++ % DECODE_CHUNK === 0) {
        marks.push({ d: trace.length, b: gpu.bindGroups.created, n: gpu.buffersCreated });
      }
    },
  });
  gpu.trace = null;
  // marks[k] is taken after chunk k was recorded; chunk 2 (the third) is warm
  const [first, prev, third] = marks;
  const warm = trace.slice(prev.d, third.d);
  return {
    dispatches: warm.length / DECODE_CHUNK,
    bindGroups: (third.b - prev.b) / DECODE_CHUNK,
    buffers: (third.n - prev.n) / DECODE_CHUNK,
    firstBindGroups: first.b - before.b,
    firstBuffers: first.n - before.n,
    trace: warm.slice(0, warm.length / DECODE_CHUNK),
  };
}

/** Dispatches of more than WIDE_FLOPS with fewer than WIDE_WORKGROUPS workgroups, by kernel. */
export function narrowDispatches(
  trace: DispatchRecord[],
): Map<string, { count: number; reasons: Set<string> }> {
  const out = new Map<string, { count: number; reasons: Set<string> }>();
  for (const d of trace) {
    if (d.flops <= WIDE_FLOPS || d.workgroups >= WIDE_WORKGROUPS) continue;
    const e = out.get(d.name) ?? { count: 0, reasons: new Set<string>() };
    e.count++;
    e.reasons.add(d.narrow ?? "no reason given");
    out.set(d.name, e);
  }
  return out;
}

/** Dispatches by kernel name, most first. */
export function byKernel(trace: DispatchRecord[]): [string, number][] {
  const m = new Map<string, number>();
  for (const d of trace) m.set(d.name, (m.get(d.name) ?? 0) + 1);
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
}

function report(title: string, c: ScheduleCount): string {
  const lines = [
    `${title}: ${c.dispatches} dispatches; warm: ${c.bindGroups} bind groups and ${c.buffers} buffers created ` +
    `(first: ${c.firstBindGroups} and ${c.firstBuffers})`,
  ];
  for (const [name, n] of byKernel(c.trace)) lines.push(`  ${String(n).padStart(5)}  ${name}`);
  const narrow = narrowDispatches(c.trace);
  if (narrow.size) {
    lines.push(`  over ${WIDE_FLOPS / 1e6} MFLOP with fewer than ${WIDE_WORKGROUPS} workgroups:`);
    for (const [name, e] of narrow) lines.push(`    ${name} ×${e.count}: ${[...e.reasons].join("; ")}`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { parseArgs } = await import("node:util");
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      like: { type: "string" },
      batch: { type: "string" },
      len: { type: "string" },
      rank: { type: "string" },
      context: { type: "string" },
      dropout: { type: "string" },
    },
  });
  const num = (v: string | undefined, flag: string, d: number, int = true) => {
    const n = v === undefined ? d : Number(v);
    if (
      !(Number.isFinite(n) && n >= 0 && (!int || Number.isInteger(n))) || !/^[\d.]+$/.test(v ?? String(d))
    ) {
      console.error(
        `bench:schedule: --${flag} expects a ${int ? "non-negative integer" : "number"}, got '${v}'`,
      );
      Deno.exit(2);
    }
    return n;
  };
  const o = {
    like: a.like ?? "qwen2.5-0.5b",
    batch: num(a.batch, "batch", 4),
    len: num(a.len, "len", 256),
    rank: num(a.rank, "rank", 64),
    dropout: num(a.dropout, "dropout", 0.05, false),
  };
  const context = num(a.context, "context", 200);
  console.log(`schedule of ${o.like} on a dry-run device (a GPU's limits; nothing executed)\n`);
  console.log(
    report(`LoRA step ${o.batch} x ${o.len}, r ${o.rank}, dropout ${o.dropout}`, loraStepSchedule(o)),
  );
  console.log();
  console.log(
    report(`greedy decode token, batch 1, context ~${context}`, await decodeSchedule({ ...o, context })),
  );
}
