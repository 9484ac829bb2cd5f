/**
 * The engine assembled: wiring only. It opens the LMDB store and the shard
 * readers, starts the Piscina shard workers, and hands them, with Node's
 * clock, to the clearing core (src/clearing/), where every decision lives.
 * The gateway sits in front of it and calls the few methods below; metrics
 * read it.
 */

import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { EngineConfig } from '../config/config.js';
import { Clearing } from '../clearing/clearing.js';
import type { EngineCounters } from '../core/counters.js';
import type { Failure } from '../core/failures.js';
import type { Located } from '../core/ports.js';
import type { ForwardItem, Notification, ReceiptResult } from '../lifecycle/lifecycle.js';
import { EngineMetrics } from '../metrics/metrics.js';
import type { InstructionResult } from '../protocol/messages.js';
import type { ShardRouter } from '../router/shard-router.js';
import { BatchSchedule } from '../settlement/batch-schedule.js';
import { ShardPools } from '../shard/shard-pools.js';
import type { VerifyReport } from '../shard/tasks.js';
import type { Snapshot, SnapshotTaker } from '../snapshots/snapshots.js';
import { EngineStore, type BatchRecord, type OperatorAction } from '../store/engine-store.js';
import { ShardReaders, type BucketEntry, type BucketSums } from '../store/shard-readers.js';
import type { LiveView } from '../view/live-view.js';
import type { Lifecycle } from '../lifecycle/lifecycle.js';
import { nodeClock } from './clock.js';
import type { Logger } from './log.js';

export interface AuditReport {
  batch: string;
  ok: boolean;
  instructions: number;
  cleared: number;
  shards: VerifyReport[];
}

export interface EngineEvents {
  snapshot: [Snapshot];
  forward: [string, ForwardItem[]];
  query: [string, string, string];
  notify: [Notification];
}

export class Engine extends EventEmitter<EngineEvents> {
  private state: 'starting' | 'ready' | 'stopping' | 'stopped' = 'starting';
  private schedule: BatchSchedule | undefined;
  /** Connections subscribed to each institution's notifications, kept by the gateway. */
  readonly notificationListeners = new Map<string, number>();
  readonly metrics: EngineMetrics;
  readonly startedAt = Date.now();

