/**
 * Policy semantics (src/server/auth/policy.ts) and token handling (tokens.ts) as units: the longest
 * prefix decides, an explicit deny wins on the same prefix, a range needs every key in it, service
 * rules are key rules over services/, malformed rules are refused with the field named; tokens are
 * found by accessor and compared by hash.
 */
import { describe, expect, it } from 'vitest';
import { Grants, RANK, servicePrefix, validateRule, validateRules, type Policy } from '../../src/server/auth/policy.js';
import { claimedAccessor, hashToken, newToken, tokenFromHeaders, tokenMatches } from '../../src/server/auth/tokens.js';
import { Edge, hostOfHeader, isLoopback } from '../../src/server/auth/edge.js';

const grants = (...policies: Policy[]) => Grants.of(policies.map((p) => p.name), new Map(policies.map((p) => [p.name, p])));
const pol = (name: string, rules: Policy['rules']): Policy => ({ name, description: '', rules });

describe('policies', () => {
  it('the longest matching prefix decides; deny carves holes; nothing matched is nothing granted', () => {
    const g = grants(pol('a', [{ key: 'config/', access: 'read' }, { key: 'config/secret/', access: 'deny' }, { key: 'config/app/', access: 'write' }]));
    expect(g.level('config/x')).toBe(RANK.read);
    expect(g.level('config/secret/db')).toBe(0);
    expect(g.level('config/app/flag')).toBe(RANK.write);
    expect(g.level('other')).toBe(0);
    expect(g.admin).toBe(false);
    expect(g.operator).toBe(false);
  });

  it('several policies: the highest level on a prefix, but an explicit deny wins there', () => {
    const g = grants(pol('r', [{ key: 'a/', access: 'read' }, { key: 'b/', access: 'write' }]), pol('w', [{ key: 'a/', access: 'write' }, { key: 'b/', access: 'deny' }]));
    expect(g.level('a/1')).toBe(RANK.write);
    expect(g.level('b/1')).toBe(0);
  });

  it('a range is granted only if every key in it is', () => {
    const g = grants(pol('p', [{ key: '', access: 'read' }, { key: 'config/secret/', access: 'deny' }, { service: 'orders', access: 'register' }]));
    expect(g.covers('services/', RANK.read)).toBe(true);
    expect(g.covers('config/', RANK.read)).toBe(false); // the hole is inside it
    expect(g.covers('config/app/', RANK.read)).toBe(true);
    expect(g.covers('', RANK.read)).toBe(false);
    expect(g.covers('services/orders/', RANK.register)).toBe(true);
    expect(g.covers('services/', RANK.register)).toBe(false);
  });

  it('service rules are key rules over the roster layout', () => {
    expect(servicePrefix('orders')).toBe('services/orders/');
    expect(servicePrefix('orders-*')).toBe('services/orders-');
    expect(servicePrefix('*')).toBe('services/');
    const g = grants(pol('s', [{ service: 'orders', access: 'register' }, { service: 'pay-*', access: 'read' }]));
    expect(g.level('services/orders/i1')).toBe(RANK.register);
    expect(g.level('services/orders2/i1')).toBe(0); // a name is not a prefix of another name
    expect(g.level('services/pay-eu/i1')).toBe(RANK.read);
  });

  it('admin grants everything; the operator capability is its own; unknown policy names grant nothing', () => {
    const admin = Grants.of(['admin'], new Map());
    expect(admin.admin && admin.operator && admin.covers('', RANK.write)).toBe(true);
    expect(grants(pol('o', [{ operator: 'read' }])).operator).toBe(true);
    expect(grants(pol('o', [{ operator: 'read' }]), pol('n', [{ operator: 'deny' }])).operator).toBe(false);
    expect(Grants.of(['nope'], new Map()).level('x')).toBe(0);
  });

  it('malformed rules are refused naming the rule and field', () => {
    for (const [rule, field] of [
      [{ key: 'a//b', access: 'read' }, 'prefix'],
      [{ key: 'a/', access: 'root' }, 'rules[0].access'],
      [{ service: 'Bad Name', access: 'read' }, 'rules[0].service'],
      [{ service: 'x', key: 'y', access: 'read' }, 'rules[0]'],
      [{ operator: 'write' }, 'rules[0].operator'],
      [{ key: 'a/', access: 'read', extra: 1 }, 'rules[0]'],
      ['read all', 'rules[0]'],
    ] as const) {
      expect(() => validateRule(rule, 0), JSON.stringify(rule)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
      try {
        validateRule(rule, 0);
      } catch (e) {
        expect(JSON.stringify((e as { details?: unknown }).details ?? (e as Error).message)).toContain(field);
      }
    }
    expect(() => validateRules('all')).toThrow(/expected an array/);
    expect(validateRules([{ key: '', access: 'read' }])).toEqual([{ key: '', access: 'read' }]);
  });
});

describe('tokens', () => {
  it('generated tokens name their accessor and match only their own hash', () => {
    const t = newToken();
    expect(t.token).toMatch(/^roster\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$/);
    expect(claimedAccessor(t.token)).toBe(t.accessor);
    expect(tokenMatches(t.token, t.hash)).toBe(true);
    expect(tokenMatches(t.token + 'x', t.hash)).toBe(false);
    expect(tokenMatches(newToken(t.accessor).token, t.hash)).toBe(false);
    expect(t.hash).toBe(hashToken(t.token).toString('hex'));
    expect(claimedAccessor('any-operator-given-string')).toBe('bootstrap');
    expect(claimedAccessor('')).toBeUndefined();
    expect(claimedAccessor('x'.repeat(600))).toBeUndefined();
  });

  it('read from Authorization: Bearer (any case) or X-Consul-Token', () => {
    expect(tokenFromHeaders({ authorization: 'Bearer abc' })).toBe('abc');
    expect(tokenFromHeaders({ authorization: 'bearer  abc ' })).toBe('abc');
    expect(tokenFromHeaders({ authorization: 'Basic abc' })).toBeUndefined();
    expect(tokenFromHeaders({ 'x-consul-token': 'c' })).toBe('c');
    expect(tokenFromHeaders({})).toBeUndefined();
  });
});

describe('edge helpers', () => {
  it('parses Host headers and tells loopback addresses', () => {
    expect(hostOfHeader('Example.COM:8470')).toBe('example.com');
    expect(hostOfHeader('[::1]:80')).toBe('::1');
    expect(hostOfHeader('a b')).toBeUndefined();
    expect(hostOfHeader('x:abc')).toBeUndefined();
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) expect(isLoopback(h), h).toBe(false);
  });

  it('wildcard names in allowedHosts; "*" allows every Host', () => {
    const e = new Edge({ listenHost: '0.0.0.0', allowedHosts: ['*.corp.example'] });
    expect(e.hostAllowed('roster.corp.example:8470')).toBe(true);
    expect(e.hostAllowed('corp.example.evil')).toBe(false);
    expect(new Edge({ listenHost: '127.0.0.1', allowedHosts: '*' }).hostAllowed('anything.example')).toBe(true);
    expect(() => new Edge({ listenHost: '127.0.0.1', corsOrigins: ['http://a.example/path'] })).toThrow(/invalid CORS origin/);
  });
});
