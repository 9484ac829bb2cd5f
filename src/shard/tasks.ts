/**
 * The messages between the router (main thread) and the shard workers.
 * Instructions travel as compact tuples: one task carries many of them and
 * is one LMDB transaction; the structured clone of a tuple of primitives is
 * much cheaper than that of an object with named fields.
 */

import type { InstructionStatus, InstructionType } from '../core/instruction.js';
import type { PairFlow } from '../core/netting.js';

/** [institution, id, type, payer, payee, amount, reference or null] */
export type WireItem = [string, string, InstructionType, string, string, number, string | null];

/** Positions in a WireItem. */
export const W = { Institution: 0, Id: 1, Type: 2, Payer: 3, Payee: 4, Amount: 5, Reference: 6 } as const;

/** Given to every worker thread at its start (Piscina `workerData`). */
export interface WorkerSetup {
  dataDir: string;
  shards: number;
  mapSizeBytes: number;
}

export interface OpenTask {
  kind: 'open';
  shard: number;
  batch: string;
  verify: boolean;
}

export interface OpenResult {
  shard: number;
  flows: PairFlow[];
  verify: VerifyReport | null;
}

export interface ApplyTask {
  kind: 'apply';
  shard: number;
  /** The batch open at the point of the stream where this task was cut. */
  batch: string;
  /** The time the router cut the task, used as the items' timestamps. */
  now: number;
  items: WireItem[];
}

/**
 * Per item: null when the item was booked as submitted (cleared in the
 * task's batch); otherwise what the shard already holds under that id.
 */
export interface ItemClash {
  conflict: boolean;
  status: InstructionStatus;
  batch?: string;
}

export interface ApplyResult {
  results: (ItemClash | null)[];
  /** What this task added to the batch's pair flows; applied to the main view after the commit. */
  deltas: PairFlow[];
}

export interface VerifyTask {
  kind: 'verify';
  shard: number;
  batch: string;
}

export interface VerifyReport {
  shard: number;
  batch: string;
  /** Instructions stored in the shard, all batches and statuses. */
  instructions: number;
  /** Cleared instructions of the batch, recounted from the instruction log. */
  cleared: number;
  /** Pair flows recomputed from the instruction log equal the stored ones and the in-memory ones. */
  matches: boolean;
  mismatches: string[];
}

export interface CloseTask {
  kind: 'close';
  shard: number;
}

export type ShardTask = OpenTask | ApplyTask | VerifyTask | CloseTask;
