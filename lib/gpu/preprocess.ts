// A small preprocessor for WGSL kernel variants.
//
// Directives (each alone on its line, leading whitespace allowed):
//   #include "name"     inline kernels/name.wgsl (once per source; nested includes allowed)
//   #ifdef NAME         keep the block if NAME is defined (any value)
//   #ifndef NAME        keep the block if NAME is not defined
//   #if NAME == VALUE   keep the block if the define's value equals VALUE (string compare); != too
//   #else / #endif
// Substitution: in kept lines, every whole-word occurrence of a defined NAME is replaced by its
// value, so `const TILE = TILE_M;` or `array<f32, HEAD_DIM>` pick up the variant's numbers.
// By convention define names are UPPER_SNAKE_CASE so they never collide with WGSL identifiers.

export type Defines = Record<string, string | number | boolean>;

export function preprocess(
  source: string,
  defines: Defines,
  loadInclude: (name: string) => string,
  fileName = "<kernel>",
): string {
  const defs = new Map<string, string>();
  for (const [k, v] of Object.entries(defines)) {
    if (v === false) continue; // `false` means "not defined", so flags can be passed as booleans
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) {
      throw new Error(`${fileName}: define name '${k}' must be UPPER_SNAKE_CASE`);
    }
    defs.set(k, v === true ? "1" : String(v));
  }
  const included = new Set<string>();
  const subst = defs.size
    ? new RegExp(`\\b(${[...defs.keys()].sort((a, b) => b.length - a.length).join("|")})\\b`, "g")
    : null;

  const run = (src: string, file: string): string[] => {
    const out: string[] = [];
    // Stack of [thisBranchActive, anyBranchTaken, parentActive]
    const stack: { active: boolean; taken: boolean; parent: boolean; line: number }[] = [];
    const lines = src.split("\n");
    const active = () => stack.length === 0 || stack[stack.length - 1].active;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const t = line.trim();
      const where = `${file}:${i + 1}`;
      if (t.startsWith("#")) {
        const m = /^#(\w+)\s*(.*)$/.exec(t);
        if (!m) throw new Error(`${where}: malformed directive '${t}'`);
        const [, dir, rest] = m;
        if (dir === "ifdef" || dir === "ifndef" || dir === "if") {
          let cond: boolean;
          if (dir === "if") {
            const c = /^([A-Z_][A-Z0-9_]*)\s*(==|!=)\s*(\S+)$/.exec(rest.trim());
            if (!c) {
              throw new Error(`${where}: expected '#if NAME == VALUE' or '#if NAME != VALUE', got '${t}'`);
            }
            const eq = defs.get(c[1]) === c[3];
            cond = c[2] === "==" ? eq : !eq;
          } else {
            cond = defs.has(rest.trim()) === (dir === "ifdef");
          }
          const parent = active();
          stack.push({ active: parent && cond, taken: cond, parent, line: i + 1 });
        } else if (dir === "else") {
          const top = stack[stack.length - 1];
          if (!top) throw new Error(`${where}: #else without #if`);
          top.active = top.parent && !top.taken;
          top.taken = true;
        } else if (dir === "endif") {
          if (!stack.pop()) throw new Error(`${where}: #endif without #if`);
        } else if (dir === "include") {
          if (!active()) continue;
          const name = /^"([\w\-/]+)"$/.exec(rest.trim())?.[1];
          if (!name) throw new Error(`${where}: expected #include "name"`);
          if (included.has(name)) continue;
          included.add(name);
          out.push(...run(loadInclude(name), `${name}.wgsl`));
        } else {
          throw new Error(`${where}: unknown directive #${dir}`);
        }
        continue;
      }
      if (!active()) continue;
      out.push(subst ? line.replace(subst, (w) => defs.get(w)!) : line);
    }
    if (stack.length) throw new Error(`${file}:${stack[stack.length - 1].line}: #if without #endif`);
    return out;
  };
  return run(source, fileName).join("\n");
}
