import type { BatchOp } from '../../engine/engine.js';
import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { validateKey, validatePrefix, validateValue } from '../../core/names.js';
import { describeValue, jsonNonNegativeInt, parseNonNegativeInt, parseQuery, readJsonObject, decodePath } from '../http.js';
import type { Exchange } from '../router.js';
import type { RouteModule } from '../context.js';
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
const BATCH_DELETE_FIELDS = ['op', 'key', 'ifVersion'];

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
    return o.ifVersion === undefined || o.ifVersion === null ? { op: 'delete', key } : { op: 'delete', key, ifVersion: jsonNonNegativeInt(o.ifVersion, `${where}ifVersion`) };
  }
  const value = validateValue(o.value);
  return { op: 'put', key, value, ...putOptions(o, where) };
}

/** Keys: list by prefix, get / put / delete one key, and batches of independent writes. */
export const keyRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/keys',
    name: 'keys',
    methods: {
      GET: async (x) => {
        const q = parseQuery(x.query, ['prefix']);
        const prefix = validatePrefix(q.prefix ?? '');
        x.json(200, await s.engine.list(prefix));
      },
    },
  },
  {
    path: '/api/v1/keys/*',
    name: 'key',
    methods: {
      GET: async (x) => {
        parseQuery(x.query, []);
        const key = keyOf(x);
        const kv = await s.engine.get(key);
        if (!kv) throw new NotFoundError(`key ${JSON.stringify(key)} not found`, { details: { key } });
        x.reply(200, `{"kv":${JSON.stringify(kv)}}`);
      },
      PUT: async (x) => {
        parseQuery(x.query, []);
        const key = keyOf(x);
        const body = await readJsonObject(x.req, s.maxBody, PUT_FIELDS);
        const value = validateValue(body.value);
        const r = await s.engine.put(key, value, putOptions(body, ''));
        x.reply(200, JSON.stringify(r));
      },
      DELETE: async (x) => {
        const q = parseQuery(x.query, ['ifVersion']);
        const key = keyOf(x);
        const r = await s.engine.delete(key, q.ifVersion === undefined ? {} : { ifVersion: parseNonNegativeInt(q.ifVersion, 'ifVersion') });
        x.reply(200, `{"revision":${r.revision},"deleted":${r.deleted}}`);
      },
    },
  },
  {
    // Several independent puts and deletes, applied in order with one group commit (protocol.md).
    path: '/api/v1/batch',
    name: 'batch',
    methods: {
      POST: async (x) => {
        parseQuery(x.query, []);
        const body = await readJsonObject(x.req, s.maxBody, ['ops']);
        const raw = body.ops;
        if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_BATCH_OPS) {
          throw new InvalidArgumentError(`invalid ops ${describeValue(raw)}: expected an array of 1-${MAX_BATCH_OPS} operations`, { details: { field: 'ops' } });
        }
        // Everything is validated before anything is applied: a malformed op fails the whole request.
        const ops = raw.map(batchOp);
        const results = await s.engine.batch(ops);
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
