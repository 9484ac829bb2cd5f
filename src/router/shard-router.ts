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
import type { Logger } from '../core/log.js';
import { failure, type Failure } from '../core/failures.js';
import type { Clock, InstructionLookup, ShardTransport } from '../core/ports.js';
import { lifecycleApplies, lifecycleLanded, storedContentKey, type StoredInstruction } from '../core/stored-instruction.js';
import { rejectedResult, storedResult, type InstructionResult } from '../protocol/messages.js';
import { submittedContentKey, type ApplyResult, type ApplyTask, type LifecycleOp, type OpOutcome, type ShardOp, type SubmitOp } from '../shard/tasks.js';
import type { EngineCounters } from '../core/counters.js';
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
  deferred: { op: LifecycleOp; shard: number; target: OutcomeTarget; index: number; debit: { bank: string; amount: number } | undefined }[] | undefined;
  /** The debit it makes a capped bank pay, if any, and whether that is reserved (under `batch`) now. */
  debit: Reservation | undefined;
  reserved: boolean;
}

/** A debit counted against a bank's cap from routing until its outcome is in the live view. */
interface Reservation {
  bank: string;
  amount: number;
  twoPhase: boolean;
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


/** What a shard failure leaves an operation with until the shard's disk has been read. */
interface Held {
  entry: Inflight;
  /** The answer if the disk shows the operation did not happen. */
  failure: Failure;
}

export interface RouterDeps {
  rules: ValidationRules;
  shardMap: ShardMap;
  lookup: InstructionLookup;
  /** Every stored or routed instruction key is in it; a key it has not seen is certainly new. */
  idFilter: IdFilter;
  transport: Pick<ShardTransport, 'apply'>;
  clock: Clock;
  caps: DebitCaps;
  /** The mandate rule of admission (委托, 协议): why an instruction may not be admitted under its mandate, if it may not. */
  mandates: { refusal(i: Instruction): Failure | undefined };
  batch: string;
  /** Called with every committed task, before any of its answers is delivered. */
  onCommitted: (task: ApplyTask, result: ApplyResult) => void;
  /**
   * Called for an operation whose commit the router learned from the disk
   * rather than from its task (the task failed after committing), after
   * the shard was resynchronised and before its answer is delivered.
   */
  onRecovered: (op: ShardOp, record: StoredInstruction) => void;
  limits: { shardQueueMax: number; shardTaskItemsMax: number; shardTasksInflightMax: number };
  log: Logger;
  counters: EngineCounters;
  /** Called per task with its round trip (dispatch to commit report), for metrics. */
  onTaskTimed?: (task: ApplyTask, result: ApplyResult, roundTripMs: number) => void;
  /**
   * Bring the live state of one shard (its share of the live view, its
   * pending debits and timers) back in line with its disk, after a task of
   * it failed: its worker may have died after committing. It leaves the
   * shard's latest commit visible to `lookup`, which the router then reads
   * to answer the failed task's operations.
   */
  resync: (shard: number) => Promise<void>;
}

/**
 * Requests that may wait on one in-flight id (identical resubmissions,
 * repeated receipts, changes of another kind): past it they are answered
 * OVERLOADED, so a client retrying in a loop cannot grow a list without bound.
 */
export const WAITERS_PER_ID_MAX = 64;

/** How long a failed resynchronisation waits before it is tried again. */
const RESYNC_RETRY_MS = 1000;

export class ShardRouter {
  private readonly inflight = new InflightIndex<Inflight>();
  /** Per shard, the in-flight entries of the operations not yet sent, in order. */
  private queues: Inflight[][] = [];
  private readonly tasksAtWorker: number[] = [];
  private readonly inflightPerShard: number[] = [];
  /** Operations routed under each batch and not yet answered: a batch is drained when none is left. */
  private readonly unansweredByBatch = new Map<string, number>();
  private readonly drainWaiters = new Map<string, (() => void)[]>();
  private flushScheduled = false;
  private held = false;
  /** Shards whose dispatch is held until their state is resynchronised from disk. */
  private readonly resyncWanted = new Set<number>();
  private readonly resyncing = new Set<number>();
  /** Per shard, the operations of its failed tasks: answered from its disk once it is resynchronised. */
  private readonly awaitingTruth: Held[][] = [];
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
      this.awaitingTruth.push([]);
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
      if (pending !== undefined && pending.op[0] === 'S') {
        // Not stored yet: an identical one waits for its outcome, a different one conflicts.
        if (!sameContent(pending.op, v)) this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' is in flight with different content`));
        else if (waiters(pending) >= WAITERS_PER_ID_MAX) this.reject(submission, index, v.id, failure('OVERLOADED', `too many requests wait on id '${v.id}'; retry later`));
        else (pending.more ??= []).push({ target: submission, index });
        return;
      }
      // Stored (a receipt, expiry or reversal of it may be in flight): the stored content decides.
      const found = this.deps.lookup.find(institution, v.id);
      if (found !== undefined) {
        if (storedContentKey(found.record) === contentKey(v)) {
          this.deps.counters.instructions.add(`${v.type}|duplicate`);
          submission.settle(index, storedResult(v.id, found.record.s, found.record.b, true));
        } else {
          this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' exists with different content`));
        }
        return;
      }
      assert(pending === undefined, 'a lifecycle operation is in flight for an instruction that is not stored');
    }

