/**
 * What every command shares: the global flags, the backend (opened once, lazily, with a bounded
 * wait), deadlines for one-shot requests, the output format, the layout flags and Go-style names.
 * Commands import this module (never main.ts), so the arrows run main → commands → shared.
 *
 * Global flags (each also `ROSTER_<FLAG>` and a top-level key of the config file, config.ts):
 *   -b, --backend <url>          backend URL; `host:port` alone means http://host:port
 *   --connect-timeout <duration> how long to wait for the backend to answer (default 5s)
 *   -o, --output <format>        table | wide | json (--json is -o json)
 *   --config <file>              the config file
 *   --token, --token-file        token for a roster server with auth on (docs/security.md)
 *   --tls-ca, --tls-cert, --tls-key   TLS for https:// and etcds:// (the client's certificate), and
 *                                the serving certificate of `roster server`
 * Flags that only change how the backend is opened (credentials, TLS) go into `backendOptions`.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Backend } from '../contract/types.js';
import { openBackend } from '../contract/schemes.js';
import '../backends/builtin.js';
import { InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { nameRoot, resolveName } from '../core/names.js';
import { formatDuration } from '../core/duration.js';
import { layoutByName, type Layout } from '../registry/layout.js';
import { consulCatalogLayout } from '../registry/consul-catalog.js';
import { duration } from './options.js';
import { OUTPUT_FORMATS, type OutputFormat } from './output.js';

export const DEFAULT_BACKEND = 'http://127.0.0.1:8470';
export const DEFAULT_CONNECT_TIMEOUT = '5s';

/** The global flags, as commander parsed them (after env and config file, config.ts). */
export interface GlobalFlags {
  backend?: string;
  connectTimeout?: string;
  output?: string;
  json?: boolean;
  config?: string;
}

/** How the CLI authenticates to its backend (global flags; each also ROSTER_<FLAG>). */
export interface ConnectionFlags {
  token?: string;
  tokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function globalOptions(program: Command): Command {
  return program
    .addOption(new Option('-b, --backend <url>', `backend URL: http://host:port (roster server), etcd://host:2379[/prefix], zk://host:2181[/chroot], memory://; host:port alone is http://host:port`).default(DEFAULT_BACKEND))
    .addOption(new Option('--connect-timeout <duration>', 'fail (exit 3) when the backend does not answer within this time').default(DEFAULT_CONNECT_TIMEOUT))
    .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'))
    .addOption(new Option('--json', 'the same as -o json'))
    .addOption(new Option('--config <file>', 'config file (JSON; default $ROSTER_CONFIG, else ~/.config/roster/config.json if present)'))
    .addOption(new Option('--token <token>', 'token for a roster server with auth on'))
    .addOption(new Option('--token-file <file>', 'read the token from this file (e.g. <data-dir>/admin.token)'))
    .addOption(new Option('--tls-ca <file>', 'PEM CA to trust for https:// and etcds:// (instead of the system CAs)'))
    .addOption(new Option('--tls-cert <file>', "PEM certificate: the client's for https:// and etcds://, the server's for `roster server`"))
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert'));
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

/**
 * The credential and TLS options the connection flags give the backend at `url`. A flag given on
 * the command line for a backend it does not apply to is an error; one that comes from the
 * environment or the config file is ignored there (one shell may talk to several kinds of backend).
 */
export function connectionOptionsFor(url: string, flags: ConnectionFlags, sourceOf: (name: keyof ConnectionFlags) => string | undefined): Record<string, unknown> {
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
      if (!t.ca) throw new InvalidArgumentError("etcds:// needs --tls-ca (the CA that signed the etcd members' certificates)");
      options.tls = t;
    } else {
      for (const k of ['tlsCa', 'tlsCert', 'tlsKey'] as const) refuse(k, scheme === 'etcd' ? 'TLS needs an etcds:// URL' : 'this backend has no TLS options');
    }
  }
  return options;
}

/** A backend URL as typed: `host:port` alone is a roster server. */
export function normaliseBackendUrl(url: string): string {
  const u = url.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) return u;
  if (/^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}(\/.*)?$/i.test(u)) return `http://${u}`;
  throw new InvalidArgumentError(`invalid --backend ${JSON.stringify(u)}: expected a URL such as http://127.0.0.1:8470, etcd://127.0.0.1:2379/, zk://127.0.0.1:2181 or memory://, or host:port for a roster server`);
}

