/**
 * Mandates (委托协议): the standing authority under which `agreement`
 * (协议支付) and `entrusted` (委托支付) instructions debit a payer's account.
 * Pure domain code: the shape, the validation of a signing request, the
 * admission rule and the wire view. The book that keeps them is
 * mandate-book.ts.
 */

import { AssertionError } from '../core/assert.js';
import { failure, type Failure } from '../core/failures.js';
import { ID_PATTERN, isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';

export const MANDATE_KINDS = ['agreement', 'entrusted'] as const;
export type MandateKind = (typeof MANDATE_KINDS)[number];
export const MANDATE_STATUSES = ['pending', 'active', 'declined', 'revoked'] as const;
export type MandateStatus = (typeof MANDATE_STATUSES)[number];
/** Who revoked a mandate: 机构解约 (the institution), 银行解约 (the payer bank), or the platform's operator. */
export type MandateRevoker = 'institution' | 'bank' | 'operator';

export const ACCOUNT_LENGTH_MAX = 64;
const BAD_TEXT = /\p{Cc}|\p{Cs}/u;

/** What a signing request asks for, validated. */
export interface MandateTerms {
  institution: string;
  id: string;
  kind: MandateKind;
  payer: string;
  /** An opaque reference to the payer's account, never a full account number. */
  account: string;
  perPaymentMaxCents?: number;
}

/** A mandate's key, in the store and in memory: '<institution>/<id>' (neither part holds a '/'). */
export function mandateKey(m: { institution: string; id: string }): string {
  return `${m.institution}/${m.id}`;
}

/** A mandate as stored (times in ms since the epoch). */
export interface MandateRecord extends MandateTerms {
  status: MandateStatus;
  via: 'gateway' | 'offline';
  createdAt: number;
  activatedAt?: number;
  /** When it was revoked, or declined by the payer bank. */
  revokedAt?: number;
  declinedAt?: number;
  revokedBy?: MandateRevoker;
  /** The payer bank's reason for a decline. */
  reason?: string;
}

type MandateTime = 'createdAt' | 'activatedAt' | 'revokedAt' | 'declinedAt';

/** The wire view of a mandate (PROTOCOL.md): the record with its times as ISO-8601 strings. */
export type MandateView = Omit<MandateRecord, MandateTime> & { createdAt: string } & Partial<Record<Exclude<MandateTime, 'createdAt'>, string>>;

export function mandateView(r: MandateRecord): MandateView {
  const v: MandateView = { institution: r.institution, id: r.id, kind: r.kind, payer: r.payer, account: r.account, status: r.status, via: r.via, createdAt: new Date(r.createdAt).toISOString() };
  if (r.perPaymentMaxCents !== undefined) v.perPaymentMaxCents = r.perPaymentMaxCents;
  if (r.activatedAt !== undefined) v.activatedAt = new Date(r.activatedAt).toISOString();
  if (r.revokedAt !== undefined) v.revokedAt = new Date(r.revokedAt).toISOString();
  if (r.revokedBy !== undefined) v.revokedBy = r.revokedBy;
  if (r.declinedAt !== undefined) v.declinedAt = new Date(r.declinedAt).toISOString();
  if (r.reason !== undefined) v.reason = r.reason;
  return v;
}

export interface MandateRules {
  isBank(code: string): boolean;
  amountCentsMax: number;
}

const TERMS_KEYS = new Set(['id', 'kind', 'payer', 'account', 'perPaymentMaxCents']);
const OFFLINE_KEYS = new Set([...TERMS_KEYS, 'institution']);

function printable(text: string): string {
  return (text.length > 40 ? `${text.slice(0, 40)}…` : text).replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Validate a signing request. `institution` is the signing institution
 * (gateway signing, 网关签约); undefined when a bank signs offline (线下签约)
 * and the body names the institution.
 */
export function validateMandateTerms(raw: unknown, institution: string | undefined, rules: MandateRules): MandateTerms | Failure {
  if (!isPlainObject(raw)) return failure('INVALID_MESSAGE', 'a mandate must be an object');
  const allowed = institution === undefined ? OFFLINE_KEYS : TERMS_KEYS;
  for (const key in raw) if (!allowed.has(key)) return failure('INVALID_FIELD', `unknown field '${printable(key)}'`, printable(key));
  const f = raw as Record<string, unknown>;
  const owner = institution ?? f['institution'];
  if (typeof owner !== 'string' || !PARTY_CODE_PATTERN.test(owner)) return failure('INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
  const id = f['id'];
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) return failure('INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
  const kind = f['kind'];
  if (kind !== 'agreement' && kind !== 'entrusted') return failure('INVALID_FIELD', 'kind must be agreement or entrusted', 'kind');
  const payer = f['payer'];
  if (typeof payer !== 'string') return failure('INVALID_FIELD', 'payer must be a string', 'payer');
  if (!rules.isBank(payer)) return failure('UNKNOWN_BANK', `payer '${printable(payer)}' is not a participant`, 'payer');
  const account = f['account'];
  if (typeof account !== 'string' || account.length === 0 || [...account].length > ACCOUNT_LENGTH_MAX || BAD_TEXT.test(account)) {
    return failure('INVALID_FIELD', `account must be text of 1 to ${ACCOUNT_LENGTH_MAX} characters`, 'account');
  }
  const terms: MandateTerms = { institution: owner, id, kind, payer, account };
  const max = f['perPaymentMaxCents'];
  if (max !== undefined) {
    if (typeof max !== 'number' || !Number.isInteger(max)) return failure('INVALID_FIELD', 'perPaymentMaxCents must be an integer number of cents', 'perPaymentMaxCents');
    if (max < 1 || max > rules.amountCentsMax) return failure('AMOUNT_OUT_OF_RANGE', `perPaymentMaxCents must be between 1 and ${rules.amountCentsMax} cents`, 'perPaymentMaxCents');
    terms.perPaymentMaxCents = max;
  }
  return terms;
}

/** Whether a stored mandate was signed with exactly these terms (the duplicate rule for signing). */
export function sameTerms(r: MandateRecord, t: MandateTerms): boolean {
  return r.kind === t.kind && r.payer === t.payer && r.account === t.account && r.perPaymentMaxCents === t.perPaymentMaxCents;
}

/**
 * The admission rule for an instruction under a mandate: the mandate must
 * exist for the submitting institution, be active, name the instruction's
 * payer bank, and allow its amount.
 */
export function mandateRefusal(m: MandateRecord | undefined, mandateId: string, payer: string, amount: number): Failure | undefined {
  if (m === undefined) return failure('MANDATE_INVALID', `no mandate '${mandateId}' of this institution`, 'mandate');
  if (m.status !== 'active') return failure('MANDATE_INVALID', `mandate '${mandateId}' is ${m.status}`, 'mandate');
  if (m.payer !== payer) return failure('MANDATE_INVALID', `mandate '${mandateId}' is for payer bank '${m.payer}'`, 'mandate');
  if (m.perPaymentMaxCents !== undefined && amount > m.perPaymentMaxCents) {
    return failure('MANDATE_INVALID', `mandate '${mandateId}' allows at most ${m.perPaymentMaxCents} cents per payment`, 'mandate');
  }
  return undefined;
}

/** A mandate receipt item (the payer bank's answer to a gateway signing). */
export interface MandateReceiptItem {
  institution: string;
  id: string;
  outcome: 'confirm' | 'decline';
  reason: string | null;
}

const RECEIPT_KEYS = new Set(['institution', 'id', 'outcome', 'reason']);
const REASON_LENGTH_MAX = 140;

export function parseMandateReceipt(raw: unknown): MandateReceiptItem | Failure {
  if (!isPlainObject(raw)) return failure('INVALID_MESSAGE', 'a mandate receipt must be an object');
  for (const k in raw) if (!RECEIPT_KEYS.has(k)) return failure('INVALID_FIELD', `unknown field '${printable(k)}'`, printable(k));
  const { institution, id, outcome, reason } = raw as Record<string, unknown>;
  if (typeof institution !== 'string' || !PARTY_CODE_PATTERN.test(institution)) return failure('INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) return failure('INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
  if (outcome !== 'confirm' && outcome !== 'decline') return failure('INVALID_FIELD', 'outcome must be confirm or decline', 'outcome');
  if (reason !== undefined && (typeof reason !== 'string' || [...reason].length > REASON_LENGTH_MAX || BAD_TEXT.test(reason))) {
    return failure('INVALID_FIELD', `reason must be text of at most ${REASON_LENGTH_MAX} characters`, 'reason');
  }
  return { institution, id, outcome, reason: typeof reason === 'string' && reason.length > 0 ? reason : null };
}

/** The answer to one mandate receipt. */
export interface MandateReceiptResult {
  institution?: string;
  id?: string;
  status: MandateStatus | 'rejected';
  duplicate?: true;
  code?: string;
  message?: string;
  field?: string;
}

/** Pushed to the institution when one of its mandates changes status. */
export interface MandateNotification {
  op: 'notify';
  institution: string;
  mandate: string;
  status: MandateStatus;
}

const STATUS_SET: ReadonlySet<string> = new Set(MANDATE_STATUSES);

/** Check a mandate read back from the store: the pair to the validation before the write. */
export function checkMandateRecord(r: unknown): MandateRecord {
  const m = r as MandateRecord;
  const ok =
    isPlainObject(m) &&
    PARTY_CODE_PATTERN.test(String(m.institution)) &&
    ID_PATTERN.test(String(m.id)) &&
    (m.kind === 'agreement' || m.kind === 'entrusted') &&
    typeof m.payer === 'string' &&
    typeof m.account === 'string' &&
    STATUS_SET.has(m.status) &&
    (m.via === 'gateway' || m.via === 'offline') &&
    Number.isSafeInteger(m.createdAt) &&
    (m.status !== 'active' || Number.isSafeInteger(m.activatedAt)) &&
    (m.status !== 'revoked' || typeof m.revokedBy === 'string');
  if (!ok) throw new AssertionError(`stored mandate ${String(m?.institution)}/${String(m?.id)} is malformed`);
  return m;
}
