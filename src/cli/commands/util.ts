import { InvalidArgumentError } from '../../core/errors.js';

/** One line to stdout. */
export function out(line: string): void {
  process.stdout.write(line + '\n');
}

/**
 * Resolves on the first SIGINT or SIGTERM (and removes its listeners), so a foreground command can
 * clean up (deregister, resign, unlock) before the process ends. A second signal while cleaning up
 * exits at once with the conventional code: the user asked twice.
 */
export function onTerminate(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handler = (sig: NodeJS.Signals) => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      const again = () => process.exit(sig === 'SIGINT' ? 130 : 143);
      process.once('SIGINT', again);
      process.once('SIGTERM', again);
      resolve(sig);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
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
