// The world's tokenizer: one token per word (a WordPiece model whose vocabulary is the world's words,
// so no word is ever split), Qwen's chat markers as special tokens, and a ChatML chat template — the
// world model goes through exactly the code path of a real Qwen checkpoint.

import { join } from "node:path";
import { atomicWriteJson } from "../lib/fsutil.ts";

export const SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"];

export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export async function writeTokenizer(dir: string, words: string[]): Promise<number> {
  const vocab: Record<string, number> = {};
  [...SPECIAL, ...words].forEach((w, i) => (vocab[w] = i));
  const added = SPECIAL.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  await atomicWriteJson(join(dir, "tokenizer.json"), {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab,
    },
  });
  await atomicWriteJson(join(dir, "tokenizer_config.json"), {
    tokenizer_class: "PreTrainedTokenizerFast",
    chat_template: CHAT_TEMPLATE,
    bos_token: null,
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    unk_token: "[UNK]",
    model_max_length: 256,
  });
  return Object.keys(vocab).length;
}
