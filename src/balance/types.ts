import type { Instance } from '../core/model.js';

/**
 * Balancing, after grpc-go's balancer: a Strategy turns a snapshot of instances into an immutable
 * Picker. `pick()` is synchronous, never blocks, and throws NoInstanceError (code NO_INSTANCE) when
 * nothing can be picked (never returns "" or null). Strategies that learn (P2C+EWMA,
 * least-outstanding, outlier ejection, slow start) keep their per-instance figures in the Strategy,
 * keyed by instance id, so they survive a rebuild of the picker when the set changes; an id absent
 * from the latest build is forgotten (it starts afresh if it comes back).
 *
 * Every strategy excludes instances with weight 0 ("no traffic", see Instance.weight) and prefers
 * instances with status "up": "draining" instances, and instances whose health checks are
 * "critical", are picked only when no other one is left.
 */

/** What the caller reports when the call made with a picked instance finishes. */
export interface CallResult {
  /** True when the call failed in a way that says something about the instance (connect error,
   *  5xx, timeout). Client errors (4xx) are not the instance's fault: report ok. */
  readonly error?: boolean;
  /** Wall time of the call in ms; when omitted, the picker measures from pick() to done()
   *  (only strategies that use latency, i.e. p2c, read the clock for this). */
  readonly latencyMs?: number;
  /** The pick was not used (e.g. the caller skipped it to try another instance): only release it;
   *  no latency or failure is recorded. */
  readonly unused?: boolean;
}

/**
 * One pick. To keep `pick()` allocation-free, Pick objects are pooled by the strategy and recycled
 * once `done()` has been called. The contract is therefore:
 * - call `done()` exactly once per pick (a second call right after the first is ignored, but once
 *   the object has been recycled by a later pick, a stray call would complete that other pick);
 * - read `instance` before calling `done()`, and do not keep the Pick afterwards;
 * - `done` is bound: `const { instance, done } = picker.pick()` works.
 * A pick whose `done()` is never called leaks one "outstanding request" on its instance, which
 * least-outstanding and p2c then hold against it.
 */
export interface Pick {
  readonly instance: Instance;
  done(result?: CallResult): void;
}

export interface Picker {
  /** Number of instances this picker can choose from right now (after weight-0, draining and
   *  ejected instances are set aside). */
  readonly size: number;
  /** The snapshot the picker was built from (deduplicated by id, in input order). Never changes. */
  readonly instances: readonly Instance[];
  /** Choose one instance. `key` selects stickily for consistent-hash (where it is required) and is
   *  ignored by the others. Throws NoInstanceError when nothing can be picked. */
  pick(key?: string): Pick;
}

/** Use one Strategy per service (per set of instances): building over another set forgets the
 *  figures of every instance not in it, and makes instances seen again count as new (slow start).
 *  Wrappers (outlierDetection, slowStart, zoneAware) return a new Strategy with its own figures. */
export interface Strategy {
  readonly name: string;
  /** Build a picker over this snapshot. Cheap enough to call on every change of the set
   *  (well under 1 ms at 1,000 instances, except consistent-hash: a few ms for its Maglev table). */
  build(instances: readonly Instance[]): Picker;
}

/** Sources of randomness and time, injectable so tests are deterministic. */
export interface BalanceOptions {
  /** Uniform in [0, 1). Default: a `seededRandom` seeded from Math.random. `seededRandom(seed)`
   *  gives a reproducible one. Other functions work, but one returning fractions (Math.random
   *  included) allocates a HeapNumber per call on Node 20, so picks would allocate. */
  random?: () => number;
  /** Monotonic milliseconds. Default performance.now. */
  now?: () => number;
  /** Under load, let one clock reading serve the picks of about this many ms instead of reading
   *  the clock on every pick (reading it costs ~40 ns and, on Node 20, allocates). It only delays
   *  EWMA decay, re-admission and slow-start ramps by that much; measured latencies always use
   *  fresh readings, so when the picker measures latency itself (done() without latencyMs) it
   *  measures, under load, a sample of its picks: those that read the clock, about one per this
   *  many ms. Default 1 with the default clock, 0 (read every time) with a custom `now`. */
  clockReuseMs?: number;
}

/** Envoy-style outlier detection (consecutive failures). Durations in ms or strings like "30s". */
export interface OutlierOptions {
  /** Failures in a row, reported as done({ error: true }), that eject an instance. Default 5. */
  consecutiveFailures?: number;
  /** First ejection lasts this long; the n-th (0-based) lasts base * 2^n. Default 30 s. */
  baseEjectionTime?: number | string;
  /** Cap on one ejection's duration. Default 300 s. Also the healthy time after which an
   *  instance's back-off steps down by one. */
  maxEjectionTime?: number | string;
  /** Never eject more than this share of the set (rounded down). Default 50. */
  maxEjectionPercent?: number;
}

/** Envoy-style slow start: a newly seen instance's share ramps up over a window. */
export interface SlowStartOptions {
  /** Ramp duration. Default 30 s. */
  window?: number | string;
  /** Share factor = (elapsed / window) ^ (1 / aggression). 1 = linear (default); > 1 ramps faster early. */
  aggression?: number;
  /** Floor of the factor, in percent. Default 10. */
  minWeightPercent?: number;
}

/** Per-instance figures a strategy keeps (for dashboards, the CLI and tests). */
export interface InstanceStats {
  readonly id: string;
  readonly outstanding: number;
  /** Peak-EWMA latency estimate in ms (p2c only; 0 before the first observation). */
  readonly latencyMs: number;
  readonly consecutiveFailures: number;
  readonly ejected: boolean;
  /** When the current ejection ends (same clock as `now`), or undefined. */
  readonly ejectedUntil: number | undefined;
  /** Ejections so far, after step-down for healthy time; the next one lasts base * 2^this. */
  readonly ejections: number;
  /** When the strategy first saw the instance (-Infinity for the first snapshot it was given). */
  readonly firstSeen: number;
}
