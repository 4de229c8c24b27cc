/**
 * One error family. Every error roster raises is a RosterError with a stable, documented `code`
 * (safe to switch on across versions) and keeps the underlying `cause`. HTTP status codes are
 * attached here so the server and the remote client agree on the mapping.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'SESSION_LOST'
  | 'CLOSED'
  | 'ABORTED'
  | 'TIMEOUT'
  | 'UNAVAILABLE'
  | 'COMPACTED'
  | 'TOO_LARGE'
  | 'METHOD_NOT_ALLOWED'
  | 'UNSUPPORTED'
  | 'NO_INSTANCE'
  | 'LOCK_LOST'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'QUOTA_EXCEEDED'
  | 'INTERNAL';

const HTTP_STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  SESSION_LOST: 410,
  CLOSED: 503,
  ABORTED: 499,
  TIMEOUT: 504,
  UNAVAILABLE: 503,
  COMPACTED: 410,
  TOO_LARGE: 413,
  METHOD_NOT_ALLOWED: 405,
  UNSUPPORTED: 501,
  NO_INSTANCE: 503,
  LOCK_LOST: 409,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  QUOTA_EXCEEDED: 429,
  INTERNAL: 500,
};

export interface RosterErrorOptions {
  cause?: unknown;
  /** Structured details safe to serialise (e.g. the offending field). */
  details?: Record<string, unknown>;
}

/**
 * Brands (undici's trick): each error class's prototype carries `Symbol.for('roster-sd.error.<Class>')`,
 * a symbol shared by every copy of roster loaded in one process (set, not enumerable, when the
 * class is first instantiated). `isRosterError(e)` and `e instanceof X` check the brand, so an error
 * raised by one installed copy of roster-sd (a library's own dependency, say) is recognised by
 * another copy, code and all.
 */
function brandOf(name: string): symbol {
  return Symbol.for(`roster-sd.error.${name}`);
}
const ROSTER_BRAND = brandOf('RosterError');

/** Brand `proto` and every prototype above it up to Error (once per class). */
function brandChain(proto: object): void {
  for (let p = proto; p !== Error.prototype && p !== null; p = Object.getPrototypeOf(p) as object) {
    const name = (p as { constructor: { name: string } }).constructor.name;
    if (name === '') continue; // the anonymous per-code bases made by coded()
    const key = brandOf(name);
    if (Object.prototype.hasOwnProperty.call(p, key)) return;
    Object.defineProperty(p, key, { value: true });
  }
}

export class RosterError extends Error {
  /** `instanceof` by brand: true for an instance of this class from any copy of roster-sd. */
  static override [Symbol.hasInstance](x: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, x)) return true;
    return typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[brandOf(this.name)] === true;
  }

  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message: string, options: RosterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    brandChain(new.target.prototype);
    this.code = code;
    this.details = options.details;
    this.name = new.target.name;
  }
  get status(): number {
    return HTTP_STATUS[this.code];
  }
  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

/** The base of one error class per code: the code is fixed, the message may have a default. */
function coded(code: ErrorCode, defaultMessage?: string) {
  return class extends RosterError {
    constructor(message: string = defaultMessage ?? code, options?: RosterErrorOptions) {
      super(code, message, options);
    }
  };
}

/** Bad input: the message says what was wrong and what is allowed. */
export class InvalidArgumentError extends coded('INVALID_ARGUMENT') {}
export class NotFoundError extends coded('NOT_FOUND') {}
/** A compare-and-set or create-if-absent precondition did not hold. */
export class ConflictError extends coded('CONFLICT') {}
/** The session's lease expired or was revoked; keys bound to it are gone. */
export class SessionLostError extends coded('SESSION_LOST') {}
/** Use after close(). */
export class ClosedError extends coded('CLOSED', 'closed') {}
export class AbortedError extends coded('ABORTED', 'aborted') {}
export class TimeoutError extends coded('TIMEOUT') {}
/** The backend could not be reached; the operation may be retried. */
export class UnavailableError extends coded('UNAVAILABLE') {}
/** The requested revision is older than the history the engine keeps. */
export class CompactedError extends coded('COMPACTED') {}
export class TooLargeError extends coded('TOO_LARGE') {}
export class UnsupportedError extends coded('UNSUPPORTED') {}
/** No instance to pick: the set is empty or every instance is filtered out or ejected. */
export class NoInstanceError extends coded('NO_INSTANCE') {}
export class LockLostError extends coded('LOCK_LOST') {}
/** No credentials, or credentials the server does not accept (a roster server with auth on). */
export class UnauthenticatedError extends coded('UNAUTHENTICATED') {}
/** Not allowed: a roster server's token policies (an ACL, a reserved key, another token's session,
 *  a refused Host or cross-site request), or credentials an etcd cluster or ZooKeeper ensemble
 *  rejected or whose roles / ACLs do not allow the operation. */
export class PermissionDeniedError extends coded('PERMISSION_DENIED') {}
/** A per-token (or per-address) limit was reached: sessions, watch streams, keys, value bytes or
 *  request rate. `details.retryAfterSeconds` says when to try again. */
export class QuotaExceededError extends coded('QUOTA_EXCEEDED') {}

/** The class of each code that has one (the others are plain RosterErrors). */
const CLASSES: Partial<Record<ErrorCode, new (message: string, options?: RosterErrorOptions) => RosterError>> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  SESSION_LOST: SessionLostError,
  CLOSED: ClosedError,
  ABORTED: AbortedError,
  TIMEOUT: TimeoutError,
  UNAVAILABLE: UnavailableError,
  COMPACTED: CompactedError,
  TOO_LARGE: TooLargeError,
  UNSUPPORTED: UnsupportedError,
  NO_INSTANCE: NoInstanceError,
  LOCK_LOST: LockLostError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  QUOTA_EXCEEDED: QuotaExceededError,
};

/** Rebuild a typed error from its JSON form (the remote client uses this on server replies). */
export function errorFromJSON(body: unknown, fallbackStatus = 500): RosterError {
  const o = (body && typeof body === 'object' ? body : {}) as { code?: unknown; message?: unknown; details?: unknown };
  const message = typeof o.message === 'string' ? o.message : `server error (HTTP ${fallbackStatus})`;
  const details = o.details && typeof o.details === 'object' ? (o.details as Record<string, unknown>) : undefined;
  const code = typeof o.code === 'string' && Object.hasOwn(HTTP_STATUS, o.code) ? (o.code as ErrorCode) : 'INTERNAL';
  const opts = details ? { details } : {};
  const cls = CLASSES[code];
  return cls ? new cls(message, opts) : new RosterError(code, message, opts);
}

/** True for an error from any copy of roster-sd (by brand), optionally with this `code`. */
export function isRosterError(e: unknown, code?: ErrorCode): e is RosterError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[ROSTER_BRAND] === true && (code === undefined || (e as RosterError).code === code);
}
