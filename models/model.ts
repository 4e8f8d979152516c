// A loaded model: config, GPU weights, the decoder and (when present) the tokenizer.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import { TextTokenizer } from "../lib/text/tokenizer.ts";
import type { ModelConfig } from "./config.ts";
import { Decoder } from "./decoder.ts";
import { Checkpoint, loadConfig, type LoadOptions, loadWeights } from "./loader.ts";

export interface Model {
  dir: string;
  cfg: ModelConfig;
  decoder: Decoder;
  tokenizer: TextTokenizer | null;
  /** free the GPU weights (the decoder cannot be used afterwards); at 7B, 15 GB */
  dispose(): void;
}

export async function loadModel(
  gpu: Gpu,
  dir: string,
  opts: LoadOptions & { tokenizer?: boolean } = {},
): Promise<Model> {
  const load = async (): Promise<Model> => {
    const cfg = await loadConfig(dir);
    const ck = await Checkpoint.open(dir);
    try {
      const weights = await loadWeights(gpu, ck, cfg, opts);
      const tokenizer = opts.tokenizer === false ? null : await TextTokenizer.load(dir, cfg.eosTokenIds);
      if (tokenizer && tokenizer.idCount > cfg.vocabSize) {
        throw new Error(
          `${join(dir, "tokenizer.json")}: the tokenizer produces ids up to ${
            tokenizer.idCount - 1
          }, beyond the model's vocab_size ${cfg.vocabSize} (config.json): it is not this model's tokenizer`,
        );
      }
      const m: Model = {
        dir,
        cfg,
        decoder: new Decoder(gpu, cfg, weights),
        tokenizer,
        dispose: () => disposeModel(m),
      };
      return m;
    } finally {
      ck.close();
    }
  };
  return await (gpu.profiler ? gpu.profiler.phase("loadMs", load) : load());
}

/** Free a model's GPU weights (its decoder cannot be used afterwards). */
export function disposeModel(m: Model): void {
  const w = m.decoder.w;
  const all = new Set([w.embed, w.lmHead, w.finalNorm]);
  for (const l of w.layers) {
    for (const t of [l.inputNorm, l.postNorm, l.qkv, l.qkvBias, l.o, l.gateUp, l.down]) if (t) all.add(t);
  }
  for (const t of all) t.dispose();
}
