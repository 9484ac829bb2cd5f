/**
 * The benches' parameters: two sizes of defaults (small for the test suite,
 * large for real measurement), overridden by environment variables and then
 * by command-line flags. Every value has a named bound and a bad one stops
 * the run with a message that names the flag, before anything is started.
 */

import { BANKS_MAX, INSTITUTIONS_MAX, type FixtureSpec, type PairsMode } from './fixture.js';
import { DEFAULT_RESULTS_DIR } from './paths.js';

export type BenchSize = 'small' | 'large';
export type HttpVariant = 'single' | 'batch';
export type HttpDriver = 'autocannon' | 'wrk';
export type WsMode = 'closed' | 'open';

export interface BenchParams {
  size: BenchSize;
  /** Load phase of each run, warm-up included. */
  durationS: number;
  /** Leading part of the load phase left out of throughput and latency (still audited). */
  warmupS: number;
  /** Longest wait for outstanding acks once the load phase is over. */
  drainS: number;
  httpVariants: HttpVariant[];
  /** What drives the HTTP load: autocannon (in this process) or wrk (Debian's C generator, when installed). */
  httpDriver: HttpDriver;
  /** wrk threads (wrk only). */
  httpThreads: number;
  /**
   * HTTP connections in all, each with one request in flight. Large: two per
   * institution (100 institutions), as institutions' gateways keep a few
   * keep-alive connections each; a request waits for its commit, so fewer
   * connections measure commit latency more than either server's work.
   */
  httpConnections: number;
  httpPipelining: number;
  /** Instructions per POST in the batched HTTP variant. */
  httpBatchSize: number;
  wsModes: WsMode[];
  /** WebSocket connections in all, spread over the generator threads. */
  wsConnections: number;
  wsThreads: number;
  /** Instructions per `submit` frame. */
  wsBatchSize: number;
  /** Closed loop: unacknowledged frames per connection. */
  wsWindowFrames: number;
  /** Open loop: instructions per second offered, over all connections. */
  wsOfferedPerS: number;
  /** Engine shards and worker threads. */
  shards: number;
  workers: number;
  /** Seed of the instruction generator, so a run can be replayed. */
  seed: number;
  /** Participant banks: the 14 real codes first, then B0015, B0016, ... */
  banks: number;
  /** Submitting institutions (principals PI0001, ...), spread over the connections and requests. */
  institutions: number;
  /** How payer and payee are drawn: uniformly, or Zipf-like so a few large banks carry much of the traffic. */
  pairs: PairsMode;
  /** bench:scale: the numbers of banks swept. */
  scaleSizes: number[];
  /** bench:scale: requests per read endpoint whose latency is taken after each load. */
  probes: number;
  /**
   * bench:scale: sweeps of the sizes, each the reverse of the one before,
   * so that the machine's drift over minutes falls on every size alike;
   * the summary takes medians over them.
   */
  scaleRounds: number;
  resultsDir: string;
}

const SIZES: Record<BenchSize, Omit<BenchParams, 'size' | 'resultsDir'>> = {
  small: {
    durationS: 1.5,
    warmupS: 0,
    drainS: 15,
    httpVariants: ['single', 'batch'],
    httpConnections: 4,
    httpPipelining: 1,
    httpBatchSize: 20,
    wsModes: ['closed', 'open'],
    wsConnections: 2,
    wsThreads: 1,
    wsBatchSize: 20,
    wsWindowFrames: 4,
    wsOfferedPerS: 4_000,
    shards: 2,
    workers: 2,
    seed: 1,
    banks: 14,
    institutions: 4,
    pairs: 'skewed',
    httpDriver: 'autocannon',
    httpThreads: 1,
    scaleSizes: [4, 30],
    probes: 5,
    scaleRounds: 1,
  },
  large: {
    durationS: 20,
    warmupS: 2,
    drainS: 30,
    httpVariants: ['single', 'batch'],
    httpConnections: 200,
    httpPipelining: 1,
    httpBatchSize: 100,
    wsModes: ['closed', 'open'],
    wsConnections: 8,
    wsThreads: 2,
    wsBatchSize: 100,
    wsWindowFrames: 8,
    wsOfferedPerS: 100_000,
    shards: 2,
    workers: 2,
    seed: 1,
    banks: 500,
    institutions: 100,
    pairs: 'skewed',
    httpDriver: 'autocannon',
    httpThreads: 1,
    scaleSizes: [20, 100, 500, 2000],
    probes: 50,
    scaleRounds: 1,
  },
};

/**
 * uWebSockets.js closes a connection, with nothing written, when a request
 * arrives on it while the previous response is still pending, and both the
 * engine and the ceiling answer POSTs after a commit, i.e. later. It does
 * not support async pipelining and will not (uWebSockets.js issue 277,
 * "wontfix"), so pipelining above 1 measures connection churn, not either
 * server: the defaults use more connections instead.
 */
