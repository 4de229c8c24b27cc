/**
 * The layouts as codecs: what other programs write is read by the documented rules (layout.ts),
 * and what roster writes reads back exactly. The real third parties (etcdctl, Go programs, zkCli,
 * Curator) are in test/interop; these pin the rules value by value.
 */
import { describe, expect, it } from 'vitest';
import type { KeyValue } from '../../src/contract/types.js';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { toInstance } from '../../src/core/model.js';
import { curatorLayout, etcdEndpointsLayout, plainLayout } from '../../src/registry/layout.js';
import { Registrar } from '../../src/registry/registrar.js';

const kv = (key: string, value: string): KeyValue => ({ key, value, createRevision: 1, modRevision: 1, version: 1 });

describe('plain layout reads any value', () => {
  const layout = plainLayout('services');
  const read = (value: string) => layout.decode('web', kv('services/web/10.0.0.1:8080', value))!;

  it('empty, whitespace, plain text, JSON scalars and arrays: the key is the endpoint, no metadata', () => {
    for (const v of ['', '  ', '10.0.0.1:8080', 'hello world', '"10.0.0.1:8080"', '8080', 'true', 'null', '[1,2]', '{not json']) {
      const i = read(v);
      expect(i, JSON.stringify(v)).toMatchObject({ service: 'web', id: '10.0.0.1:8080', address: '10.0.0.1', port: 8080, metadata: {}, weight: 1, tags: [] });
      expect(i.zone).toBeUndefined();
    }
  });

  it('flat JSON: every field is metadata except weight / zone / tags, which set the instance', () => {
    expect(read('{"name":"web","version":"1.4.2","weight":10}')).toMatchObject({ metadata: { name: 'web', version: '1.4.2' }, weight: 10 });
    expect(read('{"zone":"eu-1","tags":["blue","canary"],"port":8080,"tls":true,"limits":{"rps":5}}')).toMatchObject({
      zone: 'eu-1',
      tags: ['blue', 'canary'],
      metadata: { port: '8080', tls: 'true', limits: '{"rps":5}' },
    });
  });

  it("Go structs without json tags: Weight / Zone / Tags / Metadata in any letter case", () => {
    expect(read('{"Addr":"10.0.0.1:8080","Weight":3,"Zone":"b","Tags":["x"]}')).toMatchObject({ metadata: { Addr: '10.0.0.1:8080' }, weight: 3, zone: 'b', tags: ['x'] });
    expect(read('{"Metadata":{"version":"2"},"Weight":"7"}')).toMatchObject({ metadata: { version: '2' }, weight: 7 });
  });

  it('nested metadata (what roster writes) and the endpoints string form', () => {
    expect(read('{"metadata":{"zone":"a","version":"1.2"}}')).toMatchObject({ metadata: { zone: 'a', version: '1.2' } });
    expect(read('{"metadata":"{\\"v\\":\\"1\\"}","weight":2}')).toMatchObject({ metadata: { v: '1' }, weight: 2 });
  });

  it('what roster cannot carry is left out; the instance stays', () => {
    const i = read(JSON.stringify({ weight: 20000, zone: 'not a zone!', tags: ['ok', 'bad tag', 7], 'bad key!': 'x', ctl: 'a\u0007b', gone: null, fine: 'y' }));
    expect(i).toMatchObject({ weight: 1, tags: ['ok'], metadata: { fine: 'y' } });
    expect(i.zone).toBeUndefined();
    const many = Object.fromEntries(Array.from({ length: 100 }, (_, n) => [`k${n}`, String(n)]));
    expect(Object.keys(read(JSON.stringify(many)).metadata)).toHaveLength(64);
  });

  it('a key that is not host[:port] is still an error (the cache reports it and keeps going)', () => {
    expect(() => layout.decode('web', kv('services/web/not a host', ''))).toThrow(/invalid address/);
  });

  it('writes "" for a bare endpoint and the nested form otherwise; both read back exactly', () => {
    const bare = toInstance({ service: 'web', address: '10.0.0.1', port: 80 });
    const full = toInstance({ service: 'web', address: '10.0.0.2', port: 81, metadata: { weight: 'meta-not-field', v: '1' }, weight: 5, zone: 'z1', tags: ['t'] });
    expect(layout.encode(bare)).toBe('');
    expect(JSON.parse(layout.encode(full))).toEqual({ metadata: { weight: 'meta-not-field', v: '1' }, weight: 5, zone: 'z1', tags: ['t'] });
    for (const i of [bare, full]) expect(layout.decode('web', kv(layout.key(i), layout.encode(i)))).toEqual(i);
  });

  it('value "address": the endpoint as plain text, and a clear error for what it cannot store', () => {
    const addr = plainLayout('services', { value: 'address' });
    expect(addr.encode(toInstance({ service: 'web', address: '10.0.0.1', port: 80 }))).toBe('10.0.0.1:80');
    expect(() => addr.encode(toInstance({ service: 'web', address: '10.0.0.1', port: 80, metadata: { a: 'b' } }))).toThrow(/cannot store/);
    expect(() => plainLayout('services', { value: 'xml' as 'address' })).toThrow(/expected "attributes" or "address"/);
  });
});

