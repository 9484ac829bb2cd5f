import { describe, expect, it } from 'vitest';
import { IdFilter } from '../../src/core/id-filter.js';

describe('IdFilter', () => {
  it('never forgets a key it was given whole, asked in parts, and rarely claims one it was not', () => {
    const f = new IdFilter(2 ** 20);
    const n = 60_000;
    for (let i = 0; i < n; i++) f.add(`PI0001/T-${i}`);
    for (let i = 0; i < n; i++) expect(f.mayHave('PI0001', `T-${i}`)).toBe(true);
    let falsePositives = 0;
    for (let i = 0; i < n; i++) if (f.mayHave('PI0002', `T-${i}`)) falsePositives++;
    // 17 bits per key and four probes: about 0.3% expected.
    expect(falsePositives / n).toBeLessThan(0.01);
  });

  it('hashes the parts as it hashes the joined key, so a shard\'s stored keys and routed ids agree', () => {
    // One key per filter, so each answer depends on exactly that key's probe bits.
    for (const [institution, id] of [['PI0001', 'x'], ['B', 'a.b:c-d_e'], ['PI0004', '9'.repeat(64)]] as const) {
      const whole = new IdFilter(1 << 16);
      whole.add(`${institution}/${id}`);
      const parts = new IdFilter(1 << 16);
      expect(parts.testAndAdd(institution, id)).toBe(false);
      expect([...parts.words]).toEqual([...whole.words]);
    }
  });

  it('tests and adds in one step', () => {
    const f = new IdFilter(4096);
    expect(f.testAndAdd('PI0001', 'x')).toBe(false);
    expect(f.testAndAdd('PI0001', 'x')).toBe(true);
    expect(f.mayHave('PI0001', 'x')).toBe(true);
  });

  it('merges filters built apart (one per shard) into one that knows every key', () => {
    const a = new IdFilter(4096);
    const b = new IdFilter(4096);
    a.add('PI0001/a');
    b.add('PI0001/b');
    const all = new IdFilter(4096);
    all.merge(a.words);
    all.merge(b.words);
    expect(all.mayHave('PI0001', 'a')).toBe(true);
    expect(all.mayHave('PI0001', 'b')).toBe(true);
    expect(() => all.merge(new Uint32Array(8))).toThrow();
    expect(() => new IdFilter(1000)).toThrow();
  });
});
