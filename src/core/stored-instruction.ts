/**
 * An instruction as the ledger stores it, with short field names (every
 * byte is paid once per instruction), and the checks on a record read back.
 * Pure data: the LMDB layout that holds it is src/store/schema.ts.
 */

import { AssertionError } from './assert.js';
import { contentKey, INSTRUCTION_STATUSES, INSTRUCTION_TYPES } from './instruction.js';
import type { InstructionStatus, InstructionType } from './instruction.js';

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
}

export function storedContentKey(r: StoredInstruction): string {
  return contentKey({ type: r.t, payer: r.p, payee: r.q, amount: r.a, twoPhase: r.tp === 1, timeoutMs: r.to, reference: r.r });
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
  if (rec.s === 'cleared' && typeof rec.b !== 'string') return 'is cleared with no batch';
  if (rec.s === 'pending' && (rec.tp !== 1 || typeof rec.dl !== 'number')) return 'is pending with no deadline';
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
