/**
 * The narrow ports through which the deterministic core (router, debit
 * caps, live view, lifecycle, cut-offs, snapshots, resynchronisation) does
 * all its I/O. Production plugs in Node's timers, Piscina and LMDB
 * (src/engine/clock.ts, src/shard/shard-pools.ts, src/store/); the simulator (test/sim/) plugs in versions it
 * controls, delays, fails and crashes. Nothing in the core reads the clock,
 * arms a timer or touches a file except through these.
 */

import type { ApplyResult, ApplyTask, OpenResult, OpenTask } from '../shard/tasks.js';
import type { StoredInstruction } from './stored-instruction.js';
import type { MandateRecord } from '../mandates/mandate.js';

/** An armed timer, to cancel. */
export interface TimerHandle {
  readonly __timer: unique symbol;
}

export interface Clock {
  /** Wall time in ms since the epoch: timestamps, deadlines, batch ids. */
  now(): number;
  /** A monotonic time in ms, for durations only. */
  monotonicMs(): number;
  /** Run `fn` after the current event turn, before any timer (setImmediate). */
  defer(fn: () => void): void;
  /** Run `fn` once `ms` have passed (or later: timers may fire late). */
  after(ms: number, fn: () => void): TimerHandle;
  cancel(timer: TimerHandle): void;
}

/**
 * The shard workers. A task's promise resolves once its transaction is
 * committed; it rejects when the task failed, and then the commit may or
 * may not have happened (a worker can die after committing and before
 * reporting): the core finds out by `open`ing the shard again.
 */
export interface ShardTransport {
  apply(task: ApplyTask): Promise<ApplyResult>;
  /** Read a shard's state from its disk (and open it if its worker is new). */
  open(task: OpenTask): Promise<OpenResult>;
}

export interface Located {
  shard: number;
  record: StoredInstruction;
}

/** Read-only look-ups in the shards' committed data (the durable half of the id index). */
export interface InstructionLookup {
  find(institution: string, id: string): Located | undefined;
  /** Make the shard's latest commit visible to `find`; called before an id leaves the in-flight index. */
  refresh(shard: number): void;
}

export interface OpenBatch {
  id: string;
  openedAt: number;
}

/** A cut-off in progress: the batch being closed and when it was cut. */
export interface Closing {
  batch: string;
  openedAt: number;
  closedAt: number;
}

/** A closed batch: its settlement report and its institutions' reconciliation totals. */
export interface BatchRecord {
  batch: string;
  openedAt: number;
  closedAt: number;
  count: number;
  gross: string;
  banks: { bank: string; net: string; paid: string; received: string; settlement: 'debit' | 'credit' | 'none'; amount: string }[];
  debits: string;
  credits: string;
  institutions: { institution: string; count: number; amount: string; digest: string }[];
  settled: boolean;
  settledAt?: number;
  settledBy?: string;
}

/** The engine's own durable records: the open batch, cut-offs, reports, snapshots. */
export interface BatchStore {
  openBatch(): OpenBatch | undefined;
  setOpenBatch(batch: OpenBatch): Promise<void>;
  closing(): Closing | undefined;
  /** The cut-off point and the next batch, durable together before anything is routed into it. */
  beginCut(closing: Closing, next: OpenBatch): Promise<void>;
  /** The closed batch's report, durable together with the end of the cut-off. */
  finishCut(record: BatchRecord): Promise<void>;
  batch(id: string): BatchRecord | undefined;
  putBatch(record: BatchRecord): Promise<void>;
  /** The newest closed batch, if any. */
  lastClosed(): BatchRecord | undefined;
  lastSnapshotSeq(): number;
  putSnapshot(seq: number, snapshot: unknown, retention: number): Promise<void>;
  snapshot(seq: number): unknown;
}

/** Where mandates are kept: read whole at start, each change durable once `putMandate` resolves. */
export interface MandateStore {
  /** Every stored mandate, in (institution, id) key order. */
  loadMandates(): Iterable<MandateRecord>;
  putMandate(record: MandateRecord): Promise<void>;
}
