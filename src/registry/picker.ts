import type { Pick, Picker, Strategy } from '../balance/types.js';
import { NoInstanceError } from '../core/errors.js';
import type { Instance } from '../core/model.js';

/** A picker bound to a cache: always picks from the latest set (rebuilt eagerly on change). */
export interface CachePicker extends Picker {
  readonly strategy: Strategy;
  /** Stop rebuilding this picker (it keeps its last set). */
  close(): void;
}

/** What a bound picker needs from its cache to explain an empty pick. */
export interface PickerSource {
  readonly service: string;
  readonly synced: boolean;
  readonly stale: boolean;
  describeEmpty(): string;
}

const EMPTY: readonly Instance[] = Object.freeze([]);

/** The picker a cache hands out: delegates to an immutable picker swapped on every change. */
export class BoundPicker implements CachePicker {
  private current!: Picker;
  isClosed = false;

  constructor(
    private readonly cache: PickerSource,
    readonly strategy: Strategy,
    private readonly onClose: (p: BoundPicker) => void,
  ) {}

  rebuild(instances: readonly Instance[]): void {
    if (instances.length === 0) {
      this.current = new EmptyPicker(this.cache);
      return;
    }
    try {
      this.current = this.strategy.build(instances);
    } catch (e) {
      this.current = new EmptyPicker(this.cache, e);
    }
  }

  get size(): number {
    return this.current.size;
  }

  get instances(): readonly Instance[] {
    return this.current.instances;
  }

  pick(key?: string): Pick {
    return this.current.pick(key);
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.onClose(this);
  }
}

class EmptyPicker implements Picker {
  readonly size = 0;
  readonly instances = EMPTY;
  constructor(
    private readonly cache: PickerSource,
    private readonly cause?: unknown,
  ) {}
  pick(): Pick {
    throw new NoInstanceError(this.cause ? `strategy failed to build a picker for service ${JSON.stringify(this.cache.service)}` : this.cache.describeEmpty(), {
      ...(this.cause ? { cause: this.cause } : {}),
      details: { service: this.cache.service, synced: this.cache.synced, stale: this.cache.stale },
    });
  }
}
