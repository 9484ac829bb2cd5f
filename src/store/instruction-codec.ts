/**
 * How an instruction record is written to a shard's `ins` database: the
 * StoredInstruction with its type, status, batches and banks as integers,
 * its acceptance time counted from the start of its batch's date, and its
 * clearing time left out when it equals its acceptance time (every
 * single-phase instruction). Every instruction costs one record for ever,
 * so these bytes are most of the data folder and of the pages LMDB maps:
 * a cleared record went from 64 bytes of msgpack to 33 (layout 5), then
 * to about 20 (layout 6).
 *
 * The codec is lmdb-js's own (msgpackr, with the database's shared record
 * structures), extended at its two ends, so that every reader and writer
 * of the database sees StoredInstruction as before. Records written by
 * layouts 3 to 5 (names for type, status or banks, absolute times) read as
 * they are.
 */

import { Packr } from 'msgpackr';
import type { Database } from 'lmdb';
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

/** Where an environment keeps its bank codes: in its meta database, beside the record structures. */
export const BANK_CODES_KEY = 'codes:banks';

/**
 * A shard environment's bank codes: a bank's code is its place in a list
 * kept in the meta database, which only grows. A record holds a bank as
 * its code only once the list that gives it is committed, so no record can
 * name a code its environment does not hold, whatever becomes of the
 * transaction that writes it: a bank met for the first time is written by
 * name, and its code is committed on its own, after the writer's current
 * turn, for the records that follow. A reader that meets a code it does
 * not know reads the list again, in its own read transaction, which holds
 * the record's commit and so the list's.
 */
export class BankCodes {
  private names: string[] = [];
  private readonly codes = new Map<string, number>();
  private loaded = false;
  /** Banks met by a write and not yet given a code on disk. */
  private readonly unlisted = new Set<string>();
  private saving = false;
  private settledWaiters: (() => void)[] = [];

  constructor(private readonly meta: Pick<Database<unknown, string>, 'get' | 'putSync' | 'transaction'>) {}

  /** The bank's code, if its environment has committed one. A bank without is queued for one. */
  code(bank: string): number | undefined {
    if (!this.loaded) this.adopt(this.stored());
    const code = this.codes.get(bank);
    if (code !== undefined) return code;
    this.unlisted.add(bank);
    if (!this.saving) {
      this.saving = true;
      setImmediate(() => this.save());
    }
    return undefined;
  }

  /** Resolves once no save of codes is under way (for tests and benches that want the codes in use). */
  settled(): Promise<void> {
    return this.saving ? new Promise((resolve) => this.settledWaiters.push(resolve)) : Promise.resolve();
  }

  /** The bank a code names, reading the list again if this one is older than the record. */
  bank(code: number): string | undefined {
    if (!this.loaded || code >= this.names.length) this.adopt(this.stored());
    return this.names[code];
  }

  /** The list as the current transaction (or read snapshot) holds it. */
  private stored(): string[] {
    const stored = this.meta.get(BANK_CODES_KEY);
    if (stored === undefined) return [];
    if (!Array.isArray(stored) || !stored.every((n) => typeof n === 'string')) throw new Error(`${BANK_CODES_KEY} is not a list of bank codes`);
    return stored as string[];
  }

  /** Take a list read or committed, unless this one is longer (a read snapshot older than a commit this codec saw). */
  private adopt(names: readonly string[]): void {
    this.loaded = true;
    if (names.length < this.names.length) return;
    this.names = [...names];
    this.codes.clear();
    for (let i = 0; i < names.length; i++) this.codes.set(names[i]!, i);
  }

  /**
   * Commit codes for the banks met since the last save, in a transaction
   * of their own that reads the list it extends; they are used once
   * committed. If the commit fails (or the environment has closed) the
   * banks stay names, and are queued again when next met.
   */
  private save(): void {
    const banks = [...this.unlisted];
    this.unlisted.clear();
    const done = (list: readonly string[] | undefined): void => {
      this.saving = false;
      if (list !== undefined) this.adopt(list);
      for (const w of this.settledWaiters.splice(0)) w();
    };
    try {
      this.meta
        .transaction(() => {
          const list = this.stored();
          const added = banks.filter((b) => !list.includes(b));
          if (added.length === 0) return list;
          const next = [...list, ...added];
          this.meta.putSync(BANK_CODES_KEY, next);
          return next;
        })
        .then(done, () => done(undefined));
    } catch {
      done(undefined);
    }
  }
}

