/**
 * The two-phase flows of the business kinds over the real server, with
 * WebSocket clients playing the institution and the banks: gateway payments
 * (网关支付状态通知), authenticated payments with the payer's verification and
 * the institution's payment submission (认证支付, 支付提交), payouts with a
 * payer leg and a payee leg (付款), query compensation per step, the debit
 * cap held to the end of a payout, and steps that survive kill -9.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Ack, http, type HttpReply, noneFor, StreamClient, waitFor } from '../helpers/clients.js';
import { BANKS, startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

const ABC_TOKEN = 'test-token-bank-ABC-xxxxxxxxx';
const BOC_TOKEN = 'test-token-bank-BOC-xxxxxxxxx';
/** BOC's debit cap, for the payout that stays reserved to its end. */
const BOC_CAP = 10_000;
/** Instructions that must not expire during the file. */
const LONG = 600_000;

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

function configFor(dir: string): Record<string, unknown> {
  const config = testConfig(dir, {
    receiptQueryScheduleMs: [300, 700],
    banks: BANKS.map((code) => (code === 'BOC' ? { code, name: 'capped', debitCapCents: BOC_CAP } : { code, name: `${code} test bank` })),
  });
  config['principals'] = [...(config['principals'] as object[]), { token: ABC_TOKEN, role: 'bank', id: 'ABC' }, { token: BOC_TOKEN, role: 'bank', id: 'BOC' }];
  return config;
}



const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A forward that carries instruction `id` (at `step`, when given). */
const forwardOf = (id: string, step?: string) => (m: Ack) =>
  m.op === 'forward' && Array.isArray(m['instructions']) && (m['instructions'] as any[]).some((i) => i.id === id && (step === undefined || i.step === step));
const itemOf = (m: Ack, id: string, step?: string): any => (m['instructions'] as any[]).find((i) => i.id === id && (step === undefined || i.step === step));
const noteOf = (id: string) => (m: Ack) => m.op === 'notify' && m['id'] === id;
const queryOf = (id: string) => (m: Ack) => m.op === 'query' && m['id'] === id;

function on(engine: () => RunningEngine) {
  const base = () => engine().base;
  return {
    submit: (body: unknown, token: string = TOKENS.PI0001): Promise<HttpReply> => http(base(), 'POST', '/v1/instructions', { token, body }),
    get: async (id: string, institution = 'PI0001', token: string = TOKENS.PI0001): Promise<any> => (await http(base(), 'GET', `/v1/instructions/${institution}/${id}`, { token })).body,
    receipt: (token: string, id: string, outcome: string, extra: Record<string, unknown> = {}): Promise<HttpReply> =>
      http(base(), 'POST', '/v1/receipts', { token, body: { institution: 'PI0001', id, outcome, ...extra } }),
    submission: (id: string, body: unknown, token: string = TOKENS.PI0001, institution = 'PI0001'): Promise<HttpReply> =>
      http(base(), 'POST', `/v1/instructions/${institution}/${id}/submit`, { token, body }),
    /** A bank's row of GET /v1/positions (the open batch). */
    row: async (bank: string): Promise<any> => {
      const r = await http(base(), 'GET', '/v1/positions', { token: TOKENS.ops });
      return (r.body.banks as any[]).find((b) => b.bank === bank);
    },
  };
}

const plus = (s: string, n: number): string => String(BigInt(s) + BigInt(n));

let engine: RunningEngine;
const api = on(() => engine);
let inst: StreamClient;
/** The institution's connection for the messages of steps that await it (the engine's `steps` topic). */
let steps: StreamClient;
let icbc: StreamClient;
let cmb: StreamClient;

beforeAll(async () => {
  const dir = dirs.make();
  engine = await startEngine(dir, configFor(dir));
  inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
  await inst.request({ op: 'subscribe', topics: ['notifications'] });
  steps = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
  await steps.request({ op: 'subscribe', topics: ['steps'] });
  icbc = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
  await icbc.request({ op: 'subscribe', topics: ['forwards'] });
  cmb = await StreamClient.connect(engine.base, TOKENS.CMB, 'json');
  await cmb.request({ op: 'subscribe', topics: ['forwards'] });
});

afterAll(async () => {
  inst?.close();
  steps?.close();
  icbc?.close();
  cmb?.close();
  await engine?.stop();
});

const ins = (id: string, type: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id,
  type,
  payer: 'ICBC',
  payee: 'CMB',
  amount: 1500,
  twoPhase: true,
  timeoutMs: LONG,
  ...extra,
});

