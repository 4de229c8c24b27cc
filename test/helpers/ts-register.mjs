// `node --import ./test/helpers/ts-register.mjs file.ts` runs the TypeScript sources directly in a
// child process (used to run a real roster server we can SIGKILL), with no dependency beyond the
// `typescript` dev dependency. See ts-hooks.mjs.
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
