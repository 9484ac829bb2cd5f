/**
 * The engine assembled: wiring only. It opens the LMDB store and the shard
 * readers, starts the Piscina shard workers, and hands them, with Node's
 * clock, to the clearing core (src/clearing/), where every decision lives.
 * The gateway sits in front of it and calls the facade methods below, never
 * the core's components; the metrics read it through their MetricsSource
 * interface (src/metrics/metrics-source.ts), which this class satisfies.
 */

import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { EngineConfig } from '../config/config.js';
import { Clearing } from '../clearing/clearing.js';
import type { EngineCounters } from '../core/counters.js';
import type { Failure } from '../core/failures.js';
import type { Located, ShardTransport } from '../core/ports.js';
import type { ForwardItem, Notification, QueryPush, ReceiptResult } from '../lifecycle/lifecycle.js';
import type { MandateNotification, MandateReceiptResult, MandateStatus, MandateView } from '../mandates/mandate.js';
import type { Step } from '../core/stored-instruction.js';
import type { MandateActor, MandateFilter } from '../mandates/mandate-book.js';
import { EngineMetrics } from '../metrics/metrics.js';
import type { ShardLoad } from '../metrics/metrics-source.js';
import type { InstructionResult } from '../protocol/messages.js';
import { BatchSchedule } from '../settlement/batch-schedule.js';
import { BatchIdExhausted } from '../settlement/batch-id.js';
import { ShardPools } from '../shard/shard-pools.js';
import type { BucketInstruction, InstitutionTotals, VerifyReport, WorkerStats } from '../shard/tasks.js';
import type { Snapshot } from '../snapshots/snapshots.js';
import { EngineStore, type BatchRecord, type OperatorAction, type StoreReplicator } from '../store/engine-store.js';
import { ShardReaders, type BucketSums } from '../store/shard-readers.js';
import type { BankDetail, PositionsOverview } from '../view/live-view.js';
import { nodeClock } from './clock.js';
import { DataLock } from './data-lock.js';
import type { Logger } from './log.js';

export interface AuditReport {
  batch: string;
  ok: boolean;
  instructions: number;
  cleared: number;
  shards: VerifyReport[];
}

/** A bank's position with its bilateral positions, as of the view's `seq`. */
export interface BankPositionDetail extends BankDetail {
  batch: string;
  seq: number;
}

export interface EngineEvents {
  snapshot: [Snapshot];
  forward: [string, ForwardItem[]];
  /** Mandates awaiting a payer bank's answer (网关签约), pushed as `{ op: "forward", mandates }`. */
  'forward-mandates': [string, MandateView[]];
  query: [QueryPush];
  notify: [Notification | MandateNotification];
}

export type { MandateActor, MandateFilter };

/** Cluster mode: how the leader's engine writes through the replicated log. */
export interface EngineReplication {
  /** The node's name, for `GET /readyz`. */
  node: string;
  /** Whether the node still holds the lease (checked before a request is taken). */
  holds: () => boolean;
  /** The data folder's lock, held by the node across its roles. */
  dataLock: DataLock;
  /** The shard transport that appends each task to the log before applying it. */
  transport(inner: ShardPools): ShardTransport;
  /** How each write of the engine's store goes through the log. */
  replicator: StoreReplicator;
}

export interface EngineOptions {
  replication?: EngineReplication;
}

export class Engine extends EventEmitter<EngineEvents> {
  /** Cluster mode: this node's name while it leads. */
  clusterNode: string | undefined;
  private state: 'starting' | 'ready' | 'stopping' | 'stopped' = 'starting';
  private schedule: BatchSchedule | undefined;
  /** Connections subscribed to each institution's notifications, kept by the gateway. */
  readonly notificationListeners = new Map<string, number>();
  readonly metrics: EngineMetrics;
  readonly startedAt = Date.now();

