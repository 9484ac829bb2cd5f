/**
 * Hostile input (issue 7): property-based fuzzing of POST /v1/instructions
 * (JSON and msgpack bodies, single and batched) and of the WebSocket stream
 * (text JSON and binary msgpack frames, `submit` frames and arbitrary ones).
 *
 * Every generated input is judged by a small oracle written from
 * docs/api.md (limits, decoding bounds, body and frame shapes, and the
 * documented check order of an instruction), and the engine's answer must
 * carry exactly the documented code. After every input the engine must not
 * have changed state unless the oracle said an item was valid (positions
 * `seq`), and after every property it must still be up (healthz, a ping on a
 * fresh WebSocket) with positions and the audit equal to the model of what
 * was accepted on purpose.
 *
 * Valid two-phase instructions are sent with the longest timeout
 * (86,400,000 ms) so that none expires while the test runs; they stay
 * `pending` and are checked as pending debits. Pushes (forwards, queries,
 * notifications, snapshots) that a fuzzed `subscribe` turns on are skipped
 * when waiting for the answer to a frame.
 *
 * The seed is printed; replay a failure with FUZZ_SEED=<seed>. FUZZ_SCALE
 * multiplies the number of runs (a longer soak).
 */

import { Decoder, decode, encode } from '@msgpack/msgpack';
import { connect } from 'node:net';
import fc from 'fast-check';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

// ---------------------------------------------------------------------------
// Configuration of the engine under test, and of the run.

const BODY_MAX = 128 * 1024;
const FRAME_MAX = 128 * 1024;
/** docs/api.md: uWebSockets drops a connection without reading its frame only past frameBytesMax plus 16 MiB (or twice it, if larger). */
const FRAME_DROP = FRAME_MAX + Math.max(FRAME_MAX, 16 * 1024 * 1024);
const BATCH_MAX = 20;
const AMOUNT_MAX = 10_000_000;
/** docs/api.md, Encodings: msgpack strings and binaries ≤ 4096 bytes, maps ≤ 64 keys, arrays ≤ the message byte limit. */
const MP_STR_MAX = 4096;
const MP_MAP_MAX = 64;
const MP_ARRAY_MAX = Math.max(BODY_MAX, FRAME_MAX);

const SEED = process.env['FUZZ_SEED'] !== undefined ? Number(process.env['FUZZ_SEED']) | 0 : (Date.now() ^ Math.floor(Math.random() * 2 ** 31)) | 0;
const SCALE = Math.max(0.05, Number(process.env['FUZZ_SCALE'] ?? '1'));
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));

const TYPES = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'] as const;
const ALLOWED = new Set(['id', 'type', 'payer', 'payee', 'amount', 'twoPhase', 'timeoutMs', 'reference']);
const RECEIPT_KEYS = new Set(['institution', 'id', 'outcome', 'reason']);
const ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const PARTY_RE = /^[A-Z0-9]{2,16}$/;
const TIMEOUT_MS_MIN = 100;
const TIMEOUT_MS_MAX = 86_400_000;
const TIMEOUT_MS_DEFAULT = 30_000;
const PUSH_OPS = new Set(['forward', 'query', 'notify', 'snapshot']);
const BANK_SET: ReadonlySet<string> = new Set(BANKS);

type Enc = 'json' | 'msgpack';
type Role = 'institution' | 'bank';
type Code =
  | 'INVALID_MESSAGE'
  | 'INVALID_FIELD'
  | 'UNKNOWN_BANK'
  | 'SAME_BANK'
  | 'AMOUNT_OUT_OF_RANGE'
  | 'PAYLOAD_TOO_LARGE'
  | 'DUPLICATE_CONFLICT'
  | 'FORBIDDEN'
  | 'NOT_FOUND';
const STATUS: Record<Code, number> = {
  INVALID_MESSAGE: 400,
  INVALID_FIELD: 400,
  UNKNOWN_BANK: 422,
  SAME_BANK: 422,
  AMOUNT_OUT_OF_RANGE: 422,
  PAYLOAD_TOO_LARGE: 413,
  DUPLICATE_CONFLICT: 409,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
};

let engine: RunningEngine;
let cleanup: () => void;

// ---------------------------------------------------------------------------
// Counters (reported at the end).

const tally = { cases: 0, items: 0, clearedOnPurpose: 0, pendingOnPurpose: 0, pushesSkipped: 0, byProperty: new Map<string, number>(), outcomes: new Map<string, number>() };
const outcome = (what: string): void => void tally.outcomes.set(what, (tally.outcomes.get(what) ?? 0) + 1);
let currentProperty = '';
function countCase(items = 0): void {
  tally.cases++;
  tally.items += items;
  tally.byProperty.set(currentProperty, (tally.byProperty.get(currentProperty) ?? 0) + 1);
}

// ---------------------------------------------------------------------------
// Value helpers.

function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);

/** Set an own enumerable property, also for keys such as `__proto__`. */
function define(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function objectOf(entries: [string, unknown][]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries) define(o, k, v);
  return o;
}

const utf8Len = (s: string): number => Buffer.byteLength(s, 'utf8');
const wellFormed = (s: string): string => s.replace(/\p{Cs}/gu, '\ufffd');
const byteLen = (p: string | Uint8Array): number => (typeof p === 'string' ? utf8Len(p) : p.byteLength);

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * What the engine sees of a value sent as msgpack: the encoder writes
 * undefined as nil and -0 as 0, and strings must be well-formed to be UTF-8.
 */
function normMp(v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === 'number') return Object.is(v, -0) ? 0 : v;
  if (typeof v === 'string') return wellFormed(v);
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(normMp);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) define(out, wellFormed(k), normMp((v as Record<string, unknown>)[k]));
  return out;
}

/** Does a (normalized) value stay within the documented msgpack decoding bounds? Iterative: values may be deep. */
function mpWithin(root: unknown): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const x = stack.pop();
    if (typeof x === 'string') {
      if (utf8Len(x) > MP_STR_MAX) return false;
    } else if (x instanceof Uint8Array) {
      if (x.byteLength > MP_STR_MAX) return false;
    } else if (Array.isArray(x)) {
      if (x.length > MP_ARRAY_MAX) return false;
      for (const e of x) stack.push(e);
    } else if (typeof x === 'object' && x !== null) {
      const keys = Object.keys(x);
      if (keys.length > MP_MAP_MAX) return false;
      for (const k of keys) {
        if (utf8Len(k) > MP_STR_MAX) return false;
        stack.push((x as Record<string, unknown>)[k]);
      }
    }
  }
  return true;
}

/** Serialize a generated value for the wire; `norm` is what the engine decodes from `payload`. */
function serialize(v: unknown, enc: Enc): { payload: string | Uint8Array; norm: unknown } {
  if (enc === 'json') {
    const payload = JSON.stringify(v) ?? 'null';
    return { payload, norm: JSON.parse(payload) };
  }
  const norm = normMp(v);
  return { payload: encode(norm), norm };
}

const refMsgpack = new Decoder({ maxStrLength: MP_STR_MAX, maxBinLength: MP_STR_MAX, maxArrayLength: MP_ARRAY_MAX, maxMapLength: MP_MAP_MAX, maxExtLength: 16 });
const refUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Reference decoding of raw bytes, for inputs that were not built from a value. */
function refDecode(bytes: Uint8Array, enc: Enc): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: enc === 'json' ? JSON.parse(refUtf8.decode(bytes)) : refMsgpack.decode(bytes) };
  } catch {
    return { ok: false };
  }
}