/** The start of the date a batch code names, in ms since 1970. */
function dayStartOf(code: number): number {
  return Math.floor(code / 1000) * DAY_MS;
}

/**
 * A record as written. Keys come in one fixed order, so that records of
 * one shape share one msgpack structure. Banks become codes only with
 * `banks` (a shard environment's), and only those already committed.
 */
export function toDisk(r: StoredInstruction, banks?: BankCodes): Record<string, unknown> {
  // An unknown name is written as it is, for the read-back check to refuse, rather than as a code that means something.
  const b = r.b === undefined ? undefined : typeof r.b === 'string' ? batchCode(r.b) : r.b;
  const out: Record<string, unknown> = {
    t: TYPE_CODES[r.t] ?? r.t,
    p: (banks !== undefined && typeof r.p === 'string' ? banks.code(r.p) : undefined) ?? r.p,
    q: (banks !== undefined && typeof r.q === 'string' ? banks.code(r.q) : undefined) ?? r.q,
    a: r.a,
    s: STATUS_CODES[r.s as Exclude<InstructionStatus, 'rejected'>] ?? r.s,
  };
  // With a batch code, the acceptance time is counted from the start of the batch's date: 5 bytes rather than 9.
  const written = (r as { ad?: unknown }).ad;
  if (written !== undefined && r.at === undefined) out['ad'] = written; // already as written (msgpackr writes again a record whose structure it could not save)
  else if (typeof b === 'number' && Number.isSafeInteger(r.at)) out['ad'] = r.at - dayStartOf(b);
  else out['at'] = r.at;
  if (b !== undefined) out['b'] = b;
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
 * A record as read: codes back to names, the times restored. A record of
 * an earlier layout (names, not codes) is returned as it is. A code this
 * engine or environment does not know stays a number, which the read-back
 * check (checkStoredInstruction) refuses.
 */
export function fromDisk(v: unknown, banks?: BankCodes): unknown {
  if (typeof v !== 'object' || v === null) return v;
  // The object is the decoder's own, fresh for this read (the database keeps no cache), so it is changed in place.
  const rec = v as Record<string, unknown>;
  const { t, s, p, q, ad } = rec;
  if (typeof t !== 'number' && typeof s !== 'number') return rec;
  if (typeof t === 'number') rec['t'] = TYPE_NAMES[t] ?? t;
  if (typeof s === 'number') rec['s'] = STATUS_NAMES[s] ?? s;
  if (typeof p === 'number' && banks !== undefined) rec['p'] = banks.bank(p) ?? p;
  if (typeof q === 'number' && banks !== undefined) rec['q'] = banks.bank(q) ?? q;
  const b = rec['b'];
  if (ad !== undefined) {
    // Read before `b` becomes an id again; a record with `ad` and no batch code is left without `at`, for the check to refuse.
    if (typeof ad === 'number' && typeof b === 'number') rec['at'] = dayStartOf(b) + ad;
    delete rec['ad'];
  }
  if (b !== undefined) {
    rec['b'] = batchFromCode(b);
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
  /** The environment's bank codes, if its records may hold them. */
  readonly banks: BankCodes | undefined;

  /**
   * The codec class for one environment, holding its bank codes: lmdb-js
   * builds the encoder from the `encoder` option's class alone.
   */
  static withBanks(banks: BankCodes): typeof InstructionPackr {
    return class extends InstructionPackr {
      constructor(options?: ConstructorParameters<typeof Packr>[0]) {
        super({ ...options, banks });
      }
    };
  }

  constructor(options?: ConstructorParameters<typeof Packr>[0] & { banks?: BankCodes }) {
    super(options);
    const banks = options?.banks;
    this.banks = banks;
    const pack = this.pack.bind(this) as (value: unknown, mode?: number) => Buffer;
    const encode = (value: unknown, mode?: number): Buffer => pack(toDisk(value as StoredInstruction, banks), mode);
    this.pack = encode as Packr['pack'];
    this.encode = encode as Packr['encode'];
  }

  override decode(source: Buffer | Uint8Array, options?: unknown): unknown {
    return fromDisk(super.decode(source as Buffer, options as never), this.banks);
  }
}
