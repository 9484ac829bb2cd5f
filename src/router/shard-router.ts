/**
 * The router: the point of the stream where instructions are ordered.
 *
 * For every submitted item it validates, applies the duplicate rules
 * across all shards (in-flight ids here, durable ids in the shards' LMDB
 * environments), and queues the item for the shard that owns its bank pair.
 * Queues are cut into one task per shard per event-loop turn (at most
 * `shardTaskItemsMax` items, at most `shardTasksInflightMax` tasks at the
 * worker), so many instructions share one worker hop and one LMDB commit.
 *
 * A result is delivered only after the shard reports the commit that holds
 * the instruction; the committed pair-flow deltas are applied to the
 * positions view at the same moment.
 */

import { isFailure, rawId, validateInstruction, contentKey, type Instruction, type ValidationRules } from '../core/instruction.js';
import { assert } from '../core/assert.js';
import type { ShardMap } from '../core/shard-map.js';
import { failure, type Failure } from '../protocol/errors.js';
import { rejectedResult, storedResult, type InstructionResult } from '../protocol/messages.js';
import { storedContentKey } from '../store/schema.js';
import type { ShardReaders } from '../store/shard-readers.js';
import type { ApplyResult, ApplyTask, WireItem } from '../shard/tasks.js';
import type { Logger } from '../engine/log.js';

export interface Waiter {
  submission: Submission;
  index: number;
}

/** One POST or one `submit` frame: its results fill in as shards answer. */
export class Submission {
  readonly results: (InstructionResult | undefined)[];
  private remaining: number;

  constructor(
    size: number,
    private readonly onDone: (results: InstructionResult[]) => void,
  ) {
    this.results = new Array(size);
    this.remaining = size;
  }

  settle(index: number, result: InstructionResult): void {
    assert(this.results[index] === undefined, `item ${index} answered twice`);
    this.results[index] = result;
    this.remaining--;
    if (this.remaining === 0) this.onDone(this.results as InstructionResult[]);
  }

  get done(): boolean {
    return this.remaining === 0;
  }
}

interface Inflight {
  content: string;
  id: string;
  /** The first is the submission that queued the item; later ones are identical resubmissions. */
  waiters: Waiter[];
}

export interface RouterStats {
  submitted: number;
  cleared: number;
  duplicates: number;
  rejected: Map<string, number>;
  tasks: number;
}

export interface ShardRunner {
  apply(task: ApplyTask): Promise<ApplyResult>;
}

export interface RouterDeps {
  rules: ValidationRules;
  shardMap: ShardMap;
  readers: ShardReaders;
  runner: ShardRunner;
  openBatch: () => string;
  onCommitted: (shard: number, result: ApplyResult) => void;
  limits: { shardQueueMax: number; shardTaskItemsMax: number; shardTasksInflightMax: number };
  log: Logger;
}

export class ShardRouter {
  private readonly inflight = new Map<string, Inflight>();
  private readonly queueItems: WireItem[][] = [];
  private readonly queueKeys: string[][] = [];
  private readonly tasksAtWorker: number[] = [];
  private flushScheduled = false;
  private idleWaiters: (() => void)[] = [];
  readonly stats: RouterStats = { submitted: 0, cleared: 0, duplicates: 0, rejected: new Map(), tasks: 0 };

  constructor(private readonly deps: RouterDeps) {
    for (let s = 0; s < deps.shardMap.shards; s++) {
      this.queueItems.push([]);
      this.queueKeys.push([]);
      this.tasksAtWorker.push(0);
    }
  }

  /** Items submitted and not yet answered, across all shards. */
  get inflightCount(): number {
    return this.inflight.size;
  }

  queuedCount(shard: number): number {
    return this.queueItems[shard]?.length ?? 0;
  }

  /**
   * Route a batch of raw items in the name of `institution`. `onDone` gets
   * one result per item, in order, once every item is answered.
   */
  submit(institution: string, raws: readonly unknown[], onDone: (results: InstructionResult[]) => void): Submission {
    const submission = new Submission(raws.length, onDone);
    for (let i = 0; i < raws.length; i++) this.route(institution, raws[i], submission, i);
    if (raws.length === 0) onDone([]);
    return submission;
  }

  private reject(submission: Submission, index: number, id: string | undefined, f: Failure): void {
    this.stats.rejected.set(f.code, (this.stats.rejected.get(f.code) ?? 0) + 1);
    submission.settle(index, rejectedResult(id, f));
  }