/** A readable, bounded rendering of an input or answer for failure messages. */
function preview(p: unknown, max = 700): string {
  const seen = (v: unknown, depth: number): unknown => {
    if (v instanceof Uint8Array) return v.byteLength > 160 ? `0x${Buffer.from(v.subarray(0, 160)).toString('hex')}… (${v.byteLength} bytes)` : `0x${Buffer.from(v).toString('hex')}`;
    if (typeof v === 'string' && v.length > 300) return `${v.slice(0, 300)}… (${utf8Len(v)} bytes)`;
    if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
    if (Object.is(v, -0)) return '-0';
    if (depth > 6) return v;
    if (Array.isArray(v)) return v.slice(0, 30).map((e) => seen(e, depth + 1));
    if (isPlain(v)) return objectOf(Object.keys(v).slice(0, 80).map((k) => [k, seen(v[k], depth + 1)]));
    return v;
  };
  let s: string;
  try {
    s = JSON.stringify(seen(p, 0)) ?? String(p);
  } catch {
    s = String(p);
  }
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

// ---------------------------------------------------------------------------
// The model of what was accepted on purpose, and fresh ids.

interface Content {
  id: string;
  type: string;
  payer: string;
  payee: string;
  amount: number;
  twoPhase: boolean;
  timeoutMs?: number;
  reference?: string;
}
const contentKey = (c: Content): string => `${c.type}|${c.payer}|${c.payee}|${c.amount}|${c.twoPhase}|${c.timeoutMs ?? ''}|${c.reference ?? ''}`;

const model = {
  /** Cleared instructions (the audit's `cleared`), and every stored one, pending included (its `instructions`). */
  count: 0,
  stored: 0,
  banks: new Map<string, { paid: bigint; received: bigint; count: number; pending: bigint }>(BANKS.map((b) => [b, { paid: 0n, received: 0n, count: 0, pending: 0n }])),
  /** Ids of PI0001 that are stored (cleared or pending), with their content. */
  ids: new Map<string, string>(),
  batch: '',
  seq: -1,
  dirty: false,
};

function recordAccepted(c: Content): void {
  model.stored++;
  model.ids.set(c.id, contentKey(c));
  model.dirty = true;
  const p = model.banks.get(c.payer);
  const q = model.banks.get(c.payee);
  if (c.twoPhase) {
    // Pending: reserved against the payer, in no position yet.
    tally.pendingOnPurpose++;
    if (p !== undefined) p.pending += BigInt(c.amount);
    return;
  }
  model.count++;
  tally.clearedOnPurpose++;
  if (p !== undefined) {
    p.paid += BigInt(c.amount);
    p.count++;
  }
  if (q !== undefined) {
    q.received += BigInt(c.amount);
    q.count++;
  }
}

const usedIds = new Set<string>();
let idCounter = 0;
const fresh = (): string => {
  let id: string;
  do id = `fz${(SEED >>> 0).toString(36)}-${++idCounter}`;
  while (usedIds.has(id));
  usedIds.add(id);
  return id;
};

/**
 * An id that would pass the id rule is made unique (a valid item must not
 * hit an id stored before, and a shrink replays the same values); other
 * ids are sent as generated.
 */
function freshenItem(item: unknown): unknown {
  if (!isPlain(item)) return item;
  const copy: Record<string, unknown> = {};
  for (const k of Object.keys(item)) define(copy, k, item[k]);
  const id = own(item, 'id');
  if (typeof id === 'string' && ID_RE.test(id)) {
    if (usedIds.has(id)) copy['id'] = fresh();
    else usedIds.add(id);
  }
  // A two-phase instruction whose timeout would be accepted gets the longest one, so that it cannot expire during the test.
  const timeout = own(item, 'timeoutMs');
  if (own(item, 'twoPhase') === true && (timeout === undefined || (Number.isInteger(timeout) && (timeout as number) >= TIMEOUT_MS_MIN && (timeout as number) <= TIMEOUT_MS_MAX))) {
    define(copy, 'timeoutMs', TIMEOUT_MS_MAX);
  }
  return copy;
}

/** Receipts must never name a stored instruction (a receipt could settle a pending one): their ids are kept apart. */
function freshenReceipt(item: unknown): unknown {
  if (!isPlain(item)) return item;
  const id = own(item, 'id');
  if (typeof id !== 'string' || !ID_RE.test(id)) return item;
  const copy: Record<string, unknown> = {};
  for (const k of Object.keys(item)) define(copy, k, item[k]);
  if (usedIds.has(id)) copy['id'] = fresh();
  else usedIds.add(id);
  return copy;
}

/** Freshen the items of a body or frame (one instruction, `{instructions}`, or `{op:'submit', instructions}`). */
function freshenContainer(v: unknown): unknown {
  if (!isPlain(v)) return v;
  const list = own(v, 'instructions');
  const receipts = own(v, 'receipts');
  if (Array.isArray(list) || Array.isArray(receipts)) {
    const copy: Record<string, unknown> = {};
    for (const k of Object.keys(v)) {
      define(copy, k, k === 'instructions' && Array.isArray(list) ? list.map(freshenItem) : k === 'receipts' && Array.isArray(receipts) ? receipts.map(freshenReceipt) : v[k]);
    }
    return copy;
  }
  return Object.hasOwn(v, 'op') ? v : freshenItem(v);
}

// ---------------------------------------------------------------------------
// The oracle, from docs/api.md.

interface Verdict {
  /** Rejected: the code, the field it names (unknown keys: the key), the id echoed (usable ids only). */
  code?: Code;
  codes?: Code[];
  field?: string;
  id?: string;
  /** Accepted: what it clears, and whether it is a duplicate of a stored one. */
  ok?: Content;
  duplicate?: boolean;
  /** A receipt item: its result names this institution and id (each when the receipt carried it well formed). */
  receipt?: { institution?: string; id?: string };
}

function judgeItem(v: unknown): Verdict {
  if (!isPlain(v)) return { code: 'INVALID_MESSAGE' };
  const rawId = own(v, 'id');
  const id = typeof rawId === 'string' && ID_RE.test(rawId) ? rawId : undefined;
  const no = (code: Code, field: string): Verdict => ({ code, field, id });
  // Shape, then unknown fields.
  for (const k of Object.keys(v)) if (!ALLOWED.has(k)) return no('INVALID_FIELD', k);
  if (id === undefined) return no('INVALID_FIELD', 'id');
  const type = own(v, 'type');
  if (typeof type !== 'string' || !(TYPES as readonly string[]).includes(type)) return no('INVALID_FIELD', 'type');
  const payer = own(v, 'payer');
  const payee = own(v, 'payee');
  if (typeof payer !== 'string') return no('INVALID_FIELD', 'payer');
  if (typeof payee !== 'string') return no('INVALID_FIELD', 'payee');
  if (!BANK_SET.has(payer)) return no('UNKNOWN_BANK', 'payer');
  if (!BANK_SET.has(payee)) return no('UNKNOWN_BANK', 'payee');
  if (payer === payee) return no('SAME_BANK', 'payee');
  const amount = own(v, 'amount');
  if (typeof amount !== 'number' || !Number.isInteger(amount)) return no('INVALID_FIELD', 'amount');
  if (amount < 1 || amount > AMOUNT_MAX) return no('AMOUNT_OUT_OF_RANGE', 'amount');
  // twoPhase: a boolean; timeoutMs: two-phase only, an integer in 100..86400000.
  let twoPhase = false;
  if (Object.hasOwn(v, 'twoPhase')) {
    const tp = v['twoPhase'];
    if (typeof tp !== 'boolean') return no('INVALID_FIELD', 'twoPhase');
    twoPhase = tp;
  }
  let timeoutMs: number | undefined = twoPhase ? TIMEOUT_MS_DEFAULT : undefined;
  if (Object.hasOwn(v, 'timeoutMs')) {
    const t = v['timeoutMs'];
    if (!twoPhase || typeof t !== 'number' || !Number.isInteger(t) || t < TIMEOUT_MS_MIN || t > TIMEOUT_MS_MAX) return no('INVALID_FIELD', 'timeoutMs');
    timeoutMs = t;
  }
  let reference: string | undefined;
  if (Object.hasOwn(v, 'reference')) {
    const r = v['reference'];
    if (typeof r !== 'string' || codePoints(r) > 140 || /\p{Cc}|\p{Cs}/u.test(r)) return no('INVALID_FIELD', 'reference');
    if (r.length > 0) reference = r;
  }
  const content: Content = { id, type, payer, payee, amount, twoPhase };
  if (timeoutMs !== undefined) content.timeoutMs = timeoutMs;
  if (reference !== undefined) content.reference = reference;
  const stored = model.ids.get(id);
  if (stored === undefined) return { ok: content };
  return stored === contentKey(content) ? { ok: content, duplicate: true } : no('DUPLICATE_CONFLICT', 'id');
}

type BodyVerdict =
  | { kind: 'error'; code: Code; field?: string; fieldOptional?: boolean }
  | { kind: 'single'; item: Verdict }
  | { kind: 'batch'; items: Verdict[] };

function judgeBody(norm: unknown, enc: Enc, size: number, decodes = true): BodyVerdict {
  if (size > BODY_MAX) return { kind: 'error', code: 'PAYLOAD_TOO_LARGE' };
  if (!decodes || (enc === 'msgpack' && !mpWithin(norm))) return { kind: 'error', code: 'INVALID_MESSAGE' };
  if (!isPlain(norm)) return { kind: 'error', code: 'INVALID_MESSAGE' };
  if (!Object.hasOwn(norm, 'instructions')) return { kind: 'single', item: judgeItem(norm) };
  if (Object.keys(norm).length !== 1) return { kind: 'error', code: 'INVALID_MESSAGE' };
  const list = norm['instructions'];
  if (!Array.isArray(list) || list.length === 0) return { kind: 'error', code: 'INVALID_FIELD', field: 'instructions' };
  // The engine may name the list as the field over its limit.
  if (list.length > BATCH_MAX) return { kind: 'error', code: 'PAYLOAD_TOO_LARGE', field: 'instructions', fieldOptional: true };
  return { kind: 'batch', items: judgeList(list) };
}

/** Judge a batch in order: a valid item stored earlier in the same batch makes a later copy a duplicate or conflict. */
function judgeList(list: unknown[]): Verdict[] {
  const pending = new Map<string, string>();
  return list.map((item) => {
    const v = judgeItem(item);
    if (v.ok !== undefined && !v.duplicate) {
      const prior = pending.get(v.ok.id);
      if (prior !== undefined) return prior === contentKey(v.ok) ? { ok: v.ok, duplicate: true } : { code: 'DUPLICATE_CONFLICT', field: 'id', id: v.ok.id };
      pending.set(v.ok.id, contentKey(v.ok));
    }
    return v;
  });
}

/**
 * A receipt item (bank role). Receipts never name a stored instruction here
 * (see freshenReceipt), so a well-formed one is NOT_FOUND.
 */
function judgeReceipt(v: unknown): Verdict {
  if (!isPlain(v)) return { code: 'INVALID_MESSAGE' };
  // A refused receipt's result still names the institution and id it carried, those of them that are well formed.
  const institution = own(v, 'institution');
  const id = own(v, 'id');
  const named: { institution?: string; id?: string } = {};
  if (typeof institution === 'string' && PARTY_RE.test(institution)) named.institution = institution;
  if (typeof id === 'string' && ID_RE.test(id)) named.id = id;
  for (const k of Object.keys(v)) if (!RECEIPT_KEYS.has(k)) return { code: 'INVALID_FIELD', field: k, receipt: named };
  if (named.institution === undefined) return { code: 'INVALID_FIELD', field: 'institution', receipt: named };
  if (named.id === undefined) return { code: 'INVALID_FIELD', field: 'id', receipt: named };
  const outcome = own(v, 'outcome');
  if (outcome !== 'confirm' && outcome !== 'decline') return { code: 'INVALID_FIELD', field: 'outcome', receipt: named };
  if (Object.hasOwn(v, 'reason')) {
    const r = v['reason'];
    if (typeof r !== 'string' || codePoints(r) > 140 || /\p{Cc}|\p{Cs}/u.test(r)) return { code: 'INVALID_FIELD', field: 'reason', receipt: named };
  }
  return { code: 'NOT_FOUND', receipt: named };
}

type SeqExpect = number | 'absent' | 'any';
type FrameVerdict =
  | { kind: 'close' }
  | { kind: 'error'; codes: Code[]; field?: string; fieldOptional?: boolean; seq: SeqExpect }
  | { kind: 'pong'; seq: SeqExpect }
  | { kind: 'subscribed'; seq: SeqExpect }
  | { kind: 'ack'; seq: number; items: Verdict[]; receipts?: boolean };

const TOPICS = ['notifications', 'snapshots', 'forwards'];
/** The engine's bound on a `subscribe` list's entries (docs/api.md). */
const SUBSCRIBE_ENTRIES_MAX = 64;

function judgeFrame(norm: unknown, enc: Enc, size: number, role: Role, decodes = true): FrameVerdict {
  if (size > FRAME_DROP) return { kind: 'close' };
  if (size > FRAME_MAX) return { kind: 'error', codes: ['PAYLOAD_TOO_LARGE'], seq: 'absent' };
  if (!decodes || (enc === 'msgpack' && !mpWithin(norm)) || !isPlain(norm)) return { kind: 'error', codes: ['INVALID_MESSAGE'], seq: 'absent' };
  const hasSeq = Object.hasOwn(norm, 'seq');
  const seqOk = !hasSeq || Number.isSafeInteger(norm['seq']);
  const op = own(norm, 'op');
  if (typeof op !== 'string') {
    // Two things wrong: either may be reported; a valid seq may be echoed or not.
    return seqOk ? { kind: 'error', codes: ['INVALID_MESSAGE'], seq: 'any' } : { kind: 'error', codes: ['INVALID_MESSAGE', 'INVALID_FIELD'], seq: 'absent' };
  }
  if (!seqOk) return { kind: 'error', codes: ['INVALID_FIELD'], field: 'seq', seq: 'absent' };
  const seq: SeqExpect = hasSeq ? (norm['seq'] as number) : 'absent';
  switch (op) {
    case 'ping':
      return { kind: 'pong', seq };
    case 'submit': {
      if (typeof seq !== 'number') return { kind: 'error', codes: ['INVALID_FIELD'], field: 'seq', seq: 'absent' };
      if (role !== 'institution') return { kind: 'error', codes: ['FORBIDDEN'], seq };
      const list = own(norm, 'instructions');
      if (!Array.isArray(list) || list.length === 0) return { kind: 'error', codes: ['INVALID_FIELD'], field: 'instructions', seq };
      if (list.length > BATCH_MAX) return { kind: 'error', codes: ['PAYLOAD_TOO_LARGE'], field: 'instructions', fieldOptional: true, seq };
      return { kind: 'ack', seq, items: judgeList(list) };
    }
    case 'receipt': {
      if (typeof seq !== 'number') return { kind: 'error', codes: ['INVALID_FIELD'], field: 'seq', seq: 'absent' };
      if (role !== 'bank') return { kind: 'error', codes: ['FORBIDDEN'], seq };
      const list = own(norm, 'receipts');
      if (!Array.isArray(list) || list.length === 0) return { kind: 'error', codes: ['INVALID_FIELD'], field: 'receipts', seq };
      if (list.length > BATCH_MAX) return { kind: 'error', codes: ['PAYLOAD_TOO_LARGE'], field: 'receipts', fieldOptional: true, seq };
      return { kind: 'ack', seq, items: list.map(judgeReceipt), receipts: true };
    }
    case 'subscribe': {
      const topics = own(norm, 'topics');
      if (!Array.isArray(topics) || topics.length > SUBSCRIBE_ENTRIES_MAX) return { kind: 'error', codes: ['INVALID_FIELD'], field: 'topics', seq };
      // Any role may subscribe to "any of" the topics (PROTOCOL.md), none or repeats included; only an unknown topic is refused.
      if (topics.some((t) => typeof t !== 'string' || !TOPICS.includes(t))) return { kind: 'error', codes: ['INVALID_FIELD'], field: 'topics', seq };
      return { kind: 'subscribed', seq };
    }
    default:
      return { kind: 'error', codes: ['INVALID_MESSAGE'], seq };
  }
}

// ---------------------------------------------------------------------------
// Checking answers against verdicts.

class Mismatch extends Error {
  override name = 'Mismatch';
}

function fail(what: string, input: unknown, expected: unknown, actual: unknown): never {
  throw new Mismatch(`${what}\n  input:    ${preview(input)}\n  expected: ${preview(expected, 600)}\n  actual:   ${preview(actual, 600)}`);
}

/** The `field` of an unknown key is the key itself when it is short printable ASCII (the engine may shorten others). */
function fieldMatches(expected: string | undefined, actual: unknown): boolean {
  if (expected === undefined) return actual === undefined;
  if (ALLOWED.has(expected) || RECEIPT_KEYS.has(expected) || ['seq', 'instructions', 'receipts', 'topics'].includes(expected)) return actual === expected;
  if (/^[\x20-\x7e]{0,40}$/.test(expected)) return actual === expected;
  return typeof actual === 'string' && actual.length <= 64;
}

function codeOk(v: Verdict, code: unknown): boolean {
  return v.codes !== undefined ? v.codes.includes(code as Code) : code === v.code;
}

/** Update the model from what the engine says it accepted (before asserting, so the model follows the engine). */
function settle(v: Verdict, r: unknown): void {
  if (!isPlain(r) || (r['status'] !== 'cleared' && r['status'] !== 'pending') || r['duplicate'] === true || r['code'] !== undefined) return;
  if (v.ok !== undefined && !v.duplicate) recordAccepted(v.ok);
  else model.dirty = true; // accepted something the oracle refused: the state check will fail too.
}

function checkResult(v: Verdict, r: unknown, input: unknown, where: string): void {
  outcome(v.ok !== undefined ? (v.duplicate ? 'duplicate' : v.ok.twoPhase ? 'pending' : 'cleared') : `${v.receipt !== undefined || v.code === undefined ? 'receipt' : 'item'} ${v.code}`);
  if (!isPlain(r)) fail(`${where}: result is not an object`, input, v, r);
  if (v.ok !== undefined) {
    const status = v.ok.twoPhase ? 'pending' : 'cleared';
    const good =
      r['status'] === status && r['id'] === v.ok.id && (v.ok.twoPhase || typeof r['batch'] === 'string') && r['code'] === undefined && r['duplicate'] === (v.duplicate ? true : undefined);
    if (!good) fail(`${where}: a valid instruction was not accepted as expected`, input, { status, id: v.ok.id, duplicate: v.duplicate === true }, r);
    return;
  }
  if (v.receipt !== undefined || Object.hasOwn(r, 'institution')) {
    // A receipt's result names the instruction when the receipt did.
    const good =
      r['status'] === 'rejected' && codeOk(v, r['code']) && fieldMatches(v.field, r['field']) && r['institution'] === v.receipt?.institution && r['id'] === v.receipt?.id && typeof r['message'] === 'string';
    if (!good) fail(`${where}: wrong answer to a receipt`, input, { status: 'rejected', code: v.code, field: v.field, ...v.receipt }, r);
    return;
  }
  const good = r['status'] === 'rejected' && codeOk(v, r['code']) && fieldMatches(v.field, r['field']) && r['id'] === v.id && typeof r['message'] === 'string';
  if (!good) fail(`${where}: wrong rejection`, input, { status: 'rejected', code: v.codes ?? v.code, field: v.field, id: v.id }, r);
}

interface HttpAnswer {
  status: number;
  type: string;
  body: unknown;
}

function checkHttp(bv: BodyVerdict, a: HttpAnswer, enc: Enc, input: unknown): void {
  const wantType = enc === 'msgpack' ? 'application/msgpack' : 'application/json';
  if (!a.type.startsWith(wantType)) fail('reply not in the encoding of the request', input, wantType, a.type);
  if (bv.kind === 'single' && isPlain(a.body)) settle(bv.item, a.body);
  if (bv.kind === 'batch' && isPlain(a.body) && Array.isArray(a.body['results'])) bv.items.forEach((v, i) => settle(v, (a.body as { results: unknown[] }).results[i]));
  const b = a.body;
  if (bv.kind === 'error') outcome(`body ${bv.code}`);
  switch (bv.kind) {
    case 'error': {
      const fieldOk = fieldMatches(bv.field, isPlain(b) ? b['field'] : undefined) || (bv.fieldOptional === true && isPlain(b) && b['field'] === undefined);
      if (a.status !== STATUS[bv.code] || !isPlain(b) || b['code'] !== bv.code || !fieldOk || typeof b['message'] !== 'string') {
        fail('wrong answer to the body', input, { status: STATUS[bv.code], code: bv.code, field: bv.field }, a);
      }
      return;
    }
    case 'single': {
      const v = bv.item;
      const status = v.ok !== undefined ? 200 : STATUS[v.code!];
      const statusOk = v.codes !== undefined ? isPlain(b) && v.codes.map((c) => STATUS[c]).includes(a.status) && STATUS[b['code'] as Code] === a.status : a.status === status;
      if (!statusOk) fail('wrong HTTP status for a single instruction', input, { status, code: v.codes ?? v.code, field: v.field }, a);
      checkResult(v, b, input, 'single instruction');
      return;
    }
    case 'batch': {
      if (a.status !== 200 || !isPlain(b) || !Array.isArray(b['results']) || b['results'].length !== bv.items.length) {
        fail('a batch is answered 200 with one result per item', input, { status: 200, results: bv.items.length }, a);
      }
      const results = b['results'] as unknown[];
      bv.items.forEach((v, i) => checkResult(v, results[i], input, `batch item ${i}`));
      return;
    }
  }
}

function checkFrame(fv: FrameVerdict, got: Incoming, enc: Enc, input: unknown): void {
  outcome(fv.kind === 'error' ? `frame ${fv.codes.join('|')}` : `frame ${fv.kind}`);
  if (fv.kind === 'close') {
    // api.md: past frameBytesMax plus 16 MiB uWebSockets closes the connection without reading it.
    if (got.kind !== 'close' || (got.code !== 1009 && got.code !== 1006)) fail('a frame past the drop length closes the connection', input, 'close 1009 (or 1006)', got);
    return;
  }
  if (got.kind !== 'msg') fail('the engine closed the connection instead of answering the frame', input, fv, got);
  if (got.binary !== (enc === 'msgpack')) fail('reply not in the encoding of the frame', input, enc, got);
  const m = got.msg;
  if (!isPlain(m)) fail('reply is not an object', input, fv, m);
  if (fv.kind === 'ack' && !fv.receipts && m['op'] === 'ack' && Array.isArray(m['results'])) fv.items.forEach((v, i) => settle(v, (m['results'] as unknown[])[i]));
  const seqOk = (want: SeqExpect): boolean => (want === 'any' ? true : want === 'absent' ? !Object.hasOwn(m, 'seq') : m['seq'] === want);
  switch (fv.kind) {
    case 'error': {
      const fieldOk = fv.codes.length > 1 || fieldMatches(fv.field, m['field']) || (fv.fieldOptional === true && m['field'] === undefined);
      if (m['op'] !== 'error' || !fv.codes.includes(m['code'] as Code) || !seqOk(fv.seq) || typeof m['message'] !== 'string' || !fieldOk) {
        fail('wrong error frame', input, { op: 'error', code: fv.codes, field: fv.field, seq: fv.seq }, m);
      }
      return;
    }
    case 'pong':
      if (m['op'] !== 'pong' || !seqOk(fv.seq)) fail('wrong answer to a ping', input, { op: 'pong', seq: fv.seq }, m);
      return;
    case 'subscribed':
      if (m['op'] !== 'subscribed' || !seqOk(fv.seq) || !Array.isArray(m['topics'])) fail('wrong answer to a subscribe', input, { op: 'subscribed', seq: fv.seq }, m);
      return;
    case 'ack': {
      if (m['op'] !== 'ack' || m['seq'] !== fv.seq || !Array.isArray(m['results']) || m['results'].length !== fv.items.length) {
        fail(`a ${fv.receipts ? 'receipt' : 'submit'} is acked with one result per item`, input, { op: 'ack', seq: fv.seq, results: fv.items.length }, m);
      }
      const results = m['results'] as unknown[];
      fv.items.forEach((v, i) => checkResult(v, results[i], input, `ack item ${i}`));
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// Transports.

const CONTENT_TYPES: Record<Enc, string[]> = {
  json: ['application/json', 'application/json; charset=utf-8', 'Application/JSON'],
  msgpack: ['application/msgpack', 'application/x-msgpack'],
};

/** POST a body; `chunked` sends it in that many pieces without Content-Length (see postChunked). */
async function post(payload: string | Uint8Array, enc: Enc, variant = 0, chunked = 0): Promise<HttpAnswer> {
  const types = CONTENT_TYPES[enc];
  const contentType = types[variant % types.length]!;
  if (chunked > 0) return postChunked(typeof payload === 'string' ? utf8Bytes(payload) : payload, contentType, chunked);
  const init: RequestInit = { method: 'POST', headers: { authorization: `Bearer ${TOKENS.PI0001}`, 'content-type': contentType }, body: payload as string | Uint8Array };
  const res = await fetch(`${engine.base}/v1/instructions`, init);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  let body: unknown;
  try {
    body = type.includes('msgpack') ? decode(bytes) : JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    body = { undecodableReply: Buffer.from(bytes).toString('hex').slice(0, 200) };
  }
  return { status: res.status, type, body };
}

/**
 * HTTP/1.1 with `Transfer-Encoding: chunked` over a bare socket. The engine
 * answers an over-limit body before it has all of it and closes, so the
 * client keeps whatever it was sent and ignores its own failed writes.
 */
async function postChunked(bytes: Uint8Array, contentType: string, pieces: number): Promise<HttpAnswer> {
  const socket = connect(engine.port, '127.0.0.1');
  const received: Buffer[] = [];
  let complete: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    complete = resolve;
    socket.once('close', () => resolve());
  });
  socket.on('data', (d: Buffer) => {
    received.push(d);
    // The engine answers with Content-Length; stop once all of it is here (a half-close would abort the request).
    const all = Buffer.concat(received);
    const split = all.indexOf('\r\n\r\n');
    const length = split < 0 ? undefined : /\r\ncontent-length: *(\d+)/i.exec(all.subarray(0, split).toString('latin1'))?.[1];
    if (length !== undefined && all.byteLength >= split + 4 + Number(length)) complete();
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(
    `POST /v1/instructions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKENS.PI0001}\r\nContent-Type: ${contentType}\r\n` +
      'Transfer-Encoding: chunked\r\n\r\n',
  );
  const step = Math.ceil(bytes.byteLength / pieces);
  for (let at = 0; at < bytes.byteLength && !socket.destroyed; at += step) {
    const piece = bytes.subarray(at, at + step);
    socket.write(`${piece.byteLength.toString(16)}\r\n`);
    socket.write(piece);
    socket.write('\r\n');
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (!socket.destroyed) socket.write('0\r\n\r\n');
  const timer = setTimeout(complete, 15_000);
  await done;
  clearTimeout(timer);
  socket.destroy();
  const all = Buffer.concat(received);
  const split = all.indexOf('\r\n\r\n');
  if (split < 0) return { status: 0, type: '', body: { noReply: all.toString('latin1').slice(0, 200) } };
  const head = all.subarray(0, split).toString('latin1');
  let body = all.subarray(split + 4);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
  const type = /\r\ncontent-type: *([^\r]*)/i.exec(head)?.[1] ?? '';
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const eol = body.indexOf('\r\n', at);
      const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
      if (!(size > 0)) break;
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else {
    const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
    if (length !== undefined) body = body.subarray(0, Number(length));
  }
  let parsed: unknown;
  try {
    parsed = type.includes('msgpack') ? decode(body) : JSON.parse(body.toString('utf8'));
  } catch {
    parsed = { undecodableReply: body.toString('hex').slice(0, 200) };
  }
  return { status, type, body: parsed };
}

type Incoming = { kind: 'msg'; msg: unknown; binary: boolean } | { kind: 'close'; code: number } | { kind: 'timeout' };

/** A bare WebSocket: one frame in, the next message (or the close) out. */
class Wire {
  private readonly inbox: Incoming[] = [];
  private wake: (() => void) | undefined;
  closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let msg: unknown;
      try {
        msg = isBinary ? decode(data) : JSON.parse(data.toString('utf8'));
      } catch {
        msg = { undecodableReply: data.toString('hex').slice(0, 200) };
      }
      this.push({ kind: 'msg', msg, binary: isBinary });
    });
    ws.on('close', (code: number) => {
      this.closed = true;
      this.push({ kind: 'close', code });
    });
    ws.on('error', () => undefined);
  }

  private push(m: Incoming): void {
    this.inbox.push(m);
    this.wake?.();
  }

  static open(token: string): Promise<Wire> {
    const ws = new WebSocket(`${engine.base.replace('http', 'ws')}/v1/stream`, { headers: { authorization: `Bearer ${token}` }, maxPayload: 64 * 1024 * 1024 });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Wire(ws)));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(payload: string | Uint8Array, binary: boolean): void {
    this.ws.send(payload, { binary });
  }

  async next(timeoutMs = 15_000): Promise<Incoming> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return { kind: 'timeout' };
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.inbox.shift()!;
  }

  /** The next answer to a frame: pushes (forwards, queries, notifications, snapshots) are not answers. */
  async answer(timeoutMs = 15_000): Promise<Incoming> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (m.kind === 'msg' && isPlain(m.msg) && typeof m.msg['op'] === 'string' && PUSH_OPS.has(m.msg['op'])) {
        tally.pushesSkipped++;
        continue;
      }
      return m;
    }
  }

  close(): void {
    this.ws.terminate();
  }
}

