/**
 * Netting math (清分轧差) over cleared instructions.
 *
 * The unit of state is the flow between an unordered bank pair {a, b}
 * (a < b): how much a paid b and b paid a, with counts. Everything else is
 * derived: net(b, c) = received from c − paid to c, net(b) = Σ_c net(b, c),
 * and conservation Σ_b net(b) = 0 holds by construction and is asserted.
 */

import { assert } from './assert.js';

export interface PairFlow {
  a: string;
  b: string;
  /** Sum of cleared amounts with payer a and payee b. */
  aToB: bigint;
  bToA: bigint;
  countAToB: number;
  countBToA: number;
}

export interface BankPosition {
  bank: string;
  paid: bigint;
  received: bigint;
  net: bigint;
  count: number;
}

export interface CounterpartyPosition {
  bank: string;
  paid: bigint;
  received: bigint;
  net: bigint;
}

export interface NettingTotals {
  /** Σ amounts of cleared instructions. */
  gross: bigint;
  /** Σ of the positive nets: what settlement actually moves. */
  net: bigint;
}

export function orderPair(x: string, y: string): [string, string] {
  return x < y ? [x, y] : [y, x];
}

export function pairKeyOf(x: string, y: string): string {
  return x < y ? `${x}|${y}` : `${y}|${x}`;
}

export function emptyFlow(x: string, y: string): PairFlow {
  const [a, b] = orderPair(x, y);
  return { a, b, aToB: 0n, bToA: 0n, countAToB: 0, countBToA: 0 };
}

/** Add (sign 1) or take back (sign -1) one instruction's amount. */
export function applyToFlow(flow: PairFlow, payer: string, amount: bigint, sign: 1 | -1): void {
  if (payer === flow.a) {
    flow.aToB += sign === 1 ? amount : -amount;
    flow.countAToB += sign;
  } else {
    assert(payer === flow.b, `payer ${payer} is not in pair ${flow.a}|${flow.b}`);
    flow.bToA += sign === 1 ? amount : -amount;
    flow.countBToA += sign;
  }
}

export function addFlow(into: PairFlow, delta: PairFlow): void {
  assert(into.a === delta.a && into.b === delta.b, 'flows of different pairs');
  into.aToB += delta.aToB;
  into.bToA += delta.bToA;
  into.countAToB += delta.countAToB;
  into.countBToA += delta.countBToA;
}

export function flowIsZero(f: PairFlow): boolean {
  return f.aToB === 0n && f.bToA === 0n && f.countAToB === 0 && f.countBToA === 0;
}

export function flowsEqual(x: PairFlow, y: PairFlow): boolean {
  return x.a === y.a && x.b === y.b && x.aToB === y.aToB && x.bToA === y.bToA && x.countAToB === y.countAToB && x.countBToA === y.countBToA;
}

/** The bilateral positions of both banks of a pair, as each bank sees it. */
export function bilateralOf(flow: PairFlow, bank: string): CounterpartyPosition {
  if (bank === flow.a) return { bank: flow.b, paid: flow.aToB, received: flow.bToA, net: flow.bToA - flow.aToB };
  assert(bank === flow.b, `bank ${bank} is not in pair ${flow.a}|${flow.b}`);
  return { bank: flow.a, paid: flow.bToA, received: flow.aToB, net: flow.aToB - flow.bToA };
}

/**
 * Per-bank positions from pair flows, for every listed bank (zero rows
 * included), with the laws checked: each pair nets to zero between its two
 * banks by construction, and the banks' nets sum to zero.
 */
export function bankPositions(banks: readonly string[], flows: Iterable<PairFlow>): BankPosition[] {
  const rows = new Map<string, BankPosition>();
  for (const bank of banks) rows.set(bank, { bank, paid: 0n, received: 0n, net: 0n, count: 0 });
  for (const f of flows) {
    const ra = rows.get(f.a);
    const rb = rows.get(f.b);
    assert(ra !== undefined && rb !== undefined, `flow ${f.a}|${f.b} names an unknown bank`);
    ra.paid += f.aToB;
    ra.received += f.bToA;
    rb.paid += f.bToA;
    rb.received += f.aToB;
    const n = f.countAToB + f.countBToA;
    ra.count += n;
    rb.count += n;
  }
  let sum = 0n;
  for (const r of rows.values()) {
    r.net = r.received - r.paid;
    sum += r.net;
  }
  assert(sum === 0n, `conservation broken: banks' nets sum to ${sum}`);
  return [...rows.values()];
}

export function nettingTotals(flows: Iterable<PairFlow>, positions: readonly BankPosition[]): NettingTotals {
  let gross = 0n;
  for (const f of flows) gross += f.aToB + f.bToA;
  let net = 0n;
  for (const p of positions) if (p.net > 0n) net += p.net;
  return { gross, net };
}

/**
 * A book of pair flows: one per shard in the workers, and one per shard's
 * share on the main thread, fed by the shards' committed deltas. Flows are
 * kept by the lower code, then the higher one: a look-up builds no string.
 */
export class FlowBook {
  private readonly flows = new Map<string, Map<string, PairFlow>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  *values(): IterableIterator<PairFlow> {
    for (const row of this.flows.values()) yield* row.values();
  }

  /** Every flow, as an array (built with loops: spreading the generator above costs several times more). */
  list(): PairFlow[] {
    const out: PairFlow[] = new Array<PairFlow>(this.count);
    let i = 0;
    for (const row of this.flows.values()) for (const f of row.values()) out[i++] = f;
    out.length = i;
    return out;
  }

  get(x: string, y: string): PairFlow | undefined {
    return x < y ? this.flows.get(x)?.get(y) : this.flows.get(y)?.get(x);
  }

  /** The flow of a pair, created empty when first touched. */
  touch(x: string, y: string): PairFlow {
    const a = x < y ? x : y;
    const b = x < y ? y : x;
    let row = this.flows.get(a);
    if (row === undefined) {
      row = new Map();
      this.flows.set(a, row);
    }
    let flow = row.get(b);
    if (flow === undefined) {
      flow = { a, b, aToB: 0n, bToA: 0n, countAToB: 0, countBToA: 0 };
      row.set(b, flow);
      this.count++;
    }
    return flow;
  }

  add(delta: PairFlow): void {
    addFlow(this.touch(delta.a, delta.b), delta);
  }

  /** Add a delta (sign 1) or take it back (sign -1), without building a signed copy. */
  addSigned(delta: PairFlow, sign: 1 | -1): void {
    if (sign === 1) {
      this.add(delta);
      return;
    }
    const f = this.touch(delta.a, delta.b);
    f.aToB -= delta.aToB;
    f.bToA -= delta.bToA;
    f.countAToB -= delta.countAToB;
    f.countBToA -= delta.countBToA;
  }

  clear(): void {
    this.flows.clear();
    this.count = 0;
  }
}
