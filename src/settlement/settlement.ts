/**
 * Settlement (资金划拨): turning a closed batch's net positions into the
 * transfers on the banks' central-bank accounts. A payable bank is debited
 * its net, a receivable bank credited; debits equal credits (law 2).
 */

import { assert } from '../core/assert.js';
import type { BankPosition } from '../core/netting.js';

export type SettlementDirection = 'debit' | 'credit' | 'none';

export interface SettlementLine {
  bank: string;
  net: bigint;
  paid: bigint;
  received: bigint;
  settlement: SettlementDirection;
  /** What moves on the bank's central-bank account: |net|. */
  amount: bigint;
}

export interface Settlement {
  lines: SettlementLine[];
  debits: bigint;
  credits: bigint;
}

export function settle(positions: readonly BankPosition[]): Settlement {
  let debits = 0n;
  let credits = 0n;
  const lines = positions.map((p): SettlementLine => {
    if (p.net < 0n) {
      debits += -p.net;
      return { bank: p.bank, net: p.net, paid: p.paid, received: p.received, settlement: 'debit', amount: -p.net };
    }
    if (p.net > 0n) {
      credits += p.net;
      return { bank: p.bank, net: p.net, paid: p.paid, received: p.received, settlement: 'credit', amount: p.net };
    }
    return { bank: p.bank, net: 0n, paid: p.paid, received: p.received, settlement: 'none', amount: 0n };
  });
  assert(debits === credits, `settlement unbalanced: debits ${debits} ≠ credits ${credits}`);
  return { lines, debits, credits };
}
