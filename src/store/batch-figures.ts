/**
 * A shard's figures of a batch (the flows of its pairs and the digest
 * buckets of its institutions), stored as a journal and a paged fold, so
 * that a commit writes a journal record and now and then a page for them,
 * whatever the number of pairs and institutions it touches:
 *
 *   jrn  '<batch>|<seq>'   the deltas of one committed task (seq 1, 2, ... per batch, no gaps)
 *   pos  '<batch>|<page>'  page p of the fold: the flows of the pairs with pageOfPair = p and
 *                          bucket p of every institution, folded through a journal seq
 *
 * A task that changes figures appends its journal record, and the worker,
 * which keeps the fold in memory (BatchFigures), rewrites the pages folded
 * longest ago, as many as the entries it appended pay for (a page entry
 * for every two appended): a small task rewrites a page now and then, a
 * large one a few. Journal records that every page holds are removed
 * (never the newest), so the journal holds about two rounds of the pages'
 * worth of entries. A record per pair and per
 * institution, rewritten at every commit as before, measured as more than
 * the instruction's own insert at 500 banks: each lands on its own B-tree
 * page, and LMDB copies every page a transaction writes.
 *
 * The figures of a batch are every page plus, from each journal record,
 * the entries of pages folded before that record.
 *
 * Records are binary, in the machine's byte order like the LMDB file:
 * a header, the bank codes and institution ids the record names, then
 * fixed-size entries. Sums of cents are 128-bit integers (two 64-bit
 * words, low first), so no sum of safe-integer amounts can overflow them.
 */

import { assert } from '../core/assert.js';
import { addDigest } from '../core/digest.js';
import { addFlow, FlowBook, type PairFlow } from '../core/netting.js';
import type { Transaction } from 'lmdb';

/** Pages of the fold; also the number of digest buckets, so bucket n lives in page n. */
export const PAGES = 256;
export const BUCKETS = PAGES;
/**
 * What rewriting a page costs beside its entries, in entries: a B-tree put
 * and the record around them. Pages are rewritten as journal entries come
 * in, one entry's worth of page for every FOLD_PACE entries appended, so
 * the fold costs a fixed share of what the journal does whatever the task
 * size (see append).
 */
const PAGE_FOLD_COST = 32;
/**
 * Entries appended to the journal per page entry rewritten. At 2 the page
 * writes cost half the journal's, and the journal holds about two rounds
 * of the pages' worth of entries. Measured with the ledger alone at 500
 * banks (bench/ledger-tasks.ts), going from 1 to 2 took about 4 % off the
 * CPU per instruction; a longer journal costs start-up and the bucket
 * reads a few milliseconds more.
 */
const FOLD_PACE = 2;

/** One digest bucket's figures: instructions, Σ amounts (cents), Σ hashes mod 2^64. */
export interface BucketFigures {
  count: number;
  amount: bigint;
  digest: bigint;
}

/** A bucket's figures (or a change to them) for one institution. */
export interface BucketEntry extends BucketFigures {
  institution: string;
  n: number;
}

const HEADER_BYTES = 24;
const FLOW_BYTES = 56;
const BUCKET_BYTES = 40;
const SEQ_DIGITS = 12;
const PAGE_DIGITS = 3;

export function journalKey(batch: string, seq: number): string {
  return `${batch}|${String(seq).padStart(SEQ_DIGITS, '0')}`;
}

export function pageKey(batch: string, page: number): string {
  return `${batch}|${String(page).padStart(PAGE_DIGITS, '0')}`;
}

/** Range over one batch's journal records or pages. */
export function batchRange(batch: string): { start: string; end: string } {
  return { start: `${batch}|`, end: `${batch}|~` };
}

function keySuffix(key: string, digits: number): number {
  const bar = key.lastIndexOf('|');
  assert(bar > 0 && key.length - bar - 1 === digits, `bad figures key ${key}`);
  return Number(key.slice(bar + 1));
}

/** The page a pair's flows are folded in: FNV-1a over its two codes, low 8 bits. */
export function pageOfPair(a: string, b: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < a.length; i++) h = Math.imul(h ^ a.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ 0x7c, 0x01000193);
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b.charCodeAt(i), 0x01000193);
  return (h ^ (h >>> 16)) & (PAGES - 1);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * A 128-bit sum as two 64-bit words, low first. DataView's 64-bit setters
 * take a bigint modulo 2^64, so the low word needs no conversion; a sum
 * within 64 bits (almost all) gets its high word from its sign, with no
 * bigint made.
 */
