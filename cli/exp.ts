// `exp <name> --config FILE.yaml [--run-dir DIR]`, `exp summarize DIR` and `exp schema` (the result schema
// the experiments declare, as schemas/result.schema.json holds it).

import { EXPERIMENTS } from "../experiments/index.ts";
import { readYaml } from "../experiments/common.ts";
import { printTable, summarize } from "../experiments/summarize.ts";
import { resultSchema } from "../experiments/results.ts";
import { need, startGpu, UsageError } from "./common.ts";

export async function expCommand(
  a: Record<string, string | boolean | undefined>,
  pos: string[],
): Promise<void> {
  const [name, dir] = pos;
  if (name === "summarize") {
    if (!dir) throw new UsageError("exp summarize: expected a run folder");
    const rows = await summarize(dir);
    console.log(printTable(rows));
    for (const s of rows.skipped) console.error(`skipped ${s.file}: ${s.why}`);
    if (rows.skipped.length) {
      throw new Error(`${dir}: ${rows.skipped.length} result file(s) could not be read (listed above)`);
    }
    return;
  }
  if (name === "schema") {
    console.log(JSON.stringify(resultSchema(), null, 2));
    return;
  }
  const e = name ? EXPERIMENTS[name] : undefined;
  if (!e) {
    throw new UsageError(
      `exp: expected one of ${[...Object.keys(EXPERIMENTS), "summarize", "schema"].join(", ")}, got '${
        name ?? ""
      }'`,
    );
  }
  const file = need(a.config as string, "config", `exp ${name}`);
  const config = e.parseConfig(await readYaml(file), file);
  const runDir = (a["run-dir"] as string) ?? `runs/${name}-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  await Deno.mkdir(runDir, { recursive: true });
  const gpu = await startGpu();
  await e.run({ gpu, runDir, progress: (s) => console.error(s) }, config);
  console.error(`results in ${runDir}`);
}
