import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Token secrets: their format, generation, hashing and comparison.
 *
 * A token is `roster.<accessor>.<secret>`: the accessor names the token (public: shown by
 * `roster token ls`, written in the audit log), the secret is 32 random bytes (base64url). The
 * server keeps SHA-256(token), never the token: a random 256-bit secret cannot be guessed from its
 * hash, so a slow password hash (bcrypt, scrypt) would buy nothing and cost milliseconds on every
 * request. A bootstrap token given by the operator (file or environment) may have any form of at
 * least MIN_EXTERNAL_LENGTH characters; it is stored under the accessor `bootstrap`.
 *
 * Lookup is by accessor, then the stored hash is compared with `timingSafeEqual`: the time a
 * request takes does not depend on how much of a guessed secret was right.
 */

export const TOKEN_PREFIX = 'roster.';
export const BOOTSTRAP_ACCESSOR = 'bootstrap';
/** Shortest bootstrap token accepted from the operator (the generated ones are 67 characters). */
export const MIN_EXTERNAL_LENGTH = 32;
export const MAX_TOKEN_LENGTH = 512;

const ACCESSOR_RE = /^[A-Za-z0-9_-]{1,64}$/;
export const isAccessor = (s: string): boolean => ACCESSOR_RE.test(s);

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function newAccessor(): string {
  return randomBytes(12).toString('base64url');
}

/** A fresh token for `accessor`: its secret form (shown once) and its hash (stored). */
export function newToken(accessor: string = newAccessor()): { accessor: string; token: string; hash: string } {
  const token = `${TOKEN_PREFIX}${accessor}.${randomBytes(32).toString('base64url')}`;
  return { accessor, token, hash: hashToken(token).toString('hex') };
}

/** The accessor a presented token claims: its middle part, or `bootstrap` for a token of another form. */
export function claimedAccessor(token: string): string | undefined {
  if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return undefined;
  if (token.startsWith(TOKEN_PREFIX)) {
    const dot = token.indexOf('.', TOKEN_PREFIX.length);
    if (dot > TOKEN_PREFIX.length) {
      const accessor = token.slice(TOKEN_PREFIX.length, dot);
      if (isAccessor(accessor)) return accessor;
    }
  }
  return BOOTSTRAP_ACCESSOR;
}

/** Constant-time comparison of a presented token with a stored hash (hex). */
export function tokenMatches(token: string, storedHex: string): boolean {
  const stored = Buffer.from(storedHex, 'hex');
  const got = hashToken(token);
  return stored.length === got.length && timingSafeEqual(stored, got);
}

/** A token from a request: `Authorization: Bearer <token>`, else `X-Consul-Token` (the Consul API's
 *  header, accepted everywhere so one token works on both APIs). */
export function tokenFromHeaders(headers: Record<string, string | string[] | undefined>): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') return auth.slice(7).trim();
  const consul = headers['x-consul-token'];
  if (typeof consul === 'string' && consul !== '') return consul;
  return undefined;
}