function setInt128(v: DataView, at: number, value: bigint): void {
  v.setBigInt64(at, value, true);
  if (value >= INT64_MIN && value <= INT64_MAX) {
    const high = value < 0n ? -1 : 0;
    v.setInt32(at + 8, high, true);
    v.setInt32(at + 12, high, true);
  } else {
    v.setBigInt64(at + 8, value >> 64n, true);
  }
}

/** The inverse of setInt128: one bigint read when the high word is the low word's sign, as it almost always is. */
function getInt128(v: DataView, at: number): bigint {
  const high = v.getInt32(at + 8, true);
  if (high === v.getInt32(at + 12, true) && high === (v.getInt32(at + 4, true) < 0 ? -1 : 0)) return v.getBigInt64(at, true);
  return (v.getBigInt64(at + 8, true) << 64n) + v.getBigUint64(at, true);
}

/**
 * One record: `through` (the journal seq it is, or a page is folded
 * through), then flows and buckets. Codes and ids are ASCII
 * (^[A-Z0-9]{2,16}$), one length byte each.
 */
export function encodeFigures(through: number, flows: readonly PairFlow[], buckets: readonly BucketEntry[]): Uint8Array {
  const names = new Map<string, number>();
  let nameBytes = 0;
  const name = (s: string): number => {
    let i = names.get(s);
    if (i === undefined) {
      i = names.size;
      names.set(s, i);
      nameBytes += 1 + s.length;
    }
    return i;
  };
  // Each entry's name indexes, found once: the second pass writes them without looking names up again.
  const index = new Uint32Array(2 * flows.length + buckets.length);
  let k = 0;
  for (const f of flows) {
    index[k++] = name(f.a);
    index[k++] = name(f.b);
  }
  for (const b of buckets) index[k++] = name(b.institution);
  const namesEnd = HEADER_BYTES + ((nameBytes + 7) & ~7);
  const bytes = new Uint8Array(namesEnd + flows.length * FLOW_BYTES + buckets.length * BUCKET_BYTES);
  const v = new DataView(bytes.buffer);
  v.setFloat64(0, through, true);
  v.setUint32(8, names.size, true);
  v.setUint32(12, flows.length, true);
  v.setUint32(16, buckets.length, true);
  v.setUint32(20, nameBytes, true);
  let at = HEADER_BYTES;
  for (const s of names.keys()) {
    assert(s.length > 0 && s.length < 256, `a name of ${s.length} characters cannot be stored`);
    bytes[at++] = s.length;
    for (let i = 0; i < s.length; i++) bytes[at++] = s.charCodeAt(i);
  }
  at = namesEnd;
  k = 0;
  for (const f of flows) {
    v.setUint32(at, index[k++]!, true);
    v.setUint32(at + 4, index[k++]!, true);
    setInt128(v, at + 8, f.aToB);
    setInt128(v, at + 24, f.bToA);
    v.setFloat64(at + 40, f.countAToB, true);
    v.setFloat64(at + 48, f.countBToA, true);
    at += FLOW_BYTES;
  }
  for (const b of buckets) {
    v.setUint32(at, index[k++]!, true);
    v.setUint32(at + 4, b.n, true);
    v.setFloat64(at + 8, b.count, true);
    setInt128(v, at + 16, b.amount);
    // Modulo 2^64 by the setter itself.
    v.setBigUint64(at + 32, b.digest, true);
    at += BUCKET_BYTES;
  }
  return bytes;
}

interface Layout {
  bytes: Uint8Array;
  v: DataView;
  through: number;
  /** Names in the table. */
  count: number;
  /** The table decoded, or empty when it was not asked for. */
  names: string[];
  flowsAt: number;
  flows: number;
  bucketsAt: number;
  buckets: number;
}