    // The mandate is checked here, in the one order of the stream: a revocation splits it into before and after.
    const refusal = this.deps.mandates.refusal(v);
    if (refusal !== undefined) {
      this.reject(submission, index, v.id, refusal);
      return;
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
    const debit: Reservation | undefined = this.deps.caps.cap(v.payer) === undefined ? undefined : { bank: v.payer, amount: v.amount, twoPhase: v.twoPhase };
    this.enqueue(shard, toSubmitOp(v), submission, index, unseen, debit);
  }

  /**
   * Route a lifecycle operation on a stored instruction to its shard. An
   * identical operation already in flight is waited on; one of another kind
   * is routed after it, against the state it leaves. `debit` is what the
   * operation makes a bank pay (a reversal makes the payee pay back): it
   * is reserved against that bank's cap like a submission's debit.
   */
  lifecycle(shard: number, op: LifecycleOp, target: OutcomeTarget, index: number, debit?: { bank: string; amount: number }): void {
    const pending = this.inflight.get(op[1], op[2]);
    if (pending !== undefined) {
      if (waiters(pending) >= WAITERS_PER_ID_MAX) {
        this.deps.counters.rejections.add('OVERLOADED');
        target.deliver(index, { kind: 'failed', failure: failure('OVERLOADED', `too many requests wait on id '${op[2]}'; retry later`) }, true);
      } else if (pending.op[0] === op[0] && (op[0] !== 'U' || pending.op[3] === op[3])) {
        // The same change (a submission only with the same verification): it waits for that one's outcome.
        (pending.more ??= []).push({ target, index });
      } else {
        (pending.deferred ??= []).push({ op, shard, target, index, debit });
      }
      return;
    }
    if (this.queues[shard]!.length >= this.deps.limits.shardQueueMax) {
      target.deliver(index, { kind: 'failed', failure: failure('OVERLOADED', `shard ${shard} queue is full; retry later`) }, true);
      return;
    }
    let capped: Reservation | undefined;
    if (debit !== undefined && this.deps.caps.cap(debit.bank) !== undefined) {
      if (!this.deps.caps.reserve(debit.bank, debit.amount, false, this.routeBatch)) {
        this.deps.counters.rejections.add('DEBIT_CAP_EXCEEDED');
        target.deliver(index, { kind: 'failed', failure: failure('DEBIT_CAP_EXCEEDED', `bank '${debit.bank}' would pass its debit cap`) }, true);
        return;
      }
      capped = { bank: debit.bank, amount: debit.amount, twoPhase: false };
    }
    this.enqueue(shard, op, target, index, false, capped);
  }

