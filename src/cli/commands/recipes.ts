/**
 * Coordination commands:
 *   roster lock <name> -- <command...>   run a command while holding a lock
 *   roster elect <name> <value>          campaign, hold leadership until SIGINT/SIGTERM, resign
 *   roster elect --observe <name>        print every leader, and when there is none
 *
 * Both ride out outages while *waiting* (a lost session is replaced and the wait resumes; lost and
 * regained are said on stderr; `--give-up-after` bounds it) and say who holds the lock / leads while
 * they wait. A lock lost while its command runs is never ridden out: the command is stopped and the
 * exit status is 6. Leadership lost while held is campaigned for again.
 *
 * The work is done by exported functions that take an AbortSignal instead of process signals, so
 * tests drive them in-process; the commander actions only wire SIGINT/SIGTERM to that signal.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { delimiter, isAbsolute, join } from 'node:path';
import { Command, Option } from 'commander';
import type { Backend, KeyValue, Session } from '../../contract/types.js';
import { WatchedPrefix } from '../../contract/watched-prefix.js';
import { backoff, sleep } from '../../core/async.js';
import { formatDuration } from '../../core/duration.js';
import { InvalidArgumentError, isRosterError } from '../../core/errors.js';
import { lock, type Lock } from '../../recipes/lock.js';
import { Election } from '../../recipes/election.js';
import { directChild, recipeDir } from '../../recipes/internal.js';
import { lineOf, type Line, type LineName } from '../../recipes/line.js';
import { terminationSignal } from '../../integrations/process.js';
import { CliError, describeError, EXIT } from '../exit.js';
import { duration, giveUpAfter, ttl as parseTtl } from '../options.js';
import { note, out, timestamp } from '../output.js';
import { giveUpOption, Outage } from '../outage.js';
import type { CliContext } from '../shared.js';

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

/** Exit status for an interruption by `reason` (130 for SIGINT, 143 for SIGTERM, else 130). */
function interrupted(reason: unknown): number {
  return reason instanceof Error && /SIGTERM/.test(reason.message) ? 143 : 130;
}

/**
 * Fail before waiting for a lock when the command cannot run: 127 when it is not found (on $PATH,
 * or at the path given), 126 when it is not an executable file (what a shell answers).
 */
export function checkCommand(cmd: string | undefined, env: NodeJS.ProcessEnv = process.env): void {
  if (cmd === undefined || cmd === '') throw new InvalidArgumentError('lock needs a command after "--", e.g. roster lock nightly-job -- ./run-job.sh');
  const executable = (p: string): 'ok' | 'missing' | 'not-executable' => {
    try {
      if (!statSync(p).isFile()) return 'not-executable';
      accessSync(p, constants.X_OK);
      return 'ok';
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR' ? 'missing' : 'not-executable';
    }
  };
  if (cmd.includes('/') || isAbsolute(cmd)) {
    const r = executable(cmd);
    if (r === 'missing') throw new CliError(`cannot run ${cmd}: not found`, EXIT.COMMAND_NOT_FOUND);
    if (r === 'not-executable') throw new CliError(`cannot run ${cmd}: not an executable file`, EXIT.CANNOT_EXECUTE);
    return;
  }
  let sawNotExecutable = false;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const r = executable(join(dir, cmd));
    if (r === 'ok') return;
    if (r === 'not-executable') sawNotExecutable = true;
  }
  if (sawNotExecutable) throw new CliError(`cannot run ${cmd}: not an executable file`, EXIT.CANNOT_EXECUTE);
  throw new CliError(`cannot run ${cmd}: not found on $PATH`, EXIT.COMMAND_NOT_FOUND);
}

/** What `lock` and `elect` share while they wait: who is first in the directory, said on stderr;
 *  outages of that view reported to `outage`. */
function holderView(backend: Backend, dir: string, kind: LineName, say: (holder: KeyValue | undefined) => void, outage: Outage | undefined, what: string): WatchedPrefix {
  const view = new WatchedPrefix(backend, dir, { filter: (k) => directChild(dir, k), keepProcessAlive: false });
  const line = lineOf(backend, dir, kind);
  let last: string | undefined;
  view.on('change', ({ resync }) => {
    const h = first(line, view);
    const id = h ? `${h.key}@${h.createRevision}:${h.value}` : '';
    if (id !== last) {
      last = id;
      say(h);
    }
    if (resync) outage?.regained(what);
  });
  view.on('stale', ({ error }) => outage?.lost(error, what));
  view.on('fresh', () => outage?.regained(what));
  return view;
}