/** A record's header and offsets; its names decoded too unless `names` is false (see nameIndex). */
function layoutOf(bytes: Uint8Array, names = true): Layout {
  assert(bytes.byteLength >= HEADER_BYTES, 'a figures record is too short');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const through = v.getFloat64(0, true);
  const count = v.getUint32(8, true);
  const flows = v.getUint32(12, true);
  const buckets = v.getUint32(16, true);
  const nameBytes = v.getUint32(20, true);
  const flowsAt = HEADER_BYTES + ((nameBytes + 7) & ~7);
  const bucketsAt = flowsAt + flows * FLOW_BYTES;
  assert(Number.isSafeInteger(through) && through >= 0 && bucketsAt + buckets * BUCKET_BYTES === bytes.byteLength, 'a figures record has the wrong size');
  const l: Layout = { bytes, v, through, count, names: [], flowsAt, flows, bucketsAt, buckets };
  if (!names) return l;
  l.names = new Array<string>(count);
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const len = bytes[at++]!;
    l.names[i] = String.fromCharCode(...bytes.subarray(at, at + len));
    at += len;
  }
  assert(at === HEADER_BYTES + nameBytes, 'a figures record has bad names');
  return l;
}

/** The index of `name` (ASCII) in a record's name table, or -1, found by its bytes without decoding the table. */
function nameIndex(l: Layout, name: string): number {
  const bytes = l.bytes;
  let at = HEADER_BYTES;
  for (let i = 0; i < l.count; i++) {
    const len = bytes[at++]!;
    if (len === name.length) {
      let k = 0;
      while (k < len && bytes[at + k] === name.charCodeAt(k)) k++;
      if (k === len) return i;
    }
    at += len;
  }
  return -1;
}

function nameAt(l: Layout, at: number): string {
  const s = l.names[l.v.getUint32(at, true)];
  assert(s !== undefined, 'a figures record names an entry out of its table');
  return s;
}

function flowAt(l: Layout, i: number): PairFlow {
  const at = l.flowsAt + i * FLOW_BYTES;
  const v = l.v;
  return { a: nameAt(l, at), b: nameAt(l, at + 4), aToB: getInt128(v, at + 8), bToA: getInt128(v, at + 24), countAToB: v.getFloat64(at + 40, true), countBToA: v.getFloat64(at + 48, true) };
}

/** The figures of the bucket entry at byte `at`, without its name. */
function bucketFiguresAt(v: DataView, at: number): BucketFigures {
  return { count: v.getFloat64(at + 8, true), amount: getInt128(v, at + 16), digest: v.getBigUint64(at + 32, true) };
}

function bucketAt(l: Layout, i: number): BucketEntry {
  const at = l.bucketsAt + i * BUCKET_BYTES;
  return { institution: nameAt(l, at), n: l.v.getUint32(at + 4, true), ...bucketFiguresAt(l.v, at) };
}

export interface DecodedFigures {
  through: number;
  flows: PairFlow[];
  buckets: BucketEntry[];
}

function flowsOf(l: Layout): PairFlow[] {
  const flows: PairFlow[] = new Array<PairFlow>(l.flows);
  for (let i = 0; i < l.flows; i++) flows[i] = flowAt(l, i);
  return flows;
}

/** The flows of a record alone (its buckets are not read). */
export function decodeFlows(bytes: Uint8Array): PairFlow[] {
  return flowsOf(layoutOf(bytes));
}

export function decodeFigures(bytes: Uint8Array): DecodedFigures {
  const l = layoutOf(bytes);
  const buckets: BucketEntry[] = new Array<BucketEntry>(l.buckets);
  for (let i = 0; i < l.buckets; i++) buckets[i] = bucketAt(l, i);
  return { through: l.through, flows: flowsOf(l), buckets };
}

/** One page of the fold in memory. */
interface Page {
  /** The page's pairs, in the order they were first met: the objects of the batch's one book (BatchFigures.book). */
  flows: PairFlow[];
  /** Bucket p (the page's number) of each institution. */
  buckets: Map<string, BucketEntry>;
  through: number;
}

function addBucket(into: Map<string, BucketEntry>, e: BucketEntry): void {
  const b = into.get(e.institution);
  if (b === undefined) {
    into.set(e.institution, { ...e, digest: BigInt.asUintN(64, e.digest) });
  } else {
    b.count += e.count;
    b.amount += e.amount;
    b.digest = addDigest(b.digest, e.digest);
  }
}

/** The stores a batch's figures live in (an LMDB database, or the simulator's). */
/** A range read, optionally in a given read transaction (a snapshot held across event turns). */
export interface ReadOptions {
  transaction?: Transaction;
}

