import { createWriteStream, statSync, renameSync, type WriteStream } from 'node:fs';

/**
 * The audit log: one JSON line per state-changing request (and per refused one), saying who
 * (token accessor and name, client address), what (method, path, the route) and how it ended
 * (status, error code). Token and policy changes are also durable in the engine itself (their
 * records carry createdBy / updatedBy); the audit log is the trail of everything else.
 *
 * A line is written after the reply, from a buffered file stream (no fsync: it is a log, not the
 * store). The file is rotated once to `<file>.1` when it passes `maxBytes`.
 */
export interface AuditEntry {
  /** ISO time. */
  ts: string;
  /** Token accessor, or '' for requests without a valid token. */
  token: string;
  tokenName: string;
  addr: string;
  method: string;
  path: string;
  route: string;
  status: number;
  /** The error code of a refused or failed request. */
  code?: string;
}

export type AuditSink = (e: AuditEntry) => void;

/** A sink appending JSON lines to `file`, rotated to `file.1` past `maxBytes` (default 64 MiB). */
export function fileAuditSink(file: string, onError: (e: unknown) => void, maxBytes = 64 * 1024 * 1024): AuditSink & { close(): Promise<void> } {
  let size = 0;
  try {
    size = statSync(file).size;
  } catch {
    size = 0;
  }
  let stream: WriteStream = open();
  function open(): WriteStream {
    const s = createWriteStream(file, { flags: 'a', mode: 0o600 });
    s.on('error', onError);
    return s;
  }
  const sink = (e: AuditEntry) => {
    const line = JSON.stringify(e) + '\n';
    if (size + line.length > maxBytes && size > 0) {
      stream.end();
      try {
        renameSync(file, `${file}.1`);
      } catch (err) {
        onError(err);
      }
      stream = open();
      size = 0;
    }
    size += line.length;
    stream.write(line);
  };
  return Object.assign(sink, {
    close: () => new Promise<void>((resolve) => stream.end(() => resolve())),
  });
}

export function stderrAuditSink(e: AuditEntry): void {
  process.stderr.write(`roster audit ${JSON.stringify(e)}\n`);
}
