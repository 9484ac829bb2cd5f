import { describe, it, expect } from 'vitest';
import { encode } from '@msgpack/msgpack';
import { Codec, DecodeFailure, literalIsInteger, MAP_KEYS_MAX, STRING_BYTES_MAX } from '../../src/protocol/codec.js';

const MESSAGE_BYTES_MAX = 1024;
const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

function codec(): Codec {
  return new Codec({ messageBytesMax: MESSAGE_BYTES_MAX });
}

function mapWithKeys(n: number): Record<string, number> {
  const m: Record<string, number> = {};
  for (let i = 0; i < n; i++) m[`k${i}`] = i;
  return m;
}

const instruction = { id: 'T-1', type: 'agreement', payer: 'ICBC', payee: 'ABC', amount: 1_000_000_000_000, twoPhase: false, reference: '汇款 😀' };

describe('Codec.decode: JSON', () => {
  it('decodes an object', () => {
    expect(codec().decode(utf8(JSON.stringify(instruction)), 'json')).toEqual(instruction);
  });

  it('decodes a batch and non-object values', () => {
    expect(codec().decode(utf8('{"instructions":[{"id":"a"},{"id":"b"}]}'), 'json')).toEqual({ instructions: [{ id: 'a' }, { id: 'b' }] });
    expect(codec().decode(utf8('[1,2]'), 'json')).toEqual([1, 2]);
    expect(codec().decode(utf8('null'), 'json')).toBeNull();
  });

  it('never lets a number literal that is no integer arrive as one (JSON.parse rounds to doubles)', () => {
    const d = (text: string): unknown => codec().decode(utf8(text), 'json');
    // Rounded to an integer by JSON.parse: put back as a number that is no integer, so the field rules refuse it.
    for (const literal of ['999999999999.99999', '1.0000000000000001', '7.000000000000000000001', '1e-400', '-0.0000000000000000001']) {
      const v = (d(`{"amount":${literal}}`) as { amount: number }).amount;
      expect(Number.isInteger(v), literal).toBe(false);
    }
    // Exactly integers, however written, and plain fractions, stay what they are.
    expect(d('{"a":100.0,"b":1e3,"c":12.50e1,"d":-2.000,"e":1.5,"f":0.25e1,"g":12}')).toEqual({ a: 100, b: 1000, c: 125, d: -2, e: 1.5, f: 2.5, g: 12 });
    // Inside strings nothing changes, and an item beside a bad one keeps its own amount.
    expect(d('{"id":"1.0000000000000001","r":"2e-400 \\"3.00000000000000001\\""}')).toEqual({ id: '1.0000000000000001', r: '2e-400 "3.00000000000000001"' });
    const batch = d('{"instructions":[{"amount":5},{"amount":5.0000000000000001},{"amount":6}]}') as { instructions: { amount: number }[] };
    expect(batch.instructions.map((i) => Number.isInteger(i.amount))).toEqual([true, false, true]);
    expect(batch.instructions[2]!.amount).toBe(6);
  });

  it('judges a literal by its digits', () => {
    for (const l of ['1', '100.0', '1e3', '12.50e1', '-0', '0.0e5', '5e0', '1.23e2', '123000e-3']) expect(literalIsInteger(l), l).toBe(true);
    for (const l of ['1.5', '1e-1', '1.0000000000000001', '123001e-3', '0.1e1x']) expect(literalIsInteger(l), l).toBe(false);
  });

  it('strips a UTF-8 BOM', () => {
    expect(codec().decode(new Uint8Array([0xef, 0xbb, 0xbf, ...utf8('{"a":1}')]), 'json')).toEqual({ a: 1 });
  });

  it.each([
    ['empty', ''],
    ['truncated', '{"a":'],
    ['trailing garbage', '{"a":1} x'],
    ['single quotes', "{'a':1}"],
    ['a trailing comma', '{"a":1,}'],
  ])('invalid JSON (%s) is a DecodeFailure', (_name, text) => {
    expect(() => codec().decode(utf8(text), 'json')).toThrow(DecodeFailure);
  });

  it('invalid UTF-8 bytes are a DecodeFailure', () => {
    expect(() => codec().decode(new Uint8Array([0x7b, 0xff, 0x7d]), 'json')).toThrow(DecodeFailure);
    // A lone surrogate encoded as UTF-8 (CESU) is not valid UTF-8 either.
    expect(() => codec().decode(new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]), 'json')).toThrow(DecodeFailure);
    // An overlong encoding of '/'.
    expect(() => codec().decode(new Uint8Array([0x22, 0xc0, 0xaf, 0x22]), 'json')).toThrow(DecodeFailure);
  });

  it('the failure is named DecodeFailure', () => {
    try {
      codec().decode(utf8('{'), 'json');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(DecodeFailure);
      expect((err as Error).name).toBe('DecodeFailure');
    }
  });
});

