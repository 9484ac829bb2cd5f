import { describe, it, expect } from 'vitest';
import {
  contentKey,
  isFailure,
  rawId,
  validateInstruction,
  type Instruction,
  type ValidationRules,
} from '../../src/core/instruction.js';
import type { Failure } from '../../src/protocol/errors.js';

const MAX = 1_000_000_000_000;
const BANKS = new Set(['ICBC', 'ABC', 'BOC', 'CMB']);

function rules(twoPhaseEnabled = false): ValidationRules {
  return { isBank: (code) => BANKS.has(code), amountCentsMax: MAX, twoPhaseEnabled };
}

function base(): Record<string, unknown> {
  return { id: 'T-1', type: 'agreement', payer: 'ICBC', payee: 'ABC', amount: 100 };
}

function validate(raw: unknown, twoPhaseEnabled = false): Instruction | Failure {
  return validateInstruction(raw, 'PI0001', rules(twoPhaseEnabled));
}

function ok(raw: unknown, twoPhaseEnabled = false): Instruction {
  const r = validate(raw, twoPhaseEnabled);
  if (isFailure(r)) throw new Error(`expected an instruction, got ${r.code} ${r.message} (${r.field ?? ''})`);
  return r;
}

function fails(raw: unknown, twoPhaseEnabled = false): Failure {
  const r = validate(raw, twoPhaseEnabled);
  if (!isFailure(r)) throw new Error(`expected a failure, got ${JSON.stringify(r)}`);
  return r;
}

function expectFailure(raw: unknown, code: string, field?: string, twoPhaseEnabled = false): void {
  const f = fails(raw, twoPhaseEnabled);
  expect(f.code).toBe(code);
  if (field !== undefined) expect(f.field).toBe(field);
  expect(typeof f.message).toBe('string');
  expect(f.message.length).toBeGreaterThan(0);
}

describe('validateInstruction: a valid instruction', () => {
  it('returns the instruction in the name of the institution, single-phase by default', () => {
    const i = ok(base());
    expect(i).toEqual({ institution: 'PI0001', id: 'T-1', type: 'agreement', payer: 'ICBC', payee: 'ABC', amount: 100, twoPhase: false });
    expect('timeoutMs' in i).toBe(false);
    expect('reference' in i).toBe(false);
    expect(isFailure(i)).toBe(false);
  });

  it('accepts every one of the five types', () => {
    for (const type of ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout']) {
      expect(ok({ ...base(), type }).type).toBe(type);
    }
  });

  it('accepts an object with a null prototype', () => {
    const raw = Object.assign(Object.create(null) as Record<string, unknown>, base());
    expect(ok(raw).id).toBe('T-1');
  });

  it('accepts explicit twoPhase false without a timeout', () => {
    const i = ok({ ...base(), twoPhase: false });
    expect(i.twoPhase).toBe(false);
    expect(i.timeoutMs).toBeUndefined();
  });

  it('keeps a non-empty reference', () => {
    expect(ok({ ...base(), reference: 'invoice 42' }).reference).toBe('invoice 42');
  });
});

describe('validateInstruction: shape', () => {
  it.each([
    ['an array', [base()]],
    ['null', null],
    ['a string', 'T-1'],
    ['a number', 42],
    ['undefined', undefined],
    ['a boolean', true],
    ['a Uint8Array', new Uint8Array([1, 2])],
    ['a Date', new Date(0)],
  ])('%s is INVALID_MESSAGE', (_name, raw) => {
    expectFailure(raw, 'INVALID_MESSAGE');
  });
});

