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
  const bodies = functionBodies(src);
  if (!bodies.has(entry)) {
    throw new Error(`${kernel}: entry point '${entry}' is not a function of the kernel`);
  }
  const used = new Set<string>();
  for (const f of reachable(bodies, entry)) {
    for (const id of identifiers(bodies.get(f)!)) used.add(id);
  }
  return decls.filter((d) => used.has(d.name)).sort((a, b) => a.binding - b.binding);
}

/** Function bodies by name (brace-matched), of WGSL without comments. */
export function functionBodies(src: string): Map<string, string> {
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
  return bodies;
}

/** Identifiers of a body, not member names (`wg.y` uses no global `y`). */
function identifiers(body: string): string[] {
  return body.match(/(?<![.\w])[A-Za-z_]\w*/g) ?? [];
}

/** The functions `entry` calls, directly or through others, itself included. */
export function reachable(bodies: Map<string, string>, entry: string): Set<string> {
  const seen = new Set<string>(), todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f) || !bodies.has(f)) continue;
    seen.add(f);
    for (const id of identifiers(bodies.get(f)!)) if (bodies.has(id) && !seen.has(id)) todo.push(id);
  }
  return seen;
}

export type BufferBinding = { buffer: GPUBuffer; offset?: number; size?: number };

/** Where a buffer keeps its id for the bind group cache (a property: no WeakMap lookup per dispatch). */
const BUFFER_ID = Symbol("inoculum.bufferId");

interface CachedGroup {
  group: GPUBindGroup;
  /** layout key, then (buffer id, offset, size) per binding: what the group binds */
  desc: number[];
}

/**
 * Bind group layouts (shared by every kernel with the same bindings) and bind groups cached by layout and
 * buffer ranges. A destroyed buffer's bind groups are dropped (`forget`), so the cache never outlives them.
 * A lookup runs for every dispatch, so it hashes numbers into a bucket instead of building a string key.
 */
export class BindGroupCache {
  private layouts = new Map<string, { layout: GPUBindGroupLayout; key: number }>();
  private groups = new Map<number, CachedGroup[]>();
  private byBuffer = new Map<number, Set<CachedGroup>>();
  private nextId = 1;
  private desc: number[] = [];
  /** bind groups created so far (the profiler and the dispatch-count tests read it) */
  created = 0;
  /** bind groups held */
  size = 0;

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
    const b = buf as unknown as Record<symbol, number>;
    return b[BUFFER_ID] ??= this.nextId++;
  }

  /**
   * The bind group of `layout` over `entries` (binding order as the layout's, `numbers` their binding
   * numbers), created at first use.
   */
  get(
    layoutKey: number,
    layout: GPUBindGroupLayout,
    label: string,
    entries: BufferBinding[],
    numbers: number[],
  ): GPUBindGroup {
    const desc = this.desc;
    desc.length = 0;
    desc.push(layoutKey);
    let h = layoutKey | 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const id = this.id(e.buffer), off = e.offset ?? 0, size = e.size ?? -1;
      desc.push(id, off, size);
      h = Math.imul(h ^ id, 0x01000193);
      h = Math.imul(h ^ off, 0x01000193);
      h = Math.imul(h ^ size, 0x01000193);
    }
    const bucket = this.groups.get(h);
    if (bucket) {
      for (const c of bucket) if (sameDesc(c.desc, desc)) return c.group;
    }
    const group = this.device.createBindGroup({
      label,
      layout,
      entries: entries.map((e, i) => ({ binding: numbers[i], resource: e as GPUBufferBinding })),
    });
    this.created++;
    this.size++;
    const c: CachedGroup = { group, desc: desc.slice() };
    if (bucket) bucket.push(c);
    else this.groups.set(h, [c]);
    for (let i = 1; i < c.desc.length; i += 3) {
      let held = this.byBuffer.get(c.desc[i]);
      if (!held) this.byBuffer.set(c.desc[i], held = new Set());
      held.add(c);
    }
    (c as CachedGroup & { hash: number }).hash = h;
    return group;
  }

  /** Drop every bind group that binds `buf` (call when it is destroyed). */
  forget(buf: GPUBuffer): void {
    const id = (buf as unknown as Record<symbol, number>)[BUFFER_ID];
    if (id === undefined) return;
    for (const c of this.byBuffer.get(id) ?? []) {
      const h = (c as CachedGroup & { hash: number }).hash;
      const bucket = this.groups.get(h);
      if (bucket) {
        const i = bucket.indexOf(c);
        if (i >= 0) {
          bucket.splice(i, 1);
          this.size--;
        }
        if (!bucket.length) this.groups.delete(h);
      }
      for (let i = 1; i < c.desc.length; i += 3) {
        if (c.desc[i] !== id) this.byBuffer.get(c.desc[i])?.delete(c);
      }
    }
    this.byBuffer.delete(id);
  }
}

function sameDesc(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
