/**
 * The shard worker: the Piscina task handler that runs in a worker thread
 * and owns one or more shards. A shard is opened by an `open` task (which
 * also recovers its state from LMDB) and then receives `apply` tasks from
 * the router. Nothing here talks to clients.
 */

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { workerData } from 'piscina';
import { assert } from '../core/assert.js';
import { openShardDbs, shardPath, type ShardDbs } from '../store/schema.js';
import { ShardLedger } from './ledger.js';
import type { ApplyResult, ApplyTask, OpenResult, OpenTask, ShardOp, ShardTask, WorkerSetup, WorkerStats } from './tasks.js';

const setup = workerData as WorkerSetup;

interface OpenShard {
  dbs: ShardDbs;
  ledger: ShardLedger;
}

const shards = new Map<number, OpenShard>();

// The worker's own event-loop delay, read (and reset) at scrape time.
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

function stats(): WorkerStats {
  const s: WorkerStats = {
    eventLoopLagMeanSeconds: Number.isFinite(loopDelay.mean) ? loopDelay.mean / 1e9 : 0,
    eventLoopLagP99Seconds: loopDelay.percentile(99) / 1e9,
    heapUsedBytes: process.memoryUsage().heapUsed,
    shardBytes: Object.fromEntries([...shards].map(([n, sh]) => [n, sh.ledger.usedBytes()])),
  };
  loopDelay.reset();
  return s;
}

const opening = new Map<number, Promise<OpenShard>>();

/**
 * Open a shard's environment. This runs at start, and again by itself if
 * Piscina replaced a thread that died: the new thread finds the shard
 * closed and reopens it from disk, which is the truth. Concurrent callers
 * share one opening, so tasks keep their order.
 */
function ensureOpen(shard: number): Promise<OpenShard> {
  const open = shards.get(shard);
  if (open !== undefined) return Promise.resolve(open);
  let p = opening.get(shard);
  if (p === undefined) {
    p = (async () => {
      const path = shardPath(setup.dataDir, shard);
      const dbs = openShardDbs(path, setup.mapSizeBytes);
      const meta = dbs.meta.get('shard') as { shard: number; shards: number } | undefined;
      if (meta === undefined) {
        await dbs.meta.put('shard', { shard, shards: setup.shards });
      } else {
        assert(meta.shard === shard && meta.shards === setup.shards, `${path} belongs to shard ${meta.shard} of ${meta.shards}`);
      }
      const s: OpenShard = { dbs, ledger: new ShardLedger(shard, dbs, setup.shardBytesMax) };
      shards.set(shard, s);
      opening.delete(shard);
      return s;
    })();
    opening.set(shard, p);
  }
  return p;
}

async function openShard(task: OpenTask): Promise<OpenResult> {
  return (await ensureOpen(task.shard)).ledger.open(task);
}

function apply(task: ApplyTask): Promise<ApplyResult> {
  // Synchronous when the shard is open, so tasks reach LMDB in the order they arrived.
  const s = shards.get(task.shard);
  return s !== undefined ? s.ledger.apply(task) : ensureOpen(task.shard).then((o) => o.ledger.apply(task));
}

export default async function handle(task: ShardTask): Promise<unknown> {
  switch (task.kind) {
    case 'apply-json':
    {
      const t: ApplyTask = { kind: 'apply', shard: task.shard, batch: task.batch, now: task.now, ops: JSON.parse(task.ops) as ShardOp[] };
      if (task.logSeq !== undefined) t.logSeq = task.logSeq;
      const result = await apply(t);
      // The flows go back in the journal record's bytes (ShardPools.apply decodes them).
      if (result.record !== undefined) result.delta.flows = [];
      return result;
    }
    case 'open':
      return openShard(task);
    case 'verify':
      return (await ensureOpen(task.shard)).ledger.verifyPaced(task.batch);
    case 'bucket-entries':
      return (await ensureOpen(task.shard)).ledger.bucketEntries(task.batch, task.institution, task.bucket);
    case 'crash':
      assert(setup.faultInjection, 'fault injection is not enabled');
      // Mid-flight, as a real fault would be: tasks of this thread's shards may be half done.
      setImmediate(() => process.exit(70));
      return null;
    case 'stats':
      return stats();
    case 'close': {
      const s = shards.get(task.shard);
      if (s !== undefined) {
        shards.delete(task.shard);
        await s.dbs.env.close();
      }
      return null;
    }
  }
  return undefined;
}
