import { readFileSync } from 'node:fs';

/** What this build of roster is: its package version (read once from package.json, which ships with
 *  the package) and the Node.js it runs on. `roster --version` and `roster_build_info` show it. */
export const BUILD: { readonly version: string; readonly node: string } = Object.freeze({ version: readVersion(), node: process.version });

function readVersion(): string {
  try {
    // dist/core/version.js and src/core/version.ts are both two levels below the package root.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
