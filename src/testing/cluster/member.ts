/**
 * What an etcd member and a ZooKeeper node have in common as test fixtures: one server process
 * (started, killed with any signal, restarted, paused), a proxy in front of its client port, and
 * the group they form (the live ones, closing them all).
 */
import { rm } from 'node:fs/promises';
import type { Child } from './processes.js';
import { untrackDir } from './processes.js';
import type { TcpProxy } from './proxy.js';

export abstract class ServerProcess {
  /** The proxy in front of this server's client port (set by its cluster unless `proxies: false`). */
  proxy: TcpProxy | undefined;
  protected child: Child | undefined;
  /** Times started. */
  starts = 0;

  abstract readonly name: string;
  /** `127.0.0.1:<client port>`: the server itself, bypassing its proxy. */
  abstract readonly endpoint: string;
  /** Spawn the process; with `wait` (default) resolve once it serves clients. */
  abstract start(opts?: { wait?: boolean; timeoutMs?: number }): Promise<void>;

  /** Where clients should connect: the proxy when there is one, else the server itself. */
  get clientEndpoint(): string {
    return this.proxy?.endpoint ?? this.endpoint;
  }
  get running(): boolean {
    return this.child !== undefined && !this.child.gone;
  }
  get paused(): boolean {
    return this.child?.paused ?? false;
  }
  get pid(): number | undefined {
    return this.running ? this.child!.pid : undefined;
  }

  /** Send `signal` (default SIGKILL) and wait until the process is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.child?.kill(signal);
  }
  /** Graceful stop (SIGTERM). */
  stop(): Promise<void> {
    return this.kill('SIGTERM');
  }
  /** kill (default -9) then start again on the same ports and data dir. */
  async restart(opts: { signal?: NodeJS.Signals; wait?: boolean } = {}): Promise<void> {
    await this.kill(opts.signal ?? 'SIGKILL');
    await this.start(opts.wait === undefined ? {} : { wait: opts.wait });
  }
  /** SIGSTOP: the server keeps its sockets and answers nothing (a GC pause, a hung host). */
  pause(): void {
    this.child?.pause();
  }
  /** SIGCONT. */
  resume(): void {
    this.child?.resume();
  }
}

export class ServerGroup<M extends ServerProcess> {
  private closed = false;

  constructor(
    readonly members: readonly M[],
    /** The temporary directory holding every member's data. */
    protected readonly root: string,
  ) {}

  /** Members running and not paused. */
  get live(): M[] {
    return this.members.filter((m) => m.running && !m.paused);
  }

  /** Kill every member, close the proxies, remove the data dirs. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.members.map((m) => m.kill('SIGKILL')));
    await Promise.all(this.members.map((m) => m.proxy?.close()));
    await rm(this.root, { recursive: true, force: true });
    untrackDir(this.root);
  }
}
