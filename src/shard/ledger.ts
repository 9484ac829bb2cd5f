/**
 * One shard's ledger, owned by exactly one worker thread: it books
 * instructions and their lifecycle into the shard's LMDB environment, with
 * the pair flows and digest buckets they change (as one journal record per
 * task, and pages of the fold as the journal pays for them: see
 * src/store/batch-figures.ts).
 *
 * A task is one LMDB child transaction, run by lmdb-js on this thread when
 * the environment's write transaction is ready. Everything a task decides
 * (is this id stored? what are the pair's flows now?) is read inside that
 * transaction, so it always builds on exactly what earlier tasks committed.
 * That lets tasks pipeline: the next task's transaction runs while the
 * previous one is being flushed to disk. If a transaction fails or throws,
 * it is rolled back whole and the task fails: none of its operations was
 * acknowledged, and the next task reads the disk as it really is.
 */

import { assert } from '../core/assert.js';
import { IdFilter } from '../core/id-filter.js';
import { addInstitutionTotals, bucketOfHigh, digestLine, fnv1a64Halves, DigestAccumulator } from '../core/digest.js';
import { applyToFlow, FlowBook, flowIsZero, flowsEqual } from '../core/netting.js';
import { BatchFigures, BUCKETS, type BucketEntry, type BucketFigures, type ReadOptions } from '../store/batch-figures.js';
import { addIndexed, addIndexEntry, bucketIndexValue, BucketIndex, INDEX_PACING, indexedInstitutions, institutionIndexRecords, type BucketIndexEntries, type IndexPacing } from '../store/bucket-index.js';
import { checkStoredInstruction, insertNew, instructionKey, splitInstructionKey, storedContentKey, type ShardDbs, type StoredInstruction } from '../store/schema.js';
import { firstStep, isOpen, lifecycleApplies, stepOf } from '../core/stored-instruction.js';
import { S, type ApplyResult, type ApplyTask, type BatchSummary, type BucketInstruction, type InstitutionTotals, type OpenResult, type OpenTask, type OpOutcome, type PendingEntry, submittedContentKey, type VerifyReport } from './tasks.js';

/** Instruction records an audit reads before it lets the shard's tasks run (about 15 ms of work). */
const VERIFY_CHUNK = 4096;
/** How often a shard reads its size for the storage quota. */
const QUOTA_CHECK_MS = 50;

/** What one task does to one digest bucket, accumulated without BigInt per instruction. */
class BucketDelta {
  count = 0;
  amount = 0n;
  readonly digest = new DigestAccumulator();
}

function lineOf(institution: string, id: string, r: StoredInstruction): [number, number] {
  return fnv1a64Halves(digestLine(institution, id, r.p, r.q, r.a));
}

/** A batch's kept state if it still matches the disk, else loaded afresh; at most two batches are kept (the open one, and one being closed). */
function kept<T>(map: Map<string, T>, batch: string, matches: (t: T) => boolean, load: () => T): T {
  let t = map.get(batch);
  if (t !== undefined && matches(t)) return t;
  t = load();
  map.delete(batch);
  if (map.size >= 2) map.delete(map.keys().next().value!);
  map.set(batch, t);
  return t;
}

/** Sum a shard's buckets into per-institution totals. */
function institutionTotals(buckets: Iterable<[string, BucketFigures]>): InstitutionTotals[] {
  const byInstitution = new Map<string, InstitutionTotals>();
  for (const [key, b] of buckets) addInstitutionTotals(byInstitution, key.slice(0, key.indexOf('|')), b.count, b.amount, b.digest);
  return [...byInstitution.values()];
}

/** A two-phase instruction as the lifecycle tracks it, from its stored record. */
export function pendingEntryOf(institution: string, id: string, rec: StoredInstruction): PendingEntry {
  const p: PendingEntry = { institution, id, type: rec.t, payer: rec.p, payee: rec.q, amount: rec.a, acceptedAt: rec.at, deadline: rec.dl!, step: stepOf(rec), stepAt: rec.sa ?? rec.at, timeoutMs: rec.to! };
  if (rec.r !== undefined) p.reference = rec.r;
  if (rec.vf !== undefined) p.verification = rec.vf;
  return p;
}

