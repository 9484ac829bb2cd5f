/**
 * The main thread's read-only view of the shard environments: the durable
 * half of the global id index (受理重复 across shards) and the source of
 * instruction queries. Only the shard's worker ever writes.
 *
 * lmdb-js keeps one read transaction per environment and renews it lazily;
 * after a worker reports a commit the router calls `refresh(shard)` so that
 * the next look-up sees that commit before its in-flight entry is dropped.
 */

import { addDigest } from '../core/digest.js';
import type { InstructionLookup, Located } from '../core/ports.js';
import { readInstitutionBuckets } from './batch-figures.js';
import { BUCKETS, checkStoredInstruction, instructionKey, openShardDbs, shardPath, type ShardDbs } from './schema.js';

export type { Located };

export interface BucketSums {
  n: number;
  count: number;
  amount: bigint;
  digest: bigint;
}

export class ShardReaders implements InstructionLookup {
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

  /** All 256 buckets of an institution in a batch, summed over the shards. */
  buckets(batch: string, institution: string): BucketSums[] {
    const sums: BucketSums[] = Array.from({ length: BUCKETS }, (_, n) => ({ n, count: 0, amount: 0n, digest: 0n }));
    for (const d of this.dbs) {
      const shard = readInstitutionBuckets(d, batch, institution);
      for (const b of sums) {
        const f = shard[b.n]!;
        b.count += f.count;
        b.amount += f.amount;
        b.digest = addDigest(b.digest, f.digest);
      }
    }
    return sums;
  }

  refresh(shard: number): void {
    this.dbs[shard]?.env.resetReadTxn();
  }

  async close(): Promise<void> {
    await Promise.all(this.dbs.map((d) => d.env.close()));
  }
}
