/**
 * The etcd v3 backend: `etcd://host:2379[,host2:2379]/prefix`, `etcds://` for TLS.
 *
 * Key mapping. The URL path is a key prefix applied verbatim: contract key `k` ↔ etcd key
 * `<prefix>k`, where
 *   etcd://h:2379/roster  → prefix "/roster/"   (key "services/a/x" ↔ "/roster/services/a/x")
 *   etcd://h:2379/        → prefix "/"          (key "services/a/x" ↔ "/services/a/x")
 *   etcd://h:2379         → prefix ""           (contract keys are etcd keys, byte for byte)
 * So the plain and naming/endpoints layouts (src/registry/layout.ts) with root "services" over
 * `etcd://h:2379/` read and write exactly `/services/<svc>/<host:port>`, as Go services do.
 *
 * Mapping of the contract (src/contract/types.ts):
 * - session = etcd lease. Granted TTL = etcd's TTL in seconds × 1000 (etcd rounds up to whole
 *   seconds and to its minimum, 1 s with the test settings). Kept alive about every ttl/3 over one
 *   shared LeaseKeepAlive stream. Lost (signal aborts with SessionLostError) when etcd answers
 *   TTL 0 / "lease not found", or when no renewal succeeded for a whole TTL. Never re-granted here:
 *   the registrar above creates a new session and re-puts.
 * - put: one txn [compare…] → [put (with lease), range] so the returned kv is exactly what was
 *   written; ifAbsent = createRevision == 0, ifVersion N = version == N (0 = absent).
 * - get / list: linearizable range; list's revision is the response header revision.
 * - createRevision / modRevision / version come straight from etcd; `session` is the lease id in
 *   hex (as etcdctl prints it).
 * - watch: range at R, then a watch from R + 1 with prev_kv; resumed from the last delivered
 *   revision + 1 after any reconnect, `reset` when that history is compacted (see watch.ts).
 * - errors: unreachable → UnavailableError, CAS failure → ConflictError, bad input →
 *   InvalidArgumentError, lost lease → SessionLostError, after close → ClosedError.
 *
 * Options: username / password (also accepted as URL userinfo), tls { ca, cert, key } as PEM
 * contents or file paths (requires etcds://), dialTimeout (open() fails with UnavailableError if
 * etcd does not answer within it; default 5 s), requestTimeout (per call; default 5 s), health
 * { probeInterval, probeTimeout } (default 1 s each: how fast a member or a watch stream that
 * stopped answering is left for another member, see members.ts and watch.ts; both bounds are
 * probeInterval + probeTimeout + min(250 ms, probeInterval / 4), 2.25 s by default).
 *
 * Clusters: every endpoint of the URL is used (members.ts): calls go to members that answer, reads
 * fail over, watches and the lease keepalive stream move off a member that stops answering and
 * resume from their revision; the lease (session) survives a leader change or a member's death.
 */
import { CompareResult, CompareTarget, type Etcd3, type IKeyValue, type IRequestOp, type ICompare } from 'etcd3';
import type { CallOptions } from '@grpc/grpc-js';
import type { DeleteOptions, PutOptions, Session } from '../../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../../core/kv.js';
import { BackendBase } from '../../contract/base.js';
import type { LeaseSession } from '../../contract/session.js';
import type { WatchStream } from '../../contract/stream.js';
import { commonOptionSpec, duration, optional, pemMaterial, readOptions, string, type CommonBackendOptions, type OptionSpec } from '../../contract/options.js';
import { abortable, backoff, sleep } from '../../core/async.js';
import { ConflictError, InvalidArgumentError, isRosterError, UnavailableError } from '../../core/errors.js';
import { createClient, hexToLease, invalidateAuth, KeepAliveMux, leaseToHex, memberTracker, toRosterError } from './client.js';
import { parseEtcdUrl, type EtcdUrl } from './url.js';
import { etcdWatch, type EtcdStream } from './watch.js';

