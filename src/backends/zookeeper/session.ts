import type { SessionDriver } from '../../contract/session.js';
import { SessionLostError } from '../../core/errors.js';
import type { ZkConn } from './conn.js';

/**
 * One roster session = one ZooKeeper connection with its own ZooKeeper session (the backend header
 * in backend.ts says why). ZooKeeper pings keep it alive, so the shared session state machine
 * (LeaseSession) runs no keepalive of its own here: this driver revokes by closing the ZooKeeper
 * session (which deletes exactly its ephemeral nodes), abandons by dropping the connection unclosed
 * (ZooKeeper then expires exactly its nodes after the timeout), and turns the connection's own
 * verdicts into `markLost`: expired, silent for a whole timeout (it may have expired unseen;
 * Curator's rule), credentials rejected on reconnect, or closed under it.
 */
export function zkSessionDriver(conn: ZkConn, closeTimeout: number): SessionDriver {
  return {
    revoke: () => conn.close(closeTimeout),
    abandon: () => conn.destroy(),
  };
}

/** Route the connection's loss verdicts to `markLost` (once the session exists). */
export function watchZkSession(conn: ZkConn, id: string, ttl: number, markLost: (e: SessionLostError) => void): void {
  conn.on('expired', () => markLost(new SessionLostError(`ZooKeeper session ${id} expired`)));
  conn.on('silent', () => markLost(new SessionLostError(`ZooKeeper session ${id} presumed lost: no server answered for ${ttl} ms (its session timeout)`)));
  conn.on('auth-failed', () => markLost(new SessionLostError(`ZooKeeper session ${id} lost: credentials rejected on reconnect`)));
  conn.on('closed', () => markLost(new SessionLostError(`ZooKeeper session ${id} lost: connection closed`)));
}