export class ShardLedger {
  constructor(
    readonly shard: number,
    private readonly dbs: ShardDbs,
    private readonly bytesMax: number,
    private readonly indexPacing: IndexPacing = INDEX_PACING,
  ) {}

  /** Bytes of the environment in use: its pages up to the highest one written. */
  usedBytes(): number {
    const st = this.dbs.env.getStats() as { pageSize: number; lastPageNumber: number };
    return (st.lastPageNumber + 1) * st.pageSize;
  }

  private sizeReadAt = Number.NEGATIVE_INFINITY;
  private sizeRead = 0;

  /**
   * Whether the shard is past its storage limit. The size is read at most
   * every QUOTA_CHECK_MS (reading it costs a system call per task), so a
   * shard may write that much longer past its limit: the limit is a quota,
   * not the map's hard end.
   */
  private pastQuota(): boolean {
    const now = performance.now();
    if (now - this.sizeReadAt >= QUOTA_CHECK_MS) {
      this.sizeRead = this.usedBytes();
      this.sizeReadAt = now;
    }
    return this.sizeRead >= this.bytesMax;
  }

  /**
   * What the router learns when it opens the shard (at start, and after a
   * failed task): the figures of the given batches (the open one first),
   * the pending instructions, a verification if asked, and the shard's
   * keys as id filter words if asked.
   */
  open(task: OpenTask): OpenResult {
    const open = task.batches[0];
    assert(open !== undefined, 'open task names no batch');
    // The disk is the truth at an open (a start, or a resynchronisation after a failed task).
    this.figures.clear();
    this.indexes.clear();
    const verify = task.verify ? this.verify(open) : null;
    const summaries = task.batches.map((b) => this.summary(b));
    let filter: Uint32Array | null = null;
    if (task.filterBits > 0) {
      const f = new IdFilter(task.filterBits);
      for (const key of this.dbs.ins.getKeys({})) f.add(key);
      filter = f.words;
    }
    return { shard: this.shard, summaries, pending: this.pending(), verify, filter, appliedSeq: this.appliedSeq() };
  }

  /** Cluster mode: the last log sequence applied to this shard, written in the same transaction as the task it applied. */
  appliedSeq(): number {
    return (this.dbs.meta.get('applied') as number | undefined) ?? 0;
  }

  pending(): PendingEntry[] {
    const out: PendingEntry[] = [];
    for (const key of this.dbs.pnd.getKeys({})) {
      const rec = checkStoredInstruction(this.dbs.ins.get(key), key);
      assert(isOpen(rec), `pending index names ${key} which is ${rec.s}`);
      const [institution, id] = splitInstructionKey(key);
      out.push(pendingEntryOf(institution, id, rec));
    }
    return out;
  }

  /** The stored state of a batch: its flows and per-institution digests. */
  summary(batch: string): BatchSummary {
    const figures = BatchFigures.load(this.dbs, batch);
    return { batch, flows: [...figures.flows()], institutions: institutionTotals(figures.buckets()) };
  }

  /**
   * The figures of the batches tasks write into, kept in memory so that a
   * task rewrites a page without reading it. At most two are kept (the open
   * batch, and one being closed).
   */
  private readonly figures = new Map<string, BatchFigures>();

  /** The bucket index of the batches tasks write into, kept as the figures are. */
  private readonly indexes = new Map<string, BucketIndex>();

  /** Inside a transaction: the batch's figures, (re)loaded when the disk holds other ones (a commit failed after they were kept). */
  private figuresOf(batch: string): BatchFigures {
    return kept(this.figures, batch, (f) => f.matches(this.dbs), () => BatchFigures.load(this.dbs, batch));
  }

  /** Inside a transaction: the batch's bucket index, (re)loaded like the figures. */
  private indexOf(batch: string): BucketIndex {
    return kept(this.indexes, batch, (i) => i.matches(this.dbs), () => BucketIndex.load(this.dbs, batch, this.indexPacing));
  }

