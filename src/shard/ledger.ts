/**
 * One shard's ledger, owned by exactly one worker thread: it books
 * instructions and their lifecycle into the shard's LMDB environment and
 * keeps, for the batch being written, the shard's pair flows and digest
 * buckets in memory.
 *
 * Tasks of one shard are applied strictly one after another: a task's
 * writes are issued in one event turn (so LMDB commits them in one
 * transaction) and the next task starts only after that commit. If a
 * commit fails, the in-memory state is reloaded from disk, which is the
 * truth, and the task fails as a whole: none of its operations was
 * acknowledged.
 */

import { assert } from '../core/assert.js';
import { addDigest, bucketOfHigh, digestFromHex, digestHex, digestLine, fnv1a64Halves, DigestAccumulator } from '../core/digest.js';
import { contentKey } from '../core/instruction.js';
import { centsFromWire, centsToWire } from '../core/money.js';
import { applyToFlow, FlowBook, flowIsZero, flowsEqual } from '../core/netting.js';
import {
  bucketIndexKey,
  bucketKey,
  bucketRange,
  checkStoredInstruction,
  flowFromStored,
  flowKey,
  flowRange,
  flowToStored,
  instructionKey,
  splitInstructionKey,
  storedContentKey,
  type ShardDbs,
  type StoredInstruction,
} from '../store/schema.js';
import { S, type ApplyResult, type ApplyTask, type BatchSummary, type InstitutionTotals, type OpOutcome, type PendingEntry, type SubmitOp, type VerifyReport } from './tasks.js';

interface Bucket {
  count: number;
  amount: bigint;
  digest: bigint;
}

/** What one task does to one digest bucket, accumulated without BigInt per instruction. */
class BucketDelta {
  count = 0;
  amount = 0n;
  readonly digest = new DigestAccumulator();
}

function lineOf(institution: string, id: string, r: StoredInstruction): [number, number] {
  return fnv1a64Halves(digestLine(institution, id, r.p, r.q, r.a));
}

function parseBucketKey(key: string): [string, number] {
  const parts = key.split('|');
  assert(parts.length >= 3, `bad bucket key ${key}`);
  return [parts[1]!, Number(parts[2])];
}

/** Sum a shard's buckets into per-institution totals. */
function institutionTotals(buckets: Iterable<[string, Bucket]>): InstitutionTotals[] {
  const byInstitution = new Map<string, InstitutionTotals>();
  for (const [key, b] of buckets) {
    const institution = key.slice(0, key.indexOf('|'));
    let t = byInstitution.get(institution);
    if (t === undefined) {
      t = { institution, count: 0, amount: 0n, digest: 0n };
      byInstitution.set(institution, t);
    }
    t.count += b.count;
    t.amount += b.amount;
    t.digest = addDigest(t.digest, b.digest);
  }
  return [...byInstitution.values()];
}

