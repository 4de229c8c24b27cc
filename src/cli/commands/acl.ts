import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { Backend } from '../../contract/types.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { collect } from '../options.js';
import { out } from '../output.js';
import type { CliContext } from '../shared.js';
import { serverOf } from './token.js';

/**
 * `--rule` text as a policy rule (src/server/auth/policy.ts):
 *   key:<prefix>=<access>     key:config/orders/=read, key:=read (every key)
 *   service:<name>=<access>   service:orders=register, service:orders-*=read, service:*=read
 *   operator=read             /metrics and Consul agent reads
 * where access is deny, read, register or write.
 */
export function parseRule(text: string): Record<string, string> {
  const eq = text.lastIndexOf('=');
  const bad = () => new InvalidArgumentError(`invalid --rule ${JSON.stringify(text)}: expected key:<prefix>=<access>, service:<name>=<access> or operator=read`);
  if (eq < 0) throw bad();
  const head = text.slice(0, eq);
  const access = text.slice(eq + 1);
  if (head === 'operator') return { operator: access };
  const colon = head.indexOf(':');
  const kind = colon < 0 ? '' : head.slice(0, colon);
  if (kind !== 'key' && kind !== 'service') throw bad();
  return { [kind]: head.slice(colon + 1), access };
}

function ruleText(r: Record<string, string>): string {
  if ('operator' in r) return `operator=${r.operator}`;
  return 'key' in r ? `key:${r.key}=${r.access}` : `service:${r.service}=${r.access}`;
}

interface PolicyJson {
  name: string;
  description: string;
  rules: Record<string, string>[];
  updatedAt: number;
  updatedBy: string;
}

/** `roster acl policy set|ls|get|rm` (docs/security.md). */
export function registerAclCommands(program: Command, ctx: CliContext): void {
  const getBackend = (): Promise<Backend> => ctx.backend();
  const acl = program.command('acl').description("manage a roster server's ACL policies (admin token required)");
  const policy = acl.command('policy').description('policies: named rule lists that tokens refer to');
  policy
    .command('set <name>')
    .description('create or replace a policy')
    .option('--rule <rule>', 'key:<prefix>=<access>, service:<name>=<access> or operator=read; access: deny, read, register, write (repeatable)', collect)
    .option('--file <file>', 'read the rules from a JSON file: [{"key": "config/", "access": "read"}, ...]')
    .option('--description <text>', 'what the policy is for')
    .action(async (name: string, opts: { rule?: string[]; file?: string; description?: string }) => {
      let rules: unknown[] = (opts.rule ?? []).map(parseRule);
      if (opts.file !== undefined) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(readFileSync(opts.file, 'utf8'));
        } catch (e) {
          throw new InvalidArgumentError(`cannot read rules from ${JSON.stringify(opts.file)}: ${(e as Error).message}`, { cause: e });
        }
        if (!Array.isArray(parsed)) throw new InvalidArgumentError(`${opts.file}: expected a JSON array of rules`);
        rules = [...rules, ...parsed];
      }
      if (rules.length === 0) throw new InvalidArgumentError('give at least one --rule (or --file)');
      const p = (await (await serverOf(getBackend)).request('PUT', `/api/v1/acl/policies/${encodeURIComponent(name)}`, {
        rules,
        ...(opts.description !== undefined ? { description: opts.description } : {}),
      })) as PolicyJson;
      out(`OK policy ${p.name}: ${p.rules.map(ruleText).join(' ')}`);
    });
  policy
    .command('ls')
    .action(async (_opts: unknown) => {
      const r = (await (await serverOf(getBackend)).request('GET', '/api/v1/acl/policies')) as { policies: PolicyJson[] };
      if (ctx.json) out(JSON.stringify(r.policies));
      else for (const p of r.policies) out(`${p.name}\t${p.rules.map(ruleText).join(' ')}${p.description ? `\t${p.description}` : ''}`);
    });
  policy
    .command('get <name>')
    .action(async (name: string) => {
      out(JSON.stringify(await (await serverOf(getBackend)).request('GET', `/api/v1/acl/policies/${encodeURIComponent(name)}`)));
    });
  policy
    .command('rm <name>')
    .description('delete a policy (refused while a token uses it)')
    .action(async (name: string) => {
      await (await serverOf(getBackend)).request('DELETE', `/api/v1/acl/policies/${encodeURIComponent(name)}`);
      out(`OK deleted policy ${name}`);
    });
}
