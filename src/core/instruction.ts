/**
 * Payment instructions: their shape, their validation, and what makes two
 * submissions "the same content" for the duplicate rules (受理重复).
 *
 * Pure domain code: no transport, no storage. Validation returns a value
 * (an instruction or a failure), never throws for client mistakes.
 */

import { failure, type Failure } from './failures.js';

export const INSTRUCTION_TYPES = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'] as const;
export type InstructionType = (typeof INSTRUCTION_TYPES)[number];

export const INSTRUCTION_STATUSES = ['cleared', 'pending', 'awaiting-submission', 'declined', 'expired', 'reversed', 'rejected'] as const;
export type InstructionStatus = (typeof INSTRUCTION_STATUSES)[number];

export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
export const PARTY_CODE_PATTERN = /^[A-Z0-9]{2,16}$/;
export const REFERENCE_LENGTH_MAX = 140;
export const TIMEOUT_MS_MIN = 100;
export const TIMEOUT_MS_MAX = 86_400_000;
export const TIMEOUT_MS_DEFAULT = 30_000;

/** A validated instruction, in the name of the institution that submitted it. */
export interface Instruction {
  institution: string;
  id: string;
  type: InstructionType;
  payer: string;
  payee: string;
  amount: number;
  twoPhase: boolean;
  /** Only for two-phase instructions; the default is applied at validation. */
  timeoutMs?: number;
  /** Absent when not given or empty. */
  reference?: string;
  /** The mandate of an `agreement` or `entrusted` instruction. */
  mandate?: string;
}

export interface ValidationRules {
  isBank(code: string): boolean;
  amountCentsMax: number;
  /** Two-phase instructions need the receipt lifecycle; until it is enabled they are refused. */
  twoPhaseEnabled: boolean;
}

/** The kinds that debit a payer's account under a standing mandate (委托, 协议). */
export function isMandateKind(type: InstructionType): boolean {
  return type === 'agreement' || type === 'entrusted';
}