  /**
   * `unseen`: the id filter had never seen the key, so the entry is only
   * listed (see InflightIndex). `debit`: already reserved under the batch
   * routed into.
   */
  private enqueue(shard: number, op: ShardOp, target: OutcomeTarget, index: number, unseen: boolean, debit: Reservation | undefined): void {
    const batch = this.routeBatch;
    const entry: Inflight = { op, place: 'listed', shard, batch, target, index, more: undefined, deferred: undefined, debit, reserved: debit !== undefined };
    if (unseen) this.inflight.addUnindexed(entry);
    else this.inflight.add(entry);
    this.inflightPerShard[shard]!++;
    this.unansweredByBatch.set(batch, (this.unansweredByBatch.get(batch) ?? 0) + 1);
    this.queues[shard]!.push(entry);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.deps.clock.defer(() => {
      this.flushScheduled = false;
      this.flush(false);
    });
  }

  /**
   * Cut every shard's queue into tasks, as far as the in-flight bound allows
   * (or entirely, to seal a batch). A task holds operations of one batch
   * only: each is booked under the batch it was routed in.
   */
  private flush(all: boolean): void {
    if (this.held) return;
    const { shardTaskItemsMax, shardTasksInflightMax } = this.deps.limits;
    for (let shard = 0; shard < this.queues.length; shard++) {
      if (this.resyncWanted.has(shard) || this.resyncing.has(shard)) continue;
      while (this.queues[shard]!.length > 0 && (all || this.tasksAtWorker[shard]! < shardTasksInflightMax)) {
        const queue = this.queues[shard]!;
        const batch = queue[0]!.batch;
        const limit = Math.min(queue.length, shardTaskItemsMax);
        let n = 1;
        while (n < limit && queue[n]!.batch === batch) n++;
        if (n === queue.length) {
          this.queues[shard] = [];
          this.dispatch(shard, batch, queue);
        } else {
          this.queues[shard] = queue.slice(n);
          this.dispatch(shard, batch, queue.slice(0, n));
        }
      }
    }
  }

  private dispatch(shard: number, batch: string, entries: Inflight[]): void {
    const task: ApplyTask = { kind: 'apply', shard, batch, now: this.deps.clock.now(), ops: entries.map((e) => e.op) };
    this.tasksAtWorker[shard]!++;
    const sentAt = this.deps.clock.monotonicMs();
    this.deps.transport.apply(task).then(
      (result) => {
        this.deps.onTaskTimed?.(task, result, this.deps.clock.monotonicMs() - sentAt);
        this.committed(task, entries, result);
      },
      (err: unknown) => this.failed(task, entries, err),
    );
  }

  private committed(task: ApplyTask, entries: Inflight[], result: ApplyResult): void {
    if (this.stopped) return;
    this.tasksAtWorker[task.shard]!--;
    assert(result.outcomes.length === entries.length, 'a shard answered a different number of operations');
    // The commit must be visible to look-ups before its ids leave the in-flight map.
    this.deps.lookup.refresh(task.shard);
    this.deps.onCommitted(task, result);
    // The commit is in the live view now, so its reservations may go.
    for (const e of entries) this.release(e);
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
    this.afterTask();
  }

  /**
   * A task failed: its commit may or may not have happened (a worker can
   * die after committing and before reporting). Its operations keep their
   * in-flight entries and their reservations, and are answered from the
   * shard's disk once the shard has been resynchronised: no answer is a
   * guess.
   */
  private failed(task: ApplyTask, entries: Inflight[], err: unknown): void {
    if (this.stopped) return;
    this.tasksAtWorker[task.shard]!--;
    this.deps.log.error({ err, shard: task.shard, ops: entries.length }, 'shard task failed; its operations are answered once the shard is resynchronised from disk');
    if ((err as Error | undefined)?.name === 'AssertionError') this.deps.counters.lawViolations++;
    // A disk that is full is the operator's to fix and the client's to know; anything else is a fault.
    const f = /ENOSPC|MDB_MAP_FULL|No space left/.test(String((err as Error | undefined)?.message))
      ? failure('STORAGE_FULL', `shard ${task.shard} could not write: the disk is full; nothing was stored`)
      : failure('INTERNAL', 'the shard failed and this was not stored; retry with the same id');
    const held = this.awaitingTruth[task.shard]!;
    for (const entry of entries) held.push({ entry, failure: f });
    this.resyncWanted.add(task.shard);
    this.afterTask();
  }

