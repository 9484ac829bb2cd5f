/**
 * A clearing core on the simulator's ports with no faults, for focused
 * tests of one behaviour: start it, then run its clock until a condition
 * holds.
 */

import { Clearing, type ClearingConfig } from '../../src/clearing/clearing.js';
import { Prng } from './prng.js';
import { SimClock } from './sim-clock.js';
import { SimDisk, SimShards } from './sim-shards.js';
import { SimStore } from './sim-store.js';

const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

export const HARNESS_BANKS = ['BKA', 'BKB', 'BKC'] as const;

export interface Harness {
  clearing: Clearing;
  clock: SimClock;
  /** Run the simulated clock (and every promise it settles) until `until` holds. */
  run(until: () => boolean): Promise<void>;
}

export async function startHarness(overrides: Partial<ClearingConfig> = {}): Promise<Harness> {
  const prng = new Prng(7);
  const clock = new SimClock(Date.UTC(2026, 10, 27), prng);
  const disk = new SimDisk(2);
  const store = new SimStore(clock, prng);
  const shards = new SimShards(disk, 2, clock, prng, { commitFails: 0, reportLost: 0 });
  const run = async (until: () => boolean): Promise<void> => {
    for (let i = 0; i < 1_000_000 && !until(); i++) {
      await new Promise((r) => setImmediate(r));
      if (until()) return;
      clock.step();
    }
    if (!until()) throw new Error('the simulated clock ran out before the condition held');
  };
  let clearing: Clearing | undefined;
  void Clearing.start(
    {
      banks: HARNESS_BANKS.map((code) => ({ code })),
      shards: 2,
      maxAmountCents: 1_000_000,
      receiptQueryScheduleMs: [60_000, 120_000],
      snapshotRetention: 2,
      verifyOnStart: false,
      idFilterBits: 1 << 16,
      limits: { shardQueueMax: 10_000, shardTaskItemsMax: 500, shardTasksInflightMax: 2 },
      requireMandates: false,
      mandates: [],
      ...overrides,
    },
    { clock, transport: shards, lookup: { find: () => undefined, refresh: () => {} }, store, mandateStore: store, mandatePushes: { forwardMandates: () => {}, notify: () => {} }, log: quiet, pushes: { forward: () => {}, query: () => {}, notify: () => {}, listening: () => false }, onSnapshot: () => {} },
  ).then((c) => {
    clearing = c;
  });
  await run(() => clearing !== undefined);
  return { clearing: clearing!, clock, run };
}
