/**
 * `roster-sd/process`: the process-level side effects roster's library classes never perform
 * themselves (no class installs a signal handler or exits). The CLI uses these helpers, and so can
 * any service:
 *
 * - `drainOnSignals(registrar)`: on SIGTERM, deregister, keep serving while clients' caches drop
 *   the instances, then exit.
 * - `terminationSignal()`: an AbortSignal that aborts on the first SIGINT / SIGTERM, for foreground
 *   work (a lock held while a command runs, a campaign, a watch).
 * - `onTerminate()`: the same as a promise.
 */
import { parseDuration } from '../core/duration.js';
import { sleep } from '../core/async.js';

/** What drainOnSignals drains: a Registrar, or anything with the same close() and events. */
export interface Drainable {
  close(): Promise<void>;
  /** `closed` tells the helper that the target was closed some other way (its handlers go). */
  once?(name: 'closed', fn: () => void): unknown;
}

export interface DrainOptions {
  /** Signals that start the drain (default ['SIGTERM']). */
  signals?: NodeJS.Signals[];
  /** How long to keep serving after deregistering, so clients' caches drop the instances
   *  (default 5000 ms; ms or a duration string). */
  drainMs?: number | string;
  /** Called once when draining is over: 0 after a clean deregistration, 1 if it failed (default
   *  process.exit). A second signal during the drain calls it at once with 1. */
  exit?: (code: number) => void;
  /** Told when a signal starts the drain. */
  onDrain?: (info: { signal: NodeJS.Signals; drainMs: number }) => void;
  /** Told when closing the target failed (the exit code is then 1). */
  onError?: (error: unknown) => void;
}

/**
 * Graceful drain: on one of `signals`, close the target (a Registrar deregisters everything), wait
 * `drainMs` so clients' caches drop these instances, then call `exit`. Returns a function that
 * removes the signal handlers (also removed once the drain ends, or when the target is closed some
 * other way before any signal).
 */
export function drainOnSignals(target: Drainable, opts: DrainOptions = {}): () => void {
  const signals = opts.signals ?? ['SIGTERM'];
  const drainMs = parseDuration(opts.drainMs ?? 5000, 'drainMs');
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let draining = false;
  let exited = false;
  const remove = () => {
    for (const s of signals) process.off(s, handler);
  };
  const finish = (code: number) => {
    if (exited) return;
    exited = true;
    remove();
    exit(code);
  };
  const handler = (sig: NodeJS.Signals) => {
    if (draining) return finish(1); // second signal: the operator wants out now
    draining = true;
    opts.onDrain?.({ signal: sig, drainMs });
    void (async () => {
      let code = 0;
      try {
        await target.close();
      } catch (e) {
        code = 1;
        opts.onError?.(e);
      }
      await sleep(drainMs);
      finish(code);
    })();
  };
  for (const s of signals) process.on(s, handler);
  // Closed on purpose before any signal: nothing left to drain (a drain in progress keeps them).
  target.once?.('closed', () => {
    if (!draining) remove();
  });
  return remove;
}

/** An AbortSignal that aborts on the first SIGINT or SIGTERM; `dispose` removes the handlers. */
export function terminationSignal(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const handler = (sig: NodeJS.Signals) => ac.abort(new Error(`received ${sig}`));
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/**
 * Resolves on the first SIGINT or SIGTERM (and removes its listeners), so a foreground command can
 * clean up (deregister, resign, unlock) before the process ends. A second signal while cleaning up
 * exits at once with the conventional code (130 / 143): the user asked twice.
 */
export function onTerminate(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handler = (sig: NodeJS.Signals) => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      const again = () => process.exit(sig === 'SIGINT' ? 130 : 143);
      process.once('SIGINT', again);
      process.once('SIGTERM', again);
      resolve(sig);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}