  private readonly fullWarnedAt = new Map<number, number>();

  /** Tell the operator a shard is at its storage limit, at most every ten seconds per shard. */
  private warnFull(shard: number): void {
    const now = this.deps.clock.now();
    if (now - (this.fullWarnedAt.get(shard) ?? Number.NEGATIVE_INFINITY) < 10_000) return;
    this.fullWarnedAt.set(shard, now);
    this.deps.log.error({ shard }, 'shard is at its storage limit (limits.shardBytesMax): new instructions are refused with STORAGE_FULL');
  }

  /** Once a failed shard has nothing left at its worker, resynchronise it, answer its held operations, then let its queue go again. */
  private maybeResync(shard: number): void {
    if (this.stopped) return;
    if (!this.resyncWanted.has(shard) || this.resyncing.has(shard) || this.tasksAtWorker[shard]! > 0) return;
    this.resyncWanted.delete(shard);
    this.resyncing.add(shard);
    this.deps.resync(shard).then(
      () => {
        if (this.stopped) return;
        this.resyncing.delete(shard);
        const held = this.awaitingTruth[shard]!;
        this.awaitingTruth[shard] = [];
        for (const h of held) this.answerFromDisk(h);
        this.afterTask();
      },
      (err: unknown) => {
        this.deps.log.error({ err, shard }, 'shard resynchronisation failed; retrying');
        this.resyncing.delete(shard);
        this.resyncWanted.add(shard);
        this.deps.clock.after(RESYNC_RETRY_MS, () => this.maybeResync(shard));
      },
    );
  }

  /**
   * The truth about an operation of a failed task, read from its shard's
   * disk after the resynchronisation: the live view now holds whatever it
   * committed, so its reservation can go, and its answer says what
   * happened.
   */
  private answerFromDisk(h: Held): void {
    const { entry } = h;
    const op = entry.op;
    const record = this.deps.lookup.find(op[1], op[2])?.record;
    let result: OpResult;
    if (op[0] === 'S') {
      if (record === undefined) {
        result = { kind: 'failed', failure: h.failure };
      } else if (storedContentKey(record) === submittedContentKey(op)) {
        // Committed: the in-flight entry kept any other submission of this key out, so this one stored it.
        this.deps.counters.instructions.add(op[8] > 0 ? PENDING_KEY[op[3]] : CLEARED_KEY[op[3]]);
        this.deps.onRecovered(op, record);
        result = { kind: 'applied', batch: record.b ?? entry.batch };
      } else {
        result = { kind: 'found', outcome: storedOutcome(record, true) };
      }
    } else if (record === undefined) {
      result = { kind: 'found', outcome: { status: 'missing' } };
    } else if (lifecycleLanded(op[0], op[3], record)) {
      this.deps.onRecovered(op, record);
      result = { kind: 'applied', batch: (op[0] === 'R' ? record.rb : record.b) ?? entry.batch };
    } else if (lifecycleApplies(op[0], record, op[4])) {
      result = { kind: 'failed', failure: h.failure.code === 'STORAGE_FULL' ? h.failure : failure('INTERNAL', 'the shard failed and this change was not stored; send it again') };
    } else {
      result = { kind: 'found', outcome: storedOutcome(record, false) };
    }
    if (result.kind === 'failed') this.deps.counters.rejections.add(result.failure.code);
    this.release(entry);
    this.finish(entry, result);
  }

  private release(entry: Inflight): void {
    const r = entry.debit;
    if (r === undefined || !entry.reserved) return;
    entry.reserved = false;
    this.deps.caps.release(r.bank, r.amount, r.twoPhase, entry.batch);
  }