  private constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
    private readonly store: EngineStore,
    private readonly pools: ShardPools,
    private readonly readers: ShardReaders,
    private readonly clearing: Clearing,
    /** Released at stop; in cluster mode the node holds it for its whole life instead. */
    private readonly dataLock: DataLock | undefined,
  ) {
    super();
    this.metrics = new EngineMetrics(this, (metric, err) => log.error({ err, metric }, 'a metric could not be collected; it has no value until it can'));
  }

  static async start(config: EngineConfig, log: Logger, options: EngineOptions = {}): Promise<Engine> {
    const started = Date.now();
    mkdirSync(config.dataDir, { recursive: true });
    // Before LMDB opens anything: a second engine on this folder stops here, naming the first (src/engine/data-lock.ts).
    const dataLock = options.replication?.dataLock ?? (await DataLock.acquire(config.dataDir));
    const releaseLock = (): void => {
      if (options.replication === undefined) dataLock.release();
    };
    let store: EngineStore | undefined;
    try {
      store = new EngineStore(config.dataDir);
      await store.checkLayout(config.shards);
      if (options.replication !== undefined) store.replicator = options.replication.replicator;
    } catch (err) {
      await store?.close();
      releaseLock();
      throw err;
    }
    const pools = ShardPools.fromConfig(config, (err) => log.error({ err }, 'a shard worker failed outside any task; it is replaced'));
    const transport: ShardTransport = options.replication?.transport(pools) ?? pools;
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
          requireMandates: config.requireMandates,
          mandates: config.mandates,
        },
        {
          clock: nodeClock,
          transport,
          lookup: readers,
          store,
          log,
          pushes: {
            forward: (bank, items) => engine?.emit('forward', bank, items),
            query: (q) => engine?.emit('query', q),
            notify: (n) => engine?.emit('notify', n),
            listening: (institution) => (engine?.notificationListeners.get(institution) ?? 0) > 0,
          },
          mandateStore: store,
          mandatePushes: {
            forwardMandates: (bank, views) => engine?.emit('forward-mandates', bank, views),
            notify: (n) => engine?.emit('notify', n),
          },
          onSnapshot: (s) => engine?.emit('snapshot', s),
          onTaskTimed: (task, result, ms) => engine?.metrics.observeTask(task, result, ms),
          countUnsettledBatches: () => store.closedBatches().filter((b) => !b.settled).length,
        },
      );
    } catch (err) {
      await pools.close();
      await readers.close();
      await store.close();
      releaseLock();
      throw err;
    }
    engine = new Engine(config, log, store, pools, readers, clearing, options.replication === undefined ? dataLock : undefined);
    engine.clusterNode = options.replication?.node;
    engine.leaseHeld = options.replication?.holds;
    engine.state = 'ready';
    clearing.snapshots.start(config.snapshotIntervalMs);
    if (config.batchSchedule !== undefined) {
      engine.schedule = new BatchSchedule(config.batchSchedule, nodeClock, () => {
        engine!.closeBatch('schedule').catch((err: unknown) => {
          // A schedule shorter than a day over 999 runs out of the day's batch ids: the open batch goes on until the next day.
          if (err instanceof BatchIdExhausted) log.warn({ batch: engine!.openBatchId }, `scheduled cut-off skipped: ${err.message}`);
          else log.error({ err }, 'scheduled cut-off failed');
        });
      });
    }
    log.info({ shards: config.shards, workers: config.workers, batch: clearing.openBatchId, recoveryMs: Date.now() - started }, 'engine ready');
    return engine;
  }

  /**
   * Whether the engine takes requests. In cluster mode also whether the
   * node still holds its lease: a leader resumed after a pause answers
   * NOT_READY from its stale state until it learns it was replaced.
   */
  get ready(): boolean {
    return this.state === 'ready' && (this.leaseHeld?.() ?? true);
  }

  /** Cluster mode: whether this node still holds the lease. */
  private leaseHeld: (() => boolean) | undefined;

  /** Plain counters: the core and the gateway bump them, the metrics read them. */
  get counters(): EngineCounters {
    return this.clearing.counters;
  }

  get banks(): readonly string[] {
    return this.clearing.banks;
  }

  get lastClosed(): BatchRecord | undefined {
    return this.clearing.lastClosed;
  }

  /** Closed batches not yet marked settled: a count the core keeps, so a scrape never reads the stored batches. */
  get unsettledBatches(): number {
    return this.clearing.unsettledBatches;
  }

  get openBatchId(): string {
    return this.clearing.openBatchId;
  }

  get openBatchOpenedAt(): number {
    return this.clearing.openBatchOpenedAt;
  }

  /** Σ of the banks' nets in the open batch, without asserting conservation: for the gauge that alerts on it. */
  conservationImbalance(): bigint {
    return this.clearing.view.conservationImbalance();
  }

  /** Positions and totals of the open batch, conservation asserted. */
  positions(): PositionsOverview {
    return this.clearing.view.overview();
  }

  /** One bank's position in the open batch, with its bilateral positions. */
  bankDetail(code: string): BankPositionDetail {
    const view = this.clearing.view;
    return { batch: view.batch, seq: view.seq, ...view.bank(code) };
  }

  /** Σ of a payer bank's pending two-phase reservations. */
  pendingDebit(bank: string): bigint {
    return this.clearing.view.pendingDebit(bank);
  }

  /** Two-phase instructions waiting for their receipt. */
  pendingInstructions(): number {
    return this.clearing.lifecycle.pendingCount;
  }

  /** Cluster mode: record in the engine's store the sequence every log entry up to is committed here. */
  recordLogCommittedThrough(seq: number): Promise<void> {
    return this.store.setLogCommittedThrough(seq);
  }

  /** Two-phase instructions not final, by step. */
  twoPhaseAtStep(step: Step): number {
    return this.clearing.lifecycle.countAtStep(step);
  }

  /** Mandates by status. */
  mandatesWithStatus(status: MandateStatus): number {
    return this.clearing.mandates.countBy(status);
  }

  timerEvents(): number {
    return this.clearing.lifecycle.timerEvents;
  }

  /** Pending instructions whose deadline is before `before` (ms since the epoch). */
  overdueInstructions(before: number): number {
    return this.clearing.lifecycle.overdueCount(before);
  }

  /**
   * The instructions a payer bank has not answered yet, for a bank that
   * (re)subscribes to forwards: read lazily from the pending instructions
   * as the caller pulls, never copied whole.
   */
  pendingForwards(bank: string): Iterator<ForwardItem> {
    return this.clearing.lifecycle.pendingForwards(bank);
  }

  shardLoad(shard: number): ShardLoad {
    const router = this.clearing.router;
    return { inflight: router.inflightByShard()[shard] ?? 0, queued: router.queuedCount(shard), tasksAtWorker: router.tasksAt(shard) };
  }

  /** Closed batches, oldest first. */
  closedBatches(): BatchRecord[] {
    return this.store.closedBatches();
  }

  /**
   * One page of the batches, oldest first, the open batch last when the
   * page reaches it: at most `limit` after `cursor.after` ('' for the
   * first), the newest `limit` before `cursor.before`, or the newest
   * `limit` of all. `earlier` and `later` say whether batches lie before
   * and after the page. Range reads: a page costs its own records, however
   * long the history.
   */
  batchPage(cursor: { after?: string; before?: string }, limit: number): { records: BatchRecord[]; earlier: boolean; later: boolean } {
    const open = this.openBatchRecord();
    if (cursor.after !== undefined) {
      const after = cursor.after;
      const list = this.store.closedAfter(after, limit + 1);
      if (open.batch > after) list.push(open);
      const records = list.slice(0, limit);
      // Ids are printable, so '\u0000' sorts right after `after`: is anything at or before it?
      const earlier = after !== '' && this.store.closedBefore(`${after}\u0000`, 1).length > 0;
      return { records, earlier, later: list.length > limit };
    }
    const before = cursor.before;
    const newestFirst: BatchRecord[] = before === undefined || open.batch < before ? [open] : [];
    newestFirst.push(...this.store.closedBefore(before, limit + 1 - newestFirst.length));
    const records = newestFirst.slice(0, limit).reverse();
    const later = before !== undefined && (open.batch >= before || this.store.batch(before) !== undefined || this.store.closedAfter(before, 1).length > 0);
    return { records, earlier: newestFirst.length > limit, later };
  }

  /** A closed batch's record; the open batch is `openBatchRecord()`. */
  batch(id: string): BatchRecord | undefined {
    return this.store.batch(id);
  }

  /** Whether `batch` is the open one, one being closed, or a closed one. */
  hasBatch(batch: string): boolean {
    return this.clearing.view.state(batch) !== undefined || this.store.batch(batch) !== undefined;
  }

  /**
   * An institution's live figures in a batch the view holds (the open one,
   * or one being closed), zeros if it has none there; undefined for any
   * other batch, whose figures are in its record.
   */
  liveTotals(batch: string, institution: string): InstitutionTotals | undefined {
    const state = this.clearing.view.state(batch);
    if (state === undefined) return undefined;
    return state.institutions.get(institution) ?? { institution, count: 0, amount: 0n, digest: 0n };
  }

  latestSnapshot(): Snapshot | undefined {
    return this.clearing.snapshots.latest;
  }

  /** Take a snapshot now, out of the schedule: for a request that finds none taken since start. */
  takeSnapshot(): Promise<Snapshot> {
    return this.clearing.snapshots.take();
  }

  /** A stored snapshot, if it is within the retention. */
  snapshot(seq: number): Snapshot | undefined {
    return this.clearing.snapshots.get(seq);
  }

  get lastSnapshotDurationMs(): number {
    return this.clearing.snapshots.lastDurationMs;
  }

  /** The latest `limit` entries of the audit trail, oldest first. */
  operatorActions(limit: number): OperatorAction[] {
    return this.store.operatorActions(limit);
  }

  /** The newest `limit` entries of the audit trail with `seq` below `before`, oldest first, and whether older ones exist: one range read. */
  operatorActionsBefore(before: number, limit: number): { actions: OperatorAction[]; earlier: boolean } {
    const newestFirst = this.store.actionsBefore(before, limit + 1);
    return { actions: newestFirst.slice(0, limit).reverse(), earlier: newestFirst.length > limit };
  }

  workerStats(worker: number): Promise<WorkerStats> {
    return this.pools.stats(worker);
  }

  /** Test-only (faultInjection): make worker `w` exit at once; the pool replaces it. */
  crashWorker(worker: number): Promise<unknown> {
    return this.pools.crash(worker);
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

  /**
   * Sign a mandate: an institution through the bank's gateway (pending
   * until the payer bank answers), or a bank offline (active at once).
   * Answers once the mandate is durable.
   */
  signMandate(actor: MandateActor, raw: unknown): Promise<{ mandate: MandateView; duplicate: boolean } | Failure> {
    return this.clearing.mandates.sign(actor, raw);
  }

  /** Revoke a mandate (机构解约, 银行解约), idempotent; answers once the revocation is durable. */
  revokeMandate(actor: MandateActor, institution: string, id: string): Promise<MandateView | Failure> {
    return this.clearing.mandates.revoke(actor, institution, id);
  }

  /** A mandate, unscoped: the gateway applies the role's scope. */
  mandate(institution: string, id: string): MandateView | undefined {
    return this.clearing.mandates.view(institution, id);
  }

  /** One page of mandates in (institution, id) order after the cursor `after`, and the cursor of the next page. */
  mandatePage(filter: MandateFilter, after: string | undefined, limit: number): { mandates: MandateView[]; next: string | null } {
    return this.clearing.mandates.page(filter, after, limit);
  }

  /** A payer bank's answers to gateway signings. */
  mandateReceipts(bank: string, raws: readonly unknown[], onDone: (results: MandateReceiptResult[]) => void): void {
    this.clearing.mandates.receipts(bank, raws, onDone);
  }

  /** Mandates awaiting a bank's answer, for a bank that (re)subscribes to forwards. */
  pendingMandateForwards(bank: string): MandateView[] {
    return this.clearing.mandates.pendingFor(bank);
  }

  /** The payment submission (支付提交) of an authenticated payment, with the payer's verification. */
  submitVerification(institution: string, id: string, verification: unknown, onDone: (result: ReceiptResult) => void): void {
    this.clearing.lifecycle.submitVerification(institution, id, verification, onDone);
  }

  /** A stored instruction, wherever its shard. */
  find(institution: string, id: string): Located | undefined {
    return this.readers.find(institution, id);
  }

  buckets(batch: string, institution: string): BucketSums[] {
    return this.readers.buckets(batch, institution);
  }

  /** The instructions behind one digest bucket, over every shard, by id; each shard reads them in its worker (ShardLedger.bucketEntries). */
  async bucketEntries(batch: string, institution: string, bucket: number): Promise<BucketInstruction[]> {
    const shards = await Promise.all(Array.from({ length: this.config.shards }, (_, s) => this.pools.bucketEntries(s, batch, institution, bucket)));
    return shards.flat().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
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

  /**
   * Recompute every shard's flows and digests from its instruction log and
   * compare (laws 2 and 6). It does not wait for the stream to pause: each
   * shard's check runs in its worker over one read snapshot of its
   * environment, so it is consistent while tasks keep coming, and in chunks
   * between which the shard's tasks go on (ShardLedger.verifyPaced).
   */
  async audit(): Promise<AuditReport> {
    const batch = this.clearing.router.batch;
    const shards = await Promise.all(Array.from({ length: this.config.shards }, (_, s) => this.pools.verify(s, batch)));
    let instructions = 0;
    let cleared = 0;
    for (const s of shards) {
      instructions += s.instructions;
      cleared += s.cleared;
    }
    this.clearing.view.overview(); // conservation of the live view
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
      this.clearing.router.idle().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainMs).unref()),
    ]);
    if (!drained) this.log.warn({ inflight: this.clearing.router.inflightCount }, 'stopping with operations still in flight; they were not acknowledged');
    this.clearing.router.stop();
    await this.clearing.cutoffsDone();
    await this.clearing.snapshots.idle();
    await this.pools.close();
    await this.readers.close();
    await this.store.close();
    this.dataLock?.release();
    this.state = 'stopped';
    this.log.info('engine stopped');
  }
}
