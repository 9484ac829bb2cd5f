/**
 * Debit caps under concurrency across shards, and reversals (差错处理):
 * a bank hammered from many connections over pairs on every shard never
 * passes its cap; reversals net a correcting entry in the open batch, keep
 * conservation, subtract their digest, and happen once.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { shardOfPair } from '../../src/core/shard-map.js';
import { http, StreamClient } from '../helpers/clients.js';
import { hex16, referenceDigest } from '../helpers/digest-reference.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS } from '../helpers/engine-process.js';
import { ReferenceModel, rng, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

const CAP = 5_000_000;
const CAPPED = 'ABC';

describe('debit caps', () => {
  it('hold exactly when one bank is hammered from many connections across all shards', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const shards = 4;
    const banks = BANKS.map((code) => (code === CAPPED ? { code, name: 'capped', debitCapCents: CAP } : { code, name: code }));
    // ABC's pairs land on all four shards, so the cap is decided across every one of them.
    const engine = await startEngine(t.dir, testConfig(t.dir, { shards, banks, snapshotIntervalMs: 100, receiptQueryScheduleMs: [] }));
    const payees = BANKS.filter((b) => b !== CAPPED);
    expect(new Set(payees.map((p) => shardOfPair(CAPPED, p, shards))).size).toBe(shards);

    const watcher = await StreamClient.connect(engine.base, TOKENS.ops, 'msgpack');
    await watcher.request({ op: 'subscribe', topics: ['snapshots'] });
    const clients = await Promise.all(Array.from({ length: 8 }, (_, i) => StreamClient.connect(engine.base, i % 2 === 0 ? TOKENS.PI0001 : TOKENS.PI0002, i % 3 === 0 ? 'json' : 'msgpack')));
    const rand = rng(8);
    const model = new ReferenceModel(BANKS);
    let pendingSum = 0n;
    let refusedByCap = 0;
    let n = 0;
    const frames = clients.map(async (c, ci) => {
      for (let f = 0; f < 12; f++) {
        const list: RefInstruction[] & { twoPhase?: boolean }[] = [];
        for (let i = 0; i < 40; i++) {
          const payee = payees[Math.floor(rand() * payees.length)]!;
          const item: any = { id: `CAP-${ci}-${n++}`, type: 'payout', payer: CAPPED, payee, amount: 1000 + Math.floor(rand() * 20_000) };
          if (rand() < 0.3) item.twoPhase = true;
          list.push(item);
        }
        const ack = await c.submit(list);
        ack.results!.forEach((r, i) => {
          const item = list[i] as any;
          if (r.status === 'cleared') model.clear(item);
          else if (r.status === 'pending') pendingSum += BigInt(item.amount);
          else {
            expect(r.code).toBe('DEBIT_CAP_EXCEEDED');
            refusedByCap++;
          }
        });
      }
    });
    await Promise.all(frames);
    await new Promise((r) => setTimeout(r, 250));
    for (const c of clients) c.close();

    // The cap was binding, and held: net debit plus reservations is within it, and close to it.
    expect(refusedByCap).toBeGreaterThan(0);
    const exposure = -model.net(CAPPED) + pendingSum;
    expect(exposure).toBeLessThanOrEqual(BigInt(CAP));
    expect(exposure).toBeGreaterThan(BigInt(CAP - 21_000));
    const row = (await http(engine.base, 'GET', `/v1/positions/${CAPPED}`, { token: TOKENS.ops })).body;
    expect(BigInt(row.paid) - BigInt(row.received) + BigInt(row.pendingDebit)).toBe(exposure);
    expect(row.pendingDebit).toBe(pendingSum.toString());
    const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(rowsOf(positions)).toEqual(model.rows());
    // No snapshot ever saw the bank past its cap.
    const snaps = watcher.unmatched.filter((m) => m.op === 'snapshot');
    expect(snaps.length).toBeGreaterThan(3);
    for (const s of snaps) {
      const r = (s['banks'] as any[]).find((b) => b.bank === CAPPED);
      expect(BigInt(r.paid) - BigInt(r.received) + BigInt(r.pendingDebit)).toBeLessThanOrEqual(BigInt(CAP));
    }
    // A credit makes room again: CMB pays the capped bank, which may then pay about that much more.
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'room', type: 'payout', payer: 'CMB', payee: CAPPED, amount: 100_000 } });
    const more = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'more', type: 'payout', payer: CAPPED, payee: 'ICBC', amount: 90_000 } });
    expect(more.body.status).toBe('cleared');
    const over = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'over', type: 'payout', payer: CAPPED, payee: 'ICBC', amount: 100_000 } });
    expect(over.status).toBe(422);
    expect(over.body.code).toBe('DEBIT_CAP_EXCEEDED');
    // A rejected id was not stored and can be used again.
    expect((await http(engine.base, 'GET', '/v1/instructions/PI0001/over', { token: TOKENS.ops })).status).toBe(404);
    watcher.close();
    expect(await engine.stop()).toBe(0);
  });

  it("are the contract's paid − received + pendingDebit + amount for two-phase instructions too, and carry pending debits over a cut-off", async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const banks = BANKS.map((code) => (code === CAPPED ? { code, name: 'capped', debitCapCents: 5000 } : { code, name: code }));
    const engine = await startEngine(t.dir, testConfig(t.dir, { banks, receiptQueryScheduleMs: [] }));
    const post = (body: unknown): Promise<{ status: number; body: any }> => http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body });
    // ABC receives 10,000: paid − received = -10,000.
    expect((await post({ id: 'CR-1', type: 'gateway', payer: 'CMB', payee: CAPPED, amount: 10_000 })).body.status).toBe('cleared');
    // A two-phase debit of 6,000, past the cap on its own: -10,000 + 0 + 6,000 = -4,000, within 5,000.
    expect((await post({ id: 'TP-1', type: 'gateway', payer: CAPPED, payee: 'CMB', amount: 6000, twoPhase: true })).body.status).toBe('pending');
    // Now -10,000 + 6,000 + 9,000 = 5,000: at the cap, allowed; one cent more is not.
    expect((await post({ id: 'TP-2', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 9001, twoPhase: true })).body).toMatchObject({ status: 'rejected', code: 'DEBIT_CAP_EXCEEDED' });
    expect((await post({ id: 'SP-1', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 9000 })).body.status).toBe('cleared');
    expect((await http(engine.base, 'GET', `/v1/positions/${CAPPED}`, { token: TOKENS.ops })).body).toMatchObject({ paid: '9000', received: '10000', pendingDebit: '6000' });
    // After a cut-off the 6,000 pending are carried without the credits: over the cap by 1,000, so no new debit, single- or two-phase.
    expect((await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).status).toBe(200);
    expect((await post({ id: 'SP-2', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 1 })).body).toMatchObject({ status: 'rejected', code: 'DEBIT_CAP_EXCEEDED' });
    expect((await post({ id: 'TP-3', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 1, twoPhase: true })).body).toMatchObject({ status: 'rejected', code: 'DEBIT_CAP_EXCEEDED' });
    // Credits of 2,000 make room again: 0 − 2,000 + 6,000 + 1,000 = 5,000.
    expect((await post({ id: 'CR-2', type: 'gateway', payer: 'CMB', payee: CAPPED, amount: 2000 })).body.status).toBe('cleared');
    expect((await post({ id: 'SP-3', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 1000 })).body.status).toBe('cleared');
    expect((await post({ id: 'SP-4', type: 'gateway', payer: CAPPED, payee: 'BOC', amount: 1 })).body).toMatchObject({ status: 'rejected', code: 'DEBIT_CAP_EXCEEDED' });
    expect(await engine.stop()).toBe(0);
  });
});

describe('reversals', () => {
  it('net a correcting entry in the open batch, keep conservation and digests, and happen once', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    const model = new ReferenceModel(BANKS);
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const list: RefInstruction[] = [
      { id: 'V-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 1000 },
      { id: 'V-2', type: 'payout', payer: 'ABC', payee: 'BOC', amount: 700 },
      { id: 'V-3', type: 'payout', payer: 'CMB', payee: 'ABC', amount: 300 },
    ];
    const first = (await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: list } })).body.results[0].batch;
    list.forEach((i) => model.clear(i));

    // Reversed in the same batch: a correcting entry CMB → ICBC.
    const r1 = await http(engine.base, 'POST', '/v1/instructions/PI0001/V-1/reverse', { token: TOKENS.ops });
    expect(r1.status).toBe(200);
    expect(r1.body).toMatchObject({ id: 'V-1', status: 'reversed', batch: first, reversalBatch: first });
    model.clear({ id: 'V-1/rev', type: 'payout', payer: 'CMB', payee: 'ICBC', amount: 1000 });
    await new Promise((r) => setTimeout(r, 100));
    const notify = inst.unmatched.find((m) => m.op === 'notify' && m['status'] === 'reversed');
    expect(inst.unmatched.filter((m) => m['status'] === 'cleared').map((m) => m['id']).sort()).toEqual(['V-1', 'V-2', 'V-3']);
    expect(notify).toEqual({ op: 'notify', institution: 'PI0001', id: 'V-1', type: 'payout', status: 'reversed', batch: first });
    const again = await http(engine.base, 'POST', '/v1/instructions/PI0001/V-1/reverse', { token: TOKENS.ops });
    expect(again.status).toBe(200);
    expect(again.body.status).toBe('reversed');
    let p = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(rowsOf(p)).toEqual(model.rows());
    expect(p.banks.reduce((s: bigint, b: any) => s + BigInt(b.net), 0n)).toBe(0n);
    // The institution's records without V-1 reconcile: the reversal subtracted its hash.
    const own = referenceDigest('PI0001', list.slice(1));
    const rec = (await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0001, body: { batch: first, count: own.count, amount: own.amount.toString(), digest: hex16(own.digest) } })).body;
    expect(rec.match).toBe(true);

    // Reversed in a later batch: the correcting entry goes to the open batch, the closed report stays as it was.
    const closed = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    const r2 = await http(engine.base, 'POST', '/v1/instructions/PI0001/V-2/reverse', { token: TOKENS.ops });
    expect(r2.body).toMatchObject({ status: 'reversed', batch: first });
    expect(r2.body.reversalBatch > first).toBe(true);
    const open = new ReferenceModel(BANKS);
    open.clear({ id: 'V-2/rev', type: 'payout', payer: 'BOC', payee: 'ABC', amount: 700 });
    p = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(rowsOf(p)).toEqual(open.rows());
    expect((await http(engine.base, 'GET', `/v1/batches/${closed.batch}`, { token: TOKENS.ops })).body).toEqual(closed);
    // In the new batch, PI0001's figures are minus V-2; the bucket lists it as reversed.
    const rec2 = (await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0001, body: { batch: r2.body.reversalBatch, count: -1, amount: '-700', digest: hex16(-referenceDigest('PI0001', [list[1]!]).digest) } })).body;
    expect(rec2.match).toBe(true);
    const buckets = (await http(engine.base, 'GET', `/v1/reconciliation/${r2.body.reversalBatch}/buckets`, { token: TOKENS.PI0001 })).body.buckets;
    const hit = buckets.find((b: any) => b.count !== 0);
    const lines = (await http(engine.base, 'GET', `/v1/reconciliation/${r2.body.reversalBatch}/buckets/${hit.n}`, { token: TOKENS.PI0001 })).body.instructions;
    expect(lines).toEqual([{ id: 'V-2', payer: 'ABC', payee: 'BOC', amount: 700, status: 'reversed' }]);

    // Only a cleared instruction can be reversed; only operators reverse.
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'V-4', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 5, twoPhase: true } });
    const pend = await http(engine.base, 'POST', '/v1/instructions/PI0001/V-4/reverse', { token: TOKENS.ops });
    expect(pend.status).toBe(409);
    expect(pend.body.code).toBe('NOT_PENDING');
    expect((await http(engine.base, 'POST', '/v1/instructions/PI0001/V-3/reverse', { token: TOKENS.PI0001 })).status).toBe(403);
    expect((await http(engine.base, 'POST', '/v1/instructions/PI0001/none/reverse', { token: TOKENS.ops })).status).toBe(404);

    // The audit recomputes flows and digests, reversals included, from the instruction log.
    expect((await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops })).body.ok).toBe(true);
    inst.close();
    expect(await engine.stop()).toBe(0);
  });
});
