/**
 * The router: the point of the stream where everything is ordered.
 *
 * For every submitted item it validates, applies the duplicate rules
 * across all shards (in-flight ids here, durable ids in the shards' LMDB
 * environments), checks the payer's debit cap, and queues the operation for
 * the shard that owns the bank pair. Lifecycle operations (receipts,
 * expiries, reversals) go to the shard that holds the instruction.
 *
 * Queues are cut into one task per shard per event-loop turn (at most
 * `shardTaskItemsMax` operations, at most `shardTasksInflightMax` tasks at
 * the worker), so many operations share one worker hop and one LMDB commit.
 * An answer is delivered only after the shard reports the commit; the
 * committed deltas reach the live view in the same event turn.
 *
 * A batch cut-off is a point in this stream: `cut` hands every queued
 * operation to its shard under the old batch, holds new ones until the
 * next batch is durable, and then routes under the next batch.
 */

import { assert, AssertionError } from '../core/assert.js';
import { contentKey, INSTRUCTION_TYPES, isFailure, rawId, validateInstruction, type Instruction, type InstructionType, type ValidationRules } from '../core/instruction.js';
import type { IdFilter } from '../core/id-filter.js';
import type { ShardMap } from '../core/shard-map.js';
import type { Logger } from '../engine/log.js';
import { failure, type Failure } from '../protocol/errors.js';
import { rejectedResult, storedResult, type InstructionResult } from '../protocol/messages.js';
import type { ApplyResult, ApplyTask, LifecycleOp, OpOutcome, ShardOp, SubmitOp } from '../shard/tasks.js';
import { storedContentKey } from '../store/schema.js';
import type { ShardReaders } from '../store/shard-readers.js';
import type { EngineCounters } from '../engine/counters.js';
import type { DebitCaps } from './debit-caps.js';
import { InflightIndex, type IndexedEntry } from './inflight-index.js';

/** How an operation ended, as the router tells whoever asked for it. */
export type OpResult =
  | { kind: 'applied'; batch: string }
  | { kind: 'found'; outcome: OpOutcome }
  | { kind: 'failed'; failure: Failure };

/** Whoever waits for operations: a submission, a receipt batch, an operator call. */
export interface OutcomeTarget {
  /** `primary` is false for an identical request that waited on one already in flight. */
  deliver(index: number, result: OpResult, primary: boolean): void;
}

interface Waiter {
  target: OutcomeTarget;
  index: number;
}

interface Inflight extends IndexedEntry {
  /** The operation; its institution and id (op[1], op[2]) are its key in the in-flight index. */
  op: ShardOp;
  shard: number;
  batch: string;
  /** The submission (or lifecycle request) that routed the operation, and the item's place in it. */
  target: OutcomeTarget;
  index: number;
  /** Identical requests that arrived while it was in flight; most operations have none. */
  more: Waiter[] | undefined;
  /** Lifecycle operations of another kind that arrived meanwhile: routed again once this one ends. */
  deferred: { op: LifecycleOp; shard: number; target: OutcomeTarget; index: number }[] | undefined;
}

/**
 * A list of answers that fills in as shards commit, one per item of a
 * request, handed on whole once the last is in. Every item is answered
 * exactly once.
 */
export class AnswerList<R> {
  private readonly results: (R | undefined)[];
  private remaining: number;

  constructor(
    size: number,
    private readonly onDone: (results: R[]) => void,
  ) {
    this.results = new Array(size);
    this.remaining = size;
  }

  settle(index: number, result: R): void {
    // A message built only on failure: this runs once per item.
    if (this.results[index] !== undefined) throw new AssertionError(`item ${index} answered twice`);
    this.results[index] = result;
    if (--this.remaining === 0) this.onDone(this.results as R[]);
  }
}

/** One POST or one `submit` frame: its results fill in as shards answer. */
export class Submission extends AnswerList<InstructionResult> implements OutcomeTarget {
  readonly ids: (string | undefined)[];

  constructor(size: number, onDone: (results: InstructionResult[]) => void) {
    super(size, onDone);
    this.ids = new Array(size);
  }

