import { describe, expect, it } from 'vitest';
import { addDigest } from '../../src/core/digest.js';
import { FlowBook, type PairFlow } from '../../src/core/netting.js';
import { BatchFigures, BUCKETS, type BucketEntry, decodeFigures, decodeFlows, encodeFigures, journalKey, pageOfPair, PAGES, readInstitutionBuckets } from '../../src/store/batch-figures.js';
import { MemEnv, memShardDbs } from '../sim/mem-lmdb.js';

const BATCH = '20261127-001';

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** A task's deltas over `banks` banks and a few institutions, with reversals (negative entries). */
function taskDeltas(r: () => number, banks: number): { flows: PairFlow[]; buckets: BucketEntry[] } {
  const book = new FlowBook();
  const buckets = new Map<string, BucketEntry>();
  for (let i = 0; i < 40; i++) {
    const x = `B${Math.floor(r() * banks)}`;
    let y = x;
    while (y === x) y = `B${Math.floor(r() * banks)}`;
    const f = book.touch(x, y);
    const amount = BigInt(Math.floor(r() * 1e9));
    if (x === f.a) {
      f.aToB += amount;
      f.countAToB++;
    } else {
      f.bToA += amount;
      f.countBToA++;
    }
    const institution = `PI${Math.floor(r() * 5)}`;
    const n = Math.floor(r() * BUCKETS);
    const sign = r() < 0.1 ? -1 : 1;
    const key = `${institution}|${n}`;
    const b = buckets.get(key) ?? { institution, n, count: 0, amount: 0n, digest: 0n };
    b.count += sign;
    b.amount += BigInt(sign) * amount;
    b.digest = BigInt.asUintN(64, b.digest + BigInt(sign) * BigInt(Math.floor(r() * 2 ** 52)));
    buckets.set(key, b);
  }
  return { flows: [...book.values()], buckets: [...buckets.values()] };
}

function sumFlows(into: FlowBook, flows: readonly PairFlow[]): void {
  for (const f of flows) into.add(f);
}

function sumBuckets(into: Map<string, { count: number; amount: bigint; digest: bigint }>, buckets: readonly BucketEntry[]): void {
  for (const b of buckets) {
    const k = `${b.institution}|${b.n}`;
    const t = into.get(k) ?? { count: 0, amount: 0n, digest: 0n };
    into.set(k, { count: t.count + b.count, amount: t.amount + b.amount, digest: addDigest(t.digest, b.digest) });
  }
}

function sortedFlows(flows: Iterable<PairFlow>): PairFlow[] {
  return [...flows].filter((f) => f.countAToB !== 0 || f.countBToA !== 0).sort((x, y) => (x.a + x.b < y.a + y.b ? -1 : 1));
}

describe('figures records', () => {
  it('round-trip 128-bit sums, negative changes, counts and digests mod 2^64', () => {
    const flows: PairFlow[] = [
      { a: 'ABC', b: 'BOC', aToB: 2n ** 80n + 7n, bToA: -123_456_789n, countAToB: 9_000_000, countBToA: -1 },
      { a: 'B0015', b: 'ICBC', aToB: 0n, bToA: -(2n ** 100n), countAToB: 0, countBToA: 3 },
    ];
    const buckets: BucketEntry[] = [
      { institution: 'PI0001', n: 0, count: -2, amount: -(2n ** 70n), digest: 0xffff_ffff_ffff_fff0n },
      { institution: 'PI0002', n: 255, count: 1, amount: 9_007_199_254_740_991n, digest: 5n },
    ];
    const bytes = encodeFigures(42, flows, buckets);
    expect(decodeFigures(new Uint8Array(bytes))).toEqual({ through: 42, flows, buckets });
    // What crosses from a worker to the main thread: the flows alone.
    expect(decodeFlows(bytes)).toEqual(flows);
    expect(() => decodeFigures(bytes.subarray(0, bytes.length - 8))).toThrow(/wrong size/);
  });

  it('round-trip sums on both sides of the 64-bit boundary, where the high word stops being the sign', () => {
    const edges = [0n, 1n, -1n, 2n ** 31n, -(2n ** 31n), 2n ** 32n, -(2n ** 32n) - 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, -(2n ** 63n) - 1n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 64n), 2n ** 127n - 1n, -(2n ** 127n) + 1n];
    const flows: PairFlow[] = edges.map((e, i) => ({ a: 'ABC', b: `B${String(i).padStart(4, '0')}`, aToB: e, bToA: -e, countAToB: i, countBToA: -i }));
    const buckets: BucketEntry[] = edges.map((e, i) => ({ institution: `PI${i}`, n: i, count: i, amount: e, digest: BigInt.asUintN(64, e) }));
    expect(decodeFigures(encodeFigures(1, flows, buckets))).toEqual({ through: 1, flows, buckets });
    // A digest is stored modulo 2^64: one given out of that range reads back reduced.
    const [wide] = decodeFigures(encodeFigures(1, [], [{ institution: 'PI1', n: 0, count: 1, amount: 1n, digest: 2n ** 64n + 5n }])).buckets;
    expect(wide!.digest).toBe(5n);
  });

  it('spreads pairs over every page, and a pair always to the same one', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) for (let j = i + 1; j < 500; j += 7) seen.add(pageOfPair(`B${i}`, `B${j}`));
    expect(seen.size).toBe(PAGES);
    expect(pageOfPair('ABC', 'ICBC')).toBe(pageOfPair('ABC', 'ICBC'));
  });
});

