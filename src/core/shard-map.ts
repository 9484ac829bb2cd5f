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
  /** payer → payee → shard, both directions: a look-up builds no string. */
  private readonly table = new Map<string, Map<string, number>>();

  constructor(
    banks: readonly string[],
    readonly shards: number,
  ) {
    for (const x of banks) {
      const row = new Map<string, number>();
      for (const y of banks) if (x !== y) row.set(y, shardOfPair(x, y, shards));
      this.table.set(x, row);
    }
  }

  shardOf(payer: string, payee: string): number {
    const s = this.table.get(payer)?.get(payee);
    assert(s !== undefined, `no shard for pair ${payer}|${payee}`);
    return s;
  }
}
