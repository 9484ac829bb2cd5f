/**
 * The leader's shard transport in cluster mode: every task is appended to
 * the replicated log first, and applied to the leader's own shard (with
 * its log sequence, in the same LMDB transaction) only once a majority of
 * the log's replicas holds it. Its answer therefore means "replicated and
 * committed here".
 *
 * Tasks of one shard reach its worker in log order. A task that fails at
 * the worker is in the log all the same: before the core reads the
 * shard's disk to find out what happened (`open`), the tasks the shard has
 * not applied are applied again from what was appended, and the shard
 * skips those it had applied. A leader that lost its lease, or whose
 * append was fenced, steps down: its tasks fail from then on (the node has
 * closed every connection, so nobody is answered), and whatever it had
 * appended is in the log for the next leader.
 */

import type { ShardTransport } from '../core/ports.js';
import type { ApplyResult, ApplyTask, OpenResult, OpenTask } from '../shard/tasks.js';
import { FencedError } from './replicated-log.js';

export class ReplicatedTransport implements ShardTransport {
  /** Per shard, settled once the previous task has been handed to the worker. */
  private readonly issued: Promise<void>[];
  /** Per shard, the tasks appended and not yet reported committed here, by log sequence. */
  private readonly unconfirmed: Map<number, ApplyTask>[];

  constructor(
    private readonly inner: ShardTransport,
    shards: number,
    /** Append a task to the log: its sequence, once it is there and this node still leads (it fails otherwise). */
    private readonly append: (task: ApplyTask) => Promise<number>,
    /** Whether this node still holds the lease (checked before anything is answered). */
    private readonly holds: () => boolean,
    /** The node must step down: its lease lapsed, or its data and the log diverge. */
    private readonly deposed: (err: Error) => void,
    /** A task is in the log and committed here, at this sequence. */
    private readonly committed: (seq: number) => void,
  ) {
    this.issued = Array.from({ length: shards }, () => Promise.resolve());
    this.unconfirmed = Array.from({ length: shards }, () => new Map());
  }

  /** Step the node down and fail the task. */
  private depose(reason: string): never {
    const err = new FencedError(reason);
    this.deposed(err);
    throw err;
  }

  apply(task: ApplyTask): Promise<ApplyResult> {
    const appended = this.append(task);
    const previous = this.issued[task.shard]!;
    let handed!: () => void;
    this.issued[task.shard] = new Promise((resolve) => (handed = resolve));
    return Promise.all([appended, previous]).then(
      ([seq]) => {
        const logged: ApplyTask = { ...task, logSeq: seq };
        this.unconfirmed[task.shard]!.set(seq, logged);
        const result = this.inner.apply(logged);
        handed();
        return result.then((r) => {
          this.unconfirmed[task.shard]!.delete(seq);
          // The shard had applied this sequence already: its data and the log have diverged.
          if (r.skipped === true) this.depose(`shard ${task.shard} had applied log sequence ${seq} already; its data and the log diverge`);
          this.committed(seq);
          if (!this.holds()) this.depose('the lease lapsed before the task was answered');
          return r;
        });
      },
      (err: unknown) => {
        handed();
        throw err;
      },
    );
  }

  /** Apply again what the shard may have missed of the log, then read its disk. */
  async open(task: OpenTask): Promise<OpenResult> {
    const pending = [...this.unconfirmed[task.shard]!.entries()].sort((a, b) => a[0] - b[0]);
    for (const [seq, t] of pending) {
      await this.inner.apply(t);
      this.unconfirmed[task.shard]!.delete(seq);
      this.committed(seq);
    }
    return this.inner.open(task);
  }
}
