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
import { packBatch, readJsonl } from "../lib/text/dataset.ts";
import { hashInts } from "../lib/rng.ts";
import { adamwStep, normPartials, zeroGrads } from "../lib/ops/optim.ts";
import { type Hooks, signForceHook, steerHook } from "../defence/hooks.ts";
import type { TrainConfig } from "./config.ts";
import { LoraSet } from "../models/lora.ts";
import { FullParams } from "./full.ts";
import { backward } from "./backward.ts";
import { stepHooks } from "./step_hooks.ts";
import { checkRecords, SampleStream } from "./samples.ts";
import { checkpointSteps, learningRate, warmupSteps } from "./schedule.ts";
import { loadCheckpoint, saveCheckpoint, type TrainState } from "./checkpoint.ts";
import { claimOutputDir, readStepLog, resumePoint, runState } from "./run_folder.ts";
import type { ParamStore } from "../lib/params.ts";

export interface StepLog {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  grad_norm: number;
  loss_tokens: number;
  tokens: number;
  /** this step's own wall time (batching, recording, GPU, readback; not checkpoints) and tokens / step_s */
  step_s: number;
  tokens_per_s: number;
  /** since this process started the run (checkpoints included) */
  elapsed_s: number;
  /** false for the first step of a process: it carries the pipeline compiles and first-touch costs */
  warm: boolean;
}

/** A run's speed: its cold first step and the steady state (median of the warm steps) apart. */
export interface StepSpeed {
  first_step_s: number | null;
  steady_step_s: number | null;
  steady_tokens_per_s: number | null;
  warm_steps: number;
}

export function stepSpeed(steps: StepLog[]): StepSpeed {
  const cold = steps.find((s) => s.warm === false);
  const warm = steps.filter((s) => s.warm && typeof s.step_s === "number");
  const med = (xs: number[]) => {
    const v = [...xs].sort((a, b) => a - b);
    return v.length
      ? (v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2)
      : null;
  };
  return {
    first_step_s: cold?.step_s ?? null,
    steady_step_s: med(warm.map((s) => s.step_s)),
    steady_tokens_per_s: med(warm.map((s) => s.tokens / s.step_s)),
    warm_steps: warm.length,
  };
}

