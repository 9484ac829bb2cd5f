/**
 * The shard worker: the Piscina task handler that runs in a worker thread
 * and owns one or more shards. A shard is opened by an `open` task (which
 * also recovers its state from LMDB) and then receives `apply` tasks from
 * the router. Nothing here talks to clients.
 */

import { assert } from '../core/assert.js';
import { openShardDbs, type ShardDbs } from '../store/schema.js';
import { ShardLedger } from './ledger.js';
import type { OpenResult, OpenTask, ShardTask } from './tasks.js';

interface OpenShard {
  dbs: ShardDbs;
  ledger: ShardLedger;
}

const shards = new Map<number, OpenShard>();

async function openShard(task: OpenTask): Promise<OpenResult> {
  let s = shards.get(task.shard);
  if (s === undefined) {
    const dbs = openShardDbs(task.path, task.mapSizeBytes);
    const meta = dbs.meta.get('shard') as { shard: number; shards: number } | undefined;
    if (meta === undefined) {
      await dbs.meta.put('shard', { shard: task.shard, shards: task.shards });
    } else {
      assert(meta.shard === task.shard && meta.shards === task.shards, `${task.path} belongs to shard ${meta.shard} of ${meta.shards}`);
    }
    s = { dbs, ledger: new ShardLedger(task.shard, dbs, task.batch) };
    shards.set(task.shard, s);
  }
  const verify = task.verify ? await s.ledger.verify(task.batch) : null;
  return { shard: task.shard, flows: s.ledger.flows(), verify };
}

function shardOf(n: number): OpenShard {
  const s = shards.get(n);
  assert(s !== undefined, `shard ${n} is not open in this worker`);
  return s;
}

export default async function handle(task: ShardTask): Promise<unknown> {
  switch (task.kind) {
    case 'apply':
      return shardOf(task.shard).ledger.apply(task);
    case 'open':
      return openShard(task);
    case 'verify':
      return shardOf(task.shard).ledger.verify(task.batch);
    case 'close': {
      const s = shards.get(task.shard);
      if (s !== undefined) {
        shards.delete(task.shard);
        await s.dbs.env.close();
      }
      return null;
    }
  }
}