export interface EtcdBackendOptions extends CommonBackendOptions {
  username?: string;
  password?: string;
  /** PEM contents (string containing "-----BEGIN" or Buffer) or file paths. Requires etcds://. */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** How long open() waits for etcd to answer (ms or "5s"). Default 5 s. */
  dialTimeout?: number | string;
  /** Deadline of each call (ms or "5s"). Default 5 s. */
  requestTimeout?: number | string;
  /** How fast a silent member is noticed (see members.ts): a member that has not answered for
   *  `probeInterval` gets a status probe, and one that leaves it unanswered for `probeTimeout` is
   *  left; a watch stream silent for `probeInterval` asks for progress and is re-opened elsewhere
   *  when nothing comes within `probeTimeout`. ms or "1s"; default 1 s each. */
  health?: { probeInterval?: number | string; probeTimeout?: number | string };
}

const NUL = Buffer.from([0]);

/** The smallest key greater than every key starting with `p` (etcd's prefix range end). */
function prefixEnd(p: Buffer): Buffer {
  const end = Buffer.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return NUL; // all 0xff: to the end of the key space
}

interface Resolved extends CommonBackendOptions {
  username?: string;
  password?: string;
  tls?: unknown;
  dialTimeout?: number;
  requestTimeout?: number;
  health?: { probeInterval: number; probeTimeout: number };
}

/** The `health` option: { probeInterval?, probeTimeout? }, each a duration in [50 ms, 1 min]. */
function health(v: unknown, name: string): { probeInterval: number; probeTimeout: number } {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidArgumentError(`invalid ${name}: expected { probeInterval?, probeTimeout? }`);
  const o = readOptions(name, { probeInterval: optional(duration(50, 60_000)), probeTimeout: optional(duration(50, 60_000)) }, v);
  return { probeInterval: o.probeInterval ?? DEFAULT_PROBE_MS, probeTimeout: o.probeTimeout ?? DEFAULT_PROBE_MS };
}
const DEFAULT_PROBE_MS = 1000;

const spec: OptionSpec<Resolved> = {
  ...commonOptionSpec,
  username: optional(string),
  password: optional(string),
  tls: (v) => v,
  dialTimeout: optional(duration(1, 600_000)),
  requestTimeout: optional(duration(1, 600_000)),
  health: optional(health),
};

export class EtcdBackend extends BackendBase {
  readonly kind = 'etcd';
  readonly prefix: string;
  private readonly keepalive: KeepAliveMux;

  private constructor(
    private readonly client: Etcd3,
    cfg: EtcdUrl,
    private readonly requestTimeout: number,
    private readonly probe: { probeInterval: number; probeTimeout: number },
    options: CommonBackendOptions,
  ) {
    super(cfg.url, options);
    this.prefix = cfg.prefix;
    this.keepalive = new KeepAliveMux(client);
  }

