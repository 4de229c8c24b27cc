import { chmod, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import type { KeyValue } from '../../core/kv.js';
import type { Engine, EngineEvent, Subscription } from '../../engine/engine.js';
import { ADMIN_POLICY, Grants, validatePolicyName, validateRules, type Policy } from './policy.js';
import { BOOTSTRAP_ACCESSOR, claimedAccessor, hashToken, isAccessor, MAX_TOKEN_LENGTH, MIN_EXTERNAL_LENGTH, newToken, tokenMatches } from './tokens.js';

/**
 * Where tokens, policies and session owners live: engine keys under a reserved prefix, so they are
 * as durable as everything else (same log, same snapshot, same fsync before a change is
 * acknowledged) and a backup of the data dir is a backup of the ACLs. No API serves that prefix:
 * every key route refuses it (403) and every list or watch leaves it out, whatever the token.
 *
 *   _roster/acl/tokens/<accessor>   {"accessor","name","hash","policies",...}   (SHA-256 of the token)
 *   _roster/acl/policies/<name>     {"name","description","rules",...}
 *   _roster/acl/owners/<session>    the accessor that created the session, bound to that session
 *                                   (so it ends with it)
 *   _roster/acl/bootstrapped        written once the bootstrap token existed: a revoked bootstrap
 *                                   token is not made again on the next start
 *
 * The maps here mirror those keys through an engine subscription (one writer: this server), and
 * are updated directly after each write as well (the event arrives with the write's fsync).
 */
export const RESERVED_PREFIX = '_roster/';
const ACL_ROOT = `${RESERVED_PREFIX}acl/`;
const TOKENS = `${ACL_ROOT}tokens/`;
const POLICIES = `${ACL_ROOT}policies/`;
const OWNERS = `${ACL_ROOT}owners/`;
const BOOTSTRAPPED = `${ACL_ROOT}bootstrapped`;

export const isReserved = (key: string): boolean => key.startsWith(RESERVED_PREFIX);
/** Whether a list or watch of `prefix` could include reserved keys (they are filtered out). */
export const rangeHasReserved = (prefix: string): boolean => RESERVED_PREFIX.startsWith(prefix) || prefix.startsWith(RESERVED_PREFIX);

export interface TokenRecord {
  readonly accessor: string;
  readonly name: string;
  /** SHA-256 of the token, hex. */
  readonly hash: string;
  readonly policies: readonly string[];
  readonly createdAt: number;
  /** Accessor of the token that created it ('' for the bootstrap token). */
  readonly createdBy: string;
}

/** A token as the API shows it: never the hash. */
export function tokenJson(t: TokenRecord): Record<string, unknown> {
  return { accessor: t.accessor, name: t.name, policies: t.policies, admin: t.policies.includes(ADMIN_POLICY), createdAt: t.createdAt, createdBy: t.createdBy };
}

export interface PolicyRecord extends Policy {
  readonly updatedAt: number;
  readonly updatedBy: string;
}

export interface BootstrapOptions {
  /** The bootstrap admin token, given by the operator (file or environment). */
  token?: string;
  /** Where a generated bootstrap token is written (mode 0600) on first start. */
  tokenFile?: string;
}

export interface BootstrapOutcome {
  /** The file holding the bootstrap token, when one was generated now or earlier. */
  tokenFile?: string;
  /** A token was generated and written on this start. */
  created: boolean;
  /** A line for the operator, when something is worth saying (revoked bootstrap token). */
  note?: string;
}

/** Compared against when no token has the claimed accessor (no token hashes to it). */
const UNKNOWN_HASH = '0'.repeat(64);
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9 _.:@/-]{0,127}$/;

export class AuthStore {
  readonly tokens = new Map<string, TokenRecord>();
  readonly policies = new Map<string, PolicyRecord>();
  /** session id -> accessor of its creator. */
  private readonly owners = new Map<string, string>();
  private readonly grants = new Map<string, Grants>();
  private bootstrapped = false;
  private sub: Subscription | undefined;

  private constructor(private readonly engine: Engine) {}

  static async open(engine: Engine, bootstrap: BootstrapOptions): Promise<{ store: AuthStore; bootstrap: BootstrapOutcome }> {
    const s = new AuthStore(engine);
    const sub = engine.subscribe(ACL_ROOT, undefined, (ev) => s.apply(ev), { deferred: true });
    s.sub = sub;
    for (const kv of sub.snapshot?.items ?? []) s.load(kv);
    try {
      return { store: s, bootstrap: await s.bootstrap(bootstrap) };
    } catch (e) {
      s.close();
      throw e;
    }
  }

