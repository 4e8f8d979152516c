// HF config.json → the decoder's configuration. Qwen2 and Llama share one decoder; the
// differences (qkv bias, tied embeddings, defaults) are flags. Errors name the file and field.

export const SUPPORTED_ARCHITECTURES = ["Qwen2ForCausalLM", "LlamaForCausalLM"] as const;
export type Architecture = typeof SUPPORTED_ARCHITECTURES[number];

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Record<string, unknown> | null;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** `torch_dtype` (transformers <= 4) or `dtype` (5), as written; null when absent */
  torchDtype: string | null;
}

export function parseConfig(raw: Record<string, unknown>, path = "config.json"): ModelConfig {
  const archs = raw.architectures;
  if (!Array.isArray(archs) || typeof archs[0] !== "string") {
    throw new Error(
      `${path}: field 'architectures' must be a list naming the model class (e.g. ["Qwen2ForCausalLM"])`,
    );
  }
  const arch = archs[0] as string;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new Error(
      `${path}: architecture '${arch}' is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`,
    );
  }
  const int = (key: string, dflt?: number): number => {
    const v = raw[key] ?? dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw new Error(
        `${path}: field '${key}' must be a positive integer, found ${JSON.stringify(raw[key])}`,
      );
    }
    return v;
  };
  const num = (key: string, dflt: number): number => {
    const v = raw[key] ?? dflt;
    if (typeof v !== "number" || !(v > 0)) {
      throw new Error(`${path}: field '${key}' must be a positive number, found ${JSON.stringify(raw[key])}`);
    }
    return v;
  };
  const act = raw.hidden_act ?? "silu";
  if (act !== "silu") {
    throw new Error(`${path}: field 'hidden_act' is '${act}'; only 'silu' (SwiGLU) is supported`);
  }
  if (raw.mlp_bias === true) throw new Error(`${path}: field 'mlp_bias' true is not supported`);
  // partial rotary embeddings (RoPE on part of each head, as Phi and StableLM do): not implemented
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    throw new Error(
      `${path}: field 'partial_rotary_factor' is ${
        JSON.stringify(raw.partial_rotary_factor)
      }; only 1 (RoPE on the whole head) is supported`,
    );
  }
  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new Error(
      `${path}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim) || headDim % 2) {
    throw new Error(
      `${path}: head dimension ${headDim} must be an even integer (hidden_size / num_attention_heads)`,
    );
  }
  const isQwen = arch === "Qwen2ForCausalLM";
  const eos = raw.eos_token_id;
  const isId = (x: unknown) => typeof x === "number" && Number.isInteger(x) && x >= 0;
  if (eos != null && !(isId(eos) || (Array.isArray(eos) && eos.every(isId)))) {
    throw new Error(
      `${path}: field 'eos_token_id' must be a token id or a list of them, found ${JSON.stringify(eos)}`,
    );
  }
  const eosTokenIds = Array.isArray(eos) ? eos as number[] : isId(eos) ? [eos as number] : [];
  const { theta: ropeTheta, scaling } = ropeOf(raw, path);
  if (isQwen && raw.use_sliding_window === true) {
    throw new Error(`${path}: use_sliding_window true is not supported (Qwen2.5 ships it false)`);
  }
  return {
    architecture: arch as Architecture,
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int("vocab_size"),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling: scaling,
    maxPositions: int("max_position_embeddings", 4096),
    // Both Qwen2Config and LlamaConfig default to untied embeddings.
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    qkvBias: isQwen ? true : raw.attention_bias === true,
    bosTokenId: typeof raw.bos_token_id === "number" ? raw.bos_token_id : null,
    eosTokenIds,
    torchDtype: typeof (raw.dtype ?? raw.torch_dtype) === "string"
      ? String(raw.dtype ?? raw.torch_dtype)
      : null,
  };
}

/**
 * RoPE base and scaling from either config layout: transformers <= 4 writes top-level `rope_theta` and
 * `rope_scaling`; transformers 5 moves both into `rope_parameters` ({rope_type, rope_theta, factor, …}). A
 * key that is present is never ignored: where both layouts give a value they must agree.
 */
export function ropeOf(
  raw: Record<string, unknown>,
  path: string,
): { theta: number; scaling: Record<string, unknown> | null } {
  const params = raw.rope_parameters;
  if (params != null && (typeof params !== "object" || Array.isArray(params))) {
    throw new Error(`${path}: field 'rope_parameters' must be an object`);
  }
  const p = (params ?? {}) as Record<string, unknown>;
  const top = raw.rope_theta, nested = p.rope_theta;
  for (const [k, v] of [["rope_theta", top], ["rope_parameters.rope_theta", nested]] as const) {
    if (v !== undefined && v !== null && !(typeof v === "number" && v > 0)) {
      throw new Error(`${path}: field '${k}' must be a positive number, found ${JSON.stringify(v)}`);
    }
  }
  if (typeof top === "number" && typeof nested === "number" && top !== nested) {
    throw new Error(`${path}: 'rope_theta' (${top}) and 'rope_parameters.rope_theta' (${nested}) disagree`);
  }
  const theta = (typeof nested === "number" ? nested : typeof top === "number" ? top : 10000) as number;
  const scaling = raw.rope_scaling;
  if (scaling != null && (typeof scaling !== "object" || Array.isArray(scaling))) {
    throw new Error(`${path}: field 'rope_scaling' must be an object or null`);
  }
  const type = p.rope_type ?? p.type;
  let fromParams: Record<string, unknown> | null = null;
  if (type !== undefined && type !== "default") {
    const { rope_theta: _theta, ...rest } = p;
    fromParams = rest;
  } else if (params && Object.keys(p).some((k) => !["rope_type", "type", "rope_theta"].includes(k))) {
    throw new Error(
      `${path}: 'rope_parameters' has scaling fields (${Object.keys(p).join(", ")}) but rope_type ${
        JSON.stringify(type ?? null)
      }`,
    );
  }
  if (
    fromParams && scaling != null &&
    JSON.stringify(sortKeys(fromParams)) !== JSON.stringify(sortKeys(scaling as Record<string, unknown>))
  ) {
    throw new Error(`${path}: 'rope_scaling' and 'rope_parameters' describe different RoPE scalings`);
  }
  return { theta, scaling: (fromParams ?? scaling ?? null) as Record<string, unknown> | null };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The HF tensor names of a decoder, with the shapes the config implies. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const d = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  m.set("model.embed_tokens.weight", [c.vocabSize, d]);
  m.set("model.norm.weight", [d]);
  if (!c.tieWordEmbeddings) m.set("lm_head.weight", [c.vocabSize, d]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(p + "input_layernorm.weight", [d]);
    m.set(p + "post_attention_layernorm.weight", [d]);
    m.set(p + "self_attn.q_proj.weight", [q, d]);
    m.set(p + "self_attn.k_proj.weight", [kv, d]);
    m.set(p + "self_attn.v_proj.weight", [kv, d]);
    m.set(p + "self_attn.o_proj.weight", [d, q]);
    if (c.qkvBias) {
      m.set(p + "self_attn.q_proj.bias", [q]);
      m.set(p + "self_attn.k_proj.bias", [kv]);
      m.set(p + "self_attn.v_proj.bias", [kv]);
    }
    m.set(p + "mlp.gate_proj.weight", [I, d]);
    m.set(p + "mlp.up_proj.weight", [I, d]);
    m.set(p + "mlp.down_proj.weight", [d, I]);
  }
  return m;
}
