/**
 * What the CLI's commands share: output, error rendering, option parsing and the key-layout
 * options. Commands import this module (never main.ts), so the arrows run main → commands → shared.
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { Backend } from '../contract/types.js';
import { openBackend } from '../contract/schemes.js';
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

/**
 * How the CLI reaches its backend, in one place: the token for a roster server with auth on, and
 * TLS for https:// roster servers and etcds:// clusters. Each option has its ROSTER_* variable.
 *   --token / ROSTER_TOKEN, --token-file / ROSTER_TOKEN_FILE       roster server (http, https)
 *   --tls-ca / ROSTER_TLS_CA                                        CA to trust (PEM file)
 *   --tls-cert, --tls-key / ROSTER_TLS_CERT, ROSTER_TLS_KEY         this process's certificate:
 *       a client certificate for https:// and etcds://, the serving certificate of `roster server`
 * A flag given on the command line for a backend it does not apply to is an error; one that comes
 * from the environment is ignored there (one shell may talk to several kinds of backend).
 */
export function connectionOptions(program: Command): Command {
  return program
    .addOption(new Option('--token <token>', 'token for a roster server with auth on').env('ROSTER_TOKEN'))
    .addOption(new Option('--token-file <file>', 'read the token from this file (e.g. <data-dir>/admin.token)').env('ROSTER_TOKEN_FILE'))
    .addOption(new Option('--tls-ca <file>', 'PEM CA to trust for https:// and etcds:// (instead of the system CAs)').env('ROSTER_TLS_CA'))
    .addOption(new Option('--tls-cert <file>', "PEM certificate: the client's for https:// and etcds://, the server's for `roster server`").env('ROSTER_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('ROSTER_TLS_KEY'));
}

export interface ConnectionFlags {
  token?: string;
  tokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** A file named by a flag; unreadable is a usage error naming the flag and the reason. */
export function readFileFlag(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new InvalidArgumentError(`cannot read ${what} ${JSON.stringify(file)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
}

/** The token from --token or --token-file (trimmed), if any. */
export function tokenFrom(flags: ConnectionFlags): string | undefined {
  if (flags.token !== undefined && flags.token !== '') return flags.token.trim();
  if (flags.tokenFile !== undefined && flags.tokenFile !== '') {
    const t = readFileFlag(flags.tokenFile, '--token-file').toString('utf8').trim();
    if (t === '') throw new InvalidArgumentError(`--token-file ${JSON.stringify(flags.tokenFile)} is empty`);
    return t;
  }
  return undefined;
}

/** Open the backend at `url` with the connection flags that apply to its scheme. */
export async function openWithFlags(url: string, flags: ConnectionFlags, sourceOf: (name: keyof ConnectionFlags) => string | undefined): Promise<Backend> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase() ?? '';
  const given = (k: keyof ConnectionFlags) => flags[k] !== undefined && flags[k] !== '';
  const refuse = (k: keyof ConnectionFlags, why: string) => {
    if (given(k) && sourceOf(k) === 'cli') throw new InvalidArgumentError(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} does not apply to ${url}: ${why}`);
  };
  const tls = () => ({
    ...(given('tlsCa') ? { ca: readFileFlag(flags.tlsCa!, '--tls-ca') } : {}),
    ...(given('tlsCert') ? { cert: readFileFlag(flags.tlsCert!, '--tls-cert') } : {}),
    ...(given('tlsKey') ? { key: readFileFlag(flags.tlsKey!, '--tls-key') } : {}),
  });
  const tlsGiven = given('tlsCa') || given('tlsCert') || given('tlsKey');
  const options: Record<string, unknown> = {};
  if (scheme === 'http' || scheme === 'https') {
    const token = tokenFrom(flags);
    if (token !== undefined) options.token = token;
    if (scheme === 'https' && tlsGiven) options.tls = tls();
    else for (const k of ['tlsCa', 'tlsCert', 'tlsKey'] as const) refuse(k, 'TLS needs an https:// URL');
  } else {
    for (const k of ['token', 'tokenFile'] as const) refuse(k, scheme.startsWith('etcd') ? 'etcd takes a user and password in the URL (etcd://user:password@host)' : 'only roster servers take tokens');
    if (scheme === 'etcds' && tlsGiven) {
      const t = tls();
      if (!t.ca) throw new InvalidArgumentError('etcds:// needs --tls-ca (the CA that signed the etcd members\' certificates)');
      options.tls = t;
    } else {
      for (const k of ['tlsCa', 'tlsCert', 'tlsKey'] as const) refuse(k, scheme === 'etcd' ? 'TLS needs an etcds:// URL' : 'this backend has no TLS options');
    }
  }
  return openBackend(url, options);
}