  async apply(task: ApplyTask): Promise<ApplyResult> {
    assert(task.shard === this.shard, `task for shard ${task.shard} sent to shard ${this.shard}`);
    // Cluster mode: a task the shard has applied already (a log replayed after a fault) changes nothing.
    if (task.logSeq !== undefined && task.logSeq <= this.appliedSeq()) {
      return { outcomes: [], applyMs: 0, commitMs: 0, delta: { batch: task.batch, flows: [], institutions: [] }, skipped: true };
    }
    const started = performance.now();
    // Hashes are computed before the transaction, so the write lock is held only for reads and writes.
    const hashes: ([number, number] | undefined)[] = new Array(task.ops.length);
    for (let i = 0; i < task.ops.length; i++) {
      const op = task.ops[i]!;
      if (op[0] === 'S') hashes[i] = fnv1a64Halves(digestLine(op[1], op[2], op[S.Payer], op[S.Payee], op[S.Amount]));
    }
    // Past its storage limit a shard takes no new instructions; lifecycle changes of stored ones still go through.
    const full = this.pastQuota();
    let result: ApplyResult | undefined;
    let issued = 0;
    await this.dbs.env.childTransaction(() => {
      issued = performance.now();
      result = this.applyInTransaction(task, hashes, full);
      if (task.logSeq !== undefined) this.dbs.meta.put('applied', task.logSeq);
    });
    assert(result !== undefined, 'the transaction ran no callback');
    const done = performance.now();
    result.applyMs = done - started;
    result.commitMs = done - issued;
    return result;
  }