  deliver(index: number, result: OpResult, primary: boolean): void {
    const id = this.ids[index]!;
    if (result.kind === 'applied') {
      const o = this.pendingOnApply?.[index] === true;
      this.settle(index, o ? storedResult(id, 'pending', undefined, !primary) : storedResult(id, 'cleared', result.batch, !primary));
    } else if (result.kind === 'found') {
      if (result.outcome.conflict === true) {
        this.settle(index, rejectedResult(id, failure('DUPLICATE_CONFLICT', `id '${id}' exists with different content`)));
      } else {
        this.settle(index, storedResult(id, result.outcome.status as InstructionResult['status'], result.outcome.batch, true));
      }
    } else {
      this.settle(index, rejectedResult(id, result.failure));
    }
  }

  /** Items that become pending (two-phase) rather than cleared when applied. */
  pendingOnApply: boolean[] | undefined;
}


export interface ShardRunner {
  apply(task: ApplyTask): Promise<ApplyResult>;
}

export interface RouterDeps {
  rules: ValidationRules;
  shardMap: ShardMap;
  readers: ShardReaders;
  /** Every stored or routed instruction key is in it; a key it has not seen is certainly new. */
  idFilter: IdFilter;
  runner: ShardRunner;
  caps: DebitCaps;
  batch: string;
  /** Called with every committed task, before any of its answers is delivered. */
  onCommitted: (task: ApplyTask, result: ApplyResult) => void;
  limits: { shardQueueMax: number; shardTaskItemsMax: number; shardTasksInflightMax: number };
  log: Logger;
  counters: EngineCounters;
  /** Called per task with its round trip (dispatch to commit report), for metrics. */
  onTaskTimed?: (task: ApplyTask, result: ApplyResult, roundTripMs: number) => void;
  /**
   * Bring the live state of one shard back in line with its disk, after a
   * task of it failed (its worker may have died after committing).
   */
  resync: (shard: number) => Promise<void>;
}

export class ShardRouter {
  private readonly inflight = new InflightIndex<Inflight>();
  /** Per shard, the in-flight entries of the operations not yet sent, in order. */
  private queues: Inflight[][] = [];
  private readonly tasksAtWorker: number[] = [];
  private readonly inflightPerShard: number[] = [];
  private readonly tasksByBatch = new Map<string, number>();
  private readonly drainWaiters = new Map<string, (() => void)[]>();
  private flushScheduled = false;
  private held = false;
  /** Shards whose dispatch is held until their state is resynchronised from disk. */
  private readonly resyncWanted = new Set<number>();
  private readonly resyncing = new Set<number>();
  private resyncWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private currentBatch: string;
  /**
   * The batch new operations belong to: the current one, except during a
   * cut-off, when operations routed after the cut point wait for the next
   * batch to be durable and are then dispatched under it.
   */
  private routeBatch: string;

  constructor(private readonly deps: RouterDeps) {
    this.currentBatch = deps.batch;
    this.routeBatch = deps.batch;
    for (let s = 0; s < deps.shardMap.shards; s++) {
      this.queues.push([]);
      this.tasksAtWorker.push(0);
      this.inflightPerShard.push(0);
    }
  }

  /** The batch new operations are routed into. */
  get batch(): string {
    return this.currentBatch;
  }

  /** Operations routed and not yet answered, across all shards. */
  get inflightCount(): number {
    return this.inflight.size;
  }

  queuedCount(shard: number): number {
    return this.queues[shard]?.length ?? 0;
  }

  /** Operations routed to each shard and not yet answered. */
  inflightByShard(): readonly number[] {
    return this.inflightPerShard;
  }

  tasksAt(shard: number): number {
    return this.tasksAtWorker[shard] ?? 0;
  }

  /**
   * Route a batch of raw items in the name of `institution`. `onDone` gets
   * one result per item, in order, once every item is answered.
   */
  submit(institution: string, raws: readonly unknown[], onDone: (results: InstructionResult[]) => void): Submission {
    const submission = new Submission(raws.length, onDone);
    for (let i = 0; i < raws.length; i++) this.routeSubmission(institution, raws[i], submission, i);
    if (raws.length === 0) onDone([]);
    return submission;
  }

  private reject(submission: Submission, index: number, id: string | undefined, f: Failure): void {
    this.deps.counters.rejections.add(f.code);
    submission.settle(index, rejectedResult(id, f));
  }

