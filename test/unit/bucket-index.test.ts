import { describe, expect, it } from 'vitest';
import { BUCKETS } from '../../src/store/batch-figures.js';
import {
  BucketIndex,
  bucketIndexIds,
  bucketIndexRange,
  bucketIndexValue,
  INDEX_PACING,
  institutionIndexRecords,
  taskIndexKey,
  type BucketIndexEntries,
  type IndexPacing,
} from '../../src/store/bucket-index.js';
import { rng as rand } from '../helpers/reference-model.js';
import { MemEnv, memShardDbs } from '../sim/mem-lmdb.js';

const BATCH = '20261127-001';

/** The ids the index lists for an institution, as '<bucket>|<id>' with their signs. */
function listed(dbs: ReturnType<typeof memShardDbs>, institution: string): Map<string, number> {
  const records = [...institutionIndexRecords(dbs, BATCH, institution)];
  const out = new Map<string, number>();
  for (let n = 0; n < BUCKETS; n++) for (const [id, sign] of bucketIndexIds(records, n)) out.set(`${n}|${id}`, sign);
  return out;
}

/** Tasks of new ids over `institutions`, `perTask` entries each, some of them reversals of earlier ids; the model is what the index must list. */
class Workload {
  private n = 0;
  readonly model = new Map<string, Map<string, number>>();
  private readonly cleared: [string, string, number][] = [];

  constructor(
    private readonly r: () => number,
    readonly institutions: string[],
  ) {}

  task(perTask: number, pick: () => string = () => this.institutions[Math.floor(this.r() * this.institutions.length)]!): Map<string, BucketIndexEntries> {
    const out = new Map<string, BucketIndexEntries>();
    for (let i = 0; i < perTask; i++) {
      const institution = pick();
      let id: string;
      let bucket: number;
      let sign: 1 | -1 = 1;
      const old = this.cleared.length > 0 && this.r() < 0.1 ? this.cleared.splice(Math.floor(this.r() * this.cleared.length), 1)[0] : undefined;
      if (old !== undefined && old[0] === institution) {
        [, id, bucket] = old;
        sign = -1;
      } else {
        id = `T-${this.n++}`;
        bucket = Math.floor(this.r() * BUCKETS);
        this.cleared.push([institution, id, bucket]);
      }
      const entries = out.get(institution) ?? [];
      entries.push(id, bucketIndexValue(bucket, sign));
      out.set(institution, entries);
      let m = this.model.get(institution);
      if (m === undefined) {
        m = new Map();
        this.model.set(institution, m);
      }
      const k = `${bucket}|${id}`;
      const net = (m.get(k) ?? 0) + sign;
      if (net === 0) m.delete(k);
      else m.set(k, net);
    }
    return out;
  }
}

async function indexAll(env: MemEnv, dbs: ReturnType<typeof memShardDbs>, index: BucketIndex, tasks: Map<string, BucketIndexEntries>[]): Promise<void> {
  for (const t of tasks) await env.childTransaction(() => index.append(dbs, t));
}

