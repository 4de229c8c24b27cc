/**
 * Coordination commands:
 *   roster lock <name> -- <command...>   run a command while holding a lock
 *   roster elect <name> <value>          campaign, hold leadership until SIGINT/SIGTERM, resign
 *   roster elect --observe <name>        print every leader
 *
 * The work is done by exported functions that take an AbortSignal instead of process signals, so
 * tests drive them in-process; the commander actions only wire SIGINT/SIGTERM to that signal.
 */
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { Command, Option } from 'commander';
import type { Backend } from '../../contract/types.js';
import { parseDuration, parseTtl } from '../../core/duration.js';
import { InvalidArgumentError, TimeoutError, isRosterError } from '../../core/errors.js';
import { lock, type Lock } from '../../recipes/lock.js';
import { Election, observeLeaders, type Leader } from '../../recipes/election.js';
import { recipeDir } from '../../recipes/internal.js';
import { terminationSignal } from '../../integrations/process.js';

export interface RunLockedOptions {
  ttl: number;
  /** Give up waiting for the lock after this many ms. */
  timeout?: number;
  prefix?: string;
  /** Ends the wait, or (once running) forwards SIGTERM to the command. */
  signal?: AbortSignal;
  /** After SIGTERM (lock lost or interrupted), SIGKILL the command after this many ms. */
  killGrace?: number;
  /** Status lines (default: stderr). */
  log?: (line: string) => void;
  /** Child stdio (default: inherit). */
  stdio?: 'inherit' | 'ignore' | 'pipe';
}

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

/**
 * Acquire the lock, run `command` with ROSTER_FENCING_TOKEN (and ROSTER_LOCK_KEY) in its
 * environment, release the lock when it exits. Returns the exit status to use: the command's own
 * (128+n when killed by signal n); when the lock was lost while it ran, the command is sent SIGTERM
 * (SIGKILL after the grace period) and the status is never 0.
 */
export async function runLocked(backend: Backend, name: string, command: string[], opts: RunLockedOptions): Promise<number> {
  if (command.length === 0) throw new InvalidArgumentError('roster lock needs a command after "--"');
  const log = opts.log ?? ((l: string) => process.stderr.write(`roster: ${l}\n`));
  const session = await backend.session({ ttl: opts.ttl });
  let held: Lock | undefined;
  try {
    const waitSignal = AbortSignal.any([
      ...(opts.signal ? [opts.signal] : []),
      ...(opts.timeout !== undefined ? [AbortSignal.timeout(opts.timeout)] : []),
    ]);
    try {
      held = await lock(backend, session, name, { signal: waitSignal, value: `${hostname()}:${process.pid}`, ...(opts.prefix ? { prefix: opts.prefix } : {}) });
    } catch (e) {
      if (e instanceof DOMException && e.name === 'TimeoutError') {
        throw new TimeoutError(`lock ${name} not acquired within ${opts.timeout} ms`, { cause: e });
      }
      throw e;
    }
    const l = held;
    log(`acquired lock ${name} (fencing token ${l.token})`);
    const child = spawn(command[0]!, command.slice(1), {
      stdio: opts.stdio ?? 'inherit',
      env: { ...process.env, ROSTER_FENCING_TOKEN: String(l.token), ROSTER_LOCK_KEY: l.key },
    });
    const grace = opts.killGrace ?? 5000;
    let lost = false;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: string) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      log(why);
      child.kill('SIGTERM');
      killTimer ??= setTimeout(() => child.kill('SIGKILL'), grace);
      killTimer.unref();
    };
    const onLost = () => {
      if (!l.lost) return;
      lost = true;
      stop(`lock ${name} lost (${describe(l.signal.reason)}): stopping the command`);
    };
    const onInterrupt = () => stop('interrupted: stopping the command');
    l.signal.addEventListener('abort', onLost, { once: true });
    opts.signal?.addEventListener('abort', onInterrupt, { once: true });
    const status = await new Promise<number>((resolve) => {
      child.once('error', (e) => {
        log(`cannot run ${command[0]}: ${e.message}`);
        resolve(127);
      });
      child.once('exit', (code, sig) => resolve(code ?? 128 + (SIGNAL_NUMBERS[sig as NodeJS.Signals] ?? 0)));
    });
    clearTimeout(killTimer);
    l.signal.removeEventListener('abort', onLost);
    opts.signal?.removeEventListener('abort', onInterrupt);
    return lost && status === 0 ? 1 : status;
  } finally {
    try {
      await held?.unlock();
    } finally {
      await session.close();
    }
  }
}

export interface ElectOptions {
  ttl: number;
  prefix?: string;
  /** Ends the campaign or, once leader, resigns. */
  signal?: AbortSignal;
  print?: (line: string) => void;
  json?: boolean;
}

function formatLeader(l: Leader, json: boolean | undefined): string {
  return json
    ? JSON.stringify({ key: l.key, value: l.value, term: l.createRevision, revision: l.modRevision })
    : `leader ${l.value} (key ${l.key}, term ${l.createRevision})`;
}

/**
 * Campaign with `value`, print once elected, hold until `signal` aborts, then resign.
 * Returns 0 after a normal resign, 1 if leadership was lost while held.
 */
