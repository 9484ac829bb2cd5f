import { describe, expect, it } from 'vitest';
import { addDigest } from '../../src/core/digest.js';
import { BUCKETS, BucketTable, flowFromStored, flowToStored } from '../../src/store/schema.js';

describe('BucketTable', () => {
  it('keeps counts, 128-bit amounts and mod-2^64 digests per bucket, through its stored bytes', () => {
    const t = new BucketTable();
    const big = 2n ** 70n + 12345n;
    t.add(0, 3, big, 0xffff_ffff_ffff_fff0n);
    t.add(0, 2, big, 0x20n);
    t.add(255, -1, -700n, 5n);
    t.add(7, 1, 9_007_199_254_740_991n, 1n);
    t.add(7, -1, -9_007_199_254_740_991n, 0xffff_ffff_ffff_ffffn);
    const again = new BucketTable(t.bytes().slice());
    expect(again.get(0)).toEqual({ count: 5, amount: 2n * big, digest: addDigest(0xffff_ffff_ffff_fff0n, 0x20n) });
    expect(again.get(255)).toEqual({ count: -1, amount: -700n, digest: 5n });
    // Cleared and reversed: back to zero count and amount; the digest is whatever the hashes sum to.
    expect(again.get(7)).toEqual({ count: 0, amount: 0n, digest: 0n });
    for (let n = 1; n < BUCKETS; n++) if (n !== 7 && n !== 255) expect(again.get(n)).toEqual({ count: 0, amount: 0n, digest: 0n });
  });

  it('refuses a record of the wrong size', () => {
    expect(() => new BucketTable(new Uint8Array(100))).toThrow(/wrong size/);
  });
});

describe('stored pair flows', () => {
  it('round-trip sums past 2^64 and the counts', () => {
    const f = { a: 'ABC', b: 'BOC', aToB: 2n ** 80n + 7n, bToA: 123_456_789n, countAToB: 9_000_000, countBToA: 1 };
    const bytes = flowToStored(f);
    expect(bytes.byteLength).toBe(48);
    expect(flowFromStored('ABC', 'BOC', bytes.slice())).toEqual(f);
    expect(() => flowFromStored('ABC', 'BOC', new Uint8Array(40))).toThrow(/wrong size/);
  });
});