  private route(institution: string, raw: unknown, submission: Submission, index: number): void {
    this.stats.submitted++;
    const v = validateInstruction(raw, institution, this.deps.rules);
    if (isFailure(v)) {
      this.reject(submission, index, rawId(raw), v);
      return;
    }
    const key = `${institution}/${v.id}`;
    const content = contentKey(v);

    const pending = this.inflight.get(key);
    if (pending !== undefined) {
      if (pending.content === content) {
        pending.waiters.push({ submission, index });
      } else {
        this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' is in flight with different content`));
      }
      return;
    }

    const found = this.deps.readers.find(institution, v.id);
    if (found !== undefined) {
      if (storedContentKey(found.record) === content) {
        this.stats.duplicates++;
        submission.settle(index, storedResult(v.id, found.record.s, found.record.b, true));
      } else {
        this.reject(submission, index, v.id, failure('DUPLICATE_CONFLICT', `id '${v.id}' exists with different content`));
      }
      return;
    }

    const shard = this.deps.shardMap.shardOf(v.payer, v.payee);
    const queue = this.queueItems[shard]!;
    if (queue.length >= this.deps.limits.shardQueueMax) {
      this.reject(submission, index, v.id, failure('OVERLOADED', `shard ${shard} queue is full; retry later`));
      return;
    }
    this.inflight.set(key, { content, id: v.id, waiters: [{ submission, index }] });
    queue.push(toWire(v));
    this.queueKeys[shard]!.push(key);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Cut every shard's queue into tasks, as far as the in-flight bound allows. */
  private flush(): void {
    const { shardTaskItemsMax, shardTasksInflightMax } = this.deps.limits;
    for (let shard = 0; shard < this.queueItems.length; shard++) {
      while (this.queueItems[shard]!.length > 0 && this.tasksAtWorker[shard]! < shardTasksInflightMax) {
        let items = this.queueItems[shard]!;
        let keys = this.queueKeys[shard]!;
        if (items.length > shardTaskItemsMax) {
          this.queueItems[shard] = items.slice(shardTaskItemsMax);
          this.queueKeys[shard] = keys.slice(shardTaskItemsMax);
          items = items.slice(0, shardTaskItemsMax);
          keys = keys.slice(0, shardTaskItemsMax);
        } else {
          this.queueItems[shard] = [];
          this.queueKeys[shard] = [];
        }
        this.dispatch(shard, items, keys);
      }
    }
  }

  private dispatch(shard: number, items: WireItem[], keys: string[]): void {
    const batch = this.deps.openBatch();
    const task: ApplyTask = { kind: 'apply', shard, batch, now: Date.now(), items };
    this.tasksAtWorker[shard]!++;
    this.stats.tasks++;
    this.deps.runner.apply(task).then(
      (result) => this.committed(shard, batch, keys, result),
      (err: unknown) => this.failed(shard, keys, err),
    );
  }

  private committed(shard: number, batch: string, keys: string[], result: ApplyResult): void {
    this.tasksAtWorker[shard]!--;
    assert(result.results.length === keys.length, 'a shard answered a different number of items');
    // The commit must be visible to look-ups before its ids leave the in-flight map.
    this.deps.readers.refresh(shard);
    this.deps.onCommitted(shard, result);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const entry = this.inflight.get(key);
      assert(entry !== undefined, `no in-flight entry for ${key}`);
      this.inflight.delete(key);
      const clash = result.results[i];
      let first: InstructionResult;
      let rest: InstructionResult;
      if (clash === null || clash === undefined) {
        this.stats.cleared++;
        first = storedResult(entry.id, 'cleared', batch, false);
        rest = storedResult(entry.id, 'cleared', batch, true);
      } else if (clash.conflict) {
        first = rest = rejectedResult(entry.id, failure('DUPLICATE_CONFLICT', `id '${entry.id}' exists with different content`));
      } else {
        first = rest = storedResult(entry.id, clash.status, clash.batch, true);
      }
      const waiters = entry.waiters;
      waiters[0]!.submission.settle(waiters[0]!.index, first);
      for (let w = 1; w < waiters.length; w++) {
        this.stats.duplicates++;
        waiters[w]!.submission.settle(waiters[w]!.index, rest);
      }
    }
    this.afterTask();
  }

  private failed(shard: number, keys: string[], err: unknown): void {
    this.tasksAtWorker[shard]!--;
    this.deps.log.error({ err, shard, items: keys.length }, 'shard task failed; its items were not acknowledged');
    const result = failure('INTERNAL', 'the shard could not commit this instruction; it was not accepted, retry with the same id');
    for (const key of keys) {
      const entry = this.inflight.get(key);
      if (entry === undefined) continue;
      this.inflight.delete(key);
      for (const w of entry.waiters) this.reject(w.submission, w.index, entry.id, result);
    }
    this.afterTask();
  }

  private afterTask(): void {
    this.flush();
    if (this.inflight.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves once nothing is queued or at a worker. */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

function toWire(i: Instruction): WireItem {
  return [i.institution, i.id, i.type, i.payer, i.payee, i.amount, i.reference ?? null];
}
