/**
 * Money is integer cents. A single validated amount is a safe-integer
 * `number`; every sum, total and position is a `bigint`, and on the wire a
 * string of decimal integer cents. No floating point touches money here.
 */

import { assert } from './assert.js';

/** The largest single amount a configuration may allow: Number.MAX_SAFE_INTEGER. */
export const AMOUNT_CENTS_LIMIT = Number.MAX_SAFE_INTEGER;

export function isAmountInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value);
}

/** Render a sum as the wire's decimal string ("-1234500"). */
export function centsToWire(cents: bigint): string {
  return cents.toString(10);
}

const DECIMAL_CENTS = /^(0|-?[1-9][0-9]*)$/;

/** Parse a stored or wire decimal string back to bigint, refusing anything else. */
export function centsFromWire(text: string): bigint {
  assert(DECIMAL_CENTS.test(text), `not a decimal cents string: ${JSON.stringify(text)}`);
  return BigInt(text);
}
