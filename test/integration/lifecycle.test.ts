/**
 * The two-phase lifecycle with real WebSocket clients playing the
 * institution and the banks: forwards, receipts (both channels), query
 * compensation, expiry, manual resolution, notifications, reconnection,
 * and deadlines that survive a restart.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, noneFor, StreamClient, waitFor } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

let engine: RunningEngine;
let dir: string;
let config: Record<string, unknown>;
let cleanup: () => void;

/** An institution whose id is also a bank's code: nothing of that bank's may reach it. */
const NAMESAKE_TOKEN = 'test-token-institution-named-ICBC';

beforeAll(async () => {
  const t = tempDir();
  dir = t.dir;
  cleanup = t.cleanup;
  config = testConfig(t.dir, { receiptQueryScheduleMs: [300, 700] });
  config['principals'] = [...(config['principals'] as object[]), { token: NAMESAKE_TOKEN, role: 'institution', id: 'ICBC' }];
  engine = await startEngine(t.dir, config);
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

const twoPhase = (id: string, extra: Record<string, unknown> = {}) => ({ id, type: 'agreement', payer: 'ICBC', payee: 'CMB', amount: 2500, twoPhase: true, ...extra });


async function row(bank: string): Promise<any> {
  return (await http(engine.base, 'GET', `/v1/positions/${bank}`, { token: TOKENS.ops })).body;
}

async function query(id: string): Promise<any> {
  return (await http(engine.base, 'GET', `/v1/instructions/PI0001/${id}`, { token: TOKENS.PI0001 })).body;
}

describe('two-phase instructions', () => {
  it('are forwarded to the payer bank, confirmed by its receipt, and notified to the institution', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    await bank.request({ op: 'subscribe', topics: ['forwards'] });
    const before = await row('ICBC');

    const ack = await inst.submit([twoPhase('TP-1', { reference: 'order 1' })]);
    expect(ack.results![0]).toEqual({ id: 'TP-1', status: 'pending' });
    const fwd = await waitFor(bank, (m) => m.op === 'forward');
    const item = (fwd['instructions'] as any[]).find((i) => i.id === 'TP-1');
    expect(item).toMatchObject({ institution: 'PI0001', id: 'TP-1', payer: 'ICBC', payee: 'CMB', amount: 2500, reference: 'order 1' });
    expect(Date.parse(item.deadline) - Date.parse(item.acceptedAt)).toBe(30_000);

    // Pending: reserved, not netted.
    const pending = await row('ICBC');
    expect(pending.pendingDebit).toBe(String(BigInt(before.pendingDebit) + 2500n));
    expect(pending.paid).toBe(before.paid);
    expect((await query('TP-1')).status).toBe('pending');

    const receipt = await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'TP-1', outcome: 'confirm' }] });
    expect(receipt.results![0]).toMatchObject({ institution: 'PI0001', id: 'TP-1', status: 'cleared' });
    const batch = receipt.results![0].batch;
    expect(batch).toMatch(/^\d{8}-\d{3}$/);
    const note = await waitFor(inst, (m) => m.op === 'notify' && m['id'] === 'TP-1');
    expect(note).toEqual({ op: 'notify', institution: 'PI0001', id: 'TP-1', type: 'agreement', status: 'cleared', batch });

    const after = await row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(String(BigInt(before.paid) + 2500n));
    expect(await query('TP-1')).toMatchObject({ status: 'cleared', batch, twoPhase: true, timeoutMs: 30000 });

    // A repeated receipt is a duplicate; a contradicting one is NOT_PENDING; both change nothing.
    const again = await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'TP-1', outcome: 'confirm' }] });
    expect(again.results![0]).toMatchObject({ status: 'cleared', batch, duplicate: true });
    const contra = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'TP-1', outcome: 'decline' } });
    expect(contra.status).toBe(409);
    expect(contra.body).toMatchObject({ code: 'NOT_PENDING', status: 'cleared' });
    expect((await row('ICBC')).paid).toBe(after.paid);
    inst.close();
    bank.close();
  });

  it('are declined by the payer bank over HTTP, releasing the reservation', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const before = await row('ICBC');
    expect((await inst.submit([twoPhase('TP-2')])).results![0].status).toBe('pending');
    const r = await http(engine.base, 'POST', '/v1/receipts', {
      token: TOKENS.ICBC,
      body: { receipts: [{ institution: 'PI0001', id: 'TP-2', outcome: 'decline', reason: 'insufficient funds' }] },
    });
    expect(r.status).toBe(200);
    expect(r.body.results[0]).toEqual({ institution: 'PI0001', id: 'TP-2', status: 'declined' });
    expect(await waitFor(inst, (m) => m.op === 'notify' && m['id'] === 'TP-2')).toMatchObject({ status: 'declined' });
    const after = await row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(before.paid);
    expect(await query('TP-2')).toMatchObject({ status: 'declined', reason: 'insufficient funds' });
    expect((await query('TP-2')).batch).toBeUndefined();
    inst.close();
  });

  it('refuse receipts from the wrong bank and for unknown instructions', async () => {
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: twoPhase('TP-3') });
    const payee = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.CMB, body: { institution: 'PI0001', id: 'TP-3', outcome: 'confirm' } });
    expect(payee.status).toBe(403);
    expect(payee.body.code).toBe('FORBIDDEN');
    const unknown = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'nope', outcome: 'confirm' } });
    expect(unknown.body.code).toBe('NOT_FOUND');
    const bad = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'TP-3', outcome: 'maybe' } });
    expect(bad.body).toMatchObject({ code: 'INVALID_FIELD', field: 'outcome' });
    expect((await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.PI0001, body: { institution: 'PI0001', id: 'TP-3', outcome: 'confirm' } })).status).toBe(403);
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    expect(await inst.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'TP-3', outcome: 'confirm' }] })).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
    inst.close();
    expect((await query('TP-3')).status).toBe('pending');
  });

  it('are queried before they expire even when the timeout is shorter than the query schedule', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    await bank.request({ op: 'subscribe', topics: ['forwards'] });
    // A connection of the bank that subscribed to nothing (one that only sends receipts) hears the query too:
    // the contract sends it "to the payer bank", under no topic.
    const receiptsOnly = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    expect(await receiptsOnly.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
    // The schedule's first query is at 300 ms; the deadline comes at 200 ms.
    expect((await inst.submit([twoPhase('TP-SHORT', { timeoutMs: 200 })])).results![0].status).toBe('pending');
    const q = await waitFor(bank, (m) => m.op === 'query' && m['id'] === 'TP-SHORT');
    expect(q).toEqual({ op: 'query', institution: 'PI0001', id: 'TP-SHORT', type: 'agreement', step: 'receipt' });
    expect(await waitFor(receiptsOnly, (m) => m.op === 'query' && m['id'] === 'TP-SHORT')).toEqual(q);
    receiptsOnly.close();
    const note = await waitFor(inst, (m) => m.op === 'notify' && m['id'] === 'TP-SHORT');
    expect(note).toMatchObject({ status: 'expired' });
    inst.close();
    bank.close();
  });

  it('are queried when the receipt is late, then expire and are notified', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    await bank.request({ op: 'subscribe', topics: ['forwards'] });
    const before = await row('ICBC');
    expect((await inst.submit([twoPhase('TP-4', { timeoutMs: 1200 })])).results![0].status).toBe('pending');
    const q1 = await waitFor(bank, (m) => m.op === 'query' && m['id'] === 'TP-4');
    expect(q1).toEqual({ op: 'query', institution: 'PI0001', id: 'TP-4', type: 'agreement', step: 'receipt' });
    await waitFor(bank, (m) => m.op === 'query' && m['id'] === 'TP-4');
    const note = await waitFor(inst, (m) => m.op === 'notify' && m['id'] === 'TP-4', 5000);
    expect(note).toEqual({ op: 'notify', institution: 'PI0001', id: 'TP-4', type: 'agreement', status: 'expired' });
    expect(await query('TP-4')).toMatchObject({ status: 'expired' });
    expect((await row('ICBC')).pendingDebit).toBe(before.pendingDebit); // TP-4's reservation is released
    // A receipt after the expiry is refused.
    const late = await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'TP-4', outcome: 'confirm' }] });
    expect(late.results![0]).toMatchObject({ code: 'NOT_PENDING', status: 'expired' });
    inst.close();
    bank.close();
  });

  it('can be resolved by an operator, idempotently', async () => {
    const r = await http(engine.base, 'POST', '/v1/instructions/PI0001/TP-3/resolve', { token: TOKENS.ops, body: { outcome: 'confirm' } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: 'TP-3', status: 'cleared' });
    const again = await http(engine.base, 'POST', '/v1/instructions/PI0001/TP-3/resolve', { token: TOKENS.ops, body: { outcome: 'confirm' } });
    expect(again.body.status).toBe('cleared');
    const contra = await http(engine.base, 'POST', '/v1/instructions/PI0001/TP-3/resolve', { token: TOKENS.ops, body: { outcome: 'decline' } });
    expect(contra.status).toBe(409);
    expect(contra.body.code).toBe('NOT_PENDING');
    expect((await http(engine.base, 'POST', '/v1/instructions/PI0001/TP-3/resolve', { token: TOKENS.ICBC, body: { outcome: 'confirm' } })).status).toBe(403);
    expect((await http(engine.base, 'POST', '/v1/instructions/PI0001/none/resolve', { token: TOKENS.ops, body: { outcome: 'confirm' } })).status).toBe(404);
    expect((await http(engine.base, 'POST', '/v1/instructions/PI0001/TP-3/resolve', { token: TOKENS.ops, body: { outcome: 'yes' } })).body.field).toBe('outcome');
  });

  it('are sent again to a bank that reconnects, until it answers them', async () => {
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    await bank.request({ op: 'subscribe', topics: ['forwards'] });
    const ids = ['RC-1', 'RC-2', 'RC-3'];
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: ids.map((id) => twoPhase(id)) } });
    await waitFor(bank, (m) => m.op === 'forward' && (m['instructions'] as any[]).some((i) => i.id === 'RC-1'));
    // Answer one, then drop the connection without answering the others.
    await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'RC-1', outcome: 'confirm' }] });
    bank.close();
    await bank.closed;
    const again = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    await again.request({ op: 'subscribe', topics: ['forwards'] });
    const fwd = await waitFor(again, (m) => m.op === 'forward');
    const got = (fwd['instructions'] as any[]).map((i) => i.id);
    expect(got).toEqual(expect.arrayContaining(['RC-2', 'RC-3']));
    expect(got).not.toContain('RC-1');
    const r = await again.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'RC-2', outcome: 'confirm' }, { institution: 'PI0001', id: 'RC-3', outcome: 'decline' }] });
    expect(r.results!.map((x) => x.status)).toEqual(['cleared', 'declined']);
    again.close();
  });

  it("let any role subscribe to forwards, which reach only the payer bank's connections", async () => {
    // Pending before anyone subscribes: what a bank is sent on subscribing.
    expect((await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: twoPhase('NB-1') })).body.status).toBe('pending');
    const others = [
      await StreamClient.connect(engine.base, NAMESAKE_TOKEN, 'json'),
      await StreamClient.connect(engine.base, TOKENS.ops, 'msgpack'),
      await StreamClient.connect(engine.base, TOKENS.PI0001, 'json'),
    ];
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    try {
      for (const c of others) expect(await c.request({ op: 'subscribe', topics: ['forwards'] })).toMatchObject({ op: 'subscribed', topics: ['forwards'] });
      await bank.request({ op: 'subscribe', topics: ['forwards'] });
      await waitFor(bank, (m) => m.op === 'forward' && (m['instructions'] as any[]).some((i) => i.id === 'NB-1'));
      // Live: forwarded, then queried once overdue, to the bank alone.
      expect((await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: twoPhase('NB-2') })).body.status).toBe('pending');
      await waitFor(bank, (m) => m.op === 'forward' && (m['instructions'] as any[]).some((i) => i.id === 'NB-2'));
      await waitFor(bank, (m) => m.op === 'query' && m['id'] === 'NB-2');
      await Promise.all(others.map((c) => noneFor(c, (m) => m.op === 'forward' || m.op === 'query', 300)));
      const r = await bank.request({ op: 'receipt', receipts: ['NB-1', 'NB-2'].map((id) => ({ institution: 'PI0001', id, outcome: 'confirm' })) });
      expect(r.results!.map((x) => x.status)).toEqual(['cleared', 'cleared']);
    } finally {
      for (const c of [...others, bank]) c.close();
    }
  });

  it('keep their deadlines across a restart', async () => {
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: [twoPhase('RS-short', { timeoutMs: 2500 }), twoPhase('RS-long', { timeoutMs: 600000 })] } });
    const short = await query('RS-short');
    const long = await query('RS-long');
    expect(await engine.stop()).toBe(0);
    engine = await startEngine(dir, config);
    expect(await query('RS-short')).toMatchObject({ status: 'pending', deadline: short.deadline });
    expect(await query('RS-long')).toMatchObject({ status: 'pending', deadline: long.deadline });
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    await bank.request({ op: 'subscribe', topics: ['forwards'] });
    const fwd = await waitFor(bank, (m) => m.op === 'forward');
    expect((fwd['instructions'] as any[]).map((i) => i.id)).toEqual(expect.arrayContaining(['RS-short', 'RS-long']));
    // The short one expires at its original deadline, not a fresh one.
    const wait = Date.parse(short.deadline) - Date.now() + 400;
    await new Promise((r) => setTimeout(r, Math.max(0, wait)));
    expect((await query('RS-short')).status).toBe('expired');
    expect((await query('RS-long')).status).toBe('pending');
    const r = await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'RS-long', outcome: 'confirm' }] });
    expect(r.results![0].status).toBe('cleared');
    bank.close();
    const audit = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
    expect(audit.body.ok).toBe(true);
  });

  it('are queried after a restart that outlasted their deadline, with time for the bank to reconnect, before they expire', async () => {
    // Every query of the schedule (300 and 700 ms) and the deadline (1,000 ms) fall while the engine is down.
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: twoPhase('RS-gone', { timeoutMs: 1000 }) });
    const before = await query('RS-gone');
    expect(await engine.stop()).toBe(0);
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(before.deadline) - Date.now() + 300)));
    engine = await startEngine(dir, config);
    // The bank reconnects some moments after the engine listens, subscribed to nothing.
    await new Promise((r) => setTimeout(r, 500));
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    expect(await waitFor(bank, (m) => m.op === 'query' && m['id'] === 'RS-gone', 4000)).toEqual({ op: 'query', institution: 'PI0001', id: 'RS-gone', type: 'agreement', step: 'receipt' });
    // Not yet expired: the bank may still answer, and it is then cleared.
    expect((await query('RS-gone')).status).toBe('pending');
    const r = await bank.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'RS-gone', outcome: 'confirm' }] });
    expect(r.results![0]).toMatchObject({ status: 'cleared' });
    expect(await waitFor(inst, (m) => m.op === 'notify' && m['id'] === 'RS-gone')).toMatchObject({ status: 'cleared' });
    bank.close();
    inst.close();
  });
});

