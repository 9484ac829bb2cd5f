/**
 * Which shard owns a bank pair. Both directions of a pair map to the same
 * shard (the pair is unordered), so a bilateral position has one writer.
 * The mapping is a pure function of the two codes and the shard count; a
 * table over the configured banks makes the lookup O(1) on the hot path.
 */

import { assert } from './assert.js';
import { pairKeyOf } from './netting.js';

/** FNV-1a, 32-bit, over the UTF-16 code units of an ASCII key. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function shardOfPair(x: string, y: string, shards: number): number {
  assert(Number.isInteger(shards) && shards >= 1, 'shards must be a positive integer');
  return fnv1a32(pairKeyOf(x, y)) % shards;
}

export class ShardMap {
  /** Bank code → its index in the configured list. */
  private readonly index = new Map<string, number>();
  /** The shard of (payer i, payee j) at i * banks + j: one typed array, no per-pair objects. */
  private readonly table: Uint16Array;
  private readonly n: number;

  constructor(
    banks: readonly string[],
    readonly shards: number,
  ) {
    assert(shards <= 0xffff, 'too many shards for the shard table');
    this.n = banks.length;
    banks.forEach((b, i) => this.index.set(b, i));
    this.table = new Uint16Array(this.n * this.n);
    for (let i = 0; i < this.n; i++) {
      for (let j = i + 1; j < this.n; j++) {
        const s = shardOfPair(banks[i]!, banks[j]!, shards);
        this.table[i * this.n + j] = s;
        this.table[j * this.n + i] = s;
      }
    }
  }

  shardOf(payer: string, payee: string): number {
    const i = this.index.get(payer);
    const j = this.index.get(payee);
    assert(i !== undefined && j !== undefined && i !== j, `no shard for pair ${payer}|${payee}`);
    return this.table[i * this.n + j]!;
  }
}
