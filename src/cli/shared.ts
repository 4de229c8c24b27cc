/**
 * What the CLI's commands share: output, error rendering, option parsing and the key-layout
 * options. Commands import this module (never main.ts), so the arrows run main → commands → shared.
 */
import { Command, Option } from 'commander';
import { InvalidArgumentError, RosterError } from '../core/errors.js';
import { layoutByName, type Layout } from '../registry/layout.js';

/** One line to stdout. */
export function out(line: string): void {
  process.stdout.write(line + '\n');
}

export function parsePositiveInt(s: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(s)) throw new InvalidArgumentError(`invalid --${what} ${JSON.stringify(s)}: expected an integer from ${min} to ${max}`);
  const n = Number(s);
  if (n < min || n > max) throw new InvalidArgumentError(`invalid --${what} ${s}: expected an integer from ${min} to ${max}`);
  return n;
}

/** Collect repeatable options: --meta a=1 --meta b=2. */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function parseKeyValues(pairs: string[] | undefined, what: string): Record<string, string> {
  const outObj: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`invalid --${what} ${JSON.stringify(p)}: expected key=value`);
    outObj[p.slice(0, i)] = p.slice(i + 1);
  }
  return outObj;
}

export function layoutOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--layout <name>', 'key layout: roster, plain, etcd-endpoints, curator').default('roster'))
    .addOption(new Option('--root <path>', 'layout root (where services live)').default('services'));
}

export function layoutFrom(opts: { layout?: string; root?: string }): Layout {
  return layoutByName(opts.layout ?? 'roster', opts.root);
}

/** One line for an error: its message, its cause's message and its stable code. */
export function describeError(e: unknown): string {
  if (e instanceof RosterError) {
    const cause = e.cause instanceof Error ? ` (${e.cause.message})` : '';
    return `${e.message}${cause} [${e.code}]`;
  }
  if (e instanceof AggregateError) return `${e.message}: ${e.errors.map(describeError).join('; ')}`;
  return e instanceof Error ? e.message : String(e);
}
