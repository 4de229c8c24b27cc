/**
 * The pure pieces of the Consul API: Go durations, the blocking-query wait rules (cap 10 min,
 * default 5 min, jitter up to wait/16), uint64 parsing, the KV key escaping (a prefix code: a Consul
 * prefix stays an engine prefix), and the ?filter subset.
 */
import { describe, expect, it } from 'vitest';
import { compileFilter } from '../../src/server/consul/filter.js';
import { escapeKey, unescapeKey } from '../../src/server/consul/kv.js';
import { formatGoDuration, parseBlocking, parseGoDuration, parseUint64, Query } from '../../src/server/consul/wire.js';

describe('Consul wire rules', () => {
  it('parses Go durations', () => {
    expect(parseGoDuration('1m30s', 'wait')).toBe(90_000);
    expect(parseGoDuration('120000ms', 'wait')).toBe(120_000);
    expect(parseGoDuration('1.5h', 'wait')).toBe(5_400_000);
    expect(parseGoDuration('250us', 'wait')).toBe(0.25);
    expect(parseGoDuration('0', 'wait')).toBe(0);
    expect(parseGoDuration('-2s', 'wait')).toBe(-2000);
    for (const bad of ['10', '1x', 's', '', '1 s', '1s2']) expect(() => parseGoDuration(bad, 'wait')).toThrow(/Go duration/);
    expect(formatGoDuration(90_000)).toBe('1m30s');
    expect(formatGoDuration(10_000)).toBe('10s');
    expect(formatGoDuration(3_600_000)).toBe('1h0m0s');
  });

  it('caps wait at 10 min, defaults to 5 min, adds at most wait/16 of jitter', () => {
    const w = (qs: string) => parseBlocking(new Query(qs)).waitMs;
    for (let i = 0; i < 50; i++) {
      const capped = w('index=5&wait=1h');
      expect(capped).toBeGreaterThanOrEqual(600_000);
      expect(capped).toBeLessThanOrEqual(600_000 * (1 + 1 / 16));
      const dflt = w('index=5');
      expect(dflt).toBeGreaterThanOrEqual(300_000);
      expect(dflt).toBeLessThanOrEqual(300_000 * (1 + 1 / 16));
      expect(w('index=5&wait=-1s')).toBeGreaterThanOrEqual(300_000);
      const short = w('index=5&wait=2s');
      expect(short).toBeGreaterThanOrEqual(2000);
      expect(short).toBeLessThanOrEqual(2125);
    }
    expect(parseBlocking(new Query('index=18446744073709551615')).index).toBe(18446744073709551615n);
  });

  it('uint64 values stay exact', () => {
    expect(parseUint64('18446744073709551615', 'flags').toString()).toBe('18446744073709551615');
    expect(() => parseUint64('18446744073709551616', 'flags')).toThrow(/2\^64-1/);
    expect(() => parseUint64('-1', 'flags')).toThrow();
  });

  it('KV key escaping round-trips and keeps prefixes', () => {
    const keys = ['a/b', 'with space/x', 'ünïcödé/ключ', '100%/done', 'folder/', 'a//b', '/lead', 'tab\there', '"q"'];
    for (const k of keys) {
      expect(unescapeKey(escapeKey(k))).toBe(k);
      expect(escapeKey(k)).toMatch(/^[\x21-\x7e]*$/);
      for (let i = 0; i <= k.length; i++) expect(escapeKey(k).startsWith(escapeKey(k.slice(0, i)))).toBe(true);
    }
    // Not a prefix before escaping: not a prefix after ("%" is escaped itself).
    expect(escapeKey('100%/done').startsWith(escapeKey('100%2'))).toBe(false);
  });

  it('?filter: ==, !=, in, contains, is empty, and/or/not, parentheses', () => {
    const e = { Service: { ID: 'web-1', Tags: ['v2', 'eu'], Meta: { version: '2.1' }, Port: 80, Address: '' }, Node: { Node: 'n1' } };
    const t = (f: string) => compileFilter(f)(e);
    expect(t('Service.ID == "web-1"')).toBe(true);
    expect(t('Service.ID != "web-1"')).toBe(false);
    expect(t('"v2" in Service.Tags')).toBe(true);
    expect(t('"v3" not in Service.Tags')).toBe(true);
    expect(t('Service.Tags contains "eu"')).toBe(true);
    expect(t('Service.Meta.version == "2.1" and Service.Port == 80')).toBe(true);
    expect(t('Service.Address is empty')).toBe(true);
    expect(t('Service.Meta is not empty')).toBe(true);
    expect(t('not (Node.Node == "n2" or Service.ID == "x")')).toBe(true);
    expect(t('"version" in Service.Meta')).toBe(true);
    expect(() => compileFilter('Service.ID matches "w.*"')).toThrow(/not supported/);
    expect(() => compileFilter('Service.ID ==')).toThrow(/expected a value/);
    expect(() => compileFilter('(Service.ID == "a"')).toThrow(/missing '\)'/);
  });
});