/**
 * Options for openBackend from the global flags, per scheme: the connect timeout becomes etcd's
 * dialTimeout and ZooKeeper's connectTimeout (the roster server's client connects per request;
 * its requests are bounded by `CliContext.deadline`). Credentials and TLS flags belong here too.
 */
export function backendOptions(url: string, connectTimeoutMs: number): Record<string, unknown> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case 'etcd':
    case 'etcds':
      return { dialTimeout: connectTimeoutMs };
    case 'zk':
    case 'zookeeper':
      return { connectTimeout: connectTimeoutMs };
    default:
      return {};
  }
}

export class CliContext {
  private opened: Promise<Backend> | undefined;
  private backendRef: Backend | undefined;

  constructor(private readonly program: Command) {}

  private get flags(): GlobalFlags {
    return this.program.opts<GlobalFlags>();
  }

  get backendUrl(): string {
    return normaliseBackendUrl(this.flags.backend ?? DEFAULT_BACKEND);
  }

  get connectTimeout(): number {
    return duration(this.flags.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT, 'connect-timeout', { min: 1, max: 3_600_000 });
  }

  get output(): OutputFormat {
    if (this.flags.json) return 'json';
    const o = this.flags.output ?? 'table';
    if (!(OUTPUT_FORMATS as readonly string[]).includes(o)) throw new InvalidArgumentError(`invalid --output ${JSON.stringify(o)}: expected ${OUTPUT_FORMATS.join(', ')}`);
    return o as OutputFormat;
  }

  get json(): boolean {
    return this.output === 'json';
  }

  /** An error for "no answer within --connect-timeout" (exit 3), naming the backend. */
  unreachable(what = 'no answer'): UnavailableError {
    return new UnavailableError(`${this.backendUrl}: ${what} within ${formatDuration(this.connectTimeout)} (--connect-timeout)`);
  }

  /** A signal that aborts after --connect-timeout with `unreachable()`: for one-shot requests and
   *  for the first contact of long-running commands. */
  deadline(): AbortSignal {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(this.unreachable()), this.connectTimeout);
    t.unref();
    return ac.signal;
  }

  /** The backend, opened once; opening is bounded by --connect-timeout. */
  backend(): Promise<Backend> {
    this.opened ??= (async () => {
      const url = this.backendUrl;
      const ms = this.connectTimeout;
      const flags = this.program.opts<ConnectionFlags>();
      const credentials = connectionOptionsFor(url, flags, (k) => this.program.getOptionValueSource(k));
      const opening = openBackend(url, { ...backendOptions(url, ms), ...credentials } as never);
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(this.unreachable('not connected')), ms + 250);
      });
      try {
        const b = await Promise.race([opening, limit]);
        this.backendRef = b;
        return b;
      } catch (e) {
        // Opened after the limit: close it so nothing lingers.
        opening.then((b) => b.destroy(), () => undefined);
        throw e;
      } finally {
        clearTimeout(timer);
      }
    })();
    return this.opened;
  }

  /** Resolve a key, prefix or root the way Go programs spell it (docs/interop.md). */
  name(backend: Backend, value: string, what: string): string {
    return resolveName(value, nameRoot(backend), what);
  }

  /** The layout from --layout / --root, the root resolved against the backend's name root. */
  layout(backend: Backend, opts: LayoutFlags): Layout {
    const name = opts.layout ?? 'roster';
    // Consul's service catalog is a layout of its own (registry/consul-catalog.ts): no key root.
    if (name === 'consul-catalog') {
      if (backend.kind !== 'consul') throw new InvalidArgumentError(`--layout consul-catalog needs a consul:// backend, not ${backend.url}`);
      return consulCatalogLayout();
    }
    const root = opts.root === undefined ? undefined : this.name(backend, opts.root, '--root');
    return layoutByName(name, root);
  }

  async close(): Promise<void> {
    const b = this.backendRef;
    this.backendRef = undefined;
    if (b) await b.close();
  }
}

export interface LayoutFlags {
  layout?: string;
  root?: string;
}

export function layoutOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--layout <name>', 'key layout: roster, plain (Go), etcd-endpoints (grpc-go), curator (Java), consul-catalog (consul:// only: the agent\'s service catalog)').default('roster'))
    .addOption(new Option('--root <path>', "where services live (absolute '/services' as Go spells it, or relative)").default('services'));
}