describe('etcd-endpoints layout: Metadata grpc-go can hold', () => {
  const layout = etcdEndpointsLayout('services');
  const read = (value: string) => layout.decode('echo', kv('services/echo/10.0.1.1:9000', value))!;

  it('writes Metadata as a string (hashable in Go) or null, never a JSON object', () => {
    const plain = toInstance({ service: 'echo', address: '10.0.1.1', port: 9000 });
    const meta = toInstance({ service: 'echo', address: '10.0.1.1', port: 9000, metadata: { version: 'v2' }, weight: 3 });
    expect(JSON.parse(layout.encode(plain))).toEqual({ Op: 0, Addr: '10.0.1.1:9000', Metadata: null });
    const written = JSON.parse(layout.encode(meta)) as { Metadata: unknown };
    expect(typeof written.Metadata).toBe('string');
    expect(JSON.parse(written.Metadata as string)).toEqual({ metadata: { version: 'v2' }, weight: 3 });
    for (const i of [plain, meta]) expect(layout.decode('echo', kv(layout.key(i), layout.encode(i)))).toEqual(i);
  });

  it('reads the object form older roster and other writers used, and scalar metadata', () => {
    expect(read('{"Op":0,"Addr":"10.0.1.1:9000","Metadata":{"weight":3,"dc":"east"}}')).toMatchObject({ weight: 3, metadata: { dc: 'east' } });
    expect(read('{"Op":0,"Addr":"10.0.1.1:9000","Metadata":"v2"}').metadata).toEqual({ metadata: 'v2' });
    expect(read('{"Op":0,"Addr":"10.0.1.1:9000","Metadata":42}').metadata).toEqual({ metadata: '42' });
    expect(read('{"Op":0,"Addr":"10.0.1.1:9000"}').metadata).toEqual({});
    expect(layout.decode('echo', kv('services/echo/x', '{"Op":1,"Addr":"10.0.1.1:9000"}'))).toBeUndefined();
    expect(() => read('"just a string"')).toThrow(/expected a JSON object/);
    expect(() => read('{"Op":0}')).toThrow(/"Addr" must be/);
  });
});