describe('a batch journal and its paged fold', () => {
  it('hold the sum of every task, in 256 pages and a bounded journal, as kept, as reloaded and as one institution reads them', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const r = rand(7);
    let figures: BatchFigures | undefined;
    const wantFlows = new FlowBook();
    const wantBuckets = new Map<string, { count: number; amount: bigint; digest: bigint }>();
    for (let t = 0; t < 700; t++) {
      const { flows, buckets } = taskDeltas(r, 60);
      await env.childTransaction(() => {
        figures ??= BatchFigures.load(dbs, BATCH);
        expect(figures.matches(dbs)).toBe(true);
        figures.append(dbs, flows, buckets);
      });
      sumFlows(wantFlows, flows);
      sumBuckets(wantBuckets, buckets);
    }
    expect(figures!.seq).toBe(700);
    const journal = [...dbs.jrn.getKeys({ start: `${BATCH}|`, end: `${BATCH}|~` })];
    expect(journal.length).toBeGreaterThan(0);
    // About two rounds of the pages' worth of entries (FOLD_PACE), not every task.
    expect(journal.length).toBeLessThan(512);
    expect(journal.at(-1)).toBe(journalKey(BATCH, 700));
    expect([...dbs.pos.getKeys({ start: `${BATCH}|`, end: `${BATCH}|~` })].length).toBe(PAGES);
    const loaded = BatchFigures.load(dbs, BATCH);
    expect(loaded.seq).toBe(700);
    expect(sortedFlows(loaded.flows())).toEqual(sortedFlows(wantFlows.values()));
    expect(sortedFlows(figures!.flows())).toEqual(sortedFlows(wantFlows.values()));
    expect(new Map([...loaded.buckets()].filter(([, b]) => b.count !== 0 || b.amount !== 0n || b.digest !== 0n))).toEqual(
      new Map([...wantBuckets].filter(([, b]) => b.count !== 0 || b.amount !== 0n || b.digest !== 0n)),
    );
    const pi2 = readInstitutionBuckets(dbs, BATCH, 'PI2');
    for (let n = 0; n < BUCKETS; n++) expect(pi2[n]).toEqual(wantBuckets.get(`PI2|${n}`) ?? { count: 0, amount: 0n, digest: 0n });
    // Another batch is untouched.
    expect([...BatchFigures.load(dbs, '20261127-002').flows()]).toEqual([]);
  });

  it('rewrite pages in proportion to what the journal takes, so a small task does not rewrite a page of many pairs', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const r = rand(3);
    const figures = BatchFigures.load(dbs, BATCH);
    let journalBytes = 0;
    let pageBytes = 0;
    const counted = {
      pos: { ...dbs.pos, getRange: dbs.pos.getRange.bind(dbs.pos), get: dbs.pos.get.bind(dbs.pos), put: (k: string, v: Uint8Array) => ((pageBytes += v.byteLength), dbs.pos.put(k, v)) },
      jrn: { ...dbs.jrn, getRange: dbs.jrn.getRange.bind(dbs.jrn), get: dbs.jrn.get.bind(dbs.jrn), remove: dbs.jrn.remove.bind(dbs.jrn), put: (k: string, v: Uint8Array) => ((journalBytes += v.byteLength), dbs.jrn.put(k, v)) },
    };
    const want = new FlowBook();
    // Many pairs (2,000 banks), then small tasks: a page holds many flows by then.
    for (let t = 0; t < 400; t++) {
      const d = taskDeltas(r, 2000);
      await env.childTransaction(() => figures.append(counted, d.flows, d.buckets));
      sumFlows(want, d.flows);
    }
    journalBytes = 0;
    pageBytes = 0;
    for (let t = 0; t < 2000; t++) {
      const d = taskDeltas(r, 2000);
      const small = { flows: d.flows.slice(0, 2), buckets: d.buckets.slice(0, 2) };
      await env.childTransaction(() => figures.append(counted, small.flows, small.buckets));
      sumFlows(want, small.flows);
    }
    expect(pageBytes).toBeLessThan(3 * journalBytes);
    expect(pageBytes).toBeGreaterThan(0);
    expect(sortedFlows(BatchFigures.load(dbs, BATCH).flows())).toEqual(sortedFlows(want.values()));
  });

  it('tell a lost commit: figures kept past a failed commit no longer match, and a reload is the disk', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const r = rand(11);
    const figures = BatchFigures.load(dbs, BATCH);
    const want = new FlowBook();
    for (let t = 0; t < 300; t++) {
      const d = taskDeltas(r, 30);
      await env.childTransaction(() => figures.append(dbs, d.flows, d.buckets));
      sumFlows(want, d.flows);
    }
    expect(figures.matches(dbs)).toBe(true);
    env.failNextCommit = true;
    const lost = taskDeltas(r, 30);
    await expect(env.childTransaction(() => figures.append(dbs, lost.flows, lost.buckets))).rejects.toThrow(/commit failure/);
    await env.childTransaction(() => expect(figures.matches(dbs)).toBe(false));
    const reloaded = BatchFigures.load(dbs, BATCH);
    expect(reloaded.seq).toBe(300);
    expect(sortedFlows(reloaded.flows())).toEqual(sortedFlows(want.values()));
    expect(dbs.jrn.get(journalKey(BATCH, 301))).toBeUndefined();
  });
});
