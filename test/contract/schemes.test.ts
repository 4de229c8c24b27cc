/**
 * openBackend over the scheme registry: the contract layer knows no implementation, each backend
 * registers its schemes, and every backend validates its options the same way (an unknown option is
 * INVALID_ARGUMENT everywhere, before anything is connected).
 */
import { describe, expect, it } from 'vitest';
import { backendSchemes, openBackend, registerBackend } from '../../src/index.js';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { isRosterError } from '../../src/core/errors.js';

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe('scheme registry', () => {
  it('the built-in backends registered their schemes; an unknown scheme says which ones exist', async () => {
    expect(backendSchemes()).toEqual(expect.arrayContaining(['etcd', 'etcds', 'http', 'https', 'memory', 'zk', 'zookeeper']));
    const e = await errorOf(openBackend('nosuch://x'));
    expect(isRosterError(e, 'INVALID_ARGUMENT')).toBe(true);
    expect(String((e as Error).message)).toMatch(/memory:\/\/.*http:\/\/host:port.*etcd:\/\/.*zk:\/\//);
    expect(isRosterError(await errorOf(openBackend('not a url')), 'INVALID_ARGUMENT')).toBe(true);
  });

  it('a third-party backend registers its own scheme and openBackend serves it', async () => {
    const opened: string[] = [];
    registerBackend({
      name: 'test',
      schemes: ['roster-test'],
      example: 'roster-test://name',
      open: async (url) => {
        opened.push(url);
        return MemoryBackend.open(`memory://${url.slice('roster-test://'.length)}`);
      },
    });
    expect(backendSchemes()).toContain('roster-test');
    const b = await openBackend('ROSTER-TEST://shared-by-scheme');
    try {
      expect(opened).toEqual(['ROSTER-TEST://shared-by-scheme']);
      expect(b.kind).toBe('memory');
      await b.put('k', 'v');
      const again = await MemoryBackend.open('memory://shared-by-scheme');
      expect((await again.get('k'))?.value).toBe('v');
      await again.close();
    } finally {
      await b.close();
    }
  });
});

describe('options are typed and validated on every backend', () => {
  // Nothing listens on port 1: every check below must fail before any connection is tried.
  const urls = ['memory://', 'http://127.0.0.1:1', 'etcd://127.0.0.1:1', 'zk://127.0.0.1:1'];

  it('an unknown option is INVALID_ARGUMENT, naming it and the options that exist', async () => {
    for (const url of urls) {
      const e = await errorOf(openBackend(url, { bogus: 1 }));
      expect(isRosterError(e, 'INVALID_ARGUMENT'), `${url}: ${String(e)}`).toBe(true);
      expect((e as Error).message, url).toMatch(/unknown .*option "bogus": expected/);
    }
  });

  it('a known option with a wrong type is INVALID_ARGUMENT on every backend', async () => {
    for (const url of urls) {
      const e = await errorOf(openBackend(url, { keepProcessAlive: 'yes' }));
      expect(isRosterError(e, 'INVALID_ARGUMENT'), `${url}: ${String(e)}`).toBe(true);
    }
    expect(isRosterError(await errorOf(openBackend('http://127.0.0.1:1', { connections: -1 })), 'INVALID_ARGUMENT')).toBe(true);
    expect(isRosterError(await errorOf(openBackend('etcd://127.0.0.1:1', { dialTimeout: 'soon' })), 'INVALID_ARGUMENT')).toBe(true);
    expect(isRosterError(await errorOf(openBackend('zk://127.0.0.1:1', { sessionTimeout: 'long' })), 'INVALID_ARGUMENT')).toBe(true);
  });

  it('options are typed per scheme at compile time (checked by npm run typecheck)', () => {
    const typed = () => {
      // @ts-expect-error etcd has no `connections` option
      void openBackend('etcd://h:2379/p', { connections: 4 });
      // @ts-expect-error memory:// has no options of its own
      void openBackend('memory://', { dialTimeout: 5 });
      // @ts-expect-error batch is a boolean
      void openBackend('http://h:8470', { batch: 'yes' });
      void openBackend('http://h:8470', { connections: 4, batch: false });
      void openBackend('zk://h:2181/c', { sessionTimeout: '30s', keepProcessAlive: false });
    };
    expect(typeof typed).toBe('function'); // compiled, not run: it would try to connect
  });
});
