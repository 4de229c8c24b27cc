/**
 * How a long-running command (register, watch, kv watch, lock, elect) rides out an outage: it says
 * once on stderr that it lost the backend, keeps retrying (the library does), says when it is back
 * and how long it was away, and gives up (exit 3) only when the outage lasts longer than the
 * `--give-up-after` the user chose (default: never).
 */
import { Option } from 'commander';
import type { Command } from 'commander';
import { formatDuration } from '../core/duration.js';
import { UnavailableError } from '../core/errors.js';
import { describeError } from './exit.js';
import { note } from './output.js';

export function giveUpOption(cmd: Command): Command {
  return cmd.addOption(new Option('--give-up-after <duration>', 'exit (code 3) when the backend stays unreachable this long ("never": keep retrying)').default('never'));
}

export class Outage {
  private since: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly backendUrl: string,
    private readonly giveUpMs: number | undefined,
    /** Called once when the outage outlasted --give-up-after. */
    private readonly giveUp: (e: UnavailableError) => void,
  ) {}

  get down(): boolean {
    return this.since !== undefined;
  }

  /** The backend is unreachable (idempotent while it stays so). `what` says what is affected. */
  lost(cause: unknown, what: string): void {
    if (this.done || this.since !== undefined) return;
    this.since = Date.now();
    const limit = this.giveUpMs === undefined ? 'retrying' : `retrying for up to ${formatDuration(this.giveUpMs)} (--give-up-after)`;
    note(`lost ${this.backendUrl} (${what}): ${describeError(cause)}; ${limit}`);
    if (this.giveUpMs !== undefined) {
      this.timer = setTimeout(() => {
        this.done = true;
        this.giveUp(new UnavailableError(`${this.backendUrl} unreachable for ${formatDuration(this.giveUpMs!)}: giving up (--give-up-after)`, { cause }));
      }, this.giveUpMs);
    }
  }

  /** The backend answers again. */
  regained(what: string): void {
    if (this.since === undefined || this.done) return;
    const ms = Date.now() - this.since;
    this.since = undefined;
    clearTimeout(this.timer);
    note(`regained ${this.backendUrl} after ${formatDuration(Math.max(1, Math.round(ms)))} (${what})`);
  }

  dispose(): void {
    this.done = true;
    clearTimeout(this.timer);
  }
}
