/**
 * The real-time positions of the open batch, combined across shards on the
 * main thread. It changes only by committed deltas that shards report, so
 * it never shows an instruction that is not durable; each delta is applied
 * in one event turn, so every read is a consistent state.
 */

import { assert } from '../core/assert.js';
import { bankPositions, bilateralOf, FlowBook, nettingTotals, type BankPosition, type CounterpartyPosition, type NettingTotals, type PairFlow } from '../core/netting.js';

export interface PositionsOverview {
  batch: string;
  seq: number;
  banks: BankPosition[];
  totals: NettingTotals;
}

export interface BankDetail {
  position: BankPosition;
  counterparties: CounterpartyPosition[];
}

export class PositionsView {
  private readonly book = new FlowBook();
  /** Increases with every change; readers can tell two views apart. */
  private version = 0;

  constructor(
    private readonly banks: readonly string[],
    private batchId: string,
  ) {}

  get batch(): string {
    return this.batchId;
  }

  get seq(): number {
    return this.version;
  }

  /** Start a batch's view from the flows the shards recovered. */
  reset(batch: string, flows: Iterable<PairFlow>): void {
    this.batchId = batch;
    this.book.clear();
    for (const f of flows) this.book.add(f);
    this.version++;
  }

  apply(deltas: readonly PairFlow[]): void {
    if (deltas.length === 0) return;
    for (const d of deltas) this.book.add(d);
    this.version++;
  }

  overview(): PositionsOverview {
    const banks = bankPositions(this.banks, this.book.values());
    return { batch: this.batchId, seq: this.version, banks, totals: nettingTotals(this.book.values(), banks) };
  }

  bank(code: string): BankDetail {
    const rows = bankPositions(this.banks, this.book.values());
    const position = rows.find((r) => r.bank === code);
    assert(position !== undefined, `unknown bank ${code}`);
    const counterparties: CounterpartyPosition[] = [];
    for (const other of this.banks) {
      if (other === code) continue;
      const flow = this.book.get(code, other);
      counterparties.push(flow === undefined ? { bank: other, paid: 0n, received: 0n, net: 0n } : bilateralOf(flow, code));
    }
    let sum = 0n;
    for (const c of counterparties) sum += c.net;
    assert(sum === position.net, `net(${code}) ≠ Σ bilateral nets`);
    return { position, counterparties };
  }
}
