/**
 * The HTTP load against `POST /v1/instructions`, either one instruction
 * per request or a batch per request, driven by autocannon (here, in this
 * process) or by wrk (http-wrk.ts, when installed). Every request gets
 * fresh ids (nothing is replayed, so the engine does real work rather than
 * answering duplicates) and speaks for the next institution in turn, and
 * every response is checked against the ids that request carried.
 *
 * autocannon destroys its connections when the time is up, with requests
 * still in flight; those are kept as "unanswered" so that the auditor can
 * ask the engine whether each was committed.
 */

import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { bankCodes, institutionIds, institutionToken, instructionPool, NetTally, poolEntry, requestInstitution, wireInstruction, type PoolEntry } from './fixture.js';
import { runWrkLoad, wrkAvailable, WRK_MISSING_NOTE } from './http-wrk.js';
import type { LatencyMs } from './latency.js';
import { fixtureOf, type BenchParams, type HttpDriver, type HttpVariant } from './params.js';
import type { Unanswered } from './ws-load-protocol.js';

/** Problems kept verbatim; past this they are only counted. */
const PROBLEM_SAMPLES_MAX = 20;
/** A request unanswered this long is a failure, not a slow answer. */
const REQUEST_TIMEOUT_S = 30;

export interface HttpLoadOutcome {
  variant: HttpVariant;
  /** The generator that drove this load (autocannon when wrk was asked for and is not installed). */
  driver: HttpDriver;
  instructionsPerRequest: number;
  measureWindowS: number;
  throughputPerS: number;
  requestsPerS: number;
  /** Per request: autocannon's histogram has a resolution of 1 ms, wrk's 1 µs. */
  latency: LatencyMs;
  /** Distinct institutions the requests spoke for. */
  institutionsUsed: number;
  sentInstructions: number;
  answeredInstructions: number;
  clearedInstructions: number;
  notCleared: number;
  duplicates: number;
  idMismatches: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Of the generator's thread (autocannon runs in this one) over the measured run: near 1, autocannon set the pace. Empty for wrk. */
  generatorEventLoopUtilization: number[];
  /** wrk: cores the wrk process used over the measured run (CPU seconds ÷ wall seconds). */
  generatorCpuCores?: number;
  codes: Record<string, number>;
  problems: string[];
  nets: Float64Array;
  unanswered: Unanswered[];
}

interface ResultBody {
  id?: unknown;
  status?: unknown;
  duplicate?: unknown;
  code?: unknown;
}

/** Generates the requests and checks the responses of one server's runs. */
class HttpTracker {
  private readonly pool: readonly PoolEntry[];
  private next = 0;
  private requests = 0;
  /** First instruction number of each request sent and not yet answered, with its instruction count and institution. */
  readonly pending = new Map<number, { count: number; institution: string }>();
  readonly tally: NetTally;
  readonly used = new Set<string>();
  sent = 0;
  answered = 0;
  cleared = 0;
  notCleared = 0;
  duplicates = 0;
  idMismatches = 0;
  readonly codes: Record<string, number> = {};
  readonly problems: string[] = [];

  constructor(
    p: BenchParams,
    readonly institutions: readonly string[],
    readonly batchSize: number | undefined,
  ) {
    this.pool = instructionPool(fixtureOf(p));
    this.tally = new NetTally(bankCodes(p.banks));
  }

  private problem(text: string): void {
    if (this.problems.length < PROBLEM_SAMPLES_MAX) this.problems.push(text);
  }

  private id(n: number): string {
    return `h${n}`;
  }

  /** The next request: its body and the institution it speaks for. */
  request(): { body: string; institution: string } {
    const count = this.batchSize ?? 1;
    const first = this.next;
    this.next += count;
    const institution = this.institutions[requestInstitution(this.requests++, this.institutions.length)]!;
    this.used.add(institution);
    this.pending.set(first, { count, institution });
    this.sent += count;
    if (this.batchSize === undefined) return { body: JSON.stringify(wireInstruction(this.pool, this.id(first), first)), institution };
    const instructions = [];
    for (let i = 0; i < count; i++) instructions.push(wireInstruction(this.pool, this.id(first + i), first + i));
    return { body: JSON.stringify({ instructions }), institution };
  }

  private check(r: ResultBody, expected: number): void {
    this.answered++;
    if (r.id !== this.id(expected)) {
      this.idMismatches++;
      this.problem(`result has id ${String(r.id)}, expected ${this.id(expected)}`);
    } else if (r.status === 'cleared' && r.duplicate === undefined) {
      this.cleared++;
      this.tally.add(poolEntry(this.pool, expected));
    } else if (r.duplicate !== undefined) {
      this.duplicates++;
      this.problem(`instruction ${String(r.id)} answered as a duplicate`);
    } else {
      this.notCleared++;
      const code = typeof r.code === 'string' ? r.code : String(r.status);
      this.codes[code] = (this.codes[code] ?? 0) + 1;
    }
  }