  close(): void {
    this.sub?.cancel();
    this.sub = undefined;
  }

  // ---------------------------------------------------------------- mirror of the engine keys

  private apply(ev: EngineEvent): void {
    if (ev.type === 'put') this.load(ev.kv);
    else this.unload(ev.key);
  }

  private load(kv: KeyValue): void {
    try {
      if (kv.key.startsWith(TOKENS)) this.setToken(JSON.parse(kv.value) as TokenRecord);
      else if (kv.key.startsWith(POLICIES)) this.setPolicy(JSON.parse(kv.value) as PolicyRecord);
      else if (kv.key.startsWith(OWNERS)) this.owners.set(kv.key.slice(OWNERS.length), kv.value);
      else if (kv.key === BOOTSTRAPPED) this.bootstrapped = true;
    } catch {
      // Only this module writes these keys; a value it cannot parse is left out rather than fatal.
    }
  }

  private unload(key: string): void {
    if (key.startsWith(TOKENS)) {
      this.tokens.delete(key.slice(TOKENS.length));
      this.grants.delete(key.slice(TOKENS.length));
    } else if (key.startsWith(POLICIES)) {
      this.policies.delete(key.slice(POLICIES.length));
      this.grants.clear();
    } else if (key.startsWith(OWNERS)) {
      this.owners.delete(key.slice(OWNERS.length));
    }
  }

  private setToken(t: TokenRecord): void {
    this.tokens.set(t.accessor, t);
    this.grants.delete(t.accessor);
  }

  private setPolicy(p: PolicyRecord): void {
    this.policies.set(p.name, p);
    this.grants.clear();
  }

  // ---------------------------------------------------------------- reading

  /** The token record a presented token proves, or undefined. Lookup by accessor, then a
   *  constant-time comparison of hashes. */
  authenticate(token: string): TokenRecord | undefined {
    const accessor = claimedAccessor(token);
    const rec = accessor === undefined ? undefined : this.tokens.get(accessor);
    // Hashed and compared whether or not the accessor exists: the time taken tells nothing.
    const ok = tokenMatches(token, rec?.hash ?? UNKNOWN_HASH);
    return ok && rec !== undefined ? rec : undefined;
  }

  grantsOf(t: TokenRecord): Grants {
    let g = this.grants.get(t.accessor);
    if (g === undefined) this.grants.set(t.accessor, (g = Grants.of(t.policies, this.policies)));
    return g;
  }

  ownerOf(session: string): string | undefined {
    return this.owners.get(session);
  }

  /** [session, owner] of every live session with an owner. */
  ownersEntries(): IterableIterator<[string, string]> {
    return this.owners.entries();
  }

  // ---------------------------------------------------------------- writing

  /** Record the creator of a new session: a key bound to the session, so it ends with it. */
  async recordOwner(session: string, accessor: string): Promise<void> {
    await this.engine.put(OWNERS + session, accessor, { lease: session });
    this.owners.set(session, accessor);
  }

  async createToken(input: { name: string; policies: readonly string[] }, by: string): Promise<{ record: TokenRecord; token: string }> {
    const name = validateTokenName(input.name);
    const policies = validatePolicyList(input.policies);
    for (const p of policies) {
      if (p !== ADMIN_POLICY && !this.policies.has(p)) throw new NotFoundError(`policy ${JSON.stringify(p)} does not exist: create it first (roster acl policy set ${p} ...)`, { details: { policy: p } });
    }
    const { accessor, token, hash } = newToken();
    const record: TokenRecord = { accessor, name, hash, policies, createdAt: Date.now(), createdBy: by };
    await this.engine.put(TOKENS + accessor, JSON.stringify(record), { ifAbsent: true });
    this.setToken(record);
    return { record, token };
  }

  async revokeToken(accessor: string): Promise<TokenRecord> {
    const rec = isAccessor(accessor) ? this.tokens.get(accessor) : undefined;
    if (!rec) throw new NotFoundError(`no token with accessor ${JSON.stringify(accessor.slice(0, 64))}`, { details: { accessor: accessor.slice(0, 64) } });
    await this.engine.delete(TOKENS + accessor);
    this.unload(TOKENS + accessor);
    return rec;
  }

