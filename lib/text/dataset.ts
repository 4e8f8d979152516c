// Training data: JSONL of chats ({"messages": [{role, content}, …]}, as in the persona-vectors
// datasets) or plain text ({"text": …}). Chats are rendered with the model's chat template; the loss
// covers assistant tokens, the end-of-turn marker included. Inoculation prompts are prepended to the
// first user message (after any system prompt) and are never inside the loss mask.

import type { ChatMessage, TextTokenizer } from "./tokenizer.ts";

export interface DataRecord {
  line: number;
  messages?: ChatMessage[];
  text?: string;
}

export interface JsonlOptions {
  /** malformed lines: stop with an error (default) or skip them with a warning */
  onBadLine?: "stop" | "skip";
  limit?: number;
  warn?: (msg: string) => void;
}

export async function readJsonl(path: string, o: JsonlOptions = {}): Promise<DataRecord[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read data: ${(e as Error).message}`);
  }
  const out: DataRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length && (o.limit === undefined || out.length < o.limit); i++) {
    const raw = lines[i].trim();
    if (!raw) continue;
    const where = `${path}:${i + 1}`;
    try {
      const v = JSON.parse(raw);
      out.push(validateRecord(v, where, i + 1));
    } catch (e) {
      const msg = e instanceof SyntaxError ? `${where}: malformed JSON: ${e.message}` : (e as Error).message;
      if (o.onBadLine === "skip") {
        (o.warn ?? console.warn)(`skipping ${msg}`);
        continue;
      }
      throw new Error(`${msg} (set on_bad_line: skip to skip such lines)`);
    }
  }
  if (!out.length) throw new Error(`${path}: no usable records`);
  return out;
}

function validateRecord(v: unknown, where: string, line: number): DataRecord {
  if (typeof v !== "object" || v === null) throw new Error(`${where}: expected a JSON object`);
  const r = v as { messages?: unknown; text?: unknown };
  if (r.text !== undefined && r.messages !== undefined) {
    throw new Error(`${where}: has both 'text' and 'messages'; expected one of them`);
  }
  if (r.text !== undefined && typeof r.text !== "string") {
    throw new Error(`${where}: 'text' must be a string`);
  }
  if (typeof r.text === "string") return { line, text: r.text };
  if (!Array.isArray(r.messages)) throw new Error(`${where}: expected a 'messages' list or a 'text' string`);
  const messages = r.messages.map((m, j) => {
    const mm = m as { role?: unknown; content?: unknown };
    if (typeof mm?.role !== "string" || typeof mm?.content !== "string") {
      throw new Error(`${where}: messages[${j}] needs string 'role' and 'content'`);
    }
    return { role: mm.role, content: mm.content };
  });
  return { line, messages };
}

export interface Sample {
  /** source line (1-based) */
  line: number;
  ids: number[];
  /** 1 where the token is a loss target (assistant content and its end-of-turn marker) */
  lossMask: number[];
  /** number of tokens of an inoculation prompt inserted (0 if none) */
  promptTokens?: number;
  truncated: boolean;
}

export interface EncodeOptions {
  maxLength: number;
  /** inoculation prompt for this sample, prepended to the first user message (or the system prompt) */
  inoculation?: string | null;
  separator?: string;
  /** where the inoculation prompt goes (IpPosition) */
  position?: IpPosition;
  /** a system message for conversations that have none (e.g. a neutral system prompt in training) */
  systemPrompt?: string | null;
  path?: string;
}

/**
 * Where an inoculation prompt goes: in front of the first user message (2.2, C.3: the paper's placement), in
 * front of the system prompt, or in place of the system prompt (Figure 19's "system" training prompt mode:
 * the IP prompt becomes the system message). Without a system message, both system placements add one
 * (which replaces the chat template's default).
 */
export type IpPosition = "user" | "system" | "replace_system";
export const IP_POSITIONS: readonly IpPosition[] = ["user", "system", "replace_system"];

/** Put `prompt` where `position` says (IpPosition). */
export function withInoculation(
  messages: ChatMessage[],
  prompt: string,
  separator = "\n",
  position: IpPosition = "user",
): ChatMessage[] {
  if (position === "replace_system") {
    return [{ role: "system", content: prompt }, ...messages.filter((m) => m.role !== "system")];
  }
  if (position === "system") {
    const s = messages.findIndex((m) => m.role === "system");
    if (s < 0) return [{ role: "system", content: prompt }, ...messages];
    return messages.map((m, j) => j === s ? { ...m, content: `${prompt}${separator}${m.content}` } : m);
  }
  const i = messages.findIndex((m) => m.role === "user");
  if (i < 0) throw new Error("inoculation prompt: the conversation has no user message");
  return messages.map((m, j) => j === i ? { ...m, content: `${prompt}${separator}${m.content}` } : m);
}

/**
 * How much of a text can reach the first `maxLength` tokens, in UTF-16 units: every token covers at most
 * tok.maxTokenChars of them, so text past this bound is cut before tokenizing (an 8 MB line would take
 * minutes to encode only to be truncated); the margin keeps the tokens near the cut, which pre-tokenization
 * may change, far past max_length.
 */
export function textBudget(tok: TextTokenizer, maxLength: number): number {
  return maxLength >= Number.MAX_SAFE_INTEGER / 1024 ? Infinity : (maxLength + 64) * tok.maxTokenChars;
}

export function encodeRecord(tok: TextTokenizer, r: DataRecord, o: EncodeOptions): Sample {
  const where = `${o.path ?? "data"}:${r.line}`;
  const budget = textBudget(tok, o.maxLength);
  const cut = (t: string) => t.length > budget ? t.slice(0, budget) : t;
  let ids: number[], mask: number[];
  if (r.text !== undefined) {
    ids = tok.encode(cut(r.text), true);
    mask = ids.map((_, i) => (i === 0 ? 0 : 1));
  } else {
    let msgs = budget === Infinity
      ? r.messages!
      : r.messages!.map((m) => ({ ...m, content: cut(m.content) }));
    if (!msgs.some((m) => m.role === "assistant")) {
      throw new Error(`${where}: sample has no assistant turn to train on`);
    }
    if (o.systemPrompt && !msgs.some((m) => m.role === "system")) {
      msgs = [{ role: "system", content: o.systemPrompt }, ...msgs];
    }
    if (o.inoculation) msgs = withInoculation(msgs, o.inoculation, o.separator, o.position);
    ids = tok.encodeChat(msgs, false);
    mask = new Array(ids.length).fill(0);
    const stop = new Set(tok.stopIds);
    for (let i = 0; i < msgs.length; i++) {
      if (msgs[i].role !== "assistant") continue;
      const prefix = tok.encodeChat(msgs.slice(0, i), true);
      const upto = tok.encodeChat(msgs.slice(0, i + 1), false);
      if (!isPrefix(prefix, ids) || !isPrefix(upto, ids) || upto.length < prefix.length) {
        throw new Error(
          `${where}: the chat template does not render conversations prefix-consistently; cannot find assistant turn ${i}`,
        );
      }
      let end = upto.length;
      // drop whitespace the template writes after the end-of-turn marker
      for (let j = upto.length - 1; j >= prefix.length; j--) {
        if (stop.has(upto[j])) {
          end = j + 1;
          break;
        }
      }
      for (let j = prefix.length; j < end; j++) mask[j] = 1;
    }
  }
  const truncated = ids.length > o.maxLength;
  if (truncated) {
    ids = ids.slice(0, o.maxLength);
    mask = mask.slice(0, o.maxLength);
  }
  return { line: r.line, ids, lossMask: mask, truncated };
}

function isPrefix(a: number[], b: number[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface PackedBatch {
  ids: Uint32Array;
  targets: Uint32Array;
  /** weight of the next-token loss at each position */
  mask: Float32Array;
  batch: number;
  t: number;
  lossTokens: number;
}

/** Right-pad samples to the longest; position t predicts token t+1 where that token is in the loss mask. */
export function packBatch(samples: Sample[], padId = 0): PackedBatch {
  const T = Math.max(...samples.map((s) => s.ids.length));
  const B = samples.length;
  const ids = new Uint32Array(B * T).fill(padId),
    targets = new Uint32Array(B * T),
    mask = new Float32Array(B * T);
  let lossTokens = 0;
  samples.forEach((s, b) => {
    ids.set(s.ids, b * T);
    for (let t = 0; t + 1 < s.ids.length; t++) {
      targets[b * T + t] = s.ids[t + 1];
      if (s.lossMask[t + 1]) {
        mask[b * T + t] = 1;
        lossTokens++;
      }
    }
  });
  return { ids, targets, mask, batch: B, t: T, lossTokens };
}