const who = (kv: KeyValue) => (kv.value !== '' ? kv.value : kv.key);

/** Who holds the lock / leads: the first of the line in the recipe's own order (creation order, or
 *  Curator's on ZooKeeper). A directory the recipe would refuse (mixed formats) shows no holder; the
 *  recipe itself reports why. */
function first(line: Line, view: WatchedPrefix): KeyValue | undefined {
  try {
    return line.order(view.items.values())[0];
  } catch {
    return undefined;
  }
}

/** Waiting went wrong: retry (the session or the connection went away) or not. */
function retryable(e: unknown): boolean {
  return isRosterError(e, 'SESSION_LOST') || isRosterError(e, 'UNAVAILABLE') || isRosterError(e, 'TIMEOUT') || isRosterError(e, 'LOCK_LOST');
}

export interface WaitOptions {
  ttl: number;
  prefix?: string;
  /** Ends the wait (interrupt): the function resolves / returns the interrupt status. */
  signal?: AbortSignal;
  /** Bounds the first contact with the backend (default: none). */
  connect?: AbortSignal;
  /** Long outages: aborts with the give-up error. */
  giveUp?: AbortSignal;
  outage?: Outage;
  /** Status lines (default: stderr `roster: ...`). */
  log?: (line: string) => void;
}

export interface RunLockedOptions extends WaitOptions {
  /** Give up if the lock is not acquired within this many ms (exit 7). */
  timeout?: number;
  /** After SIGTERM (lock lost or interrupted), SIGKILL the command after this many ms. */
  killGrace?: number;
  /** Child stdio (default: inherit). */
  stdio?: 'inherit' | 'ignore' | 'pipe';
}

/** A session, the first one bounded by `connect`; later ones retried through outages. */
async function freshSession(backend: Backend, opts: WaitOptions, first: boolean, signal: AbortSignal): Promise<Session> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await backend.session({ ttl: opts.ttl, signal: first && opts.connect ? AbortSignal.any([signal, opts.connect]) : signal });
    } catch (e) {
      if (first || signal.aborted || !retryable(e)) throw signal.aborted ? signal.reason : e;
      opts.outage?.lost(e, 'creating a session');
      await sleep(backoff(attempt, 100, 5000), signal).catch(() => undefined);
    }
  }
}

/**
 * Check the command, acquire the lock (saying who holds it while waiting, riding out outages), run
 * `command` with ROSTER_FENCING_TOKEN (and ROSTER_LOCK_KEY) in its environment, release the lock
 * when it exits. Returns the exit status: the command's own (128+n when killed by signal n); 6
 * when the lock was lost while it ran (the command is sent SIGTERM, SIGKILL after the grace
 * period); 130/143 when interrupted while waiting. Throws CliError(7) on --timeout, (126/127) when
 * the command cannot run, and the give-up error after --give-up-after.
 */