describe('validateInstruction: unknown fields', () => {
  it('an unknown field is INVALID_FIELD naming it', () => {
    expectFailure({ ...base(), extra: 1 }, 'INVALID_FIELD', 'extra');
  });

  it('"__proto__" parsed from JSON is an unknown field', () => {
    const raw: unknown = JSON.parse('{"__proto__":1,"id":"T-1","type":"agreement","payer":"ICBC","payee":"ABC","amount":100}');
    expectFailure(raw, 'INVALID_FIELD', '__proto__');
  });

  it('"constructor" is an unknown field', () => {
    const raw: unknown = JSON.parse('{"constructor":{},"id":"T-1","type":"agreement","payer":"ICBC","payee":"ABC","amount":100}');
    expectFailure(raw, 'INVALID_FIELD', 'constructor');
  });

  it('"toString" and "hasOwnProperty" are unknown fields', () => {
    expectFailure({ ...base(), toString: 'x' }, 'INVALID_FIELD', 'toString');
    expectFailure({ ...base(), hasOwnProperty: 1 }, 'INVALID_FIELD', 'hasOwnProperty');
  });

  it('fields are case-sensitive', () => {
    expectFailure({ ...base(), TwoPhase: true }, 'INVALID_FIELD', 'TwoPhase');
  });

  it('unknown fields are reported before any other problem', () => {
    expectFailure({ extra: 1 }, 'INVALID_FIELD', 'extra');
  });
});

describe('validateInstruction: id', () => {
  it('missing id is INVALID_FIELD id', () => {
    const { id: _omit, ...rest } = base();
    expectFailure(rest, 'INVALID_FIELD', 'id');
  });

  it.each([
    ['a number', 1],
    ['null', null],
    ['a boolean', true],
    ['an array', ['T-1']],
    ['an object', { id: 'T-1' }],
  ])('id that is %s is INVALID_FIELD id', (_name, id) => {
    expectFailure({ ...base(), id }, 'INVALID_FIELD', 'id');
  });

  it.each([
    ['empty', ''],
    ['65 characters', 'a'.repeat(65)],
    ['a space', 'T 1'],
    ['a slash', 'T/1'],
    ['a unicode letter', 'Té'],
    ['CJK', '指令1'],
    ['a control char', 'T\u00011'],
    ['a trailing newline', 'T-1\n'],
    ['a NUL', 'T-1\u0000'],
    ['a plus', 'T+1'],
  ])('id with %s is INVALID_FIELD id', (_name, id) => {
    expectFailure({ ...base(), id }, 'INVALID_FIELD', 'id');
  });

  it('a 64-character id is accepted', () => {
    const id = 'x'.repeat(64);
    expect(ok({ ...base(), id }).id).toBe(id);
  });

  it('every allowed character is accepted', () => {
    const id = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-';
    // 66 characters: split into two ids of at most 64.
    expect(ok({ ...base(), id: id.slice(0, 64) }).id).toBe(id.slice(0, 64));
    expect(ok({ ...base(), id: id.slice(-10) }).id).toBe(id.slice(-10));
    for (const c of '._:-') expect(ok({ ...base(), id: c }).id).toBe(c);
  });
});

describe('validateInstruction: type', () => {
  it.each([
    ['missing', undefined],
    ['unknown', 'transfer'],
    ['wrong case', 'Agreement'],
    ['a number', 1],
    ['empty', ''],
  ])('type %s is INVALID_FIELD type', (_name, type) => {
    const raw = base();
    if (type === undefined) delete raw['type'];
    else raw['type'] = type;
    expectFailure(raw, 'INVALID_FIELD', 'type');
  });

  it('an inherited Object.prototype name is not a type', () => {
    expectFailure({ ...base(), type: 'toString' }, 'INVALID_FIELD', 'type');
  });
});