export async function runElect(backend: Backend, name: string, value: string, opts: ElectOptions): Promise<number> {
  const print = opts.print ?? ((l: string) => process.stdout.write(l + '\n'));
  const session = await backend.session({ ttl: opts.ttl });
  const election = new Election(backend, session, name, opts.prefix ? { prefix: opts.prefix } : {});
  try {
    try {
      await election.campaign(value, opts.signal ? { signal: opts.signal } : {});
    } catch (e) {
      if (opts.signal?.aborted && e === opts.signal.reason) return 0; // interrupted while waiting: nothing held
      throw e;
    }
    print(
      opts.json
        ? JSON.stringify({ elected: true, key: election.key, value, term: election.term })
        : `elected: ${name} = ${value} (key ${election.key}, term ${election.term})`,
    );
    const lost = await new Promise<boolean>((resolve) => {
      const lead = election.signal!;
      const done = () => resolve(!opts.signal?.aborted && lead.aborted);
      lead.addEventListener('abort', done, { once: true });
      opts.signal?.addEventListener('abort', done, { once: true });
      if (lead.aborted || opts.signal?.aborted) done();
    });
    if (lost) {
      process.stderr.write(`roster: leadership of ${name} lost: ${describe(election.signal?.reason)}\n`);
      return 1;
    }
    return 0;
  } finally {
    try {
      await election.resign();
    } finally {
      await session.close();
    }
  }
}

/** Print every leader of the election until `signal` aborts. */
export async function runObserve(backend: Backend, name: string, opts: { prefix?: string; signal?: AbortSignal; print?: (line: string) => void; json?: boolean }): Promise<void> {
  const print = opts.print ?? ((l: string) => process.stdout.write(l + '\n'));
  const prefix = recipeDir('elections', name, opts.prefix);
  try {
    for await (const l of observeLeaders(backend, prefix, opts.signal)) print(formatLeader(l, opts.json));
  } catch (e) {
    if (opts.signal?.aborted && e === opts.signal.reason) return;
    throw e;
  }
}

function describe(e: unknown): string {
  if (isRosterError(e)) return `${e.message} [${e.code}]`;
  return e instanceof Error ? e.message : String(e);
}

export function registerRecipeCommands(program: Command, getBackend: () => Promise<Backend>): void {
  program
    .command('lock')
    .description('run a command while holding a distributed lock; its fencing token is in $ROSTER_FENCING_TOKEN')
    .argument('<name>', 'lock name')
    .argument('<command...>', 'the command to run, after "--"')
    .addOption(new Option('--ttl <duration>', 'session TTL: the lock is freed this long after this process dies').default('10s'))
    .addOption(new Option('--timeout <duration>', 'give up if the lock is not acquired within this time'))
    .addOption(new Option('--prefix <prefix>', 'key prefix instead of locks/<name>/ (e.g. the bare name for etcdctl lock / Go interop)'))
    .addOption(new Option('--kill-grace <duration>', 'after SIGTERM, SIGKILL the command after this long').default('5s'))
    .addHelpText('after', '\nExit status: the command\'s; 128+n if it was killed by signal n; never 0 if the lock was lost while it ran.\nExample: roster lock nightly-report -- ./report.sh --full')
    .action(async (name: string, command: string[], opts: { ttl: string; timeout?: string; prefix?: string; killGrace: string }) => {
      const ttl = parseTtl(opts.ttl);
      const timeout = opts.timeout === undefined ? undefined : parseDuration(opts.timeout, 'timeout');
      const killGrace = parseDuration(opts.killGrace, 'kill-grace');
      const backend = await getBackend();
      const term = terminationSignal();
      try {
        process.exitCode = await runLocked(backend, name, command, {
          ttl,
          killGrace,
          signal: term.signal,
          ...(timeout !== undefined ? { timeout } : {}),
          ...(opts.prefix ? { prefix: opts.prefix } : {}),
        });
      } finally {
        term.dispose();
      }
    });

  program
    .command('elect')
    .description('campaign for leadership and hold it until SIGINT/SIGTERM (then resign); with --observe, print every leader')
    .argument('<name>', 'election name')
    .argument('[value]', 'the value to proclaim as leader')
    .option('--observe', 'do not campaign: print each leader as it changes')
    .addOption(new Option('--ttl <duration>', 'session TTL: leadership passes on this long after this process dies').default('10s'))
    .addOption(new Option('--prefix <prefix>', "key prefix instead of elections/<name>/ (use '<name>/' to join `etcdctl elect <name>` and Go concurrency.Election on etcd)"))
    .option('--json', 'print JSON lines')
    .action(async (name: string, value: string | undefined, opts: { observe?: boolean; ttl: string; prefix?: string; json?: boolean }) => {
      const ttl = parseTtl(opts.ttl);
      if (!opts.observe && value === undefined) throw new InvalidArgumentError('roster elect needs a value to campaign with (or --observe)');
      if (opts.observe && value !== undefined) throw new InvalidArgumentError('roster elect --observe takes no value');
      const backend = await getBackend();
      const term = terminationSignal();
      try {
        const common = { signal: term.signal, ...(opts.prefix ? { prefix: opts.prefix } : {}), ...(opts.json ? { json: true } : {}) };
        if (opts.observe) await runObserve(backend, name, common);
        else process.exitCode = await runElect(backend, name, value!, { ttl, ...common });
      } finally {
        term.dispose();
      }
    });
}
