/**
 * What keeps a Node process alive. roster's timers (keepalive, retry, heartbeat) are all unref()'d,
 * so by themselves they never hold a process open. Instead, every resource that is *expected to
 * keep working until it is closed* holds the process explicitly while it is live:
 *
 * - a Session until it is closed, orphaned or lost;
 * - a Watch stream until it ends;
 * - a backend call (get, put, delete, list, session, close) until it settles: a one-shot program
 *   awaiting a call across a failover (a retry on an unref()'d timer, a reconnect with no socket
 *   open) would otherwise end with an empty event loop, silently, mid-call;
 * - a Registrar while it owns at least one registration, a ServiceCache and a WatchedPrefix until
 *   closed (they hold across the gaps between sessions and watches, e.g. while retrying).
 *
 * So a process whose only work is a Registrar or a cache keeps running through a broken connection
 * (it retries) instead of exiting silently with code 0, and exits once everything is closed.
 * `keepProcessAlive: false` (on openBackend, Registrar, ServiceCache, WatchedPrefix) opts out for
 * embedders that manage their process's lifetime themselves.
 *
 * This is the one policy. Backends hold nothing themselves (the etcd member tracker's and the
 * ZooKeeper connections' timers are unref()'d); a holder that outlives its resource would keep a
 * process that finished its work alive, and one that opted out must not be held by a backend.
 */
let holds = 0;
let keeper: NodeJS.Timeout | undefined;

/** Hold the process open until the returned release function is called (idempotent). */
export function holdProcess(): () => void {
  if (holds++ === 0) keeper = setInterval(() => undefined, 1 << 30);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds === 0 && keeper) {
      clearInterval(keeper);
      keeper = undefined;
    }
  };
}

/** `holdProcess()` when `keep`, else a no-op release. */
export function maybeHold(keep: boolean | undefined): () => void {
  return keep === false ? () => undefined : holdProcess();
}

/** Live holds (diagnostics and tests). */
export function processHolds(): number {
  return holds;
}