describe('gateway payments (网关支付)', () => {
  it('are forwarded with type and step receipt, cleared by the status notification, and notified with type', async () => {
    const before = await api.row('ICBC');
    const r = await api.submit(ins('GW-1', 'gateway', { reference: 'order GW-1' }));
    expect(r.body).toEqual({ id: 'GW-1', status: 'pending' });
    const item = itemOf(await waitFor(icbc, forwardOf('GW-1')), 'GW-1');
    expect(item).toMatchObject({ institution: 'PI0001', id: 'GW-1', type: 'gateway', step: 'receipt', payer: 'ICBC', payee: 'CMB', amount: 1500, reference: 'order GW-1' });
    expect(item.verification).toBeUndefined();
    expect(Date.parse(item.deadline) - Date.parse(item.acceptedAt)).toBe(LONG);
    expect(await api.get('GW-1')).toMatchObject({ status: 'pending', step: 'receipt', type: 'gateway' });
    expect((await api.row('ICBC')).pendingDebit).toBe(plus(before.pendingDebit, 1500));

    const c = await api.receipt(TOKENS.ICBC, 'GW-1', 'confirm');
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ institution: 'PI0001', id: 'GW-1', status: 'cleared' });
    const batch = c.body.batch;
    expect(batch).toMatch(/^\d{8}-\d{3}$/);
    expect(await waitFor(inst, noteOf('GW-1'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'GW-1', type: 'gateway', status: 'cleared', batch });
    const view = await api.get('GW-1');
    expect(view).toMatchObject({ status: 'cleared', batch });
    expect(view.step).toBeUndefined();
    const after = await api.row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(plus(before.paid, 1500));

    const again = await api.receipt(TOKENS.ICBC, 'GW-1', 'confirm');
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: 'cleared', batch, duplicate: true });
    const contra = await api.receipt(TOKENS.ICBC, 'GW-1', 'decline');
    expect(contra.status).toBe(409);
    expect(contra.body).toMatchObject({ code: 'NOT_PENDING', status: 'cleared' });
    const unknown = await api.receipt(TOKENS.ICBC, 'GW-NONE', 'confirm');
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('NOT_FOUND');
    expect((await api.row('ICBC')).paid).toBe(after.paid);
  });

  it('refuse outcome verify with INVALID_FIELD', async () => {
    await api.submit(ins('GW-V', 'gateway'));
    const r = await api.receipt(TOKENS.ICBC, 'GW-V', 'verify');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: 'INVALID_FIELD', field: 'outcome' });
    expect(await api.get('GW-V')).toMatchObject({ status: 'pending', step: 'receipt' });
    expect((await api.receipt(TOKENS.ICBC, 'GW-V', 'decline')).body).toMatchObject({ status: 'declined' });
    expect(await waitFor(inst, noteOf('GW-V'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'GW-V', type: 'gateway', status: 'declined' });
  });

  it('are queried with type and step when overdue, then expire', async () => {
    const r = await api.submit(ins('GW-Q', 'gateway', { timeoutMs: 1200 }));
    expect(r.body.status).toBe('pending');
    expect(await waitFor(icbc, queryOf('GW-Q'))).toEqual({ op: 'query', institution: 'PI0001', id: 'GW-Q', type: 'gateway', step: 'receipt' });
    expect(await waitFor(inst, noteOf('GW-Q'), 5000)).toEqual({ op: 'notify', institution: 'PI0001', id: 'GW-Q', type: 'gateway', status: 'expired' });
    expect(await api.get('GW-Q')).toMatchObject({ status: 'expired' });
    const late = await api.receipt(TOKENS.ICBC, 'GW-Q', 'confirm');
    expect(late.status).toBe(409);
    expect(late.body).toMatchObject({ code: 'NOT_PENDING', status: 'expired' });
  });
});

