#!/usr/bin/env node
import { main } from './main.js';
import { describeError } from './shared.js';

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`roster: ${describeError(e)}\n`);
    process.exitCode = 1;
  },
);
