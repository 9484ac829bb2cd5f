/**
 * Command line of the benches: `node dist/bench/run.js <all|http|ws|scale|cluster>
 * [--flag value ...]` (npm run bench, bench:http, bench:ws, bench:scale).
 * It prints a line per scenario (per size for scale) and the report's
 * Markdown (the table for scale), writes the report files, and exits
 * non-zero when an audit or a check fails, so that a broken engine cannot
 * pass for a fast one.
 */

import { readFileSync } from 'node:fs';
import { ParamError, resolveParams, splitArgs, usage, type BenchParams } from './params.js';
import { runClusterBench } from './cluster.js';
import { runScaleBench, scaleTable } from './scale.js';
import { runBench, type BenchKind } from './suite.js';

const KINDS: readonly (BenchKind | 'scale' | 'cluster')[] = ['all', 'http', 'ws', 'scale', 'cluster'];

async function main(): Promise<number> {
  let kind: BenchKind | 'scale' | 'cluster';
  let params: BenchParams;
  try {
    const { positional, flags } = splitArgs(process.argv.slice(2));
    if (flags.has('help')) {
      process.stdout.write(`${usage()}\n`);
      return 0;
    }
    const k = positional[0] ?? 'all';
    if (!(KINDS as readonly string[]).includes(k) || positional.length > 1) throw new ParamError(`the bench is one of ${KINDS.join(', ')}\n${usage()}`);
    kind = k as BenchKind | 'scale' | 'cluster';
    params = resolveParams(flags, process.env);
  } catch (err) {
    if (err instanceof ParamError) {
      process.stderr.write(`bench: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  process.stdout.write(`bench ${kind}, size ${params.size}: ${JSON.stringify(params)}\n`);
  const progress = (line: string): void => void process.stdout.write(`${line}\n`);
  if (kind === 'cluster') {
    const { ok, markdown, file } = await runClusterBench(params, progress);
    process.stdout.write(`\n${markdown}\nreport: ${file}\n`);
    if (!ok) process.stderr.write('bench: FAILED (an audit failed)\n');
    return ok ? 0 : 1;
  }
  if (kind === 'scale') {
    const { report, files } = await runScaleBench(params, progress);
    process.stdout.write(`\n${scaleTable(report)}\n\nreport: ${files.markdown}\n        ${files.svg}\n        ${files.json}\n`);
    if (!report.ok) process.stderr.write('bench: FAILED (see the problems in the report)\n');
    return report.ok ? 0 : 1;
  }
  const { report, files } = await runBench(kind, params, progress);
  process.stdout.write(`\n${readFileSync(files.markdown, 'utf8')}\nreport: ${files.json}\n        ${files.markdown}\n`);
  if (!report.ok) process.stderr.write('bench: FAILED (see the problems in the report)\n');
  return report.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