  private applyInTransaction(task: ApplyTask, hashes: readonly ([number, number] | undefined)[], full: boolean): ApplyResult {
    const { ins, pnd } = this.dbs;
    const batch = task.batch;
    const now = task.now;
    const outcomes: (OpOutcome | null)[] = new Array(task.ops.length);
    const flowDelta = new FlowBook();
    // Per institution, its 256 buckets' deltas, and the bucket index entries this task adds.
    const bucketDeltas = new Map<string, (BucketDelta | undefined)[]>();
    const indexEntries = new Map<string, BucketIndexEntries>();

    const read = (key: string): StoredInstruction | undefined => {
      const v = ins.get(key);
      return v === undefined ? undefined : checkStoredInstruction(v, key);
    };
    const flow = (payer: string, payee: string, amount: number): void => {
      applyToFlow(flowDelta.touch(payer, payee), payer, BigInt(amount), 1);
    };
    const digest = (institution: string, id: string, rec: StoredInstruction, hash: [number, number], sign: 1 | -1): void => {
      const [hi, lo] = hash;
      const n = bucketOfHigh(hi);
      let buckets = bucketDeltas.get(institution);
      if (buckets === undefined) {
        buckets = new Array<BucketDelta | undefined>(BUCKETS);
        bucketDeltas.set(institution, buckets);
      }
      let d = buckets[n];
      if (d === undefined) {
        d = new BucketDelta();
        buckets[n] = d;
      }
      d.count += sign;
      d.amount += sign === 1 ? BigInt(rec.a) : -BigInt(rec.a);
      d.digest.add(hi, lo, sign);
      // A reversal adds a negative entry; one cleared in the same batch then nets to nothing in its listing.
      let entries = indexEntries.get(institution);
      if (entries === undefined) {
        entries = [];
        indexEntries.set(institution, entries);
      }
      entries.push(id, bucketIndexValue(n, sign));
    };

    for (let i = 0; i < task.ops.length; i++) {
      const op = task.ops[i]!;
      const institution = op[1];
      const id = op[2];
      const key = instructionKey(institution, id);
      if (op[0] === 'S') {
        // A full shard still answers for ids it holds, so it reads first; otherwise the
        // insert itself finds a stored id (no-overwrite), which saves a look-up per instruction.
        const stored = full ? read(key) : undefined;
        if (stored === undefined && full) {
          outcomes[i] = { status: 'missing', refused: 'STORAGE_FULL' };
          continue;
        }
        const created: StoredInstruction = { t: op[S.Type], p: op[S.Payer], q: op[S.Payee], a: op[S.Amount], s: 'cleared', at: now };
        const reference = op[S.Reference];
        if (reference !== null) created.r = reference;
        const mandate = op[S.Mandate];
        if (mandate !== null) created.m = mandate;
        const timeoutMs = op[S.TimeoutMs];
        if (timeoutMs > 0) {
          created.s = 'pending';
          created.tp = 1;
          created.to = timeoutMs;
          created.dl = now + timeoutMs;
          created.st = firstStep(created.t);
        } else {
          created.b = batch;
          created.ct = now;
        }
        if (stored !== undefined || !insertNew(ins, key, created)) {
          const rec = stored ?? read(key);
          assert(rec !== undefined, 'an insert was refused for a key that is not stored');
          const o: OpOutcome = { status: rec.s, conflict: storedContentKey(rec) !== submittedContentKey(op) };
          if (rec.b !== undefined) o.batch = rec.b;
          outcomes[i] = o;
          continue;
        }
        if (timeoutMs > 0) {
          pnd.put(key, 1);
        } else {
          flow(created.p, created.q, created.a);
          digest(institution, id, created, hashes[i]!, 1);
        }
        outcomes[i] = null;
        continue;
      }
      const rec = read(key);
      if (rec === undefined) {
        outcomes[i] = { status: 'missing' };
        continue;
      }
      const kind = op[0];
      if (!lifecycleApplies(kind, rec, op[4])) {
        const o: OpOutcome = { status: rec.s };
        if (rec.b !== undefined) o.batch = rec.b;
        if (rec.st !== undefined) o.step = rec.st;
        if (rec.vf !== undefined) o.verification = rec.vf;
        outcomes[i] = o;
        continue;
      }
      const next: StoredInstruction = { ...rec };
      if (kind === 'V' || kind === 'U' || kind === 'P') {
        // The next step of a two-step or two-leg flow: its own deadline, counted from now.
        next.s = kind === 'V' ? 'awaiting-submission' : 'pending';
        next.st = kind === 'V' ? 'submission' : kind === 'U' ? 'receipt' : 'payee';
        next.sa = now;
        next.dl = now + rec.to!;
        if (kind === 'U') next.vf = op[3]!;
      } else if (kind === 'C') {
        next.s = 'cleared';
        next.b = batch;
        next.ct = now;
        flow(rec.p, rec.q, rec.a);
        digest(institution, id, next, lineOf(institution, id, rec), 1);
        pnd.remove(key);
      } else if (kind === 'D' || kind === 'X') {
        next.s = kind === 'D' ? 'declined' : 'expired';
        next.ft = now;
        const reason = op[3];
        if (reason !== null) next.rs = reason;
        pnd.remove(key);
      } else {
        // A correcting entry (冲正) in the open batch: the payee pays the amount back.
        next.s = 'reversed';
        next.rb = batch;
        next.ft = now;
        flow(rec.q, rec.p, rec.a);
        digest(institution, id, rec, lineOf(institution, id, rec), -1);
      }
      ins.put(key, next);
      outcomes[i] = null;
    }

    // The task's figures go in as one journal record (and such pages of the fold as it pays for).
    const flows = flowDelta.list();
    const buckets: BucketEntry[] = [];
    const institutions = new Map<string, InstitutionTotals>();
    for (const [institution, deltas] of bucketDeltas) {
      for (let n = 0; n < deltas.length; n++) {
        const d = deltas[n];
        if (d === undefined) continue;
        const digest = d.digest.fold();
        buckets.push({ institution, n, count: d.count, amount: d.amount, digest });
        addInstitutionTotals(institutions, institution, d.count, d.amount, digest);
      }
    }
    const figures = this.figuresOf(batch);
    const index = this.indexOf(batch);
    let record: Uint8Array | undefined;
    try {
      index.append(this.dbs, indexEntries);
      record = figures.append(this.dbs, flows, buckets);
    } catch (err) {
      // The transaction rolls back: the kept figures and index may be ahead of the disk.
      this.figures.delete(batch);
      this.indexes.delete(batch);
      throw err;
    }
    const result: ApplyResult = { outcomes, applyMs: 0, commitMs: 0, delta: { batch, flows, institutions: [...institutions.values()] } };
    if (record !== undefined) result.record = record;
    return result;
  }


