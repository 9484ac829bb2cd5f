/**
 * Settlement batch ids (清算场次): '<business date>-<nnn>', sorting in
 * creation order as strings.
 */

import { businessDate } from '../core/business-time.js';

/** Batches per business day: the three-digit suffix keeps ids sorting as strings. */
export const BATCHES_PER_DAY_MAX = 999;

/** A cut-off refused, before it changed anything: the business day has BATCHES_PER_DAY_MAX batches. */
export class BatchIdExhausted extends Error {
  override name = 'BatchIdExhausted';
}

/** The batch after `previous` (or the first), opened at `now`: ids sort in creation order. */
export function nextBatchId(previous: string | undefined, now: number): string {
  const date = businessDate(now);
  if (previous !== undefined) {
    const [prevDate, prevSeq] = previous.split('-');
    if (prevDate !== undefined && prevDate >= date) {
      // A clock that went backwards keeps the previous date so ids still sort.
      const seq = Number(prevSeq) + 1;
      if (seq > BATCHES_PER_DAY_MAX) throw new BatchIdExhausted(`business day ${prevDate} already has ${BATCHES_PER_DAY_MAX} batches`);
      return `${prevDate}-${String(seq).padStart(3, '0')}`;
    }
  }
  return `${date}-001`;
}
