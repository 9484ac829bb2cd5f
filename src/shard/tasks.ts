/**
 * The messages between the router (main thread) and the shard workers.
 *
 * A task carries many operations for one shard and one batch, and is one
 * LMDB transaction. Operations travel as compact tuples: the structured
 * clone of a tuple of primitives is much cheaper than that of an object
 * with named fields.
 */

import { contentKey, type Instruction, type InstructionStatus, type InstructionType } from '../core/instruction.js';
import type { PairFlow } from '../core/netting.js';
import type { LifecycleKind, Step, StoredInstruction } from '../core/stored-instruction.js';
export type { LifecycleKind };

/** Submit: [op, institution, id, type, payer, payee, amount, reference or null, timeoutMs (0 = single-phase), mandate or null] */
export type SubmitOp = ['S', string, string, InstructionType, string, string, number, string | null, number, string | null];
/**
 * Lifecycle of a stored instruction (see LifecycleKind): [op, institution,
 * id, text or null, step?]; the text is a decline's reason or a
 * submission's verification. The step, when given, is the one the change
 * was decided at: it applies only if the instruction is still there (a
 * decline or an expiry queued behind a change that moves the instruction
 * on must not land on the next step).
 */
export type LifecycleOp = [LifecycleKind, string, string, string | null] | [LifecycleKind, string, string, string | null, Step];
export type ShardOp = SubmitOp | LifecycleOp;

/** Positions in a SubmitOp. */
export const S = { Op: 0, Institution: 1, Id: 2, Type: 3, Payer: 4, Payee: 5, Amount: 6, Reference: 7, TimeoutMs: 8, Mandate: 9 } as const;

/** The content a submission would store, as the duplicate rules compare it (see contentKey). */
export function submittedContentKey(op: SubmitOp): string {
  const timeoutMs = op[S.TimeoutMs];
  return contentKey({
    type: op[S.Type],
    payer: op[S.Payer],
    payee: op[S.Payee],
    amount: op[S.Amount],
    twoPhase: timeoutMs > 0,
    timeoutMs: timeoutMs > 0 ? timeoutMs : undefined,
    reference: op[S.Reference] ?? undefined,
    mandate: op[S.Mandate] ?? undefined,
  });
}

/** Given to every worker thread at its start (Piscina `workerData`). */
export interface WorkerSetup {
  dataDir: string;
  shards: number;
  mapSizeBytes: number;
  /** Test-only: honour `crash` tasks. */
  faultInjection: boolean;
  /** Storage a shard may use before it refuses new instructions. */
  shardBytesMax: number;
}

export type { InstitutionTotals } from '../core/digest.js';
import type { InstitutionTotals } from '../core/digest.js';

export interface BatchSummary {
  batch: string;
  flows: PairFlow[];
  institutions: InstitutionTotals[];
}

/** A two-phase instruction awaiting an answer: the payer bank's, the payee bank's (payout) or the institution's submission. */
export interface PendingEntry extends Pick<Instruction, 'institution' | 'id' | 'type' | 'payer' | 'payee' | 'amount' | 'reference'> {
  acceptedAt: number;
  /** The deadline of the current step. */
  deadline: number;
  step: Step;
  /** When the current step began. */
  stepAt: number;
  timeoutMs: number;
  verification?: string;
}

export interface OpenTask {
  kind: 'open';
  shard: number;
  /** The open batch, and the batch being closed if a cut-off was interrupted. */
  batches: string[];
  verify: boolean;
  /** Build a Bloom filter of this size (bits) over the shard's instruction keys; 0 for none. */
  filterBits: number;
}

export interface OpenResult {
  shard: number;
  summaries: BatchSummary[];
  pending: PendingEntry[];
  verify: VerifyReport | null;
  /** The shard's instruction keys as IdFilter words, when asked for. */
  filter: Uint32Array | null;
  /** Cluster mode: the last log sequence the shard has applied (0 for none). */
  appliedSeq: number;
}

export interface ApplyTask {
  kind: 'apply';
  shard: number;
  /** The batch open at the point of the stream where these operations were routed. */
  batch: string;
  /** The time the router cut the task, used as the operations' timestamps. */
  now: number;
  ops: ShardOp[];
  /** Cluster mode: the task's sequence in the replicated log, stored with its commit so it is applied once. */
  logSeq?: number;
}

/** An ApplyTask as it crosses to the worker: its operations as one JSON string. */
export interface ApplyTaskWire {
  kind: 'apply-json';
  shard: number;
  batch: string;
  now: number;
  ops: string;
  logSeq?: number;
}

/**
 * Per operation: null when it was applied as asked; otherwise what the
 * shard holds under that id (or `missing`), and for a submission whether
 * the stored content differs.
 */
export interface OpOutcome {
  status: InstructionStatus | 'missing';
  batch?: string;
  /** The step of an instruction still open, or the one it ended on. */
  step?: Step;
  /** The verification a submission stored, to tell a repeat from a contradiction. */
  verification?: string;
  conflict?: boolean;
  /** The shard refused the operation without storing anything. */
  refused?: 'STORAGE_FULL';
}

export interface ApplyResult {
  outcomes: (OpOutcome | null)[];
  /** Time in the worker from the task's start to its commit, and of the commit alone. */
  applyMs: number;
  commitMs: number;
  /** What this task added to its batch, applied to the main view after the commit. */
  delta: BatchSummary;
  /** Cluster mode: the shard had applied this log entry already, and nothing was done. */
  skipped?: true;
  /**
   * The task's journal record (its flows and buckets, binary; see
   * batch-figures.ts). Between threads the flows travel in it alone, as
   * bytes: a thousand flow objects cost more to clone than to decode.
   */
  record?: Uint8Array;
}

export interface VerifyTask {
  kind: 'verify';
  shard: number;
  batch: string;
}

/** The reconciliation drill-down: the instructions behind one of an institution's digest buckets, in one shard. */
export interface BucketEntriesTask {
  kind: 'bucket-entries';
  shard: number;
  batch: string;
  institution: string;
  bucket: number;
}

export interface BucketInstruction {
  id: string;
  /** +1: cleared in the batch; -1: reversed in the batch (its hash subtracts). */
  sign: 1 | -1;
  record: StoredInstruction;
}

export interface VerifyReport {
  shard: number;
  batch: string;
  /** Instructions stored in the shard, all batches and statuses. */
  instructions: number;
  /** Instructions cleared in the batch (reversed ones included), recounted from the instruction log. */
  cleared: number;
  /** Flows and digests recomputed from the instruction log equal the stored ones and the in-memory ones. */
  matches: boolean;
  mismatches: string[];
}

export interface StatsTask {
  kind: 'stats';
  /** Any shard the worker owns; it routes the task to the right worker. */
  shard: number;
}

/** A worker thread's own health, read at scrape time. */
export interface WorkerStats {
  eventLoopLagMeanSeconds: number;
  eventLoopLagP99Seconds: number;
  heapUsedBytes: number;
  /** Bytes used by each of the worker's open shards. */
  shardBytes: Record<number, number>;
}

/** Test-only fault injection: the worker thread exits at once, whatever it is doing. */
export interface CrashTask {
  kind: 'crash';
  shard: number;
}

export interface CloseTask {
  kind: 'close';
  shard: number;
}

export type ShardTask = OpenTask | ApplyTaskWire | VerifyTask | BucketEntriesTask | StatsTask | CrashTask | CloseTask;