describe('the bucket index', () => {
  it('lists every institution’s ids as kept and as reloaded, with the task records bounded, at any pacing', async () => {
    const paces: IndexPacing[] = [INDEX_PACING, { flushPairs: 1, lagTasks: 1 }, { flushPairs: 5, lagTasks: 7 }, { flushPairs: 30, lagTasks: 100 }];
    for (const pacing of paces) {
      const env = new MemEnv();
      const dbs = memShardDbs(env);
      const w = new Workload(rand(pacing.flushPairs), Array.from({ length: 40 }, (_, i) => `PI${i}`));
      let index = BucketIndex.load(dbs, BATCH, pacing);
      for (let t = 0; t < 1500; t++) {
        const task = w.task(1 + (t % 30));
        await env.childTransaction(() => {
          expect(index.matches(dbs)).toBe(true);
          index.append(dbs, task);
        });
        // Now and then the worker starts afresh: the disk alone must give the same index.
        if (t % 97 === 0) {
          const loaded = BucketIndex.load(dbs, BATCH, pacing);
          expect([loaded.seq, loaded.taskRecords, loaded.waitingPairs]).toEqual([index.seq, index.taskRecords, index.waitingPairs]);
          index = loaded;
        }
        expect(index.taskRecords).toBeLessThanOrEqual(pacing.lagTasks + 1);
      }
      expect(index.seq).toBe(1499);
      expect([...dbs.bkj.getKeys({ start: `${BATCH}|`, end: `${BATCH}|~` })].length).toBe(index.taskRecords);
      for (const institution of w.institutions) expect(listed(dbs, institution)).toEqual(w.model.get(institution) ?? new Map());
      // One bucket, as the drill-down reads it.
      const pi3 = bucketIndexIds(institutionIndexRecords(dbs, BATCH, 'PI3'), 17);
      expect(pi3).toEqual(new Map([...(w.model.get('PI3') ?? new Map<string, number>())].filter(([k]) => k.startsWith('17|')).map(([k, s]) => [k.slice(3), s])));
    }
  });

  it('writes one record for a task of many institutions’ small shares, not one per institution', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const institutions = Array.from({ length: 100 }, (_, i) => `PI${i}`);
    const w = new Workload(rand(5), institutions);
    const index = BucketIndex.load(dbs, BATCH);
    let next = 0;
    // Tasks of 20 single instructions from 20 institutions in turn, as the HTTP clients send them.
    const tasks = Array.from({ length: 500 }, () => w.task(20, () => institutions[next++ % institutions.length]!));
    await indexAll(env, dbs, index, tasks);
    const institutionRecords = [...dbs.bkt.getKeys({ start: `${BATCH}|`, end: `${BATCH}|~` })].length;
    // One record per institution and task would be 10,000; each institution's 100 entries fill one record of 64 and wait with the rest.
    expect(institutionRecords).toBe(100);
    expect(index.taskRecords).toBeLessThan(250);
    for (const institution of institutions) expect(listed(dbs, institution)).toEqual(w.model.get(institution));
  });

  it('sends a large share to the institution’s own record at once, and leaves it out of the task record', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const w = new Workload(rand(9), ['PI1', 'PI2']);
    const index = BucketIndex.load(dbs, BATCH);
    const big = w.task(200, () => 'PI1');
    await indexAll(env, dbs, index, [big]);
    expect([...dbs.bkt.getKeys(bucketIndexRange(BATCH, 'PI1'))]).toEqual([`${BATCH}|PI1|j000000000000`]);
    expect(dbs.bkj.get(taskIndexKey(BATCH, 0))).toEqual([]);
    expect(listed(dbs, 'PI1')).toEqual(w.model.get('PI1'));
  });

  it('reads the records a layout-3 engine wrote (one per institution and task) beside the new ones', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    await env.childTransaction(() => {
      dbs.bkt.put(`${BATCH}|PI1|001795000000000.000000000`, ['A-1', bucketIndexValue(4, 1), 'A-2', bucketIndexValue(9, 1)]);
      dbs.bkt.put(`${BATCH}|PI1|001795000000001.000000001`, ['A-3', bucketIndexValue(4, 1)]);
    });
    const index = BucketIndex.load(dbs, BATCH);
    expect(index.seq).toBe(-1);
    await indexAll(env, dbs, index, [new Map([['PI1', ['A-4', bucketIndexValue(4, 1), 'A-1', bucketIndexValue(4, -1)]]])]);
    expect(bucketIndexIds(institutionIndexRecords(dbs, BATCH, 'PI1'), 4)).toEqual(new Map([['A-3', 1], ['A-4', 1]]));
    expect(bucketIndexIds(institutionIndexRecords(dbs, BATCH, 'PI1'), 9)).toEqual(new Map([['A-2', 1]]));
  });

  it('tells a lost commit: an index kept past a failed commit no longer matches, and a reload is the disk', async () => {
    const env = new MemEnv();
    const dbs = memShardDbs(env);
    const w = new Workload(rand(13), ['PI1', 'PI2', 'PI3']);
    const pacing = { flushPairs: 6, lagTasks: 10 };
    const index = BucketIndex.load(dbs, BATCH, pacing);
    await indexAll(env, dbs, index, Array.from({ length: 50 }, () => w.task(3)));
    const model = new Map([...w.model].map(([k, m]) => [k, new Map(m)]));
    env.failNextCommit = true;
    const lost = w.task(20);
    await expect(env.childTransaction(() => index.append(dbs, lost))).rejects.toThrow(/commit failure/);
    await env.childTransaction(() => expect(index.matches(dbs)).toBe(false));
    const reloaded = BucketIndex.load(dbs, BATCH, pacing);
    expect(reloaded.seq).toBe(49);
    for (const institution of ['PI1', 'PI2', 'PI3']) expect(listed(dbs, institution)).toEqual(model.get(institution) ?? new Map());
  });
});
