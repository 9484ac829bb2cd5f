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
      return JSON.parse(this.utf8.decode(bytes));
    } catch (err) {
      throw new DecodeFailure(encoding === 'msgpack' ? `msgpack does not decode: ${(err as Error).message}` : 'JSON does not parse');
    }
  }

  encode(value: unknown, encoding: Encoding): Uint8Array | string {
    return encoding === 'msgpack' ? this.encoder.encode(value) : JSON.stringify(value);
  }
}