describe('validateInstruction: payer and payee', () => {
  it.each([
    ['payer', 1],
    ['payer', null],
    ['payee', ['ABC']],
    ['payee', false],
  ])('%s not a string is INVALID_FIELD', (field, value) => {
    expectFailure({ ...base(), [field]: value }, 'INVALID_FIELD', field);
  });

  it('missing payer or payee is INVALID_FIELD', () => {
    const { payer: _p, ...noPayer } = base();
    expectFailure(noPayer, 'INVALID_FIELD', 'payer');
    const { payee: _q, ...noPayee } = base();
    expectFailure(noPayee, 'INVALID_FIELD', 'payee');
  });

  it('unknown payer is UNKNOWN_BANK payer', () => {
    expectFailure({ ...base(), payer: 'XXXX' }, 'UNKNOWN_BANK', 'payer');
  });

  it('unknown payee is UNKNOWN_BANK payee', () => {
    expectFailure({ ...base(), payee: 'XXXX' }, 'UNKNOWN_BANK', 'payee');
  });

  it('bank codes are case-sensitive', () => {
    expectFailure({ ...base(), payee: 'abc' }, 'UNKNOWN_BANK', 'payee');
  });

  it('payer === payee is SAME_BANK', () => {
    expectFailure({ ...base(), payer: 'ICBC', payee: 'ICBC' }, 'SAME_BANK');
  });

  it('an unknown bank that equals the other side is UNKNOWN_BANK, not SAME_BANK', () => {
    expectFailure({ ...base(), payer: 'XXXX', payee: 'XXXX' }, 'UNKNOWN_BANK', 'payer');
  });
});