  private constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
    readonly store: EngineStore,
    readonly pools: ShardPools,
    readonly readers: ShardReaders,
    readonly clearing: Clearing,
  ) {
    super();
    this.metrics = new EngineMetrics(this);
  }

  static async start(config: EngineConfig, log: Logger): Promise<Engine> {
    const started = Date.now();
    mkdirSync(config.dataDir, { recursive: true });
    const store = new EngineStore(config.dataDir);
    await store.checkLayout(config.shards);
    const pools = new ShardPools(
      { dataDir: config.dataDir, shards: config.shards, mapSizeBytes: config.limits.shardMapBytes, faultInjection: config.faultInjection, shardBytesMax: config.limits.shardBytesMax },
      config.workers,
      config.limits.shardTasksInflightMax,
      (err) => log.error({ err }, 'a shard worker failed outside any task; it is replaced'),
    );
    const readers = new ShardReaders(config.dataDir, config.shards, config.limits.shardMapBytes);
    // The core's callbacks reach the engine, which is built after it, through this binding.
    let engine: Engine | undefined;
    let clearing: Clearing;
    try {
      clearing = await Clearing.start(
        {
          banks: config.banks,
          shards: config.shards,
          maxAmountCents: config.maxAmountCents,
          receiptQueryScheduleMs: config.receiptQueryScheduleMs,
          snapshotRetention: config.snapshotRetention,
          verifyOnStart: config.verifyOnStart,
          idFilterBits: config.limits.idFilterBytes * 8,
          limits: config.limits,
        },
        {
          clock: nodeClock,
          transport: pools,
          lookup: readers,
          store,
          log,
          pushes: {
            forward: (bank, items) => engine?.emit('forward', bank, items),
            query: (bank, institution, id) => engine?.emit('query', bank, institution, id),
            notify: (n) => engine?.emit('notify', n),
            listening: (institution) => (engine?.notificationListeners.get(institution) ?? 0) > 0,
          },
          onSnapshot: (s) => engine?.emit('snapshot', s),
          onTaskTimed: (task, result, ms) => engine?.metrics.observeTask(task, result, ms),
        },
      );
    } catch (err) {
      await pools.close();
      await readers.close();
      await store.close();
      throw err;
    }
    engine = new Engine(config, log, store, pools, readers, clearing);
    engine.state = 'ready';
    clearing.snapshots.start(config.snapshotIntervalMs);
    if (config.batchSchedule !== undefined) {
      engine.schedule = new BatchSchedule(config.batchSchedule, nodeClock, () => {
        engine!.closeBatch('schedule').catch((err: unknown) => log.error({ err }, 'scheduled cut-off failed'));
      });
    }
    log.info({ shards: config.shards, workers: config.workers, batch: clearing.openBatchId, recoveryMs: Date.now() - started }, 'engine ready');
    return engine;
  }

  get ready(): boolean {
    return this.state === 'ready';
  }

  get router(): ShardRouter {
    return this.clearing.router;
  }

  get lifecycle(): Lifecycle {
    return this.clearing.lifecycle;
  }

  get view(): LiveView {
    return this.clearing.view;
  }

  get counters(): EngineCounters {
    return this.clearing.counters;
  }

  get snapshots(): SnapshotTaker {
    return this.clearing.snapshots;
  }

  get banks(): readonly string[] {
    return this.clearing.banks;
  }

  get lastClosed(): BatchRecord | undefined {
    return this.clearing.lastClosed;
  }

  get openBatchId(): string {
    return this.clearing.openBatchId;
  }

  get openBatchOpenedAt(): number {
    return this.clearing.openBatchOpenedAt;
  }

  /** Instructions of an institution, answered once every item's outcome is durable. */
  submit(institution: string, raws: readonly unknown[], onDone: (results: InstructionResult[]) => void): void {
    this.clearing.router.submit(institution, raws, onDone);
  }

  /** Receipts of a payer bank. */
  receipts(bank: string, raws: readonly unknown[], onDone: (results: ReceiptResult[]) => void): void {
    this.clearing.lifecycle.receipts(bank, raws, onDone);
  }

  resolve(institution: string, id: string, outcome: 'confirm' | 'decline', operator: string): Promise<Failure | undefined> {
    return this.clearing.lifecycle.resolve(institution, id, outcome, operator);
  }

  reverse(institution: string, id: string, operator: string): Promise<Failure | undefined> {
    return this.clearing.lifecycle.reverse(institution, id, operator);
  }

  /** A stored instruction, wherever its shard. */
  find(institution: string, id: string): Located | undefined {
    return this.readers.find(institution, id);
  }

  buckets(batch: string, institution: string): BucketSums[] {
    return this.readers.buckets(batch, institution);
  }

  bucketEntries(batch: string, institution: string, bucket: number): BucketEntry[] {
    return this.readers.bucketEntries(batch, institution, bucket);
  }

  closeBatch(by: string): Promise<BatchRecord> {
    return this.clearing.closeBatch(by);
  }

  markSettled(batch: string, by: string): Promise<BatchRecord | 'open' | undefined> {
    return this.clearing.markSettled(batch, by);
  }

  openBatchRecord(): BatchRecord {
    return this.clearing.openBatchRecord();
  }

  /**
   * Write an operator action to the audit trail and the log. Answers wait
   * for this, so every action an operator was told about is on record.
   */
  async recordAction(operator: string, action: OperatorAction['action'], target: string, outcome: string): Promise<void> {
    this.log.info({ operator, action, target, outcome }, 'operator action');
    try {
      await this.store.recordAction({ at: new Date().toISOString(), operator, action, target, outcome });
    } catch (err) {
      this.log.error({ err, operator, action, target }, 'could not write the audit trail');
    }
  }

  /** Recompute every shard's flows and digests from its instruction log and compare (laws 2 and 6). */
  async audit(): Promise<AuditReport> {
    const batch = this.router.batch;
    await this.router.idle();
    const shards = await Promise.all(Array.from({ length: this.config.shards }, (_, s) => this.pools.verify(s, batch)));
    let instructions = 0;
    let cleared = 0;
    for (const s of shards) {
      instructions += s.instructions;
      cleared += s.cleared;
    }
    this.view.overview(); // conservation of the live view
    return { batch, ok: shards.every((s) => s.matches), instructions, cleared, shards };
  }

  /**
   * Stop: refuse new work (the gateway checks `ready`), let what is at the
   * workers commit for up to `drainMs`, then close workers and storage.
   */
  async stop(drainMs: number): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    this.state = 'stopping';
    this.schedule?.stop();
    this.clearing.stop();
    const drained = await Promise.race([
      this.router.idle().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainMs).unref()),
    ]);
    if (!drained) this.log.warn({ inflight: this.router.inflightCount }, 'stopping with operations still in flight; they were not acknowledged');
    await this.clearing.cutoffsDone();
    await this.snapshots.idle();
    await this.pools.close();
    await this.readers.close();
    await this.store.close();
    this.state = 'stopped';
    this.log.info('engine stopped');
  }
}