const wires: Partial<Record<Role, Wire>> = {};
async function wire(role: Role): Promise<Wire> {
  const w = wires[role];
  if (w !== undefined && !w.closed) return w;
  const opened = await Wire.open(role === 'institution' ? TOKENS.PI0001 : TOKENS.ICBC);
  wires[role] = opened;
  return opened;
}

async function sendFrame(payload: string | Uint8Array, binary: boolean, role: Role): Promise<Incoming> {
  const w = await wire(role);
  w.send(payload, binary);
  return w.answer();
}

// ---------------------------------------------------------------------------
// One input, end to end: send, judge, check, and check that nothing else changed.

async function positionsSeq(): Promise<{ seq: number; batch: string }> {
  const r = await fetch(`${engine.base}/v1/positions`, { headers: { authorization: `Bearer ${TOKENS.ops}` } });
  const b = (await r.json()) as { seq: number; batch: string };
  return { seq: b.seq, batch: b.batch };
}

/** Positions change only when something was cleared: `seq` moves if and only if the model says so. */
async function checkSeq(input: unknown): Promise<void> {
  const now = await positionsSeq();
  const changed = model.dirty;
  model.dirty = false;
  if (now.batch !== model.batch) fail('the open batch changed', input, model.batch, now.batch);
  if (changed ? now.seq <= model.seq : now.seq !== model.seq) fail(changed ? 'positions seq did not move after a clearing' : 'positions changed on input that cleared nothing', input, { seq: model.seq, changed }, now);
  model.seq = now.seq;
}

