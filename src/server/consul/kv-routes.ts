import { InvalidArgumentError, RosterError } from '../../core/errors.js';
import { decodeSegment, type ApiContext, type Req, type Route } from './context.js';
import { escapeKey, kvEntryJson, parseTxnBody, type KvOp } from './kv.js';
import { Fields, asObject, parseBlocking, parseUint64, readRaw, send } from './wire.js';

/** /v1/kv and /v1/txn over the KV store (kv.ts). */

const MAX_TXN_OPS = 128;

export class KvRoutes {
  constructor(private readonly c: ApiContext) {}

  register(ex: Route, pre: Route): void {
    pre('/v1/kv/', { GET: (r, k) => this.kvGet(r, k), PUT: (r, k) => this.kvPut(r, k), DELETE: (r, k) => this.kvDelete(r, k) });
    ex('/v1/kv', { GET: (r) => this.kvGet(r, ''), DELETE: (r) => this.kvDelete(r, '') });
    ex('/v1/txn', { PUT: (r) => this.txn(r) });
  }


  kvKey(raw: string): string {
    const key = decodeSegment(raw, 'key');
    if (Buffer.byteLength(key) > 2048) throw new InvalidArgumentError('key too long: at most 2048 bytes', { details: { field: 'key' } });
    return key;
  }

