/**
 * The main thread's read-only view of the shard environments: the durable
 * half of the global id index (受理重复 across shards) and the source of
 * instruction queries. Only the shard's worker ever writes.
 *
 * lmdb-js keeps one read transaction per environment and renews it lazily;
 * after a worker reports a commit the router calls `refresh(shard)` so that
 * the next look-up sees that commit before its in-flight entry is dropped.
 */

import { checkStoredInstruction, instructionKey, openShardDbs, shardPath, type ShardDbs, type StoredInstruction } from './schema.js';

export interface Located {
  shard: number;
  record: StoredInstruction;
}

export class ShardReaders {
  private readonly dbs: ShardDbs[] = [];

  constructor(dataDir: string, shards: number, mapSizeBytes: number) {
    for (let s = 0; s < shards; s++) this.dbs.push(openShardDbs(shardPath(dataDir, s), mapSizeBytes));
  }

  /** Look an instruction up in every shard; ids are global per institution. */
  find(institution: string, id: string): Located | undefined {
    const key = instructionKey(institution, id);
    for (let s = 0; s < this.dbs.length; s++) {
      const value = this.dbs[s]!.ins.get(key);
      if (value !== undefined) return { shard: s, record: checkStoredInstruction(value, key) };
    }
    return undefined;
  }

  refresh(shard: number): void {
    this.dbs[shard]?.env.resetReadTxn();
  }

  async close(): Promise<void> {
    await Promise.all(this.dbs.map((d) => d.env.close()));
  }
}
