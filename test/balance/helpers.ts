import { toInstance, type Instance, type InstanceInput } from '../../src/core/model.js';
import type { CallResult, Picker } from '../../src/balance/index.js';

/** `n` validated instances of service "svc", ids i0..i(n-1), with optional per-index fields. */
export function fleet(n: number, f: (i: number) => Partial<InstanceInput> = () => ({}), prefix = 'i'): Instance[] {
  return Array.from({ length: n }, (_, i) =>
    toInstance({ service: 'svc', id: `${prefix}${i}`, address: `10.0.${i >> 8}.${i & 255}`, port: 8080, ...f(i) }),
  );
}

/** A manual clock in ms. */
export class FakeClock {
  t = 0;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Pick `count` times, completing each pick at once with `result`; counts per instance id. */
export function countPicks(picker: Picker, count: number, opts: { key?: (i: number) => string; result?: CallResult } = {}): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const p = picker.pick(opts.key?.(i));
    counts.set(p.instance.id, (counts.get(p.instance.id) ?? 0) + 1);
    p.done(opts.result);
  }
  return counts;
}

export function share(counts: Map<string, number>, id: string): number {
  let total = 0;
  for (const v of counts.values()) total += v;
  return (counts.get(id) ?? 0) / total;
}
