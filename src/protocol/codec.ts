/**
 * The two encodings of the wire: JSON (text frames, application/json) and
 * msgpack (binary frames, application/msgpack). Decoding has explicit
 * bounds on every length, since the library's defaults are unbounded; a
 * body that does not decode within them is INVALID_MESSAGE.
 */

import { Decoder, Encoder } from '@msgpack/msgpack';

export type Encoding = 'json' | 'msgpack';

export interface CodecLimits {
  /**
   * The largest message decoded, in bytes. It also bounds array lengths: an
   * element takes at least one byte, so no honest array is longer. Batch
   * sizes are checked after decoding, where the answer can carry `seq`.
   */
  messageBytesMax: number;
}

/** Longest string anywhere in a message: ids are 64, references 140 characters (≤ 560 bytes). */
export const STRING_BYTES_MAX = 4096;
/** Most keys in one map: instructions have 8 fields; leave room for growth, not for abuse. */
export const MAP_KEYS_MAX = 64;

const PROTO = new TextEncoder().encode('__proto__');
// Nine control characters: valid UTF-8 of the same length, and refused by every field rule.
const SENTINEL = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 14]);
const SENTINEL_TEXT = new TextDecoder().decode(SENTINEL);
const PROTO_REFUSED = /__proto__/;

function unsentinel(text: string): string {
  return text.includes(SENTINEL_TEXT) ? text.split(SENTINEL_TEXT).join('__proto__') : text;
}

/** Put `__proto__` back where the sentinel stands, iteratively (the input may nest deeply). */
function restoreProto(root: unknown): unknown {
  if (typeof root === 'string') return unsentinel(root);
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const v: unknown = node[i];
        if (typeof v === 'string') node[i] = unsentinel(v);
        else if (typeof v === 'object' && v !== null) stack.push(v);
      }
    } else if (typeof node === 'object' && node !== null && !ArrayBuffer.isView(node)) {
      const obj = node as Record<string, unknown>;
      const entries: [string, unknown][] = [];
      for (const key of Object.keys(obj)) {
        let v = obj[key];
        if (typeof v === 'string') v = unsentinel(v);
        else if (typeof v === 'object' && v !== null) stack.push(v);
        entries.push([unsentinel(key), v]);
        delete obj[key];
      }
      // Put the keys back in their order, as own properties even for `__proto__`, exactly as JSON.parse makes them.
      for (const [k, v] of entries) Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
  }
  return root;
}

/** A digit before a point or an exponent: a JSON text without one has integer number literals only. */
const FRACTION_OR_EXPONENT = /\d[.eE]/;
/** A JSON string or number literal; run only over text JSON.parse took, where every string is closed. */
const STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const LITERAL_PARTS = /^-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;
/** What stands for a literal that is no integer but parses to one: it parses to no integer either. */
const NOT_AN_INTEGER = '0.5';

/** Whether a JSON number literal is exactly an integer, judged on its digits (`100.0` and `1e3` are; `1.0000000000000001` is not). */
export function literalIsInteger(literal: string): boolean {
  const m = LITERAL_PARTS.exec(literal);
  if (m === null) return false;
  const digits = m[1]! + (m[2] ?? '');
  const point = m[1]!.length + Number(m[3] ?? 0);
  const fraction = point <= 0 ? digits : digits.slice(point);
  return /^0*$/.test(fraction);
}

/**
 * JSON.parse rounds every number to a double, so a literal such as
 * `999999999999.99999` or `1.0000000000000001` arrives as an integer that
 * was never sent. Such a literal is put back as a number that is no
 * integer, and the field rules refuse it (INVALID_FIELD) as they refuse
 * `1.5`: no float ever decides an amount. Only for text JSON.parse took
 * (so the scan is linear), and only when a digit stands before a point or
 * an exponent at all.
 */
function parseJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  if (!FRACTION_OR_EXPONENT.test(text)) return value;
  let changed = false;
  const marked = text.replace(STRING_OR_NUMBER, (token) => {
    if (token.charCodeAt(0) === 0x22 || literalIsInteger(token) || !Number.isInteger(Number(token))) return token;
    changed = true;
    return NOT_AN_INTEGER;
  });
  return changed ? JSON.parse(marked) : value;
}

export class DecodeFailure extends Error {
  override name = 'DecodeFailure';
}

export class Codec {
  private readonly decoder: Decoder;
  private readonly encoder = new Encoder({ ignoreUndefined: true });
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

  constructor(limits: CodecLimits) {
    this.decoder = new Decoder({
      maxStrLength: STRING_BYTES_MAX,
      maxBinLength: STRING_BYTES_MAX,
      maxArrayLength: limits.messageBytesMax,
      maxMapLength: MAP_KEYS_MAX,
      maxExtLength: 16,
    });
  }

  decode(bytes: Uint8Array, encoding: Encoding): unknown {
    try {
      if (encoding === 'msgpack') return this.decoder.decode(bytes);
      return parseJson(this.utf8.decode(bytes));
    } catch (err) {
      if (encoding === 'msgpack' && PROTO_REFUSED.test((err as Error).message)) return this.decodeWithProtoKeys(bytes);
      throw new DecodeFailure(encoding === 'msgpack' ? `msgpack does not decode: ${(err as Error).message}` : 'JSON does not parse');
    }
  }

  /**
   * @msgpack/msgpack refuses any map key `__proto__` (it builds plain
   * objects, where that key would set the prototype). JSON.parse makes such
   * a key an ordinary own property, and so must this, or one hostile item
   * would fail a whole batch in msgpack but not in JSON. So, on this rare
   * path only: decode a copy in which the string `__proto__` is replaced by
   * a same-length sentinel, then turn the sentinel back into `__proto__` as
   * own properties and inside strings.
   */
  private decodeWithProtoKeys(bytes: Uint8Array): unknown {
    const copy = bytes.slice();
    for (let i = copy.indexOf(0x5f); i >= 0 && i + PROTO.length <= copy.length; i = copy.indexOf(0x5f, i + 1)) {
      let match = true;
      for (let j = 0; j < PROTO.length && match; j++) match = copy[i + j] === PROTO[j];
      if (match) copy.set(SENTINEL, i);
    }
    let decoded: unknown;
    try {
      decoded = this.decoder.decode(copy);
    } catch (err) {
      throw new DecodeFailure(`msgpack does not decode: ${(err as Error).message}`);
    }
    return restoreProto(decoded);
  }

  encode(value: unknown, encoding: Encoding): Uint8Array | string {
    return encoding === 'msgpack' ? this.encoder.encode(value) : JSON.stringify(value);
  }
}
