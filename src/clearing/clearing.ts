/**
 * The clearing core: every decision the engine makes, assembled over its
 * ports and nothing else. Admission (validation, duplicate rules, debit
 * caps, batch assignment) is the router's; the lifecycle of two-phase
 * instructions is the lifecycle's; this module adds recovery at start,
 * cut-offs, and resynchronising a shard after a failed task, and holds the
 * live view and the snapshots.
 *
 * It imports no transport, no thread pool and no database: the engine
 * (src/engine/engine.ts) wires Node's timers, Piscina and LMDB to it, and
 * the simulator (test/sim/) wires its own controllable ports to the same
 * code. Time comes from the clock port only.
 */

import { assert } from '../core/assert.js';
import { EngineCounters } from '../core/counters.js';
import { IdFilter } from '../core/id-filter.js';
import type { ValidationRules } from '../core/instruction.js';
import type { Logger } from '../core/log.js';
import type { BatchRecord, BatchStore, Closing, Clock, InstructionLookup, MandateStore, ShardTransport } from '../core/ports.js';
import { MandateBook, type MandatePushes } from '../mandates/mandate-book.js';
import type { MandateTerms } from '../mandates/mandate.js';
import { ShardMap } from '../core/shard-map.js';
import { Lifecycle, type LifecyclePushes } from '../lifecycle/lifecycle.js';
import { DebitCaps } from '../router/debit-caps.js';
import { ShardRouter, type RouterDeps } from '../router/shard-router.js';
import { nextBatchId } from '../settlement/batch-id.js';
import { batchRecord } from '../settlement/settlement-report.js';
import type { ApplyResult, ApplyTask, OpenResult } from '../shard/tasks.js';
import { SnapshotTaker, type Snapshot } from '../snapshots/snapshots.js';
import { LiveView, type BatchState } from '../view/live-view.js';

export interface ClearingConfig {
  banks: readonly { code: string; debitCapCents?: number }[];
  shards: number;
  maxAmountCents: number;
  receiptQueryScheduleMs: readonly number[];
  snapshotRetention: number;
  verifyOnStart: boolean;
  idFilterBits: number;
  limits: RouterDeps['limits'];
  /** Every `agreement` and `entrusted` instruction needs a mandate. */
  requireMandates: boolean;
  /** Mandates made active at start when not yet stored (the demo configuration's). */
  mandates: readonly MandateTerms[];
}

export interface ClearingPorts {
  clock: Clock;
  transport: ShardTransport;
  lookup: InstructionLookup;
  store: BatchStore;
  log: Logger;
  /** Where forwards, queries and notifications go. */
  pushes: LifecyclePushes;
  /** Where mandates are kept. */
  mandateStore: MandateStore;
  /** Where mandate forwards and notifications go. */
  mandatePushes: MandatePushes;
  /** Called with every stored snapshot, to push it to subscribers. */
  onSnapshot: (s: Snapshot) => void;
  /** Metrics hooks; optional so the simulator needs none. */
  onTaskTimed?: RouterDeps['onTaskTimed'];
  /**
   * Closed batches not yet marked settled, as the store holds them: read
   * once at start (it may read every closed batch), after which the core
   * keeps the count itself. Absent, the count starts at 0.
   */
  countUnsettledBatches?: () => number;
}

export class Clearing {
  readonly router: ShardRouter;
  readonly lifecycle: Lifecycle;
  readonly caps: DebitCaps;
  readonly snapshots: SnapshotTaker;
  readonly counters = new EngineCounters();
  readonly banks: readonly string[];
  private openedAt: number;
  private closingChain: Promise<unknown> = Promise.resolve();
  /** A cut-off whose report could not be stored: finished before any other cut-off. */
  private unfinished: { closing: Closing; state: BatchState } | undefined;
  /** The most recently closed batch, for the settlement metrics. */
  lastClosed: BatchRecord | undefined;
  /** Closed batches not marked settled: kept here as batches close and settle, so reading it never scans the store. */
  private unsettled: number;
  /** Settlements being recorded, by batch: a second request for the same batch waits for the first, so it counts once. */
  private readonly settling = new Map<string, Promise<BatchRecord | 'open' | undefined>>();

