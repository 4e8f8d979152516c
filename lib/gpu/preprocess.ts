// A small preprocessor for WGSL kernel variants.
//
// Directives (each alone on its line, leading whitespace allowed):
//   #include "name"       inline kernels/name.wgsl (once per source; nested includes allowed)
//   #ifdef NAME           keep the block if NAME is defined (any value)
//   #ifndef NAME          keep the block if NAME is not defined
//   #if NAME == VALUE     keep the block if the define's value equals VALUE (string compare); != too
//   #if EXPR OP EXPR      integer comparison (OP one of == != < <= > >=) of two integer expressions
//   #else / #endif
//   #for I in A..B        repeat the lines up to the matching #endfor for I = A, A+1, ..., B-1 (A and B
//                         integer expressions); I is a define inside the body (nesting allowed)
// Substitution: in kept lines, every whole-word occurrence of a defined NAME is replaced by its
// value, so `const TILE = TILE_M;` or `array<f32, HEAD_DIM>` pick up the variant's numbers, and every
// `${EXPR}` by the value of an integer expression over defines and numbers (+ - * / % and parentheses,
// / rounding down), so that `#for` bodies can name unrolled registers (`acc_${I}_${J}`) and index vector
// components by constants (`a_${I / 4}[${I % 4}]`).
// Loops exist so that kernels can unroll small fixed loops into named registers: a private array indexed
// by a loop variable may live in slow local memory on GPUs (and in memory on CPU adapters).
// By convention define names are UPPER_SNAKE_CASE so they never collide with WGSL identifiers.

export type Defines = Record<string, string | number | boolean>;

export function preprocess(
  source: string,
  defines: Defines,
  loadInclude: (name: string) => string,
  fileName = "<kernel>",
): string {
  const base = new Map<string, string>();
  for (const [k, v] of Object.entries(defines)) {
    if (v === false) continue; // `false` means "not defined", so flags can be passed as booleans
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) {
      throw new Error(`${fileName}: define name '${k}' must be UPPER_SNAKE_CASE`);
    }
    base.set(k, v === true ? "1" : String(v));
  }
  const included = new Set<string>();
  const substCache = new Map<Map<string, string>, RegExp | null>();
  const substOf = (defs: Map<string, string>): RegExp | null => {
    if (!substCache.has(defs)) {
      substCache.set(
        defs,
        defs.size
          ? new RegExp(`\\b(${[...defs.keys()].sort((a, b) => b.length - a.length).join("|")})\\b`, "g")
          : null,
      );
    }
    return substCache.get(defs)!;
  };

  const run = (lines: string[], file: string, firstLine: number, defs: Map<string, string>): string[] => {
    const out: string[] = [];
    const stack: { active: boolean; taken: boolean; parent: boolean; line: number }[] = [];
    const active = () => stack.length === 0 || stack[stack.length - 1].active;
    const subst = substOf(defs);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const t = line.trim();
      const where = `${file}:${firstLine + i}`;
      if (t.startsWith("#")) {
        const m = /^#(\w+)\s*(.*)$/.exec(t);
        if (!m) throw new Error(`${where}: malformed directive '${t}'`);
        const [, dir, rest] = m;
        if (dir === "ifdef" || dir === "ifndef" || dir === "if") {
          const cond = dir === "if"
            ? ifCondition(rest.trim(), defs, where)
            : defs.has(rest.trim()) === (dir === "ifdef");
          const parent = active();
          stack.push({ active: parent && cond, taken: cond, parent, line: firstLine + i });
        } else if (dir === "else") {
          const top = stack[stack.length - 1];
          if (!top) throw new Error(`${where}: #else without #if`);
          top.active = top.parent && !top.taken;
          top.taken = true;
        } else if (dir === "endif") {
          if (!stack.pop()) throw new Error(`${where}: #endif without #if`);
        } else if (dir === "for") {
          const f = /^([A-Z_][A-Z0-9_]*)\s+in\s+(.+?)\s*\.\.\s*(.+)$/.exec(rest.trim());
          if (!f) throw new Error(`${where}: expected '#for NAME in A..B', got '${t}'`);
          // the body: up to the matching #endfor
          let depth = 1, j = i + 1;
          for (; j < lines.length; j++) {
            const d = lines[j].trim();
            if (/^#for\b/.test(d)) depth++;
            else if (/^#endfor\b/.test(d) && --depth === 0) break;
          }
          if (j >= lines.length) throw new Error(`${where}: #for without #endfor`);
          if (active()) {
            const lo = evalInt(f[2], defs, where), hi = evalInt(f[3], defs, where);
            if (hi - lo > 4096) throw new Error(`${where}: #for over ${hi - lo} values (at most 4096)`);
            const body = lines.slice(i + 1, j);
            for (let v = lo; v < hi; v++) {
              const inner = new Map(defs);
              inner.set(f[1], String(v));
              out.push(...run(body, file, firstLine + i + 1, inner));
            }
          }
          i = j;
        } else if (dir === "endfor") {
          throw new Error(`${where}: #endfor without #for`);
        } else if (dir === "include") {
          if (!active()) continue;
          const name = /^"([\w\-/]+)"$/.exec(rest.trim())?.[1];
          if (!name) throw new Error(`${where}: expected #include "name"`);
          if (included.has(name)) continue;
          included.add(name);
          out.push(...run(loadInclude(name).split("\n"), `${name}.wgsl`, 1, defs));
        } else {
          throw new Error(`${where}: unknown directive #${dir}`);
        }
        continue;
      }
      if (!active()) continue;
      let s = line.includes("${")
        ? line.replace(/\$\{([^}]*)\}/g, (_, e) => String(evalInt(e, defs, where)))
        : line;
      if (subst) s = s.replace(subst, (w) => defs.get(w)!);
      out.push(s);
    }
    if (stack.length) throw new Error(`${file}:${stack[stack.length - 1].line}: #if without #endif`);
    return out;
  };
  return run(source.split("\n"), fileName, 1, base).join("\n");
}