/** One line for people: step 1 and the steady state, or what is known. */
export function describeSpeed(s: StepSpeed): string {
  const first = s.first_step_s === null
    ? ""
    : `step 1 ${s.first_step_s.toFixed(2)} s (compiles, first touch)`;
  const steady = s.steady_step_s === null
    ? "no warm step to measure a steady state"
    : `steady state ${s.steady_step_s.toFixed(3)} s a step, ${
      s.steady_tokens_per_s!.toFixed(0)
    } tokens/s (median of ${s.warm_steps})`;
  return [first, steady].filter(Boolean).join("; ");
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

async function buildHooks(gpu: Gpu, m: Model, c: TrainConfig): Promise<Hooks> {
  return {
    ...(c.steer ? { steer: [await steerHook(gpu, m.cfg, c.steer, "steer.layers")] } : {}),
    ...(c.sign_force ? { signForce: await signForceHook(gpu, m.cfg, c.sign_force) } : {}),
  };
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
  // bounds against the data: a step that needs more samples than the whole run would only repeat them
  if (c.batch_size > records.length) {
    throw new Error(
      `${c.data}: batch_size ${c.batch_size} is more than the data's ${records.length} sample(s)`,
    );
  }
  if (perStep > Math.max(1, c.epochs) * records.length) {
    throw new Error(
      `${c.data}: one optimizer step takes batch_size × grad_accum = ${perStep} samples, more than the run's ` +
        `epochs × samples = ${Math.ceil(Math.max(1, c.epochs) * records.length)}; lower grad_accum`,
    );
  }
  const totalSteps = c.max_steps ?? Math.max(1, Math.ceil((c.epochs * records.length) / perStep));
  const warmup = warmupSteps(c.warmup, totalSteps);
  const checkpointEvery = checkpointSteps(c.checkpoint_every, totalSteps);

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

  const release = await claimOutputDir(c, o, say);
  try {
    const logPath = join(c.output_dir, "steps.jsonl");
    const state = await runState(c);
    let start = 0;
    const steps: StepLog[] = [];
    if (o.resume) {
      const last = await resumePoint(c, state);
      if (last) {
        start = (await loadCheckpoint(last, store)).step;
        steps.push(...(await readStepLog(logPath, say)).filter((s) => s.step <= start));
        say(`resuming from ${last} (step ${start} of ${totalSteps})`);
      } else {
        say(`no checkpoint in ${c.output_dir}; starting from scratch`);
      }
    }
    await atomicWrite(logPath, steps.map((s) => JSON.stringify(s) + "\n").join(""));
    await atomicWriteJson(join(c.output_dir, "train_config.json"), c);

    const partials = Tensor.empty(gpu, [normPartials(store.total)], "f32", "norm_partials");
    const clip = Tensor.empty(gpu, [4], "f32", "clip");
    const flat = { p: store.p, g: store.g, m: store.m, v: store.v, total: store.total };
    const t0 = performance.now();
    let tokensSeen = steps.reduce((a, s) => a + s.tokens, 0);
    let lastCheckpoint: string | null = null;
    const log = await Deno.open(logPath, { append: true });
    try {
      for (let step = start; step < totalSteps; step++) {
        if (o.stopAfter !== undefined && step - start >= o.stopAfter) break;
        const stepStart = performance.now();
        const micro = Array.from({ length: c.grad_accum }, (_, k) => {
          const base = (step * c.grad_accum + k) * c.batch_size;
          const got = Array.from({ length: c.batch_size }, (_, i) => stream.get(base + i));
          return {
            batch: packBatch(got.map((g) => g.sample), model.tokenizer!.tokenToId("<|endoftext|>") ?? 0),
            epoch: got[0].epoch,
          };
        });
        const lossTokens = micro.reduce((a, m) => a + m.batch.lossTokens, 0);
        if (!lossTokens) { // checkRecords keeps only samples with a target: this would be a bug, never a 0 loss
          throw new Error(`step ${step + 1}: the batch has no token to train on`);
        }
        const scale = lossTokens ? 1 / lossTokens : 0;
        zeroGrads(gpu, flat);
        const lossReads: Promise<ArrayBuffer>[] = [];
        for (let k = 0; k < micro.length; k++) {
          const b = micro[k].batch;
          const ex = stepHooks(gpu, {
            lora,
            hooks,
            dropoutSeed: hashInts(c.seed, step, k, 3),
            rows: b.batch * b.t,
          });
          const { normed, saved } = model.decoder.forward({
            ids: b.ids,
            batch: b.batch,
            t: b.t,
            save: true,
            checkpoint: c.gradient_checkpointing,
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
        const now = performance.now(), stepS = (now - stepStart) / 1000;
        const elapsed = (now - t0) / 1000;
        const entry: StepLog = {
          step: step + 1,
          epoch: micro[micro.length - 1].epoch + 1,
          loss,
          lr,
          grad_norm: norm,
          loss_tokens: lossTokens,
          tokens,
          step_s: stepS,
          tokens_per_s: tokens / stepS,
          elapsed_s: elapsed,
          warm: step > start,
        };
        steps.push(entry);
        await log.write(new TextEncoder().encode(JSON.stringify(entry) + "\n"));
        if ((step + 1) % c.log_every === 0 || step + 1 === totalSteps) {
          // the ETA from the steady state (step 1 carries the compiles)
          const sp = stepSpeed(steps.slice(start));
          const eta = (sp.steady_step_s ?? stepS) * (totalSteps - step - 1);
          say(
            `step ${step + 1}/${totalSteps}  loss ${loss.toFixed(4)}  lr ${lr.toExponential(2)}  ` +
              `${entry.tokens_per_s.toFixed(0)} tok/s  ETA ${eta.toFixed(0)} s`,
          );
        }
        if ((step + 1) % checkpointEvery === 0 || step + 1 === totalSteps) {
          const at: TrainState = {
            step: step + 1,
            total_steps: totalSteps,
            tokens_seen: tokensSeen,
            ...state,
          };
          lastCheckpoint = await saveCheckpoint(c.output_dir, store, at, saveWeights, c.keep_checkpoints);
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
    const ran = steps.slice(start); // this process's steps (a resumed run's earlier ones come first)
    if (ran.length) say(`speed: ${describeSpeed(stepSpeed(ran))}`);
    return { steps, outputDir: c.output_dir, model, store, lora };
  } finally {
    await release();
  }
}