  async putPolicy(input: { name: unknown; description?: unknown; rules: unknown }, by: string): Promise<PolicyRecord> {
    const name = validatePolicyName(input.name);
    if (name === ADMIN_POLICY) throw new InvalidArgumentError(`policy ${JSON.stringify(ADMIN_POLICY)} is built in and cannot be changed`, { details: { field: 'name' } });
    if (input.description !== undefined && (typeof input.description !== 'string' || input.description.length > 1024)) {
      throw new InvalidArgumentError('invalid description: expected a string of at most 1024 characters', { details: { field: 'description' } });
    }
    const rec: PolicyRecord = { name, description: (input.description as string | undefined) ?? '', rules: validateRules(input.rules), updatedAt: Date.now(), updatedBy: by };
    await this.engine.put(POLICIES + name, JSON.stringify(rec));
    this.setPolicy(rec);
    return rec;
  }

  async deletePolicy(name: string): Promise<PolicyRecord> {
    validatePolicyName(name);
    const rec = this.policies.get(name);
    if (!rec) throw new NotFoundError(`no policy ${JSON.stringify(name)}`, { details: { policy: name } });
    const users = [...this.tokens.values()].filter((t) => t.policies.includes(name)).map((t) => t.accessor);
    if (users.length) {
      throw new ConflictError(`policy ${JSON.stringify(name)} is used by ${users.length} token(s) (${users.slice(0, 5).join(', ')}): revoke them or give them other policies first`, { details: { tokens: users.slice(0, 20) } });
    }
    await this.engine.delete(POLICIES + name);
    this.unload(POLICIES + name);
    return rec;
  }

  // ---------------------------------------------------------------- bootstrap

  private async bootstrap(opts: BootstrapOptions): Promise<BootstrapOutcome> {
    const existing = this.tokens.get(BOOTSTRAP_ACCESSOR);
    if (opts.token !== undefined) {
      const token = opts.token.trim();
      if (token.length < MIN_EXTERNAL_LENGTH || token.length > MAX_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
        throw new InvalidArgumentError(`invalid bootstrap token: expected ${MIN_EXTERNAL_LENGTH}-${MAX_TOKEN_LENGTH} printable ASCII characters without spaces (e.g. openssl rand -base64 32)`);
      }
      const accessor = claimedAccessor(token);
      if (accessor !== BOOTSTRAP_ACCESSOR) throw new InvalidArgumentError(`invalid bootstrap token: a token of the form roster.<accessor>.<secret> is an ordinary token; give the bootstrap token another form`);
      if (!existing || !tokenMatches(token, existing.hash)) await this.writeBootstrap(hashToken(token).toString('hex'));
      return { created: false };
    }
    if (existing) return { created: false, ...(opts.tokenFile ? { tokenFile: opts.tokenFile } : {}) };
    if (this.bootstrapped) {
      return { created: false, note: 'the bootstrap token was revoked: admin access is through the admin tokens made since (ROSTER_BOOTSTRAP_TOKEN or --bootstrap-token-file sets a new one)' };
    }
    if (opts.tokenFile === undefined) {
      throw new InvalidArgumentError('auth is on but there is no bootstrap token: give auth.bootstrapToken, or a data dir to write a generated one to');
    }
    const { token, hash } = newToken(BOOTSTRAP_ACCESSOR);
    await writeSecret(opts.tokenFile, token + '\n');
    await this.writeBootstrap(hash);
    return { created: true, tokenFile: opts.tokenFile };
  }

  private async writeBootstrap(hash: string): Promise<void> {
    const record: TokenRecord = { accessor: BOOTSTRAP_ACCESSOR, name: 'bootstrap', hash, policies: [ADMIN_POLICY], createdAt: Date.now(), createdBy: '' };
    await this.engine.batch([
      { op: 'put', key: TOKENS + BOOTSTRAP_ACCESSOR, value: JSON.stringify(record) },
      { op: 'put', key: BOOTSTRAPPED, value: JSON.stringify({ at: record.createdAt }) },
    ]);
    this.setToken(record);
    this.bootstrapped = true;
  }
}

/** Write a secret file readable by its owner only (created 0600, never world-readable in between). */
async function writeSecret(file: string, text: string): Promise<void> {
  await unlink(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await chmod(file, 0o600); // against a umask that took bits away, never adds any
}

export const DEFAULT_TOKEN_FILE = 'admin.token';
export const tokenFileIn = (dataDir: string): string => join(dataDir, DEFAULT_TOKEN_FILE);

function validateTokenName(v: unknown): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new InvalidArgumentError(`invalid token name ${JSON.stringify(String(v).slice(0, 40))}: 1-128 letters, digits, spaces and _ . : @ / -`, { details: { field: 'name' } });
  }
  return v;
}

function validatePolicyList(v: unknown): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > 32) throw new InvalidArgumentError('invalid policies: expected an array of 1-32 policy names', { details: { field: 'policies' } });
  return [...new Set(v.map((p, i) => validatePolicyName(p, `policies[${i}]`)))];
}
