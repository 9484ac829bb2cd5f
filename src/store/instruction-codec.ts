/**
 * How an instruction record is written to a shard's `ins` database: the
 * StoredInstruction with its type, status and batches as integers, and its
 * clearing time left out when it equals its acceptance time (every
 * single-phase instruction). Every instruction costs one record for ever,
 * so these bytes are most of the data folder and of the pages LMDB maps:
 * a cleared record went from 64 to 33 bytes of msgpack.
 *
 * The codec is lmdb-js's own (msgpackr, with the database's shared record
 * structures), extended at its two ends, so that every reader and writer
 * of the database sees StoredInstruction as before. Records written by
 * layouts 3 and 4 (type and status as strings, the clearing time always
 * there) read as they are.
 */

import { Packr } from 'msgpackr';
import type { InstructionStatus, InstructionType } from '../core/instruction.js';
import type { StoredInstruction } from '../core/stored-instruction.js';

/** Codes on disk: fixed for ever, never reused. A record never holds `rejected`. */
const TYPE_CODES: Readonly<Record<InstructionType, number>> = { agreement: 1, entrusted: 2, gateway: 3, authenticated: 4, payout: 5 };
const STATUS_CODES: Readonly<Record<Exclude<InstructionStatus, 'rejected'>, number>> = {
  cleared: 1,
  pending: 2,
  declined: 3,
  expired: 4,
  reversed: 5,
  'awaiting-submission': 6,
};

function inverse(codes: Readonly<Record<string, number>>): (string | undefined)[] {
  const out: (string | undefined)[] = [];
  for (const [name, code] of Object.entries(codes)) out[code] = name;
  return out;
}

const TYPE_NAMES = inverse(TYPE_CODES);
const STATUS_NAMES = inverse(STATUS_CODES);

const DAY_MS = 86_400_000;
const BATCH_ID = /^(\d{4})(\d{2})(\d{2})-(\d{3})$/;
/** Batch ids seen lately, both ways: a shard writes into one or two batches at a time. */
const batchCodes = new Map<string, number>();
const batchIds = new Map<number, string>();
const BATCH_CACHE_MAX = 64;

function remember(id: string, code: number): void {
  if (batchCodes.size >= BATCH_CACHE_MAX) {
    batchCodes.clear();
    batchIds.clear();
  }
  batchCodes.set(id, code);
  batchIds.set(code, id);
}

function batchIdOf(code: number): string {
  const days = Math.floor(code / 1000);
  const date = new Date(days * DAY_MS).toISOString();
  return `${date.slice(0, 4)}${date.slice(5, 7)}${date.slice(8, 10)}-${String(code % 1000).padStart(3, '0')}`;
}

/**
 * A batch id ('<yyyymmdd>-<nnn>', settlement/batch-id.ts) as an integer:
 * the date's days since 1970 times 1,000 plus the sequence, 5 bytes of
 * msgpack against 14 for the string. An id that does not read back the
 * same (no such date) stays a string.
 */
export function batchCode(id: string): number | string {
  const known = batchCodes.get(id);
  if (known !== undefined) return known;
  const m = BATCH_ID.exec(id);
  if (m === null) return id;
  const code = (Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / DAY_MS) * 1000 + Number(m[4]);
  if (!Number.isSafeInteger(code) || code < 0 || batchIdOf(code) !== id) return id;
  remember(id, code);
  return code;
}

/** The batch id of a code written by batchCode; a string is an id as it is. */
export function batchFromCode(v: unknown): unknown {
  if (typeof v !== 'number') return v;
  let id = batchIds.get(v);
  if (id === undefined) {
    if (!Number.isSafeInteger(v) || v < 0) return v;
    id = batchIdOf(v);
    remember(id, v);
  }
  return id;
}

/**
 * A record as written. Keys come in one fixed order, so that records of
 * one shape share one msgpack structure.
 */
export function toDisk(r: StoredInstruction): Record<string, unknown> {
  // An unknown name is written as it is, for the read-back check to refuse, rather than as a code that means something.
  const out: Record<string, unknown> = {
    t: TYPE_CODES[r.t] ?? r.t,
    p: r.p,
    q: r.q,
    a: r.a,
    s: STATUS_CODES[r.s as Exclude<InstructionStatus, 'rejected'>] ?? r.s,
    at: r.at,
  };
  if (r.b !== undefined) out['b'] = typeof r.b === 'string' ? batchCode(r.b) : r.b;
  // Only a cleared (or once cleared) record has `b`, and it always has `ct` then: when absent on disk it is `at`.
  if (r.ct !== undefined && (r.ct !== r.at || r.b === undefined)) out['ct'] = r.ct;
  if (r.r !== undefined) out['r'] = r.r;
  if (r.tp !== undefined) out['tp'] = r.tp;
  if (r.to !== undefined) out['to'] = r.to;
  if (r.dl !== undefined) out['dl'] = r.dl;
  if (r.ft !== undefined) out['ft'] = r.ft;
  if (r.rb !== undefined) out['rb'] = typeof r.rb === 'string' ? batchCode(r.rb) : r.rb;
  if (r.rs !== undefined) out['rs'] = r.rs;
  if (r.m !== undefined) out['m'] = r.m;
  if (r.st !== undefined) out['st'] = r.st;
  if (r.sa !== undefined) out['sa'] = r.sa;
  if (r.vf !== undefined) out['vf'] = r.vf;
  return out;
}

/**
 * A record as read: codes back to names, the clearing time restored. A
 * record of an earlier layout (names, not codes) is returned as it is. A
 * code this engine does not know stays a number, which the read-back
 * check (checkStoredInstruction) refuses.
 */
export function fromDisk(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  // The object is the decoder's own, fresh for this read (the database keeps no cache), so it is changed in place.
  const rec = v as Record<string, unknown>;
  const { t, s } = rec;
  if (typeof t !== 'number' && typeof s !== 'number') return rec;
  if (typeof t === 'number') rec['t'] = TYPE_NAMES[t] ?? t;
  if (typeof s === 'number') rec['s'] = STATUS_NAMES[s] ?? s;
  if (rec['b'] !== undefined) {
    rec['b'] = batchFromCode(rec['b']);
    if (rec['ct'] === undefined) rec['ct'] = rec['at'];
  }
  if (rec['rb'] !== undefined) rec['rb'] = batchFromCode(rec['rb']);
  return rec;
}

/**
 * lmdb-js's msgpack encoder for the `ins` database (its `encoder: {
 * Encoder }` option): msgpackr's Packr, writing toDisk(record) and reading
 * fromDisk(value). msgpackr sets `pack`/`encode` on each instance, so the
 * write end is wrapped there; `decode` is a method.
 */
export class InstructionPackr extends Packr {
  constructor(options?: ConstructorParameters<typeof Packr>[0]) {
    super(options);
    const pack = this.pack.bind(this) as (value: unknown, mode?: number) => Buffer;
    const encode = (value: unknown, mode?: number): Buffer => pack(toDisk(value as StoredInstruction), mode);
    this.pack = encode as Packr['pack'];
    this.encode = encode as Packr['encode'];
  }

  override decode(source: Buffer | Uint8Array, options?: unknown): unknown {
    return fromDisk(super.decode(source as Buffer, options as never));
  }
}
