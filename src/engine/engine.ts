/**
 * The engine assembled: storage, shard workers, router and positions view,
 * with start-up recovery and an orderly stop. The gateway sits in front of
 * it and is the only part that speaks to clients.
 */

import { mkdirSync } from 'node:fs';
import type { EngineConfig } from '../config/config.js';
import { assert } from '../core/assert.js';
import type { PairFlow } from '../core/netting.js';
import { ShardMap } from '../core/shard-map.js';
import { ShardPools } from '../router/shard-pools.js';
import { ShardRouter } from '../router/shard-router.js';
import type { VerifyReport } from '../shard/tasks.js';
import { EngineStore, nextBatchId } from '../store/engine-store.js';
import { ShardReaders } from '../store/shard-readers.js';
import type { Logger } from './log.js';
import { PositionsView } from './positions-view.js';

export interface AuditReport {
  batch: string;
  ok: boolean;
  instructions: number;
  cleared: number;
  shards: VerifyReport[];
}

export class Engine {
  private state: 'starting' | 'ready' | 'stopping' | 'stopped' = 'starting';

  private constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
    readonly store: EngineStore,
    readonly pools: ShardPools,
    readonly readers: ShardReaders,
    readonly view: PositionsView,
    readonly router: ShardRouter,
    private batchId: string,
  ) {}

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
    const batch = open.id;

    const pools = new ShardPools(
      { dataDir: config.dataDir, shards: config.shards, mapSizeBytes: config.limits.shardMapBytes },
      config.workers,
      config.limits.shardTasksInflightMax,
    );
    const opened = await Promise.all(
      Array.from({ length: config.shards }, (_, shard) => pools.open({ kind: 'open', shard, batch, verify: config.verifyOnStart })),
    );
    const flows: PairFlow[] = [];
    for (const o of opened) {
      flows.push(...o.flows);
      if (o.verify !== null) {
        if (!o.verify.matches) {
          await pools.close();
          await store.close();
          throw new Error(`shard ${o.shard} failed verification: ${o.verify.mismatches.join(', ')}`);
        }
        log.info({ shard: o.shard, instructions: o.verify.instructions, cleared: o.verify.cleared }, 'shard verified against its instruction log');
      }
    }
    const readers = new ShardReaders(config.dataDir, config.shards, config.limits.shardMapBytes);
    const bankCodes = config.banks.map((b) => b.code);
    const view = new PositionsView(bankCodes, batch);
    view.reset(batch, flows);
    view.overview(); // asserts conservation of the recovered state

    const bankSet = new Set(bankCodes);
    let engine: Engine | undefined;
    const router = new ShardRouter({
      rules: { isBank: (code) => bankSet.has(code), amountCentsMax: config.maxAmountCents, twoPhaseEnabled: false },
      shardMap: new ShardMap(bankCodes, config.shards),
      readers,
      runner: pools,
      openBatch: () => {
        assert(engine !== undefined, 'router used before the engine was built');
        return engine.batchId;
      },
      onCommitted: (_shard, result) => view.apply(result.deltas),
      limits: config.limits,
      log,
    });
    engine = new Engine(config, log, store, pools, readers, view, router, batch);
    engine.state = 'ready';
    log.info({ shards: config.shards, workers: config.workers, batch, recoveryMs: Date.now() - started }, 'engine ready');
    return engine;
  }

  get ready(): boolean {
    return this.state === 'ready';
  }

  get openBatchId(): string {
    return this.batchId;
  }

  /** Recompute every shard's flows from its instruction log and compare (laws 2 and 6). */
  async audit(): Promise<AuditReport> {
    const batch = this.batchId;
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
    const drained = await Promise.race([
      this.router.idle().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainMs).unref()),
    ]);
    if (!drained) this.log.warn({ inflight: this.router.inflightCount }, 'stopping with instructions still in flight; they were not acknowledged');
    await this.pools.close();
    await this.readers.close();
    await this.store.close();
    this.state = 'stopped';
    this.log.info('engine stopped');
  }
}
