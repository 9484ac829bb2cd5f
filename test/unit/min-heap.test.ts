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

describe('MinHeap.retain', () => {
  it('drops what it is told to and still pops the rest in key order', () => {
    const rand = rng(2);
    const heap = new MinHeap<number>();
    const keys = Array.from({ length: 2000 }, () => Math.floor(rand() * 10_000));
    keys.forEach((k, i) => heap.push(k, i));
    heap.retain((i) => i % 3 !== 0);
    expect(heap.size).toBe(keys.filter((_, i) => i % 3 !== 0).length);
    const out: number[] = [];
    while (heap.size > 0) {
      const i = heap.pop()!;
      expect(i % 3).not.toBe(0);
      out.push(keys[i]!);
    }
    expect(out).toEqual(keys.filter((_, i) => i % 3 !== 0).sort((a, b) => a - b));
  });
});
