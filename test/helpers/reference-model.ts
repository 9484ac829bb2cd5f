/**
 * The auditor: a plain, obviously-correct netting model that the tests
 * check the engine against. No shards, no bigint tricks, no shortcuts: every
 * cleared instruction is added to per-bank and per-pair sums.
 */

import type { WireInstruction } from '../../bench/fixture.js';

/** An instruction as submitted, the same shape the benchmarks send. */
export type RefInstruction = WireInstruction;

export class ReferenceModel {
  readonly paid = new Map<string, bigint>();
  readonly received = new Map<string, bigint>();
  readonly count = new Map<string, number>();
  /** bilateral[b][c] = what b received from c minus what b paid to c */
  readonly bilateral = new Map<string, Map<string, bigint>>();
  gross = 0n;

  constructor(readonly banks: readonly string[]) {
    for (const b of banks) {
      this.paid.set(b, 0n);
      this.received.set(b, 0n);
      this.count.set(b, 0);
      this.bilateral.set(b, new Map(banks.filter((c) => c !== b).map((c) => [c, 0n])));
    }
  }

  clear(i: RefInstruction): void {
    const a = BigInt(i.amount);
    this.paid.set(i.payer, this.paid.get(i.payer)! + a);
    this.received.set(i.payee, this.received.get(i.payee)! + a);
    this.count.set(i.payer, this.count.get(i.payer)! + 1);
    this.count.set(i.payee, this.count.get(i.payee)! + 1);
    const bp = this.bilateral.get(i.payer)!;
    bp.set(i.payee, bp.get(i.payee)! - a);
    const bq = this.bilateral.get(i.payee)!;
    bq.set(i.payer, bq.get(i.payer)! + a);
    this.gross += a;
  }

  net(bank: string): bigint {
    return this.received.get(bank)! - this.paid.get(bank)!;
  }

  /** The rows as the positions route writes them (without pendingDebit). */
  rows(): { bank: string; net: string; paid: string; received: string; count: number }[] {
    return this.banks.map((bank) => ({
      bank,
      net: this.net(bank).toString(),
      paid: this.paid.get(bank)!.toString(),
      received: this.received.get(bank)!.toString(),
      count: this.count.get(bank)!,
    }));
  }

  totals(): { gross: string; net: string } {
    let net = 0n;
    for (const b of this.banks) if (this.net(b) > 0n) net += this.net(b);
    return { gross: this.gross.toString(), net: net.toString() };
  }
}

/** The benchmarks' seeded generator, so a failing run can be replayed. */
export { rng } from '../../bench/fixture.js';

const TYPES = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'];

export function randomInstruction(rand: () => number, banks: readonly string[], id: string, amountMax = 100_000_000): RefInstruction {
  const payer = banks[Math.floor(rand() * banks.length)]!;
  let payee = payer;
  while (payee === payer) payee = banks[Math.floor(rand() * banks.length)]!;
  const i: RefInstruction = { id, type: TYPES[Math.floor(rand() * TYPES.length)]!, payer, payee, amount: 1 + Math.floor(rand() * amountMax) };
  if (rand() < 0.3) i.reference = `order ${id} 订单`;
  return i;
}

/** Compare the positions route's rows with the model's. */
export function rowsOf(body: { banks: { bank: string; net: string; paid: string; received: string; count: number }[] }): Record<string, unknown>[] {
  return body.banks.map(({ bank, net, paid, received, count }) => ({ bank, net, paid, received, count }));
}
