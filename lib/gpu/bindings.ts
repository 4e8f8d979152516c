// Bind group layouts read from a kernel's WGSL, and a cache of bind groups by (layout, buffers), so that a
// step recorded again binds what it bound before without creating anything.
//
// Layouts are explicit (not "auto") for two reasons: the params uniform at binding 0 takes a dynamic offset
// into one arena buffer (so a dispatch's params never make its bind group unique), and kernels with the same
// bindings share one layout and hence their bind groups. A layout lists the bindings the entry point uses,
// found by following the calls from the entry point through the module's functions.

export type BindingKind = "uniform" | "read" | "read_write";

export interface BindingDecl {
  binding: number;
  name: string;
  kind: BindingKind;
}

/** The `@group(0) @binding(N) var<…> name` declarations that `entry` uses, directly or through calls. */
export function entryBindings(code: string, entry: string, kernel: string): BindingDecl[] {
  const src = code.replace(/\/\/[^\n]*/g, "");
  const decls: BindingDecl[] = [];
  const declRe =
    /@group\(\s*0\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var(?:<\s*(\w+)\s*(?:,\s*(\w+)\s*)?>)?\s+(\w+)/g;
  for (const m of src.matchAll(declRe)) {
    const space = m[2] ?? "", access = m[3] ?? "read";
    const kind: BindingKind = space === "uniform"
      ? "uniform"
      : access === "read_write"
      ? "read_write"
      : "read";
    if (space !== "uniform" && space !== "storage") {
      throw new Error(
        `${kernel}: binding ${m[1]} ('${m[4]}') is var<${space}>; only uniform and storage are used`,
      );
    }
    decls.push({ binding: Number(m[1]), name: m[4], kind });
  }
  // function bodies by name (brace-matched)
  const bodies = new Map<string, string>();
  for (const m of src.matchAll(/\bfn\s+(\w+)\s*\(/g)) {
    const open = src.indexOf("{", m.index!);
    if (open < 0) continue;
    let depth = 0, i = open;
    for (; i < src.length; i++) {
      if (src[i] === "{") depth++;
      else if (src[i] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], src.slice(m.index!, i + 1));
  }
  if (!bodies.has(entry)) {
    throw new Error(`${kernel}: entry point '${entry}' is not a function of the kernel`);
  }
  const seen = new Set<string>(), used = new Set<string>(), todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    // identifiers, not member names (`wg.y` uses no global `y`)
    for (const id of bodies.get(f)!.match(/(?<![.\w])[A-Za-z_]\w*/g) ?? []) {
      used.add(id);
      if (bodies.has(id) && !seen.has(id)) todo.push(id);
    }
  }
  return decls.filter((d) => used.has(d.name)).sort((a, b) => a.binding - b.binding);
}

export type BufferBinding = { buffer: GPUBuffer; offset?: number; size?: number };

/**
 * Bind group layouts (shared by every kernel with the same bindings) and bind groups cached by layout and
 * buffer ranges. A destroyed buffer's bind groups are dropped (`forget`), so the cache never outlives them.
 */
export class BindGroupCache {
  private layouts = new Map<string, { layout: GPUBindGroupLayout; key: number }>();
  private groups = new Map<string, { group: GPUBindGroup; ids: number[] }>();
  private byBuffer = new Map<number, Set<string>>();
  private ids = new WeakMap<GPUBuffer, number>();
  private nextId = 1;
  /** bind groups created so far (the profiler and the dispatch-count tests read it) */
  created = 0;

  constructor(private device: GPUDevice) {}

  layout(decls: BindingDecl[]): { layout: GPUBindGroupLayout; key: number } {
    const desc = decls.map((d) => `${d.binding}:${d.kind}`).join(",");
    let l = this.layouts.get(desc);
    if (!l) {
      l = {
        key: this.layouts.size + 1,
        layout: this.device.createBindGroupLayout({
          entries: decls.map((d) => ({
            binding: d.binding,
            visibility: GPUShaderStage.COMPUTE,
            buffer: d.kind === "uniform"
              ? { type: "uniform", hasDynamicOffset: true }
              : { type: d.kind === "read" ? "read-only-storage" : "storage" },
          })),
        }),
      };
      this.layouts.set(desc, l);
    }
    return l;
  }

  /** A buffer's id (assigned at first sight). */
  id(buf: GPUBuffer): number {
    let id = this.ids.get(buf);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(buf, id);
    }
    return id;
  }

  /** The bind group of `layout` over `entries` (binding order as the layout's), created at first use. */
  get(
    layoutKey: number,
    layout: GPUBindGroupLayout,
    label: string,
    entries: BufferBinding[],
    numbers: number[],
  ) {
    let key = String(layoutKey);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      key += `|${this.id(e.buffer)}:${e.offset ?? 0}:${e.size ?? -1}`;
    }
    const hit = this.groups.get(key);
    if (hit) return hit.group;
    const group = this.device.createBindGroup({
      label,
      layout,
      entries: entries.map((e, i) => ({ binding: numbers[i], resource: e as GPUBufferBinding })),
    });
    this.created++;
    const ids = entries.map((e) => this.id(e.buffer));
    this.groups.set(key, { group, ids });
    for (const id of ids) {
      let keys = this.byBuffer.get(id);
      if (!keys) this.byBuffer.set(id, keys = new Set());
      keys.add(key);
    }
    return group;
  }

  /** Drop every bind group that binds `buf` (call when it is destroyed). */
  forget(buf: GPUBuffer): void {
    const id = this.ids.get(buf);
    if (id === undefined) return;
    for (const key of this.byBuffer.get(id) ?? []) {
      for (const other of this.groups.get(key)?.ids ?? []) {
        if (other !== id) this.byBuffer.get(other)?.delete(key);
      }
      this.groups.delete(key);
    }
    this.byBuffer.delete(id);
  }

  get size(): number {
    return this.groups.size;
  }
}
