/**
 * The shape checks of a submission or of receipts, shared by HTTP and
 * WebSocket: one item, or a list of them with a bounded length. Field-level
 * validation is the domain core's; this only finds the items.
 */

import { isPlainObject } from '../core/instruction.js';
import { failure, type Failure } from '../protocol/errors.js';

export interface Items {
  items: unknown[];
  /** One bare item (HTTP), answered with one result rather than a list. */
  single: boolean;
}

export function itemsFromList(list: unknown, field: string, batchItemsMax: number): unknown[] | Failure {
  if (!Array.isArray(list)) return failure('INVALID_FIELD', `${field} must be an array`, field);
  if (list.length === 0) return failure('INVALID_FIELD', `${field} must hold at least one item`, field);
  if (list.length > batchItemsMax) return failure('PAYLOAD_TOO_LARGE', `${field} holds more than ${batchItemsMax} items`, field);
  return list;
}

/** `POST /v1/instructions`: an instruction, or `{ "instructions": [ … ] }`. */
export function submissionItems(body: unknown, batchItemsMax: number): Items | Failure {
  if (!isPlainObject(body)) return failure('INVALID_MESSAGE', 'the body must be an instruction object or { "instructions": [ … ] }');
  if (!Object.hasOwn(body, 'instructions')) return { items: [body], single: true };
  const keys = Object.keys(body);
  if (keys.length !== 1) return failure('INVALID_MESSAGE', 'a batch body holds only "instructions"');
  const items = itemsFromList(body['instructions'], 'instructions', batchItemsMax);
  return Array.isArray(items) ? { items, single: false } : items;
}

/** `POST /v1/receipts` and `POST /v1/mandates/receipts`: a receipt, or `{ "receipts": [ … ] }`. */
export function receiptItems(body: unknown, batchItemsMax: number): Items | Failure {
  // A body that is not an object is one receipt: the core answers it item by item, as INVALID_MESSAGE.
  if (!isPlainObject(body) || !Object.hasOwn(body, 'receipts')) return { items: [body], single: true };
  if (Object.keys(body).length !== 1) return failure('INVALID_MESSAGE', 'a batch body holds only "receipts"');
  const items = itemsFromList(body['receipts'], 'receipts', batchItemsMax);
  return Array.isArray(items) ? { items, single: false } : items;
}
