#!/usr/bin/env node
/**
 * `npm start`'s prestart: compile the TypeScript only when the compiled
 * engine is missing or older than what it is compiled from, so a start
 * does not pay for a full build every time. A fresh clone has no dist/,
 * so its first `npm start` builds.
 *
 * The build is out of date when dist/src/main.js is missing, or older than
 * any file under the folders the build reads (tsconfig.build.json: src/,
 * bench/, test/sim/) or than the tsconfig files. A file deleted from src/
 * does not count: its stale output is not imported by anything that is
 * still there. `NETTING_BUILD=always` builds anyway; `NETTING_BUILD=never`
 * never does (an image or host that ships dist/ and no compiler).
 *
 * Not for production starts: a service runs `node dist/src/main.js`
 * directly (deploy/netting-engine.service, Dockerfile).
 */

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const target = join(root, 'dist', 'src', 'main.js');
const inputs = ['src', 'bench', join('test', 'sim'), 'tsconfig.json', 'tsconfig.build.json'];
/** Deeper than any folder of the project: a symlink loop cannot make the walk endless. */
const DEPTH_MAX = 16;

/** The newest modification time under `path` (a file or a folder), 0 when it does not exist. */
function newestMs(path, depth = 0) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  if (depth >= DEPTH_MAX) return 0;
  let newest = 0;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMs(join(path, name), depth + 1));
  return newest;
}

/** Why a build is needed, or undefined when dist/ is up to date. */
function staleness() {
  if (process.env.NETTING_BUILD === 'always') return 'NETTING_BUILD=always';
  if (!existsSync(target)) return 'dist/src/main.js is missing';
  const builtMs = statSync(target).mtimeMs;
  for (const input of inputs) {
    if (newestMs(join(root, input)) > builtMs) return `${input} changed since the last build`;
  }
  return undefined;
}

const reason = staleness();
if (reason === undefined || process.env.NETTING_BUILD === 'never') {
  if (reason !== undefined) process.stderr.write(`netting-engine: ${reason}, but NETTING_BUILD=never: starting the build as it is\n`);
  process.exit(0);
}

let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  process.stderr.write(
    `netting-engine: ${reason} and TypeScript is not installed (an install without dev dependencies?): ` +
      'run `npm ci` and `npm run build`, or start the built engine with `node dist/src/main.js`\n',
  );
  process.exit(1);
}
process.stdout.write(`netting-engine: building (${reason})\n`);
const run = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
if (run.status !== 0 && existsSync(target)) {
  // tsc writes its output even when the type-check fails: date it back so the next start builds again.
  utimesSync(target, 0, 0);
}
process.exit(run.status ?? 1);
