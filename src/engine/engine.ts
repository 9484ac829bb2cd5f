/**
 * The engine assembled: storage, shard workers, router, live view, batch
 * cut-offs and snapshots, with start-up recovery and an orderly stop. The
 * gateway sits in front of it and is the only part that speaks to clients.
 */

import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { EngineConfig } from '../config/config.js';
import { assert } from '../core/assert.js';
import { IdFilter } from '../core/id-filter.js';
import { ShardMap } from '../core/shard-map.js';
import { DebitCaps } from '../router/debit-caps.js';
import { ShardPools } from '../router/shard-pools.js';
import { ShardRouter } from '../router/shard-router.js';
import type { OpenResult, VerifyReport } from '../shard/tasks.js';
import { EngineStore, nextBatchId, type BatchRecord, type Closing, type OperatorAction } from '../store/engine-store.js';
import { ShardReaders } from '../store/shard-readers.js';
import { BatchSchedule } from './batch-schedule.js';
import { EngineCounters } from './counters.js';
import { Lifecycle, type ForwardItem, type Notification } from './lifecycle.js';
import { EngineMetrics } from './metrics.js';
import { LiveView, type BatchState } from './live-view.js';
import type { Logger } from './log.js';
import { batchRecord } from './settlement-report.js';
import { SnapshotTaker, type Snapshot } from './snapshots.js';

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
  private openedAt: number;
  private closingChain: Promise<unknown> = Promise.resolve();
  readonly banks: readonly string[];
  readonly snapshots: SnapshotTaker;
  readonly lifecycle: Lifecycle;
  private schedule: BatchSchedule | undefined;
  /** Connections subscribed to each institution's notifications, kept by the gateway. */
  readonly notificationListeners = new Map<string, number>();
  readonly metrics: EngineMetrics;
  readonly startedAt = Date.now();
  /** The most recently closed batch, for the settlement metrics. */
  lastClosed: BatchRecord | undefined;

  private constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
    readonly store: EngineStore,
    readonly pools: ShardPools,
    readonly readers: ShardReaders,
    readonly view: LiveView,
    readonly router: ShardRouter,
    shardMap: ShardMap,
    openedAt: number,
    readonly counters: EngineCounters,
  ) {
    super();
    this.banks = config.banks.map((b) => b.code);
    this.openedAt = openedAt;
    this.snapshots = new SnapshotTaker(this, store.lastSnapshotSeq());
    this.lifecycle = new Lifecycle(router, readers, shardMap, view, log, config.receiptQueryScheduleMs, {
      forward: (bank, items) => this.emit('forward', bank, items),
      query: (bank, institution, id) => this.emit('query', bank, institution, id),
      notify: (n) => this.emit('notify', n),
      listening: (institution) => (this.notificationListeners.get(institution) ?? 0) > 0,
    }, this.counters);
    this.lastClosed = store.closedBatches().at(-1);
    this.metrics = new EngineMetrics(this);
  }

  static async start(config: EngineConfig, log: Logger): Promise<Engine> {
    const started = Date.now();
    mkdirSync(config.dataDir, { recursive: true });
    const store = new EngineStore(config.dataDir);
    await store.checkLayout(config.shards);
    let open = store.openBatch();
    if (open === undefined) {
      open = { id: nextBatchId(undefined, Date.now()), openedAt: Date.now() };
      await store.setOpenBatch(open);
      log.info({ batch: open.id }, 'opened the first settlement batch');
    }
    const closing = store.closing();

    const pools = new ShardPools(
      { dataDir: config.dataDir, shards: config.shards, mapSizeBytes: config.limits.shardMapBytes, faultInjection: config.faultInjection, shardBytesMax: config.limits.shardBytesMax },
      config.workers,
      config.limits.shardTasksInflightMax,
      (err) => log.error({ err }, 'a shard worker failed outside any task; it is replaced'),
    );
    const batches = closing === undefined ? [open.id] : [open.id, closing.batch];
    let opened: OpenResult[];
    try {
      opened = await Promise.all(
        Array.from({ length: config.shards }, (_, shard) =>
          pools.open({ kind: 'open', shard, batches, verify: config.verifyOnStart, filterBits: config.limits.idFilterBytes * 8 }),
        ),
      );
      for (const o of opened) {
        if (o.verify === null) continue;
        if (!o.verify.matches) throw new Error(`shard ${o.shard} failed verification: ${o.verify.mismatches.join(', ')}`);
        log.info({ shard: o.shard, instructions: o.verify.instructions, cleared: o.verify.cleared }, 'shard verified against its instruction log');
      }
    } catch (err) {
      await pools.close();
      await store.close();
      throw err;
    }

    const readers = new ShardReaders(config.dataDir, config.shards, config.limits.shardMapBytes);
    const idFilter = new IdFilter(config.limits.idFilterBytes * 8);
    for (const o of opened) if (o.filter !== null) idFilter.merge(o.filter);
    const bankCodes = config.banks.map((b) => b.code);
    const view = new LiveView(bankCodes, open.id);
    for (const o of opened) {
      for (const s of o.summaries) view.apply(s, o.shard);
      for (const p of o.pending) view.addPending(o.shard, p.payer, BigInt(p.amount));
    }
    view.overview(); // asserts conservation of the recovered state

    const caps = new DebitCaps(config.banks, view);
    const bankSet = new Set(bankCodes);
    const shardMap = new ShardMap(bankCodes, config.shards);
    const counters = new EngineCounters();
    // The router is built before the engine that holds it; its callbacks reach the engine through this binding.
    let engine: Engine | undefined;
    const router = new ShardRouter({
      rules: { isBank: (code) => bankSet.has(code), amountCentsMax: config.maxAmountCents, twoPhaseEnabled: true },
      shardMap,
      readers,
      idFilter,
      runner: pools,
      caps,
      batch: open.id,
      onCommitted: (task, result) => {
        view.apply(result.delta, task.shard);
        engine!.lifecycle.onCommitted(task, result);
      },
      limits: config.limits,
      log,
      counters,
      onTaskTimed: (task, result, ms) => engine!.metrics.observeTask(task, result, ms),
      resync: (shard) => engine!.resyncShard(shard),
    });
    engine = new Engine(config, log, store, pools, readers, view, router, shardMap, open.openedAt, counters);
    engine.lifecycle.load(opened.flatMap((o) => o.pending));
    if (closing !== undefined) {
      // A cut-off was interrupted after the next batch became durable: finish it from what the shards hold.
      await engine.finishClose(closing, view.take(closing.batch));
      log.warn({ batch: closing.batch }, 'finished a cut-off that a stop had interrupted');
    }
    engine.state = 'ready';
    engine.snapshots.start(config.snapshotIntervalMs);
    if (config.batchSchedule !== undefined) {
      engine.schedule = new BatchSchedule(config.batchSchedule, () => {
        engine!.closeBatch('schedule').catch((err: unknown) => log.error({ err }, 'scheduled cut-off failed'));
      });
    }
    log.info({ shards: config.shards, workers: config.workers, batch: open.id, recoveryMs: Date.now() - started }, 'engine ready');
    return engine;
  }

  get ready(): boolean {
    return this.state === 'ready';
  }

  get openBatchId(): string {
    return this.router.batch;
  }

  get openBatchOpenedAt(): number {
    return this.openedAt;
  }

  /**
   * Cut off the open batch (清算场次), open the next, and answer the closed
   * batch's settlement report once every instruction routed before the cut
   * has committed. Cut-offs are serialised.
   */
  closeBatch(by: string): Promise<BatchRecord> {
    const run = this.closingChain.then(() => this.closeNow(by));
    this.closingChain = run.catch(() => undefined);
    return run;
  }

  private async closeNow(by: string): Promise<BatchRecord> {
    assert(this.state === 'ready', 'the engine is not ready');
    const closedAt = Date.now();
    const old = this.router.batch;
    const next = nextBatchId(old, closedAt);
    const closing: Closing = { batch: old, openedAt: this.openedAt, closedAt };
    await this.router.cut(next, async () => {
      await this.store.beginCut(closing, { id: next, openedAt: closedAt });
      this.view.open(next);
      this.openedAt = closedAt;
    });
    // A worker that died during the cut-off may have committed more of the old batch than it reported.
    await this.router.resynced();
    const record = await this.finishClose(closing, this.view.take(old));
    this.counters.cutoffs.add(by === 'schedule' ? 'schedule' : 'operator');
    this.log.info({ batch: old, next, by, count: record.count, gross: record.gross, debits: record.debits }, 'batch closed');
    return record;
  }

  /**
   * A task of `shard` failed: its worker may have died after committing.
   * Read what the shard's disk holds (a replaced worker reopens it) and
   * make the live view and the pending instructions agree with it.
   */
  async resyncShard(shard: number): Promise<void> {
    // The open batch first: a worker that starts afresh opens its ledger on it.
    const batches = [this.view.batch, ...this.view.batches().filter((b) => b !== this.view.batch)];
    // Keys the dead worker committed were added to the filter when they were routed: no filter is rebuilt here.
    const o = await this.pools.open({ kind: 'open', shard, batches, verify: false, filterBits: 0 });
    this.readers.refresh(shard);
    for (const summary of o.summaries) this.view.replaceShard(shard, summary);
    this.view.replacePending(shard, o.pending);
    this.lifecycle.resyncShard(shard, o.pending);
    this.counters.resyncs.add(String(shard));
    this.log.warn({ shard, batches, pending: o.pending.length }, 'shard resynchronised from disk after a failed task');
  }

  private async finishClose(closing: Closing, state: BatchState): Promise<BatchRecord> {
    const record = batchRecord(state, this.banks, closing.openedAt, closing.closedAt);
    await this.store.finishCut(record);
    this.lastClosed = record;
    return record;
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

  /** Record that the central-bank transfers of a closed batch were made (资金划拨). */
  async markSettled(batch: string, by: string): Promise<BatchRecord | 'open' | undefined> {
    if (batch === this.router.batch) return 'open';
    const record = this.store.batch(batch);
    if (record === undefined) return undefined;
    if (record.settled) return record;
    const settled: BatchRecord = { ...record, settled: true, settledAt: Date.now(), settledBy: by };
    await this.store.putBatch(settled);
    this.log.info({ batch, by }, 'batch marked settled');
    return settled;
  }

  /** The open batch as a provisional report. */
  openBatchRecord(): BatchRecord {
    const state = this.view.state(this.router.batch);
    assert(state !== undefined, 'no state for the open batch');
    return batchRecord(state, this.banks, this.openedAt, Date.now());
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
    this.snapshots.stop();
    this.lifecycle.stop();
    const drained = await Promise.race([
      this.router.idle().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainMs).unref()),
    ]);
    if (!drained) this.log.warn({ inflight: this.router.inflightCount }, 'stopping with operations still in flight; they were not acknowledged');
    await this.closingChain;
    await this.snapshots.idle();
    await this.pools.close();
    await this.readers.close();
    await this.store.close();
    this.state = 'stopped';
    this.log.info('engine stopped');
  }
}
