import { abortable, abortReason } from '../../core/async.js';
import { errorFromJSON, isRosterError, RosterError, UnavailableError } from '../../core/errors.js';

/**
 * Coalesces the writes (puts and deletes) a process issues in one turn of the event loop into one
 * `POST /api/v1/batch` (docs/protocol.md): one HTTP request and one group commit on the server
 * instead of one of each per write. A registrar re-putting its instances after a session loss, or
 * a service registering many instances at once, costs the server a few requests instead of
 * hundreds.
 *
 * Contract, per write, is exactly that of its single request: it resolves with the same reply,
 * rejects with the same typed error (a failed precondition or a lost session fails only that
 * write), and a transport failure fails every write of the batch with UnavailableError (each may
 * or may not have been applied, as for a single request). Writes to the same key keep their order.
 * A write alone in its turn goes out as its ordinary single request, unless it exists only in the
 * batch protocol (`batchOnly`: a delete with lastValue); a server without the batch endpoint (404)
 * gets single requests (for those, what `single` does instead) from then on, and one that refuses
 * a batch-only op's fields (an older server: INVALID_ARGUMENT naming `ops[i].<field>` of such an
 * op, the whole batch refused before anything was applied) gets every batch-only write as `single`.
 */
export interface BatchTransport {
  /** POST the batch body; resolves with the parsed JSON reply or rejects with a RosterError. */
  send(body: string): Promise<unknown>;
}

interface Entry {
  /** This write as one element of the `ops` array (JSON). */
  json: string;
  /** The same write as its single request (or, batchOnly, the equivalent without the batch endpoint). */
  single: () => Promise<unknown>;
  batchOnly: boolean;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
}

export class WriteBatcher {
  private queue: Entry[] = [];
  private queuedBytes = 0;
  private scheduled = false;
  private supported = true;
  /** The server accepts the batch-only ops' fields. */
  private batchOnlySupported = true;

  constructor(
    private readonly transport: BatchTransport,
    private readonly maxOps = 256,
    private readonly maxBytes = 1024 * 1024,
  ) {}

  submit(json: string, single: () => Promise<unknown>, signal: AbortSignal | undefined, batchOnly = false): Promise<unknown> {
    if (!this.supported || (batchOnly && !this.batchOnlySupported)) return single();
    const p = new Promise<unknown>((resolve, reject) => {
      this.queue.push({ json, single, batchOnly, resolve, reject, signal });
    });
    this.queuedBytes += json.length;
    if (this.queue.length >= this.maxOps || this.queuedBytes >= this.maxBytes) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    // An aborted write rejects at once; if it was already sent it may still be applied.
    return abortable(p, signal);
  }

  private flush(): void {
    const batch: Entry[] = [];
    for (const e of this.queue) {
      if (e.signal?.aborted) e.reject(abortReason(e.signal)); // never sent
      else batch.push(e);
    }
    this.queue = [];
    this.queuedBytes = 0;
    if (!this.supported || (batch.length === 1 && !batch[0]!.batchOnly)) {
      for (const e of batch) e.single().then(e.resolve, e.reject);
    } else if (batch.length > 0) {
      void this.sendBatch(batch);
    }
  }

  private async sendBatch(batch: Entry[]): Promise<void> {
    let reply: unknown;
    try {
      reply = await this.transport.send(`{"ops":[${batch.map((e) => e.json).join(',')}]}`);
    } catch (err) {
      // An older server has no such endpoint (a 404 that is not about a key): fall back for good.
      if (isRosterError(err, 'NOT_FOUND') && err.details?.key === undefined) {
        this.supported = false;
        for (const e of batch) e.single().then(e.resolve, e.reject);
        return;
      }
      const field = isRosterError(err, 'INVALID_ARGUMENT') ? /^ops\[(\d+)\]\./.exec(String(err.details?.field ?? '')) : null;
      if (field && batch[Number(field[1])]?.batchOnly) {
        this.batchOnlySupported = false;
        for (const e of batch) (e.batchOnly ? e.single() : this.submit(e.json, e.single, e.signal)).then(e.resolve, e.reject);
        return;
      }
      for (const e of batch) e.reject(err);
      return;
    }
    const results = (reply as { results?: unknown } | undefined)?.results;
    if (!Array.isArray(results) || results.length !== batch.length) {
      const err = new RosterError('INTERNAL', `unexpected batch reply from roster server: expected ${batch.length} results`);
      for (const e of batch) e.reject(err);
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      const r = results[i] as { error?: unknown } | null;
      const e = batch[i]!;
      if (r && typeof r === 'object' && r.error && typeof r.error === 'object') {
        const typed = errorFromJSON(r.error);
        // As for single requests: CLOSED from the server means it is shutting down.
        e.reject(typed.code === 'CLOSED' ? new UnavailableError(typed.message, { cause: typed }) : typed);
      } else if (r && typeof r === 'object') {
        e.resolve(r);
      } else {
        e.reject(new RosterError('INTERNAL', `unexpected batch reply from roster server: result ${i} is not an object`));
      }
    }
  }
}