function ifCondition(expr: string, defs: Map<string, string>, where: string): boolean {
  const c = /^(.+?)\s*(==|!=|<=|>=|<|>)\s*(.+)$/.exec(expr);
  if (!c) throw new Error(`${where}: expected '#if A OP B' (OP one of == != < <= > >=), got '#if ${expr}'`);
  const [, l, op, r] = c;
  // NAME == VALUE with a non-numeric value (W_DTYPE == bf16): compare the define's text
  if ((op === "==" || op === "!=") && /^[A-Z_][A-Z0-9_]*$/.test(l) && !isIntExpr(r, defs)) {
    return (defs.get(l) === r) === (op === "==");
  }
  const a = evalInt(l, defs, where), b = evalInt(r, defs, where);
  switch (op) {
    case "==":
      return a === b;
    case "!=":
      return a !== b;
    case "<":
      return a < b;
    case "<=":
      return a <= b;
    case ">":
      return a > b;
    default:
      return a >= b;
  }
}

function isIntExpr(e: string, defs: Map<string, string>): boolean {
  try {
    evalInt(e, defs, "");
    return true;
  } catch {
    return false;
  }
}

/** An integer expression: numbers, defines with integer values, + - * / % ( ); / rounds down. */
export function evalInt(expr: string, defs: Map<string, string>, where: string): number {
  const toks = expr.match(/\d+|[A-Z_][A-Z0-9_]*|[-+*/%()]|\S/g) ?? [];
  let p = 0;
  const fail = (why: string): never => {
    throw new Error(`${where}: integer expression '${expr.trim()}': ${why}`);
  };
  const atom = (): number => {
    const t = toks[p++];
    if (t === undefined) return fail("ends early");
    if (t === "(") {
      const v = sum();
      if (toks[p++] !== ")") fail("missing ')'");
      return v;
    }
    if (t === "-") return -atom();
    if (/^\d+$/.test(t)) return Number(t);
    if (/^[A-Z_][A-Z0-9_]*$/.test(t)) {
      const v = defs.get(t);
      if (v === undefined) fail(`'${t}' is not defined`);
      if (!/^-?\d+u?$/.test(v!)) fail(`'${t}' = '${v}' is not an integer`);
      return parseInt(v!, 10);
    }
    return fail(`unexpected '${t}'`);
  };
  const product = (): number => {
    let v = atom();
    while (toks[p] === "*" || toks[p] === "/" || toks[p] === "%") {
      const op = toks[p++], r = atom();
      if (op !== "*" && r === 0) fail("division by zero");
      v = op === "*" ? v * r : op === "/" ? Math.floor(v / r) : v - Math.floor(v / r) * r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (toks[p] === "+" || toks[p] === "-") v = toks[p++] === "+" ? v + product() : v - product();
    return v;
  };
  const v = sum();
  if (p !== toks.length) fail(`unexpected '${toks[p]}'`);
  return v;
}
