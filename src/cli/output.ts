/**
 * What the CLI prints. stdout carries the command's result (a table, JSON, a value, one line per
 * event); stderr carries status (`roster: ...`): what was lost, regained, skipped or waited for.
 * Output to a closed pipe (`roster kv ls | head -1`) ends the process quietly (bin.ts).
 */

export type OutputFormat = 'table' | 'wide' | 'json';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'wide', 'json'];

let stdoutClosed = false;

/** Called once stdout's reader went away: later writes are dropped. */
export function markStdoutClosed(): void {
  stdoutClosed = true;
}

/** One line to stdout. */
export function out(line: string): void {
  if (stdoutClosed) return;
  process.stdout.write(line + '\n');
}

/** One status line to stderr, prefixed `roster: `. */
export function note(line: string): void {
  process.stderr.write(`roster: ${line}\n`);
}

/** Rows under a header, columns padded to their widest cell (kubectl's style), no trailing blanks. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  for (const l of table(header, rows)) out(l);
}

/** Local wall-clock time with milliseconds, as watch lines carry it (ISO 8601, UTC). */
export function timestamp(ms = Date.now()): string {
  return new Date(ms).toISOString();
}

/** "3s", "4m", "2h", "5d": an age as kubectl shows it (the largest unit, rounded down). */
export function age(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}
