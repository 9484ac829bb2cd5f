/**
 * The bucket index: which instructions make up each of an institution's
 * digest buckets in a batch, for the reconciliation drill-down
 * (`GET /v1/reconciliation/{batch}/buckets/{n}`).
 *
 *   bkj '<batch>|<seq 12>'                   one record per task: [institution, entries, institution, entries, ...]
 *   bkt '<batch>|<institution>|j<seq 12>'    an institution's entries, moved out of the task records at task <seq>
 *   bkt '<batch>|<institution>|<time>.<n>'   an institution's entries of one task (written so before the task records)
 *
 * Entries are pairs [id, ±(bucket + 1)]: + cleared in the batch, - reversed
 * in it. A drill-down sums each id's signs, so cleared and reversed in the
 * same batch nets to nothing.
 *
 * Why two databases: a task carries instructions of many institutions, and
 * one record per institution and task put each of them on its own B-tree
 * leaf. A task of 20 instructions from 20 institutions then wrote about 20
 * more pages than its instructions did, and every page is written and
 * synced at the commit. Now a task's small shares go into one record (its
 * task record, appended at the right edge of bkj), and an institution's
 * entries move to its own bkt record once they fill `flushPairs` (or, for
 * one rarely seen, when the oldest task record holding them is `lagTasks`
 * old; see IndexPacing). A share of `flushPairs` or more goes to bkt at
 * once. A task record is removed once every institution's entries in it
 * have moved, never the newest (it marks how far the index goes).
 *
 * An institution's index is its bkt records, plus its entries in the task
 * records newer than its newest moved record ('j' sorts after the digits
 * of the older keys, so the newest is the last of its range).
 */

import { assert } from '../core/assert.js';
import type { Database } from 'lmdb';
import type { ReadOptions } from './batch-figures.js';

/** [id, ±(bucket + 1), ...] */
export type BucketIndexEntries = (string | number)[];
/** [institution, entries, institution, entries, ...] */
export type TaskIndexRecord = (string | BucketIndexEntries)[];

/** When an institution's entries leave the task records. */
export interface IndexPacing {
  /** An institution's entries move to their own record once they are this many pairs (64 fill about a quarter of a page). */
  flushPairs: number;
  /** ...or once the oldest task record holding them is this many tasks old; bounds a drill-down's and a reload's reading. */
  lagTasks: number;
}

export const INDEX_PACING: IndexPacing = { flushPairs: 64, lagTasks: 1024 };
const SEQ_DIGITS = 12;

export interface IndexDbs {
  bkt: Database<BucketIndexEntries, string>;
  bkj: Database<TaskIndexRecord, string>;
}

export function taskIndexKey(batch: string, seq: number): string {
  return `${batch}|${String(seq).padStart(SEQ_DIGITS, '0')}`;
}

export function movedIndexKey(batch: string, institution: string, seq: number): string {
  return `${batch}|${institution}|j${String(seq).padStart(SEQ_DIGITS, '0')}`;
}

function seqOfKey(key: string): number {
  const seq = Number(key.slice(key.length - SEQ_DIGITS));
  assert(Number.isSafeInteger(seq) && seq >= 0, `bad bucket index key ${key}`);
  return seq;
}

/** Range over the bucket index of one institution in a batch (in bkt). */
export function bucketIndexRange(batch: string, institution: string): { start: string; end: string } {
  const prefix = `${batch}|${institution}|`;
  return { start: prefix, end: `${prefix}~` };
}

/** Range over one batch's task records (in bkj). */
function taskRange(batch: string, after = -1): { start: string; end: string } {
  return { start: after < 0 ? `${batch}|` : taskIndexKey(batch, after + 1), end: `${batch}|~` };
}

/** The index value of an instruction in bucket `bucket`: positive if cleared in the batch, negative if reversed in it. */
export function bucketIndexValue(bucket: number, sign: 1 | -1): number {
  return sign * (bucket + 1);
}

/** The task seq at which a bkt record's entries moved, or -1 for none or a record of layout 3 (its key has no 'j'). */
function movedSeq(key: string | undefined): number {
  return key !== undefined && key.charAt(key.length - SEQ_DIGITS - 1) === 'j' ? seqOfKey(key) : -1;
}

