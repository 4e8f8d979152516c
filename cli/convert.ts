import { convertLlama2c } from "../models/llama2c.ts";
import { UsageError } from "./common.ts";

export async function convertCommand(pos: string[]): Promise<void> {
  if (pos.length !== 3) throw new UsageError("convert-llama2c: expected <model.bin> <tok.bin> <out-dir>");
  const h = await convertLlama2c(pos[0], pos[1], pos[2]);
  console.error(
    `converted: ${h.nLayers} layers, dim ${h.dim}, ${h.nHeads} heads (${h.nKvHeads} kv), vocab ${h.vocabSize} → ${
      pos[2]
    }`,
  );
}
