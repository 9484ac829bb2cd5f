/**
 * Prometheus metrics (`GET /metrics`), with prom-client.
 *
 * The per-instruction path only bumps plain numbers (EngineCounters); they
 * and every state gauge (positions, queues, pending, snapshots) are read at
 * scrape time through `collect()`. Histograms are observed once per task,
 * frame or request, never per instruction. Worker threads report their own
 * event-loop lag through a task answered at scrape time.
 *
 * The engine is read through MetricsSource only. No metric can fail a
 * scrape: a collect that throws (a ledger law found broken, say) leaves its
 * metric without a value — NaN, or no series for a labelled one — counts
 * in `netting_metrics_collect_failures_total`, and every other metric is
 * still exported. The conservation gauge itself never asserts, so it can
 * show the imbalance that makes the position gauges fail.
 *
 * Every label value known at start (instruction types and outcomes, result
 * codes, cut-off triggers, shards, transports, metric names) is exported
 * from the first scrape, at 0, so a dashboard shows 0 rather than no data
 * on a fresh engine, and `increase()` sees the first event. No collect
 * reads the batch history: a scrape costs the same after a year of batches.
 *
 * Names follow Prometheus conventions: base units (`_seconds`, `_bytes`),
 * `_total` for counters; money is in cents (`_cents`), since a currency has
 * no base unit in Prometheus. Gauges of money are float64 in Prometheus and
 * so exact only up to 2^53 cents; the API is the exact source.
 */

import { STEPS } from '../core/stored-instruction.js';
import { MANDATE_STATUSES } from '../mandates/mandate.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type CounterConfiguration, type GaugeConfiguration } from 'prom-client';
import { INSTRUCTION_TYPES } from '../core/instruction.js';
import { ERROR_CATALOG } from '../protocol/errors.js';
import type { ApplyResult, ApplyTask, WorkerStats } from '../shard/tasks.js';
import type { MetricsSource } from './metrics-source.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const SIZE_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384];
const WORKER_STATS_TIMEOUT_MS = 1000;

export type Transport = 'http' | 'ws';
const TRANSPORTS: readonly Transport[] = ['http', 'ws'];
/** The outcomes `netting_instructions_total` counts (EngineCounters.instructions). */
const INSTRUCTION_OUTCOMES = ['cleared', 'pending', 'duplicate', 'declined', 'expired', 'reversed'] as const;
/** The triggers `netting_batch_cutoffs_total` counts (EngineCounters.cutoffs). */
const CUTOFF_TRIGGERS = ['operator', 'schedule'] as const;

/** Told about a metric whose collect threw, once each time it starts failing. */
export type CollectFailureHandler = (metric: string, err: unknown) => void;

type Collect<M> = (this: M) => void | Promise<void>;

export class EngineMetrics {
  readonly registry = new Registry();
  readonly ackLatency: Histogram<'transport'>;
  private readonly taskRoundTrip: Histogram<'shard'>;
  private readonly shardApply: Histogram<'shard'>;
  private readonly lmdbCommit: Histogram<'shard'>;
  private readonly txnOps: Histogram<'shard'>;
  private readonly mainLoop = monitorEventLoopDelay({ resolution: 10 });
  private workerStats: WorkerStats[] = [];
  /** One round of worker stats per scrape, shared by every gauge that needs it. */
  private statsRound: Promise<void> | undefined;
  private readonly collectFailures: Counter<'metric'>;
  /** Metrics whose last collect threw: a failure is reported when it starts, not on every scrape. */
  private readonly failing = new Set<string>();
  /** Every metric with a guarded collect, so its failure count is exported from 0. */
  private readonly guarded: string[] = [];

