/**
 * Time, as the parts of roster whose behaviour depends on it see it (session renewal, retry
 * pacing, staleness stamps). Production code uses `systemClock`; tests inject a fake one
 * (`FakeClock` in roster-sd/testing) and advance it instead of waiting on the wall clock.
 *
 * Contract: `setTimeout` never keeps the process alive (the system clock's timers are unref()'d).
 * What keeps a process alive is decided once, in core/lifetime.ts.
 */
export interface Timer {
  /** Cancel; idempotent, harmless after the timer fired. */
  clear(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Run `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { clear: () => clearTimeout(t) };
  },
};
