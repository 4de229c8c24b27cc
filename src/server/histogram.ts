/**
 * A Prometheus histogram kept in plain numbers: non-cumulative counts per bucket (the last slot is
 * +Inf), a sum and a count. Observing is a short scan over the bucket bounds and no allocation.
 */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  /** The exposition lines of this histogram as `name` with `labels` (e.g. `type="http"`). */
  render(name: string, labels: string, fmt: (n: number) => string): string[] {
    const out: string[] = [];
    const sep = labels === '' ? '' : ',';
    let cum = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      cum += this.counts[i]!;
      out.push(`${name}_bucket{${labels}${sep}le="${this.bounds[i]}"} ${cum}`);
    }
    cum += this.counts[this.bounds.length]!;
    out.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${cum}`);
    const l = labels === '' ? '' : `{${labels}}`;
    out.push(`${name}_sum${l} ${fmt(this.sum)}`, `${name}_count${l} ${this.count}`);
    return out;
  }
}