const ALLOWED_KEYS = new Set(['id', 'type', 'payer', 'payee', 'amount', 'twoPhase', 'timeoutMs', 'reference', 'mandate']);
const TYPE_SET: ReadonlySet<string> = new Set(INSTRUCTION_TYPES);
// Control characters (C0, DEL, C1), and lone surrogates (which cannot be written as UTF-8).
const BAD_TEXT = /\p{Cc}|\p{Cs}/u;

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  if (ArrayBuffer.isView(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function codePointLength(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * The institution and id of a receipt (of an instruction or a mandate)
 * that was refused, those of them that are well formed, so that its result
 * still names what it answered.
 */
export function rawParty(raw: unknown): { institution?: string; id?: string } {
  const out: { institution?: string; id?: string } = {};
  if (!isPlainObject(raw)) return out;
  const institution = Object.hasOwn(raw, 'institution') ? raw['institution'] : undefined;
  if (typeof institution === 'string' && PARTY_CODE_PATTERN.test(institution)) out.institution = institution;
  const id = rawId(raw);
  if (id !== undefined) out.id = id;
  return out;
}

/** The id of a raw item if it has a usable one, so a rejection can echo it. */
export function rawId(raw: unknown): string | undefined {
  if (!isPlainObject(raw)) return undefined;
  const id = Object.hasOwn(raw, 'id') ? raw['id'] : undefined;
  return typeof id === 'string' && ID_PATTERN.test(id) ? id : undefined;
}

/**
 * Validate one submitted item. Checks run in a fixed order so that the same
 * bad input always gets the same code: shape, unknown keys, id, type, banks,
 * amount, two-phase fields, reference.
 */
export function validateInstruction(raw: unknown, institution: string, rules: ValidationRules): Instruction | Failure {
  if (!isPlainObject(raw)) return failure('INVALID_MESSAGE', 'an instruction must be a JSON/msgpack object');
  // A plain object has no inherited enumerable keys, so for-in sees exactly its own, without an array per item.
  for (const key in raw) {
    if (!ALLOWED_KEYS.has(key)) return failure('INVALID_FIELD', `unknown field '${printable(key)}'`, printable(key));
  }
  // Every key read below is allowed above and none exists on Object.prototype, so a missing one reads undefined.
  const fields = raw as Partial<Record<'id' | 'type' | 'payer' | 'payee' | 'amount' | 'twoPhase' | 'timeoutMs' | 'reference' | 'mandate', unknown>>;

  const id = fields.id;
  if (typeof id !== 'string') return failure('INVALID_FIELD', 'id must be a string', 'id');
  if (!ID_PATTERN.test(id)) return failure('INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');

  const type = fields.type;
  if (typeof type !== 'string' || !TYPE_SET.has(type)) {
    return failure('INVALID_FIELD', `type must be one of ${INSTRUCTION_TYPES.join(', ')}`, 'type');
  }

  const payer = fields.payer;
  if (typeof payer !== 'string') return failure('INVALID_FIELD', 'payer must be a string', 'payer');
  const payee = fields.payee;
  if (typeof payee !== 'string') return failure('INVALID_FIELD', 'payee must be a string', 'payee');
  if (!rules.isBank(payer)) return failure('UNKNOWN_BANK', `payer '${printable(payer)}' is not a participant`, 'payer');
  if (!rules.isBank(payee)) return failure('UNKNOWN_BANK', `payee '${printable(payee)}' is not a participant`, 'payee');
  if (payer === payee) return failure('SAME_BANK', 'payer and payee must be different banks', 'payee');

  const amount = fields.amount;
  if (typeof amount !== 'number' || !Number.isInteger(amount)) {
    return failure('INVALID_FIELD', 'amount must be an integer number of cents', 'amount');
  }
  if (amount < 1 || amount > rules.amountCentsMax) {
    return failure('AMOUNT_OUT_OF_RANGE', `amount must be between 1 and ${rules.amountCentsMax} cents`, 'amount');
  }

  const twoPhaseRaw = fields.twoPhase;
  if (twoPhaseRaw !== undefined && typeof twoPhaseRaw !== 'boolean') {
    return failure('INVALID_FIELD', 'twoPhase must be a boolean', 'twoPhase');
  }
  const twoPhase = twoPhaseRaw === true;
  const timeoutRaw = fields.timeoutMs;
  let timeoutMs: number | undefined;
  if (timeoutRaw !== undefined) {
    if (!twoPhase) return failure('INVALID_FIELD', 'timeoutMs applies to two-phase instructions only', 'timeoutMs');
    if (typeof timeoutRaw !== 'number' || !Number.isInteger(timeoutRaw) || timeoutRaw < TIMEOUT_MS_MIN || timeoutRaw > TIMEOUT_MS_MAX) {
      return failure('INVALID_FIELD', `timeoutMs must be an integer from ${TIMEOUT_MS_MIN} to ${TIMEOUT_MS_MAX}`, 'timeoutMs');
    }
    timeoutMs = timeoutRaw;
  } else if (twoPhase) {
    timeoutMs = TIMEOUT_MS_DEFAULT;
  }
  if (twoPhase && !rules.twoPhaseEnabled) {
    return failure('INVALID_FIELD', 'two-phase instructions are not enabled on this engine', 'twoPhase');
  }

  const referenceRaw = fields.reference;
  let reference: string | undefined;
  if (referenceRaw !== undefined) {
    if (typeof referenceRaw !== 'string') return failure('INVALID_FIELD', 'reference must be a string', 'reference');
    if (referenceRaw.length > REFERENCE_LENGTH_MAX * 2 || codePointLength(referenceRaw) > REFERENCE_LENGTH_MAX) {
      return failure('INVALID_FIELD', `reference must be at most ${REFERENCE_LENGTH_MAX} characters`, 'reference');
    }
    if (BAD_TEXT.test(referenceRaw)) {
      return failure('INVALID_FIELD', 'reference must not contain control characters or lone surrogates', 'reference');
    }
    if (referenceRaw.length > 0) reference = referenceRaw;
  }

  const mandateRaw = fields.mandate;
  if (mandateRaw !== undefined) {
    if (!isMandateKind(type as InstructionType)) return failure('INVALID_FIELD', 'mandate applies to agreement and entrusted instructions only', 'mandate');
    if (typeof mandateRaw !== 'string' || !ID_PATTERN.test(mandateRaw)) return failure('INVALID_FIELD', 'mandate must match ^[A-Za-z0-9._:-]{1,64}$', 'mandate');
  }

  const instruction: Instruction = { institution, id, type: type as InstructionType, payer, payee, amount, twoPhase };
  if (timeoutMs !== undefined) instruction.timeoutMs = timeoutMs;
  if (reference !== undefined) instruction.reference = reference;
  if (mandateRaw !== undefined) instruction.mandate = mandateRaw;
  return instruction;
}

export function isFailure(value: Instruction | Failure): value is Failure {
  return (value as Failure).code !== undefined;
}

/**
 * The content that decides "identical" versus "conflicting" for a
 * resubmission: every submitted field, with defaults applied.
 */
export function contentKey(i: {
  type: string;
  payer: string;
  payee: string;
  amount: number;
  twoPhase: boolean;
  timeoutMs?: number | undefined;
  reference?: string | undefined;
  mandate?: string | undefined;
}): string {
  return `${i.type}\u0001${i.payer}\u0001${i.payee}\u0001${i.amount}\u0001${i.twoPhase ? 1 : 0}\u0001${i.timeoutMs ?? ''}\u0001${i.reference ?? ''}\u0001${i.mandate ?? ''}`;
}

/** Keys and codes are echoed in messages; keep those messages short and printable. */
function printable(text: string): string {
  const cut = text.length > 40 ? `${text.slice(0, 40)}…` : text;
  return cut.replace(/[^\x20-\x7e]/g, '?');
}
