/**
 * The engine's real-time state, on the main thread: per batch, the pair
 * flows and per-institution digests, combined across shards from the
 * deltas that shards report after each commit; and the pending debits of
 * two-phase instructions. It never shows anything that is not durable, and
 * each delta is applied in one event turn, so every read is a consistent
 * state: exactly the instructions acknowledged so far.
 */

import { assert } from '../core/assert.js';
import { addInstitutionTotals, subDigest } from '../core/digest.js';
import { bankPositions, bilateralOf, FlowBook, nettingTotals, type BankPosition, type CounterpartyPosition, type NettingTotals } from '../core/netting.js';
import type { BatchSummary, InstitutionTotals } from '../shard/tasks.js';

interface Totals {
  flows: FlowBook;
  institutions: Map<string, InstitutionTotals>;
  /** paid − received per bank, kept as deltas arrive so debit-cap checks cost O(1). */
  netDebit: Map<string, bigint>;
}

export interface BatchState extends Totals {
  batch: string;
  /** Each shard's share, so one shard can be resynchronised from disk after its worker died. */
  shards: Map<number, Totals>;
}

function emptyTotals(): Totals {
  return { flows: new FlowBook(), institutions: new Map(), netDebit: new Map() };
}

/** Add a summary into totals (sign 1), or take it out (sign -1). */
function accumulate(into: Totals, s: BatchSummary, sign: 1 | -1): void {
  const k = BigInt(sign);
  for (const f of s.flows) {
    into.flows.add({ a: f.a, b: f.b, aToB: k * f.aToB, bToA: k * f.bToA, countAToB: sign * f.countAToB, countBToA: sign * f.countBToA });
    const aDebit = k * (f.aToB - f.bToA);
    into.netDebit.set(f.a, (into.netDebit.get(f.a) ?? 0n) + aDebit);
    into.netDebit.set(f.b, (into.netDebit.get(f.b) ?? 0n) - aDebit);
  }
  for (const t of s.institutions) {
    addInstitutionTotals(into.institutions, t.institution, sign * t.count, k * t.amount, sign === 1 ? t.digest : subDigest(0n, t.digest));
  }
}

function asSummary(batch: string, t: Totals): BatchSummary {
  return { batch, flows: [...t.flows.values()].map((f) => ({ ...f })), institutions: [...t.institutions.values()].map((i) => ({ ...i })) };
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
  return { batch, ...emptyTotals(), shards: new Map() };
}

export class LiveView {
  private readonly states = new Map<string, BatchState>();
  private openId: string;
  private version = 0;
  /** Σ amounts of committed pending two-phase instructions, by payer bank. */
  private readonly pending = new Map<string, bigint>();
  /** The same by shard, then payer bank, for resynchronising one shard. */
  private readonly pendingByShard = new Map<number, Map<string, bigint>>();

  private readonly participants: ReadonlySet<string>;

  constructor(
    private readonly banks: readonly string[],
    open: string,
  ) {
    this.participants = new Set(banks);
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

  private stateOf(batch: string): BatchState {
    let state = this.states.get(batch);
    if (state === undefined) {
      state = emptyState(batch);
      this.states.set(batch, state);
    }
    return state;
  }

  private partOf(state: BatchState, shard: number): Totals {
    let part = state.shards.get(shard);
    if (part === undefined) {
      part = emptyTotals();
      state.shards.set(shard, part);
    }
    return part;
  }

  /** Add what one committed task (or one recovered shard) brings to its batch. */
  apply(delta: BatchSummary, shard: number): void {
    if (delta.flows.length === 0 && delta.institutions.length === 0) return;
    const state = this.stateOf(delta.batch);
    accumulate(state, delta, 1);
    accumulate(this.partOf(state, shard), delta, 1);
    this.version++;
  }

  /**
   * Replace one shard's share of a batch by what its disk holds: after its
   * worker died, commits it made may never have been reported.
   */
  replaceShard(shard: number, summary: BatchSummary): void {
    const state = this.states.get(summary.batch);
    assert(state !== undefined, `batch ${summary.batch} is not in the live view`);
    const part = this.partOf(state, shard);
    accumulate(state, asSummary(summary.batch, part), -1);
    const fresh = emptyTotals();
    accumulate(fresh, summary, 1);
    accumulate(state, summary, 1);
    state.shards.set(shard, fresh);
    this.version++;
  }

  addPending(shard: number, payer: string, amount: bigint): void {
    this.pending.set(payer, (this.pending.get(payer) ?? 0n) + amount);
    assert(this.pending.get(payer)! >= 0n, `pending debit of ${payer} went negative`);
    let m = this.pendingByShard.get(shard);
    if (m === undefined) {
      m = new Map();
      this.pendingByShard.set(shard, m);
    }
    m.set(payer, (m.get(payer) ?? 0n) + amount);
    this.version++;
  }

  /** Replace one shard's pending debits by the pending instructions its disk holds. */
  replacePending(shard: number, pending: readonly { payer: string; amount: number }[]): void {
    for (const [payer, amount] of this.pendingByShard.get(shard) ?? []) this.pending.set(payer, (this.pending.get(payer) ?? 0n) - amount);
    this.pendingByShard.delete(shard);
    for (const p of pending) this.addPending(shard, p.payer, BigInt(p.amount));
  }

  /** paid − received of `bank` in `batch` (by default the open one), as committed so far. */
  netDebit(bank: string, batch: string = this.openId): bigint {
    return this.states.get(batch)?.netDebit.get(bank) ?? 0n;
  }

  pendingDebit(bank: string): bigint {
    return this.pending.get(bank) ?? 0n;
  }

  /** The batches the view holds: the open one, and one being closed. */
  batches(): string[] {
    return [...this.states.keys()].sort();
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

  /**
   * Σ of the participants' nets in `batch`, read without asserting that it
   * is zero, for the conservation gauge: a scrape must be able to show the
   * break that overview() refuses to report. A flow naming a bank that is
   * not a participant counts for its participant side only, which is how
   * such a flow shows here.
   */
  conservationImbalance(batch: string = this.openId): bigint {
    const state = this.states.get(batch);
    if (state === undefined) return 0n;
    let sum = 0n;
    for (const f of state.flows.values()) {
      // net(a) = received − paid = bToA − aToB, and net(b) the opposite.
      if (this.participants.has(f.a)) sum += f.bToA - f.aToB;
      if (this.participants.has(f.b)) sum += f.aToB - f.bToA;
    }
    return sum;
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
