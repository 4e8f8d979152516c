// Persona / steering vector files: safetensors with a tensor `vector` of shape [L+1, d] (row 0 the
// embedding output), or a single [d] vector used at every layer. Provenance lives in the metadata.

import { SafetensorsFile, toF32, writeSafetensors } from "../lib/safetensors.ts";
import { Rng } from "../lib/rng.ts";

export async function loadLayerVectors(path: string, layers: number, d: number): Promise<Float32Array> {
  const f = await SafetensorsFile.open(path);
  try {
    const name = f.tensors.has("vector") ? "vector" : f.tensors.size === 1 ? [...f.tensors.keys()][0] : null;
    if (!name) {
      throw new Error(
        `${path}: expected a tensor named 'vector' (found ${[...f.tensors.keys()].join(", ")})`,
      );
    }
    const info = f.info(name);
    const data = toF32(await f.read(name), info.dtype, `${path}: tensor '${name}'`);
    // a NaN or Inf would turn every steered activation into NaN: empty answers, scores of 0 ± 0
    const bad = data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) {
      const row = info.shape.length === 2 ? `row ${Math.floor(bad / info.shape[1])}, ` : "";
      throw new Error(
        `${path}: tensor '${name}' holds ${data[bad]} at ${row}element ${
          info.shape.length === 2 ? bad % info.shape[1] : bad
        }; a persona vector must be finite`,
      );
    }
    if (info.shape.length === 2 && info.shape[0] === layers && info.shape[1] === d) return data;
    if (info.shape.length === 1 && info.shape[0] === d) {
      const out = new Float32Array(layers * d);
      for (let l = 0; l < layers; l++) out.set(data, l * d);
      return out;
    }
    throw new Error(
      `${path}: tensor '${name}' has shape [${info.shape}], but the model needs [${layers}, ${d}] (layers 0..${
        layers - 1
      }, hidden size ${d}) or [${d}]`,
    );
  } finally {
    f.close();
  }
}

export async function saveLayerVectors(
  path: string,
  data: Float32Array,
  layers: number,
  d: number,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeSafetensors(path, { vector: { dtype: "F32", shape: [layers, d], data } }, metadata);
}

/** The random-vector control: a Gaussian vector with each layer's row rescaled to the norm of the reference
 * row (seeded), so that steering with it moves the residual stream as far as the persona vector does. */
export function randomLike(ref: Float32Array, layers: number, d: number, seed: number): Float32Array {
  const rng = new Rng(seed), out = new Float32Array(ref.length);
  for (let l = 0; l < layers; l++) {
    const row = Array.from({ length: d }, () => rng.normal());
    const n = Math.hypot(...row), target = Math.hypot(...ref.subarray(l * d, (l + 1) * d));
    for (let j = 0; j < d; j++) out[l * d + j] = n > 0 ? (row[j] * target) / n : 0;
  }
  return out;
}
