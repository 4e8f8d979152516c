// A training run's folder: claimed under a lock (two runs never share one), an earlier run moved aside only on
// --overwrite, and a resume that continues only the same run — the same config meaning (named key by key
// when it differs) on the same inputs (content fingerprints, so a moved folder still resumes).

import { join } from "node:path";
import { checkRunFolderApart, danglingLink } from "../lib/fsutil.ts";
import { acquireLock, lockIn } from "../lib/lock.ts";
import { canonicalJson } from "../lib/config.ts";
import { hashInts } from "../lib/rng.ts";
import { pathFingerprint } from "../lib/fingerprint.ts";
import type { TrainConfig } from "./config.ts";
import { listCheckpoints, readState, type TrainState } from "./checkpoint.ts";
import type { StepLog } from "./loop.ts";

export interface TrainOptionsForFolder {
  resume?: boolean;
  overwrite?: boolean;
}

/**
 * Lock output_dir for this process (lib/lock.ts; a dead holder's lock is taken over), then continue a
 * non-empty one (resume), move its contents aside (overwrite), or refuse naming both ways. Returns the
 * lock's release.
 */
export async function claimOutputDir(
  c: TrainConfig,
  o: TrainOptionsForFolder,
  say: (s: string) => void,
): Promise<() => Promise<void>> {
  const dir = c.output_dir;
  const dangling = danglingLink(dir);
  if (dangling) throw new Error(`output_dir: ${dangling}`);
  checkRunFolderApart(dir, "output_dir", inputPaths(c), !!o.overwrite);
  await Deno.mkdir(dir, { recursive: true });
  const release = await acquireLock(lockIn(dir), `the training run in ${dir}`);
  try {
    const entries: string[] = [];
    for await (const e of Deno.readDir(dir)) if (e.name !== "lock") entries.push(e.name);
    if (entries.length && !o.resume) {
      if (!o.overwrite) {
        throw new Error(
          `${dir}: output_dir is not empty (an earlier run?); pass --resume to continue it or --overwrite to move it aside and start clean`,
        );
      }
      // the contents move, not the folder: this run's lock stays where a second run looks for it
      // beside the real folder (a symlinked output_dir's contents live on its target's filesystem)
      const aside = `${Deno.realPathSync(dir).replace(/\/+$/, "")}.old-${
        new Date().toISOString().replace(/[:.]/g, "-")
      }`;
      await Deno.mkdir(aside);
      for (const n of entries) await Deno.rename(join(dir, n), join(aside, n));
      say(`moved the earlier run in ${dir} to ${aside}`);
    }
  } catch (e) {
    await release();
    throw e;
  }
  return release;
}

/** The files and folders a run reads, by config key. */
function inputPaths(c: TrainConfig): { key: string; path: string | null | undefined }[] {
  return [
    { key: "model", path: c.model },
    { key: "data", path: c.data },
    { key: "init_adapter", path: c.init_adapter },
    { key: "steer.vector", path: c.steer?.vector },
    { key: "sign_force.vector", path: c.sign_force?.vector },
  ];
}

/**
 * What decides a run's numbers, paths left out (the inputs are fingerprinted instead, so a moved folder
 * resumes) and settings that change neither the numbers nor the data order (recomputing a layer gives the
 * same activations bit for bit).
 */
export function configMeaning(c: TrainConfig): Record<string, unknown> {
  const {
    output_dir: _o,
    model: _m,
    data: _d,
    init_adapter: _i,
    checkpoint_every: _a,
    keep_checkpoints: _b,
    log_every: _c,
    gradient_checkpointing: _g,
    ...rest
  } = c;
  const strip = (v: { vector: string | null } | null) => v && { ...v, vector: null };
  return JSON.parse(canonicalJson({
    ...rest,
    steer: strip(c.steer),
    sign_force: strip(c.sign_force),
    init_adapter: c.init_adapter !== null,
  }));
}

/** What a checkpoint records of the run besides its step: the config's meaning and its inputs' fingerprints. */
export async function runState(
  c: TrainConfig,
): Promise<Pick<TrainState, "config_hash" | "config" | "inputs">> {
  const config = configMeaning(c);
  const inputs: Record<string, string> = {};
  for (const { key, path } of inputPaths(c)) {
    if (path) inputs[key] = await pathFingerprint(path);
  }
  return {
    config_hash: hashInts(...new TextEncoder().encode(canonicalJson(config))).toString(16),
    config,
    inputs,
  };
}

/** The config hash checkpoints recorded before they recorded the config's meaning (inoculum before
 * 2026-12-02): the config's text less the settings that change nothing, paths included — so a run
 * interrupted under that version still resumes, in its own folder. */
function legacyConfigHash(c: TrainConfig): string {
  const { checkpoint_every: _a, keep_checkpoints: _b, log_every: _c, gradient_checkpointing: _d, ...rest } =
    c;
  return hashInts(...new TextEncoder().encode(canonicalJson(rest))).toString(16);
}

/** The differing keys of two config meanings, as "key: then → now". */
function differences(then: unknown, now: unknown, prefix = ""): string[] {
  if (canonicalJson(then) === canonicalJson(now)) return [];
  const isObj = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
  if (isObj(then) && isObj(now)) {
    const a = then as Record<string, unknown>, b = now as Record<string, unknown>;
    return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
      .flatMap((k) => differences(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return [`${prefix}: ${JSON.stringify(then)} → ${JSON.stringify(now)}`];
}

/**
 * The checkpoint a resume continues from (null when there is none), after checking, before anything is
 * loaded, that it belongs to this run: the same config meaning and the same inputs.
 */
export async function resumePoint(
  c: TrainConfig,
  now: Pick<TrainState, "config_hash" | "config" | "inputs">,
): Promise<string | null> {
  const cks = await listCheckpoints(c.output_dir);
  if (!cks.length) return null;
  const last = cks[cks.length - 1];
  const then = await readState(last);
  if (then.config) {
    const diff = differences(then.config, now.config);
    if (diff.length) {
      throw new Error(
        `${last}: the checkpoint was made with another configuration (${
          diff.join("; ")
        }); refusing to resume — restore those settings, or train into a new output_dir`,
      );
    }
    for (const [key, fp] of Object.entries(then.inputs ?? {})) {
      if (now.inputs?.[key] !== fp) {
        const path = inputPaths(c).find((x) => x.key === key)?.path;
        throw new Error(
          `${last}: ${key} (${path}) is not what this run was trained on (fingerprint then ${fp}, now ${
            now.inputs?.[key] ?? "none"
          }); refusing to resume on other ${key}`,
        );
      }
    }
  } else if (then.config_hash !== legacyConfigHash(c)) {
    throw new Error(
      `${last}: checkpoint was made with a different configuration (written by an older inoculum, which ` +
        `recorded no keys to compare); refusing to resume`,
    );
  }
  return last;
}

/**
 * steps.jsonl's entries. A torn last line (a crash mid-write) is dropped with a note — its step is redone
 * from the checkpoint; a bad line elsewhere is an error naming the file and line.
 */
export async function readStepLog(path: string, say: (s: string) => void): Promise<StepLog[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const lines = text.split("\n");
  const out: StepLog[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try {
      out.push(JSON.parse(lines[i]) as StepLog);
    } catch (e) {
      const last = lines.slice(i + 1).every((l) => !l.trim()) && !text.endsWith("\n");
      if (last) {
        say(`note: ${path}:${i + 1}: dropped a torn last line (a crash while it was written)`);
        break;
      }
      throw new Error(`${path}:${i + 1}: not a JSON step entry (${(e as Error).message})`);
    }
  }
  return out;
}
