import { describe, it, expect } from 'vitest';
import { itemsFromList, submissionItems } from '../../src/gateway/intake.js';

const MAX = 5;
const item = { id: 'T-1', type: 'agreement', payer: 'ICBC', payee: 'ABC', amount: 100 };

describe('submissionItems', () => {
  it('a single object is one item with single: true', () => {
    const r = submissionItems(item, MAX);
    expect(r).toEqual({ items: [item], single: true });
    if (!('items' in r)) throw new Error('expected items');
    expect(r.items[0]).toBe(item);
  });

  it('a single object is not shape-checked here (field validation is the core’s)', () => {
    expect(submissionItems({ anything: 1 }, MAX)).toEqual({ items: [{ anything: 1 }], single: true });
    expect(submissionItems({}, MAX)).toEqual({ items: [{}], single: true });
  });

  it('{ instructions: [...] } gives the items with single: false', () => {
    const list = [item, { ...item, id: 'T-2' }, 'not-an-object'];
    const r = submissionItems({ instructions: list }, MAX);
    expect(r).toEqual({ items: list, single: false });
  });

  it('exactly batchItemsMax items are accepted', () => {
    const list = new Array(MAX).fill(item);
    expect(submissionItems({ instructions: list }, MAX)).toEqual({ items: list, single: false });
  });

  it('{ instructions: [...], extra: 1 } is INVALID_MESSAGE', () => {
    expect(submissionItems({ instructions: [item], extra: 1 }, MAX)).toMatchObject({ code: 'INVALID_MESSAGE' });
  });

  it.each([
    ['an object', { a: item }],
    ['a string', 'x'],
    ['null', null],
    ['a number', 3],
  ])('instructions that is %s is INVALID_FIELD instructions', (_name, instructions) => {
    expect(submissionItems({ instructions }, MAX)).toMatchObject({ code: 'INVALID_FIELD', field: 'instructions' });
  });

  it('an empty list is INVALID_FIELD instructions', () => {
    expect(submissionItems({ instructions: [] }, MAX)).toMatchObject({ code: 'INVALID_FIELD', field: 'instructions' });
  });

  it('more than batchItemsMax items is PAYLOAD_TOO_LARGE', () => {
    expect(submissionItems({ instructions: new Array(MAX + 1).fill(item) }, MAX)).toMatchObject({
      code: 'PAYLOAD_TOO_LARGE',
      field: 'instructions',
    });
  });

  it.each([
    ['an array', [item]],
    ['a string', 'hello'],
    ['null', null],
    ['a number', 1],
    ['undefined', undefined],
    ['a byte array', new Uint8Array([1])],
  ])('a body that is %s is INVALID_MESSAGE', (_name, body) => {
    const r = submissionItems(body, MAX);
    expect(r).toMatchObject({ code: 'INVALID_MESSAGE' });
    expect('items' in r).toBe(false);
  });

  it('an inherited instructions key does not make a batch', () => {
    const body: unknown = JSON.parse('{"__proto__":{"instructions":[1]},"id":"T-1"}');
    const r = submissionItems(body, MAX);
    expect(r).toMatchObject({ single: true });
  });
});

describe('itemsFromList', () => {
  it('names the field it was given', () => {
    expect(itemsFromList('x', 'receipts', 3)).toMatchObject({ code: 'INVALID_FIELD', field: 'receipts' });
    expect(itemsFromList([1, 2, 3, 4], 'receipts', 3)).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', field: 'receipts' });
    expect(itemsFromList([1, 2, 3], 'receipts', 3)).toEqual([1, 2, 3]);
  });
});