export class ShardLedger {
  private readonly book = new FlowBook();
  /** '<institution>|<bucket>' → sums, for `batch`. */
  private readonly buckets = new Map<string, Bucket>();
  private batch: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly shard: number,
    private readonly dbs: ShardDbs,
    batch: string,
    private readonly bytesMax: number,
  ) {
    this.batch = batch;
    this.load();
  }

  /** Queue work behind the shard's previous task, so the shard has one writer in order. */
  private serial<T>(work: () => T | Promise<T>): Promise<T> {
    const run = this.chain.then(work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  apply(task: ApplyTask): Promise<ApplyResult> {
    return this.serial(() => this.applyNow(task));
  }

  verify(batch: string): Promise<VerifyReport> {
    return this.serial(() => this.verifyNow(batch));
  }

  summary(batch: string): Promise<BatchSummary> {
    return this.serial(() => this.summaryFromDisk(batch));
  }

  /** Bytes of the environment in use: its pages up to the highest one written. */
  usedBytes(): number {
    const st = this.dbs.env.getStats() as { pageSize: number; lastPageNumber: number };
    return (st.lastPageNumber + 1) * st.pageSize;
  }

  pending(): PendingEntry[] {
    const out: PendingEntry[] = [];
    for (const key of this.dbs.pnd.getKeys({})) {
      const rec = checkStoredInstruction(this.dbs.ins.get(key), key);
      assert(rec.s === 'pending', `pending index names ${key} which is ${rec.s}`);
      const [institution, id] = splitInstructionKey(key);
      const p: PendingEntry = { institution, id, type: rec.t, payer: rec.p, payee: rec.q, amount: rec.a, acceptedAt: rec.at, deadline: rec.dl! };
      if (rec.r !== undefined) p.reference = rec.r;
      out.push(p);
    }
    return out;
  }

  /** The stored state of a batch: its flows and per-institution digests. */
  summaryFromDisk(batch: string): BatchSummary {
    const flows = new FlowBook();
    for (const { key, value } of this.dbs.pos.getRange(flowRange(batch))) {
      const [, a, b] = key.split('|');
      assert(a !== undefined && b !== undefined && a < b, `bad flow key ${key}`);
      flows.add(flowFromStored(a, b, value));
    }
    const buckets: [string, Bucket][] = [];
    for (const { key, value } of this.dbs.dig.getRange(bucketRange(batch))) {
      const [institution, n] = parseBucketKey(key);
      buckets.push([`${institution}|${n}`, { count: value.n, amount: centsFromWire(value.amt), digest: digestFromHex(value.dig) }]);
    }
    return { batch, flows: [...flows.values()], institutions: institutionTotals(buckets) };
  }

  private load(): void {
    const s = this.summaryFromDisk(this.batch);
    this.book.clear();
    for (const f of s.flows) this.book.add(f);
    this.buckets.clear();
    for (const { key, value } of this.dbs.dig.getRange(bucketRange(this.batch))) {
      const [institution, n] = parseBucketKey(key);
      this.buckets.set(`${institution}|${n}`, { count: value.n, amount: centsFromWire(value.amt), digest: digestFromHex(value.dig) });
    }
  }

  private async applyNow(task: ApplyTask): Promise<ApplyResult> {
    assert(task.shard === this.shard, `task for shard ${task.shard} sent to shard ${this.shard}`);
    const started = performance.now();
    if (task.batch !== this.batch) {
      // The router seals a batch before it routes into the next one, so a shard never goes back.
      assert(task.batch > this.batch, `task for batch ${task.batch} after batch ${this.batch}`);
      this.batch = task.batch;
      this.load();
    }
    const { ins, pos, dig, bkt, pnd } = this.dbs;
    const batch = task.batch;
    const now = task.now;
    const outcomes: (OpOutcome | null)[] = new Array(task.ops.length);
    // Past its storage limit a shard takes no new instructions; lifecycle changes of stored ones still go through.
    const full = this.usedBytes() >= this.bytesMax;
    const flowDelta = new FlowBook();
    const bucketDeltas = new Map<string, BucketDelta>();
    // Records written by this task, which reads must see before the commit.
    const written = new Map<string, StoredInstruction>();
    let commit: Promise<boolean> | undefined;

    const read = (key: string): StoredInstruction | undefined => {
      const w = written.get(key);
      if (w !== undefined) return w;
      const v = ins.get(key);
      return v === undefined ? undefined : checkStoredInstruction(v, key);
    };
    const write = (key: string, rec: StoredInstruction): void => {
      written.set(key, rec);
      commit = ins.put(key, rec);
    };
    const flow = (payer: string, payee: string, amount: number): void => {
      const a = BigInt(amount);
      applyToFlow(this.book.touch(payer, payee), payer, a, 1);
      applyToFlow(flowDelta.touch(payer, payee), payer, a, 1);
    };
    const digest = (institution: string, id: string, rec: StoredInstruction, sign: 1 | -1): void => {
      const [hi, lo] = lineOf(institution, id, rec);
      const n = bucketOfHigh(hi);
      const key = `${institution}|${n}`;
      let d = bucketDeltas.get(key);
      if (d === undefined) {
        d = new BucketDelta();
        bucketDeltas.set(key, d);
      }
      d.count += sign;
      d.amount += sign === 1 ? BigInt(rec.a) : -BigInt(rec.a);
      d.digest.add(hi, lo, sign);
      if (sign === 1) {
        commit = bkt.put(bucketIndexKey(batch, institution, n, id), 1);
      } else if (rec.b === batch) {
        // Cleared and reversed in the same batch: it leaves the batch's listing altogether.
        commit = bkt.remove(bucketIndexKey(batch, institution, n, id));
      } else {
        commit = bkt.put(bucketIndexKey(batch, institution, n, id), -1);
      }
    };

    for (let i = 0; i < task.ops.length; i++) {
      const op = task.ops[i]!;
      const institution = op[1];
      const id = op[2];
      const key = instructionKey(institution, id);
      const rec = read(key);
      if (op[0] === 'S') {
        if (full && rec === undefined) {
          outcomes[i] = { status: 'missing', refused: 'STORAGE_FULL' };
          continue;
        }
        if (rec !== undefined) {
          const o: OpOutcome = { status: rec.s, conflict: storedContentKey(rec) !== submittedContent(op) };
          if (rec.b !== undefined) o.batch = rec.b;
          outcomes[i] = o;
          continue;
        }
        const created: StoredInstruction = { t: op[S.Type], p: op[S.Payer], q: op[S.Payee], a: op[S.Amount], s: 'cleared', at: now };
        const reference = op[S.Reference];
        if (reference !== null) created.r = reference;
        const timeoutMs = op[S.TimeoutMs];
        if (timeoutMs > 0) {
          created.s = 'pending';
          created.tp = 1;
          created.to = timeoutMs;
          created.dl = now + timeoutMs;
          commit = pnd.put(key, 1);
        } else {
          created.b = batch;
          created.ct = now;
          flow(created.p, created.q, created.a);
          digest(institution, id, created, 1);
        }
        write(key, created);
        outcomes[i] = null;
        continue;
      }
      if (rec === undefined) {
        outcomes[i] = { status: 'missing' };
        continue;
      }
      const kind = op[0];
      const applicable = kind === 'R' ? rec.s === 'cleared' : rec.s === 'pending';
      if (!applicable) {
        const o: OpOutcome = { status: rec.s };
        if (rec.b !== undefined) o.batch = rec.b;
        outcomes[i] = o;
        continue;
      }
      const next: StoredInstruction = { ...rec };
      if (kind === 'C') {
        next.s = 'cleared';
        next.b = batch;
        next.ct = now;
        flow(rec.p, rec.q, rec.a);
        digest(institution, id, next, 1);
        commit = pnd.remove(key);
      } else if (kind === 'D' || kind === 'X') {
        next.s = kind === 'D' ? 'declined' : 'expired';
        next.ft = now;
        const reason = op[3];
        if (reason !== null) next.rs = reason;
        commit = pnd.remove(key);
      } else {
        // A correcting entry (冲正) in the open batch: the payee pays the amount back.
        next.s = 'reversed';
        next.rb = batch;
        next.ft = now;
        flow(rec.q, rec.p, rec.a);
        digest(institution, id, rec, -1);
      }
      write(key, next);
      outcomes[i] = null;
    }

    const institutions = new Map<string, InstitutionTotals>();
    for (const [key, d] of bucketDeltas) {
      const [institution, nText] = key.split('|') as [string, string];
      const n = Number(nText);
      const dd = d.digest.fold();
      let b = this.buckets.get(key);
      if (b === undefined) {
        b = { count: 0, amount: 0n, digest: 0n };
        this.buckets.set(key, b);
      }
      b.count += d.count;
      b.amount += d.amount;
      b.digest = addDigest(b.digest, dd);
      commit = dig.put(bucketKey(batch, institution, n), { n: b.count, amt: centsToWire(b.amount), dig: digestHex(b.digest) });
      let t = institutions.get(institution);
      if (t === undefined) {
        t = { institution, count: 0, amount: 0n, digest: 0n };
        institutions.set(institution, t);
      }
      t.count += d.count;
      t.amount += d.amount;
      t.digest = addDigest(t.digest, dd);
    }
    for (const d of flowDelta.values()) {
      const f = this.book.get(d.a, d.b);
      assert(f !== undefined, 'a delta without its flow');
      commit = pos.put(flowKey(batch, d.a, d.b), flowToStored(f));
    }
    const issued = performance.now();
    if (commit !== undefined) {
      try {
        const ok = await commit;
        assert(ok, 'an unconditional write reported failure');
      } catch (err) {
        this.load();
        throw err;
      }
    }
    const done = performance.now();
    return {
      outcomes,
      applyMs: done - started,
      commitMs: done - issued,
      delta: { batch, flows: [...flowDelta.values()], institutions: [...institutions.values()] },
    };
  }

  /**
   * Law 6: recompute a batch's flows and digest buckets from the
   * instruction log and compare them with the stored ones (and, for the
   * batch in memory, the live ones).
   */
  private verifyNow(batch: string): VerifyReport {
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
    let instructions = 0;
    let cleared = 0;
    for (const { key, value } of this.dbs.ins.getRange({})) {
      const rec = checkStoredInstruction(value, key);
      instructions++;
      const [institution, id] = splitInstructionKey(key);
      const [hi, lo] = lineOf(institution, id, rec);
      const bucketKeyOf = `${institution}|${bucketOfHigh(hi)}`;
      if (rec.b === batch && (rec.s === 'cleared' || rec.s === 'reversed')) {
        cleared++;
        applyToFlow(flows.touch(rec.p, rec.q), rec.p, BigInt(rec.a), 1);
        const b = touch(bucketKeyOf);
        b.count++;
        b.amount += BigInt(rec.a);
        b.acc.add(hi, lo, 1);
      }
      if (rec.s === 'reversed' && rec.rb === batch) {
        applyToFlow(flows.touch(rec.q, rec.p), rec.q, BigInt(rec.a), 1);
        const b = touch(bucketKeyOf);
        b.count--;
        b.amount -= BigInt(rec.a);
        b.acc.add(hi, lo, -1);
      }
    }
    const stored = this.summaryFromDisk(batch);
    const storedFlows = new FlowBook();
    for (const f of stored.flows) storedFlows.add(f);
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
    if (batch === this.batch) compareFlows('memory', this.book);
    const storedBuckets = new Map<string, Bucket>();
    for (const { key, value } of this.dbs.dig.getRange(bucketRange(batch))) {
      const [institution, n] = parseBucketKey(key);
      storedBuckets.set(`${institution}|${n}`, { count: value.n, amount: centsFromWire(value.amt), digest: digestFromHex(value.dig) });
    }
    const compareBuckets = (name: string, got: Map<string, Bucket>): void => {
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
    if (batch === this.batch) compareBuckets('memory', this.buckets);
    return { shard: this.shard, batch, instructions, cleared, matches: mismatches.length === 0, mismatches };
  }
}

function submittedContent(op: SubmitOp): string {
  const timeoutMs = op[S.TimeoutMs];
  return contentKey({
    type: op[S.Type],
    payer: op[S.Payer],
    payee: op[S.Payee],
    amount: op[S.Amount],
    twoPhase: timeoutMs > 0,
    timeoutMs: timeoutMs > 0 ? timeoutMs : undefined,
    reference: op[S.Reference] ?? undefined,
  });
}