export const PIPELINING_NOTE =
  'uWebSockets.js closes a connection that pipelines a request behind a response still pending (async handlers, as both servers have); pipelining above 1 measures reconnects, not the servers';

export class ParamError extends Error {
  override name = 'ParamError';
}

type NumericKey = { [K in keyof BenchParams]: BenchParams[K] extends number ? K : never }[keyof BenchParams];

interface NumericOption {
  flag: string;
  key: NumericKey;
  min: number;
  max: number;
  integer: boolean;
  help: string;
}

/** Bounds keep a typo from starting a run that would not end or would swamp the machine. */
const NUMERIC_OPTIONS: readonly NumericOption[] = [
  { flag: 'duration', key: 'durationS', min: 0.5, max: 600, integer: false, help: 'seconds of load per run, warm-up included' },
  { flag: 'warmup', key: 'warmupS', min: 0, max: 60, integer: false, help: 'seconds at the start left out of the figures' },
  { flag: 'drain', key: 'drainS', min: 1, max: 120, integer: false, help: 'longest wait for outstanding acks after the load' },
  { flag: 'connections', key: 'httpConnections', min: 1, max: 1000, integer: true, help: 'HTTP connections, one request in flight on each (autocannon or wrk)' },
  { flag: 'pipelining', key: 'httpPipelining', min: 1, max: 100, integer: true, help: 'autocannon requests in flight per connection; keep 1 (uWS closes async-pipelined connections)' },
  { flag: 'http-batch', key: 'httpBatchSize', min: 1, max: 10_000, integer: true, help: 'instructions per POST (batched variant)' },
  { flag: 'ws-connections', key: 'wsConnections', min: 1, max: 256, integer: true, help: 'WebSocket connections in all' },
  { flag: 'threads', key: 'wsThreads', min: 1, max: 16, integer: true, help: 'generator worker threads' },
  { flag: 'batch', key: 'wsBatchSize', min: 1, max: 10_000, integer: true, help: 'instructions per submit frame' },
  { flag: 'window', key: 'wsWindowFrames', min: 1, max: 1000, integer: true, help: 'closed loop: unacked frames per connection' },
  { flag: 'rate', key: 'wsOfferedPerS', min: 1, max: 5_000_000, integer: true, help: 'open loop: offered instructions per second' },
  { flag: 'shards', key: 'shards', min: 1, max: 64, integer: true, help: 'engine shards' },
  { flag: 'workers', key: 'workers', min: 1, max: 64, integer: true, help: 'engine worker threads' },
  { flag: 'seed', key: 'seed', min: 0, max: 2 ** 31 - 1, integer: true, help: 'generator seed' },
  { flag: 'banks', key: 'banks', min: 2, max: BANKS_MAX, integer: true, help: 'participant banks (14 real codes, then B0015, ...)' },
  { flag: 'institutions', key: 'institutions', min: 1, max: INSTITUTIONS_MAX, integer: true, help: 'submitting institutions' },
  { flag: 'http-threads', key: 'httpThreads', min: 1, max: 16, integer: true, help: 'wrk threads (--http-driver wrk)' },
  { flag: 'probes', key: 'probes', min: 1, max: 10_000, integer: true, help: 'scale: requests per read endpoint timed after each load' },
  { flag: 'rounds', key: 'scaleRounds', min: 1, max: 10, integer: true, help: 'scale: sweeps of the sizes, alternating their order; the summary takes medians' },
];

