/**
 * An instruction as the ledger stores it, with short field names (every
 * byte is paid once per instruction), and the checks on a record read back.
 * Pure data: the LMDB layout that holds it is src/store/schema.ts.
 */

import { AssertionError } from './assert.js';
import { contentKey, INSTRUCTION_STATUSES, INSTRUCTION_TYPES } from './instruction.js';
import type { InstructionStatus, InstructionType } from './instruction.js';

/**
 * The step a two-phase instruction is at (PROTOCOL.md, the five business
 * kinds): `receipt` for the payer bank's ordinary receipt; `verify` then
 * `submission` then `receipt` for an authenticated payment; `payer` then
 * `payee` for a payout's two legs.
 */
export const STEPS = ['verify', 'submission', 'receipt', 'payer', 'payee'] as const;
export type Step = (typeof STEPS)[number];

export interface StoredInstruction {
  /** type */
  t: InstructionType;
  /** payer */
  p: string;
  /** payee */
  q: string;
  /** amount in cents */
  a: number;
  /** status */
  s: InstructionStatus;
  /** batch the instruction is netted in (cleared, reversed) */
  b?: string;
  /** accepted at, ms since epoch */
  at: number;
  /** cleared at, ms since epoch */
  ct?: number;
  /** reference */
  r?: string;
  /** two-phase flag and timeout */
  tp?: 1;
  to?: number;
  /** receipt deadline, ms since epoch (two-phase) */
  dl?: number;
  /** when it became declined, expired or reversed */
  ft?: number;
  /** batch the reversal was netted in */
  rb?: string;
  /** the payer bank's reason for a decline */
  rs?: string;
  /** mandate the instruction was admitted under */
  m?: string;
  /** two-phase: the step it is at while not final (absent on records of the first layout: `receipt`), or the step it ended on */
  st?: Step;
  /** when the current step began (absent: at acceptance) */
  sa?: number;
  /** the payer's verification, from the payment submission of an authenticated payment */
  vf?: string;
}

/** The step a two-phase instruction of `type` begins at. */
export function firstStep(type: InstructionType): Step {
  return type === 'authenticated' ? 'verify' : type === 'payout' ? 'payer' : 'receipt';
}

/** The step of a stored two-phase instruction (records written before steps existed are at `receipt`). */
export function stepOf(r: StoredInstruction): Step {
  return r.st ?? 'receipt';
}

/** Whether a stored instruction awaits an answer (pending or awaiting its submission). */
export function isOpen(r: StoredInstruction): boolean {
  return r.s === 'pending' || r.s === 'awaiting-submission';
}

export function storedContentKey(r: StoredInstruction): string {
  return contentKey({ type: r.t, payer: r.p, payee: r.q, amount: r.a, twoPhase: r.tp === 1, timeoutMs: r.to, reference: r.r, mandate: r.m });
}

const TYPES: ReadonlySet<string> = new Set(INSTRUCTION_TYPES);
const STATUSES: ReadonlySet<string> = new Set(INSTRUCTION_STATUSES);

/** What is wrong with a stored record, or null when nothing is. */
function storedInstructionFault(rec: StoredInstruction): string | null {
  if (typeof rec !== 'object' || rec === null) return 'is not an object';
  if (!TYPES.has(rec.t)) return 'has bad type';
  if (typeof rec.p !== 'string' || typeof rec.q !== 'string' || rec.p === rec.q) return 'has bad banks';
  if (!Number.isSafeInteger(rec.a) || rec.a <= 0) return 'has bad amount';
  if (!STATUSES.has(rec.s) || rec.s === 'rejected') return 'has bad status';
  if (typeof rec.at !== 'number' || !Number.isFinite(rec.at)) return 'has no acceptance time';
  if (rec.s === 'cleared' && typeof rec.b !== 'string') return 'is cleared with no batch';
  if ((rec.s === 'pending' || rec.s === 'awaiting-submission') && (rec.tp !== 1 || typeof rec.dl !== 'number')) return 'is pending with no deadline';
  if (rec.s === 'awaiting-submission' && (rec.t !== 'authenticated' || rec.st !== 'submission')) return 'awaits a submission out of its step';
  if (rec.s === 'reversed' && (typeof rec.b !== 'string' || typeof rec.rb !== 'string')) return 'is reversed and lacks its batches';
  return null;
}

/**
 * Check a record read back from disk: the pair to the validation before
 * the write. The message is built only on failure, as audits run this over
 * every stored record.
 */
export function checkStoredInstruction(r: unknown, key: string): StoredInstruction {
  const rec = r as StoredInstruction;
  const fault = storedInstructionFault(rec);
  if (fault !== null) throw new AssertionError(`record ${key} ${fault}`);
  return rec;
}

/**
 * The lifecycle operations a shard applies to a stored instruction:
 * - `C` confirm: the final confirmation (cleared, netted);
 * - `D` decline, `X` expire: final, never netted;
 * - `V` verified: an authenticated payment's payer bank has sent the payer a code (now awaiting the submission);
 * - `U` submission: the institution's payment submission, with the verification;
 * - `P` payer leg confirmed: a payout goes on to its payee bank;
 * - `R` reverse a cleared instruction.
 */
export type LifecycleKind = 'C' | 'D' | 'X' | 'V' | 'U' | 'P' | 'R';

/**
 * Whether a lifecycle operation applies to a stored instruction: the
 * state it needs (the status, and the step of a two-phase flow). An
 * operation that does not apply changes nothing.
 */
export function lifecycleApplies(kind: LifecycleKind, rec: StoredInstruction, decidedAt?: Step): boolean {
  if (decidedAt !== undefined && isOpen(rec) && stepOf(rec) !== decidedAt) return false;
  switch (kind) {
    case 'R':
      return rec.s === 'cleared';
    case 'C': {
      const step = stepOf(rec);
      return rec.s === 'pending' && (step === 'receipt' || step === 'verify' || step === 'payee');
    }
    case 'D':
    case 'X':
      return isOpen(rec);
    case 'V':
      return rec.s === 'pending' && stepOf(rec) === 'verify';
    case 'U':
      return rec.s === 'awaiting-submission';
    case 'P':
      return rec.s === 'pending' && stepOf(rec) === 'payer';
  }
}

/**
 * Whether a stored instruction shows a lifecycle operation done: read
 * after a failed task, while the operation's in-flight entry kept every
 * other change of this instruction out, so the record is either as the
 * operation found it or as it left it.
 */
export function lifecycleLanded(kind: LifecycleKind, text: string | null, rec: StoredInstruction): boolean {
  switch (kind) {
    case 'C':
      return rec.s === 'cleared';
    case 'D':
      return rec.s === 'declined';
    case 'X':
      return rec.s === 'expired';
    case 'R':
      return rec.s === 'reversed';
    case 'V':
      return rec.s === 'awaiting-submission';
    case 'U':
      return rec.s === 'pending' && rec.st === 'receipt' && rec.vf === text;
    case 'P':
      return rec.s === 'pending' && rec.st === 'payee';
  }
}