  response(status: number, text: string): void {
    let body: ResultBody & { results?: ResultBody[] };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      this.problem(`HTTP ${status} with a body that is not JSON: ${text.slice(0, 100)}`);
      return;
    }
    const results = this.batchSize === undefined ? [body] : Array.isArray(body.results) ? body.results : undefined;
    const firstId = results?.[0]?.id;
    const first = typeof firstId === 'string' && firstId.startsWith('h') ? Number(firstId.slice(1)) : NaN;
    const count = this.pending.get(first)?.count;
    if (results === undefined || count === undefined) {
      // A whole-request failure (e.g. 503 OVERLOADED) names no instruction; it is counted but cannot be matched.
      const code = typeof body.code === 'string' ? body.code : `HTTP ${status}`;
      this.codes[code] = (this.codes[code] ?? 0) + 1;
      this.problem(`HTTP ${status} that matches no request in flight: ${text.slice(0, 200)}`);
      return;
    }
    this.pending.delete(first);
    if (results.length !== count) {
      this.idMismatches += Math.abs(count - results.length);
      this.problem(`response with ${results.length} results for ${count} instructions`);
    }
    for (let i = 0; i < Math.min(count, results.length); i++) this.check(results[i]!, first + i);
  }

  unanswered(): Unanswered[] {
    const out: Unanswered[] = [];
    for (const [first, { count, institution }] of this.pending) {
      for (let i = 0; i < count; i++) out.push({ institution, id: this.id(first + i), n: first + i });
    }
    return out;
  }
}

async function cannon(base: string, tracker: HttpTracker, p: BenchParams, durationS: number): Promise<autocannon.Result> {
  return autocannon({
    url: base,
    connections: p.httpConnections,
    pipelining: p.httpPipelining,
    duration: durationS,
    timeout: REQUEST_TIMEOUT_S,
    requests: [
      {
        method: 'POST',
        path: '/v1/instructions',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req) => {
          const { body, institution } = tracker.request();
          return { ...req, body, headers: { ...req.headers, authorization: `Bearer ${institutionToken(institution)}` } };
        },
        onResponse: (status, body) => tracker.response(status, body),
      },
    ],
  });
}

/** Whether the run asked for wrk and will get autocannon instead; the note says why. */
export function httpDriverFallback(p: BenchParams): string | undefined {
  return p.httpDriver === 'wrk' && !wrkAvailable() ? WRK_MISSING_NOTE : undefined;
}

/** The driver that will actually run: wrk when asked for and installed, autocannon otherwise. */
export function effectiveHttpDriver(p: BenchParams): HttpDriver {
  return p.httpDriver === 'wrk' && wrkAvailable() ? 'wrk' : 'autocannon';
}

export function runHttpLoad(base: string, variant: HttpVariant, p: BenchParams): Promise<HttpLoadOutcome> {
  return effectiveHttpDriver(p) === 'wrk' ? runWrkLoad(base, variant, p) : runAutocannonLoad(base, variant, p);
}

async function runAutocannonLoad(base: string, variant: HttpVariant, p: BenchParams): Promise<HttpLoadOutcome> {
  const tracker = new HttpTracker(p, institutionIds(p.institutions), variant === 'batch' ? p.httpBatchSize : undefined);
  // A warm-up run with the same tracker: its instructions are audited, its figures dropped.
  const warm = p.warmupS > 0 ? await cannon(base, tracker, p, p.warmupS) : undefined;
  const clearedBefore = tracker.cleared;
  const measureS = p.durationS - p.warmupS;
  const eluAtStart = performance.eventLoopUtilization();
  const r = await cannon(base, tracker, p, measureS);
  const elu = performance.eventLoopUtilization(eluAtStart).utilization;
  const clearedMeasured = tracker.cleared - clearedBefore;
  return {
    variant,
    driver: 'autocannon',
    instructionsPerRequest: tracker.batchSize ?? 1,
    measureWindowS: r.duration,
    throughputPerS: clearedMeasured / r.duration,
    requestsPerS: r.requests.total / r.duration,
    latency: { p50: r.latency.p50, p99: r.latency.p99, p999: r.latency.p99_9, max: r.latency.max, count: r.latency.total ?? r.requests.total },
    institutionsUsed: tracker.used.size,
    sentInstructions: tracker.sent,
    answeredInstructions: tracker.answered,
    clearedInstructions: tracker.cleared,
    notCleared: tracker.notCleared,
    duplicates: tracker.duplicates,
    idMismatches: tracker.idMismatches,
    non2xx: r.non2xx + (warm?.non2xx ?? 0),
    errors: r.errors + (warm?.errors ?? 0),
    timeouts: r.timeouts + (warm?.timeouts ?? 0),
    generatorEventLoopUtilization: [Math.round(elu * 1000) / 1000],
    codes: tracker.codes,
    problems: tracker.problems,
    nets: tracker.tally.nets,
    unanswered: tracker.unanswered(),
  };
}
