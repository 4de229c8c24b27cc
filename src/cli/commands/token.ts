import type { Command } from 'commander';
import type { Backend } from '../../contract/types.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { RemoteBackend } from '../../backends/remote/backend.js';
import { collect } from '../options.js';
import { out } from '../output.js';
import type { CliContext } from '../shared.js';

/** The roster server behind the CLI's backend, for its token and ACL endpoints. */
export async function serverOf(getBackend: () => Promise<Backend>): Promise<RemoteBackend> {
  const b = await getBackend();
  if (!(b instanceof RemoteBackend)) throw new InvalidArgumentError(`tokens and ACLs are a roster server's: ${b.url} is not one (use --backend http(s)://host:port)`);
  return b;
}

interface TokenJson {
  accessor: string;
  name: string;
  policies: string[];
  admin: boolean;
  createdAt: number;
  createdBy: string;
  token?: string;
}

function describe(t: TokenJson): string {
  return `${t.accessor}\t${t.name}\t${t.policies.join(',')}\t${new Date(t.createdAt).toISOString()}${t.createdBy ? `\tby ${t.createdBy}` : ''}`;
}

/** `roster token create|ls|revoke|whoami` (docs/security.md). */
export function registerTokenCommands(program: Command, ctx: CliContext): void {
  const getBackend = (): Promise<Backend> => ctx.backend();
  const token = program.command('token').description("manage a roster server's tokens (admin token required)");
  token
    .command('create')
    .description('create a token; prints the token itself once on stdout (its details on stderr)')
    .requiredOption('--name <name>', 'what the token is for (shown in `token ls` and the audit log)')
    .option('--policy <name>', 'a policy the token gets (repeatable; `admin` is built in)', collect)
    .option('--admin', 'an admin token (same as --policy admin)')
    .action(async (opts: { name: string; policy?: string[]; admin?: boolean }) => {
      const policies = [...(opts.policy ?? []), ...(opts.admin ? ['admin'] : [])];
      if (policies.length === 0) throw new InvalidArgumentError('give at least one --policy (or --admin)');
      const t = (await (await serverOf(getBackend)).request('POST', '/api/v1/acl/tokens', { name: opts.name, policies })) as TokenJson;
      if (ctx.json) return out(JSON.stringify(t));
      out(t.token!);
      process.stderr.write(`roster: created token ${t.accessor} (${t.name}; policies ${t.policies.join(', ')}); it is shown only now\n`);
    });
  token
    .command('ls')
    .description('list tokens: accessor, name, policies, created (never a secret)')
    .action(async (_opts: unknown) => {
      const r = (await (await serverOf(getBackend)).request('GET', '/api/v1/acl/tokens')) as { tokens: TokenJson[] };
      if (ctx.json) out(JSON.stringify(r.tokens));
      else for (const t of r.tokens) out(describe(t));
    });
  token
    .command('revoke <accessor>')
    .description('revoke a token: it is refused from now on; its sessions are no longer kept alive and expire')
    .action(async (accessor: string) => {
      await (await serverOf(getBackend)).request('DELETE', `/api/v1/acl/tokens/${encodeURIComponent(accessor)}`);
      out(`OK revoked ${accessor}`);
    });
  token
    .command('whoami')
    .description('the token this CLI uses, as the server sees it')
    .action(async (_opts: unknown) => {
      const r = (await (await serverOf(getBackend)).request('GET', '/api/v1/acl/whoami')) as { auth: boolean; token?: TokenJson; operator?: boolean };
      if (ctx.json) return out(JSON.stringify(r));
      if (!r.auth) return out('auth is off on this server: every request is allowed');
      out(r.token ? describe(r.token) : 'anonymous');
    });
}
