/**
 * High-frequency reconciliation (高频对账): digests computed independently
 * in the test match the engine's; a few dropped and altered records are
 * found exactly through the buckets; snapshots stream at the configured
 * rate, balance, and end equal to the positions route; all of it survives
 * a kill -9.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, StreamClient, type Ack } from '../helpers/clients.js';
import { hex16, lineHash, referenceDigest } from '../helpers/digest-reference.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { randomInstruction, rng, type RefInstruction } from '../helpers/reference-model.js';

let engine: RunningEngine;
let dir: string;
let cleanup: () => void;
let config: Record<string, unknown>;
const mine: RefInstruction[] = [];
let batch = '';

beforeAll(async () => {
  const t = tempDir();
  dir = t.dir;
  cleanup = t.cleanup;
  config = testConfig(t.dir, { snapshotIntervalMs: 100, snapshotRetention: 10 });
  engine = await startEngine(t.dir, config);
  const rand = rng(99);
  const list = Array.from({ length: 3000 }, (_, i) => randomInstruction(rand, BANKS, `RC-${i}`, 1_000_000_000_000));
  for (let k = 0; k < list.length; k += 1000) {
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: list.slice(k, k + 1000) }, enc: 'msgpack' });
    for (const x of r.body.results) expect(x.status).toBe('cleared');
    batch = r.body.results[0].batch;
  }
  mine.push(...list);
  // Another institution's traffic must not leak into PI0001's figures.
  await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: { id: 'RC-0', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 1 } });
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

async function reconcile(records: RefInstruction[], token: string = TOKENS.PI0001): Promise<any> {
  const d = referenceDigest('PI0001', records);
  return (await http(engine.base, 'POST', '/v1/reconciliation', { token, body: { batch, count: d.count, amount: d.amount.toString(), digest: hex16(d.digest) } })).body;
}

/** Find the records that differ, the way an institution would: buckets first, then lines of the differing buckets. */
async function findDifferences(records: RefInstruction[]): Promise<string[]> {
  const own = referenceDigest('PI0001', records);
  const platform = (await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets`, { token: TOKENS.PI0001 })).body;
  expect(platform.buckets).toHaveLength(256);
  const differing: string[] = [];
  for (const b of platform.buckets) {
    const o = own.buckets[b.n]!;
    if (o.count === b.count && o.amount.toString() === b.amount && hex16(o.digest) === b.digest) continue;
    const lines = (await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets/${b.n}`, { token: TOKENS.PI0001 })).body.instructions;
    const byId = new Map(records.map((r) => [r.id, r]));
    const seen = new Set<string>();
    for (const l of lines) {
      seen.add(l.id);
      const r = byId.get(l.id);
      if (r === undefined || lineHash('PI0001', r) !== lineHash('PI0001', l)) differing.push(l.id);
    }
    for (const id of o.ids) if (!seen.has(id)) differing.push(id);
  }
  return [...new Set(differing)].sort();
}

describe('digest reconciliation', () => {
  it('matches an independently computed digest of the institution’s records', async () => {
    const r = await reconcile(mine);
    expect(r.match).toBe(true);
    const own = referenceDigest('PI0001', mine);
    expect(r.platform).toEqual({ count: 3000, amount: own.amount.toString(), digest: hex16(own.digest) });
    expect(r.institution).toBe('PI0001');
  });

  it('reports a mismatch and narrows it to exactly the dropped and altered records', async () => {
    const rand = rng(3);
    const altered = new Set<string>();
    const dropped = new Set<string>();
    const records = mine.map((r) => ({ ...r }));
    while (dropped.size < 3) dropped.add(records[Math.floor(rand() * records.length)]!.id);
    while (altered.size < 4) {
      const r = records[Math.floor(rand() * records.length)]!;
      if (!dropped.has(r.id)) altered.add(r.id);
    }
    const mineView = records
      .filter((r) => !dropped.has(r.id))
      .map((r) => (altered.has(r.id) ? { ...r, amount: r.amount + 1 } : r));
    const r = await reconcile(mineView);
    expect(r.match).toBe(false);
    expect(await findDifferences(mineView)).toEqual([...dropped, ...altered].sort());
    // With the true records nothing differs.
    expect(await findDifferences(mine)).toEqual([]);
  });

  it('validates the request and scopes drill-down by role', async () => {
    const bad = [
      [{ batch: 'x', count: 1, amount: '1', digest: '0000000000000000' }, 'batch'],
      [{ batch, count: 1.5, amount: '1', digest: '0000000000000000' }, 'count'],
      [{ batch, count: 1, amount: '1.0', digest: '0000000000000000' }, 'amount'],
      [{ batch, count: 1, amount: '1', digest: 'xyz' }, 'digest'],
      [{ batch, count: 1, amount: '1', digest: '0000000000000000', extra: 1 }, 'extra'],
    ] as const;
    for (const [body, field] of bad) {
      const r = await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0001, body });
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ code: 'INVALID_FIELD', field });
    }
    expect((await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0001, body: { batch: '20000101-001', count: 0, amount: '0', digest: '0000000000000000' } })).status).toBe(404);
    expect((await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.ops, body: { batch, count: 0, amount: '0', digest: '0000000000000000' } })).status).toBe(403);
    // PI0002 sees only its own figures: its one instruction.
    const other = (await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0002, body: { batch, count: 0, amount: '0', digest: '0000000000000000' } })).body;
    expect(other.platform.count).toBe(1);
    // The operator names the institution; a bank may not drill down.
    const ops = await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets?institution=PI0001`, { token: TOKENS.ops });
    expect(ops.body.buckets.reduce((s: number, b: any) => s + b.count, 0)).toBe(3000);
    expect((await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets`, { token: TOKENS.ops })).status).toBe(400);
    expect((await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets`, { token: TOKENS.ICBC })).status).toBe(403);
    expect((await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets/256`, { token: TOKENS.PI0001 })).status).toBe(400);
    // A batch part that cannot be a batch id names no batch: 404, as an unknown one; a malformed bucket number stays 400.
    for (const bad of ['nope', 'abc', '0', '20000101-001']) {
      for (const path of [`/v1/reconciliation/${bad}/buckets`, `/v1/reconciliation/${bad}/buckets/3`, `/v1/reconciliation/${bad}/buckets?institution=PI0001`]) {
        const r = await http(engine.base, 'GET', path, { token: path.includes('?') ? TOKENS.ops : TOKENS.PI0001 });
        expect(r.status, path).toBe(404);
        expect(r.body.code, path).toBe('NOT_FOUND');
      }
    }
    expect((await http(engine.base, 'GET', `/v1/reconciliation/nope/buckets/x`, { token: TOKENS.PI0001 })).body).toMatchObject({ code: 'INVALID_FIELD', field: 'n' });
  });
});

