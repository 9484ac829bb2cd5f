/**
 * Storage limits: a shard at its limit refuses new instructions with
 * STORAGE_FULL, stores nothing for them, corrupts nothing, lets stored
 * instructions finish their lifecycle, and says so in logs and metrics.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS } from '../helpers/engine-process.js';
import { ReferenceModel, rng, randomInstruction, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

describe('a shard at its storage limit', () => {
  it('refuses new instructions with STORAGE_FULL and nothing else changes', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const config = testConfig(t.dir, { shards: 1, workers: 1, limits: { shardBytesMax: 1024 * 1024 }, receiptQueryScheduleMs: [] });
    let engine = await startEngine(t.dir, config);
    // A two-phase instruction stored before the limit is reached.
    const tp = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'SL-2p', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 77, twoPhase: true } });
    expect(tp.body.status).toBe('pending');
    const client = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    const rand = rng(12);
    const model = new ReferenceModel(BANKS);
    const refused: RefInstruction[] = [];
    let n = 0;
    // Bounded: at most 40 frames of 500 (about 8 MB of records against a 1 MiB limit).
    for (let f = 0; f < 40 && refused.length === 0; f++) {
      const list = Array.from({ length: 500 }, () => ({ ...randomInstruction(rand, BANKS, `SL-${n++}`), reference: 'r'.repeat(140) }));
      const ack = await client.submit(list);
      ack.results!.forEach((r, i) => {
        if (r.status === 'cleared') model.clear(list[i]!);
        else {
          expect(r).toMatchObject({ status: 'rejected', code: 'STORAGE_FULL' });
          refused.push(list[i]!);
        }
      });
    }
    expect(refused.length).toBeGreaterThan(0);
    // Over HTTP the code travels with 507; the refused ids were not stored.
    const one = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'SL-http', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 1 } });
    expect(one.status).toBe(507);
    expect(one.body.code).toBe('STORAGE_FULL');
    for (const r of refused.slice(0, 5)) expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/${r.id}`, { token: TOKENS.ops })).status).toBe(404);
    // What was stored is intact and complete.
    expect(rowsOf((await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body)).toEqual(model.rows());
    expect((await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops })).body.ok).toBe(true);
    // A stored two-phase instruction can still be confirmed.
    const receipt = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'SL-2p', outcome: 'confirm' } });
    expect(receipt.body.status).toBe('cleared');
    model.clear({ id: 'SL-2p', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 77 });
    // The operator sees it.
    expect(engine.output()).toMatch(/storage limit/);
    const metrics = await (await fetch(`${engine.base}/metrics`, { headers: { authorization: `Bearer ${TOKENS.ops}` } })).text();
    expect(metrics).toMatch(/netting_rejections_total\{code="STORAGE_FULL"\} [1-9]/);
    const used = /netting_storage_used_bytes\{shard="0"\} (\d+)/.exec(metrics);
    expect(Number(used?.[1])).toBeGreaterThanOrEqual(1024 * 1024);
    client.close();
    // And it all survives a restart.
    await engine.kill9();
    engine = await startEngine(t.dir, config);
    expect(rowsOf((await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body)).toEqual(model.rows());
    expect(await engine.stop()).toBe(0);
  });
});
