#!/usr/bin/env node
import { describeError, main } from './main.js';

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`roster: ${describeError(e)}\n`);
    process.exitCode = 1;
  },
);