describe('snapshots', () => {
  it('stream at the configured rate with consecutive seqs, each balanced, and end equal to the positions', async () => {
    const watcher = await StreamClient.connect(engine.base, TOKENS.ops, 'msgpack');
    expect(await watcher.request({ op: 'subscribe', topics: ['snapshots'] })).toMatchObject({ op: 'subscribed' });
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['snapshots'] });
    const rand = rng(11);
    const sender = await StreamClient.connect(engine.base, TOKENS.PI0002, 'msgpack');
    const started = Date.now();
    let n = 0;
    while (Date.now() - started < 1500) {
      const list = Array.from({ length: 100 }, () => randomInstruction(rand, BANKS, `SN-${n++}`));
      await sender.submit(list);
    }
    sender.close();
    const elapsed = Date.now() - started;
    await new Promise((r) => setTimeout(r, 350));
    const snaps: Ack[] = watcher.unmatched.filter((m) => m.op === 'snapshot');
    // At 100 ms, about one snapshot per 100 ms (timers may slip under load, never run ahead).
    expect(snaps.length).toBeGreaterThanOrEqual(Math.floor(elapsed / 100 / 2));
    expect(snaps.length).toBeLessThanOrEqual(Math.ceil((elapsed + 400) / 100) + 1);
    for (let i = 1; i < snaps.length; i++) {
      expect(snaps[i]!.seq).toBe(snaps[i - 1]!.seq! + 1);
      expect(Date.parse(snaps[i]!.takenAt as string)).toBeGreaterThanOrEqual(Date.parse(snaps[i - 1]!.takenAt as string));
    }
    for (const s of snaps) {
      const banks = s['banks'] as { net: string }[];
      expect(banks.reduce((sum, b) => sum + BigInt(b.net), 0n)).toBe(0n);
    }
    // Once the stream has stopped, the latest snapshot equals the positions route.
    const last = snaps.at(-1)!;
    const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(last['banks']).toEqual(positions.banks);
    expect(last['totals']).toEqual(positions.totals);
    expect(last['batch']).toBe(positions.batch);
    // The institution got its own row only, and no bank rows.
    const instSnap = inst.unmatched.filter((m) => m.op === 'snapshot').at(-1)!;
    expect(instSnap['banks']).toEqual([]);
    expect((instSnap['institutions'] as { institution: string }[]).map((i) => i.institution)).toEqual(['PI0001']);
    // The routes serve the same snapshots.
    const latest = (await http(engine.base, 'GET', '/v1/snapshots/latest', { token: TOKENS.ops })).body;
    expect(latest.seq).toBeGreaterThanOrEqual(last.seq!);
    const bySeq = (await http(engine.base, 'GET', `/v1/snapshots/${last.seq}`, { token: TOKENS.ops })).body;
    expect(bySeq.banks).toEqual(last['banks']);
    const asBank = (await http(engine.base, 'GET', `/v1/snapshots/${last.seq}`, { token: TOKENS.ICBC })).body;
    expect(asBank.banks.map((b: any) => b.bank)).toEqual(['ICBC']);
    expect((await http(engine.base, 'GET', '/v1/snapshots/1', { token: TOKENS.ops })).status).toBe(404); // past the retention of 10
    // A seq that cannot be one names no snapshot: 404, as one never taken.
    for (const bad of ['abc', '0', '-1', '1.5', '01', '99999999999999999999', '%ZZ']) {
      for (const token of [TOKENS.ops, TOKENS.PI0001]) {
        const r = await http(engine.base, 'GET', `/v1/snapshots/${bad}`, { token });
        expect(r.status, bad).toBe(404);
        expect(r.body.code, bad).toBe('NOT_FOUND');
      }
    }
    watcher.close();
    inst.close();
  });

  it('keeps digests, reports and snapshots across a kill -9', async () => {
    const latest = (await http(engine.base, 'GET', '/v1/snapshots/latest', { token: TOKENS.ops })).body;
    await engine.kill9();
    engine = await startEngine(dir, config);
    expect((await reconcile(mine)).match).toBe(true);
    const again = await http(engine.base, 'GET', `/v1/snapshots/${latest.seq}`, { token: TOKENS.ops });
    expect(again.body).toEqual(latest);
    const report = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    expect(report.batch).toBe(batch);
    // A closed batch reconciles from its recorded figures.
    expect((await reconcile(mine)).match).toBe(true);
    expect(await findDifferences(mine)).toEqual([]);
    const next = await http(engine.base, 'GET', '/v1/snapshots/latest', { token: TOKENS.ops });
    expect(next.body.seq).toBeGreaterThan(latest.seq);
  });
});