describe('validateInstruction: amount', () => {
  it.each([
    ['1.5', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['"100"', '100'],
    ['null', null],
    ['true', true],
    ['a bigint', 100n],
    ['an array', [100]],
  ])('amount %s is INVALID_FIELD amount', (_name, amount) => {
    expectFailure({ ...base(), amount }, 'INVALID_FIELD', 'amount');
  });

  it('missing amount is INVALID_FIELD amount', () => {
    const { amount: _a, ...rest } = base();
    expectFailure(rest, 'INVALID_FIELD', 'amount');
  });

  it.each([
    ['0', 0],
    ['-0', -0],
    ['-5', -5],
    ['maxAmount+1', MAX + 1],
    ['1e21', 1e21],
    ['MAX_SAFE_INTEGER', Number.MAX_SAFE_INTEGER],
  ])('amount %s is AMOUNT_OUT_OF_RANGE', (_name, amount) => {
    expectFailure({ ...base(), amount }, 'AMOUNT_OUT_OF_RANGE', 'amount');
  });

  it('1 and exactly maxAmountCents are accepted', () => {
    expect(ok({ ...base(), amount: 1 }).amount).toBe(1);
    expect(ok({ ...base(), amount: MAX }).amount).toBe(MAX);
  });

  it('the maximum comes from the rules', () => {
    const r = validateInstruction({ ...base(), amount: 101 }, 'PI0001', { ...rules(), amountCentsMax: 100 });
    expect(isFailure(r) && r.code).toBe('AMOUNT_OUT_OF_RANGE');
    const r2 = validateInstruction({ ...base(), amount: 100 }, 'PI0001', { ...rules(), amountCentsMax: 100 });
    expect(isFailure(r2)).toBe(false);
  });
});

describe('validateInstruction: two-phase fields', () => {
  it.each([
    ['"true"', 'true'],
    ['1', 1],
    ['0', 0],
    ['null', null],
  ])('twoPhase %s is INVALID_FIELD twoPhase', (_name, twoPhase) => {
    expectFailure({ ...base(), twoPhase }, 'INVALID_FIELD', 'twoPhase', true);
  });

  it('timeoutMs without twoPhase is INVALID_FIELD timeoutMs', () => {
    expectFailure({ ...base(), timeoutMs: 1000 }, 'INVALID_FIELD', 'timeoutMs', true);
    expectFailure({ ...base(), twoPhase: false, timeoutMs: 1000 }, 'INVALID_FIELD', 'timeoutMs', true);
  });

  it('twoPhase true while two-phase is disabled is INVALID_FIELD twoPhase', () => {
    expectFailure({ ...base(), twoPhase: true }, 'INVALID_FIELD', 'twoPhase', false);
    expectFailure({ ...base(), twoPhase: true, timeoutMs: 1000 }, 'INVALID_FIELD', 'twoPhase', false);
  });

  it('with two-phase enabled, the default timeout is 30000', () => {
    const i = ok({ ...base(), twoPhase: true }, true);
    expect(i.twoPhase).toBe(true);
    expect(i.timeoutMs).toBe(30_000);
  });

  it('with two-phase enabled, timeoutMs bounds 100..86400000 are inclusive', () => {
    expect(ok({ ...base(), twoPhase: true, timeoutMs: 100 }, true).timeoutMs).toBe(100);
    expect(ok({ ...base(), twoPhase: true, timeoutMs: 86_400_000 }, true).timeoutMs).toBe(86_400_000);
    expect(ok({ ...base(), twoPhase: true, timeoutMs: 5000 }, true).timeoutMs).toBe(5000);
  });

  it.each([
    ['99', 99],
    ['86400001', 86_400_001],
    ['0', 0],
    ['-1', -1],
    ['100.5', 100.5],
    ['"1000"', '1000'],
    ['null', null],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
  ])('with two-phase enabled, timeoutMs %s is INVALID_FIELD timeoutMs', (_name, timeoutMs) => {
    expectFailure({ ...base(), twoPhase: true, timeoutMs }, 'INVALID_FIELD', 'timeoutMs', true);
  });
});

describe('validateInstruction: reference', () => {
  it.each([
    ['a number', 1],
    ['null', null],
    ['an array', ['x']],
    ['a boolean', false],
  ])('reference that is %s is INVALID_FIELD reference', (_name, reference) => {
    expectFailure({ ...base(), reference }, 'INVALID_FIELD', 'reference');
  });

  it('140 ASCII characters are accepted, 141 are not', () => {
    expect(ok({ ...base(), reference: 'r'.repeat(140) }).reference).toBe('r'.repeat(140));
    expectFailure({ ...base(), reference: 'r'.repeat(141) }, 'INVALID_FIELD', 'reference');
  });

  it('counts code points: 140 CJK accepted, 141 CJK refused', () => {
    expect(ok({ ...base(), reference: '汇'.repeat(140) }).reference).toBe('汇'.repeat(140));
    expectFailure({ ...base(), reference: '汇'.repeat(141) }, 'INVALID_FIELD', 'reference');
  });

  it('counts code points, not UTF-16 units: 140 emoji (280 units) accepted, 141 refused', () => {
    const emoji140 = '😀'.repeat(140);
    expect(emoji140.length).toBe(280);
    expect(ok({ ...base(), reference: emoji140 }).reference).toBe(emoji140);
    expectFailure({ ...base(), reference: '😀'.repeat(141) }, 'INVALID_FIELD', 'reference');
  });

  it.each([
    ['NUL', 'a\u0000b'],
    ['newline', 'line1\nline2'],
    ['tab', 'a\tb'],
    ['unit separator', 'a\u001fb'],
    ['DEL', 'a\u007fb'],
    ['\\u0001 (the content-key separator)', 'a\u0001b'],
    ['C1 next line', 'a\u0085b'],
    ['C1 CSI', 'a\u009bb'],
  ])('a control char (%s) is INVALID_FIELD reference', (_name, reference) => {
    expectFailure({ ...base(), reference }, 'INVALID_FIELD', 'reference');
  });

  it.each([
    ['lone high surrogate', '\uD800'],
    ['lone low surrogate', 'x\uDC00y'],
    ['reversed pair', '\uDE00\uD83D'],
  ])('a %s is INVALID_FIELD reference', (_name, reference) => {
    expectFailure({ ...base(), reference }, 'INVALID_FIELD', 'reference');
  });

  it('an empty reference is normalised to absent', () => {
    const i = ok({ ...base(), reference: '' });
    expect(i.reference).toBeUndefined();
    expect(Object.hasOwn(i, 'reference')).toBe(false);
  });
});

describe('validateInstruction: fixed check order', () => {
  it('id is checked before type, type before banks, banks before amount', () => {
    expectFailure({ id: '', type: 'x', payer: 'XXXX', payee: 'XXXX', amount: 0 }, 'INVALID_FIELD', 'id');
    expectFailure({ id: 'T', type: 'x', payer: 'XXXX', payee: 'XXXX', amount: 0 }, 'INVALID_FIELD', 'type');
    expectFailure({ id: 'T', type: 'gateway', payer: 'XXXX', payee: 'ABC', amount: 0 }, 'UNKNOWN_BANK', 'payer');
    expectFailure({ id: 'T', type: 'gateway', payer: 'ICBC', payee: 'ABC', amount: 0, reference: 1 }, 'AMOUNT_OUT_OF_RANGE', 'amount');
  });
});

describe('contentKey', () => {
  const key = (raw: Record<string, unknown>, twoPhaseEnabled = true): string => contentKey(ok(raw, twoPhaseEnabled));

  it('is equal for identical content', () => {
    expect(key({ ...base(), reference: 'r' })).toBe(key({ ...base(), reference: 'r' }));
  });

  it('ignores the id and the institution', () => {
    const a = validateInstruction({ ...base(), id: 'A' }, 'PI0001', rules());
    const b = validateInstruction({ ...base(), id: 'B' }, 'PI0002', rules());
    if (isFailure(a) || isFailure(b)) throw new Error('unexpected failure');
    expect(contentKey(a)).toBe(contentKey(b));
  });

  it('is equal for an absent and an empty reference after validation', () => {
    expect(key({ ...base(), reference: '' })).toBe(key(base()));
  });

  it('is equal for a default and an explicit 30000 timeout', () => {
    expect(key({ ...base(), twoPhase: true })).toBe(key({ ...base(), twoPhase: true, timeoutMs: 30_000 }));
  });

  it('is equal for absent and explicit false twoPhase', () => {
    expect(key({ ...base(), twoPhase: false })).toBe(key(base()));
  });

  it.each([
    ['type', { type: 'payout' }],
    ['payer', { payer: 'BOC' }],
    ['payee', { payee: 'CMB' }],
    ['payer and payee swapped', { payer: 'ABC', payee: 'ICBC' }],
    ['amount', { amount: 101 }],
    ['twoPhase', { twoPhase: true }],
    ['reference', { reference: 'x' }],
  ])('differs when %s differs', (_name, change) => {
    expect(key({ ...base(), ...change })).not.toBe(key(base()));
  });

  it('differs when the timeout differs', () => {
    expect(key({ ...base(), twoPhase: true, timeoutMs: 1000 })).not.toBe(key({ ...base(), twoPhase: true }));
  });

  it('differs between references that differ only in their ending', () => {
    expect(key({ ...base(), reference: 'a' })).not.toBe(key({ ...base(), reference: 'a ' }));
  });
});

describe('rawId', () => {
  it('returns a valid id', () => {
    expect(rawId({ id: 'T-1', junk: true })).toBe('T-1');
    expect(rawId({ id: 'x'.repeat(64) })).toBe('x'.repeat(64));
  });

  it('returns undefined for an invalid id', () => {
    expect(rawId({ id: '' })).toBeUndefined();
    expect(rawId({ id: 'x'.repeat(65) })).toBeUndefined();
    expect(rawId({ id: 'T 1' })).toBeUndefined();
    expect(rawId({ id: 7 })).toBeUndefined();
    expect(rawId({})).toBeUndefined();
  });

  it('returns undefined for non-objects', () => {
    expect(rawId(null)).toBeUndefined();
    expect(rawId('T-1')).toBeUndefined();
    expect(rawId(['T-1'])).toBeUndefined();
    expect(rawId(undefined)).toBeUndefined();
  });

  it('does not read an inherited id', () => {
    const raw: unknown = Object.create({ id: 'T-1' });
    expect(rawId(raw)).toBeUndefined();
  });
});
