/**
 * Settlement batches (清算场次): cut-offs while a stream is running
 * partition the cleared instructions exactly (law 5), every report's debits
 * equal its credits (law 2), and reports survive a kill -9.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { randomInstruction, ReferenceModel, rng, type RefInstruction } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

interface Acked {
  ins: RefInstruction;
  batch: string;
}

async function streamWithCutoffs(engine: RunningEngine, frames: number, cutEvery: number): Promise<{ acked: Acked[]; reports: any[] }> {
  const rand = rng(5);
  const clients = await Promise.all([TOKENS.PI0001, TOKENS.PI0002].map((t, i) => StreamClient.connect(engine.base, t, i === 0 ? 'msgpack' : 'json')));
  const acked: Acked[] = [];
  const reports: Promise<any>[] = [];
  const sends: Promise<void>[] = [];
  for (let f = 0; f < frames; f++) {
    const list = Array.from({ length: 50 }, (_, i) => randomInstruction(rand, BANKS, `B${f}-${i}`));
    sends.push(
      clients[f % 2]!.submit(list).then((ack) => {
        ack.results!.forEach((r, i) => {
          expect(r.status).toBe('cleared');
          acked.push({ ins: list[i]!, batch: r.batch });
        });
      }),
    );
    if (f % cutEvery === cutEvery - 1) {
      reports.push(http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops }).then((r) => r.body));
    }
    // A window of four frames in flight keeps the stream running while the cut-offs land in it.
    if (sends.length > 4) await sends[sends.length - 5];
  }
  await Promise.all(sends);
  const done = await Promise.all(reports);
  for (const c of clients) c.close();
  return { acked, reports: done };
}

function modelOf(acked: Acked[], batch: string): ReferenceModel {
  const m = new ReferenceModel(BANKS);
  for (const a of acked) if (a.batch === batch) m.clear(a.ins);
  return m;
}

function expectReportMatches(report: any, model: ReferenceModel, count: number): void {
  expect(report.count).toBe(count);
  expect(report.gross).toBe(model.gross.toString());
  let debits = 0n;
  let credits = 0n;
  for (const row of report.banks) {
    expect(row.net).toBe(model.net(row.bank).toString());
    expect(row.paid).toBe(model.paid.get(row.bank)!.toString());
    expect(row.received).toBe(model.received.get(row.bank)!.toString());
    const net = BigInt(row.net);
    if (net < 0n) {
      expect(row.settlement).toBe('debit');
      expect(row.amount).toBe((-net).toString());
      debits += -net;
    } else if (net > 0n) {
      expect(row.settlement).toBe('credit');
      expect(row.amount).toBe(net.toString());
      credits += net;
    } else {
      expect(row.settlement).toBe('none');
    }
  }
  expect(debits).toBe(credits);
  expect(report.debits).toBe(debits.toString());
  expect(report.credits).toBe(credits.toString());
}

describe('settlement batches', () => {
  it('partitions a running stream exactly at every cut-off, and the reports balance', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const config = testConfig(t.dir, { shards: 4, workers: 2 });
    let engine = await startEngine(t.dir, config);
    const first = (await http(engine.base, 'GET', '/readyz')).body.batch as string;
    const { acked, reports } = await streamWithCutoffs(engine, 120, 20);
    expect(reports).toHaveLength(6);

    // Batch ids sort in creation order, each report closes a distinct batch, and the first is the one open at start.
    const closedIds = reports.map((r) => r.batch);
    expect(closedIds[0]).toBe(first);
    expect([...closedIds].sort()).toEqual(closedIds);
    expect(new Set(closedIds).size).toBe(closedIds.length);

    // Every acked instruction is in exactly one batch: the one its ack named, as the query route confirms.
    const batchesSeen = new Set(acked.map((a) => a.batch));
    for (const b of batchesSeen) expect(closedIds.includes(b) || b > closedIds.at(-1)!).toBe(true);
    for (const [i, a] of acked.entries()) {
      if (i % 60 !== 0) continue;
      const institution = Number(a.ins.id.slice(1, a.ins.id.indexOf('-'))) % 2 === 0 ? 'PI0001' : 'PI0002';
      const q = await http(engine.base, 'GET', `/v1/instructions/${institution}/${a.ins.id}`, { token: TOKENS.ops });
      expect(q.body.batch).toBe(a.batch);
    }
    // The cut-offs fell in the middle of the stream, not around it.
    expect(reports.filter((r) => r.count > 0).length).toBeGreaterThanOrEqual(4);
    // Each closed report equals the reference model over the instructions acked into that batch.
    for (const r of reports) {
      const inBatch = acked.filter((a) => a.batch === r.batch);
      expectReportMatches(r, modelOf(acked, r.batch), inBatch.length);
      expect(r.status).toBe('closed');
      expect(Date.parse(r.closedAt)).toBeGreaterThanOrEqual(Date.parse(r.openedAt));
    }
    // The rest is in the open batch, whose positions match the model too.
    const open = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    const openModel = modelOf(acked, open.batch);
    for (const row of open.banks) expect(row.net).toBe(openModel.net(row.bank).toString());
    const total = reports.reduce((s, r) => s + r.count, 0) + acked.filter((a) => a.batch === open.batch).length;
    expect(total).toBe(acked.length);

    // The list holds every closed batch and the open one, in order.
    const list = (await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ops })).body.batches;
    expect(list.map((b: any) => b.batch)).toEqual([...closedIds, open.batch]);
    expect(list.at(-1).status).toBe('open');

    // Reports survive a kill -9, and so does the open batch.
    await engine.kill9();
    engine = await startEngine(t.dir, config);
    for (const r of reports) {
      const again = await http(engine.base, 'GET', `/v1/batches/${r.batch}`, { token: TOKENS.ops });
      expect(again.status).toBe(200);
      expect(again.body).toEqual(r);
    }
    expect((await http(engine.base, 'GET', '/readyz')).body.batch).toBe(open.batch);
    expect(await engine.stop()).toBe(0);
  });

  it('serves the report as CSV, records settlement once, and scopes banks to their rows', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    const list: RefInstruction[] = [
      { id: 'c1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 1000 },
      { id: 'c2', type: 'payout', payer: 'CMB', payee: 'ABC', amount: 300 },
      { id: 'c3', type: 'payout', payer: 'ABC', payee: 'ICBC', amount: 50 },
    ];
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: list } });
    const report = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    const rows = Object.fromEntries(report.banks.map((b: any) => [b.bank, b]));
    expect(rows.ICBC).toMatchObject({ net: '-950', settlement: 'debit', amount: '950' });
    expect(rows.CMB).toMatchObject({ net: '700', settlement: 'credit', amount: '700' });
    expect(rows.ABC).toMatchObject({ net: '250', settlement: 'credit', amount: '250' });
    expect(rows.BOC).toMatchObject({ net: '0', settlement: 'none', amount: '0' });
    expect(report).toMatchObject({ count: 3, gross: '1350', debits: '950', credits: '950', settled: false });

    const csv = await fetch(`${engine.base}/v1/batches/${report.batch}/settlement.csv`, { headers: { authorization: `Bearer ${TOKENS.ops}` } });
    expect(csv.headers.get('content-type')).toContain('text/csv');
    const lines = (await csv.text()).trim().split('\r\n');
    expect(lines[0]).toBe('batch,bank,name,paid,received,net,settlement,amount');
    expect(lines).toContain(`${report.batch},ICBC,ICBC test bank,1000,50,-950,debit,950`);
    expect(lines).toHaveLength(1 + 8);

    // A bank sees only its own row; CSV and settlement are the operator's.
    const asBank = await http(engine.base, 'GET', `/v1/batches/${report.batch}`, { token: TOKENS.CMB });
    expect(asBank.body.banks).toEqual([rows.CMB]);
    expect((await http(engine.base, 'GET', `/v1/batches/${report.batch}/settlement.csv`, { token: TOKENS.CMB })).status).toBe(403);
    expect((await http(engine.base, 'POST', `/v1/batches/${report.batch}/settled`, { token: TOKENS.CMB })).status).toBe(403);
    expect((await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.PI0001 })).status).toBe(403);

    const settled = await http(engine.base, 'POST', `/v1/batches/${report.batch}/settled`, { token: TOKENS.ops });
    expect(settled.body).toMatchObject({ batch: report.batch, status: 'settled', settled: true });
    const again = await http(engine.base, 'POST', `/v1/batches/${report.batch}/settled`, { token: TOKENS.ops });
    expect(again.body.settledAt).toBe(settled.body.settledAt);

    const open = (await http(engine.base, 'GET', '/readyz')).body.batch;
    expect(open > report.batch).toBe(true);
    expect((await http(engine.base, 'POST', `/v1/batches/${open}/settled`, { token: TOKENS.ops })).body.code).toBe('BATCH_OPEN');
    expect((await http(engine.base, 'GET', `/v1/batches/${open}/settlement.csv`, { token: TOKENS.ops })).body.code).toBe('BATCH_OPEN');
    expect((await http(engine.base, 'GET', '/v1/batches/20000101-001', { token: TOKENS.ops })).status).toBe(404);
    for (const path of ['/v1/batches/20000101-001/settlement.csv', '/v1/batches/20000101-001/settled']) {
      const r = await http(engine.base, path.endsWith('settled') ? 'POST' : 'GET', path, { token: TOKENS.ops });
      expect(r.status, path).toBe(404);
    }
    // A path id that cannot be a batch id names no batch (PROTOCOL.md: NOT_FOUND is "no such … batch"): 404, as an unknown well-formed one.
    for (const bad of ['nonsense', 'nope', 'abc', '0', '2026112-001', '20261122-0011', '%E4%B8%AD', '%ZZ']) {
      const routes = [
        ['GET', `/v1/batches/${bad}`, TOKENS.ops],
        ['GET', `/v1/batches/${bad}`, TOKENS.CMB],
        ['GET', `/v1/batches/${bad}/settlement.csv`, TOKENS.ops],
        ['POST', `/v1/batches/${bad}/settled`, TOKENS.ops],
      ] as const;
      for (const [method, path, token] of routes) {
        const r = await http(engine.base, method, path, { token });
        expect(r.status, `${method} ${path}`).toBe(404);
        expect(r.body.code, `${method} ${path}`).toBe('NOT_FOUND');
      }
    }
    // Role checks still come first.
    expect((await http(engine.base, 'POST', '/v1/batches/nope/settled', { token: TOKENS.CMB })).status).toBe(403);
    // An empty batch closes too, with a zero report.
    const empty = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    expect(empty).toMatchObject({ batch: open, count: 0, gross: '0', debits: '0', credits: '0' });
    expect(await engine.stop()).toBe(0);
  });

  it('closes batches on a configured schedule', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir, { batchSchedule: { intervalMs: 1000 } }));
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 's1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 5 } });
    await new Promise((r) => setTimeout(r, 2600));
    const list = (await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ops })).body.batches;
    const closed = list.filter((b: any) => b.status === 'closed');
    expect(closed.length).toBeGreaterThanOrEqual(2);
    expect(closed[0].count).toBe(1);
    expect(await engine.stop()).toBe(0);
  });
});

describe('the batch ids of a business day', () => {
  it('refuses a cut-off past the 999th batch of a day with BATCH_LIMIT, changing nothing', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    // Cut off until the day's ids run out (a business day that turns meanwhile starts again at -001: up to two days' worth).
    let refused: { status: number; body: any } | undefined;
    for (let i = 0; i < 2 * 999 + 1 && refused === undefined; i++) {
      const r = await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops });
      if (r.status !== 200) refused = r;
    }
    expect(refused).toMatchObject({ status: 409, body: { code: 'BATCH_LIMIT' } });
    const open = (await http(engine.base, 'GET', '/readyz')).body.batch as string;
    expect(open).toMatch(/^\d{8}-999$/);
    // The open batch goes on taking instructions, and a second try is refused the same way.
    const ins = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'past-999', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 5 } });
    expect(ins.body).toMatchObject({ status: 'cleared', batch: open });
    expect(await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).toMatchObject({ status: 409, body: { code: 'BATCH_LIMIT' } });
    expect((await http(engine.base, 'GET', '/readyz')).body.batch).toBe(open);
    const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(positions).toMatchObject({ batch: open, totals: { gross: '5' } });
    expect(await engine.stop()).toBe(0);
  }, 120_000);
});
