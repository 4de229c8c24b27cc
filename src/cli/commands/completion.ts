/**
 * `roster completion bash|zsh|fish`: a completion script for the shell, generated from the
 * command tree itself (commands, subcommands, flags, and the values of flags that take one of a
 * few words), so it never falls behind the CLI.
 *
 *   bash:  source <(roster completion bash)          (or save it under /etc/bash_completion.d/roster)
 *   zsh:   source <(roster completion zsh)           (or save it as _roster on your $fpath)
 *   fish:  roster completion fish > ~/.config/fish/completions/roster.fish
 */
import { Command, type Option } from 'commander';
import { InvalidArgumentError } from '../../core/errors.js';
import { out } from '../output.js';

/** Values offered after flags that take one of a few words. */
const VALUES: Record<string, readonly string[]> = {
  output: ['table', 'wide', 'json'],
  layout: ['roster', 'plain', 'etcd-endpoints', 'curator', 'consul-catalog'],
  health: ['passing', 'warning', 'critical'],
  strategy: ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'consistent-hash', 'zone-aware'],
};

interface Node {
  /** Command path, space-separated ('' for the program). */
  path: string;
  subcommands: { name: string; description: string }[];
  options: { flags: string[]; long?: string; description: string; takesValue: boolean; values?: readonly string[] }[];
}