  private constructor(
    readonly config: ClearingConfig,
    private readonly ports: ClearingPorts,
    readonly view: LiveView,
    readonly mandates: MandateBook,
    idFilter: IdFilter,
    openBatch: string,
    openedAt: number,
  ) {
    this.banks = config.banks.map((b) => b.code);
    this.openedAt = openedAt;
    const bankSet = new Set(this.banks);
    const shardMap = new ShardMap(this.banks, config.shards);
    this.caps = new DebitCaps(config.banks, view);
    const rules: ValidationRules = { isBank: (code) => bankSet.has(code), amountCentsMax: config.maxAmountCents, twoPhaseEnabled: true };
    this.router = new ShardRouter({
      rules,
      shardMap,
      lookup: ports.lookup,
      idFilter,
      transport: ports.transport,
      clock: ports.clock,
      caps: this.caps,
      mandates,
      batch: openBatch,
      onCommitted: (task, result) => this.onCommitted(task, result),
      onRecovered: (op, record) => this.lifecycle.onRecovered(op, record),
      limits: config.limits,
      log: ports.log,
      counters: this.counters,
      onTaskTimed: ports.onTaskTimed,
      resync: (shard) => this.resyncShard(shard),
    });
    this.lifecycle = new Lifecycle(this.router, ports.lookup, ports.clock, shardMap, view, ports.log, config.receiptQueryScheduleMs, ports.pushes, this.counters);
    this.snapshots = new SnapshotTaker({ view, store: ports.store, clock: ports.clock, log: ports.log, retention: config.snapshotRetention, onSnapshot: ports.onSnapshot }, ports.store.lastSnapshotSeq());
    this.lastClosed = ports.store.lastClosed();
    // Counted before an interrupted cut-off is finished (its report is not stored yet): finishClose counts that one.
    this.unsettled = ports.countUnsettledBatches?.() ?? 0;
  }

  /**
   * Recover from what the store and the shards hold: open every shard (it
   * reports its batch figures, its pending instructions and its keys),
   * rebuild the live view, the id filter and the timers, and finish a
   * cut-off that a stop interrupted.
   */
  static async start(config: ClearingConfig, ports: ClearingPorts): Promise<Clearing> {
    const { store, clock, log } = ports;
    let open = store.openBatch();
    if (open === undefined) {
      open = { id: nextBatchId(undefined, clock.now()), openedAt: clock.now() };
      await store.setOpenBatch(open);
      log.info({ batch: open.id }, 'opened the first settlement batch');
    }
    const closing = store.closing();
    const batches = closing === undefined ? [open.id] : [open.id, closing.batch];
    const opened: OpenResult[] = await Promise.all(
      Array.from({ length: config.shards }, (_, shard) =>
        ports.transport.open({ kind: 'open', shard, batches, verify: config.verifyOnStart, filterBits: config.idFilterBits }),
      ),
    );
    for (const o of opened) {
      if (o.verify === null) continue;
      if (!o.verify.matches) throw new Error(`shard ${o.shard} failed verification: ${o.verify.mismatches.join(', ')}`);
      log.info({ shard: o.shard, instructions: o.verify.instructions, cleared: o.verify.cleared }, 'shard verified against its instruction log');
    }
    const idFilter = new IdFilter(config.idFilterBits);
    for (const o of opened) if (o.filter !== null) idFilter.merge(o.filter);
    const view = new LiveView(config.banks.map((b) => b.code), open.id);
    for (const o of opened) {
      for (const s of o.summaries) view.apply(s, o.shard);
      for (const p of o.pending) view.addPending(o.shard, p.payer, BigInt(p.amount));
    }
    view.overview(); // asserts conservation of the recovered state
    const mandates = await MandateBook.open(
      { isBank: (code) => config.banks.some((b) => b.code === code), amountCentsMax: config.maxAmountCents, requireMandates: config.requireMandates, seeds: config.mandates },
      ports.mandateStore,
      clock,
      log,
      ports.mandatePushes,
    );
    const clearing = new Clearing(config, ports, view, mandates, idFilter, open.id, open.openedAt);
    clearing.lifecycle.load(opened.flatMap((o) => o.pending));
    if (closing !== undefined) {
      // A cut-off was interrupted after the next batch became durable: finish it from what the shards hold.
      await clearing.finishClose(closing, view.take(closing.batch));
      log.warn({ batch: closing.batch }, 'finished a cut-off that a stop had interrupted');
    }
    return clearing;
  }

  get openBatchId(): string {
    return this.router.batch;
  }

  get openBatchOpenedAt(): number {
    return this.openedAt;
  }

  private onCommitted(task: ApplyTask, result: ApplyResult): void {
    this.view.apply(result.delta, task.shard);
    this.lifecycle.onCommitted(task, result);
  }

  /**
   * Cut off the open batch (清算场次), open the next, and answer the closed
   * batch's settlement report once every instruction routed before the cut
   * has been answered. Cut-offs are serialised, and a cut-off whose report
   * could not be stored is finished before the next one starts.
   */
  closeBatch(by: string): Promise<BatchRecord> {
    const run = this.closingChain.then(() => this.closeNow(by));
    this.closingChain = run.catch(() => undefined);
    return run;
  }