  static async open(url: string, options: EtcdBackendOptions = {}): Promise<EtcdBackend> {
    const cfg = parseEtcdUrl(url);
    const o = readOptions('etcd', spec, options);
    const username = o.username ?? cfg.username;
    const password = o.password ?? cfg.password;
    if (password !== undefined && username === undefined) throw new InvalidArgumentError('etcd password given without a username');
    const dialTimeout = o.dialTimeout ?? 5000;
    const requestTimeout = o.requestTimeout ?? 5000;
    let credentials: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer } | undefined;
    if (o.tls !== undefined && o.tls !== null) {
      if (typeof o.tls !== 'object') throw new InvalidArgumentError('invalid etcd option tls: expected { ca?, cert?, key? }');
      if (!cfg.tls) throw new InvalidArgumentError(`TLS options given for ${cfg.url}: use etcds:// for TLS`);
      const t = o.tls as Record<string, unknown>;
      const ca = pemMaterial(t.ca, 'ca');
      const cert = pemMaterial(t.cert, 'cert');
      const key = pemMaterial(t.key, 'key');
      if ((cert === undefined) !== (key === undefined)) throw new InvalidArgumentError('TLS client certificate needs both cert and key');
      credentials = { rootCertificate: ca as Buffer, ...(key ? { privateKey: key } : {}), ...(cert ? { certChain: cert } : {}) };
    }
    const probe = o.health ?? { probeInterval: DEFAULT_PROBE_MS, probeTimeout: DEFAULT_PROBE_MS };
    const client = createClient({
      hosts: cfg.hosts,
      tls: cfg.tls,
      ...(credentials ? { credentials } : {}),
      ...(username !== undefined ? { auth: { username, password: password ?? '' } } : {}),
      retryBudgetMs: Math.min(requestTimeout, 1000),
      health: { probeIntervalMs: probe.probeInterval, probeTimeoutMs: probe.probeTimeout, tickMs: Math.min(250, probe.probeInterval / 4) },
    });
    const b = new EtcdBackend(client, cfg, requestTimeout, probe, o.keepProcessAlive === undefined ? {} : { keepProcessAlive: o.keepProcessAlive });
    try {
      await b.ping(dialTimeout);
    } catch (e) {
      b.destroy();
      throw e;
    }
    return b;
  }

  /** Wait until etcd answers a range on our prefix (also checks credentials and permissions). */
  private async ping(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const { key, rangeEnd } = this.range('');
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.kv.range({ key, range_end: rangeEnd, limit: 1, keys_only: true }, { deadline: deadline });
        return;
      } catch (e) {
        const err = toRosterError(e, `connecting to ${this.url}`);
        if (err.code !== 'UNAVAILABLE') throw err;
        const wait = backoff(attempt, 50, 500);
        if (Date.now() + wait >= deadline) {
          throw new UnavailableError(`etcd at ${this.url} did not answer within ${timeoutMs} ms`, { cause: e });
        }
        await sleep(wait);
      }
    }
  }

  /** Go's `fmt.Sprintf("%x", leaseID)`: lowercase hex, no leading zeros, as etcdctl and Go's
   *  concurrency package name a session's keys. */
  override sessionKey(session: Session): string {
    return /^[0-9a-fA-F]+$/.test(session.id) ? BigInt(`0x${session.id}`).toString(16) : session.id;
  }

  private ek(key: string): Buffer {
    return Buffer.from(this.prefix + key);
  }

  private range(prefix: string): { key: Buffer; rangeEnd: Buffer } {
    const full = this.prefix + prefix;
    if (full === '') return { key: NUL, rangeEnd: NUL }; // every key
    const key = Buffer.from(full);
    return { key, rangeEnd: prefixEnd(key) };
  }

  private toKv(kv: IKeyValue): KeyValue {
    const lease = kv.lease && kv.lease !== '0' ? leaseToHex(kv.lease) : undefined;
    return {
      key: kv.key.toString('utf8').slice(this.prefix.length),
      value: kv.value.toString('utf8'),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
      version: Number(kv.version),
      ...(lease !== undefined ? { session: lease } : {}),
    };
  }

  /** One unary call with a deadline; failures become RosterErrors, an abort rethrows its reason. */
  private async call<T>(what: string, signal: AbortSignal | undefined, fn: (o: CallOptions) => Promise<T>): Promise<T> {
    this.check(signal);
    try {
      return await abortable(fn({ deadline: Date.now() + this.requestTimeout }), signal);
    } catch (e) {
      if (signal?.aborted && e === signal.reason) throw e;
      throw toRosterError(this.closed && !isRosterError(e) ? this.closedError(e) : e, what);
    }
  }

  protected async grant(ttl: number): Promise<LeaseSession> {
    // Not raced against the signal: a grant that succeeds must be revoked, not leaked (the base
    // revokes it when the caller gave up meanwhile).
    const res = await this.call('etcd lease grant', undefined, (o) => this.client.leaseClient.leaseGrant({ TTL: Math.ceil(ttl / 1000), ID: 0 }, o));
    const id = res.ID;
    const granted = Number(res.TTL) * 1000;
    const timeout = Math.min(this.requestTimeout, Math.max(300, granted / 3));
    return this.lease(leaseToHex(id), granted, {
      keepAlive: () => this.keepalive.keepAlive(id, timeout),
      revoke: () => this.revoke(id),
    });
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id }, { deadline: Date.now() + this.requestTimeout });
    } catch (e) {
      throw toRosterError(e, `etcd lease revoke ${leaseToHex(id)}`);
    }
  }

  protected async doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    const k = this.ek(key);
    const res = await this.call('etcd get', signal, (o) => this.client.kv.range({ key: k }, o));
    const kv = res.kvs[0];
    return kv ? this.toKv(kv) : undefined;
  }

  protected async doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    const lease = opts.session ? hexToLease(opts.session.id) : '0';
    const k = this.ek(key);
    const compare: ICompare[] = [];
    if (opts.ifAbsent) compare.push({ key: k, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 });
    if (opts.ifVersion !== undefined) compare.push({ key: k, target: CompareTarget.Version, result: CompareResult.Equal, version: opts.ifVersion });
    const success: IRequestOp[] = [{ request_put: { key: k, value: Buffer.from(value, 'utf8'), lease } }, { request_range: { key: k } }];
    const res = await this.call('etcd put', opts.signal, (o) => this.client.kv.txn({ compare, success, failure: [{ request_range: { key: k } }] }, o));
    if (!res.succeeded) throw conflict(key, opts, res.responses[0]?.response_range.kvs[0]);
    const kv = res.responses[1]?.response_range.kvs[0];
    if (!kv) throw new UnavailableError(`etcd put ${key}: the transaction returned no key`);
    return { revision: Number(res.header.revision), kv: this.toKv(kv) };
  }

  protected async doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    const k = this.ek(key);
    if (opts.ifVersion === undefined) {
      const res = await this.call('etcd delete', opts.signal, (o) => this.client.kv.deleteRange({ key: k }, o));
      return { revision: Number(res.header.revision), deleted: Number(res.deleted) > 0 };
    }
    const res = await this.call('etcd delete', opts.signal, (o) =>
      this.client.kv.txn(
        {
          compare: [{ key: k, target: CompareTarget.Version, result: CompareResult.Equal, version: opts.ifVersion! }],
          success: [{ request_delete_range: { key: k } }],
          failure: [{ request_range: { key: k } }],
        },
        o,
      ),
    );
    if (!res.succeeded) throw conflict(key, opts, res.responses[0]?.response_range.kvs[0]);
    return { revision: Number(res.header.revision), deleted: Number(res.responses[0]?.response_delete_range.deleted ?? 0) > 0 };
  }

  protected doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
    return this.call('etcd list', signal, () => this.snapshot(prefix));
  }

  private async snapshot(prefix: string): Promise<{ revision: number; items: KeyValue[] }> {
    const { key, rangeEnd } = this.range(prefix);
    const res = await this.client.kv.range({ key, range_end: rangeEnd }, { deadline: Date.now() + this.requestTimeout });
    return { revision: Number(res.header.revision), items: res.kvs.map((kv) => this.toKv(kv)) };
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    const { key, rangeEnd } = this.range(prefix);
    etcdWatch(stream, fromRevision, {
      key,
      rangeEnd,
      snapshot: () => this.snapshot(prefix),
      openStream: () => this.client.watchClient.watch() as unknown as Promise<EtcdStream>,
      toKv: (kv) => this.toKv(kv),
      onAuthExpired: () => invalidateAuth(this.client),
      stalled: (s) => memberTracker(this.client)?.stalled(s),
      idleMs: this.probe.probeInterval,
      timeoutMs: this.probe.probeTimeout,
    });
  }

  protected async release(): Promise<void> {
    this.keepalive.close();
    this.client.close();
  }

  protected abandon(): void {
    this.keepalive.close();
    this.client.close();
  }
}

function conflict(key: string, opts: { ifAbsent?: boolean; ifVersion?: number }, current: IKeyValue | undefined): ConflictError {
  const version = current ? Number(current.version) : 0;
  const want = opts.ifAbsent ? 'absent' : `at version ${opts.ifVersion}`;
  return new ConflictError(`key ${JSON.stringify(key)} is not ${want} (current version ${version})`, { details: { key, version } });
}
