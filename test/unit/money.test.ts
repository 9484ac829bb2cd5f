import { describe, it, expect } from 'vitest';
import { AssertionError } from '../../src/core/assert.js';
import { AMOUNT_CENTS_LIMIT, centsFromWire, centsToWire, isAmountInteger } from '../../src/core/money.js';

describe('centsToWire / centsFromWire', () => {
  it('renders decimal integer cents', () => {
    expect(centsToWire(0n)).toBe('0');
    expect(centsToWire(-1234500n)).toBe('-1234500');
    expect(centsToWire(1234500n)).toBe('1234500');
    expect(centsToWire(2n ** 64n)).toBe('18446744073709551616');
  });

  it('round-trips, including negatives and values above 2^64', () => {
    const values = [
      0n,
      1n,
      -1n,
      99n,
      -1234500n,
      BigInt(Number.MAX_SAFE_INTEGER) + 2n,
      2n ** 63n,
      -(2n ** 63n) - 1n,
      2n ** 64n + 1n,
      -(2n ** 64n) - 12345n,
      10n ** 40n + 7n,
    ];
    for (const v of values) {
      const wire = centsToWire(v);
      expect(centsFromWire(wire)).toBe(v);
      expect(centsToWire(centsFromWire(wire))).toBe(wire);
    }
  });

  it('parses exactly, without floating point', () => {
    expect(centsFromWire('9007199254740993')).toBe(9007199254740993n);
    expect(centsFromWire('-18446744073709551617')).toBe(-18446744073709551617n);
  });

  it.each(['1.5', '01', '+1', '', ' 1', '1 ', '1e3', '-', '--1', '0x10', 'abc', '1_000', '-01', '１', '-0'])(
    'rejects %j with AssertionError',
    (text) => {
      expect(() => centsFromWire(text)).toThrow(AssertionError);
    },
  );
});

describe('isAmountInteger', () => {
  it('accepts safe integers only', () => {
    expect(isAmountInteger(1)).toBe(true);
    expect(isAmountInteger(AMOUNT_CENTS_LIMIT)).toBe(true);
    expect(isAmountInteger(AMOUNT_CENTS_LIMIT + 1)).toBe(false);
    expect(isAmountInteger(1.5)).toBe(false);
    expect(isAmountInteger('1')).toBe(false);
    expect(isAmountInteger(1n)).toBe(false);
    expect(AMOUNT_CENTS_LIMIT).toBe(Number.MAX_SAFE_INTEGER);
  });
});
