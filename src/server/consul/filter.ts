import { InvalidArgumentError } from '../../core/errors.js';

/**
 * The simple part of Consul's `?filter` language (go-bexpr), evaluated over the JSON a endpoint
 * returns:
 *
 *   Selector == "value"    Selector != "value"
 *   "value" in Selector    "value" not in Selector
 *   Selector contains "value"    Selector not contains "value"
 *   Selector is empty      Selector is not empty
 *   and, or, not, parentheses
 *
 * Selectors are dotted field paths (`Service.Meta.version`, `Service.Tags`, `Node.Node`). On a list,
 * `in` / `contains` test membership and `==` matches when any element equals; on a map they test the
 * keys; on a string `contains` is a substring test. `matches` (regular expressions) is not supported
 * and is rejected with a clear error rather than ignored.
 */
export type Predicate = (v: unknown) => boolean;

type Tok = { t: 'str' | 'word' | 'op' | 'lp' | 'rp'; v: string };

function lex(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      i++;
    } else if (c === '(') {
      out.push({ t: 'lp', v: c });
      i++;
    } else if (c === ')') {
      out.push({ t: 'rp', v: c });
      i++;
    } else if (c === '"' || c === '`' || c === "'") {
      let j = i + 1;
      let v = '';
      while (j < s.length && s[j] !== c) {
        if (s[j] === '\\' && c === '"' && j + 1 < s.length) j++;
        v += s[j];
        j++;
      }
      if (j >= s.length) throw bad(s, 'unterminated string');
      out.push({ t: 'str', v });
      i = j + 1;
    } else if (s.startsWith('==', i) || s.startsWith('!=', i)) {
      out.push({ t: 'op', v: s.slice(i, i + 2) });
      i += 2;
    } else {
      let j = i;
      while (j < s.length && !' \t\n()"`\''.includes(s[j]!) && !s.startsWith('==', j) && !s.startsWith('!=', j)) j++;
      if (j === i) throw bad(s, `unexpected ${JSON.stringify(c)}`);
      out.push({ t: 'word', v: s.slice(i, j) });
      i = j;
    }
  }
  return out;
}

function bad(src: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid ?filter ${JSON.stringify(src.slice(0, 80))}: ${why}`, { details: { field: 'filter' } });
}

const SELECTOR_RE = /^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$/;

export function compileFilter(src: string): Predicate {
  if (src.length > 2048) throw bad(src, 'longer than 2048 characters');
  const toks = lex(src);
  let p = 0;
  const peekWord = (w: string) => toks[p]?.t === 'word' && toks[p]!.v.toLowerCase() === w;
  const value = (): string => {
    const t = toks[p];
    if (!t || (t.t !== 'str' && t.t !== 'word')) throw bad(src, 'expected a value');
    p++;
    return t.v;
  };
  const selector = (): string[] => {
    const t = toks[p];
    if (!t || t.t !== 'word' || !SELECTOR_RE.test(t.v)) throw bad(src, `expected a selector such as Service.Tags${t ? `, got ${JSON.stringify(t.v)}` : ''}`);
    p++;
    return t.v.split('.');
  };
  const primary = (): Predicate => {
    const t = toks[p];
    if (!t) throw bad(src, 'unexpected end');
    if (t.t === 'lp') {
      p++;
      const e = or();
      if (toks[p]?.t !== 'rp') throw bad(src, "missing ')'");
      p++;
      return e;
    }
    if (t.t === 'str' || (t.t === 'word' && !SELECTOR_RE.test(t.v))) {
      // "value" [not] in Selector
      const v = value();
      let neg = false;
      if (peekWord('not')) {
        neg = true;
        p++;
      }
      if (!peekWord('in')) throw bad(src, `expected 'in' after ${JSON.stringify(v)}`);
      p++;
      const sel = selector();
      return (o) => contains(resolve(o, sel), v) !== neg;
    }
    const sel = selector();
    const op = toks[p];
    if (!op) throw bad(src, 'expected an operator after the selector');
    if (op.t === 'op') {
      p++;
      const v = value();
      return op.v === '==' ? (o) => equals(resolve(o, sel), v) : (o) => !equals(resolve(o, sel), v);
    }
    if (peekWord('is')) {
      p++;
      let neg = false;
      if (peekWord('not')) {
        neg = true;
        p++;
      }
      if (!peekWord('empty')) throw bad(src, "expected 'empty' after 'is'");
      p++;
      return (o) => isEmpty(resolve(o, sel)) !== neg;
    }
    let neg = false;
    if (peekWord('not')) {
      neg = true;
      p++;
    }
    if (peekWord('contains')) {
      p++;
      const v = value();
      return (o) => contains(resolve(o, sel), v) !== neg;
    }
    if (peekWord('matches')) throw bad(src, "'matches' (regular expressions) is not supported by roster");
    if (peekWord('in')) throw bad(src, "'in' takes the value first: \"value\" in Selector");
    throw bad(src, `unknown operator ${JSON.stringify(op.v)}: expected ==, !=, in, contains or is empty`);
  };
  const not = (): Predicate => {
    if (peekWord('not')) {
      p++;
      const e = not();
      return (o) => !e(o);
    }
    return primary();
  };
  const and = (): Predicate => {
    let e = not();
    while (peekWord('and')) {
      p++;
      const l = e;
      const r = not();
      e = (o) => l(o) && r(o);
    }
    return e;
  };
  const or = (): Predicate => {
    let e = and();
    while (peekWord('or')) {
      p++;
      const l = e;
      const r = and();
      e = (o) => l(o) || r(o);
    }
    return e;
  };
  const e = or();
  if (p !== toks.length) throw bad(src, `unexpected ${JSON.stringify(toks[p]!.v)}`);
  return e;
}

function resolve(o: unknown, path: readonly string[]): unknown {
  let cur = o;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

function equals(v: unknown, want: string): boolean {
  if (Array.isArray(v)) return v.some((x) => scalar(x) === want);
  return scalar(v) === want;
}

function contains(v: unknown, want: string): boolean {
  if (Array.isArray(v)) return v.some((x) => scalar(x) === want);
  if (typeof v === 'string') return v.includes(want);
  if (v && typeof v === 'object') return Object.prototype.hasOwnProperty.call(v, want);
  return false;
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return false;
}
