/**
 * Go-style absolute names (`/locks/job`, `/services/web`) resolved against a backend's root, with
 * the roots taken from the canonical URLs the backends report (parseEtcdUrl for etcd).
 */
import { describe, expect, it } from 'vitest';
import { parseEtcdUrl } from '../../src/backends/etcd/url.js';
import { nameRoot, resolveName } from '../../src/core/names.js';

const etcd = (url: string) => ({ kind: 'etcd', url: parseEtcdUrl(url).url });

describe('nameRoot', () => {
  it("is the etcd URL's prefix as etcd spells it, and '/' everywhere else", () => {
    expect(nameRoot(etcd('etcd://h:2379/'))).toBe('/');
    expect(nameRoot(etcd('etcd://h1:2379,h2:2379/app'))).toBe('/app/');
    expect(nameRoot(etcd('etcds://u:p@h:2379/app/'))).toBe('/app/');
    expect(nameRoot(etcd('etcd://h:2379'))).toBe('');
    for (const kind of ['zookeeper', 'remote', 'memory', 'consul']) expect(nameRoot({ kind, url: 'x://y/chroot' })).toBe('/');
  });
});

describe('resolveName', () => {
  it('leaves relative names alone (validated)', () => {
    expect(resolveName('locks/job', '')).toBe('locks/job');
    expect(resolveName('services/', '/')).toBe('services/');
    expect(() => resolveName('a//b', '/')).toThrow(/segments/);
    expect(() => resolveName('', '/')).toThrow(/non-empty/);
  });

  it('strips the root from absolute names, keeping a trailing slash', () => {
    expect(resolveName('/locks/job', '/')).toBe('locks/job');
    expect(resolveName('/services/', '/', '--root')).toBe('services/');
    expect(resolveName('/app/locks/job', '/app/')).toBe('locks/job');
    expect(resolveName('/app/locks/job', '/app')).toBe('locks/job');
  });

  it('refuses absolute names outside the root, and on a root without a leading slash, saying what to do', () => {
    expect(() => resolveName('/locks/job', '/app/', '--prefix')).toThrow(/absolute --prefix "\/locks\/job" is outside this backend's root "\/app\/"/);
    expect(() => resolveName('/app/', '/app/')).toThrow(/outside/);
    expect(() => resolveName('/application/x', '/app/')).toThrow(/outside/);
    expect(() => resolveName('/locks/job', '')).toThrow(/etcd:\/\/host:2379\//);
    expect(() => resolveName('//locks', '/')).toThrow(/segments/);
  });
});