/** The task seq through which an institution's entries have moved to bkt (-1: none), from its newest moved record. */
function movedThrough(dbs: IndexDbs, batch: string, institution: string): number {
  let last: string | undefined;
  const range = bucketIndexRange(batch, institution);
  for (const key of dbs.bkt.getKeys({ start: `${range.start}j`, end: range.end })) last = key;
  return movedSeq(last);
}

/** An institution's entries in a task record, or undefined. */
function entriesIn(record: TaskIndexRecord, institution: string): BucketIndexEntries | undefined {
  assert(Array.isArray(record) && record.length % 2 === 0, 'bad task index record');
  for (let i = 0; i < record.length; i += 2) if (record[i] === institution) return record[i + 1] as BucketIndexEntries;
  return undefined;
}

/** Every index record of an institution in a batch, in key order (read them in one read transaction, or one synchronous turn). */
export function* institutionIndexRecords(dbs: IndexDbs, batch: string, institution: string, read: ReadOptions = {}): Generator<BucketIndexEntries> {
  let last: string | undefined;
  for (const { key, value } of dbs.bkt.getRange({ ...bucketIndexRange(batch, institution), ...read })) {
    yield value;
    last = key;
  }
  for (const { value } of dbs.bkj.getRange({ ...taskRange(batch, movedSeq(last)), ...read })) {
    const entries = entriesIn(value, institution);
    if (entries !== undefined) yield entries;
  }
}

/** Each id of one bucket in an institution's index records for a batch, with its net sign (ids that net to zero left out). */
export function bucketIndexIds(records: Iterable<unknown>, bucket: number): Map<string, number> {
  const net = new Map<string, number>();
  for (const [id, value] of indexedValues(records)) if (Math.abs(value) - 1 === bucket) net.set(id, Math.sign(value));
  return net;
}

/** Each id in an institution's index records with its entries summed: ±(bucket + 1) while it counts in the batch (ids that net to zero left out). */
export function indexedValues(records: Iterable<unknown>): Map<string, number> {
  const net = new Map<string, number>();
  for (const entries of records) addIndexed(net, entries);
  return net;
}

/** Add one index record's entries into `net` (see indexedValues). */
export function addIndexed(net: Map<string, number>, entries: unknown): void {
  assert(Array.isArray(entries) && entries.length % 2 === 0, 'bad bucket index record');
  for (let i = 0; i < entries.length; i += 2) {
    const id = entries[i] as unknown;
    const value = entries[i + 1] as unknown;
    assert(typeof id === 'string' && typeof value === 'number' && Number.isInteger(value) && value !== 0 && Math.abs(value) <= 256, 'bad bucket index entry');
    addIndexEntry(net, id, value);
  }
}

/**
 * Add one entry [id, ±(bucket + 1)] into `net`. An id is listed once
 * (cleared or reversed in the batch), or twice when both, with opposite
 * entries that net to nothing.
 */
export function addIndexEntry(net: Map<string, number>, id: string, value: number): void {
  const prev = net.get(id);
  assert(prev === undefined || prev === -value, `id ${id} is listed more than once in its bucket`);
  if (prev === undefined) net.set(id, value);
  else net.delete(id);
}

/** The institutions with index records in a batch, once per record (for the audit). */
export function* indexedInstitutions(dbs: IndexDbs, batch: string, read: ReadOptions = {}): Generator<string> {
  const prefix = `${batch}|`;
  for (const key of dbs.bkt.getKeys({ start: prefix, end: `${prefix}~`, ...read })) yield key.slice(prefix.length, key.indexOf('|', prefix.length));
  for (const { value } of dbs.bkj.getRange({ ...taskRange(batch), ...read })) {
    for (let i = 0; i < value.length; i += 2) yield value[i] as string;
  }
}

interface Waiting {
  entries: BucketIndexEntries;
  /** The oldest task record holding them. */
  first: number;
}

/**
 * A batch's bucket index as the shard's worker keeps it: the newest task
 * record, and each institution's entries not yet moved to bkt. Built from
 * the disk (load), then kept in step by append, inside the task's
 * transaction; if that transaction fails, the kept index no longer matches
 * the disk (see matches) and is loaded again.
 */