  private routeSubmission(institution: string, raw: unknown, submission: Submission, index: number): void {
    const v = validateInstruction(raw, institution, this.deps.rules);
    if (isFailure(v)) {
      this.reject(submission, index, rawId(raw), v);
      return;
    }
    submission.ids[index] = v.id;
    if (v.twoPhase) (submission.pendingOnApply ??= [])[index] = true;
    // Every key in flight or stored is in the filter, so a key it has never
    // seen needs neither look-up; almost every new id takes this path. The
    // key is known to the filter from here on, whatever becomes of it (see
    // IdFilter.testAndAdd).
    const unseen = !this.deps.idFilter.testAndAdd(institution, v.id);
    if (!unseen) {
      const pending = this.inflight.get(institution, v.id);
      if (pending !== undefined) {
        if (pending.op[0] === 'S' && sameContent(pending.op, v)) {
          (pending.more ??= []).push({ target: submission, index });
        } else {
          this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' is in flight with different content`));
        }
        return;
      }
      const found = this.deps.readers.find(institution, v.id);
      if (found !== undefined) {
        if (storedContentKey(found.record) === contentKey(v)) {
          this.deps.counters.instructions.add(`${v.type}|duplicate`);
          submission.settle(index, storedResult(v.id, found.record.s, found.record.b, true));
        } else {
          this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' exists with different content`));
        }
        return;
      }
    }

    const shard = this.deps.shardMap.shardOf(v.payer, v.payee);
    if (this.queues[shard]!.length >= this.deps.limits.shardQueueMax) {
      this.reject(submission, index, v.id, failure('OVERLOADED', `shard ${shard} queue is full; retry later`));
      return;
    }
    if (!this.deps.caps.reserve(v.payer, v.amount, v.twoPhase, this.routeBatch)) {
      this.reject(submission, index, v.id, failure('DEBIT_CAP_EXCEEDED', `payer '${v.payer}' would pass its debit cap`));
      return;
    }
    this.enqueue(shard, toSubmitOp(v), submission, index, unseen);
  }

  /**
   * Route a lifecycle operation on a stored instruction to its shard. An
   * identical operation already in flight is waited on; one of another kind
   * is routed after it, against the state it leaves.
   */
  lifecycle(shard: number, op: LifecycleOp, target: OutcomeTarget, index: number): void {
    const pending = this.inflight.get(op[1], op[2]);
    if (pending !== undefined) {
      if (pending.op[0] === op[0]) (pending.more ??= []).push({ target, index });
      else (pending.deferred ??= []).push({ op, shard, target, index });
      return;
    }
    if (this.queues[shard]!.length >= this.deps.limits.shardQueueMax) {
      target.deliver(index, { kind: 'failed', failure: failure('OVERLOADED', `shard ${shard} queue is full; retry later`) }, true);
      return;
    }
    this.enqueue(shard, op, target, index, false);
  }

