/**
 * A one-shot program: open a backend, wait for the go file (polling on a ref'd interval, which is
 * then cleared), list the prefix once and report. While that call is in flight nothing but the
 * backend can keep the process alive. Run with ROSTER_TEST_ONESHOT = JSON { url, options, go }.
 * stdout lines: OPEN, then OK <n> or FAILED <code>, then END.
 */
import { existsSync } from 'node:fs';
import { openBackend } from '../../../src/index.js';

const cfg = JSON.parse(process.env.ROSTER_TEST_ONESHOT ?? '{}') as { url: string; options?: Record<string, unknown>; go: string };
const out = (line: string) => process.stdout.write(`${line}\n`);

const b = await openBackend(cfg.url, cfg.options ?? {});
out('OPEN');
await new Promise<void>((resolve) => {
  const t = setInterval(() => {
    if (!existsSync(cfg.go)) return;
    clearInterval(t);
    resolve();
  }, 20);
});
try {
  const r = await b.list('');
  out(`OK ${r.items.length}`);
} catch (e) {
  out(`FAILED ${(e as { code?: string }).code ?? String(e)}`);
}
b.destroy();
out('END');
