/**
 * The worker threads that own the shards. Piscina's load balancer sees no
 * routing key, so each worker is its own pool with exactly one thread
 * (min = max = 1): shard s always runs on pool s % workers, keeping one
 * writer per LMDB environment while Piscina manages the thread's life.
 */

import { Piscina } from 'piscina';
import type { EngineConfig } from '../config/config.js';
import type { ShardTransport } from '../core/ports.js';
import { decodeFlows } from '../store/batch-figures.js';
import type { ApplyResult, ApplyTask, ApplyTaskWire, BucketInstruction, OpenResult, OpenTask, ShardTask, VerifyReport, WorkerSetup, WorkerStats } from '../shard/tasks.js';

const WORKER_FILE = new URL('../shard/worker.js', import.meta.url).href;

/** The shard transport port over Piscina: one single-thread pool per worker. */
export class ShardPools implements ShardTransport {
  private readonly pools: Piscina[] = [];
  private readonly shards: number;

  /** The pools a configuration asks for (the engine's, and a cluster follower's). */
  static fromConfig(c: Pick<EngineConfig, 'dataDir' | 'shards' | 'workers' | 'faultInjection' | 'limits'>, onError: (err: unknown) => void): ShardPools {
    return new ShardPools(
      { dataDir: c.dataDir, shards: c.shards, mapSizeBytes: c.limits.shardMapBytes, faultInjection: c.faultInjection, shardBytesMax: c.limits.shardBytesMax },
      c.workers,
      c.limits.shardTasksInflightMax,
      onError,
    );
  }

  constructor(
    setup: WorkerSetup,
    workers: number,
    tasksPerShard: number,
    onError: (err: unknown) => void,
  ) {
    this.shards = setup.shards;
    const shardsPerWorker = Math.ceil(setup.shards / workers);
    for (let w = 0; w < workers; w++) {
      this.pools.push(
        new Piscina({
          filename: WORKER_FILE,
          workerData: setup,
          minThreads: 1,
          maxThreads: 1,
          idleTimeout: 60_000,
          // Each shard keeps up to `tasksPerShard` tasks at its worker; control tasks need room too.
          concurrentTasksPerWorker: shardsPerWorker * (tasksPerShard + 2),
          // Tasks await LMDB commits, so the worker's event loop must run between messages.
          atomics: 'disabled',
          // A task that waits in Piscina's queue keeps its place: by default one that could not be handed to the
          // busy worker goes back to the queue's tail, and a shard's tasks would reach LMDB out of order (cluster
          // mode applies the log in order, and skips a sequence at or below the shard's applied one).
          stricterFIFO: true,
          closeTimeout: 30_000,
        }),
      );
      // A worker that dies with no task running is reported here; Piscina starts a new one.
      this.pools[w]!.on('error', onError);
    }
  }

  private poolOf(shard: number): Piscina {
    const pool = this.pools[shard % this.pools.length];
    if (pool === undefined) throw new Error(`no pool for shard ${shard}`);
    return pool;
  }

  private run<T>(task: ShardTask): Promise<T> {
    return this.poolOf(task.shard).run(task) as Promise<T>;
  }

  open(task: OpenTask): Promise<OpenResult> {
    return this.run(task);
  }

  /**
   * Operations travel to the worker as one JSON string: V8 stringifies and
   * parses arrays of short strings and numbers much faster than it
   * structured-clones them, and a string crosses the thread as one copy.
   */
  apply(task: ApplyTask): Promise<ApplyResult> {
    const wire: ApplyTaskWire = { kind: 'apply-json', shard: task.shard, batch: task.batch, now: task.now, ops: JSON.stringify(task.ops) };
    if (task.logSeq !== undefined) wire.logSeq = task.logSeq;
    return this.run<ApplyResult>(wire).then((result) => {
      if (result.record !== undefined) {
        result.delta.flows = decodeFlows(result.record);
        delete result.record;
      }
      return result;
    });
  }

  verify(shard: number, batch: string): Promise<VerifyReport> {
    return this.run({ kind: 'verify', shard, batch });
  }

  bucketEntries(shard: number, batch: string, institution: string, bucket: number): Promise<BucketInstruction[]> {
    return this.run({ kind: 'bucket-entries', shard, batch, institution, bucket });
  }


  get workers(): number {
    return this.pools.length;
  }

  /** Worker `w`'s own health; it owns shard w (shard s lives on worker s % workers). */
  stats(worker: number): Promise<WorkerStats> {
    return this.run({ kind: 'stats', shard: worker });
  }

  /** Test-only: make worker `w` exit at once (it owns shard w). */
  crash(worker: number): Promise<unknown> {
    return this.run({ kind: 'crash', shard: worker });
  }

  async close(): Promise<void> {
    await Promise.allSettled(Array.from({ length: this.shards }, (_, shard) => this.run({ kind: 'close', shard })));
    await Promise.all(this.pools.map((p) => p.close()));
  }
}
