// The report's sections in the paper's order, each titled with the paper's figure or table: the page reads
// like the paper (persona vectors and steering, then the defences' effect, then the mechanism analyses).

import type { SectionKey } from "../experiments/result_kind.ts";

export interface SectionDef {
  key: SectionKey;
  /** the paper's figure(s) or table(s) */
  paper: string;
  title: string;
}

export const SECTIONS: SectionDef[] = [
  { key: "vectors", paper: "§2.1", title: "Persona vectors: norm per layer" },
  { key: "steer", paper: "§2.1, §3.2", title: "Steering the base model: PPS's coefficient" },
  { key: "evaluate", paper: "§2.3", title: "Evaluations" },
  { key: "fig2", paper: "Fig. 2", title: "Trait after fine-tuning by defence" },
  { key: "fig2_training", paper: "Fig. 2d–f", title: "Trait and coherence over training" },
  { key: "tables12", paper: "Tables 1–2", title: "Sign-forcing the gradient along the trait vector" },
  { key: "fig3", paper: "Fig. 3, 10, 11", title: "Gradient cosines with the trait vector" },
  { key: "fig4", paper: "Fig. 4", title: "Loss and gradient against steering intensity" },
  { key: "fig5", paper: "Fig. 5", title: "Cross-trait steering" },
  { key: "fig6", paper: "Fig. 6, 9", title: "Activation projections" },
  { key: "fig12", paper: "Fig. 12–14", title: "Δh after one step" },
  { key: "fig16", paper: "Fig. 1c, 16, 17", title: "IP against prompt-difference PPS" },
  { key: "fig18", paper: "Fig. 18", title: "PCA of gradient differences: PPS against IP" },
];

/** Which section a signature check's figure belongs to (the verdict table links to it). */
export function sectionOfCheck(figure: string): SectionKey | null {
  if (figure === "Fig. 2") return "fig2";
  if (figure === "Fig. 3") return "fig3";
  if (figure.startsWith("Fig. 4")) return "fig4";
  if (figure === "Fig. 18") return "fig18";
  if (figure.startsWith("Tables")) return "tables12";
  return null;
}
