export const DEFAULT_OUTDIR: string;
export function buildWeb(opts?: { outdir?: string; watch?: boolean; quiet?: boolean }): Promise<string>;
