/**
 * Where a flag's value comes from, for every flag of every command, by one rule:
 *
 *     command-line flag  >  environment variable  >  config file  >  built-in default
 *
 * - Environment: `ROSTER_<FLAG>` for the global flags (`ROSTER_BACKEND`, `ROSTER_CONNECT_TIMEOUT`,
 *   `ROSTER_OUTPUT`), `ROSTER_<COMMAND>_<FLAG>` for a command's own (`ROSTER_SERVER_PORT`,
 *   `ROSTER_SERVER_DATA_DIR`, `ROSTER_REGISTER_TTL`, `ROSTER_KV_PUT_TTL`): upper case, `-` → `_`.
 *   A switch takes true/false/1/0/yes/no/on/off; a repeatable flag (`--tag`) takes one value or
 *   a JSON array (`ROSTER_REGISTER_TAG='["blue","canary"]'`).
 * - Config file: JSON, from `--config <file>`, else `$ROSTER_CONFIG`, else
 *   `$XDG_CONFIG_HOME/roster/config.json` (`~/.config/roster/config.json`) when it exists. Global
 *   flags at the top level, each command's flags in an object named after it (`kv` holds `put`,
 *   `get`, ...); keys are the long flag names without dashes; repeatable flags take arrays:
 *
 *       { "backend": "http://10.0.0.5:8470", "connect-timeout": "3s",
 *         "server": { "port": 8470, "data-dir": "/var/lib/roster", "dns": "127.0.0.1:8600" },
 *         "register": { "ttl": "15s", "tag": ["blue"] } }
 *
 *   A key that names no flag is an error (a typo must not silently fall back to a default).
 *
 * Values from the environment and the file go through the same parsing and validation as the flag.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { InvalidArgumentError } from '../core/errors.js';
import { collect } from './options.js';

export type Settings = Record<string, unknown>;

/** The command names from the program down to `cmd` (`[]` for the program, `['kv','put']`). */
export function commandPath(cmd: Command): string[] {
  const path: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) path.unshift(c.name());
  return path;
}

function flagName(opt: Option): string | undefined {
  return opt.long?.replace(/^--/, '');
}

export function envName(path: readonly string[], flag: string): string {
  return ['ROSTER', ...path, flag].join('_').toUpperCase().replace(/-/g, '_');
}

const isRepeatable = (opt: Option) => (opt as unknown as { parseArg?: unknown }).parseArg === collect;

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off', '']);

function switchValue(raw: unknown, where: string): boolean {
  if (typeof raw === 'boolean') return raw;
  const s = String(raw).trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw new InvalidArgumentError(`invalid ${where} ${JSON.stringify(String(raw))}: expected true or false`);
}

/** The value `opt` takes from a raw env string or config value (undefined = leave it unset). */
function convert(opt: Option, raw: unknown, where: string, fromEnv: boolean): unknown {
  if (opt.negate) return switchValue(raw, where) ? false : undefined;
  if (opt.isBoolean()) return switchValue(raw, where);
  if (opt.optional) {
    // `--dns [host:port]`: true/false switch it; anything else is its value.
    const s = typeof raw === 'boolean' ? raw : String(raw).trim();
    if (s === true || (typeof s === 'string' && (s === '' || TRUE.has(s.toLowerCase())))) return true;
    if (s === false || (typeof s === 'string' && FALSE.has(s.toLowerCase()))) return undefined;
    return s;
  }
  if (isRepeatable(opt)) {
    let list: unknown = raw;
    if (fromEnv) {
      const s = String(raw).trim();
      if (s.startsWith('[')) {
        try {
          list = JSON.parse(s);
        } catch {
          throw new InvalidArgumentError(`invalid ${where}: not a JSON array of strings`);
        }
      } else list = [s];
    }
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' || typeof x === 'number')) {
      throw new InvalidArgumentError(`invalid ${where}: expected ${fromEnv ? 'a value or a JSON array of strings' : 'an array of strings'}`);
    }
    return list.map(String);
  }
  if (typeof raw === 'string' || typeof raw === 'number') return String(raw);
  throw new InvalidArgumentError(`invalid ${where}: expected a string${fromEnv ? '' : ' or a number'}`);
}

/** The config file's path: --config, $ROSTER_CONFIG, else the XDG default if it exists. */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (flag !== undefined) return flag;
  if (env.ROSTER_CONFIG) return env.ROSTER_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  const p = join(base, 'roster', 'config.json');
  return existsSync(p) ? p : undefined;
}

export function readConfig(path: string): Settings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new InvalidArgumentError(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InvalidArgumentError(`config file ${path}: expected a JSON object`);
  return parsed as Settings;
}

/** Refuse config keys that name no command or flag (anywhere in the file, not only the command run). */
export function checkConfig(program: Command, settings: Settings, file: string): void {
  const walk = (cmd: Command, section: Settings, where: string) => {
    const flags = new Set(cmd.options.map(flagName).filter((f): f is string => f !== undefined));
    const subs = new Map(cmd.commands.map((c) => [c.name(), c]));
    for (const [k, v] of Object.entries(section)) {
      if (flags.has(k)) continue;
      const sub = subs.get(k);
      if (sub && v && typeof v === 'object' && !Array.isArray(v)) {
        walk(sub, v as Settings, `${where}${k}.`);
        continue;
      }
      const known = [...flags, ...subs.keys()].join(', ');
      throw new InvalidArgumentError(`config file ${file}: unknown key ${JSON.stringify(where + k)}${sub ? ' (a command: expected an object of its flags)' : ''}; expected one of ${known}`);
    }
  };
  walk(program, settings, '');
}

/**
 * Fill every flag of `cmd` (and of the commands above it) that the command line left unset from
 * the environment, then from `settings`. Called before the action runs.
 */
export function applySettings(cmd: Command, settings: Settings, env: NodeJS.ProcessEnv): void {
  for (let c: Command | null = cmd; c; c = c.parent) {
    const path = commandPath(c);
    let section: unknown = settings;
    for (const p of path) section = section && typeof section === 'object' ? (section as Settings)[p] : undefined;
    const sect = section && typeof section === 'object' && !Array.isArray(section) ? (section as Settings) : {};
    for (const opt of c.options) {
      const flag = flagName(opt);
      if (flag === undefined || flag === 'help' || flag === 'version' || flag === 'config') continue;
      const key = opt.attributeName();
      if (c.getOptionValueSource(key) === 'cli') continue;
      const name = envName(path, flag);
      const fromEnv = env[name];
      if (fromEnv !== undefined) {
        const v = convert(opt, fromEnv, `$${name}`, true);
        if (v !== undefined) c.setOptionValueWithSource(key, v, 'env');
        continue;
      }
      if (Object.hasOwn(sect, flag)) {
        const v = convert(opt, sect[flag], `config ${[...path, flag].join('.')}`, false);
        if (v !== undefined) c.setOptionValueWithSource(key, v, 'config');
      }
    }
  }
}

/** Every environment variable a command reads (for help text and completion). */
export function envNames(cmd: Command): string[] {
  const path = commandPath(cmd);
  return cmd.options
    .map(flagName)
    .filter((f): f is string => f !== undefined && f !== 'help' && f !== 'version' && f !== 'config')
    .map((f) => envName(path, f));
}