async function viaHttp(value: unknown, enc: Enc, variant = 0): Promise<void> {
  const { payload, norm } = serialize(freshenContainer(value), enc);
  const bv = judgeBody(norm, enc, byteLen(payload));
  countCase(bv.kind === 'batch' ? bv.items.length : 1);
  const a = await post(payload, enc, variant);
  checkHttp(bv, a, enc, { via: `HTTP ${enc}`, body: payload });
  await checkSeq({ via: `HTTP ${enc}`, body: payload });
}

async function viaWs(value: unknown, enc: Enc, role: Role): Promise<void> {
  const { payload, norm } = serialize(freshenContainer(value), enc);
  const fv = judgeFrame(norm, enc, byteLen(payload), role);
  countCase(fv.kind === 'ack' ? fv.items.length : 1);
  const got = await sendFrame(payload, enc === 'msgpack', role);
  checkFrame(fv, got, enc, { via: `WS ${enc} ${role}`, frame: payload });
  await checkSeq({ via: `WS ${enc}`, frame: payload });
}

/** Raw bytes or text: judged by decoding them the documented way. */
async function rawViaHttp(bytes: Uint8Array, enc: Enc, variant = 0): Promise<void> {
  const d = refDecode(bytes, enc);
  const bv = judgeBody(d.ok ? d.value : undefined, enc, bytes.byteLength, d.ok);
  countCase(bv.kind === 'batch' ? bv.items.length : 1);
  const a = await post(bytes, enc, variant);
  checkHttp(bv, a, enc, { via: `HTTP ${enc} raw`, body: bytes });
  await checkSeq({ via: `HTTP ${enc} raw`, body: bytes });
}

async function rawViaWs(bytes: Uint8Array, enc: Enc, role: Role): Promise<void> {
  const input = { via: `WS ${enc} raw`, frame: bytes };
  if (enc === 'json' && !isUtf8(bytes)) {
    // RFC 6455 §8.1: a text frame that is not UTF-8 fails the WebSocket connection.
    countCase();
    const got = await sendFrame(bytes, false, role);
    if (got.kind !== 'close') fail('a text frame that is not UTF-8 fails the connection (RFC 6455)', input, 'close', got);
    await checkSeq(input);
    return;
  }
  const d = refDecode(bytes, enc);
  const fv = judgeFrame(d.ok ? d.value : undefined, enc, bytes.byteLength, role, d.ok);
  countCase(fv.kind === 'ack' ? fv.items.length : 1);
  const got = await sendFrame(enc === 'json' ? Buffer.from(bytes).toString('utf8') : bytes, enc === 'msgpack', role);
  checkFrame(fv, got, enc, input);
  await checkSeq(input);
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** Engine up, state as the model says: after every property. */
async function checkAlive(label: string): Promise<void> {
  expect(engine.proc.exitCode, `${label}: engine process exited`).toBeNull();
  const h = await fetch(`${engine.base}/healthz`);
  expect(h.status, `${label}: healthz`).toBe(200);
  const w = await Wire.open(TOKENS.PI0002);
  w.send(JSON.stringify({ op: 'ping', seq: 424242 }), false);
  const pong = await w.answer(5000);
  expect(pong, `${label}: ping on a fresh WebSocket`).toEqual({ kind: 'msg', msg: { op: 'pong', seq: 424242 }, binary: false });
  w.close();

  const p = (await (await fetch(`${engine.base}/v1/positions`, { headers: { authorization: `Bearer ${TOKENS.ops}` } })).json()) as {
    batch: string;
    seq: number;
    banks: { bank: string; net: string; paid: string; received: string; pendingDebit: string; count: number }[];
    totals: { gross: string; net: string };
  };
  let gross = 0n;
  let positive = 0n;
  const want = BANKS.map((bank) => {
    const m = model.banks.get(bank)!;
    gross += m.paid;
    const net = m.received - m.paid;
    if (net > 0n) positive += net;
    return { bank, net: String(net), paid: String(m.paid), received: String(m.received), pendingDebit: String(m.pending), count: m.count };
  });
  expect(p.batch, `${label}: open batch`).toBe(model.batch);
  expect([...p.banks].sort((a, b) => a.bank.localeCompare(b.bank)), `${label}: positions equal the model`).toEqual(want.sort((a, b) => a.bank.localeCompare(b.bank)));
  expect(p.totals, `${label}: totals equal the model`).toEqual({ gross: String(gross), net: String(positive) });
  const audit = await fetch(`${engine.base}/v1/audit`, { headers: { authorization: `Bearer ${TOKENS.ops}` } });
  const ab = (await audit.json()) as { ok: boolean; cleared: number; instructions: number };
  expect(audit.status, `${label}: audit`).toBe(200);
  expect({ ok: ab.ok, cleared: ab.cleared, instructions: ab.instructions }, `${label}: audit counts`).toEqual({ ok: true, cleared: model.count, instructions: model.stored });
  model.seq = p.seq;
  model.dirty = false;
}

async function property<T>(name: string, index: number, arb: fc.Arbitrary<T>, numRuns: number, body: (v: T) => Promise<void>): Promise<void> {
  currentProperty = name;
  const seed = (SEED + index * 7919) | 0;
  const started = Date.now();
  await fc.assert(
    fc.asyncProperty(arb, async (v) => {
      await body(v);
    }),
    { seed, numRuns },
  );
  console.log(`fuzz[${name}]: ${tally.byProperty.get(name) ?? 0} cases (${numRuns} runs, seed ${seed}) in ${Date.now() - started} ms`);
  await checkAlive(name);
}

// ---------------------------------------------------------------------------
// Generators.

const ABSENT = Symbol('absent');

const SPECIAL_NUMBERS: unknown[] = [
  NaN, Infinity, -Infinity, -0, 0, -1, 1, 1e21, -1e21, 1.5, 100.5, 0.1, 1e-7, Number.MIN_VALUE,
  2 ** 53, 2 ** 53 - 1, 2 ** 53 + 2, 2 ** 63, 2 ** 64, -(2 ** 63), Number.MAX_VALUE, -Number.MAX_VALUE,
  Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, AMOUNT_MAX, AMOUNT_MAX + 1, AMOUNT_MAX - 0.5, 2 ** 31, 2 ** 32, -(2 ** 31),
];
const WEIRD_STRINGS: unknown[] = [
  '', ' ', '100', '1e3', '0x10', 'NaN', 'Infinity', 'null', 'true', 'undefined', '__proto__', 'constructor', 'prototype',
  'toString', 'hasOwnProperty', 'valueOf', '\u0000', '\u0007', '\u001f', '\u007f', '\u0085', '\u009f', '\u200b', '\u202e',
  '\u2028', '\ufeff', '\ud800', '\udfff', '😀', '订单', 'é', 'e\u0301', 'a\r\nb', '<script>alert(1)</script>', "'; DROP TABLE t;--",
  '%00', '../../etc/passwd', '${7*7}', '{{7*7}}', 'x'.repeat(4096), 'x'.repeat(4097),
];

const hostile: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<unknown>(null, true, false, ...SPECIAL_NUMBERS, ...WEIRD_STRINGS) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>([], {}, [1], [null], { a: 1 }, [[[]]], { amount: 1 }, ['ICBC']) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.array(fc.integer(), { maxLength: 5 }) },
);

const BAD_IDS = [
  '', 'x'.repeat(65), 'x'.repeat(1000), 'a b', 'a/b', 'a\\b', 'a\u0000b', 'tab\t', 'line\n', '订单1', 'café', '😀', 'a\u202eb',
  '\ud800', 'id\u0085', `${'x'.repeat(64)}😀`, '-'.repeat(65), 'a+b', 'a#b', 'a?b', '%41', 'ｉｄ', 'x'.repeat(4097),
];
const BAD_TYPES = ['wire', 'AGREEMENT', 'Agreement', ' agreement', 'agreement ', 'agreement\u0000', 'payout\n', '', '__proto__', 'constructor', 'toString', 'hasOwnProperty'];
const BAD_BANKS = ['NOPE', 'icbc', 'ICBC ', ' ICBC', 'ICBC\u0000', 'ＩＣＢＣ', '', '__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'ops', 'PI0001', 'X'.repeat(17)];
const BAD_REFERENCES = [
  '', 'r'.repeat(140), 'r'.repeat(141), '😀'.repeat(140), '😀'.repeat(141), '订'.repeat(140), 'e\u0301'.repeat(70), 'a\u0007b', 'a\u0000',
  '\u0085', '\u007f', '\u009f', '\u001b[31m', '\ud800', 'x\udc00y', 'x'.repeat(4096), 'x'.repeat(4097), 'é'.repeat(2048), 'é'.repeat(2049), '\u2028', '\ufeff',
];
const KEYS = [
  '__proto__', 'constructor', 'prototype', 'colour', 'Id', 'AMOUNT', 'amount ', 'toString', 'hasOwnProperty', 'valueOf', 'isBank',
  '0', '7', '-1', '', ' ', '\u0000', '😀', 'x'.repeat(41), 'x'.repeat(5000), 'institution', 'status', 'batch', 'duplicate',
];

const field = <T>(good: fc.Arbitrary<T>, goodWeight: number, bad: fc.Arbitrary<unknown>, badWeight: number, absentWeight: number): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: goodWeight, arbitrary: good as fc.Arbitrary<unknown> },
    { weight: badWeight, arbitrary: bad },
    { weight: 2, arbitrary: hostile },
    { weight: absentWeight, arbitrary: fc.constant<unknown>(ABSENT) },
  );

const instructionArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    id: field(fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/), 40, fc.oneof(fc.constantFrom<unknown>(...BAD_IDS), fc.string({ unit: 'binary', maxLength: 70 })), 3, 1),
    type: field(fc.constantFrom(...TYPES), 40, fc.constantFrom<unknown>(...BAD_TYPES), 2, 1),
    payer: field(fc.constantFrom(...BANKS), 40, fc.constantFrom<unknown>(...BAD_BANKS), 2, 1),
    payee: field(fc.constantFrom(...BANKS), 40, fc.constantFrom<unknown>(...BAD_BANKS), 2, 1),
    amount: field(
      fc.integer({ min: 1, max: AMOUNT_MAX }),
      30,
      fc.oneof(fc.constantFrom<unknown>(...SPECIAL_NUMBERS, '100', '1', [100], { amount: 1 }), fc.integer(), fc.double(), fc.maxSafeInteger()),
      8,
      1,
    ),
    twoPhase: fc.oneof({ weight: 30, arbitrary: fc.constant<unknown>(ABSENT) }, { weight: 6, arbitrary: fc.constant<unknown>(false) }, { weight: 6, arbitrary: fc.constant<unknown>(true) }, { weight: 1, arbitrary: hostile }),
    timeoutMs: fc.oneof(
      { weight: 30, arbitrary: fc.constant<unknown>(ABSENT) },
      { weight: 3, arbitrary: fc.integer({ min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX }) },
      { weight: 3, arbitrary: fc.constantFrom<unknown>(100, 30_000, 86_400_000, 99, 0, -1, 86_400_001, 1.5, 100.5, '1000', null, -0, NaN, Infinity, 1e21, 2 ** 53) },
      { weight: 1, arbitrary: hostile },
    ),
    reference: fc.oneof(
      { weight: 20, arbitrary: fc.constant<unknown>(ABSENT) },
      { weight: 4, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 140 }) },
      { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 150 }) },
      { weight: 3, arbitrary: fc.constantFrom<unknown>(...BAD_REFERENCES) },
      { weight: 1, arbitrary: hostile },
    ),
    extras: fc.oneof(
      { weight: 20, arbitrary: fc.constant<[string, unknown][]>([]) },
      { weight: 4, arbitrary: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...KEYS), fc.string({ unit: 'binary', maxLength: 12 })), hostile), { minLength: 1, maxLength: 3 }) },
      { weight: 1, arbitrary: fc.integer({ min: 50, max: 70 }).map((n) => Array.from({ length: n }, (_, i): [string, unknown] => [`k${i}`, i])) },
    ),
    extrasFirst: fc.boolean(),
  })
  .map(({ extras, extrasFirst, ...fields }) => {
    const entries = Object.entries(fields).filter(([, v]) => v !== ABSENT);
    return objectOf(extrasFirst ? [...extras, ...entries] : [...entries, ...extras]);
  });

const itemArb: fc.Arbitrary<unknown> = fc.oneof({ weight: 12, arbitrary: instructionArb as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: hostile });

const batchArb = (min: number, max: number): fc.Arbitrary<unknown[]> => fc.array(itemArb, { minLength: min, maxLength: max });

const bodyArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: itemArb },
  { weight: 6, arbitrary: batchArb(1, BATCH_MAX).map((instructions) => ({ instructions })) },
  { weight: 1, arbitrary: batchArb(BATCH_MAX + 1, BATCH_MAX + 3).map((instructions) => ({ instructions })) },
  { weight: 1, arbitrary: hostile.map((instructions) => ({ instructions })) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(batchArb(0, 3), fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })), hostile, fc.boolean())
      .map(([instructions, k, v, first]) => objectOf(first ? [[k, v], ['instructions', instructions]] : [['instructions', instructions], [k, v]])),
  },
);

const seqArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: -1_000_000, max: 1_000_000_000 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, -0, 0) },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(...SPECIAL_NUMBERS, '1', null, true, [1], { seq: 1 }) },
  { weight: 1, arbitrary: hostile },
);

const receiptArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .record({
        institution: field(fc.constantFrom('PI0001', 'PI0002', 'PI9999'), 20, fc.constantFrom<unknown>('pi0001', 'P', 'X'.repeat(17), '', '__proto__', 'PI-1'), 2, 1),
        id: field(fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/), 20, fc.constantFrom<unknown>(...BAD_IDS), 2, 1),
        outcome: field(fc.constantFrom('confirm', 'decline'), 20, fc.constantFrom<unknown>('CONFIRM', 'accept', '', 'confirm ', '__proto__'), 2, 1),
        reason: fc.oneof({ weight: 6, arbitrary: fc.constant<unknown>(ABSENT) }, { weight: 2, arbitrary: fc.constantFrom<unknown>(...BAD_REFERENCES) }, { weight: 1, arbitrary: hostile }),
        extras: fc.oneof({ weight: 8, arbitrary: fc.constant<[string, unknown][]>([]) }, { weight: 1, arbitrary: fc.array(fc.tuple(fc.constantFrom(...KEYS), hostile), { minLength: 1, maxLength: 2 }) }),
      })
      .map(({ extras, ...fields }) => objectOf([...Object.entries(fields).filter(([, v]) => v !== ABSENT), ...extras])),
  },
  { weight: 1, arbitrary: hostile },
);

const frameArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ seq: fc.integer({ min: 0, max: 1_000_000 }), instructions: batchArb(1, BATCH_MAX) }).map((f) => ({ op: 'submit', ...f })) },
  { weight: 2, arbitrary: fc.record({ seq: fc.integer({ min: 0, max: 1_000_000 }), receipts: fc.array(receiptArb, { minLength: 1, maxLength: BATCH_MAX }) }).map((f) => ({ op: 'receipt', ...f })) },
  {
    weight: 4,
    arbitrary: fc
      .record({
        op: fc.oneof(
          { weight: 6, arbitrary: fc.constantFrom<unknown>('submit', 'ping', 'subscribe', 'receipt') },
          { weight: 2, arbitrary: fc.constantFrom<unknown>('', 'Submit', 'PING', 'ack', 'error', 'pong', 'receipt', '__proto__', 'constructor', 'toString', 'x'.repeat(5000), 'submit\u0000') },
          { weight: 1, arbitrary: hostile },
          { weight: 1, arbitrary: fc.constant<unknown>(ABSENT) },
        ),
        seq: fc.oneof({ weight: 6, arbitrary: seqArb }, { weight: 2, arbitrary: fc.constant<unknown>(ABSENT) }),
        instructions: fc.oneof(
          { weight: 5, arbitrary: batchArb(0, BATCH_MAX + 2) as fc.Arbitrary<unknown> },
          { weight: 2, arbitrary: hostile },
          { weight: 2, arbitrary: fc.constant<unknown>(ABSENT) },
        ),
        receipts: fc.oneof(
          { weight: 3, arbitrary: fc.array(receiptArb, { minLength: 0, maxLength: BATCH_MAX + 2 }) as fc.Arbitrary<unknown> },
          { weight: 1, arbitrary: hostile },
          { weight: 5, arbitrary: fc.constant<unknown>(ABSENT) },
        ),
        topics: fc.oneof(
          { weight: 4, arbitrary: fc.array(fc.constantFrom('notifications', 'snapshots', 'forwards', 'bogus', '', '__proto__'), { maxLength: 3 }) as fc.Arbitrary<unknown> },
          { weight: 1, arbitrary: hostile },
          { weight: 4, arbitrary: fc.constant<unknown>(ABSENT) },
        ),
      })
      .map((f) => objectOf(Object.entries(f).filter(([, v]) => v !== ABSENT))),
  },
  { weight: 1, arbitrary: hostile },
);

const encArb = fc.constantFrom<Enc>('json', 'msgpack');

// ---------------------------------------------------------------------------
// Deep nesting and exact sizes: payloads spliced from text or bytes (a
// 10,000-deep value is not JSON.stringify's job), with a shadow value for
// the oracle.

const DEEP = 'DEEP-PLACEHOLDER-8c1e';

function deepPayload(depth: number, kind: 'array' | 'object', enc: Enc): { text?: string; bytes?: Uint8Array; shadow: unknown } {
  let shadow: unknown = 1;
  for (let i = 0; i < depth; i++) shadow = kind === 'array' ? [shadow] : { a: shadow };
  if (enc === 'json') {
    const text = kind === 'array' ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    return { text, shadow };
  }
  const unit = kind === 'array' ? [0x91] : [0x81, 0xa1, 0x61];
  const bytes = new Uint8Array(depth * unit.length + 1);
  for (let i = 0; i < depth; i++) bytes.set(unit, i * unit.length);
  bytes[bytes.length - 1] = 0x01;
  return { bytes, shadow };
}

/** Replace the placeholder string inside a wrapper with the deep value. */
function spliceDeep(wrapper: unknown, deep: { text?: string; bytes?: Uint8Array; shadow: unknown }, enc: Enc): { payload: string | Uint8Array; norm: unknown } {
  const substitute = (v: unknown): unknown => {
    if (v === DEEP) return deep.shadow;
    if (Array.isArray(v)) return v.map(substitute);
    if (isPlain(v)) return objectOf(Object.keys(v).map((k) => [k, substitute(v[k])]));
    return v;
  };
  const norm = substitute(wrapper);
  if (enc === 'json') {
    const text = JSON.stringify(wrapper);
    return { payload: text.replace(JSON.stringify(DEEP), deep.text!), norm };
  }
  const outer = Buffer.from(encode(wrapper));
  const marker = Buffer.from(encode(DEEP));
  const at = outer.indexOf(marker);
  return { payload: Buffer.concat([outer.subarray(0, at), deep.bytes!, outer.subarray(at + marker.length)]), norm };
}

/** An object padded (field `pad`) so that its encoding is exactly `target` bytes where possible. */
function padded(make: (pad: unknown) => unknown, target: number, enc: Enc): { payload: string | Uint8Array; norm: unknown } {
  if (enc === 'json') {
    const base = utf8Len(JSON.stringify(make('')));
    const text = JSON.stringify(make('x'.repeat(Math.max(0, target - base))));
    return { payload: text, norm: JSON.parse(text) };
  }
  // msgpack: strings are bounded (4096 bytes), so pad with an array of 4000-byte strings and 1-byte nils.
  const chunk = 'x'.repeat(4000);
  const build = (k: number, m: number): Uint8Array => encode(make([...Array.from({ length: k }, () => chunk), ...Array.from({ length: m }, () => null)]));
  const base = build(0, 0).byteLength;
  let k = Math.max(0, Math.floor((target - base) / 4003));
  let m = Math.max(0, target - base - k * 4003);
  let bytes = build(k, m);
  for (let i = 0; i < 6 && bytes.byteLength !== target; i++) {
    m += target - bytes.byteLength;
    if (m < 0) {
      k = Math.max(0, k - 1);
      m += 4003;
    }
    bytes = build(k, Math.max(0, m));
  }
  return { payload: bytes, norm: decode(bytes) };
}

function instr(id: string, extra: [string, unknown][] = []): Record<string, unknown> {
  return objectOf([['id', id], ['type', 'payout'], ['payer', 'CCB'], ['payee', 'CMB'], ['amount', 7], ...extra]);
}

// ---------------------------------------------------------------------------
// Hand-written literals: the inputs the issue names, in the exact text or
// bytes, each with its expected answer written down (not computed).

type LitExpect =
  | { whole: Code }
  | { item: Code[]; field?: string; echoId?: boolean }
  | { valid: { payer: string; payee: string; amount: number; type: string; twoPhase?: boolean; timeoutMs?: number; idOf?: (id: string) => string } };
interface Literal {
  name: string;
  enc: Enc;
  build: (id: string) => string | Uint8Array;
  expect: LitExpect;
}

const J = (body: string): ((id: string) => string) => (id) => body.replaceAll('@ID@', id);
const BASE = '"id":"@ID@","type":"agreement","payer":"ICBC","payee":"ABC"';
const okAmount = (amount: number): LitExpect => ({ valid: { payer: 'ICBC', payee: 'ABC', amount, type: 'agreement' } });
const pending = (amount: number): LitExpect => ({ valid: { payer: 'ICBC', payee: 'ABC', amount, type: 'agreement', twoPhase: true, timeoutMs: TIMEOUT_MS_MAX } });
const IF = (f: string, ...alt: Code[]): LitExpect => ({ item: ['INVALID_FIELD', ...alt], field: f, echoId: true });
const item = (code: Code, f?: string): LitExpect => (f === undefined ? { item: [code] } : { item: [code], field: f, echoId: true });

