/**
 * `roster completion bash|zsh|fish`, loaded into the real shells (Debian bash, zsh, fish), offers
 * the commands, subcommands, flags and flag values of the CLI as it is.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, requireBuilt, run } from '../helpers/cli.js';

const exec = promisify(execFile);
const roster = `'${process.execPath}' '${BIN}'`;

/** Candidates bash offers for the words typed so far (the last one being completed). */
async function bash(words: string[]): Promise<string[]> {
  const arr = words.map((w) => `'${w}'`).join(' ');
  const script = `source <(${roster} completion bash); COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _roster_complete; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await exec('bash', ['-c', script], { env: cliEnv() });
  return stdout.split('\n').filter(Boolean).sort();
}

/** zsh: the completion function run with the completion system's builtins recorded. */
async function zsh(words: string[]): Promise<string[]> {
  const arr = words.map((w) => `'${w}'`).join(' ');
  const script = [
    'compdef() { :; }',
    'compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }',
    '_describe() { local -a a; a=("${(@P)2}"); print -l -- "${a[@]%%:*}"; }',
    '_command_names() { print -- "<commands>"; }',
    `source <(${roster} completion zsh)`,
    `words=(${arr}); CURRENT=${words.length}`,
    '_roster',
  ].join('\n');
  const { stdout } = await exec('zsh', ['-f', '-c', script], { env: cliEnv() });
  return stdout.split('\n').filter(Boolean).sort();
}

/** fish: `complete -C` lists the candidates for a command line. */
async function fish(line: string): Promise<string[]> {
  const script = `${roster} completion fish | source; complete -C'${line}'`;
  const { stdout } = await exec('fish', ['--no-config', '-c', script], { env: cliEnv() });
  return stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!).sort();
}

describe('roster completion', () => {
  beforeAll(() => requireBuilt());

  it('refuses an unknown shell (exit 2)', async () => {
    const r = await run(['completion', 'tcsh']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown shell "tcsh": expected bash, zsh or fish/);
  });

  it('bash', async () => {
    expect(await bash(['roster', 're'])).toEqual(['register']);
    expect(await bash(['roster', 'kv', 'p'])).toEqual(['put']);
    expect(await bash(['roster', 'kv', 'put', 'k', '--'])).toEqual(expect.arrayContaining(['--ttl', '--if-absent', '--if-version', '--backend', '--connect-timeout']));
    expect(await bash(['roster', 'ls', '-o', ''])).toEqual(['json', 'table', 'wide']);
    expect(await bash(['roster', 'ls', '--health', 'c'])).toEqual(['critical']);
    expect(await bash(['roster', 'register', 'orders', '127.0.0.1:1', '--check-'])).toEqual(['--check-header', '--check-http', '--check-method', '--check-tcp', '--check-ttl']);
    expect(await bash(['roster', 'server', '--dns'])).toEqual(['--dns', '--dns-domain', '--dns-ttl']);
    expect(await bash(['roster', 'completion', ''])).toEqual(expect.arrayContaining(['--help']));
    // After `--`, lock's command is any command.
    expect(await bash(['roster', 'lock', 'job', '--', 'ech'])).toContain('echo');
  });

  it.runIf(existsSync('/usr/bin/zsh') || existsSync('/bin/zsh'))('zsh', async () => {
    expect(await zsh(['roster', 'kv', 'w'])).toEqual(expect.arrayContaining(['watch']));
    expect(await zsh(['roster', 'elect', '--o'])).toEqual(expect.arrayContaining(['--observe', '--output']));
    expect(await zsh(['roster', 'pick', 'orders', '--strategy', ''])).toEqual(['consistent-hash', 'least-outstanding', 'p2c', 'random', 'round-robin', 'weighted', 'zone-aware']);
    expect(await zsh(['roster', 'lock', 'job', '--', 'x'])).toEqual(['<commands>']);
  });

  it.runIf(existsSync('/usr/bin/fish'))('fish', async () => {
    expect(await fish('roster de')).toEqual(['deregister']);
    expect(await fish('roster kv ')).toEqual(['del', 'get', 'ls', 'put', 'watch']);
    expect(await fish('roster server --no-')).toEqual(['--no-checks', '--no-consul']);
    expect(await fish('roster ls --layout ')).toEqual(['consul-catalog', 'curator', 'etcd-endpoints', 'plain', 'roster']);
  });
});