export async function runLocked(backend: Backend, name: string, command: string[], opts: RunLockedOptions): Promise<number> {
  checkCommand(command[0]);
  const log = opts.log ?? note;
  const dir = recipeDir(backend, 'locks', name, opts.prefix);
  const timeout = opts.timeout !== undefined ? AbortSignal.timeout(opts.timeout) : undefined;
  const wait = AbortSignal.any([opts.signal, timeout, opts.giveUp].filter((s): s is AbortSignal => s !== undefined));
  let session: Session | undefined;
  let held: Lock | undefined;
  let myKey: string | undefined;
  let view: WatchedPrefix | undefined;
  try {
    for (let attempt = 0; ; attempt++) {
      if (!session || session.signal.aborted) session = await freshSession(backend, opts, attempt === 0, wait);
      myKey = dir + backend.sessionKey(session);
      // Who holds it, said while we wait (after the first contact: a failure before is an error).
      view ??= holderView(
        backend,
        dir,
        'lock',
        (h) => {
          if (h && h.key !== myKey && !held) log(`waiting for lock ${name}: held by ${who(h)} (fencing token ${h.createRevision})`);
        },
        opts.outage,
        `waiting for lock ${name}`,
      );
      try {
        held = await lock(backend, session, name, { signal: wait, value: `${hostname()}:${process.pid}`, ...(opts.prefix ? { prefix: opts.prefix } : {}) });
        break;
      } catch (e) {
        if (wait.aborted) break;
        if (attempt === 0 && opts.connect?.aborted) throw opts.connect.reason;
        if (!retryable(e)) throw e;
        opts.outage?.lost(e, `waiting for lock ${name}`);
        await sleep(backoff(attempt, 100, 5000), wait).catch(() => undefined);
      }
    }
  } catch (e) {
    await session?.close().catch(() => undefined);
    throw e;
  } finally {
    view?.close();
  }
  if (!held) {
    await session?.close().catch(() => undefined);
    if (opts.giveUp?.aborted) throw opts.giveUp.reason;
    if (timeout?.aborted) throw new CliError(`lock ${name} not acquired within ${formatDuration(opts.timeout!)} (--timeout)`, EXIT.TIMEOUT);
    return interrupted(opts.signal?.reason);
  }
  opts.outage?.regained(`lock ${name} acquired`);
  const l = held;
  try {
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
      stop(`lock ${name} lost (${describeError(l.signal.reason)}): stopping the command`);
    };
    const onInterrupt = () => stop('interrupted: stopping the command');
    l.signal.addEventListener('abort', onLost, { once: true });
    opts.signal?.addEventListener('abort', onInterrupt, { once: true });
    const status = await new Promise<number>((resolve) => {
      child.once('error', (e) => {
        log(`cannot run ${command[0]}: ${e.message}`);
        resolve((e as NodeJS.ErrnoException).code === 'ENOENT' ? EXIT.COMMAND_NOT_FOUND : EXIT.CANNOT_EXECUTE);
      });
      child.once('exit', (code, sig) => resolve(code ?? 128 + (SIGNAL_NUMBERS[sig as NodeJS.Signals] ?? 0)));
    });
    clearTimeout(killTimer);
    l.signal.removeEventListener('abort', onLost);
    opts.signal?.removeEventListener('abort', onInterrupt);
    if (lost) {
      log(`the command exited with status ${status} after the lock was lost`);
      return EXIT.LOST;
    }
    return status;
  } finally {
    try {
      await held.unlock();
    } finally {
      await session!.close();
    }
  }
}

export interface ElectOptions extends WaitOptions {
  print?: (line: string) => void;
  json?: boolean;
  /** Give up if not elected within this many ms (exit 7). */
  timeout?: number;
}

/**
 * Campaign with `value`, print once elected, hold until `signal` aborts, then resign. Leadership
 * lost while held (the session expired) is said on stderr and campaigned for again. Returns 0 after
 * an interrupt; throws CliError(7) on --timeout, the give-up error after --give-up-after.
 */