function nodes(program: Command): Node[] {
  const all: Node[] = [];
  const globals = program.options;
  const walk = (cmd: Command, path: string) => {
    const opts: Option[] = [...cmd.options, ...(cmd === program ? [] : globals)];
    all.push({
      path,
      subcommands: cmd.commands.filter((c) => c.name() !== 'help').map((c) => ({ name: c.name(), description: c.description() })),
      options: [
        ...opts.map((o) => {
          const long = o.long?.replace(/^--/, '');
          const values = (o as unknown as { argChoices?: string[] }).argChoices ?? (long ? VALUES[long] : undefined);
          return { flags: [o.short, o.long].filter((f): f is string => !!f), ...(long ? { long } : {}), description: o.description, takesValue: o.required || o.optional, ...(values ? { values } : {}) };
        }),
        { flags: ['-h', '--help'], long: 'help', description: 'show help', takesValue: false },
      ],
    });
    for (const c of cmd.commands) if (c.name() !== 'help') walk(c, path ? `${path} ${c.name()}` : c.name());
  };
  walk(program, '');
  return all;
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** What the bash and zsh scripts share: the command paths (`kv_put`) and the values offered after
 *  each flag that takes one of a few words. */
function shellTables(ns: readonly Node[]): { paths: string[]; valueCases: Map<string, readonly string[]>; caseLabel: (n: Node) => string } {
  const valueCases = new Map<string, readonly string[]>();
  for (const n of ns) for (const o of n.options) if (o.values) for (const f of o.flags) valueCases.set(f, o.values);
  const caseLabel = (n: Node) => (n.path ? n.path.replace(/ /g, '_') : '""');
  return { paths: ns.filter((n) => n.path).map(caseLabel), valueCases, caseLabel };
}

function bash(program: Command): string {
  const ns = nodes(program);
  const { paths, valueCases, caseLabel } = shellTables(ns);
  const lines = [
    '# bash completion for roster (roster completion bash)',
    '_roster_complete() {',
    '  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} path="" w cand i',
    `  local paths=" ${paths.join(' ')} "`,
    '  for ((i=1; i<COMP_CWORD; i++)); do',
    '    w=${COMP_WORDS[i]}',
    '    [[ $w == -- ]] && { COMPREPLY=($(compgen -c -- "$cur")); return 0; }',
    '    [[ $w == -* ]] && continue',
    '    cand=${path:+${path}_}$w',
    '    [[ $paths == *" $cand "* ]] && path=$cand',
    '  done',
    '  case "$prev" in',
    ...[...valueCases].map(([f, v]) => `    ${f}) COMPREPLY=($(compgen -W ${sq(v.join(' '))} -- "$cur")); return 0 ;;`),
    '  esac',
    '  local words',
    '  case "$path" in',
    ...ns.map((n) => {
      const words = [...n.subcommands.map((s) => s.name), ...n.options.flatMap((o) => o.flags)];
      return `    ${caseLabel(n)}) words=${sq(words.join(' '))} ;;`;
    }),
    '  esac',
    '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
    '}',
    'complete -o default -F _roster_complete roster',
  ];
  return lines.join('\n');
}

function zsh(program: Command): string {
  const ns = nodes(program);
  const { paths, valueCases, caseLabel } = shellTables(ns);
  const esc = (s: string) => s.replace(/[:\\]/g, '\\$&');
  const lines = [
    '#compdef roster',
    '# zsh completion for roster (roster completion zsh)',
    '_roster() {',
    '  local p="" w cand i',
    `  local paths=" ${paths.join(' ')} "`,
    '  for ((i=2; i<CURRENT; i++)); do',
    '    w=${words[i]}',
    '    if [[ $w == -- ]]; then _command_names; return; fi',
    '    [[ $w == -* ]] && continue',
    '    cand=${p:+${p}_}$w',
    '    [[ $paths == *" $cand "* ]] && p=$cand',
    '  done',
    '  case "${words[CURRENT-1]}" in',
    ...[...valueCases].map(([f, v]) => `    ${f}) compadd -- ${v.map(sq).join(' ')}; return ;;`),
    '  esac',
    '  local -a subs flags',
    '  case "$p" in',
    ...ns.map((n) => {
      const subs = n.subcommands.map((s) => sq(`${esc(s.name)}:${esc(s.description)}`)).join(' ');
      const flags = n.options.flatMap((o) => o.flags).map(sq).join(' ');
      return `    ${caseLabel(n)}) subs=(${subs}); flags=(${flags}) ;;`;
    }),
    '  esac',
    '  if [[ ${words[CURRENT]} == -* ]]; then compadd -- $flags; else _describe command subs; compadd -- $flags; fi',
    '}',
    'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _roster "$@"; else compdef _roster roster; fi',
  ];
  return lines.join('\n');
}

function fish(program: Command): string {
  const ns = nodes(program);
  const lines = ['# fish completion for roster (roster completion fish)', 'complete -c roster -f'];
  // The command path so far: `__roster_path` prints it, space-separated.
  lines.push(
    'function __roster_path',
    '  set -l tokens (commandline -opc)',
    `  set -l paths ${ns.filter((n) => n.path).map((n) => sq(n.path)).join(' ')}`,
    '  set -l p ""',
    '  for t in $tokens[2..-1]',
    '    if test "$t" = "--"; return 1; end',
    '    if string match -q -- "-*" $t; continue; end',
    '    set -l cand (string trim -- "$p $t")',
    '    if contains -- $cand $paths; set p $cand; end',
    '  end',
    '  echo $p',
    'end',
  );
  for (const n of ns) {
    const cond = `-n ${sq(`test (__roster_path) = ${sq(n.path)}`)}`;
    for (const s of n.subcommands) lines.push(`complete -c roster ${cond} -a ${sq(s.name)} -d ${sq(s.description)}`);
    for (const o of n.options) {
      const parts = ['complete -c roster', cond];
      for (const f of o.flags) parts.push(f.startsWith('--') ? `-l ${f.slice(2)}` : `-s ${f.slice(1)}`);
      if (o.values) parts.push(`-x -a ${sq(o.values.join(' '))}`);
      else if (o.takesValue) parts.push('-r');
      parts.push(`-d ${sq(o.description)}`);
      lines.push(parts.join(' '));
    }
  }
  return lines.join('\n');
}

export function completionScript(program: Command, shell: string): string {
  switch (shell) {
    case 'bash':
      return bash(program);
    case 'zsh':
      return zsh(program);
    case 'fish':
      return fish(program);
    default:
      throw new InvalidArgumentError(`unknown shell ${JSON.stringify(shell)}: expected bash, zsh or fish`);
  }
}

export function registerCompletionCommand(program: Command): void {
  program
    .command('completion <shell>')
    .description('print a shell completion script: bash, zsh or fish')
    .addHelpText('after', '\n  bash:  source <(roster completion bash)\n  zsh:   source <(roster completion zsh)\n  fish:  roster completion fish > ~/.config/fish/completions/roster.fish')
    .action((shell: string) => {
      out(completionScript(program, shell));
    });
}
