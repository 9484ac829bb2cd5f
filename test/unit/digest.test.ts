import { describe, expect, it } from 'vitest';
import { addDigest, bucketOfHigh, DigestAccumulator, digestFromHex, digestHex, fnv1a64, fnv1a64Halves, subDigest } from '../../src/core/digest.js';
import { fnv1a64Reference } from '../helpers/digest-reference.js';
import { rng } from '../helpers/reference-model.js';

describe('FNV-1a 64', () => {
  it('matches the published test vectors', () => {
    expect(fnv1a64('')).toBe(0xcbf29ce484222325n);
    expect(fnv1a64('a')).toBe(0xaf63dc4c8601ec8cn);
    expect(fnv1a64('foobar')).toBe(0x85944171f73967e8n);
  });

  it('agrees with a plain BigInt implementation on random instruction lines', () => {
    const rand = rng(64);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-|';
    for (let n = 0; n < 2000; n++) {
      let line = '';
      const len = Math.floor(rand() * 120);
      for (let i = 0; i < len; i++) line += alphabet[Math.floor(rand() * alphabet.length)];
      expect(fnv1a64(line)).toBe(fnv1a64Reference(line));
    }
  });

  it('puts a hash in the bucket of its top byte', () => {
    const [hi] = fnv1a64Halves('PI0001|T-1|ICBC|CMB|100');
    expect(bucketOfHigh(hi)).toBe(Number(fnv1a64('PI0001|T-1|ICBC|CMB|100') >> 56n));
  });
});

describe('digest sums', () => {
  it('add and subtract modulo 2^64, and print as 16 hex digits', () => {
    const max = (1n << 64n) - 1n;
    expect(addDigest(max, 1n)).toBe(0n);
    expect(subDigest(0n, 1n)).toBe(max);
    expect(digestHex(0n)).toBe('0000000000000000');
    expect(digestHex(max)).toBe('ffffffffffffffff');
    expect(digestFromHex('00000000000000ff')).toBe(255n);
  });

  it('accumulates halves exactly, including subtractions', () => {
    const rand = rng(7);
    const acc = new DigestAccumulator();
    let expected = 0n;
    for (let i = 0; i < 5000; i++) {
      const line = `PI0001|id-${i}|ICBC|CMB|${Math.floor(rand() * 1e12)}`;
      const [hi, lo] = fnv1a64Halves(line);
      const sign = rand() < 0.2 ? -1 : 1;
      acc.add(hi, lo, sign);
      expected = sign === 1 ? addDigest(expected, fnv1a64(line)) : subDigest(expected, fnv1a64(line));
    }
    expect(acc.fold()).toBe(expected);
  });
});