describe('a payer bank that does not read', () => {
  it('is disconnected at the send-buffer bound and gets every unanswered forward when it comes back', async () => {
    const t = tempDir();
    const e = await startEngine(t.dir, testConfig(t.dir, { limits: { wsBackpressureBytesMax: 64 * 1024 }, receiptQueryScheduleMs: [] }));
    try {
      const slow = await StreamClient.connect(e.base, TOKENS.ICBC, 'json');
      await slow.request({ op: 'subscribe', topics: ['forwards'] });
      // Stop reading: what the engine pushes piles up in the kernel's buffers and then in uWS's.
      slow.ws.pause();
      const inst = await StreamClient.connect(e.base, TOKENS.PI0001, 'msgpack');
      let submitted = 0;
      // About 9 MB of forwards: more than the kernel buffers of a socket that never read hold.
      for (let f = 0; f < 30; f++) {
        const list = Array.from({ length: 1000 }, (_, i) => twoPhase(`BP-${f}-${i}`, { reference: 'x'.repeat(100), timeoutMs: 600000 }));
        const ack = await inst.submit(list);
        expect(ack.results!.every((r) => r.status === 'pending')).toBe(true);
        submitted += list.length;
        await new Promise((r) => setTimeout(r, 20));
      }
      // Reading again, the bank finds that the engine closed the connection.
      slow.ws.resume();
      const closed = await Promise.race([slow.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000))]);
      expect(closed).toBeDefined();
      expect(closed!.code).not.toBe(1000);
      // Nothing acknowledged was lost: all are pending and the bank is sent every one of them again.
      const back = await StreamClient.connect(e.base, TOKENS.ICBC, 'msgpack');
      await back.request({ op: 'subscribe', topics: ['forwards'] });
      const seen = new Set<string>();
      const deadline = Date.now() + 10_000;
      while (seen.size < submitted && Date.now() < deadline) {
        const m = back.unmatched.shift();
        if (m === undefined) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        if (m.op === 'forward') for (const i of m['instructions'] as any[]) seen.add(i.id);
      }
      expect(seen.size).toBe(submitted);
      const icbc = (await http(e.base, 'GET', '/v1/positions/ICBC', { token: TOKENS.ops })).body;
      expect(icbc.pendingDebit).toBe(String(2500 * submitted));
      back.close();
      inst.close();
    } finally {
      await e.stop();
      t.cleanup();
    }
  });
});