export async function runElect(backend: Backend, name: string, value: string, opts: ElectOptions): Promise<number> {
  const print = opts.print ?? out;
  const log = opts.log ?? note;
  const dir = recipeDir(backend, 'elections', name, opts.prefix);
  const timeout = opts.timeout !== undefined ? AbortSignal.timeout(opts.timeout) : undefined;
  const end = AbortSignal.any([opts.signal, opts.giveUp].filter((s): s is AbortSignal => s !== undefined));
  let session: Session | undefined;
  let election: Election | undefined;
  let first = true;
  let view: WatchedPrefix | undefined;
  try {
    for (let attempt = 0; !end.aborted; attempt++) {
      if (!session || session.signal.aborted) session = await freshSession(backend, opts, first, end);
      election = new Election(backend, session, name, opts.prefix ? { prefix: opts.prefix } : {});
      view ??= holderView(
        backend,
        dir,
        'latch',
        (h) => {
          if (election?.isLeader) return;
          if (h && h.key !== election?.key) log(`waiting for election ${name}: leader is ${who(h)} (term ${h.createRevision})`);
        },
        opts.outage,
        `campaigning in ${name}`,
      );
      try {
        await election.campaign(value, { signal: first && timeout ? AbortSignal.any([end, timeout]) : end });
      } catch (e) {
        if (end.aborted) break;
        if (timeout?.aborted && first) throw new CliError(`not elected in ${name} within ${formatDuration(opts.timeout!)} (--timeout)`, EXIT.TIMEOUT);
        if (first && opts.connect?.aborted) throw opts.connect.reason;
        if (!retryable(e)) throw e;
        opts.outage?.lost(e, `campaigning in ${name}`);
        await sleep(backoff(attempt, 100, 5000), end).catch(() => undefined);
        continue;
      }
      first = false;
      attempt = 0;
      opts.outage?.regained(`elected in ${name}`);
      print(
        opts.json
          ? JSON.stringify({ time: timestamp(), elected: true, key: election.key, value, term: election.term })
          : `elected: ${name} = ${value} (key ${election.key}, term ${election.term})`,
      );
      const lead = election.signal!;
      await new Promise<void>((resolve) => {
        if (lead.aborted || end.aborted) return resolve();
        lead.addEventListener('abort', () => resolve(), { once: true });
        end.addEventListener('abort', () => resolve(), { once: true });
      });
      if (end.aborted) break;
      log(`leadership of ${name} lost (${describeError(lead.reason)}): campaigning again`);
      await election.resign().catch(() => undefined); // releases this process's claim on the key
    }
  } finally {
    view?.close();
    try {
      await election?.resign();
    } finally {
      await session?.close();
    }
  }
  if (opts.giveUp?.aborted) throw opts.giveUp.reason;
  return EXIT.OK;
}

/** Print every leader of the election, and `vacant` when there is none, until `signal` aborts. */
export async function runObserve(backend: Backend, name: string, opts: Omit<ElectOptions, 'ttl' | 'timeout'>): Promise<void> {
  const print = opts.print ?? out;
  const dir = recipeDir(backend, 'elections', name, opts.prefix);
  const end = AbortSignal.any([opts.signal, opts.giveUp].filter((s): s is AbortSignal => s !== undefined));
  const view = new WatchedPrefix(backend, dir, { filter: (k) => directChild(dir, k), signal: end });
  const line = lineOf(backend, dir, 'latch');
  let last: string | undefined;
  view.on('change', ({ revision, resync }) => {
    const l = first(line, view);
    const id = l ? `${l.key}@${l.createRevision}:${l.value}` : 'vacant';
    if (resync) opts.outage?.regained(`observing ${name}, re-synced`);
    if (id === last) return;
    last = id;
    if (!l) print(opts.json ? JSON.stringify({ time: timestamp(), type: 'vacant', revision }) : `${timestamp()}  VACANT  no leader of ${name}`);
    else
      print(
        opts.json
          ? JSON.stringify({ time: timestamp(), type: 'leader', key: l.key, value: l.value, term: l.createRevision, revision: l.modRevision })
          : `${timestamp()}  LEADER  ${l.value} (key ${l.key}, term ${l.createRevision})`,
      );
  });
  try {
    await view.ready({ failFast: true, ...(opts.connect ? { signal: AbortSignal.any([opts.connect, end]) } : { signal: end }) });
    view.on('stale', ({ error }) => opts.outage?.lost(error, `observing ${name}`));
    view.on('fresh', () => opts.outage?.regained(`observing ${name}`));
    await new Promise<void>((resolve, reject) => {
      view.on('ended', ({ error }) => (error === undefined || opts.signal?.aborted ? resolve() : reject(opts.giveUp?.aborted ? opts.giveUp.reason : error)));
      if (view.ended) resolve();
    });
  } catch (e) {
    if (opts.giveUp?.aborted) throw opts.giveUp.reason;
    if (!opts.signal?.aborted) throw e;
  } finally {
    view.close();
  }
}

interface RecipeFlags {
  ttl: string;
  timeout?: string;
  prefix?: string;
  giveUpAfter: string;
}

