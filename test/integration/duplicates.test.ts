/**
 * Duplicate acceptance (受理重复) across shards: identical resubmissions
 * answer the stored state with duplicate: true; the same id with other
 * content is DUPLICATE_CONFLICT even when its bank pair lives on another
 * shard, and even when both copies are in flight at once.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOfPair } from '../../src/core/shard-map.js';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { ReferenceModel, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const SHARDS = 4;
let engine: RunningEngine;
let cleanup: () => void;
const model = new ReferenceModel(BANKS);

/** Two bank pairs that live on different shards. */
function pairsOnDifferentShards(): [[string, string], [string, string]] {
  const pairs: [string, string][] = [];
  for (const a of BANKS) for (const b of BANKS) if (a < b) pairs.push([a, b]);
  const first = pairs[0]!;
  const other = pairs.find((p) => shardOfPair(p[0], p[1], SHARDS) !== shardOfPair(first[0], first[1], SHARDS));
  if (other === undefined) throw new Error('every pair on one shard');
  return [first, other];
}

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  // The smallest id filter: it saturates at once and answers "maybe" for every id, so each look-up goes to
  // LMDB. The other suites run with the default filter, whose "certainly new" answers skip LMDB.
  engine = await startEngine(t.dir, testConfig(t.dir, { shards: SHARDS, limits: { idFilterBytes: 128 } }));
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

async function expectModel(): Promise<void> {
  const r = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
  expect(rowsOf(r.body)).toEqual(model.rows());
}

const [[p1, q1], [p2, q2]] = pairsOnDifferentShards();

describe('duplicates', () => {
  it('answers an identical resubmission with the stored state and duplicate: true, over HTTP and WebSocket', async () => {
    const ins: RefInstruction = { id: 'D-1', type: 'payout', payer: p1, payee: q1, amount: 777, reference: 'first' };
    const first = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: ins });
    expect(first.body).toMatchObject({ id: 'D-1', status: 'cleared' });
    expect(first.body.duplicate).toBeUndefined();
    model.clear(ins);
    const again = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: ins, enc: 'msgpack' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ id: 'D-1', status: 'cleared', batch: first.body.batch, duplicate: true });
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    const ack = await c.submit([ins]);
    expect(ack.results![0]).toEqual({ id: 'D-1', status: 'cleared', batch: first.body.batch, duplicate: true });
    c.close();
    await expectModel();
  });

  it('keeps ids per institution: another institution may use the same id', async () => {
    const ins: RefInstruction = { id: 'D-1', type: 'payout', payer: p2, payee: q2, amount: 5 };
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: ins });
    expect(r.body).toMatchObject({ id: 'D-1', status: 'cleared' });
    expect(r.body.duplicate).toBeUndefined();
    model.clear(ins);
    await expectModel();
  });

  it('refuses the same id with any field different, including a bank pair on another shard', async () => {
    const base: RefInstruction = { id: 'D-2', type: 'gateway', payer: p1, payee: q1, amount: 1000 };
    expect((await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: base })).body.status).toBe('cleared');
    model.clear(base);
    expect(shardOfPair(p1, q1, SHARDS)).not.toBe(shardOfPair(p2, q2, SHARDS));
    const variants: Record<string, unknown>[] = [
      { ...base, payer: p2, payee: q2 },
      { ...base, payer: q1, payee: p1 },
      { ...base, amount: 1001 },
      { ...base, type: 'payout' },
      { ...base, reference: 'now with a reference' },
    ];
    for (const v of variants) {
      const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: v });
      expect(r.status).toBe(409);
      expect(r.body).toMatchObject({ id: 'D-2', status: 'rejected', code: 'DUPLICATE_CONFLICT' });
    }
    const stored = await http(engine.base, 'GET', '/v1/instructions/PI0001/D-2', { token: TOKENS.PI0001 });
    expect(stored.body).toMatchObject({ payer: p1, payee: q1, amount: 1000, type: 'gateway' });
    expect(stored.body.reference).toBeUndefined();
    await expectModel();
  });

  it('catches conflicting copies in flight at once, in one frame and across connections and shards', async () => {
    // In one frame: the second copy is refused while the first is at its shard.
    const c1 = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    const c2 = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    const a: RefInstruction = { id: 'F-1', type: 'payout', payer: p1, payee: q1, amount: 10 };
    const b: RefInstruction = { id: 'F-1', type: 'payout', payer: p2, payee: q2, amount: 10 };
    const ack = await c1.submit([a, b]);
    expect(ack.results![0]).toMatchObject({ id: 'F-1', status: 'cleared' });
    expect(ack.results![1]).toMatchObject({ id: 'F-1', status: 'rejected', code: 'DUPLICATE_CONFLICT' });
    model.clear(a);

    // Across connections: many races, each with two conflicting copies on different shards.
    const races = 200;
    const left: RefInstruction[] = [];
    const right: RefInstruction[] = [];
    for (let i = 0; i < races; i++) {
      left.push({ id: `R-${i}`, type: 'agreement', payer: p1, payee: q1, amount: 100 + i });
      right.push({ id: `R-${i}`, type: 'agreement', payer: p2, payee: q2, amount: 100 + i });
    }
    const [ackL, ackR] = await Promise.all([c1.submit(left), c2.submit(right)]);
    for (let i = 0; i < races; i++) {
      const l = ackL.results![i];
      const r = ackR.results![i];
      const winners = [l, r].filter((x) => x.status === 'cleared');
      const losers = [l, r].filter((x) => x.code === 'DUPLICATE_CONFLICT');
      expect(winners, `race ${i}`).toHaveLength(1);
      expect(losers, `race ${i}`).toHaveLength(1);
      model.clear(l.status === 'cleared' ? left[i]! : right[i]!);
      const stored = await http(engine.base, 'GET', `/v1/instructions/PI0001/R-${i}`, { token: TOKENS.PI0001 });
      expect(stored.body.payer).toBe(l.status === 'cleared' ? p1 : p2);
    }
    c1.close();
    c2.close();
    await expectModel();
  });

  it('books identical copies in flight at once exactly once', async () => {
    const c1 = await StreamClient.connect(engine.base, TOKENS.PI0002, 'msgpack');
    const c2 = await StreamClient.connect(engine.base, TOKENS.PI0002, 'msgpack');
    const list: RefInstruction[] = Array.from({ length: 300 }, (_, i) => ({ id: `S-${i}`, type: 'entrusted', payer: p2, payee: q2, amount: 1 + i }));
    const [x, y] = await Promise.all([c1.submit(list), c2.submit(list)]);
    for (let i = 0; i < list.length; i++) {
      const pair = [x.results![i], y.results![i]];
      expect(pair.every((r) => r.status === 'cleared')).toBe(true);
      expect(pair.filter((r) => r.duplicate === true)).toHaveLength(1);
      model.clear(list[i]!);
    }
    c1.close();
    c2.close();
    await expectModel();
    const audit = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
    expect(audit.body.ok).toBe(true);
  });
});