  /** `unseen`: the id filter had never seen the key, so the entry is only listed (see InflightIndex). */
  private enqueue(shard: number, op: ShardOp, target: OutcomeTarget, index: number, unseen: boolean): void {
    const entry: Inflight = { op, place: 'listed', shard, batch: this.routeBatch, target, index, more: undefined, deferred: undefined };
    if (unseen) this.inflight.addUnindexed(entry);
    else this.inflight.add(entry);
    this.inflightPerShard[shard]!++;
    this.queues[shard]!.push(entry);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush(false);
    });
  }

  /** Cut every shard's queue into tasks, as far as the in-flight bound allows (or entirely, to seal a batch). */
  private flush(all: boolean): void {
    if (this.held) return;
    const { shardTaskItemsMax, shardTasksInflightMax } = this.deps.limits;
    for (let shard = 0; shard < this.queues.length; shard++) {
      if (this.resyncWanted.has(shard) || this.resyncing.has(shard)) continue;
      while (this.queues[shard]!.length > 0 && (all || this.tasksAtWorker[shard]! < shardTasksInflightMax)) {
        let entries = this.queues[shard]!;
        if (entries.length > shardTaskItemsMax) {
          this.queues[shard] = entries.slice(shardTaskItemsMax);
          entries = entries.slice(0, shardTaskItemsMax);
        } else {
          this.queues[shard] = [];
        }
        this.dispatch(shard, entries);
      }
    }
  }

  private dispatch(shard: number, entries: Inflight[]): void {
    const batch = this.currentBatch;
    const task: ApplyTask = { kind: 'apply', shard, batch, now: Date.now(), ops: entries.map((e) => e.op) };
    this.tasksAtWorker[shard]!++;
    this.tasksByBatch.set(batch, (this.tasksByBatch.get(batch) ?? 0) + 1);
    const sentAt = performance.now();
    this.deps.runner.apply(task).then(
      (result) => {
        this.deps.onTaskTimed?.(task, result, performance.now() - sentAt);
        this.committed(task, entries, result);
      },
      (err: unknown) => this.failed(task, entries, err),
    );
  }

  private committed(task: ApplyTask, entries: Inflight[], result: ApplyResult): void {
    this.tasksAtWorker[task.shard]!--;
    assert(result.outcomes.length === entries.length, 'a shard answered a different number of operations');
    // The commit must be visible to look-ups before its ids leave the in-flight map.
    this.deps.readers.refresh(task.shard);
    this.releaseReservations(task.ops, task.batch);
    this.deps.onCommitted(task, result);
    // Outcomes are counted per task, not per instruction: a few map updates instead of thousands.
    const applied = new Map<string, number>();
    const appliedResult: OpResult = { kind: 'applied', batch: task.batch };
    for (let i = 0; i < entries.length; i++) {
      const outcome = result.outcomes[i];
      const op = task.ops[i]!;
      if (outcome === null || outcome === undefined) {
        if (op[0] === 'S') {
          const k = op[8] > 0 ? PENDING_KEY[op[3]] : CLEARED_KEY[op[3]];
          applied.set(k, (applied.get(k) ?? 0) + 1);
        }
        this.finish(entries[i]!, appliedResult);
      } else if (outcome.refused !== undefined) {
        this.deps.counters.rejections.add(outcome.refused);
        this.warnFull(task.shard);
        this.finish(entries[i]!, { kind: 'failed', failure: failure(outcome.refused, `shard ${task.shard} is at its storage limit; nothing was stored`) });
      } else {
        this.finish(entries[i]!, { kind: 'found', outcome });
      }
    }
    for (const [k, n] of applied) this.deps.counters.instructions.add(k, n);
    this.afterTask(task.batch);
  }

  private failed(task: ApplyTask, entries: Inflight[], err: unknown): void {
    this.tasksAtWorker[task.shard]!--;
    this.deps.log.error({ err, shard: task.shard, ops: entries.length }, 'shard task failed; its operations were not acknowledged');
    if ((err as Error | undefined)?.name === 'AssertionError') this.deps.counters.lawViolations++;
    this.releaseReservations(task.ops, task.batch);
    // A disk that is full is the operator's to fix and the client's to know; anything else is a fault.
    const f = /ENOSPC|MDB_MAP_FULL|No space left/.test(String((err as Error | undefined)?.message))
      ? failure('STORAGE_FULL', `shard ${task.shard} could not write: the disk is full; nothing was stored`)
      : failure('INTERNAL', 'the shard could not commit this; it was not accepted, retry with the same id');
    for (const entry of entries) {
      this.deps.counters.rejections.add(f.code);
      this.finish(entry, { kind: 'failed', failure: f });
    }
    this.resyncWanted.add(task.shard);
    this.afterTask(task.batch);
  }

  private readonly fullWarnedAt = new Map<number, number>();

  /** Tell the operator a shard is at its storage limit, at most every ten seconds per shard. */
  private warnFull(shard: number): void {
    const now = Date.now();
    if (now - (this.fullWarnedAt.get(shard) ?? 0) < 10_000) return;
    this.fullWarnedAt.set(shard, now);
    this.deps.log.error({ shard }, 'shard is at its storage limit (limits.shardBytesMax): new instructions are refused with STORAGE_FULL');
  }

  /** Once a failed shard has nothing left at its worker, resynchronise it, then let its queue go again. */
  private maybeResync(shard: number): void {
    if (!this.resyncWanted.has(shard) || this.resyncing.has(shard) || this.tasksAtWorker[shard]! > 0) return;
    this.resyncWanted.delete(shard);
    this.resyncing.add(shard);
    this.deps.resync(shard).then(
      () => {
        this.resyncing.delete(shard);
        if (this.resyncWanted.size === 0 && this.resyncing.size === 0) {
          const waiters = this.resyncWaiters;
          this.resyncWaiters = [];
          waiters.forEach((w) => w());
        }
        this.flush(false);
      },
      (err: unknown) => {
        this.deps.log.error({ err, shard }, 'shard resynchronisation failed; retrying in a second');
        this.resyncing.delete(shard);
        this.resyncWanted.add(shard);
        setTimeout(() => this.maybeResync(shard), 1000).unref();
      },
    );
  }

  /** Resolves once no shard is waiting to be, or being, resynchronised. */
  resynced(): Promise<void> {
    if (this.resyncWanted.size === 0 && this.resyncing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.resyncWaiters.push(resolve));
  }

  private releaseReservations(ops: ShardOp[], batch: string): void {
    for (const op of ops) {
      if (op[0] === 'S') this.deps.caps.release(op[4], op[6], op[8] > 0, batch);
    }
  }

  private finish(entry: Inflight, result: OpResult): void {
    this.inflight.delete(entry);
    this.inflightPerShard[entry.shard]!--;
    entry.target.deliver(entry.index, result, true);
    if (entry.more !== undefined) {
      for (const w of entry.more) {
        if (result.kind === 'applied' && entry.op[0] === 'S') this.deps.counters.instructions.add(`${entry.op[3]}|duplicate`);
        w.target.deliver(w.index, result, false);
      }
    }
    if (entry.deferred !== undefined) for (const d of entry.deferred) this.lifecycle(d.shard, d.op, d.target, d.index);
  }

  private afterTask(batch: string): void {
    for (const shard of this.resyncWanted) this.maybeResync(shard);
    const left = (this.tasksByBatch.get(batch) ?? 1) - 1;
    if (left === 0) {
      this.tasksByBatch.delete(batch);
      const waiters = this.drainWaiters.get(batch);
      this.drainWaiters.delete(batch);
      waiters?.forEach((w) => w());
    } else {
      this.tasksByBatch.set(batch, left);
    }
    this.flush(false);
    if (this.inflight.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * The cut-off point of a batch. Everything routed so far goes to the
   * shards under the current batch now; operations routed from here on wait
   * until `persist` has made the next batch durable, and are then routed
   * under `next`. Resolves once every task of the old batch has committed.
   */
  async cut(next: string, persist: () => Promise<void>): Promise<string> {
    assert(next > this.currentBatch, `batch ${next} does not sort after ${this.currentBatch}`);
    const old = this.currentBatch;
    this.flush(true);
    this.held = true;
    this.routeBatch = next;
    try {
      await persist();
      this.currentBatch = next;
    } catch (err) {
      this.routeBatch = old;
      throw err;
    } finally {
      this.held = false;
      this.scheduleFlush();
    }
    await this.drained(old);
    return old;
  }

  /** Resolves once no task of `batch` is at a worker or queued. */
  drained(batch: string): Promise<void> {
    if (!this.tasksByBatch.has(batch) && !(batch === this.currentBatch && this.queues.some((q) => q.length > 0))) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.drainWaiters.get(batch) ?? [];
      list.push(resolve);
      this.drainWaiters.set(batch, list);
    });
  }

  /** Resolves once nothing is queued or at a worker. */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

/** Counter keys per instruction type, built once. */
const CLEARED_KEY = Object.fromEntries(INSTRUCTION_TYPES.map((t) => [t, `${t}|cleared`])) as Record<InstructionType, string>;
const PENDING_KEY = Object.fromEntries(INSTRUCTION_TYPES.map((t) => [t, `${t}|pending`])) as Record<InstructionType, string>;

/** Whether a submission in flight has the same content as a new one (the duplicate rules), field by field. */
function sameContent(op: SubmitOp, i: Instruction): boolean {
  return (
    op[3] === i.type &&
    op[4] === i.payer &&
    op[5] === i.payee &&
    op[6] === i.amount &&
    op[7] === (i.reference ?? null) &&
    op[8] === (i.twoPhase ? i.timeoutMs! : 0)
  );
}

function toSubmitOp(i: Instruction): SubmitOp {
  return ['S', i.institution, i.id, i.type, i.payer, i.payee, i.amount, i.reference ?? null, i.twoPhase ? i.timeoutMs! : 0];
}
