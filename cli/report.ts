import { buildReport } from "../report/build.ts";
import { UsageError } from "./common.ts";

export async function reportCommand(
  _a: Record<string, string | boolean | undefined>,
  pos: string[],
): Promise<void> {
  if (!pos[0]) throw new UsageError("report: expected a run folder");
  const r = await buildReport(pos[0], pos[1]);
  console.error(`report: ${r.figures} figures → ${r.path}`);
  for (const s of r.skipped) console.error(`skipped ${s.file}: ${s.why}`);
  if (r.skipped.length) {
    throw new Error(
      `${
        pos[0]
      }: ${r.skipped.length} result file(s) could not be read (listed above; the report leaves them out)`,
    );
  }
}