export interface FiguresDbs {
  pos: { get(key: string): Uint8Array | undefined; getRange(range: { start: string; end: string } & ReadOptions): Iterable<{ key: string; value: Uint8Array }>; put(key: string, value: Uint8Array): unknown };
  jrn: { get(key: string): Uint8Array | undefined; getRange(range: { start: string; end: string } & ReadOptions): Iterable<{ key: string; value: Uint8Array }>; put(key: string, value: Uint8Array): unknown; remove(key: string): unknown };
}

/**
 * A batch's figures as the shard's worker keeps them: the fold's pages in
 * memory, up to journal record `seq`. Built from the disk (load), then
 * kept in step by append, which writes inside the task's transaction.
 */
export class BatchFigures {
  private readonly pages: Page[] = Array.from({ length: PAGES }, () => ({ flows: [], buckets: new Map(), through: 0 }));
  /**
   * Every pair's flow in one book, each also listed in its page: one
   * look-up per delta in a book of a row per bank, where a book per page
   * kept a row per bank in each of the 256 pages (at 500 banks, a hundred
   * thousand small maps), and a pair's page is hashed once, when it is met.
   */
  private readonly book = new FlowBook();
  /** The newest journal record these figures hold. */
  seq = 0;

  private constructor(readonly batch: string) {}

  /** A batch's figures as the disk (or the transaction reading it) holds them. */
  static load(dbs: FiguresDbs, batch: string, read: ReadOptions = {}): BatchFigures {
    const f = new BatchFigures(batch);
    for (const { key, value } of dbs.pos.getRange({ ...batchRange(batch), ...read })) {
      const p = keySuffix(key, PAGE_DIGITS);
      assert(p < PAGES, `bad page key ${key}`);
      const l = layoutOf(value);
      const page = f.pages[p]!;
      page.through = l.through;
      for (let i = 0; i < l.flows; i++) {
        const flow = flowAt(l, i);
        assert(pageOfPair(flow.a, flow.b) === p, `page ${p} holds the pair ${flow.a}|${flow.b}`);
        f.addFlow(flow);
      }
      for (let i = 0; i < l.buckets; i++) {
        const b = bucketAt(l, i);
        assert(b.n === p, `page ${p} holds bucket ${b.n}`);
        addBucket(page.buckets, b);
      }
      f.seq = Math.max(f.seq, l.through);
    }
    let expected = 0;
    for (const { key, value } of dbs.jrn.getRange({ ...batchRange(batch), ...read })) {
      const seq = keySuffix(key, SEQ_DIGITS);
      assert(expected === 0 || seq === expected, `journal of ${batch} skips from ${expected - 1} to ${seq}`);
      if (expected === 0) f.removedThrough = seq - 1;
      expected = seq + 1;
      f.seq = Math.max(f.seq, seq);
      f.add(layoutOf(value), seq);
    }
    if (expected === 0) f.removedThrough = f.seq;
    return f;
  }

  /** Add a journal record's entries to each page not yet folded through it. */
  private add(l: Layout, seq: number): void {
    for (let i = 0; i < l.flows; i++) {
      const flow = flowAt(l, i);
      const page = this.pages[pageOfPair(flow.a, flow.b)]!;
      if (seq > page.through) this.addFlow(flow);
    }
    for (let i = 0; i < l.buckets; i++) {
      const b = bucketAt(l, i);
      assert(b.n < PAGES, `bad bucket ${b.n}`);
      const page = this.pages[b.n]!;
      if (seq > page.through) addBucket(page.buckets, b);
    }
  }

  /** Whether these figures are the disk's: its newest journal record is theirs. */
  matches(dbs: FiguresDbs): boolean {
    if (this.seq > 0 && dbs.jrn.get(journalKey(this.batch, this.seq)) === undefined) return false;
    return dbs.jrn.get(journalKey(this.batch, this.seq + 1)) === undefined;
  }

  /** Entries appended and not yet paid for by page rewrites (kept in memory only: it paces the rewrites, nothing depends on it). */
  private budget = 0;
  /** Journal records up to this seq are removed. */
  private removedThrough = 0;

