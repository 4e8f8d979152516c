// Checkpoints: trainable parameters + Adam moments (flat, f32), the step and the data position,
// written into a temporary folder and renamed into place, so a killed run never leaves a half
// checkpoint. Resuming restores everything needed to continue bit for bit.

import { join } from "node:path";
import { atomicWriteJson, exists, readJson } from "../lib/fsutil.ts";
import { SafetensorsFile, toF32, writeSafetensors } from "../lib/safetensors.ts";
import type { ParamStore } from "../lib/params.ts";

export interface TrainState {
  step: number;
  total_steps: number;
  tokens_seen: number;
  config_hash: string;
  /** the config's meaning (train/run_folder.ts configMeaning): named key by key when a resume differs */
  config?: Record<string, unknown>;
  /** fingerprints of what the run reads (model, data, adapter, vectors) by config key */
  inputs?: Record<string, string>;
  /** the parameter store's layout (ParamStore.layoutHash): the flat optimizer state means nothing in another */
  param_layout?: string;
}

export async function saveCheckpoint(
  dir: string,
  store: ParamStore,
  state: TrainState,
  saveWeights: (dir: string) => Promise<void>,
  keep: number,
): Promise<string> {
  const root = join(dir, "checkpoints");
  const name = `step-${String(state.step).padStart(7, "0")}`;
  const tmp = join(root, `.${name}.tmp`);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const { p, m, v } = await store.readAll();
  const shape = [store.total];
  await writeSafetensors(join(tmp, "optimizer.safetensors"), {
    params: { dtype: "F32", shape, data: p },
    adam_m: { dtype: "F32", shape, data: m },
    adam_v: { dtype: "F32", shape, data: v },
  });
  await saveWeights(tmp);
  await atomicWriteJson(join(tmp, "state.json"), { ...state, param_layout: store.layoutHash() });
  const final = join(root, name);
  await Deno.remove(final, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, final);
  // prune old ones
  const all = (await listCheckpoints(dir)).slice(0, -keep);
  for (const old of all) await Deno.remove(old, { recursive: true });
  return final;
}

export async function listCheckpoints(dir: string): Promise<string[]> {
  const root = join(dir, "checkpoints");
  if (!(await exists(root))) return [];
  const out: string[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.isDirectory && /^step-\d+$/.test(e.name)) out.push(join(root, e.name));
  }
  return out.sort();
}

export async function readState(path: string): Promise<TrainState> {
  return await readJson(join(path, "state.json"), "checkpoint state") as unknown as TrainState;
}

export async function loadCheckpoint(path: string, store: ParamStore): Promise<TrainState> {
  const state = await readState(path);
  if (state.param_layout !== store.layoutHash()) {
    throw new Error(
      `${path}: the optimizer state was written for another parameter layout (${
        state.param_layout ?? "none recorded: an older inoculum"
      }, this run's ${store.layoutHash()}); it cannot be resumed here — start the run again or resume with the inoculum that wrote it`,
    );
  }
  const f = await SafetensorsFile.open(join(path, "optimizer.safetensors"));
  try {
    const get = async (n: string) => toF32(await f.read(n), f.info(n).dtype, n);
    store.writeAll({ p: await get("params"), m: await get("adam_m"), v: await get("adam_v") });
  } finally {
    f.close();
  }
  return state;
}
