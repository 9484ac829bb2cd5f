import { describe, it, expect } from 'vitest';
import { AssertionError } from '../../src/core/assert.js';
import { fnv1a32, shardOfPair, ShardMap } from '../../src/core/shard-map.js';

const BANKS = ['ICBC', 'ABC', 'BOC', 'CCB', 'BOCOM', 'PSBC', 'CMB', 'CITIC', 'SPDB', 'CIB', 'CMBC', 'CEB', 'HXB', 'PAB'];

function pairs(banks: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < banks.length; i++) for (let j = i + 1; j < banks.length; j++) out.push([banks[i]!, banks[j]!]);
  return out;
}

describe('fnv1a32', () => {
  it('matches the published FNV-1a 32-bit vectors', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });

  it('returns an unsigned 32-bit integer', () => {
    for (const s of ['', 'a', 'foobar', 'ICBC|PAB', 'x'.repeat(1000)]) {
      const h = fnv1a32(s);
      expect(Number.isInteger(h)).toBe(true);
      expect(h).toBeGreaterThanOrEqual(0);
      expect(h).toBeLessThanOrEqual(0xffffffff);
    }
  });
});

describe('shardOfPair', () => {
  it('is symmetric, in range and deterministic', () => {
    for (const shards of [1, 2, 3, 4, 7, 64]) {
      for (const [x, y] of pairs(BANKS)) {
        const s = shardOfPair(x, y, shards);
        expect(shardOfPair(y, x, shards)).toBe(s);
        expect(shardOfPair(x, y, shards)).toBe(s);
        expect(Number.isInteger(s)).toBe(true);
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeLessThan(shards);
      }
    }
  });

  it('is the FNV-1a of the ordered pair key modulo the shard count', () => {
    expect(shardOfPair('PAB', 'ICBC', 7)).toBe(fnv1a32('ICBC|PAB') % 7);
    expect(shardOfPair('ABC', 'BOC', 4)).toBe(fnv1a32('ABC|BOC') % 4);
  });

  it('puts everything in shard 0 with one shard', () => {
    for (const [x, y] of pairs(BANKS)) expect(shardOfPair(x, y, 1)).toBe(0);
  });

  it('refuses a shard count that is not a positive integer', () => {
    expect(() => shardOfPair('ABC', 'BOC', 0)).toThrow(AssertionError);
    expect(() => shardOfPair('ABC', 'BOC', -1)).toThrow(AssertionError);
    expect(() => shardOfPair('ABC', 'BOC', 1.5)).toThrow(AssertionError);
  });
});

describe('ShardMap', () => {
  it('agrees with shardOfPair for every pair of 14 banks, both directions', () => {
    for (const shards of [1, 2, 4, 5, 64]) {
      const map = new ShardMap(BANKS, shards);
      expect(map.shards).toBe(shards);
      for (const [x, y] of pairs(BANKS)) {
        expect(map.shardOf(x, y)).toBe(shardOfPair(x, y, shards));
        expect(map.shardOf(y, x)).toBe(shardOfPair(x, y, shards));
      }
    }
  });

  it('gives every one of 4 shards at least one of the 91 pairs', () => {
    const map = new ShardMap(BANKS, 4);
    const perShard = [0, 0, 0, 0];
    for (const [x, y] of pairs(BANKS)) {
      const s = map.shardOf(x, y);
      perShard[s] = (perShard[s] ?? 0) + 1;
    }
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(91);
    for (const n of perShard) expect(n).toBeGreaterThan(0);
  });

  it('refuses a pair with an unknown bank or a bank with itself', () => {
    const map = new ShardMap(BANKS, 4);
    expect(() => map.shardOf('ICBC', 'XXXX')).toThrow(AssertionError);
    expect(() => map.shardOf('ICBC', 'ICBC')).toThrow(AssertionError);
  });
});