describe('authenticated payments (认证支付)', () => {
  it('verify, then the institution\'s submission, then the payer bank\'s confirm', async () => {
    const before = await api.row('ICBC');
    expect((await api.submit(ins('AU-1', 'authenticated', { amount: 2200 }))).body).toEqual({ id: 'AU-1', status: 'pending' });
    const fwd = itemOf(await waitFor(icbc, forwardOf('AU-1', 'verify')), 'AU-1', 'verify');
    expect(fwd).toMatchObject({ institution: 'PI0001', id: 'AU-1', type: 'authenticated', step: 'verify', payer: 'ICBC', payee: 'CMB', amount: 2200 });
    expect(fwd.verification).toBeUndefined();
    const atVerify = await api.get('AU-1');
    expect(atVerify).toMatchObject({ status: 'pending', step: 'verify', type: 'authenticated' });

    await sleep(30);
    const v = await api.receipt(TOKENS.ICBC, 'AU-1', 'verify');
    expect(v.status).toBe(200);
    expect(v.body).toEqual({ institution: 'PI0001', id: 'AU-1', status: 'awaiting-submission' });
    // The step that awaits the institution is told on `steps`; `notifications` carries final statuses only (PROTOCOL.md).
    expect(await waitFor(steps, noteOf('AU-1'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'AU-1', type: 'authenticated', status: 'awaiting-submission' });
    await noneFor(inst, noteOf('AU-1'), 200);
    const awaiting = await api.get('AU-1');
    expect(awaiting).toMatchObject({ status: 'awaiting-submission', step: 'submission' });
    // The submission step has its own deadline, from the step's start.
    expect(Date.parse(awaiting.deadline)).toBeGreaterThan(Date.parse(atVerify.deadline));
    // Still reserved, not netted.
    const mid = await api.row('ICBC');
    expect(mid.pendingDebit).toBe(plus(before.pendingDebit, 2200));
    expect(mid.paid).toBe(before.paid);

    // The verify again is a duplicate; the payer bank cannot confirm while the submission is awaited.
    const again = await api.receipt(TOKENS.ICBC, 'AU-1', 'verify');
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: 'awaiting-submission', duplicate: true });
    const jump = await api.receipt(TOKENS.ICBC, 'AU-1', 'confirm');
    expect(jump.status).toBe(409);
    expect(jump.body).toMatchObject({ code: 'NOT_PENDING', status: 'awaiting-submission' });

    // Only the institution itself submits, with a well-formed code.
    const other = await api.submission('AU-1', { verification: '123456' }, TOKENS.PI0002);
    expect(other.status).toBe(403);
    expect(other.body.code).toBe('FORBIDDEN');
    expect((await api.submission('AU-1', { verification: '123456' }, TOKENS.ICBC)).status).toBe(403);
    for (const body of [{}, { verification: '' }, { verification: 'x'.repeat(33) }, { verification: 123456 }, { verification: 'ab\u0001cd' }]) {
      const bad = await api.submission('AU-1', body);
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({ code: 'INVALID_FIELD', field: 'verification' });
    }
    expect(await api.get('AU-1')).toMatchObject({ status: 'awaiting-submission', step: 'submission' });

    await sleep(30);
    const s = await api.submission('AU-1', { verification: '123456' });
    expect(s.status).toBe(200);
    expect(s.body).toEqual({ institution: 'PI0001', id: 'AU-1', status: 'pending' });
    const rfwd = itemOf(await waitFor(icbc, forwardOf('AU-1', 'receipt')), 'AU-1', 'receipt');
    expect(rfwd).toMatchObject({ institution: 'PI0001', id: 'AU-1', type: 'authenticated', step: 'receipt', amount: 2200, verification: '123456' });
    const atReceipt = await api.get('AU-1');
    expect(atReceipt).toMatchObject({ status: 'pending', step: 'receipt' });
    expect(Date.parse(atReceipt.deadline)).toBeGreaterThan(Date.parse(awaiting.deadline));

    const dup = await api.submission('AU-1', { verification: '123456' });
    expect(dup.status).toBe(200);
    expect(dup.body).toMatchObject({ institution: 'PI0001', id: 'AU-1', status: 'pending', duplicate: true });
    const diff = await api.submission('AU-1', { verification: '654321' });
    expect(diff.status).toBe(409);
    expect(diff.body).toMatchObject({ code: 'NOT_PENDING', status: 'pending' });

    const c = await api.receipt(TOKENS.ICBC, 'AU-1', 'confirm');
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ institution: 'PI0001', id: 'AU-1', status: 'cleared' });
    expect(await waitFor(inst, noteOf('AU-1'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'AU-1', type: 'authenticated', status: 'cleared', batch: c.body.batch });
    const after = await api.row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(plus(before.paid, 2200));
    const final = await api.get('AU-1');
    expect(final).toMatchObject({ status: 'cleared', batch: c.body.batch });
    expect(final.step).toBeUndefined();
  });

  it('can be declined after the submission, releasing the reservation', async () => {
    const before = await api.row('ICBC');
    await api.submit(ins('AU-2', 'authenticated'));
    expect((await api.receipt(TOKENS.ICBC, 'AU-2', 'verify')).body.status).toBe('awaiting-submission');
    await waitFor(steps, noteOf('AU-2'));
    expect((await api.submission('AU-2', { verification: '0000' })).body.status).toBe('pending');
    const d = await api.receipt(TOKENS.ICBC, 'AU-2', 'decline', { reason: 'wrong code' });
    expect(d.status).toBe(200);
    expect(d.body).toEqual({ institution: 'PI0001', id: 'AU-2', status: 'declined' });
    expect(await waitFor(inst, noteOf('AU-2'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'AU-2', type: 'authenticated', status: 'declined' });
    expect(await api.get('AU-2')).toMatchObject({ status: 'declined', reason: 'wrong code' });
    const after = await api.row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(before.paid);
    // A submission for a final instruction is not pending.
    const late = await api.submission('AU-2', { verification: '1111' });
    expect(late.status).toBe(409);
    expect(late.body.code).toBe('NOT_PENDING');
  });

  it('are finished in one step by a direct confirm or decline in the verify step', async () => {
    await api.submit(ins('AU-3', 'authenticated'));
    await waitFor(icbc, forwardOf('AU-3', 'verify'));
    const c = await api.receipt(TOKENS.ICBC, 'AU-3', 'confirm');
    expect(c.body).toMatchObject({ status: 'cleared' });
    expect(c.body.batch).toMatch(/^\d{8}-\d{3}$/);
    expect(await waitFor(inst, noteOf('AU-3'))).toMatchObject({ type: 'authenticated', status: 'cleared' });
    await api.submit(ins('AU-3d', 'authenticated'));
    expect((await api.receipt(TOKENS.ICBC, 'AU-3d', 'decline')).body).toMatchObject({ status: 'declined' });
    // A verify after the final answer contradicts it.
    const v = await api.receipt(TOKENS.ICBC, 'AU-3', 'verify');
    expect(v.status).toBe(409);
    expect(v.body).toMatchObject({ code: 'NOT_PENDING', status: 'cleared' });
  });

  it('refuse a submission before the payer bank verified, for another kind, or for an unknown instruction', async () => {
    // On an engine of its own: these are answered from instructions still at the payer bank.
    const dir = dirs.make();
    const e = await startEngine(dir, configFor(dir));
    const eapi = on(() => e);
    try {
      await eapi.submit(ins('AU-E', 'authenticated'));
      const early = await eapi.submission('AU-E', { verification: '123456' });
      expect(early.status).toBe(409);
      expect(early.body).toMatchObject({ institution: 'PI0001', id: 'AU-E', status: 'pending', code: 'NOT_PENDING' });
      expect(await eapi.get('AU-E')).toMatchObject({ status: 'pending', step: 'verify' });
      // The early code was not taken: after the verify, the submission is awaited and takes a code.
      expect((await eapi.receipt(TOKENS.ICBC, 'AU-E', 'verify')).body.status).toBe('awaiting-submission');
      expect((await eapi.submission('AU-E', { verification: '654321' })).body).toEqual({ institution: 'PI0001', id: 'AU-E', status: 'pending' });

      await eapi.submit(ins('AU-GW', 'gateway'));
      const gw = await eapi.submission('AU-GW', { verification: '1' });
      expect(gw.status).toBe(409);
      expect(gw.body.code).toBe('NOT_PENDING');
      expect(await eapi.get('AU-GW')).toMatchObject({ status: 'pending', step: 'receipt' });
      await eapi.submit(ins('AU-PO', 'payout'));
      expect((await eapi.submission('AU-PO', { verification: '1' })).body.code).toBe('NOT_PENDING');
      expect((await eapi.submit({ id: 'AU-1P', type: 'authenticated', payer: 'ICBC', payee: 'CMB', amount: 5 })).body.status).toBe('cleared');
      expect((await eapi.submission('AU-1P', { verification: '1' })).body.code).toBe('NOT_PENDING');

      const unknown = await eapi.submission('AU-NONE', { verification: '1' });
      expect(unknown.status).toBe(404);
      expect(unknown.body.code).toBe('NOT_FOUND');
      expect(e.proc.exitCode).toBeNull();
    } finally {
      await e.stop();
    }
  });

  it('expire when the institution sends no submission, after a query to its `steps` subscribers', async () => {
    const before = await api.row('ICBC');
    await api.submit(ins('AU-X', 'authenticated', { timeoutMs: 1200 }));
    expect((await api.receipt(TOKENS.ICBC, 'AU-X', 'verify')).body.status).toBe('awaiting-submission');
    expect(await waitFor(steps, (m) => noteOf('AU-X')(m) && m['status'] === 'awaiting-submission')).toBeDefined();
    const q = await waitFor(steps, queryOf('AU-X'), 5000);
    expect(q).toEqual({ op: 'query', institution: 'PI0001', id: 'AU-X', type: 'authenticated', step: 'submission' });
    // The payer bank is not the one asked in this step.
    expect(icbc.unmatched.filter((m) => queryOf('AU-X')(m) && m['step'] === 'submission')).toEqual([]);
    // On `notifications`, the final status is the only message of the instruction.
    expect(await waitFor(inst, noteOf('AU-X'), 5000)).toEqual({ op: 'notify', institution: 'PI0001', id: 'AU-X', type: 'authenticated', status: 'expired' });
    expect(inst.unmatched.filter((m) => (noteOf('AU-X')(m) || queryOf('AU-X')(m)) && m['status'] !== 'expired')).toEqual([]);
    expect(await api.get('AU-X')).toMatchObject({ status: 'expired' });
    expect((await api.row('ICBC')).pendingDebit).toBe(before.pendingDebit);
    const late = await api.submission('AU-X', { verification: '42' });
    expect(late.status).toBe(409);
    expect(late.body.code).toBe('NOT_PENDING');
  });

  it('take the submission on the WebSocket as op submit-verification', async () => {
    await api.submit(ins('AU-W', 'authenticated'));
    await api.receipt(TOKENS.ICBC, 'AU-W', 'verify');
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    const bank = await StreamClient.connect(engine.base, TOKENS.CMB, 'json');
    try {
      const refused = await bank.request({ op: 'submit-verification', institution: 'PI0001', id: 'AU-W', verification: '777' });
      expect(refused.code === 'FORBIDDEN' || refused.results?.[0]?.code === 'FORBIDDEN').toBe(true);
      expect((await api.get('AU-W')).status).toBe('awaiting-submission');

      const ack = await c.request({ op: 'submit-verification', institution: 'PI0001', id: 'AU-W', verification: '777' });
      expect(ack.op).toBe('ack');
      expect(ack.results).toEqual([{ institution: 'PI0001', id: 'AU-W', status: 'pending' }]);
      // `institution` is optional: the token's own.
      const again = await c.request({ op: 'submit-verification', id: 'AU-W', verification: '777' }, 'json');
      expect(again.results![0]).toMatchObject({ id: 'AU-W', status: 'pending', duplicate: true });
      const wrong = await c.request({ op: 'submit-verification', id: 'AU-W', verification: '778' });
      expect(wrong.results![0]).toMatchObject({ id: 'AU-W', code: 'NOT_PENDING' });
      expect(itemOf(await waitFor(icbc, forwardOf('AU-W', 'receipt')), 'AU-W', 'receipt')).toMatchObject({ verification: '777' });
      expect((await api.receipt(TOKENS.ICBC, 'AU-W', 'confirm')).body.status).toBe('cleared');
    } finally {
      c.close();
      bank.close();
    }
  });
});

