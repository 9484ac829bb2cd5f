/**
 * The shapes of what the engine answers, as plain objects that both
 * encodings (JSON and msgpack) carry unchanged.
 */

import type { BankPosition, CounterpartyPosition, NettingTotals } from '../core/netting.js';
import type { InstructionStatus } from '../core/instruction.js';
import { centsToWire } from '../core/money.js';
import { isOpen, stepOf, type Step, type StoredInstruction } from '../core/stored-instruction.js';
import type { ErrorCode, Failure } from './errors.js';

export interface InstructionResult {
  id?: string;
  status: InstructionStatus;
  batch?: string;
  duplicate?: true;
  code?: ErrorCode;
  message?: string;
  field?: string;
}

export function rejectedResult(id: string | undefined, f: Failure): InstructionResult {
  const r: InstructionResult = id !== undefined ? { id, status: 'rejected' } : { status: 'rejected' };
  r.code = f.code;
  r.message = f.message;
  if (f.field !== undefined) r.field = f.field;
  return r;
}

export function storedResult(id: string, status: InstructionStatus, batch: string | undefined, duplicate: boolean): InstructionResult {
  const r: InstructionResult = { id, status };
  if (batch !== undefined) r.batch = batch;
  if (duplicate) r.duplicate = true;
  return r;
}

/** The query route's view of a stored instruction (查询). */
export interface InstructionView {
  institution: string;
  id: string;
  type: string;
  payer: string;
  payee: string;
  amount: number;
  status: InstructionStatus;
  batch?: string;
  twoPhase: boolean;
  timeoutMs?: number;
  reference?: string;
  acceptedAt: string;
  clearedAt?: string;
  /** Two-phase: when the receipt is due. */
  deadline?: string;
  /** When it became declined, expired or reversed. */
  finalAt?: string;
  /** Batch in which a reversal was netted. */
  reversalBatch?: string;
  /** The payer bank's reason for a decline. */
  reason?: string;
  /** The mandate it was admitted under. */
  mandate?: string;
  /** Two-phase, while not final: the step it is at (verify, submission, receipt, payer, payee). */
  step?: Step;
  /** A payout declined or expired: the leg it ended on. */
  leg?: 'payer' | 'payee';
}

export function instructionView(institution: string, id: string, r: StoredInstruction): InstructionView {
  const v: InstructionView = { institution, id, type: r.t, payer: r.p, payee: r.q, amount: r.a, status: r.s, twoPhase: r.tp === 1, acceptedAt: new Date(r.at).toISOString() };
  if (r.b !== undefined) v.batch = r.b;
  if (r.to !== undefined) v.timeoutMs = r.to;
  if (r.r !== undefined) v.reference = r.r;
  if (r.ct !== undefined) v.clearedAt = new Date(r.ct).toISOString();
  if (r.dl !== undefined) v.deadline = new Date(r.dl).toISOString();
  if (r.ft !== undefined) v.finalAt = new Date(r.ft).toISOString();
  if (r.rb !== undefined) v.reversalBatch = r.rb;
  if (r.rs !== undefined) v.reason = r.rs;
  if (r.m !== undefined) v.mandate = r.m;
  if (isOpen(r)) v.step = stepOf(r);
  else if (r.t === 'payout' && (r.s === 'declined' || r.s === 'expired') && (r.st === 'payer' || r.st === 'payee')) v.leg = r.st;
  return v;
}

export interface BankRowWire {
  bank: string;
  net: string;
  paid: string;
  received: string;
  pendingDebit: string;
  count: number;
}

export function bankRowWire(p: BankPosition, pendingDebit: bigint): BankRowWire {
  return {
    bank: p.bank,
    net: centsToWire(p.net),
    paid: centsToWire(p.paid),
    received: centsToWire(p.received),
    pendingDebit: centsToWire(pendingDebit),
    count: p.count,
  };
}

export function totalsWire(t: NettingTotals): { gross: string; net: string } {
  return { gross: centsToWire(t.gross), net: centsToWire(t.net) };
}

export function counterpartyWire(c: CounterpartyPosition): { bank: string; net: string; paid: string; received: string } {
  return { bank: c.bank, net: centsToWire(c.net), paid: centsToWire(c.paid), received: centsToWire(c.received) };
}
