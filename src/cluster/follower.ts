/**
 * A follower applies the replicated log to its own LMDB with the same
 * shard code the leader runs: shard tasks through its shard workers, the
 * engine's own writes to its store. Each environment stores the last log
 * sequence it applied in the same transaction as what it applied, so an
 * entry is applied exactly once however often the log is read again
 * (after a restart, a worker fault, or a copied data folder).
 *
 * Entries are handed on in log order without waiting for each commit
 * (each shard's worker commits its tasks in the order they came), up to a
 * bound of entries in flight.
 */

import type { ConsumerMessages } from '@nats-io/jetstream';
import type { Logger } from '../core/log.js';
import type { ShardPools } from '../shard/shard-pools.js';
import type { EngineStore } from '../store/engine-store.js';
import { decodeEntry, type ReplicatedLog } from './replicated-log.js';

/** The log cannot bring this node's data up to date: it lost entries the node holds, or it was purged past the node. */
export class LogBehindError extends Error {
  override name = 'LogBehindError';
}

/** Entries handed on and not yet committed, at most. */
const INFLIGHT_MAX = 256;
/**
 * How long a log that seems to have lost entries (or to start past this
 * node) is read again before the node believes it. A NATS server resumed
 * after a pause can answer for the stream from its own stale copy for a
 * moment, while the stream's leader holds every entry: one such answer
 * once made every node of a cluster stop.
 */
const LOG_BEHIND_CONFIRM_MS = 15_000;
const LOG_BEHIND_REREAD_MS = 1000;

export class Follower {
  private messages: ConsumerMessages | undefined;
  private readonly shardApplied: number[] = [];
  private engineApplied = 0;
  /** The last sequence handed on (applied, or in flight). */
  private seen = 0;
  private inflight: Promise<unknown>[] = [];
  private failed: Error | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly log: ReplicatedLog,
    private readonly pools: ShardPools,
    private readonly store: EngineStore,
    private readonly shards: number,
    private readonly logger: Logger,
  ) {}

  /** The first error that stopped applying, if any. */
  get error(): Error | undefined {
    return this.failed;
  }

  async start(): Promise<void> {
    const openBatch = this.store.openBatch()?.id ?? '0';
    for (let shard = 0; shard < this.shards; shard++) {
      const opened = await this.pools.open({ kind: 'open', shard, batches: [openBatch], verify: false, filterBits: 0 });
      this.shardApplied[shard] = opened.appliedSeq;
    }
    this.engineApplied = this.store.appliedSeq();
    this.seen = Math.max(this.store.logCommittedThrough(), Math.min(this.engineApplied, ...this.shardApplied));
    // A log that ends before what this node has applied lost entries (JetStream lost a majority's
    // unsynced writes, or the stream was recreated): applying on would silently diverge.
    const applied = Math.max(this.engineApplied, ...this.shardApplied);
    const until = Date.now() + LOG_BEHIND_CONFIRM_MS;
    for (;;) {
      const { first, last } = await this.log.bounds();
      // A log purged past what this node has applied cannot bring it up to date: it needs a copy of a follower's data folder.
      const behind =
        applied > last
          ? `this node has applied the log up to ${applied}, but the log ends at ${last}: the log has lost entries this node holds`
          : last > 0 && this.seen + 1 < first
            ? `this node has applied the log up to ${this.seen}, but the log now starts at ${first}: start it from a copy of a follower's data folder`
            : undefined;
      if (behind === undefined) break;
      if (Date.now() >= until) throw new LogBehindError(behind);
      this.logger.warn({ applied, first, last }, 'the log seems behind this node; reading it again before believing it');
      await new Promise((r) => setTimeout(r, LOG_BEHIND_REREAD_MS));
    }
    this.committed = this.seen;
    this.messages = await this.log.follow(this.seen + 1);
    this.running = this.run(this.messages);
  }

  private async run(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const m of messages) {
        const seq = m.seq;
        if (seq <= this.seen) continue;
        const entry = decodeEntry(m.data);
        if (entry.k === 'task') {
          const shard = entry.task.shard;
          if (seq > this.shardApplied[shard]!) {
            this.inflight.push(this.pools.apply({ ...entry.task, logSeq: seq }));
            this.shardApplied[shard] = seq;
          }
        } else if (entry.k === 'store' && seq > this.engineApplied) {
          this.inflight.push(this.store.applyWrite(entry.w, seq));
          this.engineApplied = seq;
        }
        // A term entry changes no data: the node learns the leader from the lease.
        this.seen = seq;
        if (this.inflight.length >= INFLIGHT_MAX) await this.settle();
      }
      await this.settle();
      // The consumer ended without a stop (its connection gave up): the node reads the log again.
      if (!this.stopping) this.failed = new Error('the log consumer ended');
    } catch (err) {
      this.failed = err instanceof Error ? err : new Error(String(err));
      this.logger.error({ err, seq: this.seen }, 'applying the replicated log failed');
    }
  }

  private async settle(): Promise<void> {
    const upTo = this.seen;
    const list = this.inflight;
    this.inflight = [];
    await Promise.all(list);
    this.committed = Math.max(this.committed, upTo);
  }

  /** Everything up to this sequence is committed here. */
  private committed = 0;

  /**
   * Wait for what has been handed on, record durably the sequence
   * everything up to is committed here, and answer it.
   */
  async committedThrough(): Promise<number> {
    await this.settle();
    const through = this.committed;
    await this.store.setLogCommittedThrough(through);
    return through;
  }

  /** Resolves once everything up to `seq` has been read and committed here. */
  async drainTo(seq: number, timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.seen < seq && this.failed === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    await this.settle();
    return this.seen >= seq && this.failed === undefined;
  }

  /** The sequence read so far. */
  get readThrough(): number {
    return this.seen;
  }

  private stopping = false;

  async stop(): Promise<void> {
    this.stopping = true;
    await this.messages?.close();
    await this.running;
    await this.settle().catch(() => undefined);
  }
}