describe('Codec.decode: msgpack', () => {
  it('decodes an object', () => {
    expect(codec().decode(encode(instruction), 'msgpack')).toEqual(instruction);
  });

  it('truncated msgpack is a DecodeFailure', () => {
    const bytes = encode(instruction);
    expect(() => codec().decode(bytes.subarray(0, bytes.length - 1), 'msgpack')).toThrow(DecodeFailure);
    expect(() => codec().decode(bytes.subarray(0, 5), 'msgpack')).toThrow(DecodeFailure);
    expect(() => codec().decode(new Uint8Array([]), 'msgpack')).toThrow(DecodeFailure);
  });

  it('trailing bytes are a DecodeFailure', () => {
    const bytes = encode(instruction);
    const padded = new Uint8Array(bytes.length + 1);
    padded.set(bytes);
    padded[bytes.length] = 0x01;
    expect(() => codec().decode(padded, 'msgpack')).toThrow(DecodeFailure);
    // Two concatenated messages.
    expect(() => codec().decode(new Uint8Array([...encode({ a: 1 }), ...encode({ a: 2 })]), 'msgpack')).toThrow(DecodeFailure);
  });

  it('a string longer than STRING_BYTES_MAX is a DecodeFailure; exactly the max decodes', () => {
    expect(() => codec().decode(encode('x'.repeat(STRING_BYTES_MAX + 1)), 'msgpack')).toThrow(DecodeFailure);
    expect(() => codec().decode(encode({ reference: 'x'.repeat(STRING_BYTES_MAX + 1) }), 'msgpack')).toThrow(DecodeFailure);
    expect(codec().decode(encode('x'.repeat(STRING_BYTES_MAX)), 'msgpack')).toBe('x'.repeat(STRING_BYTES_MAX));
  });

  it('a binary longer than STRING_BYTES_MAX is a DecodeFailure', () => {
    expect(() => codec().decode(encode(new Uint8Array(STRING_BYTES_MAX + 1)), 'msgpack')).toThrow(DecodeFailure);
  });

  it('an array longer than messageBytesMax is a DecodeFailure; exactly the max decodes', () => {
    expect(() => codec().decode(encode({ instructions: new Array(MESSAGE_BYTES_MAX + 1).fill(0) }), 'msgpack')).toThrow(DecodeFailure);
    expect(codec().decode(encode(new Array(MESSAGE_BYTES_MAX).fill(0)), 'msgpack')).toEqual(new Array(MESSAGE_BYTES_MAX).fill(0));
  });

  it('an array header claiming 2^31 elements is a DecodeFailure (no allocation by the claim)', () => {
    expect(() => codec().decode(new Uint8Array([0xdd, 0x80, 0x00, 0x00, 0x00]), 'msgpack')).toThrow(DecodeFailure);
  });

  it('a string or map header claiming a huge length is a DecodeFailure', () => {
    expect(() => codec().decode(new Uint8Array([0xdb, 0xff, 0xff, 0xff, 0xff]), 'msgpack')).toThrow(DecodeFailure);
    expect(() => codec().decode(new Uint8Array([0xdf, 0x00, 0x01, 0x00, 0x00]), 'msgpack')).toThrow(DecodeFailure);
  });

  it('batch length is not the codec\'s concern: an array of more items than a batch allows still decodes', () => {
    // Batch sizes are checked after decoding (gateway/intake), where the answer can carry `seq`.
    const c = new Codec({ messageBytesMax: 1_048_576 });
    const list = new Array(10_001).fill({}); // the default batchItemsMax is 10,000
    expect(c.decode(encode({ instructions: list }), 'msgpack')).toEqual({ instructions: list });
  });

  it('a map with more than MAP_KEYS_MAX keys is a DecodeFailure; exactly the max decodes', () => {
    expect(() => codec().decode(encode(mapWithKeys(MAP_KEYS_MAX + 1)), 'msgpack')).toThrow(DecodeFailure);
    expect(codec().decode(encode(mapWithKeys(MAP_KEYS_MAX)), 'msgpack')).toEqual(mapWithKeys(MAP_KEYS_MAX));
  });

  it('a reserved byte (0xc1) is a DecodeFailure', () => {
    expect(() => codec().decode(new Uint8Array([0xc1]), 'msgpack')).toThrow(DecodeFailure);
  });

  it('a "__proto__" key is a plain own key in both encodings', () => {
    const withProto: unknown = JSON.parse('{"__proto__":{"polluted":1},"id":"T-1"}');
    const fromMsgpack = codec().decode(encode(withProto), 'msgpack') as Record<string, unknown>;
    expect(Object.getPrototypeOf(fromMsgpack)).toBe(Object.prototype);
    expect(Object.keys(fromMsgpack)).toEqual(['__proto__', 'id']);
    const fromJson = codec().decode(utf8('{"__proto__":{"polluted":1},"id":"T-1"}'), 'json') as Record<string, unknown>;
    expect(Object.getPrototypeOf(fromJson)).toBe(Object.prototype);
    expect(Object.keys(fromJson)).toEqual(['__proto__', 'id']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('stays usable after a failure', () => {
    const c = codec();
    expect(() => c.decode(encode(instruction).subarray(0, 10), 'msgpack')).toThrow(DecodeFailure);
    expect(() => c.decode(encode(mapWithKeys(MAP_KEYS_MAX + 1)), 'msgpack')).toThrow(DecodeFailure);
    expect(c.decode(encode(instruction), 'msgpack')).toEqual(instruction);
  });
});

describe('Codec.encode', () => {
  it('JSON round-trips', () => {
    const c = codec();
    const value = { results: [{ id: 'T-1', status: 'cleared', batch: '20261122-001' }], net: '-1234500' };
    const text = c.encode(value, 'json');
    expect(typeof text).toBe('string');
    expect(c.decode(utf8(text as string), 'json')).toEqual(value);
  });

  it('msgpack round-trips', () => {
    const c = codec();
    const value = { ...instruction, nested: { list: [1, -2, 3.5, null, true] } };
    const bytes = c.encode(value, 'msgpack');
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(c.decode(bytes as Uint8Array, 'msgpack')).toEqual(value);
  });

  it('msgpack drops undefined fields', () => {
    const c = codec();
    const bytes = c.encode({ id: 'T-1', code: undefined }, 'msgpack') as Uint8Array;
    const back = c.decode(bytes, 'msgpack') as Record<string, unknown>;
    expect(back).toEqual({ id: 'T-1' });
    expect(Object.hasOwn(back, 'code')).toBe(false);
  });
});

describe('msgpack maps with a __proto__ key', () => {
  it('decode to an own property, in order, like JSON.parse, with the prototype untouched', () => {
    const codec = new Codec({ messageBytesMax: 1 << 20 });
    const bytes = new Uint8Array([
      0x83,
      ...encode('id'),
      ...encode('x'),
      0xa9,
      ...new TextEncoder().encode('__proto__'),
      ...encode({ polluted: true }),
      ...encode('reference'),
      ...encode('a©__proto__b'),
    ]);
    const v = codec.decode(bytes, 'msgpack') as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(['id', '__proto__', 'reference']);
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect((v as { polluted?: unknown }).polluted).toBeUndefined();
    expect(v['reference']).toBe('a©__proto__b');
    expect(JSON.stringify(v)).toBe(JSON.stringify(JSON.parse('{"id":"x","__proto__":{"polluted":true},"reference":"a©__proto__b"}')));
  });
});