  /**
   * Inside the task's transaction: append a task's deltas as the next
   * journal record, fold them in memory, rewrite the pages folded longest
   * ago as far as the entries appended pay for them, and remove the
   * journal records every page now holds (never the newest: it marks these
   * figures, see matches). If anything throws, these figures may be ahead
   * of the disk (the transaction rolls back): the caller drops them.
   * Answers the journal record written, if any.
   */
  append(dbs: FiguresDbs, flows: readonly PairFlow[], buckets: readonly BucketEntry[]): Uint8Array | undefined {
    if (flows.length === 0 && buckets.length === 0) return undefined;
    const seq = this.seq + 1;
    const record = encodeFigures(seq, flows, buckets);
    dbs.jrn.put(journalKey(this.batch, seq), record);
    for (const flow of flows) this.addFlow(flow);
    for (const b of buckets) addBucket(this.pages[b.n]!.buckets, b);
    this.budget += flows.length + buckets.length;
    for (;;) {
      const p = this.oldestPage();
      const page = this.pages[p]!;
      const cost = FOLD_PACE * (PAGE_FOLD_COST + page.flows.length + page.buckets.size);
      if (page.through === seq || this.budget < cost) break;
      page.through = seq;
      dbs.pos.put(pageKey(this.batch, p), encodeFigures(seq, page.flows, [...page.buckets.values()]));
      this.budget -= cost;
    }
    const held = Math.min(this.pages[this.oldestPage()]!.through, seq - 1);
    for (let r = this.removedThrough + 1; r <= held; r++) dbs.jrn.remove(journalKey(this.batch, r));
    this.removedThrough = Math.max(this.removedThrough, held);
    this.seq = seq;
    return record;
  }

  /** Add a flow delta to its pair's flow, listing the pair in its page when it is new. */
  private addFlow(delta: PairFlow): void {
    const n = this.book.size;
    const flow = this.book.touch(delta.a, delta.b);
    if (this.book.size !== n) this.pages[pageOfPair(flow.a, flow.b)]!.flows.push(flow);
    addFlow(flow, delta);
  }

  /** The page folded longest ago (the lowest through; the first of equals). */
  private oldestPage(): number {
    let p = 0;
    for (let i = 1; i < PAGES; i++) if (this.pages[i]!.through < this.pages[p]!.through) p = i;
    return p;
  }

  *flows(): IterableIterator<PairFlow> {
    yield* this.book.values();
  }

  /** Every institution's bucket figures, by `<institution>|<n>`. */
  buckets(): Map<string, BucketFigures> {
    const out = new Map<string, BucketFigures>();
    for (const page of this.pages) for (const b of page.buckets.values()) out.set(`${b.institution}|${b.n}`, { count: b.count, amount: b.amount, digest: b.digest });
    return out;
  }
}

/**
 * One institution's 256 buckets in a batch, read from the disk without
 * decoding the flows: each page's entry for it, plus the journal's entries
 * for it that its page does not yet hold.
 */
export function readInstitutionBuckets(dbs: Pick<FiguresDbs, 'pos' | 'jrn'>, batch: string, institution: string): BucketFigures[] {
  const out: BucketFigures[] = Array.from({ length: BUCKETS }, () => ({ count: 0, amount: 0n, digest: 0n }));
  const through = new Array<number>(PAGES).fill(0);
  const take = (l: Layout, page: number | undefined, seq: number): void => {
    const mine = nameIndex(l, institution);
    if (mine < 0) return;
    for (let i = 0; i < l.buckets; i++) {
      const at = l.bucketsAt + i * BUCKET_BYTES;
      if (l.v.getUint32(at, true) !== mine) continue;
      const n = l.v.getUint32(at + 4, true);
      assert(n < BUCKETS && (page === undefined || n === page), `page ${page} holds bucket ${n}`);
      if (seq <= through[n]!) continue;
      const o = out[n]!;
      const b = bucketFiguresAt(l.v, at);
      o.count += b.count;
      o.amount += b.amount;
      o.digest = addDigest(o.digest, b.digest);
    }
  };
  for (const { key, value } of dbs.pos.getRange(batchRange(batch))) {
    const p = keySuffix(key, PAGE_DIGITS);
    const l = layoutOf(value, false);
    take(l, p, Number.POSITIVE_INFINITY);
    through[p] = l.through;
  }
  for (const { key, value } of dbs.jrn.getRange(batchRange(batch))) take(layoutOf(value, false), undefined, keySuffix(key, SEQ_DIGITS));
  return out;
}