export class BucketIndex {
  /** The newest task record (-1: none). */
  seq = -1;
  /** The oldest task record not removed. */
  private oldest = 0;
  private readonly waiting = new Map<string, Waiting>();

  private constructor(
    readonly batch: string,
    private readonly pacing: IndexPacing,
  ) {}

  static load(dbs: IndexDbs, batch: string, pacing: IndexPacing = INDEX_PACING): BucketIndex {
    const index = new BucketIndex(batch, pacing);
    const moved = new Map<string, number>();
    let expected = -1;
    for (const { key, value } of dbs.bkj.getRange(taskRange(batch))) {
      const seq = seqOfKey(key);
      assert(expected < 0 || seq === expected, `task index records of ${batch} skip from ${expected - 1} to ${seq}`);
      if (expected < 0) index.oldest = seq;
      expected = seq + 1;
      index.seq = seq;
      assert(Array.isArray(value) && value.length % 2 === 0, `bad task index record ${key}`);
      for (let i = 0; i < value.length; i += 2) {
        const institution = value[i] as string;
        let through = moved.get(institution);
        if (through === undefined) {
          through = movedThrough(dbs, batch, institution);
          moved.set(institution, through);
        }
        if (seq > through) index.wait(institution, value[i + 1] as BucketIndexEntries, seq);
      }
    }
    return index;
  }

  /** Whether this index is the disk's: its newest task record is theirs. */
  matches(dbs: IndexDbs): boolean {
    if (this.seq >= 0 && dbs.bkj.get(taskIndexKey(this.batch, this.seq)) === undefined) return false;
    return dbs.bkj.get(taskIndexKey(this.batch, this.seq + 1)) === undefined;
  }

  /** Entries waiting in task records, over all institutions (for tests). */
  get waitingPairs(): number {
    let n = 0;
    for (const w of this.waiting.values()) n += w.entries.length / 2;
    return n;
  }

  /** Task records kept on disk. */
  get taskRecords(): number {
    return this.seq < 0 ? 0 : this.seq - this.oldest + 1;
  }

  /**
   * Inside the task's transaction: index a task's entries by institution.
   * If anything throws, this index may be ahead of the disk; the caller
   * drops it.
   */
  append(dbs: IndexDbs, byInstitution: ReadonlyMap<string, BucketIndexEntries>): void {
    if (byInstitution.size === 0) return;
    const seq = this.seq + 1;
    const record: TaskIndexRecord = [];
    for (const [institution, entries] of byInstitution) {
      const w = this.waiting.get(institution);
      const pairs = (w === undefined ? 0 : w.entries.length / 2) + entries.length / 2;
      // A share that fills a record, or joins entries waiting too long, moves now and is not in the task record.
      if (pairs >= this.pacing.flushPairs || (w !== undefined && w.first <= seq - this.pacing.lagTasks)) {
        this.move(dbs, institution, w === undefined ? entries : w.entries.concat(entries), seq);
      } else {
        record.push(institution, entries);
        this.wait(institution, entries, seq);
      }
    }
    // Entries of an institution not in this task move once their oldest record is lagTasks old.
    let oldestNeeded = seq;
    for (const [institution, w] of this.waiting) {
      if (w.first <= seq - this.pacing.lagTasks) this.move(dbs, institution, w.entries, seq);
      else if (w.first < oldestNeeded) oldestNeeded = w.first;
    }
    dbs.bkj.put(taskIndexKey(this.batch, seq), record);
    for (let s = this.oldest; s < oldestNeeded; s++) dbs.bkj.remove(taskIndexKey(this.batch, s));
    this.oldest = Math.max(this.oldest, oldestNeeded);
    this.seq = seq;
  }

  /** An institution's entries of task record `seq` wait there to move. */
  private wait(institution: string, entries: BucketIndexEntries, seq: number): void {
    const w = this.waiting.get(institution);
    if (w === undefined) this.waiting.set(institution, { entries: entries.slice(), first: seq });
    else for (const e of entries) w.entries.push(e);
  }

  private move(dbs: IndexDbs, institution: string, entries: BucketIndexEntries, seq: number): void {
    dbs.bkt.put(movedIndexKey(this.batch, institution, seq), entries);
    this.waiting.delete(institution);
  }
}
