/**
 * Bounded state in the core, on the simulator's ports: timers leave the
 * heap when their instruction becomes final, and the requests waiting on
 * one in-flight id are bounded.
 */

import { describe, expect, it } from 'vitest';
import { WAITERS_PER_ID_MAX } from '../../src/router/shard-router.js';
import type { InstructionResult } from '../../src/protocol/messages.js';
import { HARNESS_BANKS as banks, startHarness } from './harness.js';

describe('lifecycle timers', () => {
  it('stay bounded when instructions become final long before their deadlines', async () => {
    const { clearing: c, run } = await startHarness();
    let peak = 0;
    for (let round = 0; round < 20; round++) {
      let answered = 0;
      const items = Array.from({ length: 500 }, (_, i) => ({ id: `T-${round}-${i}`, type: 'gateway', payer: banks[i % 3]!, payee: banks[(i + 1) % 3]!, amount: 100, twoPhase: true, timeoutMs: 3_600_000 }));
      c.router.submit('PI01', items, () => answered++);
      await run(() => answered === 1);
      let receipted = 0;
      for (const bank of banks) {
        const mine = items.filter((i) => i.payer === bank).map((i) => ({ institution: 'PI01', id: i.id, outcome: 'confirm' }));
        c.lifecycle.receipts(bank, mine, () => receipted++);
      }
      await run(() => receipted === banks.length);
      peak = Math.max(peak, c.lifecycle.timerEvents);
    }
    expect(c.lifecycle.pendingCount).toBe(0);
    // 10,000 instructions armed 30,000 events in all; the heap never held more than a few thousand.
    expect(peak).toBeLessThan(4_000);
    expect(c.lifecycle.timerEvents).toBeLessThan(3_000);
    c.stop();
  });
});

describe('requests waiting on one in-flight id', () => {
  it('are bounded: past the bound they are answered OVERLOADED, and the rest get the outcome', async () => {
    const { clearing: c, run } = await startHarness();
    const item = { id: 'SAME-1', type: 'gateway', payer: 'BKA', payee: 'BKB', amount: 100 };
    const results: InstructionResult[] = [];
    const tries = WAITERS_PER_ID_MAX + 10;
    // All in one event turn: the first is in flight while the others arrive.
    for (let k = 0; k < tries; k++) c.router.submit('PI01', [item], ([r]) => results.push(r!));
    await run(() => results.length === tries);
    const cleared = results.filter((r) => r.status === 'cleared');
    expect(cleared.filter((r) => r.duplicate !== true)).toHaveLength(1);
    expect(cleared.filter((r) => r.duplicate === true)).toHaveLength(WAITERS_PER_ID_MAX);
    expect(results.filter((r) => r.code === 'OVERLOADED')).toHaveLength(tries - 1 - WAITERS_PER_ID_MAX);
    c.stop();
  });
});
