import { RosterError } from '../../core/errors.js';

/**
 * Consul's KV wire shapes (api/kv.go): KVPair, the /v1/txn operations and results. Flags are a
 * uint64 (Consul's lock recipe uses 0x2ddccbc058a50c18, above 2^53): they are read as exact decimal
 * strings, never through a lossy JSON number.
 */
export interface ConsulPair {
  readonly Key: string;
  /** Base64, or null for an empty value. Write results carry null (Consul blanks them). */
  readonly Value: string | null;
  /** uint64 as a decimal string. */
  readonly Flags: string;
  readonly LockIndex: number;
  readonly Session?: string;
  readonly CreateIndex: number;
  readonly ModifyIndex: number;
}

/** Quote long integers of `Flags` so JSON.parse cannot round them. */
function exactFlags(text: string): string {
  return text.replace(/("Flags"\s*:\s*)(\d{16,})/g, '$1"$2"');
}

function pair(o: unknown): ConsulPair {
  const p = o as Record<string, unknown>;
  if (!p || typeof p !== 'object' || typeof p.Key !== 'string' || typeof p.ModifyIndex !== 'number' || typeof p.CreateIndex !== 'number') {
    throw new RosterError('INTERNAL', `malformed Consul KV entry: ${JSON.stringify(o).slice(0, 200)}`);
  }
  return {
    Key: p.Key,
    Value: typeof p.Value === 'string' ? p.Value : null,
    Flags: p.Flags === undefined || p.Flags === null ? '0' : String(p.Flags),
    LockIndex: typeof p.LockIndex === 'number' ? p.LockIndex : 0,
    ...(typeof p.Session === 'string' && p.Session !== '' ? { Session: p.Session } : {}),
    CreateIndex: p.CreateIndex,
    ModifyIndex: p.ModifyIndex,
  };
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(exactFlags(text));
  } catch (e) {
    throw new RosterError('INTERNAL', `malformed ${what} from Consul: not JSON: ${text.slice(0, 200)}`, { cause: e });
  }
}

/** GET /v1/kv/<key>[?recurse]: a JSON array of KVPair. */
export function parsePairs(text: string): ConsulPair[] {
  const a = parseJson(text, 'KV reply');
  if (!Array.isArray(a)) throw new RosterError('INTERNAL', `malformed KV reply from Consul: expected an array: ${text.slice(0, 200)}`);
  return a.map(pair);
}

export function decodeValue(b64: string | null): string {
  return b64 === null || b64 === '' ? '' : Buffer.from(b64, 'base64').toString('utf8');
}

export function encodeValue(value: string): string {
  return Buffer.from(value, 'utf8').toString('base64');
}

export type KvVerb = 'set' | 'cas' | 'lock' | 'unlock' | 'get' | 'get-tree' | 'check-index' | 'check-session' | 'check-not-exists' | 'delete' | 'delete-tree' | 'delete-cas';

/** One /v1/txn KV operation (api.TxnOp{KV}). */
export interface KvOp {
  readonly Verb: KvVerb;
  readonly Key: string;
  /** Base64. */
  readonly Value?: string;
  /** uint64 as a decimal string. */
  readonly Flags?: string;
  readonly Index?: number;
  readonly Session?: string;
}

/** The body of PUT /v1/txn; Flags above 2^53 are written as exact JSON numbers. */
export function txnBody(ops: readonly KvOp[]): string {
  return `[${ops
    .map((op) => {
      const { Flags, ...rest } = op;
      const json = JSON.stringify(rest);
      return `{"KV":${Flags === undefined ? json : `${json.slice(0, -1)},"Flags":${/^\d+$/.test(Flags) ? Flags : '0'}}`}}`;
    })
    .join(',')}]`;
}

export interface TxnError {
  readonly OpIndex: number;
  readonly What: string;
}

export type TxnOutcome = { readonly ok: true; readonly results: ConsulPair[] } | { readonly ok: false; readonly errors: TxnError[] };

/** A /v1/txn reply: 200 with Results, or 409 with Errors (Consul rolled everything back). */
export function parseTxn(status: number, text: string): TxnOutcome {
  const o = parseJson(text, 'txn reply') as { Results?: unknown; Errors?: unknown };
  if (status === 200) {
    const results = Array.isArray(o?.Results) ? o.Results.filter((r) => r && typeof r === 'object' && 'KV' in r).map((r) => pair((r as { KV: unknown }).KV)) : [];
    return { ok: true, results };
  }
  const errors = Array.isArray(o?.Errors)
    ? o.Errors.map((e) => ({ OpIndex: Number((e as TxnError).OpIndex ?? 0), What: String((e as TxnError).What ?? '') }))
    : [];
  return { ok: false, errors };
}