export function envName(flag: string): string {
  return `BENCH_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export function usage(): string {
  const lines = [
    'usage: node dist/bench/run.js <all|http|ws|scale|cluster> [--flag value ...]',
    'Every flag can also be given as an environment variable, e.g. --ws-connections as BENCH_WS_CONNECTIONS.',
    '  --size small|large      defaults to start from (large)',
    '  --http single,batch     HTTP variants to run',
    '  --http-driver autocannon|wrk  HTTP load generator (wrk falls back to autocannon when not installed)',
    '  --ws closed,open        WebSocket modes to run',
    '  --pairs uniform|skewed  payer/payee draw: uniform, or Zipf-like over the banks (skewed)',
    '  --sizes 20,100,500,2000 scale: numbers of banks to sweep',
    '  --out DIR               where the reports go (bench/results)',
    ...NUMERIC_OPTIONS.map((o) => `  --${o.flag.padEnd(22)}${o.help} (${o.min}..${o.max})`),
  ];
  return lines.join('\n');
}

function parseNumber(o: NumericOption, raw: string): number {
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v)) throw new ParamError(`--${o.flag}: '${raw}' is not a number`);
  if (o.integer && !Number.isInteger(v)) throw new ParamError(`--${o.flag}: must be an integer`);
  if (v < o.min || v > o.max) throw new ParamError(`--${o.flag}: must be from ${o.min} to ${o.max}`);
  return v;
}

function parseList<T extends string>(flag: string, raw: string, allowed: readonly T[]): T[] {
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new ParamError(`--${flag}: give some of ${allowed.join(', ')}`);
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) throw new ParamError(`--${flag}: '${item}' is not one of ${allowed.join(', ')}`);
  }
  return [...new Set(items)] as T[];
}

function parseOne<T extends string>(flag: string, raw: string, allowed: readonly T[]): T {
  const v = raw.trim();
  if (!(allowed as readonly string[]).includes(v)) throw new ParamError(`--${flag}: '${raw}' is not one of ${allowed.join(', ')}`);
  return v as T;
}

/** `--sizes 20,100,500`: distinct bank counts, each a valid --banks, in increasing order. */
function parseSizes(raw: string): number[] {
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new ParamError('--sizes: give numbers of banks, e.g. 20,100,500,2000');
  const out = items.map((item) => {
    const v = Number(item);
    if (!Number.isInteger(v) || v < 2 || v > BANKS_MAX) throw new ParamError(`--sizes: '${item}' is not a number of banks from 2 to ${BANKS_MAX}`);
    return v;
  });
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Collect `--flag value` and `--flag=value` pairs; the first bare word is the bench kind. */
export function splitArgs(argv: readonly string[]): { positional: string[]; flags: Map<string, string> } {
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    if (eq > 0) {
      flags.set(arg.slice(2, eq), arg.slice(eq + 1));
    } else if (arg === '--help') {
      flags.set('help', '');
    } else {
      const value = argv[i + 1];
      if (value === undefined) throw new ParamError(`${arg}: needs a value`);
      flags.set(arg.slice(2), value);
      i++;
    }
  }
  return { positional, flags };
}

/**
 * Resolve the parameters: size defaults, then environment variables, then
 * flags, then `overrides` (how the test suite sets them without a command line).
 */
export function resolveParams(flags: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv, overrides: Partial<BenchParams> = {}): BenchParams {
  const known = new Set(['size', 'http', 'http-driver', 'ws', 'pairs', 'sizes', 'out', 'help', ...NUMERIC_OPTIONS.map((o) => o.flag)]);
  for (const flag of flags.keys()) if (!known.has(flag)) throw new ParamError(`--${flag}: unknown flag\n${usage()}`);
  const lookup = (flag: string): string | undefined => flags.get(flag) ?? env[envName(flag)];

  const sizeRaw = overrides.size ?? lookup('size') ?? 'large';
  if (sizeRaw !== 'small' && sizeRaw !== 'large') throw new ParamError(`--size: must be small or large`);
  const defaults = SIZES[sizeRaw];
  const params: BenchParams = { size: sizeRaw, ...defaults, httpVariants: [...defaults.httpVariants], wsModes: [...defaults.wsModes], scaleSizes: [...defaults.scaleSizes], resultsDir: DEFAULT_RESULTS_DIR };
  for (const o of NUMERIC_OPTIONS) {
    const raw = lookup(o.flag);
    if (raw !== undefined) params[o.key] = parseNumber(o, raw);
  }
  const http = lookup('http');
  if (http !== undefined) params.httpVariants = parseList('http', http, ['single', 'batch'] as const);
  const driver = lookup('http-driver');
  if (driver !== undefined) params.httpDriver = parseOne('http-driver', driver, ['autocannon', 'wrk'] as const);
  const ws = lookup('ws');
  if (ws !== undefined) params.wsModes = parseList('ws', ws, ['closed', 'open'] as const);
  const pairs = lookup('pairs');
  if (pairs !== undefined) params.pairs = parseOne('pairs', pairs, ['uniform', 'skewed'] as const);
  const sizes = lookup('sizes');
  if (sizes !== undefined) params.scaleSizes = parseSizes(sizes);
  const out = lookup('out');
  if (out !== undefined && out !== '') params.resultsDir = out;
  Object.assign(params, overrides);
  check(params);
  return params;
}

/** Cross-field rules, which single bounds cannot say. */
function check(p: BenchParams): void {
  if (p.warmupS >= p.durationS) throw new ParamError('--warmup: must be shorter than --duration');
  if (p.wsThreads > p.wsConnections) throw new ParamError('--threads: more generator threads than connections would leave some idle');
  if (p.workers > p.shards) throw new ParamError('--workers: at most one worker per shard');
  if (p.httpThreads > p.httpConnections) throw new ParamError('--http-threads: wrk needs at least one connection per thread');
}

/** The fixture of a run: what the generators, the servers' configurations and the auditor derive the same instructions from. */
export function fixtureOf(p: BenchParams): FixtureSpec {
  return { seed: p.seed, banks: p.banks, institutions: p.institutions, pairs: p.pairs };
}
