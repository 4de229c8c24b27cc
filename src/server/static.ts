import { readFile, stat } from 'node:fs/promises';
import { extname, join, resolve as resolvePath, sep } from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../core/errors.js';
import { decodePath, describeValue, parseQuery } from './http.js';
import type { Exchange } from './router.js';
import type { RouteModule } from './context.js';
import { UI_HEADERS } from './auth/edge.js';

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/**
 * The dashboard's static files under /ui/ (no build step, no framework), from `dir`. `/` and `/ui`
 * redirect to `/ui/`. Paths are checked segment by segment and must stay inside `dir`.
 */
export function staticRoutes(dir: string): RouteModule {
  const root = resolvePath(dir);
  const redirect = (x: Exchange) => {
    parseQuery(x.query, []);
    x.reply(302, '', 'text/plain', ['location', '/ui/', ...UI_HEADERS]);
  };
  const serve = async (x: Exchange) => {
    parseQuery(x.query, []);
    const rel = decodePath(x.param, 'path') || 'index.html';
    for (const seg of rel.split('/')) {
      if (seg === '' || seg === '.' || seg === '..' || seg.includes('\\') || seg.includes('\0')) {
        throw new InvalidArgumentError(`invalid path ${describeValue(rel)}`);
      }
    }
    const file = join(root, rel);
    if (!file.startsWith(root + sep)) throw new InvalidArgumentError(`invalid path ${describeValue(rel)}`);
    let body: Buffer;
    try {
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      body = await readFile(file);
    } catch (e) {
      throw new NotFoundError(`no such file: /ui/${rel}`, { cause: e });
    }
    // The page's own CSP meta tag stays as a second line; these headers are the enforced policy
    // (frame-ancestors and X-Frame-Options work only as headers).
    x.send(200, ['content-type', MIME[extname(file)] ?? 'application/octet-stream', 'cache-control', 'no-cache', ...UI_HEADERS], body);
  };
  // The dashboard's files are public (no data in them): the page asks for a token (kept in the
  // tab's sessionStorage) and sends it with every API request.
  return () => [
    { path: '/', name: 'ui', acl: 'open', navigation: true, methods: { GET: redirect } },
    { path: '/ui', name: 'ui', acl: 'open', navigation: true, methods: { GET: redirect } },
    { path: '/ui/*', name: 'ui', acl: 'open', navigation: true, methods: { GET: serve } },
  ];
}