describe('curator layout: the payload in the service\'s own shape', () => {
  const svc = 'billing';
  const javaInstance = (payload: Record<string, unknown>, id = 'java-1') =>
    kv(`services/${svc}/${id}`, JSON.stringify({ name: svc, id, address: '10.9.0.1', port: 8080, sslPort: null, payload, registrationTimeUTC: 1, serviceType: 'DYNAMIC', uriSpec: null }));
  const mine = toInstance({ service: svc, id: 'ts-1', address: '10.9.0.2', port: 9090, metadata: { capacity: '40', canary: 'true', regions: '["eu"]', version: '2.0', team: 'pay' }, zone: 'eu-1' });
  const payloadOf = (value: string) => (JSON.parse(value) as { payload: Record<string, unknown> }).payload;

  it('without a Java instance: a LinkedHashMap of the metadata plus zone', () => {
    expect(payloadOf(curatorLayout().encode(mine))).toEqual({ '@class': 'java.util.LinkedHashMap', capacity: '40', canary: 'true', regions: '["eu"]', version: '2.0', team: 'pay', zone: 'eu-1' });
  });

  it('after reading a POJO payload: its class, and each field in the JSON kind the Java field has', () => {
    const layout = curatorLayout();
    layout.decode(svc, javaInstance({ '@class': 'roster.interop.InstanceDetails', capacity: 10, canary: false, regions: ['us'], version: '1.0' }));
    const p = payloadOf(layout.encode(mine));
    expect(p).toEqual({ '@class': 'roster.interop.InstanceDetails', capacity: 40, canary: true, regions: ['eu'], version: '2.0', team: 'pay', zone: 'eu-1' });
    // A value that cannot take the field's kind is left out rather than failing every Java reader.
    const odd = toInstance({ ...mine, metadata: { capacity: 'lots', canary: 'maybe', regions: '{"not":"a list"}' } });
    expect(payloadOf(layout.encode(odd))).toEqual({ '@class': 'roster.interop.InstanceDetails', zone: 'eu-1' });
    // And roster's own instance reads back with its metadata.
    expect(layout.decode(svc, kv(layout.key(mine), layout.encode(mine)))).toMatchObject({ zone: 'eu-1', metadata: { capacity: '40', canary: 'true', regions: '["eu"]', version: '2.0', team: 'pay' } });
  });

  it('a custom class wins over map payloads (roster\'s own) seen in the same service', () => {
    const layout = curatorLayout();
    layout.decode(svc, javaInstance({ '@class': 'java.util.LinkedHashMap', a: 'b' }, 'ts-0'));
    layout.decode(svc, javaInstance({ '@class': 'com.example.Details', a: 'b' }));
    layout.decode(svc, javaInstance({ '@class': 'java.util.LinkedHashMap', a: 'b' }, 'ts-2'));
    expect(payloadOf(layout.encode(mine))['@class']).toBe('com.example.Details');
  });

  it('after reading a ZookeeperInstance payload: the nested shape', () => {
    const layout = curatorLayout();
    layout.decode(svc, javaInstance({ '@class': 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance', id: 'app', name: svc, metadata: { instance_status: 'UP' } }));
    expect(payloadOf(layout.encode(mine))).toEqual({
      '@class': 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance',
      id: 'ts-1',
      name: svc,
      metadata: { capacity: '40', canary: 'true', regions: '["eu"]', version: '2.0', team: 'pay', zone: 'eu-1' },
    });
  });

  it('payloadClass fixes the class before any Java instance exists, and is validated', () => {
    expect(payloadOf(curatorLayout('services', { payloadClass: 'com.example.Details' }).encode(mine))['@class']).toBe('com.example.Details');
    expect(() => curatorLayout('services', { payloadClass: 'not a class' })).toThrow(/Java class name/);
  });

  it('a Registrar calls prepare(), so its first write already uses the Java side\'s class', async () => {
    const backend = await MemoryBackend.open(`memory://layout-${process.pid}`);
    try {
      await backend.put(`services/${svc}/java-1`, javaInstance({ '@class': 'com.example.Details', capacity: 1 }).value);
      const layout = curatorLayout();
      const reg = new Registrar(backend, { ttl: 5000, layout });
      await reg.register(mine);
      const written = await backend.get(`services/${svc}/ts-1`);
      expect(payloadOf(written!.value)).toMatchObject({ '@class': 'com.example.Details', capacity: 40 });
      await reg.close();
    } finally {
      await backend.close();
    }
  });
});
