import { buildReport } from "../report/build.ts";
import { UsageError } from "./common.ts";

export async function reportCommand(
  _a: Record<string, string | boolean | undefined>,
  pos: string[],
): Promise<void> {
  if (!pos[0]) throw new UsageError("report: expected a run folder");
  const r = await buildReport(pos[0], pos[1]);
  console.error(`report: ${r.figures} figures → ${r.path}`);
}
