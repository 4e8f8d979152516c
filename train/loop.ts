// The training loop: seeded shuffling, batches padded to the longest sample, gradient accumulation,
// AdamW with a schedule and clipping, optional PPS steering / inoculation prompts / sign-forcing,
// a JSON log line per optimizer step, atomic checkpoints and bit-for-bit resumption.
// One submit and one small readback (losses, gradient norm) per optimizer step.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { Tensor } from "../lib/tensor.ts";
import { loadModel, type Model } from "../models/model.ts";
import { disposeSaved } from "../models/decoder.ts";
import { atomicWrite, atomicWriteJson, exists, readJson } from "../lib/fsutil.ts";
import { type DataRecord, encodeRecord, packBatch, readJsonl, type Sample } from "../lib/text/dataset.ts";
import { Rng } from "../lib/rng.ts";
import { adamwStep, zeroGrads } from "../lib/ops/optim.ts";
import { type Hooks, layerVectors } from "../defence/hooks.ts";
import { loadLayerVectors } from "../defence/persona_vector.ts";
import type { TrainConfig } from "./config.ts";
import { signForceLayers, steerLayers } from "../defence/defence.ts";
import { LoraSet } from "../models/lora.ts";
import { FullParams } from "./full.ts";
import { backward } from "./backward.ts";
import { stepHooks } from "./step_hooks.ts";
import { learningRate, warmupSteps } from "./schedule.ts";
import { listCheckpoints, loadCheckpoint, saveCheckpoint, type TrainState } from "./checkpoint.ts";
import type { ParamStore } from "../lib/params.ts";

export interface StepLog {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  grad_norm: number;
  loss_tokens: number;
  tokens: number;
  tokens_per_s: number;
  elapsed_s: number;
}

export interface TrainOptions {
  /** continue the run in output_dir from its last checkpoint (or start it when there is none) */
  resume?: boolean;
  /** move a non-empty output_dir aside (to <dir>.old-<time>) and start clean */
  overwrite?: boolean;
  /** the base model, already loaded (LoRA mode; a sweep trains many adapters on one copy of it) */
  model?: Model;
  gpu: Gpu;
  /** progress lines (default: stderr) */
  progress?: (line: string) => void;
  /** stop after this many optimizer steps in this call (tests of resumption) */
  stopAfter?: number;
}

export interface TrainResult {
  steps: StepLog[];
  outputDir: string;
  model: Model;
  store: ParamStore;
  lora: LoraSet | null;
}

function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = (h ^ (h >>> 15)) >>> 0;
  }
  return h;
}

function configHash(c: TrainConfig): string {
  const { checkpoint_every: _a, keep_checkpoints: _b, log_every: _c, ...rest } = c;
  return mix(...new TextEncoder().encode(canonicalJson(rest))).toString(16);
}

/** JSON with object keys sorted at every level: the hash must not depend on the order keys were read in. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** The sample stream: epoch e visits the records in a seeded permutation; IP prompts drawn per (epoch, sample). */
class SampleStream {
  private orders = new Map<number, number[]>();
  truncated = 0;
  constructor(private model: Model, private records: DataRecord[], private c: TrainConfig) {}