  private async closeNow(by: string): Promise<BatchRecord> {
    if (this.unfinished !== undefined) {
      await this.finishClose(this.unfinished.closing, this.unfinished.state);
      this.ports.log.warn({ batch: this.unfinished.closing.batch }, 'finished a cut-off whose report could not be stored before');
      this.unfinished = undefined;
    }
    const closedAt = this.ports.clock.now();
    const old = this.router.batch;
    const next = nextBatchId(old, closedAt);
    const closing: Closing = { batch: old, openedAt: this.openedAt, closedAt };
    await this.router.cut(next, async () => {
      await this.ports.store.beginCut(closing, { id: next, openedAt: closedAt });
      this.view.open(next);
      this.openedAt = closedAt;
    });
    // Every operation of the old batch is answered, a failed shard's after its resynchronisation: the view holds it whole.
    this.unfinished = { closing, state: this.view.take(old) };
    const record = await this.finishClose(closing, this.unfinished.state);
    this.unfinished = undefined;
    this.counters.cutoffs.add(by === 'schedule' ? 'schedule' : 'operator');
    this.ports.log.info({ batch: old, next, by, count: record.count, gross: record.gross, debits: record.debits }, 'batch closed');
    return record;
  }

  private async finishClose(closing: Closing, state: BatchState): Promise<BatchRecord> {
    const record = batchRecord(state, this.banks, closing.openedAt, closing.closedAt);
    await this.ports.store.finishCut(record);
    this.lastClosed = record;
    this.unsettled++;
    return record;
  }

  /** Closed batches not yet marked settled. */
  get unsettledBatches(): number {
    return this.unsettled;
  }

  /** The closed batch whose report is not stored yet, if a cut-off's last write failed. */
  get unfinishedBatch(): string | undefined {
    return this.unfinished?.closing.batch;
  }

  /**
   * A task of `shard` failed: its worker may have died after committing.
   * Read what the shard's disk holds (a replaced worker reopens it) and
   * make the live view, the pending debits and the timers agree with it.
   * The router answers the failed task's operations right after this.
   */
  private async resyncShard(shard: number): Promise<void> {
    // The open batch first: a worker that starts afresh opens its ledger on it.
    const batches = [this.view.batch, ...this.view.batches().filter((b) => b !== this.view.batch)];
    // Keys the dead worker committed were added to the filter when they were routed: no filter is rebuilt here.
    const o = await this.ports.transport.open({ kind: 'open', shard, batches, verify: false, filterBits: 0 });
    this.ports.lookup.refresh(shard);
    // A batch closed while the shard was read has had all of its operations answered: only batches still held are replaced.
    for (const summary of o.summaries) if (this.view.state(summary.batch) !== undefined) this.view.replaceShard(shard, summary);
    this.view.replacePending(shard, o.pending);
    this.lifecycle.resyncShard(shard, o.pending);
    this.counters.resyncs.add(String(shard));
    this.ports.log.warn({ shard, batches, pending: o.pending.length }, 'shard resynchronised from disk after a failed task');
  }

  /** Record that the central-bank transfers of a closed batch were made (资金划拨). */
  markSettled(batch: string, by: string): Promise<BatchRecord | 'open' | undefined> {
    const running = this.settling.get(batch);
    if (running !== undefined) return running;
    const run = this.settleNow(batch, by).finally(() => this.settling.delete(batch));
    this.settling.set(batch, run);
    return run;
  }

  private async settleNow(batch: string, by: string): Promise<BatchRecord | 'open' | undefined> {
    if (batch === this.router.batch || batch === this.unfinished?.closing.batch) return 'open';
    const record = this.ports.store.batch(batch);
    if (record === undefined) return undefined;
    if (record.settled) return record;
    const settled: BatchRecord = { ...record, settled: true, settledAt: this.ports.clock.now(), settledBy: by };
    await this.ports.store.putBatch(settled);
    this.unsettled--;
    this.ports.log.info({ batch, by }, 'batch marked settled');
    return settled;
  }

  /** The open batch as a provisional report. */
  openBatchRecord(): BatchRecord {
    const state = this.view.state(this.router.batch);
    assert(state !== undefined, 'no state for the open batch');
    return batchRecord(state, this.banks, this.openedAt, this.ports.clock.now());
  }

  /** Stop timers; what is in flight is left to the caller to drain. */
  stop(): void {
    this.snapshots.stop();
    this.lifecycle.stop();
  }

  /** Resolves once every cut-off asked for so far has ended. */
  async cutoffsDone(): Promise<void> {
    await this.closingChain;
  }
}
