// Full-parameter training: every weight becomes an f32 view into one parameter store, and the
// backward pass accumulates into the matching gradient views. For small models (the world model);
// large ones train with LoRA.

import { join } from "node:path";
import type { Gpu } from "../lib/gpu/context.ts";
import type { Tensor } from "../lib/tensor.ts";
import type { ModelConfig } from "../models/config.ts";
import type { ModelWeights } from "../models/loader.ts";
import { writeSafetensors } from "../lib/safetensors.ts";
import { atomicWriteJson } from "../lib/fsutil.ts";
import { ParamStore } from "../lib/params.ts";
import type { BaseGrads } from "./backward.ts";

function weightList(w: ModelWeights, tied: boolean): [string, Tensor][] {
  const out: [string, Tensor][] = [["embed", w.embed]];
  if (!tied) out.push(["lm_head", w.lmHead]);
  out.push(["final_norm", w.finalNorm]);
  w.layers.forEach((lw, l) => {
    out.push([`${l}.input_norm`, lw.inputNorm], [`${l}.post_norm`, lw.postNorm], [`${l}.qkv`, lw.qkv]);
    if (lw.qkvBias) out.push([`${l}.qkv_bias`, lw.qkvBias]);
    out.push([`${l}.o`, lw.o], [`${l}.gate_up`, lw.gateUp], [`${l}.down`, lw.down]);
  });
  return out;
}

export class FullParams {
  private constructor(readonly store: ParamStore, readonly grads: BaseGrads, private cfg: ModelConfig) {}

  /** Move the model's weights into a trainable store (weights must be f32, unsplit). */
  static create(gpu: Gpu, cfg: ModelConfig, w: ModelWeights): FullParams {
    const list = weightList(w, cfg.tieWordEmbeddings);
    for (const [n, t] of list) {
      if (t.dtype !== "f32" || t.chunks.length !== 1) {
        throw new Error(
          `full-parameter training needs unsplit f32 weights; '${n}' is ${t.dtype} in ${t.chunks.length} chunk(s)`,
        );
      }
    }
    const store = new ParamStore(gpu, list.map(([name, t]) => ({ name, shape: t.shape })));
    for (const [n, t] of list) store.copyFrom(n, t);
    // point the model at the trainable copies
    const v = (n: string) => store.get(n).param, g = (n: string) => store.get(n).grad;
    for (const [, t] of list) t.dispose();
    w.embed = v("embed");
    w.lmHead = cfg.tieWordEmbeddings ? w.embed : v("lm_head");
    w.finalNorm = v("final_norm");
    w.layers.forEach((lw, l) => {
      lw.inputNorm = v(`${l}.input_norm`);
      lw.postNorm = v(`${l}.post_norm`);
      lw.qkv = v(`${l}.qkv`);
      if (lw.qkvBias) lw.qkvBias = v(`${l}.qkv_bias`);
      lw.o = v(`${l}.o`);
      lw.gateUp = v(`${l}.gate_up`);
      lw.down = v(`${l}.down`);
    });
    const grads: BaseGrads = {
      embed: g("embed"),
      lmHead: cfg.tieWordEmbeddings ? null : g("lm_head"),
      finalNorm: g("final_norm"),
      layers: w.layers.map((lw, l) => ({
        inputNorm: g(`${l}.input_norm`),
        postNorm: g(`${l}.post_norm`),
        qkv: g(`${l}.qkv`),
        qkvBias: lw.qkvBias ? g(`${l}.qkv_bias`) : null,
        o: g(`${l}.o`),
        gateUp: g(`${l}.gate_up`),
        down: g(`${l}.down`),
      })),
    };
    return new FullParams(store, grads, cfg);
  }

  /** Write an HF model folder's weights (un-fusing q|k|v and gate|up) and config. */
  async save(dir: string, configJson: Record<string, unknown>): Promise<void> {
    const c = this.cfg,
      d = c.hiddenSize,
      q = c.numHeads * c.headDim,
      kv = c.numKvHeads * c.headDim,
      I = c.intermediateSize;
    const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    const put = (
      name: string,
      data: Float32Array,
      shape: number[],
    ) => (out[name] = { dtype: "F32", shape, data });
    const values = await this.store.readParams(); // one readback, not one per tensor
    const get = (n: string) => Promise.resolve(values.get(n)!);
    put("model.embed_tokens.weight", await get("embed"), [c.vocabSize, d]);
    if (!c.tieWordEmbeddings) put("lm_head.weight", await get("lm_head"), [c.vocabSize, d]);
    put("model.norm.weight", await get("final_norm"), [d]);
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}.`;
      put(p + "input_layernorm.weight", await get(`${l}.input_norm`), [d]);
      put(p + "post_attention_layernorm.weight", await get(`${l}.post_norm`), [d]);
      const qkv = await get(`${l}.qkv`);
      put(p + "self_attn.q_proj.weight", qkv.slice(0, q * d), [q, d]);
      put(p + "self_attn.k_proj.weight", qkv.slice(q * d, (q + kv) * d), [kv, d]);
      put(p + "self_attn.v_proj.weight", qkv.slice((q + kv) * d), [kv, d]);
      if (c.qkvBias) {
        const b = await get(`${l}.qkv_bias`);
        put(p + "self_attn.q_proj.bias", b.slice(0, q), [q]);
        put(p + "self_attn.k_proj.bias", b.slice(q, q + kv), [kv]);
        put(p + "self_attn.v_proj.bias", b.slice(q + kv), [kv]);
      }
      put(p + "self_attn.o_proj.weight", await get(`${l}.o`), [d, q]);
      const gu = await get(`${l}.gate_up`);
      put(p + "mlp.gate_proj.weight", gu.slice(0, I * d), [I, d]);
      put(p + "mlp.up_proj.weight", gu.slice(I * d), [I, d]);
      put(p + "mlp.down_proj.weight", await get(`${l}.down`), [d, I]);
    }
    await writeSafetensors(join(dir, "model.safetensors"), out, { format: "pt" });
    await atomicWriteJson(join(dir, "config.json"), { ...configJson, torch_dtype: "float32" });
  }
}
