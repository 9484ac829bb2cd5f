/**
 * The WebSocket load generator's main thread: it spreads the institution
 * connections over worker threads (so that one generator thread is not the
 * bottleneck), starts them together, and merges what they report into one
 * outcome with one latency histogram.
 */

import { Worker } from 'node:worker_threads';
import { bankCodes, connectionInstitution, institutionIds, institutionToken, NetTally } from './fixture.js';
import { latencySummaryMs, mergeHistograms, type LatencyMs } from './latency.js';
import { fixtureOf, type BenchParams, type WsMode } from './params.js';
import { WS_LOAD_WORKER } from './paths.js';
import type { MainToWorker, Unanswered, WorkerToMain, WsConnSpec, WsWorkerInit, WsWorkerResult } from './ws-load-protocol.js';

/**
 * Open loop: instructions a connection may have unacknowledged before the
 * generator sheds frames, below the engine's default per-connection bound
 * (50,000) so that the generator gives way before the engine refuses.
 */
const OPEN_LOOP_INFLIGHT_INSTRUCTIONS_MAX = 40_000;
/** Time for every thread to connect, and a margin past the drain for reporting. */
const CONNECT_MS_MAX = 15_000;
const REPORT_MARGIN_MS = 15_000;
/** Lead time between 'go' and the first frame, so every thread starts at the same instant. */
const START_LEAD_MS = 100;

export interface WsLoadOutcome {
  mode: WsMode;
  /** Offered instructions per second (open loop only). */
  offeredPerS: number | undefined;
  measureWindowS: number;
  throughputPerS: number;
  latency: LatencyMs;
  /** Distinct institutions the connections speak for (one each). */
  institutionsUsed: number;
  sentInstructions: number;
  shedInstructions: number;
  answeredInstructions: number;
  clearedInstructions: number;
  notCleared: number;
  duplicates: number;
  idMismatches: number;
  unknownAcks: number;
  errorFrames: number;
  closedEarly: number;
  sendLagMsMax: number;
  /** Per generator thread, from load start to report: near 1 means the generator, not the server, set the pace. */
  generatorEventLoopUtilization: number[];
  codes: Record<string, number>;
  problems: string[];
  nets: Float64Array;
  unanswered: Unanswered[];
}

function runThread(init: WsWorkerInit, ready: () => void, go: Promise<number>): { worker: Worker; done: Promise<WsWorkerResult> } {
  const worker = new Worker(WS_LOAD_WORKER, { workerData: init });
  const done = new Promise<WsWorkerResult>((resolve, reject) => {
    worker.on('message', (msg: WorkerToMain) => {
      if (msg.type === 'ready') {
        ready();
        void go.then((startEpochMs) => worker.postMessage({ type: 'go', startEpochMs } satisfies MainToWorker));
      } else if (msg.type === 'failed') {
        reject(new Error(`generator thread ${init.threadIndex}: ${msg.error}`));
      } else {
        resolve(msg.result);
      }
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`generator thread ${init.threadIndex} exited with ${code} before reporting`)));
  });
  return { worker, done };
}

export async function runWsLoad(base: string, mode: WsMode, p: BenchParams): Promise<WsLoadOutcome> {
  const url = `${base.replace(/^http/, 'ws')}/v1/stream`;
  const fixture = fixtureOf(p);
  const institutions = institutionIds(p.institutions);
  const used = new Set<string>();
  const specs: WsConnSpec[][] = Array.from({ length: p.wsThreads }, () => []);
  for (let k = 0; k < p.wsConnections; k++) {
    const institution = institutions[connectionInstitution(k, p.wsConnections, institutions.length)]!;
    used.add(institution);
    specs[k % p.wsThreads]!.push({ institution, token: institutionToken(institution), connIndex: k });
  }
  const durationMs = p.durationS * 1000;
  const drainMs = p.drainS * 1000;

  let readyCount = 0;
  let release: (startEpochMs: number) => void = () => undefined;
  const go = new Promise<number>((resolve) => {
    release = resolve;
  });
  const threads = specs.map((conns, threadIndex) =>
    runThread(
      {
        url,
        threadIndex,
        connectionsTotal: p.wsConnections,
        conns,
        mode,
        batchSize: p.wsBatchSize,
        windowFrames: p.wsWindowFrames,
        framesPerSPerConn: p.wsOfferedPerS / p.wsBatchSize / p.wsConnections,
        inflightInstructionsMax: OPEN_LOOP_INFLIGHT_INSTRUCTIONS_MAX,
        durationMs,
        warmupMs: p.warmupS * 1000,
        drainMs,
        fixture,
      },
      () => {
        if (++readyCount === specs.length) release(Date.now() + START_LEAD_MS);
      },
      go,
    ),
  );

  let watchdog: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    watchdog = setTimeout(() => reject(new Error('the WebSocket generator did not report in time')), CONNECT_MS_MAX + durationMs + drainMs + REPORT_MARGIN_MS);
  });
  let results: WsWorkerResult[];
  try {
    results = await Promise.race([Promise.all(threads.map((t) => t.done)), timeout]);
  } finally {
    clearTimeout(watchdog);
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  const histogram = mergeHistograms(results.map((r) => r.histogram));
  const latency = latencySummaryMs(histogram);
  histogram.destroy();
  const tally = new NetTally(bankCodes(p.banks));
  const sum = (f: (r: WsWorkerResult) => number): number => results.reduce((acc, r) => acc + f(r), 0);
  const codes: Record<string, number> = {};
  for (const r of results) {
    tally.addNets(r.nets);
    for (const [code, n] of Object.entries(r.codes)) codes[code] = (codes[code] ?? 0) + n;
  }
  const measureWindowS = (durationMs - p.warmupS * 1000) / 1000;
  const measured = sum((r) => r.measuredInstructions);
  return {
    mode,
    offeredPerS: mode === 'open' ? p.wsOfferedPerS : undefined,
    measureWindowS,
    throughputPerS: measured / measureWindowS,
    latency,
    institutionsUsed: used.size,
    sentInstructions: sum((r) => r.sentInstructions),
    shedInstructions: sum((r) => r.shedInstructions),
    answeredInstructions: sum((r) => r.answeredInstructions),
    clearedInstructions: sum((r) => r.clearedInstructions),
    notCleared: sum((r) => r.notCleared),
    duplicates: sum((r) => r.duplicates),
    idMismatches: sum((r) => r.idMismatches),
    unknownAcks: sum((r) => r.unknownAcks),
    errorFrames: sum((r) => r.errorFrames),
    closedEarly: sum((r) => r.closedEarly),
    sendLagMsMax: Math.round(Math.max(...results.map((r) => r.sendLagMsMax)) * 1000) / 1000,
    generatorEventLoopUtilization: results.map((r) => r.eventLoopUtilization),
    codes,
    problems: results.flatMap((r) => r.problems),
    nets: tally.nets,
    unanswered: results.flatMap((r) => r.unanswered),
  };
}
