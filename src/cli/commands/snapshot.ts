/**
 * `roster snapshot save|restore|status`: backups of a roster server (docs/operations.md,
 * "Backup and restore").
 *
 * save     streams GET /api/v1/admin/snapshot (admin token) into <file>.part, checks it line by
 *          line (checksums, counts, trailer), fsyncs it and renames it to <file>: a file under its
 *          final name is always a complete, verified snapshot.
 * restore  offline: writes a snapshot into a new or empty data dir (never over existing data);
 *          `roster server --data-dir <dir>` then serves it.
 * status   checks a snapshot file and says what it holds.
 */
import { open, rename, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError, RosterError } from '../../core/errors.js';
import { restoreSnapshot, verifySnapshotFile, type SnapshotSummary } from '../../engine/backup.js';
import { fsyncDir } from '../../engine/files.js';
import { out } from '../output.js';
import type { CliContext } from '../shared.js';
import { serverOf } from './token.js';

function describe(s: SnapshotSummary): string {
  return `revision ${s.revision}, ${s.keys} keys, ${s.sessions} sessions, ${s.bytes} bytes`;
}

export function registerSnapshotCommands(program: Command, ctx: CliContext): void {
  const snap = program.command('snapshot').description("back up and restore a roster server's data (snapshot files)");

  snap
    .command('save <file>')
    .description('save a consistent snapshot of the running server (admin token) to <file>; writes go on meanwhile')
    .option('--force', 'replace <file> if it exists')
    .addHelpText('after', '\nExample: roster --token-file /var/lib/roster/admin.token snapshot save /backups/roster-$(date +%F).snap')
    .action(async (file: string, opts: { force?: boolean }) => {
      const target = resolve(file);
      if (!opts.force && (await exists(target))) throw new RosterError('CONFLICT', `${file} exists: choose another name or pass --force to replace it`);
      const b = await serverOf(() => ctx.backend());
      // --connect-timeout bounds the wait for the answer, not the download (it may be large).
      const ac = new AbortController();
      const t = setTimeout(() => ac.abort(ctx.unreachable('no snapshot')), ctx.connectTimeout);
      let dl;
      try {
        dl = await b.download('/api/v1/admin/snapshot', ac.signal);
      } finally {
        clearTimeout(t);
      }
      const part = `${target}.part`;
      // 'wx': two saves to one file must not write into each other's part file.
      const fh = await open(part, 'wx', 0o600).catch((e: unknown) => {
        dl.body.destroy();
        if ((e as { code?: unknown }).code !== 'EEXIST') throw e;
        throw new RosterError('CONFLICT', `${part} exists: another snapshot save to ${file} is running, or one was interrupted (remove ${part} and retry)`, { cause: e });
      });
      try {
        try {
          for await (const chunk of dl.body) await fh.write(chunk);
          await fh.datasync();
        } finally {
          await fh.close();
        }
        let s: SnapshotSummary;
        try {
          s = await verifySnapshotFile(part);
        } catch (e) {
          throw new RosterError('UNAVAILABLE', `the snapshot from ${b.url} did not arrive whole: ${(e as Error).message}; nothing was saved`, { cause: e });
        }
        const expected = Number(dl.headers['x-roster-revision']);
        if (Number.isFinite(expected) && expected !== s.revision) throw new RosterError('INTERNAL', `the snapshot says revision ${s.revision}, the server announced ${expected}; nothing was saved`);
        await rename(part, target);
        await fsyncDir(dirname(target)); // the rename itself survives a power cut once "saved" is printed
        if (ctx.json) out(JSON.stringify({ file: target, server: b.url, ...s }));
        else out(`saved a snapshot of ${b.url} to ${file}: ${describe(s)}`);
      } catch (e) {
        dl.body.destroy();
        await unlink(part).catch(() => undefined);
        throw e;
      }
    });

  snap
    .command('restore <file>')
    .description('restore a snapshot into a new or empty data dir (offline: then start `roster server --data-dir <dir>` on it)')
    .requiredOption('--data-dir <dir>', 'the data dir to create (must not exist, or be empty)')
    .addHelpText(
      'after',
      '\nThe restored server has every key of the snapshot with its revisions; every session comes back with a fresh TTL\n' +
        '(as after a restart): its owner keeps it by renewing it, else it expires with its keys. Watchers resuming from\n' +
        'a revision past the snapshot get a reset (the full state).\n\nExample: roster snapshot restore /backups/roster-2025-01-01.snap --data-dir /var/lib/roster-restored',
    )
    .action(async (file: string, opts: { dataDir: string }) => {
      if (!opts.dataDir) throw new InvalidArgumentError('--data-dir is required');
      const r = await restoreSnapshot(file, opts.dataDir);
      if (ctx.json) out(JSON.stringify({ dataDir: resolve(opts.dataDir), ...r }));
      else out(`restored ${file} into ${opts.dataDir} (${describe(r)}); start it with: roster server --data-dir ${opts.dataDir}`);
    });

  snap
    .command('status <file>')
    .description('check a snapshot file (every checksum, the counts) and say what it holds')
    .action(async (file: string) => {
      const s = await verifySnapshotFile(resolve(file));
      if (ctx.json) out(JSON.stringify({ file: resolve(file), ...s }));
      else out(`${file}: ${describe(s)}, log sequence ${s.seq}`);
    });
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
