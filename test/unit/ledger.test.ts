/**
 * The shard ledger against a real LMDB environment in a temporary folder.
 * The router normally keeps stored ids away from the shards, so these tests
 * drive the ledger directly with ids it already holds: it must answer for
 * them without writing, and count nothing twice.
 */

import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { PairFlow } from '../../src/core/netting.js';
import { ShardLedger } from '../../src/shard/ledger.js';
import type { ApplyTask, ShardOp, SubmitOp } from '../../src/shard/tasks.js';
import { bucketIndexIds, openShardDbs, type ShardDbs } from '../../src/store/schema.js';
import { institutionIndexRecords } from '../../src/store/bucket-index.js';
import { tempDirs } from '../helpers/engine-process.js';

const BATCH = '20261122-001';
const opened: ShardDbs[] = [];
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

afterEach(async () => {
  for (const dbs of opened.splice(0)) await dbs.env.close();
});

function ledger(bytesMax = 1 << 30): { ledger: ShardLedger; dbs: ShardDbs } {
  const dbs = openShardDbs(dirs.make(), 64 * 1024 * 1024);
  opened.push(dbs);
  return { ledger: new ShardLedger(0, dbs, bytesMax), dbs };
}

function submit(id: string, amount: number, timeoutMs = 0): SubmitOp {
  return ['S', 'PI0001', id, 'agreement', 'ICBC', 'BOC', amount, null, timeoutMs, null];
}

/** Σ amounts in both directions of the one pair these tests use. */
function gross(flows: readonly PairFlow[]): bigint {
  expect(flows).toHaveLength(1);
  return flows[0]!.aToB + flows[0]!.bToA;
}

function task(ops: ShardOp[], now = 1_795_000_000_000, batch = BATCH): ApplyTask {
  return { kind: 'apply', shard: 0, batch, now, ops };
}

/** Every id the bucket index lists for PI0001 in a batch, over all 256 buckets, with its sign. */
function listed(dbs: ShardDbs, batch: string): Record<string, number> {
  const out: Record<string, number> = {};
  const records = [...institutionIndexRecords(dbs, batch, 'PI0001')];
  for (let n = 0; n < 256; n++) for (const [id, sign] of bucketIndexIds(records, n)) out[id] = sign;
  return out;
}

describe('ShardLedger.apply', () => {
  it('stores new ids once and answers stored ones with their status, flagging changed content', async () => {
    const { ledger: l, dbs } = ledger();
    const first = await l.apply(task([submit('a', 100), submit('b', 250), submit('p', 70, 30_000)]));
    expect(first.outcomes).toEqual([null, null, null]);
    expect(gross(first.delta.flows)).toBe(350n);

    const again = await l.apply(task([submit('a', 100), submit('b', 999), submit('p', 70, 30_000), submit('c', 5)], 1_795_000_100_000));
    expect(again.outcomes).toEqual([
      { status: 'cleared', batch: BATCH, conflict: false },
      { status: 'cleared', batch: BATCH, conflict: true },
      { status: 'pending', conflict: false },
      null,
    ]);
    // Only 'c' is new: the stored records are untouched and counted once.
    expect(gross(again.delta.flows)).toBe(5n);
    expect((dbs.ins.get('PI0001/b') as { a: number; at: number }).a).toBe(250);
    expect((dbs.ins.get('PI0001/a') as { a: number; at: number }).at).toBe(1_795_000_000_000);
    expect(gross(l.summary(BATCH).flows)).toBe(355n);
    expect(l.verify(BATCH).matches).toBe(true);
  });

  it('past its storage limit refuses new ids but still answers for stored ones', async () => {
    const { ledger: roomy, dbs } = ledger();
    await roomy.apply(task([submit('a', 100)]));
    const full = new ShardLedger(0, dbs, 1);
    const r = await full.apply(task([submit('a', 100), submit('z', 1)]));
    expect(r.outcomes).toEqual([{ status: 'cleared', batch: BATCH, conflict: false }, { status: 'missing', refused: 'STORAGE_FULL' }]);
    expect(dbs.ins.get('PI0001/z')).toBeUndefined();
    expect(r.delta.flows).toHaveLength(0);
  });

  it('lists each cleared id in its bucket once, a reversal in a later batch as negative, and one in the same batch not at all', async () => {
    const { ledger: l, dbs } = ledger();
    const later = '20261122-002';
    await l.apply(task([submit('a', 100), submit('b', 200)]));
    await l.apply(task([submit('c', 300), ['R', 'PI0001', 'a', null]], 1_795_000_000_001));
    expect(listed(dbs, BATCH)).toEqual({ b: 1, c: 1 });
    await l.apply(task([['R', 'PI0001', 'b', null]], 1_795_000_000_002, later));
    expect(listed(dbs, BATCH)).toEqual({ b: 1, c: 1 });
    expect(listed(dbs, later)).toEqual({ b: -1 });
    // A ledger opened afresh (as after a restart) at a time already used still gets a record of its own.
    await new ShardLedger(0, dbs, 1 << 30).apply(task([submit('d', 1)]));
    expect(listed(dbs, BATCH)).toEqual({ b: 1, c: 1, d: 1 });
  });
});
