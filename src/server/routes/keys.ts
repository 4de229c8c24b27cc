import type { BatchOp } from '../../engine/engine.js';
import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { validateKey, validatePrefix, validateValue } from '../../core/names.js';
import { describeValue, jsonNonNegativeInt, parseNonNegativeInt, parseQuery, readJsonObject, decodePath } from '../http.js';
import type { Exchange } from '../router.js';
import type { RouteModule, ServerContext } from '../context.js';
import { rangeHasReserved, isReserved } from '../auth/store.js';
import { SESSION_ID_RE } from './sessions.js';

export const PUT_FIELDS = ['value', 'session', 'ifAbsent', 'ifVersion'];

/** Options of a put from a JSON body (`where` prefixes field names in errors, e.g. "ops[3].").
 *  `ifAbsent: false` and null fields mean "not given". */
export function putOptions(body: Record<string, unknown>, where: string): { lease?: string; ifAbsent?: boolean; ifVersion?: number } {
  const opts: { lease?: string; ifAbsent?: boolean; ifVersion?: number } = {};
  if (body.session !== undefined && body.session !== null) {
    if (typeof body.session !== 'string' || !SESSION_ID_RE.test(body.session)) {
      throw new InvalidArgumentError(`invalid ${where}session ${describeValue(body.session)}: expected a session id string`, { details: { field: `${where}session` } });
    }
    opts.lease = body.session;
  }
  if (body.ifAbsent !== undefined && body.ifAbsent !== null) {
    if (typeof body.ifAbsent !== 'boolean') {
      throw new InvalidArgumentError(`invalid ${where}ifAbsent ${describeValue(body.ifAbsent)}: expected true or false`, { details: { field: `${where}ifAbsent` } });
    }
    if (body.ifAbsent) opts.ifAbsent = true;
  }
  if (body.ifVersion !== undefined && body.ifVersion !== null) opts.ifVersion = jsonNonNegativeInt(body.ifVersion, `${where}ifVersion`);
  return opts;
}

/** Most operations one batch request may carry. */
export const MAX_BATCH_OPS = 1000;

const BATCH_PUT_FIELDS = ['op', 'key', ...PUT_FIELDS];
const BATCH_DELETE_FIELDS = ['op', 'key', 'ifVersion', 'lastValue', 'session'];

function keyOf(x: Exchange): string {
  return validateKey(decodePath(x.param, 'key'));
}