  /** Law 6 (see verifyPass) in one synchronous pass: at an open, and in the simulator. */
  verify(batch: string): VerifyReport {
    const pass = this.verifyPass(batch, {});
    for (;;) {
      const step = pass.next();
      if (step.done === true) return step.value;
    }
  }

  /**
   * Law 6 while tasks keep coming (an operator's audit): the same pass,
   * paced. At 400,000 instructions an acknowledgement waited 780 ms behind
   * it when it ran in one go.
   */
  verifyPaced(batch: string): Promise<VerifyReport> {
    return this.paced((read) => this.verifyPass(batch, read));
  }

  /**
   * The reconciliation drill-down in this shard: the instructions behind
   * digest bucket `bucket` of an institution in a batch, paced like the
   * audit, so that an institution with millions of index entries delays
   * this shard's commits by a chunk at a time.
   */
  bucketEntries(batch: string, institution: string, bucket: number): Promise<BucketInstruction[]> {
    return this.paced((read) => this.bucketEntriesPass(batch, institution, bucket, read));
  }

  /**
   * Run a reading pass over one read transaction, a snapshot of the
   * environment, handing the thread back to the shard's tasks each time
   * the pass yields (every VERIFY_CHUNK records or so). A long pass then
   * delays a commit by one chunk's time, not by the whole pass. The
   * snapshot keeps the pages it reads until the pass ends, so the file may
   * grow meanwhile.
   */
  private async paced<T>(pass: (read: ReadOptions) => Generator<void, T>): Promise<T> {
    const transaction = this.dbs.env.useReadTransaction();
    try {
      const steps = pass({ transaction });
      for (;;) {
        const step = steps.next();
        if (step.done === true) return step.value;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      transaction.done();
    }
  }

  /** An institution's index entries summed by id (see indexedValues), yielding every VERIFY_CHUNK entries or so. */
  private *indexedPass(batch: string, institution: string, read: ReadOptions): Generator<void, Map<string, number>> {
    const net = new Map<string, number>();
    let entriesRead = 0;
    for (const entries of institutionIndexRecords(this.dbs, batch, institution, read)) {
      addIndexed(net, entries);
      if ((entriesRead += entries.length / 2) >= VERIFY_CHUNK) {
        entriesRead = 0;
        yield;
      }
    }
    return net;
  }

  private *bucketEntriesPass(batch: string, institution: string, bucket: number, read: ReadOptions): Generator<void, BucketInstruction[]> {
    const net = yield* this.indexedPass(batch, institution, read);
    const out: BucketInstruction[] = [];
    for (const [id, value] of net) {
      if (Math.abs(value) - 1 !== bucket) continue;
      const key = instructionKey(institution, id);
      out.push({ id, sign: value > 0 ? 1 : -1, record: checkStoredInstruction(this.dbs.ins.get(key, read), key) });
    }
    return out;
  }

  /**
   * Law 6: recompute a batch's flows, digest buckets and bucket index from
   * the instruction log and compare them with the stored ones, everything
   * read through `read` (one snapshot). It yields between chunks of work.
   */
  private *verifyPass(batch: string, read: ReadOptions): Generator<void, VerifyReport> {
    const flows = new FlowBook();
    const buckets = new Map<string, { count: number; amount: bigint; acc: DigestAccumulator }>();
    const touch = (key: string): { count: number; amount: bigint; acc: DigestAccumulator } => {
      let b = buckets.get(key);
      if (b === undefined) {
        b = { count: 0, amount: 0n, acc: new DigestAccumulator() };
        buckets.set(key, b);
      }
      return b;
    };
    // The drill-down's index: per institution, each id with its entries summed (see indexedValues).
    const listed = new Map<string, Map<string, number>>();
    const list = (institution: string, id: string, n: number, sign: 1 | -1): void => {
      let l = listed.get(institution);
      if (l === undefined) {
        l = new Map();
        listed.set(institution, l);
      }
      addIndexEntry(l, id, bucketIndexValue(n, sign));
    };
    let instructions = 0;
    let cleared = 0;
    for (const { key, value } of this.dbs.ins.getRange({ ...read })) {
      const rec = checkStoredInstruction(value, key);
      if (++instructions % VERIFY_CHUNK === 0) yield;
      const [institution, id] = splitInstructionKey(key);
      const [hi, lo] = lineOf(institution, id, rec);
      const n = bucketOfHigh(hi);
      const bucketKeyOf = `${institution}|${n}`;
      if (rec.b === batch && (rec.s === 'cleared' || rec.s === 'reversed')) {
        cleared++;
        applyToFlow(flows.touch(rec.p, rec.q), rec.p, BigInt(rec.a), 1);
        const b = touch(bucketKeyOf);
        b.count++;
        b.amount += BigInt(rec.a);
        b.acc.add(hi, lo, 1);
        list(institution, id, n, 1);
      }
      if (rec.s === 'reversed' && rec.rb === batch) {
        applyToFlow(flows.touch(rec.q, rec.p), rec.q, BigInt(rec.a), 1);
        const b = touch(bucketKeyOf);
        b.count--;
        b.amount -= BigInt(rec.a);
        b.acc.add(hi, lo, -1);
        list(institution, id, n, -1);
      }
    }
    const stored = BatchFigures.load(this.dbs, batch, read);
    yield;
    const storedFlows = new FlowBook();
    for (const f of stored.flows()) storedFlows.add(f);
    const mismatches: string[] = [];
    const compareFlows = (name: string, book: FlowBook): void => {
      for (const f of flows.values()) {
        const other = book.get(f.a, f.b);
        if (other === undefined || !flowsEqual(f, other)) mismatches.push(`${name} flow ${f.a}|${f.b}`);
      }
      for (const f of book.values()) {
        if (flows.get(f.a, f.b) === undefined && !flowIsZero(f)) mismatches.push(`${name} flow ${f.a}|${f.b} (extra)`);
      }
    };
    compareFlows('stored', storedFlows);
    const storedBuckets = stored.buckets();
    const compareBuckets = (name: string, got: Map<string, BucketFigures>): void => {
      const keys = new Set([...buckets.keys(), ...got.keys()]);
      for (const key of keys) {
        const want = buckets.get(key);
        const have = got.get(key);
        const wantDigest = want?.acc.fold() ?? 0n;
        if ((want?.count ?? 0) !== (have?.count ?? 0) || (want?.amount ?? 0n) !== (have?.amount ?? 0n) || wantDigest !== (have?.digest ?? 0n)) {
          mismatches.push(`${name} bucket ${key}`);
        }
      }
    };
    compareBuckets('stored', storedBuckets);
    const institutions = new Set(listed.keys());
    let seen = 0;
    for (const institution of indexedInstitutions(this.dbs, batch, read)) {
      institutions.add(institution);
      if (++seen % VERIFY_CHUNK === 0) yield;
    }
    for (const institution of institutions) {
      // Between institutions too, so that many small ones do not add up to a long stretch.
      yield;
      const want = listed.get(institution) ?? new Map<string, number>();
      const have = yield* this.indexedPass(batch, institution, read);
      const wrong = [...new Set([...want.keys(), ...have.keys()])].filter((k) => want.get(k) !== have.get(k));
      if (wrong.length > 0) mismatches.push(`bucket index of ${institution}: ${wrong.slice(0, 3).join(', ')}${wrong.length > 3 ? ` and ${wrong.length - 3} more` : ''}`);
    }
    return { shard: this.shard, batch, instructions, cleared, matches: mismatches.length === 0, mismatches };
  }
}
