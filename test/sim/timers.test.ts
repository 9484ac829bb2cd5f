/**
 * Timers leave the heap when their instruction becomes final: a long run
 * of two-phase instructions that are confirmed at once leaves the timer
 * heap bounded, not growing with rate × timeout. Runs the real clearing
 * core on the simulator's ports, with no faults.
 */

import { describe, expect, it } from 'vitest';
import { Clearing } from '../../src/clearing/clearing.js';
import { Prng } from './prng.js';
import { SimClock } from './sim-clock.js';
import { SimDisk, SimShards } from './sim-shards.js';
import { SimStore } from './sim-store.js';

const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

async function runClock(clock: SimClock, until: () => boolean): Promise<void> {
  for (let i = 0; i < 1_000_000 && !until(); i++) {
    await new Promise((r) => setImmediate(r));
    if (until()) return;
    clock.step();
  }
}

describe('lifecycle timers', () => {
  it('stay bounded when instructions become final long before their deadlines', async () => {
    const prng = new Prng(7);
    const clock = new SimClock(Date.UTC(2026, 10, 27), prng);
    const disk = new SimDisk(2);
    const store = new SimStore(clock, prng);
    const shards = new SimShards(disk, 2, clock, prng, { commitFails: 0, reportLost: 0 });
    const banks = ['BKA', 'BKB', 'BKC'];
    let clearing: Clearing | undefined;
    void Clearing.start(
      { banks: banks.map((code) => ({ code })), shards: 2, maxAmountCents: 1_000_000, receiptQueryScheduleMs: [60_000, 120_000], snapshotRetention: 2, verifyOnStart: false, idFilterBits: 1 << 16, limits: { shardQueueMax: 10_000, shardTaskItemsMax: 500, shardTasksInflightMax: 2 } },
      { clock, transport: shards, lookup: { find: () => undefined, refresh: () => {} }, store, log: quiet, pushes: { forward: () => {}, query: () => {}, notify: () => {}, listening: () => false }, onSnapshot: () => {} },
    ).then((c) => {
      clearing = c;
    });
    await runClock(clock, () => clearing !== undefined);
    const c = clearing!;
    let peak = 0;
    for (let round = 0; round < 20; round++) {
      let answered = 0;
      const items = Array.from({ length: 500 }, (_, i) => ({ id: `T-${round}-${i}`, type: 'gateway', payer: banks[i % 3]!, payee: banks[(i + 1) % 3]!, amount: 100, twoPhase: true, timeoutMs: 3_600_000 }));
      c.router.submit('PI01', items, () => answered++);
      await runClock(clock, () => answered === 1);
      let receipted = 0;
      for (const bank of banks) {
        const mine = items.filter((i) => i.payer === bank).map((i) => ({ institution: 'PI01', id: i.id, outcome: 'confirm' }));
        c.lifecycle.receipts(bank, mine, () => receipted++);
      }
      await runClock(clock, () => receipted === banks.length);
      peak = Math.max(peak, c.lifecycle.timerEvents);
    }
    expect(c.lifecycle.pendingCount).toBe(0);
    // 10,000 instructions armed 30,000 events in all; the heap never held more than a few thousand.
    expect(peak).toBeLessThan(4_000);
    expect(c.lifecycle.timerEvents).toBeLessThan(3_000);
    c.stop();
  });
});