  private finish(entry: Inflight, result: OpResult): void {
    assert(!entry.reserved, 'an operation was answered with its debit still reserved');
    this.inflight.delete(entry);
    this.inflightPerShard[entry.shard]!--;
    const left = this.unansweredByBatch.get(entry.batch)! - 1;
    if (left > 0) {
      this.unansweredByBatch.set(entry.batch, left);
    } else {
      this.unansweredByBatch.delete(entry.batch);
      const waiters = this.drainWaiters.get(entry.batch);
      this.drainWaiters.delete(entry.batch);
      waiters?.forEach((w) => w());
    }
    entry.target.deliver(entry.index, result, true);
    if (entry.more !== undefined) {
      for (const w of entry.more) {
        if (result.kind === 'applied' && entry.op[0] === 'S') this.deps.counters.instructions.add(`${entry.op[3]}|duplicate`);
        w.target.deliver(w.index, result, false);
      }
    }
    if (entry.deferred !== undefined) for (const d of entry.deferred) this.lifecycle(d.shard, d.op, d.target, d.index, d.debit);
  }

  private afterTask(): void {
    for (const shard of this.resyncWanted) this.maybeResync(shard);
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
   * under `next`. Resolves once every operation of the old batch has been
   * answered, a failed shard's after its resynchronisation, so the live
   * view then holds the old batch whole.
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
      this.readmit(next, old);
      throw err;
    } finally {
      this.held = false;
      this.scheduleFlush();
    }
    await this.drained(old);
    return old;
  }

  /**
   * The next batch could not be made durable: what was routed into it
   * meanwhile goes into the old batch instead, each debit decided again
   * against the old batch's figures, in the order it was routed.
   */
  private readmit(from: string, to: string): void {
    for (let shard = 0; shard < this.queues.length; shard++) {
      const keep: Inflight[] = [];
      const refused: Inflight[] = [];
      for (const e of this.queues[shard]!) {
        if (e.batch !== from) {
          keep.push(e);
          continue;
        }
        this.release(e);
        e.batch = to;
        this.unansweredByBatch.set(from, this.unansweredByBatch.get(from)! - 1);
        this.unansweredByBatch.set(to, (this.unansweredByBatch.get(to) ?? 0) + 1);
        const r = e.debit;
        if (r !== undefined) {
          if (!this.deps.caps.reserve(r.bank, r.amount, r.twoPhase, to)) {
            refused.push(e);
            continue;
          }
          e.reserved = true;
        }
        keep.push(e);
      }
      this.queues[shard] = keep;
      for (const e of refused) {
        this.deps.counters.rejections.add('DEBIT_CAP_EXCEEDED');
        this.finish(e, { kind: 'failed', failure: failure('DEBIT_CAP_EXCEEDED', 'the debit cap would be passed') });
      }
    }
    if (this.unansweredByBatch.get(from) === 0) this.unansweredByBatch.delete(from);
  }

  /** Resolves once every operation routed under `batch` has been answered. */
  drained(batch: string): Promise<void> {
    if (!this.unansweredByBatch.has(batch)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.drainWaiters.get(batch) ?? [];
      list.push(resolve);
      this.drainWaiters.set(batch, list);
    });
  }

  private stopped = false;

  /**
   * The engine has stopped (its stores are closing): tasks still out
   * report into nothing, and nothing more is resynchronised or answered.
   * What they committed is on disk, and in the log in cluster mode.
   */
  stop(): void {
    this.stopped = true;
  }

  /** Resolves once nothing is queued or at a worker. */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

function storedOutcome(record: StoredInstruction, conflict: boolean): OpOutcome {
  const o: OpOutcome = { status: record.s };
  if (record.b !== undefined) o.batch = record.b;
  if (record.st !== undefined) o.step = record.st;
  if (record.vf !== undefined) o.verification = record.vf;
  if (conflict) o.conflict = true;
  return o;
}

function waiters(e: Inflight): number {
  return (e.more?.length ?? 0) + (e.deferred?.length ?? 0);
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
    op[8] === (i.twoPhase ? i.timeoutMs! : 0) &&
    op[9] === (i.mandate ?? null)
  );
}

function toSubmitOp(i: Instruction): SubmitOp {
  return ['S', i.institution, i.id, i.type, i.payer, i.payee, i.amount, i.reference ?? null, i.twoPhase ? i.timeoutMs! : 0, i.mandate ?? null];
}