const jsonLiterals: Literal[] = (
  [
    ['amount NaN', `{${BASE},"amount":NaN}`, { whole: 'INVALID_MESSAGE' }],
    ['amount Infinity', `{${BASE},"amount":Infinity}`, { whole: 'INVALID_MESSAGE' }],
    ['amount -Infinity', `{${BASE},"amount":-Infinity}`, { whole: 'INVALID_MESSAGE' }],
    ['amount -0', `{${BASE},"amount":-0}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount -0.0', `{${BASE},"amount":-0.0}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 0', `{${BASE},"amount":0}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount -1', `{${BASE},"amount":-1}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 1e21', `{${BASE},"amount":1e21}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 1E21', `{${BASE},"amount":1E21}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 1.5', `{${BASE},"amount":1.5}`, IF('amount')],
    ['amount "100"', `{${BASE},"amount":"100"}`, IF('amount')],
    ['amount 1e-7', `{${BASE},"amount":1e-7}`, IF('amount')],
    ['amount 5e-324', `{${BASE},"amount":5e-324}`, IF('amount')],
    ['amount 2**53', `{${BASE},"amount":9007199254740992}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 2**53+1', `{${BASE},"amount":9007199254740993}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 2**64', `{${BASE},"amount":18446744073709551616}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 30 digits', `{${BASE},"amount":123456789012345678901234567890}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount -30 digits', `{${BASE},"amount":-123456789012345678901234567890}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount 1e308', `{${BASE},"amount":1e308}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    // Parses to Infinity: an integer beyond range in the text, not an integer number once read. Either code is fair.
    ['amount 1e400', `{${BASE},"amount":1e400}`, IF('amount', 'AMOUNT_OUT_OF_RANGE')],
    ['amount null', `{${BASE},"amount":null}`, IF('amount')],
    ['amount true', `{${BASE},"amount":true}`, IF('amount')],
    ['amount [100]', `{${BASE},"amount":[100]}`, IF('amount')],
    ['amount {}', `{${BASE},"amount":{}}`, IF('amount')],
    ['amount 100.0 (documented: read as 100)', `{${BASE},"amount":100.0}`, okAmount(100)],
    ['amount 1E2', `{${BASE},"amount":1E2}`, okAmount(100)],
    ['amount 1.0e2', `{${BASE},"amount":1.0e2}`, okAmount(100)],
    ['amount 0.5e1', `{${BASE},"amount":0.5e1}`, okAmount(5)],
    [`amount ${AMOUNT_MAX} (the maximum)`, `{${BASE},"amount":${AMOUNT_MAX}}`, okAmount(AMOUNT_MAX)],
    [`amount ${AMOUNT_MAX + 1}`, `{${BASE},"amount":${AMOUNT_MAX + 1}}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['__proto__ key, literally', `{"__proto__":{"amount":1,"isBank":true},${BASE},"amount":5}`, IF('__proto__')],
    ['__proto__ key last', `{${BASE},"amount":5,"__proto__":null}`, IF('__proto__')],
    ['constructor.prototype', `{"constructor":{"prototype":{"polluted":true}},${BASE},"amount":5}`, IF('constructor')],
    ['prototype key', `{${BASE},"amount":5,"prototype":{}}`, IF('prototype')],
    ['__proto__ inside reference', `{${BASE},"amount":5,"reference":{"__proto__":{"x":1}}}`, IF('reference')],
    ['payer "constructor"', `{"id":"@ID@","type":"agreement","payer":"constructor","payee":"ABC","amount":5}`, item('UNKNOWN_BANK', 'payer')],
    ['payer "__proto__"', `{"id":"@ID@","type":"agreement","payer":"__proto__","payee":"ABC","amount":5}`, item('UNKNOWN_BANK', 'payer')],
    ['payee "hasOwnProperty"', `{"id":"@ID@","type":"agreement","payer":"ICBC","payee":"hasOwnProperty","amount":5}`, item('UNKNOWN_BANK', 'payee')],
    ['type "__proto__"', `{"id":"@ID@","type":"__proto__","payer":"ICBC","payee":"ABC","amount":5}`, IF('type')],
    ['type "toString"', `{"id":"@ID@","type":"toString","payer":"ICBC","payee":"ABC","amount":5}`, IF('type')],
    ['type escaped \\u0061greement', `{"id":"@ID@","type":"\\u0061greement","payer":"ICBC","payee":"ABC","amount":5}`, okAmount(5)],
    ['id empty', `{"id":"","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id 65 chars', `{"id":"${'a'.repeat(65)}","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id \\u0000', `{"id":"a\\u0000b","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id \\n', `{"id":"a\\nb","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id unicode', `{"id":"订单-1","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id lone surrogate', `{"id":"\\ud800","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id RTL override', `{"id":"a\\u202eb","type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['id a number', `{"id":12345,"type":"agreement","payer":"ICBC","payee":"ABC","amount":5}`, { item: ['INVALID_FIELD'], field: 'id' }],
    ['reference 140 emoji', `{${BASE},"amount":5,"reference":"${'😀'.repeat(140)}"}`, okAmount(5)],
    ['reference 141 emoji', `{${BASE},"amount":5,"reference":"${'😀'.repeat(141)}"}`, IF('reference')],
    ['reference C1 control', `{${BASE},"amount":5,"reference":"a\\u0085b"}`, IF('reference')],
    ['reference DEL', `{${BASE},"amount":5,"reference":"a\\u007fb"}`, IF('reference')],
    ['reference lone surrogate', `{${BASE},"amount":5,"reference":"a\\udc00b"}`, IF('reference')],
    ['twoPhase true, longest timeout', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":86400000}`, pending(5)],
    ['twoPhase true, timeoutMs 8.64e7', `{${BASE},"amount":6,"twoPhase":true,"timeoutMs":8.64e7}`, pending(6)],
    ['twoPhase true, timeoutMs 5', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":5}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs 99', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":99}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs 86400001', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":86400001}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs 1000.5', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":1000.5}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs "1000"', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":"1000"}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs null', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":null}`, IF('timeoutMs')],
    ['twoPhase true, timeoutMs 1e400', `{${BASE},"amount":5,"twoPhase":true,"timeoutMs":1e400}`, IF('timeoutMs')],
    ['twoPhase true, amount -0', `{${BASE},"amount":-0,"twoPhase":true,"timeoutMs":86400000}`, item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['twoPhase "true"', `{${BASE},"amount":5,"twoPhase":"true"}`, IF('twoPhase')],
    ['twoPhase 1', `{${BASE},"amount":5,"twoPhase":1}`, IF('twoPhase')],
    ['twoPhase null', `{${BASE},"amount":5,"twoPhase":null}`, IF('twoPhase')],
    ['twoPhase false', `{${BASE},"amount":5,"twoPhase":false}`, okAmount(5)],
    ['timeoutMs without twoPhase', `{${BASE},"amount":5,"timeoutMs":1000}`, IF('timeoutMs')],
    ['timeoutMs with twoPhase false', `{${BASE},"amount":5,"twoPhase":false,"timeoutMs":1000}`, IF('timeoutMs')],
    ['trailing comma', `{${BASE},"amount":5,}`, { whole: 'INVALID_MESSAGE' }],
    ['trailing garbage', `{${BASE},"amount":5}x`, { whole: 'INVALID_MESSAGE' }],
    ['trailing NUL', `{${BASE},"amount":5}\u0000`, { whole: 'INVALID_MESSAGE' }],
    ['trailing whitespace', `{${BASE},"amount":5} \n\t`, okAmount(5)],
    ['raw control character in a string', `{${BASE},"amount":5,"reference":"a\u0001b"}`, { whole: 'INVALID_MESSAGE' }],
    ['single quotes', `{'id':'@ID@'}`, { whole: 'INVALID_MESSAGE' }],
    ['comment', `{${BASE},"amount":5 /* c */}`, { whole: 'INVALID_MESSAGE' }],
    ['null item', 'null', item('INVALID_MESSAGE')],
    ['string item', '"@ID@"', item('INVALID_MESSAGE')],
    ['array item', `[{${BASE},"amount":5}]`, item('INVALID_MESSAGE')],
  ] as [string, string, LitExpect][]
).map(([name, body, expect]) => ({ name, enc: 'json' as Enc, build: J(body), expect }));

const utf8Bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const rawJsonLiterals: Literal[] = (
  [
    ['invalid UTF-8 in a string', [0xff, 0xfe]],
    ['overlong UTF-8 "/"', [0xc0, 0xaf]],
    ['UTF-8 encoded surrogate (CESU-8)', [0xed, 0xa0, 0x80]],
    ['truncated UTF-8 sequence', [0xe8, 0xae]],
  ] as [string, number[]][]
).map(([name, bad]) => ({
  name,
  enc: 'json' as Enc,
  build: (id: string) => Buffer.concat([utf8Bytes(`{"id":"${id}","type":"agreement","payer":"ICBC","payee":"ABC","amount":5,"reference":"a`), Buffer.from(bad), utf8Bytes('b"}')]),
  expect: { whole: 'INVALID_MESSAGE' } as LitExpect,
}));

const mp = (...parts: (number[] | Uint8Array)[]): Uint8Array => Buffer.concat(parts.map((p) => (p instanceof Uint8Array ? p : Buffer.from(p))));
const mstr = (s: string): Uint8Array => encode(s);
function mmap(entries: [Uint8Array, Uint8Array][]): Uint8Array {
  const n = entries.length;
  const head = n < 16 ? [0x80 | n] : [0xde, n >> 8, n & 0xff];
  return mp(head, ...entries.flatMap(([k, v]) => [k, v]));
}
/** A msgpack instruction whose fields can be replaced by raw bytes. */
function mpInstr(id: string, over: Record<string, Uint8Array | undefined> = {}, extra: [Uint8Array, Uint8Array][] = [], extraFirst = false): Uint8Array {
  const base: Record<string, Uint8Array> = { id: mstr(id), type: mstr('agreement'), payer: mstr('ICBC'), payee: mstr('ABC'), amount: encode(5) };
  const entries: [Uint8Array, Uint8Array][] = [];
  for (const k of Object.keys(base)) {
    const v = Object.hasOwn(over, k) ? over[k] : base[k];
    if (v !== undefined) entries.push([mstr(k), v]);
  }
  for (const [k, v] of Object.entries(over)) if (!Object.hasOwn(base, k) && v !== undefined) entries.push([mstr(k), v]);
  return mmap(extraFirst ? [...extra, ...entries] : [...entries, ...extra]);
}
const f64 = (x: number): Uint8Array => {
  const b = Buffer.alloc(9);
  b[0] = 0xcb;
  b.writeDoubleBE(x, 1);
  return b;
};
const f32 = (x: number): Uint8Array => {
  const b = Buffer.alloc(5);
  b[0] = 0xca;
  b.writeFloatBE(x, 1);
  return b;
};
const u64 = (x: bigint): Uint8Array => {
  const b = Buffer.alloc(9);
  b[0] = 0xcf;
  b.writeBigUInt64BE(x, 1);
  return b;
};
const i64 = (x: bigint): Uint8Array => {
  const b = Buffer.alloc(9);
  b[0] = 0xd3;
  b.writeBigInt64BE(x, 1);
  return b;
};

const mpLiterals: Literal[] = (
  [
    ['amount uint64 2**64-1 (reads as 2**64)', (id) => mpInstr(id, { amount: u64(2n ** 64n - 1n) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount uint64 2**53+1', (id) => mpInstr(id, { amount: u64(2n ** 53n + 1n) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount uint64 100', (id) => mpInstr(id, { amount: u64(100n) }), okAmount(100)],
    ['amount int64 -2**63', (id) => mpInstr(id, { amount: i64(-(2n ** 63n)) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount int64 -1', (id) => mpInstr(id, { amount: i64(-1n) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount float64 -0', (id) => mpInstr(id, { amount: f64(-0) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount float64 NaN', (id) => mpInstr(id, { amount: f64(NaN) }), IF('amount')],
    ['amount float64 Infinity', (id) => mpInstr(id, { amount: f64(Infinity) }), IF('amount')],
    ['amount float64 -Infinity', (id) => mpInstr(id, { amount: f64(-Infinity) }), IF('amount')],
    ['amount float32 NaN', (id) => mpInstr(id, { amount: f32(NaN) }), IF('amount')],
    ['amount float64 1.5', (id) => mpInstr(id, { amount: f64(1.5) }), IF('amount')],
    ['amount float64 1e21', (id) => mpInstr(id, { amount: f64(1e21) }), item('AMOUNT_OUT_OF_RANGE', 'amount')],
    ['amount float64 100.0', (id) => mpInstr(id, { amount: f64(100) }), okAmount(100)],
    ['amount float32 100.0', (id) => mpInstr(id, { amount: f32(100) }), okAmount(100)],
    ['amount str "100"', (id) => mpInstr(id, { amount: mstr('100') }), IF('amount')],
    ['amount bin', (id) => mpInstr(id, { amount: mp([0xc4, 0x01, 0x64]) }), IF('amount')],
    ['amount nil', (id) => mpInstr(id, { amount: mp([0xc0]) }), IF('amount')],
    ['amount timestamp ext', (id) => mpInstr(id, { amount: encode(new Date(0)) }), IF('amount')],
    ['amount ext type 5', (id) => mpInstr(id, { amount: mp([0xd4, 0x05, 0x64]) }), IF('amount')],
    ['amount missing', (id) => mpInstr(id, { amount: undefined }), IF('amount')],
    ['__proto__ key in a map', (id) => mpInstr(id, {}, [[mstr('__proto__'), mmap([[mstr('isBank'), mp([0xc3])]])]], true), IF('__proto__')],
    ['__proto__ key last', (id) => mpInstr(id, {}, [[mstr('__proto__'), mp([0xc0])]]), IF('__proto__')],
    ['__proto__ inside reference', (id) => mpInstr(id, { reference: mmap([[mstr('__proto__'), mp([0x01])]]) }), IF('reference')],
    ['constructor key', (id) => mpInstr(id, {}, [[mstr('constructor'), mmap([[mstr('prototype'), mmap([[mstr('polluted'), mp([0xc3])]])]])]]), IF('constructor')],
    ['prototype key', (id) => mpInstr(id, {}, [[mstr('prototype'), mp([0x80])]]), IF('prototype')],
    ['payer "constructor"', (id) => mpInstr(id, { payer: mstr('constructor') }), item('UNKNOWN_BANK', 'payer')],
    ['twoPhase true, timeoutMs uint64 86400000', (id) => mpInstr(id, { twoPhase: mp([0xc3]), timeoutMs: u64(86_400_000n) }), pending(5)],
    ['twoPhase true, timeoutMs float64 NaN', (id) => mpInstr(id, { twoPhase: mp([0xc3]), timeoutMs: f64(NaN) }), IF('timeoutMs')],
    ['twoPhase true, timeoutMs uint64 2**64-1', (id) => mpInstr(id, { twoPhase: mp([0xc3]), timeoutMs: u64(2n ** 64n - 1n) }), IF('timeoutMs')],
    ['twoPhase nil', (id) => mpInstr(id, { twoPhase: mp([0xc0]) }), IF('twoPhase')],
    ['twoPhase as 1', (id) => mpInstr(id, { twoPhase: mp([0x01]) }), IF('twoPhase')],
    ['id empty', () => mpInstr('', {}), { item: ['INVALID_FIELD'], field: 'id' }],
    ['id 65 chars', () => mpInstr('b'.repeat(65), {}), { item: ['INVALID_FIELD'], field: 'id' }],
    ['id with control characters', () => mpInstr('a\u0001\u0002', {}), { item: ['INVALID_FIELD'], field: 'id' }],
    ['id unicode', () => mpInstr('付款😀', {}), { item: ['INVALID_FIELD'], field: 'id' }],
    ['id as bin', (id) => mpInstr(id, { id: mp([0xc4, id.length], utf8Bytes(id)) }), { item: ['INVALID_FIELD'], field: 'id' }],
    ['id 64 chars', (id) => mpInstr(id.padEnd(64, 'x'), {}), { valid: { payer: 'ICBC', payee: 'ABC', amount: 5, type: 'agreement', idOf: (id: string) => id.padEnd(64, 'x') } }],
    ['reference 4096 bytes (within the decoding bound)', (id) => mpInstr(id, { reference: mstr('x'.repeat(4096)) }), IF('reference')],
    ['reference 4097 bytes (over the decoding bound)', (id) => mpInstr(id, { reference: mstr('x'.repeat(4097)) }), { whole: 'INVALID_MESSAGE' }],
    ['map of 65 keys', (id) => mpInstr(id, {}, Array.from({ length: 60 }, (_, i): [Uint8Array, Uint8Array] => [mstr(`k${i}`), mp([0x01])])), { whole: 'INVALID_MESSAGE' }],
    ['map32 header claiming 2**32-1 keys', () => mp([0xdf, 0xff, 0xff, 0xff, 0xff]), { whole: 'INVALID_MESSAGE' }],
    ['array32 header claiming 2**32-1 items', () => mp([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]), { whole: 'INVALID_MESSAGE' }],
    ['str32 header claiming 4 GiB', (id) => mpInstr(id, { reference: mp([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]) }), { whole: 'INVALID_MESSAGE' }],
    ['bin32 header claiming 4 GiB', (id) => mpInstr(id, { reference: mp([0xc6, 0xff, 0xff, 0xff, 0xff, 0x61]) }), { whole: 'INVALID_MESSAGE' }],
    ['ext32 header claiming 4 GiB', (id) => mpInstr(id, { reference: mp([0xc9, 0xff, 0xff, 0xff, 0xff, 0x05, 0x61]) }), { whole: 'INVALID_MESSAGE' }],
    ['str8 claiming more bytes than sent', (id) => mpInstr(id, { reference: mp([0xd9, 200, 0x61, 0x62]) }), { whole: 'INVALID_MESSAGE' }],
    ['never-used byte 0xc1', (id) => mpInstr(id, { reference: mp([0xc1]) }), { whole: 'INVALID_MESSAGE' }],
    ['map with a nil key', (id) => mpInstr(id, {}, [[mp([0xc0]), mp([0x01])]]), { whole: 'INVALID_MESSAGE' }],
    ['map with an array key', (id) => mpInstr(id, {}, [[mp([0x90]), mp([0x01])]]), { whole: 'INVALID_MESSAGE' }],
    ['trailing byte', (id) => mp(mpInstr(id, {}), [0x00]), { whole: 'INVALID_MESSAGE' }],
    ['nil item', () => mp([0xc0]), item('INVALID_MESSAGE')],
    ['bin item', () => mp([0xc4, 0x02, 0x7b, 0x7d]), item('INVALID_MESSAGE')],
    ['timestamp item', () => encode(new Date(0)), item('INVALID_MESSAGE')],
  ] as [string, (id: string) => Uint8Array, LitExpect][]
).map(([name, build, expect]) => ({ name, enc: 'msgpack' as Enc, build, expect }));

type Wrap = 'http-single' | 'http-batch' | 'ws';

function wrapLiteral(lit: Literal, wrap: Wrap, id: string, seq: number): string | Uint8Array {
  const inner = lit.build(id);
  if (wrap === 'http-single') return inner;
  if (lit.enc === 'json') {
    const text = typeof inner === 'string' ? Buffer.from(inner) : Buffer.from(inner);
    const head = wrap === 'http-batch' ? '{"instructions":[' : `{"op":"submit","seq":${seq},"instructions":[`;
    const joined = Buffer.concat([Buffer.from(head), text, Buffer.from(']}')]);
    return typeof inner === 'string' ? joined.toString('utf8') : joined;
  }
  const list = mp([0x91], inner as Uint8Array);
  if (wrap === 'http-batch') return mp([0x81], mstr('instructions'), list);
  return mp([0x83], mstr('op'), mstr('submit'), mstr('seq'), encode(seq), mstr('instructions'), list);
}

async function runLiteral(lit: Literal, wrap: Wrap): Promise<void> {
  const id = fresh();
  const seq = 1000 + idCounter;
  const payload = wrapLiteral(lit, wrap, id, seq);
  const input = { literal: lit.name, wrap, enc: lit.enc, payload };
  const e = lit.expect;
  const v: Verdict =
    'valid' in e
      ? { ok: { id: e.valid.idOf?.(id) ?? id, type: e.valid.type, payer: e.valid.payer, payee: e.valid.payee, amount: e.valid.amount, twoPhase: e.valid.twoPhase === true, ...(e.valid.timeoutMs !== undefined ? { timeoutMs: e.valid.timeoutMs } : {}) } }
      : 'item' in e
        ? { codes: e.item, code: e.item[0]!, ...(e.field !== undefined ? { field: e.field } : {}), ...(e.echoId ? { id } : {}) }
        : {};
  countCase(1);
  if (wrap === 'ws' && lit.enc === 'json' && typeof payload !== 'string' && !isUtf8(payload)) {
    // RFC 6455 §8.1: a text frame that is not UTF-8 fails the WebSocket connection.
    const got = await sendFrame(payload, false, 'institution');
    if (got.kind !== 'close') fail('a text frame that is not UTF-8 fails the connection (RFC 6455)', input, 'close', got);
  } else if (wrap === 'ws') {
    const got = await sendFrame(payload, lit.enc === 'msgpack', 'institution');
    const fv: FrameVerdict = 'whole' in e ? { kind: 'error', codes: [e.whole], seq: 'absent' } : { kind: 'ack', seq, items: [v] };
    checkFrame(fv, got, lit.enc, input);
  } else {
    const a = await post(payload, lit.enc);
    const bv: BodyVerdict =
      'whole' in e
        ? { kind: 'error', code: e.whole }
        : wrap === 'http-batch'
          ? { kind: 'batch', items: [v] }
          : 'item' in e && e.item[0] === 'INVALID_MESSAGE'
            ? { kind: 'error', code: 'INVALID_MESSAGE' }
            : { kind: 'single', item: v };
    checkHttp(bv, a, lit.enc, input);
  }
  await checkSeq(input);
}

// ---------------------------------------------------------------------------

beforeAll(async () => {
  console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED} npx vitest run test/integration/fuzz.test.ts), scale ${SCALE}`);
  const t = tempDir('netting-fuzz-');
  cleanup = t.cleanup;
  engine = await startEngine(
    t.dir,
    testConfig(t.dir, { maxAmountCents: AMOUNT_MAX, limits: { bodyBytesMax: BODY_MAX, frameBytesMax: FRAME_MAX, batchItemsMax: BATCH_MAX } }),
  );
  const p = await positionsSeq();
  model.batch = p.batch;
  model.seq = p.seq;
});

afterAll(async () => {
  for (const w of Object.values(wires)) w?.close();
  console.log(
    `fuzz total: ${tally.cases} cases (${tally.items} items), ${tally.clearedOnPurpose} valid on purpose and cleared, ${tally.pendingOnPurpose} pending; ` +
      `${tally.pushesSkipped} pushes skipped; seed ${SEED}; ` +
      [...tally.byProperty].map(([k, n]) => `${k}=${n}`).join(', '),
  );
  console.log(`fuzz outcomes: ${[...tally.outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`).join(', ')}`);
  if (engine !== undefined) await engine.stop();
  cleanup?.();
});

describe('hostile input', () => {
  it('HTTP: instruction bodies with arbitrary values per field, single and batched, JSON and msgpack', async () => {
    await property('http-instructions', 1, fc.tuple(bodyArb, encArb, fc.nat(5)), runs(800), async ([body, enc, variant]) => {
      await viaHttp(body, enc, variant);
    });
  });

  it('WebSocket: submit, receipt and arbitrary frames, text JSON and binary msgpack, institution and bank', async () => {
    const roleArb = fc.oneof({ weight: 3, arbitrary: fc.constant<Role>('institution') }, { weight: 1, arbitrary: fc.constant<Role>('bank') });
    await property('ws-frames', 2, fc.tuple(frameArb, encArb, roleArb), runs(800), async ([frame, enc, role]) => {
      await viaWs(frame, enc, role);
    });
  });

  it('random bytes, truncated, extended and bit-flipped encodings of valid messages, over HTTP and WebSocket', async () => {
    const validArb = fc.record({
      payer: fc.constantFrom(...BANKS),
      payee: fc.constantFrom(...BANKS),
      amount: fc.integer({ min: 1, max: AMOUNT_MAX }),
      type: fc.constantFrom(...TYPES),
      shape: fc.constantFrom('single', 'batch', 'frame'),
    });
    const mutationArb = fc.oneof(
      fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 300 }) }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }) }),
      fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
      fc.record({ kind: fc.constant('flip' as const), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), xor: fc.integer({ min: 1, max: 255 }) }),
    );
    const transportArb = fc.constantFrom<'http' | 'ws'>('http', 'ws');
    await property('raw-bytes', 3, fc.tuple(validArb, mutationArb, encArb, transportArb, fc.nat(5)), runs(1000), async ([base, mutation, enc, transport, variant]) => {
      const one = objectOf([['id', fresh()], ['type', base.type], ['payer', base.payer], ['payee', base.payee], ['amount', base.amount]]);
      const message = transport === 'ws' ? { op: 'submit', seq: idCounter, instructions: [one] } : base.shape === 'batch' ? { instructions: [one] } : one;
      const whole = enc === 'json' ? utf8Bytes(JSON.stringify(message)) : encode(message);
      let bytes: Uint8Array;
      switch (mutation.kind) {
        case 'random':
          bytes = mutation.bytes;
          break;
        case 'truncate':
          bytes = whole.subarray(0, Math.floor(mutation.at * whole.byteLength));
          break;
        case 'append':
          bytes = mp(whole, mutation.bytes);
          break;
        case 'flip': {
          bytes = Uint8Array.from(whole);
          const at = Math.floor(mutation.at * bytes.byteLength);
          bytes[at] = bytes[at]! ^ mutation.xor;
          break;
        }
      }
      // A valid message that a mutation left valid is cleared on purpose; its id is fresh.
      if (transport === 'http') await rawViaHttp(bytes, enc, variant);
      else await rawViaWs(bytes, enc, 'institution');
    });
  });

  it('deep nesting (to 10,000 levels and past the size limits) in every position, JSON and msgpack, HTTP and WebSocket', async () => {
    const deepArb = fc.record({
      depth: fc.oneof({ weight: 3, arbitrary: fc.constant(10_000) }, { weight: 3, arbitrary: fc.integer({ min: 1, max: 12_000 }) }, { weight: 1, arbitrary: fc.constantFrom(30_000, 50_000, 100_000, 200_000) }),
      kind: fc.constantFrom<'array' | 'object'>('array', 'object'),
      where: fc.constantFrom('top', 'item', 'reference', 'amount', 'unknown', 'id', 'instructions', 'seq', 'op', '__proto__'),
      enc: encArb,
      transport: fc.constantFrom<'http' | 'ws'>('http', 'ws'),
    });
    await property('deep-nesting', 4, deepArb, runs(100), async ({ depth, kind, where, enc, transport }) => {
      const deep = deepPayload(depth, kind, enc);
      const id = fresh();
      const seq = idCounter;
      const asItem = (): unknown => {
        switch (where) {
          case 'reference':
          case 'amount':
          case 'id':
            return instr(id, [[where, DEEP]]);
          case '__proto__':
            return instr(id, [['__proto__', DEEP]]);
          case 'unknown':
            return instr(id, [['deep', DEEP]]);
          default:
            return DEEP;
        }
      };
      let wrapper: unknown;
      if (transport === 'http') {
        wrapper = where === 'top' ? DEEP : where === 'item' ? { instructions: [DEEP] } : where === 'instructions' ? { instructions: DEEP } : where === 'seq' || where === 'op' ? instr(id, [[where, DEEP]]) : asItem();
      } else {
        wrapper =
          where === 'top'
            ? DEEP
            : where === 'instructions'
              ? { op: 'submit', seq, instructions: DEEP }
              : where === 'seq'
                ? { op: 'ping', seq: DEEP }
                : where === 'op'
                  ? { op: DEEP, seq }
                  : { op: 'submit', seq, instructions: [asItem()] };
      }
      const { payload, norm } = spliceDeep(wrapper, deep, enc);
      const input = { via: `${transport} ${enc}`, depth, kind, where, payload };
      if (transport === 'http') {
        const bv = judgeBody(norm, enc, byteLen(payload));
        countCase(bv.kind === 'batch' ? bv.items.length : 1);
        checkHttp(bv, await post(payload, enc), enc, input);
      } else {
        const fv = judgeFrame(norm, enc, byteLen(payload), 'institution');
        countCase(fv.kind === 'ack' ? fv.items.length : 1);
        checkFrame(fv, await sendFrame(payload, enc === 'msgpack', 'institution'), enc, input);
      }
      await checkSeq(input);
    });
  });

  it('huge strings, arrays and batches, at and around bodyBytesMax, frameBytesMax and batchItemsMax', async () => {
    const sizeArb = fc.record({
      transport: fc.constantFrom<'http' | 'ws'>('http', 'ws'),
      enc: encArb,
      shape: fc.constantFrom('single', 'batch', 'many'),
      delta: fc.oneof(fc.constantFrom(-1, 0, 1, 2), fc.integer({ min: -100_000, max: 3 * BODY_MAX })),
      double: fc.boolean(),
      many: fc.oneof(fc.constantFrom(BATCH_MAX - 1, BATCH_MAX, BATCH_MAX + 1, 1000, 50_000), fc.integer({ min: 1, max: 60_000 })),
    });
    await property('sizes', 5, sizeArb, runs(120), async ({ transport, enc, shape, delta, double, many }) => {
      const limit = transport === 'http' ? BODY_MAX : double ? FRAME_DROP : FRAME_MAX;
      const target = Math.max(200, limit + delta);
      const seq = idCounter;
      let built: { payload: string | Uint8Array; norm: unknown };
      if (shape === 'many') {
        // A batch of many tiny items (each a number, so each is INVALID_MESSAGE when the batch is within its limit).
        const list = Array.from({ length: many }, () => 0);
        built = serialize(transport === 'http' ? { instructions: list } : { op: 'submit', seq, instructions: list }, enc);
      } else {
        const goodId = fresh();
        const padId = fresh();
        const items = (pad: unknown): unknown[] => (shape === 'batch' ? [instr(goodId), instr(padId, [['pad', pad]])] : [instr(padId, [['pad', pad]])]);
        built = padded((pad) => (transport === 'ws' ? { op: 'submit', seq, instructions: items(pad) } : shape === 'batch' ? { instructions: items(pad) } : items(pad)[0]), target, enc);
      }
      const size = byteLen(built.payload);
      const input = { via: `${transport} ${enc}`, shape, size, many: shape === 'many' ? many : undefined, payload: built.payload };
      if (transport === 'http') {
        const bv = judgeBody(built.norm, enc, size);
        countCase(bv.kind === 'batch' ? bv.items.length : 1);
        checkHttp(bv, await post(built.payload, enc), enc, input);
      } else {
        const fv = judgeFrame(built.norm, enc, size, 'institution');
        countCase(fv.kind === 'ack' ? fv.items.length : 1);
        checkFrame(fv, await sendFrame(built.payload, enc === 'msgpack', 'institution'), enc, input);
      }
      await checkSeq(input);
    });
  });

  it('hand-written hostile literals (special amounts, __proto__/constructor keys, bad ids, bad UTF-8, msgpack headers), in every wrapping', async () => {
    currentProperty = 'literals';
    const started = Date.now();
    // Every literal runs, and every mismatch is reported together.
    const mismatches: string[] = [];
    for (const lit of [...jsonLiterals, ...rawJsonLiterals, ...mpLiterals]) {
      for (const wrap of ['http-single', 'http-batch', 'ws'] as Wrap[]) {
        try {
          await runLiteral(lit, wrap);
        } catch (err) {
          if (!(err instanceof Mismatch)) throw err;
          mismatches.push(err.message);
          await checkSeq({ literal: lit.name, wrap });
        }
      }
    }
    // Bodies and frames that are wrong as a whole, judged by decoding them the documented way.
    const bodies: [string, Enc][] = [
      ['', 'json'], [' ', 'json'], ['{}', 'json'], ['{"instructions":null}', 'json'], ['{"instructions":{}}', 'json'], ['{"instructions":"x"}', 'json'],
      ['{"instructions":[]}', 'json'], ['{"instructions":[1],"x":1}', 'json'], ['{"__proto__":[],"instructions":[1]}', 'json'],
      ['{"constructor":1,"instructions":[1]}', 'json'], [`{"instructions":[${'0,'.repeat(BATCH_MAX)}0]}`, 'json'], ['[]', 'json'], ['null', 'json'],
    ];
    for (const [text, enc] of bodies) await rawViaHttp(utf8Bytes(text), enc);
    for (const bytes of [[], [0x80], [0x81, 0xac, ...utf8Bytes('instructions'), 0xc0], [0x81, 0xac, ...utf8Bytes('instructions'), 0x90], [0x90], [0xc0]]) {
      await rawViaHttp(Uint8Array.from(bytes), 'msgpack');
    }
    const frames = [
      '{"op":"submit","seq":1}', '{"op":"submit","seq":"1","instructions":[{}]}', '{"op":"ping","seq":9007199254740992}', '{"op":"ping","seq":-0}',
      '{"op":"ping","seq":1e21}', '{"op":"ping","seq":1.0}', '{"seq":1}', '{"op":null}', '{"op":"__proto__","seq":3}', '{"__proto__":{"op":"ping"},"seq":4}',
      '{"op":"constructor"}', '{"op":"subscribe","seq":5,"topics":["forwards"]}', '{"op":"subscribe","seq":6,"topics":["__proto__"]}', '{"op":"subscribe","seq":7,"topics":[]}',
      '[]', '"ping"', 'null', '{"op":"submit","seq":8,"instructions":[null]}',
      '{"op":"receipt","seq":9,"receipts":[{"institution":"PI0001","id":"never-stored-receipt","outcome":"confirm"}]}',
      '{"op":"receipt","seq":10,"receipts":[{"institution":"PI0001","id":"never-stored-receipt","outcome":"decline","reason":"a\\u0000"}]}',
      '{"op":"receipt","seq":11,"receipts":[{"__proto__":1,"institution":"PI0001","id":"never-stored-receipt","outcome":"confirm"}]}',
      '{"op":"receipt","seq":12,"receipts":[]}', '{"op":"receipt","receipts":[{}]}', '{"op":"receipt","seq":13,"receipts":{}}',
    ];
    usedIds.add('never-stored-receipt');
    for (const text of frames) for (const role of ['institution', 'bank'] as Role[]) await rawViaWs(utf8Bytes(text), 'json', role);
    for (const bytes of [[], [0xc1], [0x80], [0x81, 0xa2, ...utf8Bytes('op'), 0xc0], [0x82, 0xa2, ...utf8Bytes('op'), 0xa4, ...utf8Bytes('ping'), 0xa3, ...utf8Bytes('seq'), 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]]) {
      await rawViaWs(Uint8Array.from(bytes), 'msgpack', 'institution');
    }
    // A text frame that is not UTF-8 (RFC 6455 fails the connection), then a fresh one works.
    await rawViaWs(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d]), 'json', 'institution');
    // Bodies streamed in pieces without Content-Length: read whole within the limit, PAYLOAD_TOO_LARGE past it.
    for (const enc of ['json', 'msgpack'] as Enc[]) {
      for (const [target, pieces] of [[300, 3], [BODY_MAX, 7], [BODY_MAX + 1, 7], [3 * BODY_MAX, 40]] as [number, number][]) {
        const built = padded((pad) => ({ instructions: [instr(fresh()), instr(fresh(), [['pad', pad]])] }), target, enc);
        const bv = judgeBody(built.norm, enc, byteLen(built.payload));
        const input = { via: `HTTP ${enc} chunked`, pieces, size: byteLen(built.payload), payload: built.payload };
        countCase(bv.kind === 'batch' ? bv.items.length : 1);
        try {
          checkHttp(bv, await post(built.payload, enc, 0, pieces), enc, input);
        } catch (err) {
          if (!(err instanceof Mismatch)) throw err;
          mismatches.push(err.message);
        }
        await checkSeq(input);
      }
    }
    console.log(`fuzz[literals]: ${tally.byProperty.get('literals') ?? 0} cases in ${Date.now() - started} ms`);
    await checkAlive('literals');
    expect(mismatches, `${mismatches.length} literal(s) answered against docs/api.md:\n${mismatches.join('\n')}`).toEqual([]);
  });
});
