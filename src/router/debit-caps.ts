/**
 * Debit caps (`debitCapCents`), as PROTOCOL.md has them: an instruction is
 * refused when its payer's `paid − received + pendingDebit + amount` in the
 * open batch would pass the cap, counting what is in flight too. Pending
 * debits are carried over a cut-off into the next batch, which opens with
 * no credits to offset them: a bank whose carried reservations exceed its
 * cap is over it there until credits arrive or they end, and no new debit
 * of it is admitted meanwhile. The simulator's cap law says exactly that
 * (test/sim/simulator.ts).
 *
 * The decision is made on the main thread, in the router, at the moment an
 * instruction is routed: one thread sees every instruction of every shard
 * in one order, so no interleaving of shards can take a bank past its cap.
 * A debit is reserved when routed and stays counted until its commit is in
 * the live view (as paid, or as pending); a credit counts only once it is
 * committed. So the exposure used for a decision is never below the truth.
 */

import type { LiveView } from '../view/live-view.js';

export class DebitCaps {
  private readonly caps = new Map<string, bigint>();
  /** Single-phase debits routed and not yet committed, by batch then bank. */
  private readonly inflight = new Map<string, Map<string, bigint>>();
  /** Two-phase debits routed and not yet committed: they become pending, whatever the batch. */
  private readonly inflightPending = new Map<string, bigint>();

  constructor(
    banks: readonly { code: string; debitCapCents?: number }[],
    private readonly view: LiveView,
  ) {
    for (const b of banks) if (b.debitCapCents !== undefined) this.caps.set(b.code, BigInt(b.debitCapCents));
  }

  cap(bank: string): bigint | undefined {
    return this.caps.get(bank);
  }

  /**
   * paid − received in `batch` (the batch the router routes into), plus
   * pending, plus everything in flight for that batch. During a cut-off the
   * router already routes into the next batch while the live view still
   * shows the closing one; the next batch has nothing committed yet, and its
   * reservations are counted under its own id.
   */
  exposure(bank: string, batch: string = this.view.batch): bigint {
    return this.view.netDebit(bank, batch) + this.view.pendingDebit(bank) + (this.inflight.get(batch)?.get(bank) ?? 0n) + (this.inflightPending.get(bank) ?? 0n);
  }

  /**
   * Reserve `amount` for `payer` in `batch`, or say no. Banks without a cap
   * are not tracked at all, so they cost nothing here.
   */
  reserve(payer: string, amount: number, twoPhase: boolean, batch: string): boolean {
    const cap = this.caps.get(payer);
    if (cap === undefined) return true;
    const a = BigInt(amount);
    if (this.exposure(payer, batch) + a > cap) return false;
    this.add(payer, a, twoPhase, batch);
    return true;
  }

  /** The routed debit is now committed (or was refused by the shard): stop counting it as in flight. */
  release(payer: string, amount: number, twoPhase: boolean, batch: string): void {
    if (!this.caps.has(payer)) return;
    this.add(payer, -BigInt(amount), twoPhase, batch);
  }

  private add(payer: string, a: bigint, twoPhase: boolean, batch: string): void {
    if (twoPhase) {
      this.inflightPending.set(payer, (this.inflightPending.get(payer) ?? 0n) + a);
      return;
    }
    let m = this.inflight.get(batch);
    if (m === undefined) {
      m = new Map();
      this.inflight.set(batch, m);
    }
    const v = (m.get(payer) ?? 0n) + a;
    if (v === 0n) m.delete(payer);
    else m.set(payer, v);
    if (m.size === 0) this.inflight.delete(batch);
  }
}