  async kvGet(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    const recurse = r.q.flag('recurse');
    const keys = r.q.has('keys');
    const rawValue = r.q.flag('raw');
    const sep = r.q.get('separator');
    if (!recurse && !keys && key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    const tree = recurse || keys;
    await this.c.allow(r, 'key', key, 'read', tree);
    const block = parseBlocking(r.q);
    const out = await this.c.block(r, block, tree ? [] : [`kv:${escapeKey(key)}`], tree ? [escapeKey(key)] : [], async () => {
      if (!tree) {
        const e = await this.c.kv.get(key);
        return { index: Math.max(this.c.hub.kvIndex(), e?.kv.modRevision ?? 0), entries: e ? [e] : [] };
      }
      const { entries } = await this.c.kv.list(key);
      let max = 0;
      for (const e of entries) if (e.kv.modRevision > max) max = e.kv.modRevision;
      return { index: Math.max(this.c.hub.kvIndex(), max), entries };
    });
    if (out.entries.length === 0) {
      send(r.res, 404, '', out.index, 'text/plain; charset=utf-8');
      return;
    }
    if (keys) {
      const set = new Set<string>();
      for (const e of out.entries) {
        if (sep) {
          const i = e.key.indexOf(sep, key.length);
          set.add(i < 0 ? e.key : e.key.slice(0, i + sep.length));
        } else {
          set.add(e.key);
        }
      }
      send(r.res, 200, JSON.stringify([...set]), out.index);
      return;
    }
    if (rawValue && !recurse) {
      send(r.res, 200, out.entries[0]!.value ?? Buffer.alloc(0), out.index, 'application/octet-stream');
      return;
    }
    send(r.res, 200, `[${out.entries.map((e) => kvEntryJson(e)).join(',')}]`, out.index);
  }

  async kvPut(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    if (key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    if (r.q.has('recurse')) throw new InvalidArgumentError('?recurse is not allowed on PUT', { details: { field: 'recurse' } });
    const flags = r.q.uint('flags') ?? 0n;
    const cas = r.q.uint('cas');
    const acquire = r.q.get('acquire');
    const release = r.q.get('release');
    if (acquire !== undefined && release !== undefined) throw new InvalidArgumentError('give ?acquire or ?release, not both', { details: { field: 'acquire' } });
    for (const [n, v] of [['acquire', acquire], ['release', release]] as const) {
      if (v !== undefined && !/^[0-9a-fA-F-]{1,64}$/.test(v)) throw new InvalidArgumentError(`invalid ?${n} ${JSON.stringify(v.slice(0, 40))}: expected a session id`, { details: { field: n } });
    }
    await this.c.allow(r, 'key', key, 'write');
    this.useSession(r, acquire);
    const body = await readRaw(r.req, this.c.maxValue);
    const ok = await this.c.kv.put(key, body.length ? body : null, {
      flags: flags.toString(),
      ...(cas !== undefined ? { cas } : {}),
      ...(acquire !== undefined ? { acquire } : {}),
      ...(release !== undefined ? { release } : {}),
    });
    send(r.res, 200, ok ? 'true' : 'false', this.c.agentIndex());
  }

  async kvDelete(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    const recurse = r.q.flag('recurse');
    if (!recurse && key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    const cas = r.q.uint('cas');
    if (cas !== undefined && recurse) throw new InvalidArgumentError('?cas cannot be combined with ?recurse', { details: { field: 'cas' } });
    await this.c.allow(r, 'key', key, 'write', recurse);
    const ok = await this.c.kv.delete(key, { recurse, ...(cas !== undefined ? { cas } : {}) });
    send(r.res, 200, ok ? 'true' : 'false', this.c.agentIndex());
  }

  /** Acquiring a key binds it to a session: only the session's owner may (session guard). */
  useSession(r: Req, id: string | undefined): void {
    if (id === undefined || !this.c.guard) return;
    const s = this.c.sessions.record(id);
    if (s) this.c.guard.use(s.lease, r.req, 'acquire');
  }

  async txn(r: Req): Promise<void> {
    const text = (await readRaw(r.req, this.c.maxBody)).toString('utf8');
    if (text.trim() === '') throw new InvalidArgumentError('request body required: a JSON array of operations');
    const body = parseTxnBody(text);
    if (!Array.isArray(body)) throw new InvalidArgumentError('invalid txn body: expected a JSON array of operations', { details: { field: 'body' } });
    if (body.length === 0 || body.length > MAX_TXN_OPS) throw new InvalidArgumentError(`invalid txn: expected 1-${MAX_TXN_OPS} operations, got ${body.length}`, { details: { field: 'body' } });
    const ops: KvOp[] = body.map((o, i) => txnOp(o, i, this.c.maxValue));
    for (const op of ops) {
      await this.c.allow(r, 'key', op.key, op.verb.startsWith('get') || op.verb.startsWith('check') ? 'read' : 'write', op.verb.endsWith('-tree'));
      if (op.verb === 'lock') this.useSession(r, op.session);
    }
    const res = await this.c.kv.txn(ops);
    if (!res.ok) {
      send(r.res, 409, JSON.stringify({ Results: null, Errors: res.errors }), res.index);
      return;
    }
    send(r.res, 200, `{"Results":[${res.results.map((x) => `{"KV":${x}}`).join(',')}],"Errors":null}`, res.index);
  }
}

const VERBS = new Set(['set', 'cas', 'lock', 'unlock', 'get', 'get-tree', 'check-index', 'check-session', 'check-not-exists', 'delete', 'delete-tree', 'delete-cas']);

function txnOp(o: unknown, i: number, maxValue: number): KvOp {
  const where = `txn[${i}]`;
  const top = new Fields(asObject(o, where), where);
  const kvf = top.obj_('KV', 'KV');
  for (const other of ['Node', 'Service', 'Check', 'Session']) {
    if (top.get(other) !== undefined) throw new InvalidArgumentError(`${where}.${other}: roster's /v1/txn runs KV operations only`, { details: { field: `${where}.${other}` } });
  }
  top.done();
  if (!kvf) throw new InvalidArgumentError(`${where}: expected {"KV": {...}}`, { details: { field: where } });
  const verb = kvf.str('Verb', 'Verb');
  if (!verb || !VERBS.has(verb)) throw new InvalidArgumentError(`${where}.KV.Verb ${JSON.stringify(verb ?? null)}: expected one of ${[...VERBS].join(', ')}`, { details: { field: `${where}.KV.Verb` } });
  const key = kvf.str('Key', 'Key') ?? '';
  if (key === '' && verb !== 'get-tree' && verb !== 'delete-tree') throw new InvalidArgumentError(`${where}.KV.Key is required for ${verb}`, { details: { field: `${where}.KV.Key` } });
  const valueB64 = kvf.str('Value', 'Value');
  let value: Buffer | null = null;
  if (valueB64) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(valueB64)) throw new InvalidArgumentError(`${where}.KV.Value: expected base64`, { details: { field: `${where}.KV.Value` } });
    value = Buffer.from(valueB64, 'base64');
    if (value.length > maxValue) throw new RosterError('TOO_LARGE', `${where}.KV.Value too large: at most ${maxValue} bytes`);
  }
  const flagsRaw = kvf.get('Flags', 'Flags');
  const indexRaw = kvf.get('Index', 'Index');
  const session = kvf.str('Session', 'Session') || undefined;
  kvf.ignore('Namespace', 'Partition');
  kvf.done();
  const u64 = (v: unknown, what: string): bigint | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
    if (typeof v === 'string') return parseUint64(v, what);
    throw new InvalidArgumentError(`invalid ${what}: expected an unsigned 64-bit integer`, { details: { field: what } });
  };
  const flags = u64(flagsRaw, `${where}.KV.Flags`) ?? 0n;
  const index = u64(indexRaw, `${where}.KV.Index`);
  if ((verb === 'cas' || verb === 'check-index' || verb === 'delete-cas') && index === undefined) {
    throw new InvalidArgumentError(`${where}.KV.Index is required for ${verb}`, { details: { field: `${where}.KV.Index` } });
  }
  if ((verb === 'lock' || verb === 'unlock' || verb === 'check-session') && !session) {
    throw new InvalidArgumentError(`${where}.KV.Session is required for ${verb}`, { details: { field: `${where}.KV.Session` } });
  }
  return { verb: verb as KvOp['verb'], key, value, flags: flags.toString(), ...(index !== undefined ? { index } : {}), ...(session ? { session } : {}) };
}
