/**
 * The engine's real-time state, on the main thread: per batch, the pair
 * flows and per-institution digests, combined across shards from the
 * deltas that shards report after each commit; and the pending debits of
 * two-phase instructions. It never shows anything that is not durable, and
 * each delta is applied in one event turn, so every read is a consistent
 * state: exactly the instructions acknowledged so far.
 */

import { assert, AssertionError } from '../core/assert.js';
import { addInstitutionTotals, subDigest } from '../core/digest.js';
import { bilateralOf, FlowBook, type BankPosition, type CounterpartyPosition, type NettingTotals, type PairFlow } from '../core/netting.js';
import type { BatchSummary, InstitutionTotals } from '../shard/tasks.js';

/** One shard's share of a batch: the flows of its pairs (no other shard has them) and its institutions' figures. */
interface ShardPart {
  flows: FlowBook;
  institutions: Map<string, InstitutionTotals>;
}

/** A bank's running figures in a batch, kept as deltas arrive so positions and caps cost O(1) per bank. */
interface BankTotals {
  paid: bigint;
  received: bigint;
  count: number;
}

export interface BatchState {
  batch: string;
  /** Each shard's share, so one shard can be resynchronised from disk after its worker died. */
  shards: Map<number, ShardPart>;
  /** Running per-bank figures, Σ over the shards' flows. */
  banks: Map<string, BankTotals>;
  /** Running per-institution figures, Σ over the shards. */
  institutions: Map<string, InstitutionTotals>;
  /** Σ amounts. */
  gross: bigint;
  /** Every pair flow of the batch, across the shards (each pair lives in one shard). */
  flows: { values(): Iterable<PairFlow> };
}

function emptyPart(): ShardPart {
  return { flows: new FlowBook(), institutions: new Map() };
}

function emptyState(batch: string): BatchState {
  const shards = new Map<number, ShardPart>();
  return {
    batch,
    shards,
    banks: new Map(),
    institutions: new Map(),
    gross: 0n,
    flows: {
      *values() {
        for (const part of shards.values()) yield* part.flows.values();
      },
    },
  };
}

function bankTotals(state: BatchState, bank: string): BankTotals {
  let t = state.banks.get(bank);
  if (t === undefined) {
    t = { paid: 0n, received: 0n, count: 0 };
    state.banks.set(bank, t);
  }
  return t;
}

/** Add a summary into a shard's part and the batch's running figures (sign 1), or take it out (sign -1). */
function accumulate(state: BatchState, part: ShardPart, s: BatchSummary, sign: 1 | -1): void {
  const k = BigInt(sign);
  for (const f of s.flows) {
    const aToB = sign === 1 ? f.aToB : -f.aToB;
    const bToA = sign === 1 ? f.bToA : -f.bToA;
    const count = sign * (f.countAToB + f.countBToA);
    part.flows.addSigned(f, sign);
    const ta = bankTotals(state, f.a);
    ta.paid += aToB;
    ta.received += bToA;
    ta.count += count;
    const tb = bankTotals(state, f.b);
    tb.paid += bToA;
    tb.received += aToB;
    tb.count += count;
    state.gross += aToB + bToA;
  }
  for (const t of s.institutions) {
    const digest = sign === 1 ? t.digest : subDigest(0n, t.digest);
    addInstitutionTotals(part.institutions, t.institution, sign * t.count, k * t.amount, digest);
    addInstitutionTotals(state.institutions, t.institution, sign * t.count, k * t.amount, digest);
  }
}

function asSummary(batch: string, part: ShardPart): BatchSummary {
  return { batch, flows: part.flows.list().map((f) => ({ ...f })), institutions: [...part.institutions.values()].map((i) => ({ ...i })) };
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

  private partOf(state: BatchState, shard: number): ShardPart {
    let part = state.shards.get(shard);
    if (part === undefined) {
      part = emptyPart();
      state.shards.set(shard, part);
    }
    return part;
  }

  /** Add what one committed task (or one recovered shard) brings to its batch. */
  apply(delta: BatchSummary, shard: number): void {
    if (delta.flows.length === 0 && delta.institutions.length === 0) return;
    const state = this.stateOf(delta.batch);
    accumulate(state, this.partOf(state, shard), delta, 1);
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
    accumulate(state, emptyPart(), asSummary(summary.batch, part), -1);
    const fresh = emptyPart();
    accumulate(state, fresh, summary, 1);
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
    const t = this.states.get(batch)?.banks.get(bank);
    return t === undefined ? 0n : t.paid - t.received;
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

  /**
   * Every participant's position and the batch totals, from the running
   * figures: O(banks), whatever the number of pairs. Conservation is
   * asserted, and so is that no flow names a bank that is not a participant.
   */
  overview(batch: string = this.openId): PositionsOverview {
    const state = this.states.get(batch) ?? emptyState(batch);
    const banks = this.rows(state);
    let sum = 0n;
    let net = 0n;
    for (const r of banks) {
      sum += r.net;
      if (r.net > 0n) net += r.net;
    }
    assert(sum === 0n, `conservation broken: banks' nets sum to ${sum}`);
    for (const bank of state.banks.keys()) if (!this.participants.has(bank)) throw new AssertionError(`a flow names an unknown bank ${bank}`);
    return { batch, seq: this.version, banks, totals: { gross: state.gross, net } };
  }

  private rows(state: BatchState): BankPosition[] {
    return this.banks.map((bank) => {
      const t = state.banks.get(bank);
      return t === undefined ? { bank, paid: 0n, received: 0n, net: 0n, count: 0 } : { bank, paid: t.paid, received: t.received, net: t.received - t.paid, count: t.count };
    });
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
    for (const [bank, t] of state.banks) if (this.participants.has(bank)) sum += t.received - t.paid;
    return sum;
  }

  bank(code: string): BankDetail {
    const state = this.states.get(this.openId)!;
    assert(this.participants.has(code), `unknown bank ${code}`);
    const t = state.banks.get(code);
    const position: BankPosition = t === undefined ? { bank: code, paid: 0n, received: 0n, net: 0n, count: 0 } : { bank: code, paid: t.paid, received: t.received, net: t.received - t.paid, count: t.count };
    const parts = [...state.shards.values()];
    const counterparties: CounterpartyPosition[] = [];
    let sum = 0n;
    for (const other of this.banks) {
      if (other === code) continue;
      let flow: PairFlow | undefined;
      for (let i = 0; i < parts.length && flow === undefined; i++) flow = parts[i]!.flows.get(code, other);
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
