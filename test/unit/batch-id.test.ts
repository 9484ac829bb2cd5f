import { describe, it, expect } from 'vitest';
import { businessDate } from '../../src/core/business-time.js';
import { BatchIdExhausted, nextBatchId } from '../../src/settlement/batch-id.js';

const at = (iso: string): number => Date.parse(iso);

describe('businessDate', () => {
  it('follows UTC+8', () => {
    expect(businessDate(at('2026-11-22T15:59:59Z'))).toBe('20261122');
    expect(businessDate(at('2026-11-22T15:59:59.999Z'))).toBe('20261122');
    expect(businessDate(at('2026-11-22T16:00:00Z'))).toBe('20261123');
    expect(businessDate(at('2026-11-22T00:00:00Z'))).toBe('20261122');
    expect(businessDate(at('2026-11-21T16:00:00Z'))).toBe('20261122');
  });

  it('pads month and day and crosses the year in Beijing time', () => {
    expect(businessDate(at('2026-01-05T03:00:00Z'))).toBe('20260105');
    expect(businessDate(at('2026-12-31T16:00:00Z'))).toBe('20270101');
    expect(businessDate(at('2028-02-28T16:30:00Z'))).toBe('20280229');
  });
});

describe('nextBatchId', () => {
  const t = at('2026-11-22T04:00:00Z');

  it('starts at 001 with no previous batch', () => {
    expect(nextBatchId(undefined, t)).toBe('20261122-001');
  });

  it('increments on the same date', () => {
    expect(nextBatchId('20261122-001', t)).toBe('20261122-002');
    expect(nextBatchId('20261122-009', t)).toBe('20261122-010');
    expect(nextBatchId('20261122-099', t)).toBe('20261122-100');
  });

  it('resets to 001 on a new date', () => {
    expect(nextBatchId('20261121-005', t)).toBe('20261122-001');
    expect(nextBatchId('20261122-005', at('2026-11-22T16:00:00Z'))).toBe('20261123-001');
  });

  it('keeps sorting upward when the clock went back', () => {
    const previous = '20261123-004';
    const next = nextBatchId(previous, t);
    expect(next).toBe('20261123-005');
    expect(next > previous).toBe(true);
  });

  it('ids produced in sequence sort lexicographically in creation order', () => {
    const times = [
      '2026-11-22T01:00:00Z',
      '2026-11-22T02:00:00Z',
      '2026-11-22T15:59:59Z',
      '2026-11-22T16:00:00Z', // new business day
      '2026-11-22T17:00:00Z',
      '2026-11-22T10:00:00Z', // clock went back a day
      '2026-11-22T18:00:00Z',
      '2026-11-24T00:00:00Z',
      '2026-11-24T00:00:01Z',
    ].map(at);
    for (let i = 0; i < 40; i++) times.push(at('2026-11-24T01:00:00Z') + i * 60_000);
    const ids: string[] = [];
    let previous: string | undefined;
    for (const now of times) {
      previous = nextBatchId(previous, now);
      ids.push(previous);
    }
    expect(ids.slice(0, 9)).toEqual([
      '20261122-001',
      '20261122-002',
      '20261122-003',
      '20261123-001',
      '20261123-002',
      '20261123-003',
      '20261123-004',
      '20261124-001',
      '20261124-002',
    ]);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });
});

describe('the per-day bound', () => {
  it('refuses a thousandth batch in one business day rather than break the sort order', () => {
    const now = Date.parse('2026-11-22T02:00:00Z');
    expect(nextBatchId('20261122-998', now)).toBe('20261122-999');
    expect(() => nextBatchId('20261122-999', now)).toThrow(BatchIdExhausted);
    expect(nextBatchId('20261122-999', Date.parse('2026-11-22T16:00:00Z'))).toBe('20261123-001');
  });
});
