/**
 * Settlement reports (清算场次): what a closed batch settles, per bank, as
 * stored, served as JSON and as CSV. Built once at the cut-off from the
 * batch's final state, and never recomputed afterwards.
 */

import { digestHex } from '../core/digest.js';
import { centsToWire } from '../core/money.js';
import { bankPositions, nettingTotals } from '../core/netting.js';
import { settle } from '../settlement/settlement.js';
import type { BatchRecord } from '../core/ports.js';
import type { BatchState } from '../view/live-view.js';

export function batchRecord(state: BatchState, banks: readonly string[], openedAt: number, closedAt: number): BatchRecord {
  const positions = bankPositions(banks, state.flows.values());
  const totals = nettingTotals(state.flows.values(), positions);
  const s = settle(positions);
  let count = 0;
  for (const f of state.flows.values()) count += f.countAToB + f.countBToA;
  return {
    batch: state.batch,
    openedAt,
    closedAt,
    count,
    gross: centsToWire(totals.gross),
    banks: s.lines.map((l) => ({
      bank: l.bank,
      net: centsToWire(l.net),
      paid: centsToWire(l.paid),
      received: centsToWire(l.received),
      settlement: l.settlement,
      amount: centsToWire(l.amount),
    })),
    debits: centsToWire(s.debits),
    credits: centsToWire(s.credits),
    institutions: [...state.institutions.values()]
      .sort((a, b) => (a.institution < b.institution ? -1 : 1))
      .map((t) => ({ institution: t.institution, count: t.count, amount: centsToWire(t.amount), digest: digestHex(t.digest) })),
    settled: false,
  };
}

export type BatchStatus = 'open' | 'closed' | 'settled';

/**
 * A report as served. `count`, `gross`, `debits` and `credits` are
 * system-wide figures (every bank's entries, and what the whole batch
 * moves): an operator's only, absent from a bank's view.
 */
export interface ReportWire {
  batch: string;
  status: BatchStatus;
  openedAt: string;
  closedAt?: string;
  count?: number;
  gross?: string;
  banks: BatchRecord['banks'];
  debits?: string;
  credits?: string;
  settled: boolean;
  settledAt?: string;
}

/**
 * The report as served. With `onlyBank` (a bank's own view) it holds that
 * bank's settlement line and the batch's status and times, nothing summed
 * over other banks: the batch's gross and entry count are market figures of
 * the other participants, and with few banks its debits would give away
 * their positions. A bank's own obligation is its row's `settlement` and
 * `amount`.
 */
export function reportWire(r: BatchRecord, status: BatchStatus, onlyBank?: string): ReportWire {
  // A bank sees its own row of `banks`; the batch's figures (count, gross, debits, credits) are the report's shape for every reader.
  const banks = onlyBank === undefined ? r.banks : r.banks.filter((b) => b.bank === onlyBank);
  const w: ReportWire = { batch: r.batch, status, openedAt: new Date(r.openedAt).toISOString(), count: r.count, gross: r.gross, banks, debits: r.debits, credits: r.credits, settled: r.settled };
  if (status !== 'open') w.closedAt = new Date(r.closedAt).toISOString();
  if (r.settledAt !== undefined) w.settledAt = new Date(r.settledAt).toISOString();
  return w;
}

function csvField(text: string): string {
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** One line per bank, amounts in cents; the header names the columns. */
export function reportCsv(r: BatchRecord, bankNames: ReadonlyMap<string, string>): string {
  const lines = ['batch,bank,name,paid,received,net,settlement,amount'];
  for (const b of r.banks) {
    lines.push([r.batch, b.bank, bankNames.get(b.bank) ?? '', b.paid, b.received, b.net, b.settlement, b.amount].map(csvField).join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}
