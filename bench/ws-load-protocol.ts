/**
 * The messages between the WebSocket load generator's main thread
 * (ws-load.ts) and its worker threads (ws-load-worker.ts).
 */

import type { FixtureSpec } from './fixture.js';
import type { WsMode } from './params.js';

export interface WsConnSpec {
  institution: string;
  token: string;
  /** Index over all threads, which makes the connection's id prefix unique. */
  connIndex: number;
}

export interface WsWorkerInit {
  url: string;
  threadIndex: number;
  /** Connections in all, over every thread; open-loop connections are staggered over it. */
  connectionsTotal: number;
  conns: WsConnSpec[];
  mode: WsMode;
  batchSize: number;
  windowFrames: number;
  /** Open loop: frames per second each connection is offered. */
  framesPerSPerConn: number;
  /** Open loop: instructions a connection may have unacknowledged; frames past it are shed, not sent. */
  inflightInstructionsMax: number;
  durationMs: number;
  warmupMs: number;
  drainMs: number;
  /** The run's banks, institutions and instruction pool. */
  fixture: FixtureSpec;
}

/** An instruction that was sent and never answered; the auditor asks the server about it. */
export interface Unanswered {
  institution: string;
  id: string;
  /** Its number, which picks its content from the pool. */
  n: number;
}

export interface WsWorkerResult {
  threadIndex: number;
  sentFrames: number;
  sentInstructions: number;
  /** Open loop: instructions offered but not sent because their connection was at its in-flight bound. */
  shedInstructions: number;
  ackedFrames: number;
  /** Results received, whatever their status. */
  answeredInstructions: number;
  /** Results `cleared`, not duplicate, with the id the frame carried at that place. */
  clearedInstructions: number;
  /** Cleared instructions whose ack came inside the measured window. */
  measuredInstructions: number;
  notCleared: number;
  duplicates: number;
  idMismatches: number;
  unknownAcks: number;
  errorFrames: number;
  codes: Record<string, number>;
  problems: string[];
  histogram: string;
  nets: number[];
  unanswered: Unanswered[];
  closedEarly: number;
  /** Open loop: how far behind its schedule the generator sent, at worst. */
  sendLagMsMax: number;
  /** Event-loop utilisation of this thread over the load phase: near 1, the generator itself was the bottleneck. */
  eventLoopUtilization: number;
}

export type WorkerToMain = { type: 'ready' } | { type: 'failed'; error: string } | { type: 'result'; result: WsWorkerResult };
export type MainToWorker = { type: 'go'; startEpochMs: number };
