import { Option, type Command } from 'commander';
import { InvalidArgumentError } from '../../core/errors.js';
import type { ServerOptions } from '../../server/server.js';
import { collect, integer, size } from '../options.js';
import { readFileFlag, type ConnectionFlags } from '../shared.js';

/**
 * `roster server`'s security flags (docs/security.md). The serving certificate is the global
 * --tls-cert / --tls-key (shared.ts: "this process's certificate").
 */
export function securityOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--auth <on|off>', 'tokens and ACLs (on: a bootstrap admin token is written to <data-dir>/admin.token on first start)').choices(['on', 'off']).default('on'))
    .addOption(new Option('--bootstrap-token-file <file>', 'read the bootstrap admin token from this file instead of generating one (or $ROSTER_BOOTSTRAP_TOKEN: the token itself)'))
    .option('--audit-log <file>', "audit log: a file, '-' for stderr or 'off' (default <data-dir>/audit.log)")
    .option('--public-metrics', 'serve /metrics without a token (default: a token with the operator capability)')
    .option('--tls-client-ca <file>', 'require client certificates signed by this CA (mutual TLS; needs --tls-cert and --tls-key)')
    .option('--insecure', 'listen beyond loopback without auth or TLS anyway (warns on every start)')
    .option('--allowed-hosts <names>', "Host names accepted besides IP addresses, localhost and the listen address (comma-separated; '*' = any)")
    .option('--cors-origin <origin>', 'allow cross-origin requests from this origin (repeatable; default none)', collect)
    .option('--quota-sessions <n>', 'live sessions per token (per address without auth)')
    .option('--quota-watches <n>', 'open watch streams per token')
    .option('--quota-keys <n>', 'keys created per token')
    .option('--quota-value-bytes <size>', 'bytes of values of the keys a token created (e.g. 64MiB)')
    .option('--quota-rate <n>', 'requests per second per token')
    .option('--quota-burst <n>', 'request burst per token (default: one second of --quota-rate)');
}

export interface SecurityFlags extends ConnectionFlags {
  auth: 'on' | 'off';
  bootstrapTokenFile?: string;
  auditLog?: string;
  publicMetrics?: boolean;
  tlsClientCa?: string;
  insecure?: boolean;
  allowedHosts?: string;
  corsOrigin?: string[];
  quotaSessions?: string;
  quotaWatches?: string;
  quotaKeys?: string;
  quotaValueBytes?: string;
  quotaRate?: string;
  quotaBurst?: string;
}


/** The server options of the flags (certificates and the bootstrap token read from their files). */
export function securityFrom(f: SecurityFlags): Pick<ServerOptions, 'auth' | 'tls' | 'insecure' | 'allowedHosts' | 'corsOrigins' | 'quotas'> {
  const int = (v: string | undefined, what: string) => (v === undefined ? undefined : integer(v, what, 1, 1e9));
  if ((f.tlsCert === undefined) !== (f.tlsKey === undefined)) throw new InvalidArgumentError('give both --tls-cert and --tls-key (or neither)');
  if (f.tlsClientCa !== undefined && f.tlsCert === undefined) throw new InvalidArgumentError('--tls-client-ca needs --tls-cert and --tls-key');
  const bootstrap = process.env.ROSTER_BOOTSTRAP_TOKEN ?? (f.bootstrapTokenFile !== undefined ? readFileFlag(f.bootstrapTokenFile, '--bootstrap-token-file').toString('utf8').trim() : undefined);
  const audit = f.auditLog === undefined ? undefined : f.auditLog === 'off' ? false : f.auditLog === '-' ? 'stderr' : f.auditLog;
  const quotas = {
    ...(f.quotaSessions !== undefined ? { sessions: int(f.quotaSessions, 'quota-sessions')! } : {}),
    ...(f.quotaWatches !== undefined ? { watches: int(f.quotaWatches, 'quota-watches')! } : {}),
    ...(f.quotaKeys !== undefined ? { keys: int(f.quotaKeys, 'quota-keys')! } : {}),
    ...(f.quotaValueBytes !== undefined ? { valueBytes: size(f.quotaValueBytes, 'quota-value-bytes', 1) } : {}),
    ...(f.quotaRate !== undefined ? { rate: int(f.quotaRate, 'quota-rate')! } : {}),
    ...(f.quotaBurst !== undefined ? { burst: int(f.quotaBurst, 'quota-burst')! } : {}),
  };
  return {
    auth:
      f.auth === 'off'
        ? false
        : { ...(bootstrap !== undefined ? { bootstrapToken: bootstrap } : {}), ...(audit !== undefined ? { audit } : {}), ...(f.publicMetrics ? { publicMetrics: true } : {}) },
    ...(f.tlsCert !== undefined
      ? { tls: { cert: readFileFlag(f.tlsCert, '--tls-cert'), key: readFileFlag(f.tlsKey!, '--tls-key'), ...(f.tlsClientCa !== undefined ? { clientCa: readFileFlag(f.tlsClientCa, '--tls-client-ca') } : {}) } }
      : {}),
    ...(f.insecure ? { insecure: true } : {}),
    ...(f.allowedHosts !== undefined ? { allowedHosts: f.allowedHosts.trim() === '*' ? '*' : f.allowedHosts.split(',').map((h) => h.trim()).filter(Boolean) } : {}),
    ...(f.corsOrigin?.length ? { corsOrigins: f.corsOrigin } : {}),
    ...(Object.keys(quotas).length ? { quotas } : {}),
  };
}