  private order(epoch: number): number[] {
    let o = this.orders.get(epoch);
    if (!o) {
      const rng = new Rng(mix(this.c.seed, epoch, 1));
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
    const prompt = ip ? ip.prompts[new Rng(mix(this.c.seed, epoch, idx, 2)).int(ip.prompts.length)] : null;
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

async function buildHooks(gpu: Gpu, m: Model, c: TrainConfig): Promise<Hooks> {
  const L = m.cfg.numLayers + 1, d = m.cfg.hiddenSize;
  const hooks: Hooks = {};
  if (c.steer) {
    const layers = steerLayers(c.steer.layers, m.cfg.numLayers, "steer.layers");
    hooks.steer = [{
      vectors: layerVectors(gpu, await loadLayerVectors(c.steer.vector!, L, d), L, d, false, "steer"),
      layers,
      coef: c.steer.coef,
    }];
  }
  if (c.sign_force) {
    const layers = signForceLayers(c.sign_force.layers, m.cfg.numLayers);
    hooks.signForce = {
      vectors: layerVectors(
        gpu,
        await loadLayerVectors(c.sign_force.vector!, L, d),
        L,
        d,
        true,
        "sign_force",
      ),
      layers,
      mode: c.sign_force.mode,
    };
  }
  return hooks;
}

/**
 * Every record encoded once before the first step (cheap next to training), so that a chat without an
 * assistant turn or an over-long sample stops the run now — or is skipped with a count under
 * on_bad_line: skip — rather than after hours. Lengths are checked with the longest inoculation prompt.
 */
function checkRecords(
  model: Model,
  records: DataRecord[],
  c: TrainConfig,
  say: (s: string) => void,
): DataRecord[] {
  const ip = c.inoculation;
  const longest = ip ? ip.prompts.reduce((a, p) => (p.length > a.length ? p : a), "") : null;
  const kept: DataRecord[] = [];
  let skipped = 0;
  for (const r of records) {
    try {
      const s = encodeRecord(model.tokenizer!, r, {
        maxLength: Number.MAX_SAFE_INTEGER,
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
      if (!s.lossMask.some((x) => x)) throw new Error(`${c.data}:${r.line}: sample has no token to train on`);
      kept.push(r);
    } catch (e) {
      if (c.on_bad_line !== "skip") {
        throw new Error(`${(e as Error).message} (set on_bad_line: skip to skip such samples)`);
      }
      skipped++;
      say(`skipping ${(e as Error).message}`);
    }
  }
  if (skipped) say(`note: ${skipped} of ${records.length} sample(s) skipped (on_bad_line: skip)`);
  if (!kept.length) throw new Error(`${c.data}: no sample to train on`);
  return kept;
}

export async function train(c: TrainConfig, o: TrainOptions): Promise<TrainResult> {
  const gpu = o.gpu;
  const say = o.progress ?? ((s: string) => console.error(s));
  if (o.model && (c.mode !== "lora" || o.model.dir !== c.model)) {
    throw new Error(
      `train: a preloaded model is for LoRA runs on that same model (${o.model.dir}, not ${c.model})`,
    );
  }
  const model = o.model ?? await loadModel(gpu, c.model, { forceF32: c.mode === "full" });
  if (!model.tokenizer) throw new Error(`${c.model}: a tokenizer is needed for training`);
  const records = checkRecords(
    model,
    await readJsonl(c.data, { onBadLine: c.on_bad_line, limit: c.limit ?? undefined, warn: say }),
    c,
    say,
  );
  const stream = new SampleStream(model, records, c);
  const perStep = c.batch_size * c.grad_accum;
  const totalSteps = c.max_steps ?? Math.max(1, Math.ceil((c.epochs * records.length) / perStep));
  const warmup = warmupSteps(c.warmup, totalSteps);

  let lora: LoraSet | null = null, full: FullParams | null = null;
  if (c.mode === "lora" && c.init_adapter) {
    lora = await LoraSet.load(gpu, model.cfg, c.init_adapter);
  } else if (c.mode === "lora") {
    lora = LoraSet.create(gpu, model.cfg, {
      r: c.lora.r,
      alpha: c.lora.alpha,
      dropout: c.lora.dropout,
      targetModules: c.lora.target_modules,
      rslora: c.lora.rslora,
    }, c.seed);
  } else {
    full = FullParams.create(gpu, model.cfg, model.decoder.w);
  }
  const store = (lora?.store ?? full?.store)!;
  const hooks = await buildHooks(gpu, model, c);
  const saveWeights = async (dir: string) => {
    if (lora) await lora.save(dir, c.model);
    else {
      await full!.save(dir, await readJson(join(c.model, "config.json"), "model config"));
      for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
        if (await exists(join(c.model, f))) await Deno.copyFile(join(c.model, f), join(dir, f));
      }
    }
  };

  await claimOutputDir(c.output_dir, o, say);
  const logPath = join(c.output_dir, "steps.jsonl");
  const hash = configHash(c);
  let start = 0;
  const steps: StepLog[] = [];
  if (o.resume) {
    const cks = await listCheckpoints(c.output_dir);
    if (cks.length) {
      const last = cks[cks.length - 1];
      const st = await loadCheckpoint(last, store);
      if (st.config_hash !== hash) {
        throw new Error(`${last}: checkpoint was made with a different configuration; refusing to resume`);
      }
      start = st.step;
      if (await exists(logPath)) {
        for (const line of (await Deno.readTextFile(logPath)).split("\n")) {
          if (line.trim()) {
            const s = JSON.parse(line) as StepLog;
            if (s.step <= start) steps.push(s);
          }
        }
      }
      say(`resuming from ${last} (step ${start} of ${totalSteps})`);
    } else {
      say(`no checkpoint in ${c.output_dir}; starting from scratch`);
    }
  }
  await atomicWrite(logPath, steps.map((s) => JSON.stringify(s) + "\n").join(""));
  await atomicWriteJson(join(c.output_dir, "train_config.json"), c);

  const partials = Tensor.empty(gpu, [Math.max(1, Math.ceil(store.total / 4096))], "f32", "norm_partials");
  const clip = Tensor.empty(gpu, [4], "f32", "clip");
  const flat = { p: store.p, g: store.g, m: store.m, v: store.v, total: store.total };
  const t0 = performance.now();
  let tokensSeen = steps.reduce((a, s) => a + s.tokens, 0), tokensThisRun = 0;
  let lastCheckpoint: string | null = null;
  const log = await Deno.open(logPath, { append: true });
  try {
    for (let step = start; step < totalSteps; step++) {
      if (o.stopAfter !== undefined && step - start >= o.stopAfter) break;
      const micro = Array.from({ length: c.grad_accum }, (_, k) => {
        const base = (step * c.grad_accum + k) * c.batch_size;
        const got = Array.from({ length: c.batch_size }, (_, i) => stream.get(base + i));
        return {
          batch: packBatch(got.map((g) => g.sample), model.tokenizer!.tokenToId("<|endoftext|>") ?? 0),
          epoch: got[0].epoch,
        };
      });
      const lossTokens = micro.reduce((a, m) => a + m.batch.lossTokens, 0);
      const scale = lossTokens ? 1 / lossTokens : 0;
      zeroGrads(gpu, flat);
      const lossReads: Promise<ArrayBuffer>[] = [];
      for (let k = 0; k < micro.length; k++) {
        const b = micro[k].batch;
        const ex = stepHooks(gpu, {
          lora,
          hooks,
          dropoutSeed: mix(c.seed, step, k, 3),
          rows: b.batch * b.t,
        });
        const { normed, saved } = model.decoder.forward({
          ids: b.ids,
          batch: b.batch,
          t: b.t,
          save: true,
          extras: ex.forward,
        });
        const lossT = backward(
          model.decoder,
          saved!,
          normed,
          { targets: b.targets, mask: b.mask, scale },
          ex.backward,
          full?.grads ?? null,
        );
        disposeSaved(saved!);
        ex.dispose();
        lossReads.push(gpu.readLater(lossT.raw.buffer, lossT.raw.offset, lossT.byteSize));
        lossT.dispose();
      }
      const lr = learningRate(c.schedule, c.lr, step, totalSteps, warmup);
      adamwStep(
        gpu,
        flat,
        {
          lr,
          beta1: c.adam_beta1,
          beta2: c.adam_beta2,
          eps: c.adam_eps,
          weightDecay: c.weight_decay,
          step: step + 1,
          maxGradNorm: c.max_grad_norm,
        },
        partials,
        clip,
      );
      const clipRead = gpu.readLater(clip.raw.buffer, clip.raw.offset, 8);
      await gpu.submit();
      gpu.trimPool(); // activations of sequence lengths this step did not reuse
      let lossSum = 0;
      for (const r of lossReads) for (const x of new Float32Array(await r)) lossSum += x;
      const [, norm] = new Float32Array(await clipRead);
      const loss = lossTokens ? lossSum / lossTokens : 0;
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
        throw new Error(
          `step ${step + 1}: loss is ${loss} (gradient norm ${norm}); stopping. ` +
            (lastCheckpoint
              ? `The last finite checkpoint is ${lastCheckpoint}.`
              : "No checkpoint was written yet."),
        );
      }
      const tokens = micro.reduce((a, m) => a + m.batch.ids.length, 0);
      tokensSeen += tokens;
      tokensThisRun += tokens;
      const elapsed = (performance.now() - t0) / 1000;
      const entry: StepLog = {
        step: step + 1,
        epoch: micro[micro.length - 1].epoch + 1,
        loss,
        lr,
        grad_norm: norm,
        loss_tokens: lossTokens,
        tokens,
        tokens_per_s: tokensThisRun / elapsed,
        elapsed_s: elapsed,
      };
      steps.push(entry);
      await log.write(new TextEncoder().encode(JSON.stringify(entry) + "\n"));
      if ((step + 1) % c.log_every === 0 || step + 1 === totalSteps) {
        const done = step + 1 - start, eta = (elapsed / done) * (totalSteps - step - 1);
        say(
          `step ${step + 1}/${totalSteps}  loss ${loss.toFixed(4)}  lr ${lr.toExponential(2)}  ` +
            `${entry.tokens_per_s.toFixed(0)} tok/s  ETA ${eta.toFixed(0)} s`,
        );
      }
      if ((step + 1) % c.checkpoint_every === 0 || step + 1 === totalSteps) {
        const state: TrainState = {
          step: step + 1,
          total_steps: totalSteps,
          tokens_seen: tokensSeen,
          config_hash: hash,
        };
        lastCheckpoint = await saveCheckpoint(c.output_dir, store, state, saveWeights, c.keep_checkpoints);
      }
    }
  } finally {
    log.close();
    partials.dispose();
    clip.dispose();
  }
  if (steps.length && steps[steps.length - 1].step === totalSteps) {
    await saveWeights(join(c.output_dir, c.mode === "lora" ? "adapter" : "model"));
  }
  if (stream.truncated) {
    say(`note: ${stream.truncated} sample(s) were truncated to max_length ${c.max_length}`);
  }
  return { steps, outputDir: c.output_dir, model, store, lora };
}

/**
 * An earlier run is never overwritten: a non-empty output_dir is continued (resume), moved aside
 * (overwrite), or an error naming both ways.
 */
async function claimOutputDir(dir: string, o: TrainOptions, say: (s: string) => void): Promise<void> {
  let entries = 0;
  try {
    for await (const _ of Deno.readDir(dir)) entries++;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (entries && !o.resume) {
    if (!o.overwrite) {
      throw new Error(
        `${dir}: output_dir is not empty (an earlier run?); pass --resume to continue it or --overwrite to move it aside and start clean`,
      );
    }
    const aside = `${dir.replace(/\/+$/, "")}.old-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    await Deno.rename(dir, aside);
    say(`moved the earlier run in ${dir} to ${aside}`);
  }
  await Deno.mkdir(dir, { recursive: true });
}
