// Tokenizer (tokenizer.json via @huggingface/tokenizers) and chat template (tokenizer_config.json's
// `chat_template` via @huggingface/jinja), loaded from a model directory.

import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Environment, Interpreter, Template } from "@huggingface/jinja";
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
    /** ids it can produce (regular vocabulary and added tokens): the largest + 1 */
    readonly idCount: number,
    /** the longest token's text in UTF-16 units (a bound on how much text one token covers) */
    readonly maxTokenChars: number,
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
    let maxId = -1, maxChars = 1;
    const vocab = (tj.model as { vocab?: unknown } | undefined)?.vocab;
    const entries: [string, unknown][] = Array.isArray(vocab)
      ? vocab.map((v, i) => [String(Array.isArray(v) ? v[0] : v), i]) // unigram: [piece, score] by id
      : Object.entries((vocab ?? {}) as Record<string, unknown>);
    for (const [piece, id] of entries) {
      if (typeof id === "number") maxId = Math.max(maxId, id);
      maxChars = Math.max(maxChars, piece.length);
    }
    for (const t of (tj.added_tokens ?? []) as { id?: unknown; content?: unknown }[]) {
      if (typeof t.id === "number") maxId = Math.max(maxId, t.id);
      if (typeof t.content === "string") maxChars = Math.max(maxChars, t.content.length);
    }
    return new TextTokenizer(dir, tok, cfg, [...stop], bos, maxId + 1, maxChars);
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
    const where = join(this.dir, "tokenizer_config.json");
    // Template.render's environment, except that range() is bounded (the built-in one would build a
    // 1e8-element array, running the process out of memory after a minute with a V8 trace)
    const env = new Environment();
    const globals: Record<string, unknown> = {
      false: false,
      true: true,
      none: null,
      False: false,
      True: true,
      None: null,
      raise_exception: (msg: unknown) => {
        throw new Error(`${where}: chat_template raised: ${String(msg)}`);
      },
      range: boundedRange(where),
      strftime_now: strftimeNow,
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenText(this.config.bos_token),
      eos_token: tokenText(this.config.eos_token),
      ...extra,
    };
    for (const [k, v] of Object.entries(globals)) env.set(k, v);
    const out = String(new BudgetedInterpreter(env, where).run(this.template.parsed).value);
    if (out.length > MAX_RENDERED_CHARS) {
      throw new Error(
        `${
          join(this.dir, "tokenizer_config.json")
        }: chat_template rendered ${out.length} characters for one conversation (limit ${MAX_RENDERED_CHARS})`,
      );
    }
    return out;
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

/**
 * The interpreter with a budget: a chat template renders one conversation in thousands of evaluation
 * steps; past MAX_STEPS, or MAX_RENDER_MS of wall time, it is a broken (or hostile) template and an error
 * naming the file, not a hang.
 */
class BudgetedInterpreter extends Interpreter {
  private steps = 0;
  private readonly started = performance.now();
  constructor(env: Environment, private where: string) {
    super(env);
  }
  override evaluate(...args: Parameters<Interpreter["evaluate"]>): ReturnType<Interpreter["evaluate"]> {
    if (++this.steps % 4096 === 0) {
      const ms = performance.now() - this.started;
      if (this.steps > MAX_STEPS || ms > MAX_RENDER_MS) {
        throw new Error(
          `${this.where}: chat_template took over ${this.steps} steps / ${
            Math.round(ms)
          } ms for one conversation (limits ${MAX_STEPS} / ${MAX_RENDER_MS} ms)`,
        );
      }
    }
    return super.evaluate(...args);
  }
}
const MAX_STEPS = 20_000_000;
const MAX_RENDER_MS = 10_000;

/** A chat template's output for one conversation beyond this is a broken template, not a chat. */
const MAX_RENDERED_CHARS = 4_000_000;
const MAX_RANGE = 100_000;

/** Jinja's range(), refusing to build more than MAX_RANGE numbers (a template loop over 1e8 would run the
 * process out of memory after a minute, with a V8 trace instead of a line). */
function boundedRange(where: string) {
  return (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new Error(`${where}: chat_template: range() step must not be zero`);
    const n = Math.max(0, Math.ceil((stop - start) / step));
    if (!Number.isFinite(n) || n > MAX_RANGE) {
      throw new Error(`${where}: chat_template asks for range() of ${n} numbers (limit ${MAX_RANGE})`);
    }
    return Array.from({ length: n }, (_, i) => start + i * step);
  };
}

/** Jinja's strftime_now for chat templates (Llama 3 writes the date): %Y %m %d %b %B %H %M %%. */
function strftimeNow(format: string): string {
  const d = new Date(), pad = (n: number) => String(n).padStart(2, "0");
  const month = (style: "long" | "short") => new Intl.DateTimeFormat(undefined, { month: style }).format(d);
  return String(format).replace(/%[YmdbBHM%]/g, (t) =>
    ({
      "%Y": String(d.getFullYear()),
      "%m": pad(d.getMonth() + 1),
      "%d": pad(d.getDate()),
      "%b": month("short"),
      "%B": month("long"),
      "%H": pad(d.getHours()),
      "%M": pad(d.getMinutes()),
      "%%": "%",
    })[t] ?? t);
}
