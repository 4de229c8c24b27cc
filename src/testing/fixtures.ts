/**
 * Fixtures for users' own tests: a memory:// store they can compact and revoke sessions in, and an
 * in-process roster server on a free port. Real parts, no mocks: the same engine, server and
 * clients roster runs in production. (Cluster fixtures — several etcd / ZooKeeper members started
 * on loopback — belong under ./cluster/.)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../contract/types.js';
import { engineOf, MemoryBackend, type MemoryBackendOptions } from '../backends/memory/backend.js';
import { RemoteBackend, type RemoteBackendOptions } from '../backends/remote/backend.js';
import { Engine } from '../engine/engine.js';
import { launchServer, type RosterServer, type ServerOptions } from '../server/server.js';

let seq = 0;

export interface MemoryFixture {
  /** `memory://<unique name>`: every backend opened on it (here or by openBackend) shares one store. */
  readonly url: string;
  /** A new client of the store. */
  open(options?: MemoryBackendOptions): Promise<Backend>;
  /** Make history before the current revision unavailable: a watch resuming before it gets a reset. */
  compact(): Promise<void>;
  /** Revoke a session behind its owner's back (as an operator, or the server expiring it, would). */
  revoke(sessionId: string): Promise<void>;
  /** Release the fixture's own hold on the store (clients opened from it are the caller's to close). */
  close(): Promise<void>;
}

/** A named memory:// store for a test. */
export async function memoryFixture(name = `fixture-${process.pid}-${++seq}`): Promise<MemoryFixture> {
  const url = `memory://${name}`;
  const own = await MemoryBackend.open(url, { keepProcessAlive: false });
  return {
    url,
    open: (options) => MemoryBackend.open(url, options),
    compact: async () => engineOf(own).compact(),
    revoke: (id) => engineOf(own).revoke(id),
    close: () => own.close(),
  };
}

export interface TestServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly server: RosterServer;
  /** A new client of the server (`http://` backend). */
  open(options?: RemoteBackendOptions): Promise<Backend>;
  /** Make history before the current revision unavailable (what POST /api/v1/admin/compact does). */
  compact(): Promise<void>;
  /** Revoke a session behind its owner's back. */
  revoke(sessionId: string): Promise<void>;
  /** Close the server (and its engine), and remove its data dir if the fixture made one. */
  close(): Promise<void>;
}

export interface TestServerOptions extends Omit<ServerOptions, 'port' | 'dataDir'> {
  /** Keep the data on disk (write-ahead log, as `roster server` does) in a fresh temp dir. Default:
   *  in memory only. */
  durable?: boolean;
}

/** A roster server in this process, on a free loopback port. */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const { durable, ...serverOptions } = opts;
  const dataDir = durable ? await mkdtemp(join(tmpdir(), 'roster-test-')) : undefined;
  const engine = await Engine.open(dataDir === undefined ? {} : { dataDir });
  const server = await launchServer({ ...serverOptions, port: 0, engine });
  return {
    url: server.url,
    server,
    open: (options) => RemoteBackend.open(server.url, options),
    compact: async () => engine.compact(),
    revoke: (id) => engine.revoke(id),
    close: async () => {
      await server.close();
      await engine.close();
      if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
