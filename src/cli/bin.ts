#!/usr/bin/env node
/**
 * The `roster` executable. The process is held open until main() settles (a backend client whose
 * timers are all unref'd must not let Node exit silently with code 0 halfway through a command),
 * then exits with main()'s code once stdout is flushed. A reader that goes away (`| head -1`) ends
 * the process quietly with the code so far (0), not with an EPIPE stack trace.
 */
import { holdProcess } from '../core/lifetime.js';
import { main } from './main.js';
import { markStdoutClosed } from './output.js';

const release = holdProcess();

process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  markStdoutClosed();
  process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
});

function finish(code: number): void {
  release();
  process.exitCode = code;
  // Everything written so far reaches the pipe or file before the exit.
  process.stdout.write('', () => process.exit(code));
}

main(process.argv).then(finish, (e: unknown) => {
  process.stderr.write(`roster: ${e instanceof Error ? e.message : String(e)}\n`);
  finish(1);
});
