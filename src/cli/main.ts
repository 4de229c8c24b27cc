/**
 * The roster CLI (docs/cli.md). Every command resolves its flags from the command line, else
 * `ROSTER_*` environment variables, else the config file, else defaults (config.ts). A failure
 * prints one line to stderr and exits with a code from one table (exit.ts); nothing here calls
 * process.exit on a path a library user could reach (bin.ts does, once main() settled).
 */
import { Command, CommanderError } from 'commander';
import { isRosterError } from '../core/errors.js';
import { applySettings, checkConfig, configPath, readConfig } from './config.js';
import { describeError, EXIT, EXIT_TABLE, exitCodeOf } from './exit.js';
import { CliContext, globalOptions } from './shared.js';
import { registerServerCommand } from './commands/server.js';
import { registerServiceCommands } from './commands/services.js';
import { registerRegisterCommands } from './commands/register.js';
import { registerKvCommands } from './commands/kv.js';
import { registerRecipeCommands } from './commands/recipes.js';
import { registerCompletionCommand } from './commands/completion.js';
import { registerTokenCommands } from './commands/token.js';
import { registerAclCommands } from './commands/acl.js';
import { registerSnapshotCommands } from './commands/snapshot.js';
import { BUILD } from '../core/version.js';

export { DEFAULT_BACKEND } from './shared.js';

export function version(): string {
  return BUILD.version;
}

/** `roster kv put` for a command (used in hints). */
function fullName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export function buildProgram(): { program: Command; ctx: CliContext; failedCommand: () => Command } {
  const program = new Command();
  const ctx = new CliContext(program);
  let failed: Command = program;
  program
    .name('roster')
    .description('service registration, discovery and coordination (npm package roster-sd)')
    .version(`roster ${version()} (roster-sd, node ${process.version})`, '-V, --version', 'print the version')
    .showSuggestionAfterError()
    .exitOverride();
  globalOptions(program);
  registerServerCommand(program, ctx);
  registerServiceCommands(program, ctx);
  registerRegisterCommands(program, ctx);
  registerKvCommands(program, ctx);
  registerRecipeCommands(program, ctx);
  registerTokenCommands(program, ctx);
  registerAclCommands(program, ctx);
  registerSnapshotCommands(program, ctx);
  registerCompletionCommand(program);
  program.addHelpText(
    'after',
    [
      '',
      'Every flag can also come from the environment or a config file: command line > ROSTER_<FLAG> /',
      'ROSTER_<COMMAND>_<FLAG> (e.g. ROSTER_BACKEND, ROSTER_SERVER_PORT, ROSTER_KV_PUT_TTL) > config file > default.',
      'Durations take units: 500ms, 10s, 1m30s. Shell completion: roster completion bash|zsh|fish.',
      '',
      'Exit codes:',
      ...EXIT_TABLE.map(([c, m]) => `  ${c.padEnd(9)} ${m}`),
    ].join('\n'),
  );
  // Flags from the environment and the config file, before any action runs; the command that
  // runs is remembered for the usage hint of an error.
  program.hook('preAction', (_root, action) => {
    failed = action;
    const flags = program.opts<{ config?: string }>();
    const file = configPath(flags.config, process.env);
    const settings = file ? readConfig(file) : {};
    if (file) checkConfig(program, settings, file);
    applySettings(action, settings, process.env);
  });
  // Commander's own errors (unknown option, missing argument) become one line, printed by main().
  const quiet = (cmd: Command) => {
    cmd.configureOutput({ outputError: () => (failed = cmd) });
    for (const c of cmd.commands) quiet(c);
  };
  quiet(program);
  return { program, ctx, failedCommand: () => failed };
}

/** Run the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { program, ctx, failedCommand } = buildProgram();
  const hint = () => `see ${fullName(failedCommand())} --help`;
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are "errors" to commander; they have already printed.
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return EXIT.OK;
      if (e.code === 'commander.executeSubCommandAsync') return EXIT.FAILURE;
      const msg = e.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
      process.stderr.write(`roster: ${msg} (${hint()})\n`);
      return EXIT.USAGE;
    }
    const code = exitCodeOf(e);
    const usage = code === EXIT.USAGE && isRosterError(e, 'INVALID_ARGUMENT');
    process.stderr.write(`roster: ${describeError(e)}${usage ? ` (${hint()})` : ''}\n`);
    return code;
  } finally {
    await closeBounded(ctx);
  }
}

/** Close the backend, but never hang the exit on a backend that stopped answering. */
async function closeBounded(ctx: CliContext): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    ctx.close().catch((e: unknown) => process.stderr.write(`roster: closing the backend failed: ${describeError(e)}\n`)),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, 3000))),
  ]);
  clearTimeout(timer);
}
