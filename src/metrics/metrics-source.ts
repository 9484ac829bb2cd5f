/**
 * What the metrics read at scrape time, and nothing more: the engine
 * (src/engine/engine.ts) satisfies this by its shape, so the metrics import
 * nothing from the engine and a test can hand them a small fake.
 *
 * It is a read-only view: the metrics never change the engine's state.
 * Everything here costs the same whatever the history holds (it reads
 * in-memory state of the open batch, the pending instructions, the queues
 * and kept counts), so a scrape does not grow slower as batches pile up.
 */

import type { Step } from '../core/stored-instruction.js';
import type { MandateStatus } from '../mandates/mandate.js';
import type { EngineCounters } from '../core/counters.js';
import type { BankPosition, NettingTotals } from '../core/netting.js';
import type { BatchRecord } from '../core/ports.js';
import type { WorkerStats } from '../shard/tasks.js';

/** The settings the metrics export or size their label sets by. */
export interface MetricsConfig {
  readonly shards: number;
  readonly workers: number;
  readonly snapshotIntervalMs: number;
  readonly banks: readonly { readonly code: string; readonly debitCapCents?: number }[];
  readonly limits: { readonly shardQueueMax: number; readonly shardBytesMax: number };
}

/** Operations of one shard that are not answered yet, by where they wait. */
export interface ShardLoad {
  /** Routed to the shard and not yet answered (queued in the router or at the worker). */
  inflight: number;
  /** Waiting in the router for a task. */
  queued: number;
  /** Tasks the shard has at its worker. */
  tasksAtWorker: number;
}

export interface MetricsSource {
  readonly config: MetricsConfig;
  /** Plain counters the hot path bumps; read, never written, here. */
  readonly counters: Readonly<EngineCounters>;
  /** Participant bank codes. */
  readonly banks: readonly string[];
  readonly ready: boolean;
  /** Wall time the process started, in ms since the epoch. */
  readonly startedAt: number;
  /** Wall time the open batch was opened, in ms since the epoch. */
  readonly openBatchOpenedAt: number;
  readonly lastClosed: BatchRecord | undefined;
  /** Time the latest snapshot took, from reading the view to its durable write. */
  readonly lastSnapshotDurationMs: number;

  shardLoad(shard: number): ShardLoad;
  /** Positions and totals of the open batch; throws when a ledger law is broken. */
  positions(): { banks: readonly BankPosition[]; totals: NettingTotals };
  /** Σ of the banks' nets in the open batch, read without asserting that it is zero. */
  conservationImbalance(): bigint;
  pendingDebit(bank: string): bigint;
  pendingInstructions(): number;
  /** Two-phase instructions not final, at one step. */
  twoPhaseAtStep(step: Step): number;
  /** Mandates with one status. */
  mandatesWithStatus(status: MandateStatus): number;
  /** Events in the lifecycle's timer heap. */
  timerEvents(): number;
  /** Pending instructions whose deadline is before `before` (ms since the epoch). */
  overdueInstructions(before: number): number;
  latestSnapshot(): { readonly seq: number; readonly takenAt: string } | undefined;
  /** Closed batches not yet marked settled: a kept count, so a scrape never reads the batch history. */
  readonly unsettledBatches: number;
  workerStats(worker: number): Promise<WorkerStats>;
}
