import { describe, expect, it } from 'vitest';
import { InflightIndex, type IndexedEntry } from '../../src/router/inflight-index.js';

function entry(institution: string, id: string): IndexedEntry {
  return { op: ['S', institution, id], place: 'listed' };
}

describe('InflightIndex', () => {
  it('finds listed and mapped entries alike, and forgets removed ones', () => {
    const index = new InflightIndex<IndexedEntry>();
    const a = entry('PI0001', 'a');
    const b = entry('PI0001', 'b');
    const c = entry('PI0002', 'a');
    index.addUnindexed(a);
    index.addUnindexed(b);
    index.add(c);
    expect(index.size).toBe(3);
    expect(index.get('PI0001', 'a')).toBe(a);
    expect(index.get('PI0002', 'a')).toBe(c);
    expect(index.get('PI0002', 'b')).toBeUndefined();
    // Listed after a look-up, removed before the next one: never mapped, never found.
    const d = entry('PI0001', 'd');
    index.addUnindexed(d);
    index.delete(d);
    expect(index.get('PI0001', 'd')).toBeUndefined();
    index.delete(a);
    index.delete(b);
    expect(index.get('PI0001', 'a')).toBeUndefined();
    expect(index.get('PI0001', 'b')).toBeUndefined();
    expect(index.size).toBe(1);
    expect(() => index.delete(a)).toThrow(/removed twice/);
  });

  it('keeps live listed entries through the clean-ups of a long stream with no look-ups', () => {
    const index = new InflightIndex<IndexedEntry>();
    const live: IndexedEntry[] = [];
    for (let i = 0; i < 20_000; i++) {
      const e = entry('PI0001', `id-${i}`);
      index.addUnindexed(e);
      live.push(e);
      // A window of 100 in flight, answered in order.
      if (live.length > 100) index.delete(live.shift()!);
    }
    expect(index.size).toBe(100);
    for (const e of live) expect(index.get('PI0001', e.op[2])).toBe(e);
    expect(index.get('PI0001', 'id-0')).toBeUndefined();
  });
});
