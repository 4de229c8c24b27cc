/**
 * One error family. Every error roster raises is a RosterError with a stable, documented `code`
 * (safe to switch on across versions) and keeps the underlying `cause`. HTTP status codes are
 * attached here so the server and the remote client agree on the mapping.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'PERMISSION_DENIED'
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
  | 'INTERNAL';

const HTTP_STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  PERMISSION_DENIED: 403,
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
  INTERNAL: 500,
};

export interface RosterErrorOptions {
  cause?: unknown;
  /** Structured details safe to serialise (e.g. the offending field). */
  details?: Record<string, unknown>;
}

export class RosterError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message: string, options: RosterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
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

/** Bad input: the message says what was wrong and what is allowed. */
export class InvalidArgumentError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
}
/** The credentials were rejected, or they do not allow this operation (etcd roles, ZooKeeper ACLs). */
export class PermissionDeniedError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('PERMISSION_DENIED', message, options);
  }
}
export class NotFoundError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('NOT_FOUND', message, options);
  }
}
/** A compare-and-set or create-if-absent precondition did not hold. */
export class ConflictError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('CONFLICT', message, options);
  }
}
/** The session's lease expired or was revoked; keys bound to it are gone. */
export class SessionLostError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('SESSION_LOST', message, options);
  }
}
/** Use after close(). */
export class ClosedError extends RosterError {
  constructor(message = 'closed', options?: RosterErrorOptions) {
    super('CLOSED', message, options);
  }
}
export class AbortedError extends RosterError {
  constructor(message = 'aborted', options?: RosterErrorOptions) {
    super('ABORTED', message, options);
  }
}
export class TimeoutError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('TIMEOUT', message, options);
  }
}
/** The backend could not be reached; the operation may be retried. */
export class UnavailableError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('UNAVAILABLE', message, options);
  }
}
/** The requested revision is older than the history the engine keeps. */
export class CompactedError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('COMPACTED', message, options);
  }
}
export class TooLargeError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('TOO_LARGE', message, options);
  }
}
export class UnsupportedError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('UNSUPPORTED', message, options);
  }
}
/** No instance to pick: the set is empty or every instance is filtered out or ejected. */
export class NoInstanceError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('NO_INSTANCE', message, options);
  }
}
export class LockLostError extends RosterError {
  constructor(message: string, options?: RosterErrorOptions) {
    super('LOCK_LOST', message, options);
  }
}

const CODES = new Set(Object.keys(HTTP_STATUS));

/** Rebuild a typed error from its JSON form (the remote client uses this on server replies). */
export function errorFromJSON(body: unknown, fallbackStatus = 500): RosterError {
  const o = (body && typeof body === 'object' ? body : {}) as { code?: unknown; message?: unknown; details?: unknown };
  const message = typeof o.message === 'string' ? o.message : `server error (HTTP ${fallbackStatus})`;
  const details = o.details && typeof o.details === 'object' ? (o.details as Record<string, unknown>) : undefined;
  const code = typeof o.code === 'string' && CODES.has(o.code) ? (o.code as ErrorCode) : 'INTERNAL';
  const opts = details ? { details } : {};
  switch (code) {
    case 'INVALID_ARGUMENT': return new InvalidArgumentError(message, opts);
    case 'PERMISSION_DENIED': return new PermissionDeniedError(message, opts);
    case 'NOT_FOUND': return new NotFoundError(message, opts);
    case 'CONFLICT': return new ConflictError(message, opts);
    case 'SESSION_LOST': return new SessionLostError(message, opts);
    case 'CLOSED': return new ClosedError(message, opts);
    case 'ABORTED': return new AbortedError(message, opts);
    case 'TIMEOUT': return new TimeoutError(message, opts);
    case 'UNAVAILABLE': return new UnavailableError(message, opts);
    case 'COMPACTED': return new CompactedError(message, opts);
    case 'TOO_LARGE': return new TooLargeError(message, opts);
    case 'UNSUPPORTED': return new UnsupportedError(message, opts);
    case 'NO_INSTANCE': return new NoInstanceError(message, opts);
    case 'LOCK_LOST': return new LockLostError(message, opts);
    default: return new RosterError(code, message, opts);
  }
}

export function isRosterError(e: unknown, code?: ErrorCode): e is RosterError {
  return e instanceof RosterError && (code === undefined || e.code === code);
}
