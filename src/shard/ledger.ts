/**
 * One shard's ledger, owned by exactly one worker thread: it books
 * instructions into the shard's LMDB environment and keeps the shard's pair
 * flows for the open batch in memory.
 *
 * Tasks of one shard are applied strictly one after another: a task's puts
 * are issued in one event turn (so LMDB commits them in one transaction)
 * and the next task starts only after that commit. If a commit fails, the
 * in-memory flows are reloaded from disk, which is the truth, and the task
 * fails as a whole: none of its items was acknowledged.
 */

import { applyToFlow, FlowBook, flowsEqual, type PairFlow } from '../core/netting.js';
import { assert } from '../core/assert.js';
import {
  checkStoredInstruction,
  flowFromStored,
  flowKey,
  flowRange,
  flowToStored,
  instructionKey,
  storedContentKey,
  type ShardDbs,
  type StoredInstruction,
} from '../store/schema.js';
import { contentKey } from '../core/instruction.js';
import { W, type ApplyResult, type ApplyTask, type ItemClash, type VerifyReport } from './tasks.js';

export class ShardLedger {
  private readonly book = new FlowBook();
  private batch: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly shard: number,
    private readonly dbs: ShardDbs,
    batch: string,
  ) {
    this.batch = batch;
    this.loadBook();
  }

  flows(): PairFlow[] {
    return [...this.book.values()].map((f) => ({ ...f }));
  }

  /** Queue a task behind the shard's previous one. */
  apply(task: ApplyTask): Promise<ApplyResult> {
    const run = this.chain.then(() => this.applyNow(task));
    this.chain = run.catch(() => undefined);
    return run;
  }

  verify(batch: string): Promise<VerifyReport> {
    const run = this.chain.then(() => this.verifyNow(batch));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private loadBook(): void {
    this.book.clear();
    for (const { key, value } of this.dbs.pos.getRange(flowRange(this.batch))) {
      const [, a, b] = key.split('|');
      assert(a !== undefined && b !== undefined && a < b, `bad flow key ${key}`);
      this.book.add(flowFromStored(a, b, value));
    }
  }

  private async applyNow(task: ApplyTask): Promise<ApplyResult> {
    assert(task.shard === this.shard, `task for shard ${task.shard} sent to shard ${this.shard}`);
    if (task.batch !== this.batch) {
      this.batch = task.batch;
      this.loadBook();
    }
    const { ins, pos } = this.dbs;
    const items = task.items;
    const results: (ItemClash | null)[] = new Array(items.length);
    const deltas = new FlowBook();
    // The router never sends one id twice in flight; this is the shard's own check of that.
    const booked = new Map<string, string>();
    let commit: Promise<boolean> | undefined;

    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      const key = instructionKey(item[W.Institution], item[W.Id]);
      const content = contentKey({
        type: item[W.Type],
        payer: item[W.Payer],
        payee: item[W.Payee],
        amount: item[W.Amount],
        twoPhase: false,
        reference: item[W.Reference] ?? undefined,
      });
      const earlier = booked.get(key);
      if (earlier !== undefined) {
        results[i] = { conflict: earlier !== content, status: 'cleared', batch: task.batch };
        continue;
      }
      const stored = ins.get(key);
      if (stored !== undefined) {
        const rec = checkStoredInstruction(stored, key);
        const clash: ItemClash = { conflict: storedContentKey(rec) !== content, status: rec.s };
        if (rec.b !== undefined) clash.batch = rec.b;
        results[i] = clash;
        continue;
      }
      const rec: StoredInstruction = {
        t: item[W.Type],
        p: item[W.Payer],
        q: item[W.Payee],
        a: item[W.Amount],
        s: 'cleared',
        b: task.batch,
        at: task.now,
        ct: task.now,
      };
      const reference = item[W.Reference];
      if (reference !== null) rec.r = reference;
      commit = ins.put(key, rec);
      booked.set(key, content);
      const amount = BigInt(item[W.Amount]);
      applyToFlow(this.book.touch(rec.p, rec.q), rec.p, amount, 1);
      applyToFlow(deltas.touch(rec.p, rec.q), rec.p, amount, 1);
      results[i] = null;
    }
    for (const d of deltas.values()) {
      const flow = this.book.get(d.a, d.b);
      assert(flow !== undefined, 'a delta without its flow');
      commit = pos.put(flowKey(this.batch, d.a, d.b), flowToStored(flow));
    }
    if (commit !== undefined) {
      try {
        const ok = await commit;
        assert(ok, 'an unconditional put reported failure');
      } catch (err) {
        this.loadBook();
        throw err;
      }
    }
    return { results, deltas: [...deltas.values()] };
  }

  /** Law 6: recompute the batch's flows from the instruction log and compare. */
  private verifyNow(batch: string): VerifyReport {
    const recomputed = new FlowBook();
    let instructions = 0;
    let cleared = 0;
    for (const { key, value } of this.dbs.ins.getRange({})) {
      const rec = checkStoredInstruction(value, key);
      instructions++;
      if (rec.b === batch && rec.s === 'cleared') {
        cleared++;
        applyToFlow(recomputed.touch(rec.p, rec.q), rec.p, BigInt(rec.a), 1);
      }
    }
    const stored = new FlowBook();
    for (const { key, value } of this.dbs.pos.getRange(flowRange(batch))) {
      const [, a, b] = key.split('|');
      assert(a !== undefined && b !== undefined, `bad flow key ${key}`);
      stored.add(flowFromStored(a, b, value));
    }
    const mismatches: string[] = [];
    const compare = (name: string, book: FlowBook): void => {
      for (const f of recomputed.values()) {
        const other = book.get(f.a, f.b);
        if (other === undefined || !flowsEqual(f, other)) mismatches.push(`${name} ${f.a}|${f.b}`);
      }
      for (const f of book.values()) {
        if (recomputed.get(f.a, f.b) === undefined && !(f.aToB === 0n && f.bToA === 0n)) mismatches.push(`${name} ${f.a}|${f.b} (extra)`);
      }
    };
    compare('stored', stored);
    if (batch === this.batch) compare('memory', this.book);
    return { shard: this.shard, batch, instructions, cleared, matches: mismatches.length === 0, mismatches };
  }
}
