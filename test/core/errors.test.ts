/**
 * Error classes are branded with Symbol.for symbols, so an error thrown by one installed copy of
 * roster-sd is recognised by another: isRosterError, `instanceof` and the stable `code` all hold
 * across copies. A second copy is the built module loaded again under another URL (a distinct
 * module instance with its own classes, as a second node_modules copy would be).
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as ours from '../../src/core/errors.js';

const DIST_ERRORS = fileURLToPath(new URL('../../dist/core/errors.js', import.meta.url));

describe('errors across two copies of roster-sd', () => {
  it('isRosterError, instanceof and the code survive; unrelated classes and plain errors do not match', async () => {
    const other = (await import(`${pathToFileURL(DIST_ERRORS).href}?copy=2`)) as typeof ours;
    expect(other.ConflictError).not.toBe(ours.ConflictError); // really another copy
    const foreign = new other.ConflictError('taken', { details: { key: 'k' }, cause: new Error('why') });
    expect(ours.isRosterError(foreign)).toBe(true);
    expect(ours.isRosterError(foreign, 'CONFLICT')).toBe(true);
    expect(ours.isRosterError(foreign, 'NOT_FOUND')).toBe(false);
    expect(foreign instanceof ours.RosterError).toBe(true);
    expect(foreign instanceof ours.ConflictError).toBe(true);
    expect(foreign instanceof ours.NotFoundError).toBe(false);
    expect(foreign.code).toBe('CONFLICT');
    expect((foreign.cause as Error).message).toBe('why');
    expect(foreign.status).toBe(409);
    // And the other way round.
    expect(other.isRosterError(new ours.SessionLostError('gone'), 'SESSION_LOST')).toBe(true);
    expect(new ours.LockLostError('x') instanceof other.LockLostError).toBe(true);
    // Not everything with a code is ours.
    const impostor = Object.assign(new Error('x'), { code: 'CONFLICT' });
    expect(ours.isRosterError(impostor)).toBe(false);
    expect(impostor instanceof ours.RosterError).toBe(false);
    expect(ours.isRosterError(undefined)).toBe(false);
    expect(ours.isRosterError('CONFLICT')).toBe(false);
    // Subclasses keep their own brand: a ConflictError is not a LockLostError in either copy.
    expect(new ours.ConflictError('c') instanceof other.LockLostError).toBe(false);
  });

  it('the brand is not enumerable: JSON and console output stay as they were', () => {
    const e = new ours.NotFoundError('no such key', { details: { key: 'k' } });
    expect(Object.getOwnPropertySymbols(e)).toEqual([]);
    expect(JSON.parse(JSON.stringify(e))).toEqual({ code: 'NOT_FOUND', message: 'no such key', details: { key: 'k' } });
  });
});
