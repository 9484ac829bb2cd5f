/**
 * Where the compiled scripts are. The benches run from dist/bench/*.js in
 * normal use, but the test suite imports their TypeScript sources through
 * vitest; either way, the processes and worker threads they start must be
 * plain JavaScript, so every script path points into dist/.
 */

import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const benchDir = dirname(fileURLToPath(import.meta.url));

/** The project root, whether this file is bench/paths.ts or dist/bench/paths.js. */
export const PROJECT_ROOT = basename(dirname(benchDir)) === 'dist' ? dirname(dirname(benchDir)) : dirname(benchDir);

/** A compiled script by its path under dist/, e.g. `src/main.js`. */
export function compiledScript(relativePath: string): string {
  return join(PROJECT_ROOT, 'dist', relativePath);
}

export const ENGINE_MAIN = compiledScript('src/main.js');
export const BARE_SERVER_MAIN = compiledScript('bench/bare-server.js');
export const WS_LOAD_WORKER = compiledScript('bench/ws-load-worker.js');
export const DEFAULT_RESULTS_DIR = join(PROJECT_ROOT, 'bench', 'results');

/** Whether the module at `moduleUrl` is the script node was started with (and not imported, as by the tests). */
export function isMainScript(moduleUrl: string): boolean {
  const started = process.argv[1];
  return started !== undefined && pathToFileURL(started).href === moduleUrl;
}
