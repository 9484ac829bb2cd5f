/**
 * A Bloom filter of the instruction keys ('<institution>/<id>') the shards
 * hold: the duplicate rules check every shard for an id, and almost every
 * id is new, so the filter answers "certainly new" without touching LMDB,
 * and only a "maybe" (a stored id, or a rare false positive) is looked up.
 *
 * It never answers "new" for a stored id: every shard's keys are added at
 * start, and every routed submission is added before it is sent to its
 * shard. It is only ever added to, never cleared, while the engine runs.
 */

import { assert } from './assert.js';
import { fnv1a32 } from './shard-map.js';

/** Probes per key: with 13 or more bits per key, false positives stay near one percent. */
const PROBES = 4;
/**
 * All of a key's probes fall in one block of 512 bits (one 64-byte cache
 * line), so a test costs one memory miss instead of four: in a filter of
 * many megabytes the misses, not the hashing, are the cost.
 */
const BLOCK_BITS = 512;

/** A second, independent 32-bit hash (djb2 with xor), odd so that probes walk the whole table. */
function djb2x(text: string): number {
  let h = 5381;
  for (let i = 0; i < text.length; i++) h = (Math.imul(h, 33) ^ text.charCodeAt(i)) >>> 0;
  return (h | 1) >>> 0;
}

const SLASH = 0x2f;

/**
 * Both hashes of '<institution>/<id>' in one pass, without joining the
 * strings (the router holds the two parts): the same values as `fnv1a32`
 * and `djb2x` of the joined key, so keys added whole (from a shard's
 * stored keys) and keys tested in parts agree.
 */
function partHashes(institution: string, id: string, out: Uint32Array): void {
  let f = 0x811c9dc5;
  let d = 5381;
  for (let i = 0; i < institution.length; i++) {
    const c = institution.charCodeAt(i);
    f = Math.imul(f ^ c, 0x01000193) >>> 0;
    d = (Math.imul(d, 33) ^ c) >>> 0;
  }
  f = Math.imul(f ^ SLASH, 0x01000193) >>> 0;
  d = (Math.imul(d, 33) ^ SLASH) >>> 0;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    f = Math.imul(f ^ c, 0x01000193) >>> 0;
    d = (Math.imul(d, 33) ^ c) >>> 0;
  }
  out[0] = f;
  out[1] = (d | 1) >>> 0;
}

export class IdFilter {
  readonly words: Uint32Array;
  /** Blocks - 1: the block of a key is the low bits of its first hash. */
  private readonly blockMask: number;
  private readonly hashes = new Uint32Array(2);

  constructor(bits: number, words?: Uint32Array) {
    assert(Number.isInteger(Math.log2(bits)) && bits >= 1024 && bits <= 2 ** 32, 'filter bits must be a power of two from 1024 to 2^32');
    this.words = words ?? new Uint32Array(bits / 32);
    assert(this.words.length === bits / 32, 'filter words do not match its size');
    this.blockMask = bits / BLOCK_BITS - 1;
  }

  /** Add a whole key, '<institution>/<id>'. */
  add(key: string): void {
    this.probe(fnv1a32(key), djb2x(key), true);
  }

  mayHave(institution: string, id: string): boolean {
    partHashes(institution, id, this.hashes);
    return this.probe(this.hashes[0]!, this.hashes[1]!, false);
  }

  /**
   * Whether the key may be known, and then know it: one pair of hashes for
   * both. Adding a key that then turns out refused costs only a rare false
   * positive later, never a wrong answer.
   */
  testAndAdd(institution: string, id: string): boolean {
    partHashes(institution, id, this.hashes);
    return this.probe(this.hashes[0]!, this.hashes[1]!, true);
  }

  /** Whether all of a key's probe bits were set; with `add`, set them. */
  private probe(h1: number, h2: number, add: boolean): boolean {
    const base = (h1 & this.blockMask) * BLOCK_BITS;
    const step = (h1 >>> 20) | 1;
    let present = true;
    for (let i = 0; i < PROBES; i++) {
      const bit = base + ((h2 + Math.imul(i, step)) & (BLOCK_BITS - 1));
      const word = bit >>> 5;
      const flag = 1 << (bit & 31);
      if ((this.words[word]! & flag) === 0) {
        if (!add) return false;
        present = false;
        this.words[word]! |= flag;
      }
    }
    return present;
  }

  /** Take in another filter of the same size (one shard's keys). */
  merge(words: Uint32Array): void {
    assert(words.length === this.words.length, 'filters of different sizes');
    for (let i = 0; i < words.length; i++) this.words[i]! |= words[i]!;
  }
}
