/**
 * One thread of the WebSocket load generator. It opens its share of the
 * institution connections (the `ws` client), sends msgpack `submit` frames
 * in closed loop (a window of unacknowledged frames per connection) or open
 * loop (frames on a fixed schedule), checks every ack against what the
 * frame carried, and records per-instruction ack latency in an HDR
 * histogram that the main thread merges with the other threads'.
 *
 * Latency runs from the frame's send time to its ack; in open loop the
 * send time is the scheduled one, so a generator that falls behind its
 * schedule shows in the figures instead of hiding the server's stalls
 * (coordinated omission).
 */

import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { Decoder, Encoder } from '@msgpack/msgpack';
import WebSocket from 'ws';
import { bankCodes, instructionPool, NetTally, poolEntry, wireInstruction, type PoolEntry, type WireInstruction } from './fixture.js';
import { encodeHistogram, latencyHistogram, recordLatency } from './latency.js';
import type { MainToWorker, WorkerToMain, WsConnSpec, WsWorkerInit, WsWorkerResult } from './ws-load-protocol.js';

/** Problems kept verbatim; past this they are only counted. */
const PROBLEM_SAMPLES_MAX = 20;
/** How long connecting may take. */
const CONNECT_MS_MAX = 10_000;
/** Open-loop schedule tick; frames due in between go out together, each stamped with its own scheduled time. */
const TICK_MS = 1;

interface Frame {
  sentAt: number;
  first: number;
  count: number;
}

interface Conn {
  spec: WsConnSpec;
  ws: WebSocket;
  prefix: string;
  next: number;
  seq: number;
  inflight: Map<number, Frame>;
  inflightInstructions: number;
  open: boolean;
  /** Open loop: frames scheduled so far, and this connection's phase within one period. */
  scheduled: number;
  phaseMs: number;
}

const init = workerData as WsWorkerInit;
const pool: readonly PoolEntry[] = instructionPool(init.fixture);
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder({ maxStrLength: 4096, maxBinLength: 4096, maxArrayLength: 1_000_000, maxMapLength: 64 });
const histogram = latencyHistogram();
const tally = new NetTally(bankCodes(init.fixture.banks));

const result: WsWorkerResult = {
  threadIndex: init.threadIndex,
  sentFrames: 0,
  sentInstructions: 0,
  shedInstructions: 0,
  ackedFrames: 0,
  answeredInstructions: 0,
  clearedInstructions: 0,
  measuredInstructions: 0,
  notCleared: 0,
  duplicates: 0,
  idMismatches: 0,
  unknownAcks: 0,
  errorFrames: 0,
  codes: {},
  problems: [],
  histogram: '',
  nets: [],
  unanswered: [],
  closedEarly: 0,
  sendLagMsMax: 0,
  eventLoopUtilization: 0,
};
let eluAtStart: EventLoopUtilization | undefined;

// Set at 'go', in this thread's performance.now() time; until then nothing may look finished.
let startAt = 0;
let measureFrom = Infinity;
let loadUntil = Infinity;
let finished = false;
let tickTimer: NodeJS.Timeout | undefined;
let stopTimer: NodeJS.Timeout | undefined;

function post(msg: WorkerToMain): void {
  parentPort!.postMessage(msg);
}

function problem(text: string): void {
  if (result.problems.length < PROBLEM_SAMPLES_MAX) result.problems.push(text);
}

function countCode(code: string): void {
  result.codes[code] = (result.codes[code] ?? 0) + 1;
}

function sendFrame(c: Conn, sentAt: number): void {
  const count = init.batchSize;
  const first = c.next;
  c.next += count;
  const instructions: WireInstruction[] = new Array<WireInstruction>(count);
  for (let i = 0; i < count; i++) instructions[i] = wireInstruction(pool, c.prefix + (first + i), first + i);
  const seq = ++c.seq;
  c.inflight.set(seq, { sentAt, first, count });
  c.inflightInstructions += count;
  result.sentFrames++;
  result.sentInstructions += count;
  c.ws.send(encoder.encode({ op: 'submit', seq, instructions }));
}

