/**
 * The engine's real-time state, on the main thread: per batch, the pair
 * flows and per-institution digests, combined across shards from the
 * deltas that shards report after each commit; and the pending debits of
 * two-phase instructions. It never shows anything that is not durable, and
 * each delta is applied in one event turn, so every read is a consistent
 * state: exactly the instructions acknowledged so far.
 */

import { assert } from '../core/assert.js';
import { addDigest } from '../core/digest.js';
import { bankPositions, bilateralOf, FlowBook, nettingTotals, type BankPosition, type CounterpartyPosition, type NettingTotals } from '../core/netting.js';
import type { BatchSummary, InstitutionTotals } from '../shard/tasks.js';

export interface BatchState {
  batch: string;
  flows: FlowBook;
  institutions: Map<string, InstitutionTotals>;
  /** paid − received per bank, kept as deltas arrive so debit-cap checks cost O(1). */
  netDebit: Map<string, bigint>;
}

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

function emptyState(batch: string): BatchState {
  return { batch, flows: new FlowBook(), institutions: new Map(), netDebit: new Map() };
}

export class LiveView {
  private readonly states = new Map<string, BatchState>();
  private openId: string;
  private version = 0;
  /** Σ amounts of committed pending two-phase instructions, by payer bank. */
  private readonly pending = new Map<string, bigint>();

  constructor(
    private readonly banks: readonly string[],
    open: string,
  ) {
    this.openId = open;
    this.states.set(open, emptyState(open));
  }

  get batch(): string {
    return this.openId;
  }

  /** Increases with every change; two reads with the same seq saw the same state. */
  get seq(): number {
    return this.version;
  }

  /** Make `batch` the open one; deltas of earlier batches may still arrive and go to their own state. */
  open(batch: string): void {
    this.openId = batch;
    if (!this.states.has(batch)) this.states.set(batch, emptyState(batch));
    this.version++;
  }

  apply(delta: BatchSummary): void {
    if (delta.flows.length === 0 && delta.institutions.length === 0) return;
    let state = this.states.get(delta.batch);
    if (state === undefined) {
      state = emptyState(delta.batch);
      this.states.set(delta.batch, state);
    }
    for (const f of delta.flows) {
      state.flows.add(f);
      const aDebit = f.aToB - f.bToA;
      state.netDebit.set(f.a, (state.netDebit.get(f.a) ?? 0n) + aDebit);
      state.netDebit.set(f.b, (state.netDebit.get(f.b) ?? 0n) - aDebit);
    }
    for (const t of delta.institutions) {
      const have = state.institutions.get(t.institution);
      if (have === undefined) {
        state.institutions.set(t.institution, { ...t });
      } else {
        have.count += t.count;
        have.amount += t.amount;
        have.digest = addDigest(have.digest, t.digest);
      }
    }
    this.version++;
  }

  addPending(payer: string, amount: bigint): void {
    this.pending.set(payer, (this.pending.get(payer) ?? 0n) + amount);
    assert(this.pending.get(payer)! >= 0n, `pending debit of ${payer} went negative`);
    this.version++;
  }

  /** paid − received of `bank` in the open batch. */
  netDebit(bank: string): bigint {
    return this.states.get(this.openId)?.netDebit.get(bank) ?? 0n;
  }

  pendingDebit(bank: string): bigint {
    return this.pending.get(bank) ?? 0n;
  }

  state(batch: string): BatchState | undefined {
    return this.states.get(batch);
  }

  /** Hand over a batch's final state (at its close) and forget it. */
  take(batch: string): BatchState {
    assert(batch !== this.openId, 'the open batch cannot be taken');
    const state = this.states.get(batch) ?? emptyState(batch);
    this.states.delete(batch);
    return state;
  }

  overview(batch: string = this.openId): PositionsOverview {
    const state = this.states.get(batch) ?? emptyState(batch);
    const banks = bankPositions(this.banks, state.flows.values());
    return { batch, seq: this.version, banks, totals: nettingTotals(state.flows.values(), banks) };
  }

  bank(code: string): BankDetail {
    const state = this.states.get(this.openId)!;
    const rows = bankPositions(this.banks, state.flows.values());
    const position = rows.find((r) => r.bank === code);
    assert(position !== undefined, `unknown bank ${code}`);
    const counterparties: CounterpartyPosition[] = [];
    let sum = 0n;
    for (const other of this.banks) {
      if (other === code) continue;
      const flow = state.flows.get(code, other);
      const c = flow === undefined ? { bank: other, paid: 0n, received: 0n, net: 0n } : bilateralOf(flow, code);
      sum += c.net;
      counterparties.push(c);
    }
    assert(sum === position.net, `net(${code}) ≠ Σ bilateral nets`);
    return { position, counterparties };
  }

  institutions(batch: string = this.openId): InstitutionTotals[] {
    const state = this.states.get(batch);
    return state === undefined ? [] : [...state.institutions.values()].sort((a, b) => (a.institution < b.institution ? -1 : 1));
  }
}
