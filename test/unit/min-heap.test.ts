import { describe, expect, it } from 'vitest';
import { MinHeap } from '../../src/core/min-heap.js';
import { rng } from '../helpers/reference-model.js';

describe('MinHeap', () => {
  it('pops in key order, whatever the push order', () => {
    const rand = rng(1);
    const heap = new MinHeap<number>();
    const keys = Array.from({ length: 1000 }, () => Math.floor(rand() * 10_000));
    keys.forEach((k, i) => heap.push(k, i));
    expect(heap.size).toBe(1000);
    const out: number[] = [];
    while (heap.size > 0) {
      const k = heap.peekKey()!;
      const i = heap.pop()!;
      expect(keys[i]).toBe(k);
      out.push(k);
    }
    expect(out).toEqual([...keys].sort((a, b) => a - b));
    expect(heap.pop()).toBeUndefined();
    expect(heap.peekKey()).toBeUndefined();
  });
});