function onAck(c: Conn, msg: { seq?: unknown; results?: unknown }, now: number): void {
  const frame = typeof msg.seq === 'number' ? c.inflight.get(msg.seq) : undefined;
  if (frame === undefined) {
    result.unknownAcks++;
    problem(`ack for an unknown seq ${String(msg.seq)} on ${c.spec.institution}`);
    return;
  }
  c.inflight.delete(msg.seq as number);
  c.inflightInstructions -= frame.count;
  result.ackedFrames++;
  const results = Array.isArray(msg.results) ? (msg.results as { id?: unknown; status?: unknown; duplicate?: unknown; code?: unknown }[]) : [];
  if (results.length !== frame.count) {
    result.idMismatches += Math.abs(frame.count - results.length);
    problem(`ack ${String(msg.seq)} has ${results.length} results for ${frame.count} instructions`);
  }
  let cleared = 0;
  const n = Math.min(results.length, frame.count);
  for (let i = 0; i < n; i++) {
    const r = results[i]!;
    result.answeredInstructions++;
    if (r.id !== c.prefix + (frame.first + i)) {
      result.idMismatches++;
      problem(`result ${i} of ack ${String(msg.seq)} has id ${String(r.id)}, expected ${c.prefix + (frame.first + i)}`);
    } else if (r.status === 'cleared' && r.duplicate === undefined) {
      cleared++;
      tally.add(poolEntry(pool, frame.first + i));
    } else if (r.duplicate !== undefined) {
      result.duplicates++;
      problem(`instruction ${String(r.id)} answered as a duplicate`);
    } else {
      result.notCleared++;
      countCode(typeof r.code === 'string' ? r.code : String(r.status));
    }
  }
  result.clearedInstructions += cleared;
  if (frame.sentAt >= measureFrom) recordLatency(histogram, now - frame.sentAt, frame.count);
  if (now >= measureFrom && now <= loadUntil) result.measuredInstructions += cleared;
}

function onError(c: Conn, msg: { seq?: unknown; code?: unknown; message?: unknown }): void {
  result.errorFrames++;
  const code = typeof msg.code === 'string' ? msg.code : 'UNKNOWN';
  countCode(code);
  problem(`error frame on ${c.spec.institution}: ${code} ${String(msg.message)}`);
  const frame = typeof msg.seq === 'number' ? c.inflight.get(msg.seq) : undefined;
  if (frame !== undefined) {
    // A refused frame stored nothing: its instructions are answered, not cleared.
    c.inflight.delete(msg.seq as number);
    c.inflightInstructions -= frame.count;
    result.notCleared += frame.count;
    result.answeredInstructions += frame.count;
  }
}

function onMessage(c: Conn, data: Buffer, isBinary: boolean): void {
  const now = performance.now();
  let msg: { op?: unknown; seq?: unknown; results?: unknown; code?: unknown; message?: unknown };
  try {
    msg = (isBinary ? decoder.decode(data) : JSON.parse(data.toString('utf8'))) as typeof msg;
  } catch {
    problem('a message from the server does not decode');
    return;
  }
  if (msg.op === 'ack') onAck(c, msg, now);
  else if (msg.op === 'error') onError(c, msg);
  else problem(`unexpected message op ${String(msg.op)}`);
  if (init.mode === 'closed' && c.open && now < loadUntil) {
    while (c.inflight.size < init.windowFrames) sendFrame(c, performance.now());
  }
  if (now >= loadUntil) maybeFinish();
}

