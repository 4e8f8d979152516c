// The README's main job until the built-in model organism lands: convert the real pretrained
// stories260K checkpoint from ../shared and generate greedily from it.

import { join } from "node:path";
import { convertLlama2c } from "../models/llama2c.ts";
import { loadModel } from "../models/model.ts";
import { generate } from "../models/generate.ts";
import { startGpu } from "./common.ts";

export async function mainJob(a: Record<string, string | boolean | undefined>): Promise<void> {
  const shared = (a.shared as string) ?? new URL("../../shared", import.meta.url).pathname;
  const out = (a.out as string) ?? "runs/stories260K";
  const src = join(shared, "models", "stories260K");
  console.error(`[1/2] converting ${src} → ${out}`);
  await convertLlama2c(join(src, "stories260K.bin"), join(src, "tok512.bin"), out, { reuse: true });
  const gpu = await startGpu();
  console.error(`[2/2] generating on ${gpu.caps.description}`);
  const model = await loadModel(gpu, out);
  const t0 = performance.now();
  const res = await generate(model.decoder, [[1]], { maxNewTokens: 256, stopIds: model.tokenizer!.stopIds });
  const secs = (performance.now() - t0) / 1000;
  console.log(model.tokenizer!.decode(res.tokens[0]));
  console.error(`${res.tokens[0].length} tokens in ${secs.toFixed(2)} s; model folder: ${out}`);
}