/** One operation of a batch body, validated like the single-key endpoints validate theirs. */
function batchOp(v: unknown, i: number): BatchOp {
  const where = `ops[${i}].`;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidArgumentError(`invalid ops[${i}] ${describeValue(v)}: expected an object with op and key`, { details: { field: `ops[${i}]` } });
  }
  const o = v as Record<string, unknown>;
  const fields = o.op === 'put' ? BATCH_PUT_FIELDS : o.op === 'delete' ? BATCH_DELETE_FIELDS : undefined;
  if (fields === undefined) {
    throw new InvalidArgumentError(`invalid ${where}op ${describeValue(o.op)}: expected "put" or "delete"`, { details: { field: `${where}op` } });
  }
  for (const k in o) {
    if (!fields.includes(k)) {
      throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 64))} in ops[${i}]: expected ${fields.join(', ')}`, { details: { field: `${where}${k.slice(0, 64)}` } });
    }
  }
  const key = validateKey(o.key, `${where}key`);
  if (o.op === 'delete') {
    const { lease, ifVersion } = putOptions(o, where);
    const op: BatchOp = ifVersion === undefined ? { op: 'delete', key } : { op: 'delete', key, ifVersion };
    if (o.lastValue === undefined || o.lastValue === null) {
      if (lease !== undefined) throw new InvalidArgumentError(`invalid ${where}session: a delete takes a session only with lastValue`, { details: { field: `${where}session` } });
      return op;
    }
    // The value the key is replaced with just before the delete, bound to `session` (engine DeleteOpts).
    const lastValue = validateValue(o.lastValue, `${where}lastValue`);
    if (ifVersion === undefined || lease === undefined) {
      throw new InvalidArgumentError(`invalid ${where}lastValue: a delete with lastValue needs ifVersion and session`, { details: { field: `${where}lastValue` } });
    }
    return { ...op, lastValue, lease };
  }
  const value = validateValue(o.value);
  return { op: 'put', key, value, ...putOptions(o, where) };
}

/**
 * The permission checks of one write (security.ts): ACL level, session ownership, and for a
 * register-level write the version it checked, pinned as the write's precondition.
 */
function admitWrite(s: ServerContext, x: Exchange, op: BatchOp): BatchOp | Promise<BatchOp> {
  // A delete with lastValue puts first: it is admitted as that put (bound to its session, pinned).
  const put = op.op === 'put' || op.lastValue !== undefined;
  const pinned = op.ifVersion !== undefined || (op.op === 'put' && op.ifAbsent === true);
  const pin = s.security.checkWrite(x.principal, op.key, { put, session: op.lease, pinned });
  const apply = (v: number | undefined): BatchOp => (v === undefined ? op : { ...op, ifVersion: v });
  return pin instanceof Promise ? pin.then(apply) : apply(pin);
}

/** Charge the keys a request's puts created or resized to its principal (quotas.ts). */
function charge(s: ServerContext, x: Exchange, key: string, value: string, kv: { createRevision: number }): void {
  s.security.quotas.wrote(x.principal.id, key, kv.createRevision, value);
}

/** Keys: list by prefix, get / put / delete one key, and batches of independent writes. */
export const keyRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/keys',
    name: 'keys',
    acl: 'token',
    methods: {
      GET: async (x) => {
        const q = parseQuery(x.query, ['prefix']);
        const prefix = validatePrefix(q.prefix ?? '');
        s.security.requireReadRange(x.principal, prefix);
        const r = await s.engine.list(prefix);
        // The server's own records (auth/store.ts) are never listed.
        x.json(200, rangeHasReserved(prefix) ? { revision: r.revision, items: r.items.filter((kv) => !isReserved(kv.key)) } : r);
      },
    },
  },
  {
    path: '/api/v1/keys/*',
    name: 'key',
    acl: 'token',
    methods: {
      GET: async (x) => {
        parseQuery(x.query, []);
        const key = keyOf(x);
        s.security.requireRead(x.principal, key);
        const kv = await s.engine.get(key);
        if (!kv) throw new NotFoundError(`key ${JSON.stringify(key)} not found`, { details: { key } });
        x.reply(200, `{"kv":${JSON.stringify(kv)}}`);
      },
      PUT: async (x) => {
        parseQuery(x.query, []);
        const key = keyOf(x);
        const body = await readJsonObject(x.req, s.maxBody, PUT_FIELDS);
        const value = validateValue(body.value);
        const op = (await admitWrite(s, x, { op: 'put', key, value, ...putOptions(body, '') })) as BatchOp & { op: 'put' };
        if (s.security.quotas.trackKeys) await s.security.quotas.checkKeys(x.principal.id, [{ key, bytes: Buffer.byteLength(value) }]);
        const r = await s.engine.put(key, value, { ...(op.lease !== undefined ? { lease: op.lease } : {}), ...(op.ifAbsent ? { ifAbsent: true } : {}), ...(op.ifVersion !== undefined ? { ifVersion: op.ifVersion } : {}) });
        charge(s, x, key, value, r.kv);
        x.reply(200, JSON.stringify(r));
      },
      DELETE: async (x) => {
        const q = parseQuery(x.query, ['ifVersion']);
        const key = keyOf(x);
        const op = await admitWrite(s, x, q.ifVersion === undefined ? { op: 'delete', key } : { op: 'delete', key, ifVersion: parseNonNegativeInt(q.ifVersion, 'ifVersion') });
        const r = await s.engine.delete(key, op.ifVersion === undefined ? {} : { ifVersion: op.ifVersion });
        x.reply(200, `{"revision":${r.revision},"deleted":${r.deleted}}`);
      },
    },
  },
  {
    // Several independent puts and deletes, applied in order with one group commit (protocol.md).
    path: '/api/v1/batch',
    name: 'batch',
    acl: 'token',
    methods: {
      POST: async (x) => {
        parseQuery(x.query, []);
        const body = await readJsonObject(x.req, s.maxBody, ['ops']);
        const raw = body.ops;
        if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_BATCH_OPS) {
          throw new InvalidArgumentError(`invalid ops ${describeValue(raw)}: expected an array of 1-${MAX_BATCH_OPS} operations`, { details: { field: 'ops' } });
        }
        // Everything is validated before anything is applied: a malformed op fails the whole request.
        const parsed = raw.map(batchOp);
        // Every op is admitted before any is applied: a forbidden op refuses the whole request.
        const admitted: (BatchOp | Promise<BatchOp>)[] = [];
        try {
          for (const op of parsed) admitted.push(admitWrite(s, x, op));
        } catch (e) {
          for (const a of admitted) if (a instanceof Promise) a.catch(() => undefined); // refused already
          throw e;
        }
        const ops = admitted.some((o) => o instanceof Promise) ? await Promise.all(admitted) : (admitted as BatchOp[]);
        if (s.security.quotas.trackKeys) await s.security.quotas.checkKeys(x.principal.id, ops.flatMap((o) => (o.op === 'put' ? [{ key: o.key, bytes: Buffer.byteLength(o.value) }] : [])));
        const results = await s.engine.batch(ops);
        for (let i = 0; i < ops.length; i++) {
          const o = ops[i]!;
          const r = results[i]!;
          if (o.op === 'put' && 'kv' in r) charge(s, x, o.key, o.value, r.kv);
        }
        let out = `{"revision":${s.engine.publishedRevision},"results":[`;
        for (let i = 0; i < results.length; i++) {
          const r = results[i]!;
          if (i > 0) out += ',';
          out += 'error' in r ? `{"error":${JSON.stringify(r.error.toJSON())}}` : JSON.stringify(r);
        }
        x.reply(200, out + ']}');
      },
    },
  },
];