describe('payouts (付款)', () => {
  it('go to the payer bank, then the payee bank, and are netted only when the payee bank confirms', async () => {
    const before = { icbc: await api.row('ICBC'), cmb: await api.row('CMB') };
    expect((await api.submit(ins('PO-1', 'payout', { amount: 7000 }))).body).toEqual({ id: 'PO-1', status: 'pending' });
    const pf = itemOf(await waitFor(icbc, forwardOf('PO-1', 'payer')), 'PO-1', 'payer');
    expect(pf).toMatchObject({ institution: 'PI0001', id: 'PO-1', type: 'payout', step: 'payer', payer: 'ICBC', payee: 'CMB', amount: 7000 });
    await noneFor(cmb, forwardOf('PO-1'));
    const atPayer = await api.get('PO-1');
    expect(atPayer).toMatchObject({ status: 'pending', step: 'payer', type: 'payout' });
    expect((await api.row('ICBC')).pendingDebit).toBe(plus(before.icbc.pendingDebit, 7000));

    // The payee bank may not answer the payer leg; a bank of neither side does not see it.
    for (const outcome of ['confirm', 'decline']) {
      const early = await api.receipt(TOKENS.CMB, 'PO-1', outcome);
      expect(early.status).toBe(403);
      expect(early.body.code).toBe('FORBIDDEN');
    }
    // A bank that neither pays nor receives it acts outside its role.
    const stranger = await api.receipt(ABC_TOKEN, 'PO-1', 'confirm');
    expect(stranger.status).toBe(403);
    expect(stranger.body).toMatchObject({ code: 'FORBIDDEN', institution: 'PI0001', id: 'PO-1' });
    expect((await api.receipt(TOKENS.ICBC, 'PO-1', 'verify')).body).toMatchObject({ code: 'INVALID_FIELD', field: 'outcome' });
    expect(await api.get('PO-1')).toMatchObject({ status: 'pending', step: 'payer' });

    await sleep(30);
    const pc = await api.receipt(TOKENS.ICBC, 'PO-1', 'confirm');
    expect(pc.status).toBe(200);
    expect(pc.body).toEqual({ institution: 'PI0001', id: 'PO-1', status: 'pending' });
    const atPayee = await api.get('PO-1');
    expect(atPayee).toMatchObject({ status: 'pending', step: 'payee' });
    expect(atPayee.batch).toBeUndefined();
    expect(Date.parse(atPayee.deadline)).toBeGreaterThan(Date.parse(atPayer.deadline));
    // Confirmed by the payer bank but not netted: positions unchanged, the debit still reserved.
    const mid = { icbc: await api.row('ICBC'), cmb: await api.row('CMB') };
    expect(mid.icbc).toMatchObject({ net: before.icbc.net, paid: before.icbc.paid, pendingDebit: plus(before.icbc.pendingDebit, 7000) });
    expect(mid.cmb).toMatchObject({ net: before.cmb.net, received: before.cmb.received });
    // No notification yet: it is not final.
    await noneFor(inst, noteOf('PO-1'), 100);

    const qf = itemOf(await waitFor(cmb, forwardOf('PO-1', 'payee')), 'PO-1', 'payee');
    expect(qf).toMatchObject({ institution: 'PI0001', id: 'PO-1', type: 'payout', step: 'payee', payer: 'ICBC', payee: 'CMB', amount: 7000 });

    // The payer bank has answered its leg: a repeat is a duplicate, a decline now is not its to give.
    const rep = await api.receipt(TOKENS.ICBC, 'PO-1', 'confirm');
    expect(rep.status).toBe(200);
    expect(rep.body).toMatchObject({ status: 'pending', duplicate: true });
    const late = await api.receipt(TOKENS.ICBC, 'PO-1', 'decline');
    expect(late.status).toBe(403);
    expect(late.body.code).toBe('FORBIDDEN');
    expect(await api.get('PO-1')).toMatchObject({ status: 'pending', step: 'payee' });

    const fc = await api.receipt(TOKENS.CMB, 'PO-1', 'confirm');
    expect(fc.status).toBe(200);
    expect(fc.body).toMatchObject({ institution: 'PI0001', id: 'PO-1', status: 'cleared' });
    const batch = fc.body.batch;
    expect(batch).toMatch(/^\d{8}-\d{3}$/);
    expect(await waitFor(inst, noteOf('PO-1'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'PO-1', type: 'payout', status: 'cleared', batch });
    const after = { icbc: await api.row('ICBC'), cmb: await api.row('CMB') };
    expect(after.icbc).toMatchObject({ net: plus(before.icbc.net, -7000), paid: plus(before.icbc.paid, 7000), pendingDebit: before.icbc.pendingDebit });
    expect(after.cmb).toMatchObject({ net: plus(before.cmb.net, 7000), received: plus(before.cmb.received, 7000) });
    const final = await api.get('PO-1');
    expect(final).toMatchObject({ status: 'cleared', batch });
    expect(final.step).toBeUndefined();

    const again = await api.receipt(TOKENS.CMB, 'PO-1', 'confirm');
    expect(again.body).toMatchObject({ status: 'cleared', batch, duplicate: true });
    const contra = await api.receipt(TOKENS.CMB, 'PO-1', 'decline');
    expect(contra.status).toBe(409);
    expect(contra.body).toMatchObject({ code: 'NOT_PENDING', status: 'cleared' });
    expect((await api.row('ICBC')).paid).toBe(after.icbc.paid);
  });

  it('declined on the payer leg: declined with leg payer, never sent to the payee bank', async () => {
    const before = await api.row('ICBC');
    await api.submit(ins('PO-2', 'payout', { amount: 800 }));
    await waitFor(icbc, forwardOf('PO-2', 'payer'));
    const d = await api.receipt(TOKENS.ICBC, 'PO-2', 'decline', { reason: 'reserve short' });
    expect(d.status).toBe(200);
    expect(d.body).toMatchObject({ institution: 'PI0001', id: 'PO-2', status: 'declined' });
    expect(await waitFor(inst, noteOf('PO-2'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'PO-2', type: 'payout', status: 'declined', leg: 'payer' });
    expect(await api.get('PO-2')).toMatchObject({ status: 'declined', leg: 'payer' });
    await noneFor(cmb, forwardOf('PO-2'));
    const after = await api.row('ICBC');
    expect(after.pendingDebit).toBe(before.pendingDebit);
    expect(after.paid).toBe(before.paid);
  });

  it('declined on the payee leg: declined with leg payee, reservation released, nothing netted', async () => {
    const before = { icbc: await api.row('ICBC'), cmb: await api.row('CMB') };
    await api.submit(ins('PO-3', 'payout', { amount: 900 }));
    expect((await api.receipt(TOKENS.ICBC, 'PO-3', 'confirm')).body.status).toBe('pending');
    expect((await api.row('ICBC')).pendingDebit).toBe(plus(before.icbc.pendingDebit, 900));
    await waitFor(cmb, forwardOf('PO-3', 'payee'));
    const d = await api.receipt(TOKENS.CMB, 'PO-3', 'decline', { reason: 'account frozen' });
    expect(d.status).toBe(200);
    expect(d.body).toMatchObject({ institution: 'PI0001', id: 'PO-3', status: 'declined' });
    expect(await waitFor(inst, noteOf('PO-3'))).toEqual({ op: 'notify', institution: 'PI0001', id: 'PO-3', type: 'payout', status: 'declined', leg: 'payee' });
    expect(await api.get('PO-3')).toMatchObject({ status: 'declined', leg: 'payee' });
    const after = { icbc: await api.row('ICBC'), cmb: await api.row('CMB') };
    expect(after.icbc).toMatchObject({ pendingDebit: before.icbc.pendingDebit, paid: before.icbc.paid, net: before.icbc.net });
    expect(after.cmb).toMatchObject({ received: before.cmb.received, net: before.cmb.net });
    // The payer bank's confirm of its own leg, repeated, repeats an answer already taken.
    const rep = await api.receipt(TOKENS.ICBC, 'PO-3', 'confirm');
    expect(rep.body).toMatchObject({ status: 'declined', duplicate: true });
  });

  it('query the payee bank with step payee when its leg is overdue, then expire with leg payee', async () => {
    const before = await api.row('ICBC');
    await api.submit(ins('PO-Q', 'payout', { amount: 600, timeoutMs: 1200 }));
    expect((await api.receipt(TOKENS.ICBC, 'PO-Q', 'confirm')).body.status).toBe('pending');
    expect(await waitFor(cmb, queryOf('PO-Q'), 5000)).toEqual({ op: 'query', institution: 'PI0001', id: 'PO-Q', type: 'payout', step: 'payee' });
    // The payer bank answered its leg and is not asked about the payee leg.
    expect(icbc.unmatched.filter((m) => queryOf('PO-Q')(m) && m['step'] === 'payee')).toEqual([]);
    expect(await waitFor(inst, noteOf('PO-Q'), 5000)).toEqual({ op: 'notify', institution: 'PI0001', id: 'PO-Q', type: 'payout', status: 'expired', leg: 'payee' });
    expect(await api.get('PO-Q')).toMatchObject({ status: 'expired', leg: 'payee' });
    expect((await api.row('ICBC')).pendingDebit).toBe(before.pendingDebit);
  });

  it('keep the payer\'s debit reserved against its cap until the end', async () => {
    const boc = await StreamClient.connect(engine.base, BOC_TOKEN, 'json');
    await boc.request({ op: 'subscribe', topics: ['forwards'] });
    try {
      const first = await api.submit(ins('PC-1', 'payout', { payer: 'BOC', amount: 6000 }));
      expect(first.body.status).toBe('pending');
      expect((await api.receipt(BOC_TOKEN, 'PC-1', 'confirm')).body).toEqual({ institution: 'PI0001', id: 'PC-1', status: 'pending' });
      expect((await api.get('PC-1')).step).toBe('payee');
      expect((await api.row('BOC')).pendingDebit).toBe('6000');

      // In its payee leg the first payout still holds 6,000 of BOC's 10,000.
      const second = await api.submit(ins('PC-2', 'payout', { payer: 'BOC', amount: 5000 }));
      expect(second.status).toBe(422);
      expect(second.body).toMatchObject({ id: 'PC-2', status: 'rejected', code: 'DEBIT_CAP_EXCEEDED' });
      expect((await http(engine.base, 'GET', '/v1/instructions/PI0001/PC-2', { token: TOKENS.PI0001 })).status).toBe(404);
      const fits = await api.submit(ins('PC-3', 'payout', { payer: 'BOC', amount: 4000 }));
      expect(fits.body.status).toBe('pending');

      expect((await api.receipt(TOKENS.CMB, 'PC-1', 'confirm')).body.status).toBe('cleared');
      expect(await api.row('BOC')).toMatchObject({ paid: '6000', pendingDebit: '4000', net: '-6000' });
      // Netted and reserved together still bind.
      expect((await api.submit(ins('PC-4', 'payout', { payer: 'BOC', amount: 1 }))).body.code).toBe('DEBIT_CAP_EXCEEDED');
      expect((await api.receipt(BOC_TOKEN, 'PC-3', 'decline')).body.status).toBe('declined');
      expect((await api.row('BOC')).pendingDebit).toBe('0');
      expect((await api.submit(ins('PC-5', 'payout', { payer: 'BOC', amount: 4000 }))).body.status).toBe('pending');
      expect((await api.receipt(BOC_TOKEN, 'PC-5', 'decline')).body.status).toBe('declined');
    } finally {
      boc.close();
    }
  });
});

describe('steps across kill -9', () => {
  it('a payout in its payee leg and an authenticated payment awaiting submission keep their step and finish after the restart', async () => {
    const dir = dirs.make();
    const config = configFor(dir);
    let e = await startEngine(dir, config);
    const rapi = on(() => e);
    try {
      expect((await rapi.submit(ins('RS-PO', 'payout', { amount: 3000 }))).body.status).toBe('pending');
      expect((await rapi.receipt(TOKENS.ICBC, 'RS-PO', 'confirm')).body.status).toBe('pending');
      expect((await rapi.submit(ins('RS-AU', 'authenticated', { amount: 400 }))).body.status).toBe('pending');
      expect((await rapi.receipt(TOKENS.ICBC, 'RS-AU', 'verify')).body.status).toBe('awaiting-submission');
      const po = await rapi.get('RS-PO');
      const au = await rapi.get('RS-AU');
      expect(po).toMatchObject({ status: 'pending', step: 'payee' });
      expect(au).toMatchObject({ status: 'awaiting-submission', step: 'submission' });
      const before = await rapi.row('ICBC');
      expect(before.pendingDebit).toBe('3400');

      await e.kill9();
      e = await startEngine(dir, config);

      expect(await rapi.get('RS-PO')).toEqual(po);
      expect(await rapi.get('RS-AU')).toEqual(au);
      expect(await rapi.row('ICBC')).toMatchObject({ pendingDebit: '3400', paid: before.paid });

      const payee = await StreamClient.connect(e.base, TOKENS.CMB, 'json');
      const payer = await StreamClient.connect(e.base, TOKENS.ICBC, 'msgpack');
      const owner = await StreamClient.connect(e.base, TOKENS.PI0001, 'json');
      try {
        await owner.request({ op: 'subscribe', topics: ['notifications'] });
        await payee.request({ op: 'subscribe', topics: ['forwards'] });
        await payer.request({ op: 'subscribe', topics: ['forwards'] });
        expect(itemOf(await waitFor(payee, forwardOf('RS-PO')), 'RS-PO')).toMatchObject({ step: 'payee', type: 'payout', amount: 3000 });
        // Neither awaits the payer bank now.
        await noneFor(payer, (m) => forwardOf('RS-PO')(m) || forwardOf('RS-AU')(m), 400);
        // The payer bank's leg is answered and stays so.
        expect((await rapi.receipt(TOKENS.ICBC, 'RS-PO', 'decline')).status).toBe(403);

        const fc = await rapi.receipt(TOKENS.CMB, 'RS-PO', 'confirm');
        expect(fc.body).toMatchObject({ status: 'cleared' });
        expect(await waitFor(owner, noteOf('RS-PO'))).toMatchObject({ type: 'payout', status: 'cleared', batch: fc.body.batch });

        const s = await rapi.submission('RS-AU', { verification: '9999' });
        expect(s.body).toEqual({ institution: 'PI0001', id: 'RS-AU', status: 'pending' });
        expect(itemOf(await waitFor(payer, forwardOf('RS-AU', 'receipt')), 'RS-AU', 'receipt')).toMatchObject({ verification: '9999', type: 'authenticated' });
        expect((await rapi.receipt(TOKENS.ICBC, 'RS-AU', 'confirm')).body.status).toBe('cleared');
        expect(await waitFor(owner, noteOf('RS-AU'))).toMatchObject({ type: 'authenticated', status: 'cleared' });
      } finally {
        payee.close();
        payer.close();
        owner.close();
      }
      expect(await rapi.row('ICBC')).toMatchObject({ pendingDebit: '0', paid: plus(before.paid, 3400) });
      expect(await rapi.row('CMB')).toMatchObject({ received: '3400' });

      // The finished steps are durable too.
      await e.kill9();
      e = await startEngine(dir, config);
      expect(await rapi.get('RS-PO')).toMatchObject({ status: 'cleared' });
      expect(await rapi.get('RS-AU')).toMatchObject({ status: 'cleared' });
    } finally {
      await e.stop();
    }
  });
});