/** Wire SIGINT/SIGTERM, --connect-timeout and --give-up-after around a recipe run. */
async function withRecipeSignals<T>(ctx: CliContext, backend: Backend, o: RecipeFlags, run: (w: WaitOptions & { prefix?: string }) => Promise<T>): Promise<T> {
  const giveUp = giveUpAfter(o.giveUpAfter);
  const term = terminationSignal();
  const giveUpAc = new AbortController();
  const outage = new Outage(backend.url, giveUp, (e) => giveUpAc.abort(e));
  try {
    return await run({
      ttl: parseTtl(o.ttl),
      signal: term.signal,
      connect: ctx.deadline(),
      giveUp: giveUpAc.signal,
      outage,
      ...(o.prefix !== undefined ? { prefix: ctx.name(backend, o.prefix, '--prefix') } : {}),
    });
  } finally {
    outage.dispose();
    term.dispose();
  }
}

export function registerRecipeCommands(program: Command, ctx: CliContext): void {
  giveUpOption(program.command('lock'))
    .description('run a command while holding a distributed lock; its fencing token is in $ROSTER_FENCING_TOKEN')
    .argument('<name>', 'lock name')
    .argument('<command...>', 'the command to run, after "--"')
    .addOption(new Option('--ttl <duration>', 'session TTL: the lock is freed this long after this process dies').default('10s'))
    .addOption(new Option('--timeout <duration>', 'give up (exit 7) if the lock is not acquired within this time'))
    .addOption(new Option('--prefix <prefix>', "key prefix instead of locks/<name>/ (Go's concurrency.NewMutex(s, \"/locks/job\") on etcd://h:2379/: --prefix /locks/job)"))
    .addOption(new Option('--kill-grace <duration>', 'after SIGTERM, SIGKILL the command after this long').default('5s'))
    .addHelpText(
      'after',
      [
        '',
        'The command is checked (found and executable) before waiting. While waiting, who holds the lock is said on stderr.',
        "Exit status: the command's; 128+n if it was killed by signal n; 6 if the lock was lost while it ran (the command is",
        'stopped); 7 on --timeout; 126/127 when the command cannot run; 3 when the backend is unreachable.',
        'Example: roster lock nightly-report -- ./report.sh --full',
      ].join('\n'),
    )
    .action(async (name: string, command: string[], o: RecipeFlags & { killGrace: string }) => {
      checkCommand(command[0]);
      const timeout = o.timeout === undefined ? undefined : duration(o.timeout, 'timeout', { min: 1 });
      const killGrace = duration(o.killGrace, 'kill-grace');
      const backend = await ctx.backend();
      process.exitCode = await withRecipeSignals(ctx, backend, o, (w) => runLocked(backend, name, command, { ...w, killGrace, ...(timeout !== undefined ? { timeout } : {}) }));
    });

  giveUpOption(program.command('elect'))
    .description('campaign for leadership and hold it until SIGINT/SIGTERM (then resign); with --observe, print every leader and vacancies')
    .argument('<name>', 'election name')
    .argument('[value]', 'the value to proclaim as leader')
    .addOption(new Option('--observe', 'do not campaign: print each leader as it changes, and VACANT when there is none'))
    .addOption(new Option('--ttl <duration>', 'session TTL: leadership passes on this long after this process dies').default('10s'))
    .addOption(new Option('--timeout <duration>', 'give up (exit 7) if not elected within this time'))
    .addOption(new Option('--prefix <prefix>', "key prefix instead of elections/<name>/ (use '<name>/' to join `etcdctl elect <name>` and Go concurrency.Election on etcd)"))
    .addHelpText('after', '\nWhile waiting, the current leader is said on stderr; leadership lost while held is campaigned for again.\nExample: roster elect scheduler "$(hostname)"')
    .action(async (name: string, value: string | undefined, o: RecipeFlags & { observe?: boolean }) => {
      if (!o.observe && value === undefined) throw new InvalidArgumentError('elect needs a value to campaign with (or --observe)');
      if (o.observe && value !== undefined) throw new InvalidArgumentError('elect --observe takes no value');
      const timeout = o.timeout === undefined ? undefined : duration(o.timeout, 'timeout', { min: 1 });
      parseTtl(o.ttl);
      const backend = await ctx.backend();
      await withRecipeSignals(ctx, backend, o, async (w) => {
        const common = { ...w, ...(ctx.json ? { json: true } : {}) };
        if (o.observe) await runObserve(backend, name, common);
        else process.exitCode = await runElect(backend, name, value!, { ...common, ...(timeout !== undefined ? { timeout } : {}) });
      });
    });
}
