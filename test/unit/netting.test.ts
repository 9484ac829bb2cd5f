import { describe, it, expect } from 'vitest';
import { AssertionError } from '../../src/core/assert.js';
import {
  addFlow,
  applyToFlow,
  bankPositions,
  bilateralOf,
  emptyFlow,
  FlowBook,
  flowIsZero,
  flowsEqual,
  nettingTotals,
  orderPair,
  pairKeyOf,
  type PairFlow,
} from '../../src/core/netting.js';

interface Tx {
  payer: string;
  payee: string;
  amount: bigint;
}

function bookOf(txs: readonly Tx[]): FlowBook {
  const book = new FlowBook();
  for (const t of txs) applyToFlow(book.touch(t.payer, t.payee), t.payer, t.amount, 1);
  return book;
}

/** Tiny seeded PRNG so the property loop is reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('pair helpers', () => {
  it('orders a pair and keys it the same in both directions', () => {
    expect(orderPair('ICBC', 'ABC')).toEqual(['ABC', 'ICBC']);
    expect(orderPair('ABC', 'ICBC')).toEqual(['ABC', 'ICBC']);
    expect(pairKeyOf('ICBC', 'ABC')).toBe('ABC|ICBC');
    expect(pairKeyOf('ABC', 'ICBC')).toBe('ABC|ICBC');
  });

  it('emptyFlow is ordered and zero', () => {
    const f = emptyFlow('CC', 'AA');
    expect(f).toEqual({ a: 'AA', b: 'CC', aToB: 0n, bToA: 0n, countAToB: 0, countBToA: 0 });
    expect(flowIsZero(f)).toBe(true);
  });
});

describe('applyToFlow', () => {
  it('adds to the right direction and takes back with sign -1', () => {
    const f = emptyFlow('AA', 'BB');
    applyToFlow(f, 'AA', 100n, 1);
    applyToFlow(f, 'BB', 30n, 1);
    applyToFlow(f, 'BB', 5n, 1);
    expect(f).toMatchObject({ aToB: 100n, bToA: 35n, countAToB: 1, countBToA: 2 });
    applyToFlow(f, 'BB', 5n, -1);
    expect(f).toMatchObject({ aToB: 100n, bToA: 30n, countAToB: 1, countBToA: 1 });
    applyToFlow(f, 'AA', 100n, -1);
    applyToFlow(f, 'BB', 30n, -1);
    expect(flowIsZero(f)).toBe(true);
  });

  it('refuses a payer that is not in the pair', () => {
    const f = emptyFlow('AA', 'BB');
    expect(() => applyToFlow(f, 'CC', 1n, 1)).toThrow(AssertionError);
    expect(flowIsZero(f)).toBe(true);
  });

  it('keeps sums above 2^63 and 2^64 exact', () => {
    const f = emptyFlow('AA', 'BB');
    const big = 10n ** 18n;
    for (let i = 0; i < 25; i++) applyToFlow(f, 'AA', big, 1);
    applyToFlow(f, 'AA', 7n, 1);
    expect(f.aToB).toBe(25_000_000_000_000_000_007n);
    expect(f.aToB > 2n ** 64n).toBe(true);
    expect(f.countAToB).toBe(26);
    const [pa, pb] = bankPositions(['AA', 'BB'], [f]);
    expect(pa?.net).toBe(-25_000_000_000_000_000_007n);
    expect(pb?.net).toBe(25_000_000_000_000_000_007n);
    expect(nettingTotals([f], [pa!, pb!])).toEqual({ gross: 25_000_000_000_000_000_007n, net: 25_000_000_000_000_000_007n });
  });

  it('keeps many maximum-sized amounts exact (20,000 × 1e12)', () => {
    const f = emptyFlow('AA', 'BB');
    for (let i = 0; i < 20_000; i++) applyToFlow(f, i % 2 === 0 ? 'AA' : 'BB', 1_000_000_000_000n + BigInt(i), 1);
    // Σ over even i of (1e12 + i) and over odd i of (1e12 + i)
    let even = 0n;
    let odd = 0n;
    for (let i = 0; i < 20_000; i++) {
      if (i % 2 === 0) even += 1_000_000_000_000n + BigInt(i);
      else odd += 1_000_000_000_000n + BigInt(i);
    }
    expect(f.aToB).toBe(even);
    expect(f.bToA).toBe(odd);
    expect(f.aToB + f.bToA).toBe(20_000n * 1_000_000_000_000n + (19_999n * 20_000n) / 2n);
  });
});

describe('addFlow / flowsEqual', () => {
  it('adds a delta of the same pair', () => {
    const into = emptyFlow('AA', 'BB');
    applyToFlow(into, 'AA', 10n, 1);
    const delta = emptyFlow('AA', 'BB');
    applyToFlow(delta, 'BB', 4n, 1);
    applyToFlow(delta, 'AA', 1n, 1);
    addFlow(into, delta);
    expect(into).toEqual({ a: 'AA', b: 'BB', aToB: 11n, bToA: 4n, countAToB: 2, countBToA: 1 });
    const same = { ...into };
    expect(flowsEqual(into, same)).toBe(true);
    same.bToA += 1n;
    expect(flowsEqual(into, same)).toBe(false);
  });

  it('refuses a delta of another pair', () => {
    expect(() => addFlow(emptyFlow('AA', 'BB'), emptyFlow('AA', 'CC'))).toThrow(AssertionError);
  });
});

describe('a hand-worked example: 3 banks, 4 instructions', () => {
  // AA -> BB 100, BB -> CC 50, CC -> AA 30, AA -> CC 20
  // paid:     AA 120, BB 50,  CC 30
  // received: AA 30,  BB 100, CC 70
  // net:      AA -90, BB +50, CC +40   (Σ = 0)
  // count:    AA 3,   BB 2,   CC 3
  // gross 200, net 90
  const banks = ['AA', 'BB', 'CC'];
  const txs: Tx[] = [
    { payer: 'AA', payee: 'BB', amount: 100n },
    { payer: 'BB', payee: 'CC', amount: 50n },
    { payer: 'CC', payee: 'AA', amount: 30n },
    { payer: 'AA', payee: 'CC', amount: 20n },
  ];

  it('gives the exact positions per bank', () => {
    const book = bookOf(txs);
    expect(book.size).toBe(3);
    const positions = bankPositions(banks, book.values());
    expect(positions).toEqual([
      { bank: 'AA', paid: 120n, received: 30n, net: -90n, count: 3 },
      { bank: 'BB', paid: 50n, received: 100n, net: 50n, count: 2 },
      { bank: 'CC', paid: 30n, received: 70n, net: 40n, count: 3 },
    ]);
  });

  it('gives the exact totals', () => {
    const book = bookOf(txs);
    const positions = bankPositions(banks, book.values());
    expect(nettingTotals(book.values(), positions)).toEqual({ gross: 200n, net: 90n });
  });

  it('lists a zero row for a bank with no flow', () => {
    const positions = bankPositions([...banks, 'DD'], bookOf(txs).values());
    expect(positions).toHaveLength(4);
    expect(positions[3]).toEqual({ bank: 'DD', paid: 0n, received: 0n, net: 0n, count: 0 });
  });

  it('gives bilateral positions seen from both sides, with net(b,c) = -net(c,b)', () => {
    const book = bookOf(txs);
    const ab = book.get('BB', 'AA');
    expect(ab).toBe(book.get('AA', 'BB'));
    expect(bilateralOf(ab!, 'AA')).toEqual({ bank: 'BB', paid: 100n, received: 0n, net: -100n });
    expect(bilateralOf(ab!, 'BB')).toEqual({ bank: 'AA', paid: 0n, received: 100n, net: 100n });
    const ac = book.get('CC', 'AA')!;
    expect(bilateralOf(ac, 'AA')).toEqual({ bank: 'CC', paid: 20n, received: 30n, net: 10n });
    expect(bilateralOf(ac, 'CC')).toEqual({ bank: 'AA', paid: 30n, received: 20n, net: -10n });
    for (const f of book.values()) {
      expect(bilateralOf(f, f.a).net).toBe(-bilateralOf(f, f.b).net);
      expect(bilateralOf(f, f.a).paid).toBe(bilateralOf(f, f.b).received);
    }
  });

  it('bilateralOf refuses a bank outside the pair', () => {
    const book = bookOf(txs);
    expect(() => bilateralOf(book.get('AA', 'BB')!, 'CC')).toThrow(AssertionError);
  });

  it('bankPositions refuses a flow naming an unknown bank', () => {
    const book = bookOf(txs);
    const stray = emptyFlow('AA', 'ZZ');
    applyToFlow(stray, 'AA', 1n, 1);
    expect(() => bankPositions(banks, [...book.values(), stray])).toThrow(AssertionError);
    expect(() => bankPositions(banks, [emptyFlow('XX', 'YY')])).toThrow(/unknown bank/);
  });

  it('FlowBook.add merges deltas and clear empties it', () => {
    const book = new FlowBook();
    const d1 = emptyFlow('AA', 'BB');
    applyToFlow(d1, 'AA', 5n, 1);
    book.add(d1);
    book.add(d1);
    expect(book.get('BB', 'AA')).toMatchObject({ aToB: 10n, countAToB: 2 });
    // The book holds its own flow, not the delta.
    expect(book.get('AA', 'BB')).not.toBe(d1);
    expect(d1.aToB).toBe(5n);
    expect(book.get('AA', 'CC')).toBeUndefined();
    book.clear();
    expect(book.size).toBe(0);
    expect(book.get('AA', 'BB')).toBeUndefined();
  });
});

describe('property: random instructions over 6 banks', () => {
  const banks = ['ABC', 'BOC', 'CCB', 'CMB', 'ICBC', 'PSBC'];

  for (const seed of [1, 42, 20261122]) {
    it(`conservation and bilateral sums hold (seed ${seed})`, () => {
      const rand = mulberry32(seed);
      const pick = (): string => banks[Math.floor(rand() * banks.length)]!;
      const txs: Tx[] = [];
      while (txs.length < 2000) {
        const payer = pick();
        const payee = pick();
        if (payer === payee) continue;
        // Amounts up to 1e12 cents; one in twenty is huge (≥ 1e18) so sums pass 2^63.
        let amount = BigInt(1 + Math.floor(rand() * 1_000_000_000_000));
        if (rand() < 0.05) amount += 10n ** 18n;
        txs.push({ payer, payee, amount });
      }
      const book = bookOf(txs);
      // Some take-backs (reversals) of earlier instructions.
      const reversed = new Set<number>();
      for (let k = 0; k < 200; k++) {
        const i = Math.floor(rand() * txs.length);
        if (reversed.has(i)) continue;
        reversed.add(i);
        const t = txs[i]!;
        applyToFlow(book.get(t.payer, t.payee)!, t.payer, t.amount, -1);
      }
      const live = txs.filter((_, i) => !reversed.has(i));

      // Naive recomputation.
      const paid = new Map<string, bigint>(banks.map((b) => [b, 0n]));
      const received = new Map<string, bigint>(banks.map((b) => [b, 0n]));
      const count = new Map<string, number>(banks.map((b) => [b, 0]));
      const bilateral = new Map<string, bigint>();
      let gross = 0n;
      for (const t of live) {
        paid.set(t.payer, paid.get(t.payer)! + t.amount);
        received.set(t.payee, received.get(t.payee)! + t.amount);
        count.set(t.payer, count.get(t.payer)! + 1);
        count.set(t.payee, count.get(t.payee)! + 1);
        bilateral.set(`${t.payee}>${t.payer}`, (bilateral.get(`${t.payee}>${t.payer}`) ?? 0n) + t.amount);
        bilateral.set(`${t.payer}>${t.payee}`, (bilateral.get(`${t.payer}>${t.payee}`) ?? 0n) - t.amount);
        gross += t.amount;
      }

      const positions = bankPositions(banks, book.values());
      let sum = 0n;
      let positive = 0n;
      for (const p of positions) {
        sum += p.net;
        if (p.net > 0n) positive += p.net;
        expect(p.paid).toBe(paid.get(p.bank));
        expect(p.received).toBe(received.get(p.bank));
        expect(p.net).toBe(received.get(p.bank)! - paid.get(p.bank)!);
        expect(p.count).toBe(count.get(p.bank));

        // net(b) = Σ_c net(b, c)
        let bilateralSum = 0n;
        for (const c of banks) {
          if (c === p.bank) continue;
          const f = book.get(p.bank, c);
          const mine = f === undefined ? 0n : bilateralOf(f, p.bank).net;
          const theirs = f === undefined ? 0n : bilateralOf(f, c).net;
          expect(mine).toBe(-theirs);
          expect(mine).toBe(bilateral.get(`${p.bank}>${c}`) ?? 0n);
          bilateralSum += mine;
        }
        expect(bilateralSum).toBe(p.net);
      }
      expect(sum).toBe(0n);
      expect(positions.map((p) => p.bank)).toEqual(banks);
      expect(nettingTotals(book.values(), positions)).toEqual({ gross, net: positive });
      expect(gross > 2n ** 63n).toBe(true);
    });
  }
});

describe('nettingTotals', () => {
  it('is zero for no flows', () => {
    const flows: PairFlow[] = [];
    expect(nettingTotals(flows, bankPositions(['AA', 'BB'], flows))).toEqual({ gross: 0n, net: 0n });
  });

  it('counts gross in both directions but net only once', () => {
    const f = emptyFlow('AA', 'BB');
    applyToFlow(f, 'AA', 70n, 1);
    applyToFlow(f, 'BB', 70n, 1);
    const positions = bankPositions(['AA', 'BB'], [f]);
    expect(nettingTotals([f], positions)).toEqual({ gross: 140n, net: 0n });
  });
});
