/**
 * The CLI's exit codes: one table (docs/cli.md, `roster --help`), one mapping from errors to it.
 * A failure is one line on stderr (`roster: <what failed>: <why> [CODE]`) and one of these codes;
 * scripts can tell "the backend is down" (3) from "the key is not there" (4) without parsing text.
 */
import { isRosterError, RosterError, type ErrorCode } from '../core/errors.js';

export const EXIT = {
  OK: 0,
  /** Anything not covered below: an unexpected failure. */
  FAILURE: 1,
  /** Bad command line: unknown command or option, missing or malformed argument or value. */
  USAGE: 2,
  /** The backend could not be reached within --connect-timeout, or stayed away longer than
   *  --give-up-after. */
  UNAVAILABLE: 3,
  /** The key, service or instance does not exist. */
  NOT_FOUND: 4,
  /** A precondition failed: --if-version / --if-absent, or the key belongs to someone else. */
  CONFLICT: 5,
  /** `lock`: the lock was lost while its command ran (the command was stopped). */
  LOST: 6,
  /** `lock --timeout` / `elect --timeout`: not acquired in time. */
  TIMEOUT: 7,
  /** No token, a token the server does not know, or one whose policy does not allow the request. */
  DENIED: 8,
  /** `lock`: the command could not be run (not executable / not found), as a shell says. */
  CANNOT_EXECUTE: 126,
  COMMAND_NOT_FOUND: 127,
} as const;

/** The table as printed in `roster --help` and docs/cli.md. */
export const EXIT_TABLE: readonly (readonly [string, string])[] = [
  ['0', 'success'],
  ['1', 'failure not covered below (unexpected error)'],
  ['2', 'usage: unknown command or option, bad argument or value'],
  ['3', 'unavailable: no answer within --connect-timeout, or away longer than --give-up-after'],
  ['4', 'not found: key, service or instance'],
  ['5', 'conflict: --if-version / --if-absent failed, or the key is someone else\'s'],
  ['6', 'lock: the lock was lost while the command ran (the command was stopped)'],
  ['7', 'lock / elect --timeout: not acquired in time'],
  ['8', 'denied: no or unknown token (--token), or its policy does not allow this; a quota was hit'],
  ['126, 127', 'lock: the command cannot be executed / is not found (checked before waiting)'],
  ['128+n', 'lock: the command was killed by signal n'],
  ['130, 143', 'interrupted (SIGINT / SIGTERM): lock while waiting, or any command a second time while cleaning up'],
  ['other', "lock: the command's own exit code"],
];

const BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: EXIT.USAGE,
  TOO_LARGE: EXIT.USAGE,
  UNSUPPORTED: EXIT.USAGE,
  UNAVAILABLE: EXIT.UNAVAILABLE,
  TIMEOUT: EXIT.UNAVAILABLE,
  CLOSED: EXIT.UNAVAILABLE,
  SESSION_LOST: EXIT.UNAVAILABLE,
  NOT_FOUND: EXIT.NOT_FOUND,
  NO_INSTANCE: EXIT.NOT_FOUND,
  CONFLICT: EXIT.CONFLICT,
  LOCK_LOST: EXIT.LOST,
  UNAUTHENTICATED: EXIT.DENIED,
  PERMISSION_DENIED: EXIT.DENIED,
  QUOTA_EXCEEDED: EXIT.DENIED,
};

/** A failure the CLI itself decides the exit code of (lock --timeout, a lost lock). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

export function exitCodeOf(e: unknown): number {
  if (e instanceof CliError) return e.exitCode;
  if (isRosterError(e)) return BY_CODE[e.code] ?? EXIT.FAILURE;
  if (e instanceof AggregateError && e.errors.length > 0) return exitCodeOf(e.errors[0]);
  return EXIT.FAILURE;
}

/** One line for an error: its message, its cause's when that adds something, and its stable code. */
export function describeError(e: unknown): string {
  if (isRosterError(e)) {
    const cause = e.cause instanceof Error ? firstLine(e.cause.message) : '';
    const extra = cause && !e.message.includes(cause) ? ` (${cause})` : '';
    return `${firstLine(e.message)}${extra} [${(e as RosterError).code}]`;
  }
  if (e instanceof AggregateError) return `${firstLine(e.message)}: ${e.errors.map(describeError).join('; ')}`;
  if (e instanceof Error) return firstLine(e.message);
  return firstLine(String(e));
}

/** Library and OpenSSL messages sometimes span lines; a CLI failure is one line. */
function firstLine(s: string): string {
  const line = s.split('\n').find((l) => l.trim() !== '') ?? s;
  return line.trim();
}