  constructor(
    private readonly source: MetricsSource,
    private readonly onCollectFailure: CollectFailureHandler = () => undefined,
  ) {
    const r = this.registry;
    collectDefaultMetrics({ register: r });
    // These defaults are gauges named like counters (promtool refuses them); the same values stand without `_total`.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(name);
    this.mainLoop.enable();
    const { counters, config } = source;
    const shards = Array.from({ length: config.shards }, (_, s) => String(s));

    this.ackLatency = new Histogram({
      name: 'netting_ack_latency_seconds',
      help: 'From a submission frame or request arriving to its answer being written, after the commit',
      labelNames: ['transport'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.taskRoundTrip = new Histogram({
      name: 'netting_shard_task_seconds',
      help: 'Round trip of a task from the router to its shard worker and back, commit included',
      labelNames: ['shard'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.shardApply = new Histogram({
      name: 'netting_shard_apply_seconds',
      help: 'Time a shard worker spends on a task, from its start to its commit',
      labelNames: ['shard'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.lmdbCommit = new Histogram({
      name: 'netting_lmdb_commit_seconds',
      help: 'Time from a task issuing its writes to LMDB reporting them durable',
      labelNames: ['shard'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.txnOps = new Histogram({
      name: 'netting_lmdb_transaction_operations',
      help: 'Operations (instructions and lifecycle changes) per LMDB transaction',
      labelNames: ['shard'],
      buckets: SIZE_BUCKETS,
      registers: [r],
    });

    for (const transport of TRANSPORTS) this.ackLatency.zero({ transport });
    for (const shard of shards) for (const h of [this.taskRoundTrip, this.shardApply, this.lmdbCommit, this.txnOps]) h.zero({ shard });

    // Every type and outcome from 0; a key outside them (a reversal of an instruction no longer found: 'unknown') is added as it comes.
    const instructionKeys = new Map<string, { type: string; status: string }>(
      INSTRUCTION_TYPES.flatMap((type) => INSTRUCTION_OUTCOMES.map((status) => [`${type}|${status}`, { type, status }] as const)),
    );
    this.counter({
      name: 'netting_instructions_total',
      help: 'Instruction outcomes by type and status (cleared, pending, duplicate, declined, expired, reversed)',
      labelNames: ['type', 'status'],
      registers: [r],
      collect() {
        this.reset();
        for (const [key, labels] of instructionKeys) this.inc(labels, counters.instructions.get(key));
        for (const [key, n] of counters.instructions.entries()) {
          if (instructionKeys.has(key)) continue;
          const [type, status] = key.split('|') as [string, string];
          this.inc({ type, status }, n);
        }
      },
    });
    this.counter({
      name: 'netting_rejections_total',
      help: 'Items refused, by result code',
      labelNames: ['code'],
      registers: [r],
      collect() {
        this.reset();
        // Every code is exported, zeros included, so rates and alerts have a series from the start.
        for (const code of Object.keys(ERROR_CATALOG)) this.inc({ code }, counters.rejections.get(code));
      },
    });
    this.gauge({
      name: 'netting_shard_inflight_operations',
      help: 'Operations routed to a shard and not yet answered (queued in the router or at the worker)',
      labelNames: ['shard'],
      registers: [r],
      collect() {
        for (const s of shards) this.set({ shard: s }, source.shardLoad(Number(s)).inflight);
      },
    });
    this.gauge({
      name: 'netting_shard_queued_operations',
      help: 'Operations waiting in the router for a task to their shard',
      labelNames: ['shard'],
      registers: [r],
      collect() {
        for (const s of shards) this.set({ shard: s }, source.shardLoad(Number(s)).queued);
      },
    });
    this.gauge({
      name: 'netting_shard_queue_capacity_operations',
      help: 'The bound of a shard queue (limits.shardQueueMax); past it, items are OVERLOADED',
      registers: [r],
      collect() {
        this.set(config.limits.shardQueueMax);
      },
    });
    this.gauge({
      name: 'netting_shard_tasks_at_worker',
      help: 'Tasks a shard has at its worker',
      labelNames: ['shard'],
      registers: [r],
      collect() {
        for (const s of shards) this.set({ shard: s }, source.shardLoad(Number(s)).tasksAtWorker);
      },
    });

    const bankGauge = (name: string, help: string, pick: (b: { net: bigint; paid: bigint; received: bigint }) => bigint): void => {
      this.gauge<'bank'>({
        name,
        help,
        labelNames: ['bank'],
        registers: [r],
        collect() {
          for (const b of source.positions().banks) this.set({ bank: b.bank }, Number(pick(b)));
        },
      });
    };
    bankGauge('netting_position_net_cents', 'Net position of a bank in the open batch (received − paid)', (b) => b.net);
    bankGauge('netting_position_paid_cents', 'Paid by a bank in the open batch', (b) => b.paid);
    bankGauge('netting_position_received_cents', 'Received by a bank in the open batch', (b) => b.received);
    this.gauge({
      name: 'netting_pending_debit_cents',
      help: 'Pending two-phase reservations of a payer bank',
      labelNames: ['bank'],
      registers: [r],
      collect() {
        for (const b of source.banks) this.set({ bank: b }, Number(source.pendingDebit(b)));
      },
    });
    this.gauge({
      name: 'netting_gross_cents',
      help: 'Sum of the amounts netted in the open batch',
      registers: [r],
      collect() {
        this.set(Number(source.positions().totals.gross));
      },
    });
    this.gauge({
      name: 'netting_net_cents',
      help: 'Sum of the positive net positions in the open batch: what settlement moves',
      registers: [r],
      collect() {
        this.set(Number(source.positions().totals.net));
      },
    });
    this.gauge({
      name: 'netting_efficiency_ratio',
      help: 'Liquidity saved by netting in the open batch: 1 − net/gross (0 when nothing is netted)',
      registers: [r],
      collect() {
        const { gross, net } = source.positions().totals;
        // Integer arithmetic to a millionth, then one division: no float touches the sums themselves.
        this.set(gross === 0n ? 0 : Number(((gross - net) * 1_000_000n) / gross) / 1_000_000);
      },
    });
    this.gauge({
      name: 'netting_conservation_imbalance_cents',
      help: "Sum of the banks' nets in the open batch; anything but 0 breaks conservation",
      registers: [r],
      collect() {
        // Read without asserting: this gauge is how a broken conservation law is seen, and alerted on.
        this.set(Number(source.conservationImbalance()));
      },
    });
    this.counter({
      name: 'netting_law_violations_total',
      help: 'Assertions of the ledger laws that failed (each is a bug)',
      registers: [r],
      collect() {
        this.reset();
        this.inc(counters.lawViolations);
      },
    });
    this.gauge({
      name: 'netting_pending_instructions',
      help: 'Two-phase instructions not final (pending or awaiting their submission)',
      registers: [r],
      collect() {
        this.set(source.pendingInstructions());
      },
    });
    this.gauge({
      name: 'netting_two_phase_instructions',
      labelNames: ['step'],
      help: 'Two-phase instructions not final, by the step they await (verify, submission, receipt, payer, payee)',
      registers: [r],
      collect() {
        for (const step of STEPS) this.set({ step }, source.twoPhaseAtStep(step));
      },
    });
    this.gauge({
      name: 'netting_mandates',
      labelNames: ['status'],
      help: 'Mandates (委托协议) by status',
      registers: [r],
      collect() {
        for (const status of MANDATE_STATUSES) this.set({ status }, source.mandatesWithStatus(status));
      },
    });
    this.gauge({
      name: 'netting_pending_reserved_cents',
      help: 'Sum of the amounts of pending two-phase instructions',
      registers: [r],
      collect() {
        let sum = 0n;
        for (const b of source.banks) sum += source.pendingDebit(b);
        this.set(Number(sum));
      },
    });
    this.gauge({
      name: 'netting_lifecycle_timer_events',
      help: 'Query and expiry events in the timer heap, live and dead; bounded by about twice the live ones',
      registers: [r],
      collect() {
        this.set(source.timerEvents());
      },
    });
    this.gauge({
      name: 'netting_pending_overdue_instructions',
      help: 'Pending instructions past their deadline (expiry should follow within a second)',
      registers: [r],
      collect() {
        this.set(source.overdueInstructions(Date.now() - 1000));
      },
    });
    this.counter({
      name: 'netting_queries_sent_total',
      help: 'Queries (查询补偿) sent for overdue steps: to the bank the step awaits, or to the institution for a payment submission',
      registers: [r],
      collect() {
        this.reset();
        this.inc(counters.queriesSent);
      },
    });
    this.gauge({
      name: 'netting_snapshot_age_seconds',
      help: 'Time since the latest reconciliation snapshot was taken',
      registers: [r],
      collect() {
        const s = source.latestSnapshot();
        this.set(s === undefined ? (Date.now() - source.startedAt) / 1000 : (Date.now() - Date.parse(s.takenAt)) / 1000);
      },
    });
    this.gauge({
      name: 'netting_snapshot_duration_seconds',
      help: 'Time the latest snapshot took, from reading the view to its durable write',
      registers: [r],
      collect() {
        this.set(source.lastSnapshotDurationMs / 1000);
      },
    });
    this.gauge({
      name: 'netting_snapshot_seq',
      help: 'Sequence number of the latest snapshot',
      registers: [r],
      collect() {
        this.set(source.latestSnapshot()?.seq ?? 0);
      },
    });
    this.gauge({
      name: 'netting_snapshot_interval_seconds',
      help: 'The configured snapshot interval',
      registers: [r],
      collect() {
        this.set(config.snapshotIntervalMs / 1000);
      },
    });
    this.counter({
      name: 'netting_batch_cutoffs_total',
      help: 'Settlement batches closed',
      labelNames: ['trigger'],
      registers: [r],
      collect() {
        this.reset();
        for (const trigger of CUTOFF_TRIGGERS) this.inc({ trigger }, counters.cutoffs.get(trigger));
      },
    });
    this.gauge({
      name: 'netting_batch_open_age_seconds',
      help: 'Time since the open batch was opened',
      registers: [r],
      collect() {
        this.set((Date.now() - source.openBatchOpenedAt) / 1000);
      },
    });
    this.gauge({
      name: 'netting_settlement_last_debits_cents',
      help: 'Debits (= credits) of the last closed batch: what its settlement moves',
      registers: [r],
      collect() {
        this.set(Number(source.lastClosed?.debits ?? '0'));
      },
    });
    this.gauge({
      name: 'netting_settlement_last_gross_cents',
      help: 'Gross amount netted in the last closed batch',
      registers: [r],
      collect() {
        this.set(Number(source.lastClosed?.gross ?? '0'));
      },
    });
    this.gauge({
      name: 'netting_settlement_last_entries',
      help: 'Entries netted in the last closed batch',
      registers: [r],
      collect() {
        this.set(source.lastClosed?.count ?? 0);
      },
    });
    this.gauge({
      name: 'netting_settlement_unsettled_batches',
      help: 'Closed batches not yet marked settled',
      registers: [r],
      collect() {
        this.set(source.unsettledBatches);
      },
    });
    this.counter({
      name: 'netting_shard_resyncs_total',
      help: 'Shards resynchronised from disk after a failed task (a dead worker, or a failed commit)',
      labelNames: ['shard'],
      registers: [r],
      collect() {
        this.reset();
        for (const s of shards) this.inc({ shard: s }, counters.resyncs.get(s));
      },
    });
    this.gauge({
      name: 'netting_debit_cap_cents',
      help: 'Debit cap of a bank (debitCapCents); banks without a cap are not listed',
      labelNames: ['bank'],
      registers: [r],
      collect() {
        for (const b of config.banks) if (b.debitCapCents !== undefined) this.set({ bank: b.code }, b.debitCapCents);
      },
    });
    this.gauge({
      name: 'netting_ready',
      help: '1 when the engine accepts instructions',
      registers: [r],
      collect() {
        this.set(source.ready ? 1 : 0);
      },
    });

    const mainLoop = this.mainLoop;
    const workers = config.workers;
    const self = this;
    // The main thread's delay is read once per scrape for both gauges, then reset.
    let mainP99 = 0;
    let mainMean = 0;
    this.gauge({
      name: 'netting_event_loop_lag_p99_seconds',
      help: 'Event-loop delay since the previous scrape, 99th percentile, of the main thread and of each shard worker',
      labelNames: ['thread'],
      registers: [r],
      async collect() {
        mainP99 = mainLoop.percentile(99) / 1e9;
        mainMean = Number.isFinite(mainLoop.mean) ? mainLoop.mean / 1e9 : 0;
        mainLoop.reset();
        this.set({ thread: 'main' }, mainP99);
        await self.workerStatsRound(workers);
        self.workerStats.forEach((w, i) => this.set({ thread: `worker-${i}` }, w.eventLoopLagP99Seconds));
      },
    });
    this.gauge({
      name: 'netting_event_loop_lag_mean_seconds',
      help: 'Event-loop delay since the previous scrape, mean, of the main thread and of each shard worker',
      labelNames: ['thread'],
      registers: [r],
      async collect() {
        await self.workerStatsRound(workers);
        this.set({ thread: 'main' }, mainMean);
        self.workerStats.forEach((w, i) => this.set({ thread: `worker-${i}` }, w.eventLoopLagMeanSeconds));
      },
    });
    this.gauge({
      name: 'netting_storage_used_bytes',
      help: "Bytes of a shard's LMDB environment in use (read with the worker stats)",
      labelNames: ['shard'],
      registers: [r],
      async collect() {
        await self.workerStatsRound(workers);
        for (const w of self.workerStats) for (const [shard, bytes] of Object.entries(w.shardBytes)) this.set({ shard }, bytes);
      },
    });
    this.gauge({
      name: 'netting_storage_limit_bytes',
      help: 'Storage one shard may use (limits.shardBytesMax); past it, new instructions get STORAGE_FULL',
      registers: [r],
      collect() {
        this.set(config.limits.shardBytesMax);
      },
    });
    this.gauge({
      name: 'netting_worker_heap_used_bytes',
      help: 'V8 heap used by each shard worker thread',
      labelNames: ['thread'],
      registers: [r],
      async collect() {
        await self.workerStatsRound(workers);
        self.workerStats.forEach((w, i) => this.set({ thread: `worker-${i}` }, w.heapUsedBytes));
      },
    });
    // Registered after the metrics it watches: a scrape reads metrics in this order, so the count
    // includes that scrape's own failures (an asynchronous collect's only from the next scrape).
    this.collectFailures = new Counter({
      name: 'netting_metrics_collect_failures_total',
      help: 'Scrapes in which a metric could not be read (its collect threw); that metric had no value in them',
      labelNames: ['metric'],
      registers: [r],
    });
    for (const metric of this.guarded) this.collectFailures.inc({ metric }, 0);
  }

  /** A gauge whose collect cannot fail the scrape: when it throws, the gauge has no value in that scrape. */
  private gauge<T extends string = string>(config: GaugeConfiguration<T>): Gauge<T> {
    const { collect } = config;
    if (collect === undefined) return new Gauge(config);
    const unlabelled = (config.labelNames ?? []).length === 0;
    // NaN is Prometheus's "no value" for a single series; a labelled gauge drops its series instead.
    return new Gauge({ ...config, collect: this.guard(config.name, collect, (g) => (unlabelled ? g.set(NaN) : g.reset())) });
  }

  /**
   * A counter whose collect cannot fail the scrape. These collects only copy
   * plain numbers; should one throw, the counter is exported as it was left.
   */
  private counter<T extends string = string>(config: CounterConfiguration<T>): Counter<T> {
    const { collect } = config;
    if (collect === undefined) return new Counter(config);
    return new Counter({ ...config, collect: this.guard(config.name, collect, () => undefined) });
  }

  private guard<M>(name: string, collect: Collect<M>, clear: (metric: M) => void): Collect<M> {
    this.guarded.push(name);
    const failed = (metric: M, err: unknown): void => {
      clear(metric);
      this.collectFailures.inc({ metric: name });
      if (!this.failing.has(name)) {
        this.failing.add(name);
        this.onCollectFailure(name, err);
      }
    };
    const succeeded = (): void => {
      this.failing.delete(name);
    };
    return function (this: M): void | Promise<void> {
      try {
        const pending = collect.call(this);
        if (pending instanceof Promise) return pending.then(succeeded, (err: unknown) => failed(this, err));
        succeeded();
      } catch (err) {
        failed(this, err);
      }
      return undefined;
    };
  }

  private workerStatsRound(workers: number): Promise<void> {
    this.statsRound ??= this.refreshWorkerStats(workers).finally(() => {
      this.statsRound = undefined;
    });
    return this.statsRound;
  }

  /** Ask every worker for its stats, but never let a busy worker hold a scrape for long. */
  private async refreshWorkerStats(workers: number): Promise<void> {
    const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), WORKER_STATS_TIMEOUT_MS).unref());
    const fresh = await Promise.all(
      Array.from({ length: workers }, (_, w) => Promise.race([this.source.workerStats(w).catch(() => undefined), timeout])),
    );
    this.workerStats = fresh.map((s, i) => s ?? this.workerStats[i] ?? { eventLoopLagMeanSeconds: 0, eventLoopLagP99Seconds: 0, heapUsedBytes: 0, shardBytes: {} });
  }

  /** One observation per task, from the router. */
  observeTask(task: ApplyTask, result: ApplyResult, roundTripMs: number): void {
    const shard = String(task.shard);
    this.taskRoundTrip.observe({ shard }, roundTripMs / 1000);
    this.shardApply.observe({ shard }, result.applyMs / 1000);
    this.lmdbCommit.observe({ shard }, result.commitMs / 1000);
    this.txnOps.observe({ shard }, task.ops.length);
  }

  observeAck(transport: Transport, startedMs: number): void {
    this.ackLatency.observe({ transport }, (performance.now() - startedMs) / 1000);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
