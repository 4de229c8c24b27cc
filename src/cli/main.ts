/**
 * The roster CLI. Every command resolves its backend from --backend, else $ROSTER_BACKEND, else the
 * embedded default server at http://127.0.0.1:8470. Errors print one line to stderr and exit non-zero
 * (1 for operational errors, 2 for usage errors); nothing here calls process.exit on a code path a
 * library user could reach.
 */
import { Command, CommanderError, Option } from 'commander';
import type { Backend } from '../contract/types.js';
import '../backends/builtin.js';
import { connectionOptions, describeError, openWithFlags, type ConnectionFlags } from './shared.js';
import { registerCoreCommands } from './commands/core.js';
import { registerRegistryCommands } from './commands/registry.js';
import { registerRecipeCommands } from './commands/recipes.js';
import { registerTokenCommands } from './commands/token.js';
import { registerAclCommands } from './commands/acl.js';

export const DEFAULT_BACKEND = 'http://127.0.0.1:8470';

export function buildProgram(): { program: Command; closeBackend: () => Promise<void> } {
  const program = new Command();
  let backend: Promise<Backend> | undefined;
  const getBackend = (): Promise<Backend> => {
    const url = (program.opts().backend as string | undefined) ?? process.env.ROSTER_BACKEND ?? DEFAULT_BACKEND;
    return (backend ??= openWithFlags(url, program.opts<ConnectionFlags>(), (k) => program.getOptionValueSource(k)));
  };
  program
    .name('roster')
    .description('service registration, discovery and coordination')
    .addOption(new Option('-b, --backend <url>', `backend URL (default: $ROSTER_BACKEND or ${DEFAULT_BACKEND})`));
  connectionOptions(program)
    .showHelpAfterError()
    .exitOverride();
  registerCoreCommands(program, getBackend);
  registerRegistryCommands(program, getBackend);
  registerRecipeCommands(program, getBackend);
  registerTokenCommands(program, getBackend);
  registerAclCommands(program, getBackend);
  const closeBackend = async () => {
    if (backend) await (await backend.catch(() => undefined))?.close();
  };
  return { program, closeBackend };
}

export async function main(argv: string[]): Promise<number> {
  const { program, closeBackend } = buildProgram();
  // A command waits on its backend; a client library whose pending work does not hold the event
  // loop (grpc-js retrying a refused TLS handshake) must not let the process exit 0 mid-command.
  const hold = setInterval(() => undefined, 1 << 30);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are "errors" to commander; they have already printed.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : 2;
    }
    process.stderr.write(`roster: ${describeError(e)}\n`);
    return 1;
  } finally {
    clearInterval(hold);
    await closeBackend().catch((e: unknown) => {
      process.stderr.write(`roster: closing the backend failed: ${describeError(e)}\n`);
    });
  }
}
