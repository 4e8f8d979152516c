// Tokenizer (tokenizer.json via @huggingface/tokenizers) and chat template (tokenizer_config.json's
// `chat_template` via @huggingface/jinja), loaded from a model directory.

import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { exists, readJson } from "../fsutil.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | string;
  content: string;
}

export class TextTokenizer {
  private template: Template | null = null;

  private constructor(
    readonly dir: string,
    private tok: Tokenizer,
    readonly config: Record<string, unknown>,
    /** token ids that end generation */
    readonly stopIds: number[],
    readonly bosId: number | null,
  ) {
    const t = config.chat_template;
    const src = typeof t === "string"
      ? t
      : Array.isArray(t)
      ? (t.find((x) => x?.name === "default")?.template ?? null)
      : null;
    if (src) {
      try {
        this.template = new Template(src);
      } catch (e) {
        throw new Error(
          `${join(dir, "tokenizer_config.json")}: chat_template does not parse: ${(e as Error).message}`,
        );
      }
    }
  }

  static async load(dir: string, modelEosIds: number[] = []): Promise<TextTokenizer> {
    const tjPath = join(dir, "tokenizer.json");
    if (!(await exists(tjPath))) {
      throw new Error(`${dir}: tokenizer.json is missing (the model directory needs the HF tokenizer files)`);
    }
    const tj = await readJson(tjPath, "tokenizer");
    const cfgPath = join(dir, "tokenizer_config.json");
    const cfg = (await exists(cfgPath)) ? await readJson(cfgPath, "tokenizer config") : {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tj, cfg);
    } catch (e) {
      throw new Error(`${tjPath}: tokenizer cannot be built: ${(e as Error).message}`);
    }
    const stop = new Set<number>(modelEosIds);
    const genCfgPath = join(dir, "generation_config.json");
    if (await exists(genCfgPath)) {
      const g = await readJson(genCfgPath, "generation config");
      const e = g.eos_token_id;
      for (const id of Array.isArray(e) ? e : typeof e === "number" ? [e] : []) stop.add(Number(id));
    }
    const tokenText = (v: unknown) => typeof v === "string" ? v : (v as { content?: string } | null)?.content;
    for (const name of [tokenText(cfg.eos_token), "<|im_end|>", "<|endoftext|>", "<|eot_id|>"]) {
      const id = name ? tok.token_to_id(name) : undefined;
      if (id !== undefined) stop.add(id);
    }
    const bosName = tokenText(cfg.bos_token);
    const bos = bosName ? tok.token_to_id(bosName) ?? null : null;
    return new TextTokenizer(dir, tok, cfg, [...stop], bos);
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Encode text; special tokens written in the text (e.g. <|im_start|>) map to their ids. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecial = true): string {
    if (!ids.length) return "";
    return this.tok.decode(ids, { skip_special_tokens: skipSpecial });
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** Render a conversation with the model's own chat template. */
  renderChat(
    messages: ChatMessage[],
    addGenerationPrompt: boolean,
    extra: Record<string, unknown> = {},
  ): string {
    if (!this.template) {
      throw new Error(
        `${join(this.dir, "tokenizer_config.json")}: no chat_template, so --chat cannot be used`,
      );
    }
    const tokenText = (v: unknown) =>
      typeof v === "string" ? v : (v as { content?: string } | null)?.content ?? "";
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenText(this.config.bos_token),
      eos_token: tokenText(this.config.eos_token),
      ...extra,
    });
  }

  /** Token ids of a rendered chat; the template writes any BOS itself, so no specials are added. */
  encodeChat(
    messages: ChatMessage[],
    addGenerationPrompt: boolean,
    extra: Record<string, unknown> = {},
  ): number[] {
    return this.encode(this.renderChat(messages, addGenerationPrompt, extra), false);
  }
}
