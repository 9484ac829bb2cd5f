/**
 * The LMDB layout, in one place.
 *
 *   <dataDir>/engine/          the engine's own environment (main thread)
 *     meta     'layout'       { version, shards, createdAt }
 *              'openBatch'    { id, openedAt }
 *     batches  '<batch>'      BatchRecord (closed batches and their settlement reports)
 *     snaps    <seq>          Snapshot (numeric keys, pruned to the retention)
 *     mandates '<institution>/<id>' MandateRecord (委托协议)
 *   <dataDir>/shard-<n>/       one environment per shard, one writer (its worker)
 *     ins      '<institution>/<id>'              StoredInstruction, compacted (see instruction-codec.ts)
 *     pos      '<batch>|<page>'                  a page of the batch's fold: flows and digest buckets (binary)
 *     jrn      '<batch>|<seq>'                   a task's flow and bucket deltas, until every page holds them (binary)
 *                                                (both: see batch-figures.ts)
 *     bkj      '<batch>|<seq>'                   a task's bucket index entries by institution, until they move to bkt
 *     bkt      '<batch>|<institution>|j<seq>'    an institution's bucket index entries: [id, ±(bucket + 1), ...]
 *                                                (both: see bucket-index.ts)
 *     pnd      '<institution>/<id>'              1 while the instruction is pending (two-phase)
 *     meta     'shard'                           { shard, shards }
 *
 * Keys are strings: institution ids and bank codes match ^[A-Z0-9]{2,16}$
 * and instruction ids ^[A-Za-z0-9._:-]{1,64}$, so '/' and '|' never occur
 * inside a part. Sums of cents are 128-bit integers in binary records (they
 * may exceed 2^63 in theory), in the machine's byte order like the file.
 */

import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { assert } from '../core/assert.js';
import { type StoredInstruction } from '../core/stored-instruction.js';
import type { BucketIndexEntries, TaskIndexRecord } from './bucket-index.js';
import { BankCodes, InstructionPackr } from './instruction-codec.js';

export { checkStoredInstruction, storedContentKey, type StoredInstruction } from '../core/stored-instruction.js';

/**
 * 6: instruction records with banks as codes (kept in meta 'codes:banks') and the acceptance time counted from the batch's date.
 * 5: instruction records with type and status as codes, the clearing time left out when it is the acceptance time (instruction-codec.ts).
 * 4: the bucket index as task records and per-institution records (bkj, bkt 'j' keys).
 * 3: flows and buckets as a journal and a paged fold (2 kept a record per pair and per institution).
 */
export const LAYOUT_VERSION = 6;
/**
 * Layouts this engine reads as they are and marks as its own at start:
 * 3 has no task index records, and its index records are read as moved
 * ones; the instruction records of 3 and 4 hold names, and those of 5
 * bank names and absolute times, which read as they are beside the codes
 * of 6.
 */
export const LAYOUT_UPGRADES_FROM: readonly number[] = [3, 4, 5];


export { BUCKETS, type BucketFigures } from './batch-figures.js';

export { bucketIndexIds, bucketIndexRange, bucketIndexValue, type BucketIndexEntries, type TaskIndexRecord } from './bucket-index.js';

export function instructionKey(institution: string, id: string): string {
  return `${institution}/${id}`;
}

export function splitInstructionKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  assert(slash > 0, `bad instruction key ${key}`);
  return [key.slice(0, slash), key.slice(slash + 1)];
}

/**
 * Inside a write transaction: store `value` under `key` unless the key is
 * already there, in one B-tree descent. lmdb-js's `putSync` answers whether
 * it wrote (false when `noOverwrite` finds the key), though its type
 * declaration says void.
 */
export function insertNew<V>(db: Database<V, string>, key: string, value: V): boolean {
  const wrote = (db.putSync as (k: string, v: V, o: { noOverwrite: boolean }) => unknown)(key, value, { noOverwrite: true });
  assert(typeof wrote === 'boolean', 'lmdb putSync did not answer whether it wrote');
  return wrote;
}



export interface ShardDbs {
  env: RootDatabase;
  ins: Database<StoredInstruction, string>;
  pos: Database<Uint8Array, string>;
  jrn: Database<Uint8Array, string>;
  bkt: Database<BucketIndexEntries, string>;
  bkj: Database<TaskIndexRecord, string>;
  pnd: Database<number, string>;
  meta: Database<unknown, string>;
}

export function shardPath(dataDir: string, shard: number): string {
  return join(dataDir, `shard-${shard}`);
}

export function enginePath(dataDir: string): string {
  return join(dataDir, 'engine');
}

/**
 * Open a shard's environment. The worker that owns the shard writes; the
 * main thread opens the same path (sharing the environment inside the
 * process) for idempotency look-ups and instruction queries, and only reads.
 */
export function openShardDbs(path: string, mapSizeBytes: number): ShardDbs {
  const env = open({ path, maxDbs: 12, mapSize: mapSizeBytes });
  const meta = env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
  return {
    env,
    ins: env.openDB<StoredInstruction, string>(instructionDbOptions(meta)),
    pos: env.openDB<Uint8Array, string>({ name: 'pos', encoding: 'binary' }),
    jrn: env.openDB<Uint8Array, string>({ name: 'jrn', encoding: 'binary' }),
    bkt: env.openDB<BucketIndexEntries, string>({ name: 'bkt', encoding: 'msgpack' }),
    bkj: env.openDB<TaskIndexRecord, string>({ name: 'bkj', encoding: 'msgpack' }),
    pnd: env.openDB<number, string>({ name: 'pnd', encoding: 'msgpack' }),
    meta,
  };
}

/** The `ins` database's options: its record codec with the environment's bank codes, and its shared structures. */
export function instructionDbOptions(meta: Database<unknown, string>): { name: string; encoding: 'msgpack'; encoder: { Encoder: typeof InstructionPackr } } & ReturnType<typeof sharedStructures> {
  return { name: 'ins', encoding: 'msgpack', encoder: { Encoder: InstructionPackr.withBanks(new BankCodes(meta)) }, ...sharedStructures(meta, 'ins') };
}

/**
 * The msgpack record structures of a database, kept in the environment's
 * meta database under 'structures:<name>'. Without them msgpackr writes
 * each record's key list into the record itself: an instruction record
 * was 64 bytes where 36 carry its values, and every write and read
 * defined the record anew. lmdb-js keeps shared structures under a key of
 * the database itself, which the scans over all instruction keys would
 * meet; so they live beside it. A new structure is saved by the write that
 * first uses it, in its transaction (only the shard's worker writes
 * instruction records); a reader that meets a structure it does not know
 * reads them again, in its own read transaction, which holds the record's
 * and so the structure's commit.
 */
export function sharedStructures(meta: Database<unknown, string>, name: string): { getStructures: () => unknown; saveStructures: (structures: unknown[], isCompatible: number | ((existing: unknown) => boolean)) => boolean } {
  const key = `structures:${name}`;
  return {
    getStructures: () => meta.get(key),
    saveStructures: (structures, isCompatible) => {
      const existing = meta.get(key) as unknown[] | undefined;
      if (typeof isCompatible === 'function' ? !isCompatible(existing) : existing !== undefined && existing.length !== isCompatible) return false;
      meta.putSync(key, structures);
      return true;
    },
  };
}