function connect(spec: WsConnSpec): Promise<Conn> {
  const ws = new WebSocket(init.url, { headers: { authorization: `Bearer ${spec.token}` }, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  const c: Conn = {
    spec,
    ws,
    prefix: `c${spec.connIndex}-`,
    next: 0,
    seq: 0,
    inflight: new Map(),
    inflightInstructions: 0,
    open: false,
    scheduled: 0,
    phaseMs: 0,
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connection ${spec.connIndex} did not open in ${CONNECT_MS_MAX} ms`)), CONNECT_MS_MAX);
    ws.once('open', () => {
      clearTimeout(timer);
      c.open = true;
      resolve(c);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`upgrade refused with ${res.statusCode}`));
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      problem(`connection ${spec.connIndex}: ${err.message}`);
      reject(err);
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => onMessage(c, data, isBinary));
    ws.on('close', (code) => {
      if (c.open && !finished) {
        result.closedEarly++;
        problem(`connection ${spec.connIndex} closed by the server with ${code} during the run`);
      }
      c.open = false;
      if (!finished) maybeFinish();
    });
  });
}

let conns: Conn[] = [];

/** Open loop: send every frame whose scheduled time has come, each stamped with that time. */
function tick(): void {
  const now = performance.now();
  const periodMs = 1000 / init.framesPerSPerConn;
  for (const c of conns) {
    if (!c.open) continue;
    for (;;) {
      const due = startAt + c.phaseMs + c.scheduled * periodMs;
      if (due > now || due >= loadUntil) break;
      c.scheduled++;
      if (c.inflightInstructions + init.batchSize > init.inflightInstructionsMax) {
        result.shedInstructions += init.batchSize;
        continue;
      }
      const lag = now - due;
      if (lag > result.sendLagMsMax) result.sendLagMsMax = lag;
      sendFrame(c, due);
    }
  }
  if (now >= loadUntil) {
    clearInterval(tickTimer);
    tickTimer = undefined;
    maybeFinish();
  }
}

function start(): void {
  eluAtStart = performance.eventLoopUtilization();
  if (init.mode === 'closed') {
    for (const c of conns) for (let i = 0; i < init.windowFrames; i++) sendFrame(c, performance.now());
    // Acks drive the closed loop; this timer only notices the end when no ack arrives to do it.
    tickTimer = setInterval(() => {
      if (performance.now() >= loadUntil) {
        clearInterval(tickTimer);
        tickTimer = undefined;
        maybeFinish();
      }
    }, 50);
  } else {
    // Stagger the connections over one period so frames do not all leave at the same instant.
    const periodMs = 1000 / init.framesPerSPerConn;
    for (const c of conns) c.phaseMs = (periodMs * c.spec.connIndex) / init.connectionsTotal;
    tickTimer = setInterval(tick, TICK_MS);
  }
  stopTimer = setTimeout(finish, init.durationMs + init.drainMs);
}

function maybeFinish(): void {
  if (finished || performance.now() < loadUntil) return;
  if (conns.every((c) => !c.open || c.inflight.size === 0)) finish();
}

function finish(): void {
  if (finished) return;
  finished = true;
  if (tickTimer !== undefined) clearInterval(tickTimer);
  if (stopTimer !== undefined) clearTimeout(stopTimer);
  for (const c of conns) {
    for (const frame of c.inflight.values()) {
      for (let i = 0; i < frame.count; i++) result.unanswered.push({ institution: c.spec.institution, id: c.prefix + (frame.first + i), n: frame.first + i });
    }
    c.ws.close(1000, 'bench done');
  }
  if (eluAtStart !== undefined) result.eventLoopUtilization = Math.round(performance.eventLoopUtilization(eluAtStart).utilization * 1000) / 1000;
  result.histogram = encodeHistogram(histogram);
  result.nets = Array.from(tally.nets);
  post({ type: 'result', result });
}

parentPort!.on('message', (msg: MainToWorker) => {
  if (msg.type !== 'go') return;
  startAt = msg.startEpochMs - performance.timeOrigin;
  measureFrom = startAt + init.warmupMs;
  loadUntil = startAt + init.durationMs;
  const delay = Math.max(0, startAt - performance.now());
  setTimeout(start, delay);
});

Promise.all(init.conns.map(connect)).then(
  (opened) => {
    conns = opened;
    post({ type: 'ready' });
  },
  (err: unknown) => {
    // The main thread terminates this thread, which closes whatever did open.
    post({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
  },
);
