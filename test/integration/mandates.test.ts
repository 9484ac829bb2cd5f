/**
 * Mandates (委托, 协议) over the real server: gateway signing (网关签约) with
 * the payer bank's mandate receipt, offline signing (线下签约) by the bank,
 * duplicates and validation, revocation (机构解约, 银行解约), scoped query
 * and paged listing (协议查询), the admission of `agreement` and `entrusted`
 * instructions under a mandate (with and without `requireMandates`), a
 * revocation racing a stream of payments, and durability across kill -9.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Ack, http, type HttpReply, noneFor, StreamClient, waitFor } from '../helpers/clients.js';
import { BANKS, startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

/** Bank tokens beyond the shared test principals: a bank that is neither payer nor payee of the mandates below. */
const ABC_TOKEN = 'test-token-bank-ABC-xxxxxxxxx';
const MAX_AMOUNT = 10_000_000;

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

function configFor(dir: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const config = testConfig(dir, { maxAmountCents: MAX_AMOUNT, receiptQueryScheduleMs: [], ...overrides });
  config['principals'] = [...(config['principals'] as object[]), { token: ABC_TOKEN, role: 'bank', id: 'ABC' }];
  return config;
}



const mandateForward = (id: string) => (m: Ack) => m.op === 'forward' && Array.isArray(m['mandates']) && (m['mandates'] as any[]).some((x) => x.id === id);
const mandateNote = (id: string) => (m: Ack) => m.op === 'notify' && m['mandate'] === id;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** An engine and short-hands bound to it. */
function on(engine: () => RunningEngine) {
  const base = () => engine().base;
  return {
    sign: (token: string, body: unknown): Promise<HttpReply> => http(base(), 'POST', '/v1/mandates', { token, body }),
    get: (token: string, institution: string, id: string): Promise<HttpReply> => http(base(), 'GET', `/v1/mandates/${institution}/${id}`, { token }),
    list: (token: string, query: string): Promise<HttpReply> => http(base(), 'GET', `/v1/mandates${query}`, { token }),
    revoke: (token: string, institution: string, id: string, body?: unknown): Promise<HttpReply> =>
      http(base(), 'POST', `/v1/mandates/${institution}/${id}/revoke`, { token, body }),
    mreceipt: (token: string, body: unknown): Promise<HttpReply> => http(base(), 'POST', '/v1/mandates/receipts', { token, body }),
    submit: (token: string, body: unknown): Promise<HttpReply> => http(base(), 'POST', '/v1/instructions', { token, body }),
    instruction: (token: string, institution: string, id: string): Promise<HttpReply> => http(base(), 'GET', `/v1/instructions/${institution}/${id}`, { token }),
    receipt: (token: string, body: unknown): Promise<HttpReply> => http(base(), 'POST', '/v1/receipts', { token, body }),
    row: async (bank: string): Promise<any> => (await http(base(), 'GET', `/v1/positions/${bank}`, { token: TOKENS.ops })).body,
  };
}

const agreement = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ id, type: 'agreement', payer: 'ICBC', payee: 'CMB', amount: 1000, ...extra });

// ---------------------------------------------------------------------------
// One engine for signing, receipts, revocation, scoping and admission.
// ---------------------------------------------------------------------------

let engine: RunningEngine;
const api = on(() => engine);

beforeAll(async () => {
  const dir = dirs.make();
  engine = await startEngine(dir, configFor(dir));
});

afterAll(async () => {
  await engine?.stop();
});

describe('gateway signing (网关签约)', () => {
  it('is pending, forwarded to the payer bank only, made active by its confirm, and notified to the institution', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    const icbc = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    await icbc.request({ op: 'subscribe', topics: ['forwards'] });
    const cmb = await StreamClient.connect(engine.base, TOKENS.CMB, 'json');
    await cmb.request({ op: 'subscribe', topics: ['forwards'] });
    try {
      const terms = { id: 'MG-1', kind: 'agreement', payer: 'ICBC', account: 'acct-ref-0001', perPaymentMaxCents: 50_000 };
      const r = await api.sign(TOKENS.PI0001, terms);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ institution: 'PI0001', ...terms, status: 'pending', via: 'gateway' });
      expect(r.body.createdAt).toMatch(ISO);
      expect(r.body.activatedAt).toBeUndefined();
      expect(r.body.duplicate).toBeUndefined();

      const fwd = await waitFor(icbc, mandateForward('MG-1'));
      const item = (fwd['mandates'] as any[]).find((x) => x.id === 'MG-1');
      expect(item).toMatchObject({ institution: 'PI0001', id: 'MG-1', kind: 'agreement', payer: 'ICBC', account: 'acct-ref-0001', perPaymentMaxCents: 50_000, status: 'pending', via: 'gateway' });
      // Only the payer bank is asked.
      await noneFor(cmb, mandateForward('MG-1'));

      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MG-1')).body).toMatchObject({ status: 'pending' });
      // Not usable yet.
      const early = await api.submit(TOKENS.PI0001, agreement('MG-1-early', { mandate: 'MG-1' }));
      expect(early.status).toBe(422);
      expect(early.body).toMatchObject({ id: 'MG-1-early', status: 'rejected', code: 'MANDATE_INVALID' });

      const confirm = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MG-1', outcome: 'confirm' });
      expect(confirm.status).toBe(200);
      expect(confirm.body).toMatchObject({ institution: 'PI0001', id: 'MG-1', status: 'active' });
      expect(confirm.body.duplicate).toBeUndefined();
      expect(await waitFor(inst, mandateNote('MG-1'))).toEqual({ op: 'notify', institution: 'PI0001', mandate: 'MG-1', status: 'active' });

      const view = (await api.get(TOKENS.PI0001, 'PI0001', 'MG-1')).body;
      expect(view).toMatchObject({ institution: 'PI0001', ...terms, status: 'active', via: 'gateway', createdAt: r.body.createdAt });
      expect(view.activatedAt).toMatch(ISO);
      expect(Date.parse(view.activatedAt)).toBeGreaterThanOrEqual(Date.parse(view.createdAt));
      expect(view.revokedAt).toBeUndefined();

      // Now it admits payments, and the earlier refused id may be used again.
      const ok = await api.submit(TOKENS.PI0001, agreement('MG-1-early', { mandate: 'MG-1' }));
      expect(ok.status).toBe(200);
      expect(ok.body).toMatchObject({ id: 'MG-1-early', status: 'cleared' });
    } finally {
      inst.close();
      icbc.close();
      cmb.close();
    }
  });

  it('is declined by the payer bank: declined, notified, never admits payments, cannot be revoked', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    try {
      expect((await api.sign(TOKENS.PI0001, { id: 'MG-D', kind: 'entrusted', payer: 'ICBC', account: 'acct-d' })).body.status).toBe('pending');
      const r = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MG-D', outcome: 'decline', reason: 'account closed' });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ institution: 'PI0001', id: 'MG-D', status: 'declined' });
      expect(await waitFor(inst, mandateNote('MG-D'))).toEqual({ op: 'notify', institution: 'PI0001', mandate: 'MG-D', status: 'declined' });
      const view = (await api.get(TOKENS.PI0001, 'PI0001', 'MG-D')).body;
      expect(view).toMatchObject({ status: 'declined', via: 'gateway', kind: 'entrusted' });
      expect(view.activatedAt).toBeUndefined();

      const pay = await api.submit(TOKENS.PI0001, { id: 'MG-D-pay', type: 'entrusted', payer: 'ICBC', payee: 'CMB', amount: 10, mandate: 'MG-D' });
      expect(pay.body).toMatchObject({ status: 'rejected', code: 'MANDATE_INVALID' });
      expect((await api.instruction(TOKENS.PI0001, 'PI0001', 'MG-D-pay')).status).toBe(404);

      const rev = await api.revoke(TOKENS.PI0001, 'PI0001', 'MG-D', {});
      expect(rev.status).toBe(409);
      expect(rev.body.code).toBe('NOT_PENDING');
      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MG-D')).body.status).toBe('declined');
    } finally {
      inst.close();
    }
  });

  it('is forwarded again to a payer bank that subscribes later, until it answers', async () => {
    expect((await api.sign(TOKENS.PI0001, { id: 'MG-LATE', kind: 'agreement', payer: 'ICBC', account: 'acct-late' })).body.status).toBe('pending');
    const icbc = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    try {
      await icbc.request({ op: 'subscribe', topics: ['forwards'] });
      await waitFor(icbc, mandateForward('MG-LATE'));
      const ack = await icbc.request({ op: 'mandate-receipt', receipts: [{ institution: 'PI0001', id: 'MG-LATE', outcome: 'confirm' }] });
      expect(ack.op).toBe('ack');
      expect(ack.results![0]).toMatchObject({ institution: 'PI0001', id: 'MG-LATE', status: 'active' });
    } finally {
      icbc.close();
    }
    const again = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    try {
      await again.request({ op: 'subscribe', topics: ['forwards'] });
      await noneFor(again, mandateForward('MG-LATE'), 500);
    } finally {
      again.close();
    }
  });
});

describe('mandate receipts', () => {
  it('refuse the wrong bank, repeat as duplicates, refuse contradictions and unknown mandates', async () => {
    expect((await api.sign(TOKENS.PI0001, { id: 'MR-X', kind: 'agreement', payer: 'ICBC', account: 'acct-x' })).body.status).toBe('pending');
    const wrong = await api.mreceipt(TOKENS.CMB, { institution: 'PI0001', id: 'MR-X', outcome: 'confirm' });
    expect(wrong.status).toBe(403);
    expect(wrong.body.code).toBe('FORBIDDEN');
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-X')).body.status).toBe('pending');

    const byInstitution = await api.mreceipt(TOKENS.PI0001, { institution: 'PI0001', id: 'MR-X', outcome: 'confirm' });
    expect(byInstitution.status).toBe(403);
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-X')).body.status).toBe('pending');

    const bad = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-X', outcome: 'verify' });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'INVALID_FIELD', field: 'outcome' });

    const first = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-X', outcome: 'confirm' });
    expect(first.body).toMatchObject({ status: 'active' });
    const repeat = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-X', outcome: 'confirm' });
    expect(repeat.status).toBe(200);
    expect(repeat.body).toMatchObject({ institution: 'PI0001', id: 'MR-X', status: 'active', duplicate: true });
    const contra = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-X', outcome: 'decline' });
    expect(contra.status).toBe(409);
    expect(contra.body).toMatchObject({ code: 'NOT_PENDING', status: 'active' });
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-X')).body.status).toBe('active');

    const unknown = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-NONE', outcome: 'confirm' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('NOT_FOUND');

    // An offline mandate was never pending: a receipt for it is not pending.
    expect((await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-OFF', kind: 'agreement', payer: 'ICBC', account: 'a' })).body.status).toBe('active');
    const offDecline = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MR-OFF', outcome: 'decline' });
    expect(offDecline.status).toBe(409);
    expect(offDecline.body.code).toBe('NOT_PENDING');
  });

  it('answer a batch item by item', async () => {
    await api.sign(TOKENS.PI0001, { id: 'MR-B1', kind: 'agreement', payer: 'ICBC', account: 'b1' });
    await api.sign(TOKENS.PI0001, { id: 'MR-B2', kind: 'agreement', payer: 'ICBC', account: 'b2' });
    const r = await api.mreceipt(TOKENS.ICBC, {
      receipts: [
        { institution: 'PI0001', id: 'MR-B1', outcome: 'confirm' },
        { institution: 'PI0001', id: 'MR-NOPE', outcome: 'confirm' },
        { institution: 'PI0001', id: 'MR-B2', outcome: 'decline' },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body.results).toHaveLength(3);
    expect(r.body.results[0]).toMatchObject({ id: 'MR-B1', status: 'active' });
    expect(r.body.results[1]).toMatchObject({ id: 'MR-NOPE', code: 'NOT_FOUND' });
    expect(r.body.results[2]).toMatchObject({ id: 'MR-B2', status: 'declined' });
  });

  it('travel on the WebSocket as op mandate-receipt, for banks only', async () => {
    await api.sign(TOKENS.PI0001, { id: 'MR-W1', kind: 'agreement', payer: 'ICBC', account: 'w1' });
    await api.sign(TOKENS.PI0001, { id: 'MR-W2', kind: 'entrusted', payer: 'ICBC', account: 'w2' });
    await api.sign(TOKENS.PI0001, { id: 'MR-W3', kind: 'entrusted', payer: 'ICBC', account: 'w3' });
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    try {
      const refused = await inst.request({ op: 'mandate-receipt', receipts: [{ institution: 'PI0001', id: 'MR-W3', outcome: 'confirm' }] });
      expect(refused.code === 'FORBIDDEN' || refused.results?.[0]?.code === 'FORBIDDEN').toBe(true);
      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-W3')).body.status).toBe('pending');

      const ack = await bank.request({
        op: 'mandate-receipt',
        receipts: [
          { institution: 'PI0001', id: 'MR-W1', outcome: 'confirm' },
          { institution: 'PI0001', id: 'MR-W2', outcome: 'decline', reason: 'payer refused' },
          { institution: 'PI0001', id: 'MR-W-NONE', outcome: 'confirm' },
        ],
      });
      expect(ack.op).toBe('ack');
      expect(ack.results).toHaveLength(3);
      expect(ack.results![0]).toMatchObject({ institution: 'PI0001', id: 'MR-W1', status: 'active' });
      expect(ack.results![1]).toMatchObject({ institution: 'PI0001', id: 'MR-W2', status: 'declined' });
      expect(ack.results![2]).toMatchObject({ id: 'MR-W-NONE', code: 'NOT_FOUND' });
      const again = await bank.request({ op: 'mandate-receipt', receipts: [{ institution: 'PI0001', id: 'MR-W1', outcome: 'confirm' }] }, 'json');
      expect(again.results![0]).toMatchObject({ status: 'active', duplicate: true });
      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-W1')).body.status).toBe('active');
      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MR-W2')).body.status).toBe('declined');
    } finally {
      inst.close();
      bank.close();
    }
  });
});

describe('offline signing (线下签约)', () => {
  it('by the payer bank is active at once and notified to the institution', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    try {
      const terms = { institution: 'PI0001', id: 'MO-1', kind: 'entrusted', payer: 'CMB', account: 'cmb-acct-77', perPaymentMaxCents: 2000 };
      const r = await api.sign(TOKENS.CMB, terms);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ ...terms, status: 'active', via: 'offline' });
      expect(r.body.createdAt).toMatch(ISO);
      expect(r.body.activatedAt).toMatch(ISO);
      expect(await waitFor(inst, mandateNote('MO-1'))).toEqual({ op: 'notify', institution: 'PI0001', mandate: 'MO-1', status: 'active' });
      expect((await api.get(TOKENS.PI0001, 'PI0001', 'MO-1')).body).toMatchObject({ status: 'active', via: 'offline' });
      const pay = await api.submit(TOKENS.PI0001, { id: 'MO-1-pay', type: 'entrusted', payer: 'CMB', payee: 'ICBC', amount: 2000, mandate: 'MO-1' });
      expect(pay.body).toMatchObject({ status: 'cleared' });
    } finally {
      inst.close();
    }
  });

  it('by a bank for another payer bank is FORBIDDEN, and stores nothing', async () => {
    const r = await api.sign(TOKENS.CMB, { institution: 'PI0001', id: 'MO-2', kind: 'agreement', payer: 'ICBC', account: 'x' });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe('FORBIDDEN');
    expect((await api.get(TOKENS.ops, 'PI0001', 'MO-2')).status).toBe(404);
  });

  it('needs the institution when a bank signs; an institution cannot sign in another institution\'s name', async () => {
    const noInst = await api.sign(TOKENS.ICBC, { id: 'MO-3', kind: 'agreement', payer: 'ICBC', account: 'x' });
    expect(noInst.status).toBe(400);
    expect(noInst.body).toMatchObject({ code: 'INVALID_FIELD', field: 'institution' });
    const badInst = await api.sign(TOKENS.ICBC, { institution: 'pi-1', id: 'MO-3', kind: 'agreement', payer: 'ICBC', account: 'x' });
    expect(badInst.status).toBe(400);
    expect(badInst.body).toMatchObject({ code: 'INVALID_FIELD', field: 'institution' });
    const foreign = await api.sign(TOKENS.PI0001, { institution: 'PI0002', id: 'MO-3', kind: 'agreement', payer: 'ICBC', account: 'x' });
    expect([400, 403]).toContain(foreign.status);
    expect((await api.get(TOKENS.ops, 'PI0002', 'MO-3')).status).toBe(404);
    expect((await api.get(TOKENS.ops, 'PI0001', 'MO-3')).status).toBe(404);
    // No token: UNAUTHORIZED.
    const anon = await http(engine.base, 'POST', '/v1/mandates', { body: { id: 'MO-3', kind: 'agreement', payer: 'ICBC', account: 'x' } });
    expect(anon.status).toBe(401);
    expect((await api.get(TOKENS.ops, 'PI0001', 'MO-3')).status).toBe(404);
  });
});

describe('signing the same id again', () => {
  it('with identical terms answers the stored mandate with duplicate: true; with any term different is DUPLICATE_CONFLICT', async () => {
    const terms = { id: 'MD-1', kind: 'agreement', payer: 'ICBC', account: 'dup-acct', perPaymentMaxCents: 9000 };
    const first = await api.sign(TOKENS.PI0001, terms);
    expect(first.body).toMatchObject({ status: 'pending' });
    const again = await api.sign(TOKENS.PI0001, terms);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ institution: 'PI0001', ...terms, status: 'pending', via: 'gateway', createdAt: first.body.createdAt, duplicate: true });

    for (const variant of [
      { ...terms, account: 'other-acct' },
      { ...terms, kind: 'entrusted' },
      { ...terms, payer: 'CMB' },
      { ...terms, perPaymentMaxCents: 9001 },
      { id: 'MD-1', kind: 'agreement', payer: 'ICBC', account: 'dup-acct' },
    ]) {
      const r = await api.sign(TOKENS.PI0001, variant);
      expect(r.status).toBe(409);
      expect(r.body.code).toBe('DUPLICATE_CONFLICT');
    }
    const stored = (await api.get(TOKENS.PI0001, 'PI0001', 'MD-1')).body;
    expect(stored).toMatchObject({ ...terms, status: 'pending' });

    // After the confirm, an identical signing still answers the stored (now active) mandate.
    await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MD-1', outcome: 'confirm' });
    const later = await api.sign(TOKENS.PI0001, terms);
    expect(later.status).toBe(200);
    expect(later.body).toMatchObject({ status: 'active', duplicate: true });

    // Another institution may use the same id: ids are per institution.
    const other = await api.sign(TOKENS.PI0002, { ...terms, account: 'pi2-acct' });
    expect(other.status).toBe(200);
    expect(other.body).toMatchObject({ institution: 'PI0002', id: 'MD-1', status: 'pending' });
    expect(other.body.duplicate).toBeUndefined();
  });

  it('offline: identical is a duplicate, different is DUPLICATE_CONFLICT', async () => {
    const terms = { institution: 'PI0001', id: 'MD-OFF', kind: 'entrusted', payer: 'CMB', account: 'off-acct' };
    const first = await api.sign(TOKENS.CMB, terms);
    expect(first.body).toMatchObject({ status: 'active', via: 'offline' });
    const again = await api.sign(TOKENS.CMB, terms);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ ...terms, status: 'active', duplicate: true, createdAt: first.body.createdAt });
    const diff = await api.sign(TOKENS.CMB, { ...terms, account: 'off-acct-2' });
    expect(diff.status).toBe(409);
    expect(diff.body.code).toBe('DUPLICATE_CONFLICT');
    expect((await api.get(TOKENS.ops, 'PI0001', 'MD-OFF')).body.account).toBe('off-acct');
  });
});

describe('signing validation', () => {
  const good = { id: 'MV-ok', kind: 'agreement', payer: 'ICBC', account: 'acct' };
  const CASES: [string, unknown, string, number, string | undefined][] = [
    ['not an object', [1, 2], 'INVALID_MESSAGE', 400, undefined],
    ['unknown key', { ...good, id: 'MV-1', colour: 'red' }, 'INVALID_FIELD', 400, 'colour'],
    ['missing id', { kind: 'agreement', payer: 'ICBC', account: 'a' }, 'INVALID_FIELD', 400, 'id'],
    ['id with a slash', { ...good, id: 'a/b' }, 'INVALID_FIELD', 400, 'id'],
    ['id too long', { ...good, id: 'm'.repeat(65) }, 'INVALID_FIELD', 400, 'id'],
    ['missing kind', { id: 'MV-2', payer: 'ICBC', account: 'a' }, 'INVALID_FIELD', 400, 'kind'],
    ['kind not a mandate kind', { ...good, id: 'MV-3', kind: 'gateway' }, 'INVALID_FIELD', 400, 'kind'],
    ['payer not a string', { ...good, id: 'MV-4', payer: 7 }, 'INVALID_FIELD', 400, 'payer'],
    ['missing payer', { id: 'MV-4b', kind: 'agreement', account: 'a' }, 'INVALID_FIELD', 400, 'payer'],
    ['unknown payer', { ...good, id: 'MV-5', payer: 'NOPE' }, 'UNKNOWN_BANK', 422, undefined],
    ['missing account', { id: 'MV-6', kind: 'agreement', payer: 'ICBC' }, 'INVALID_FIELD', 400, 'account'],
    ['empty account', { ...good, id: 'MV-7', account: '' }, 'INVALID_FIELD', 400, 'account'],
    ['account too long', { ...good, id: 'MV-8', account: 'a'.repeat(65) }, 'INVALID_FIELD', 400, 'account'],
    ['account with a control character', { ...good, id: 'MV-9', account: 'ab\ncd' }, 'INVALID_FIELD', 400, 'account'],
    ['account not a string', { ...good, id: 'MV-10', account: 12345 }, 'INVALID_FIELD', 400, 'account'],
    ['fractional limit', { ...good, id: 'MV-11', perPaymentMaxCents: 1.5 }, 'INVALID_FIELD', 400, 'perPaymentMaxCents'],
    ['limit as a string', { ...good, id: 'MV-12', perPaymentMaxCents: '100' }, 'INVALID_FIELD', 400, 'perPaymentMaxCents'],
    ['zero limit', { ...good, id: 'MV-13', perPaymentMaxCents: 0 }, 'AMOUNT_OUT_OF_RANGE', 422, undefined],
    ['limit above maxAmountCents', { ...good, id: 'MV-14', perPaymentMaxCents: MAX_AMOUNT + 1 }, 'AMOUNT_OUT_OF_RANGE', 422, undefined],
  ];
  for (const [name, body, code, status, field] of CASES) {
    it(`${name} → ${code}`, async () => {
      const r = await api.sign(TOKENS.PI0001, body);
      expect(r.status).toBe(status);
      expect(r.body.code).toBe(code);
      if (field !== undefined) expect(r.body.field).toBe(field);
      const id = (body as { id?: unknown }).id;
      if (typeof id === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(id)) expect((await api.get(TOKENS.ops, 'PI0001', id)).status).toBe(404);
    });
  }

  it('accepts the edges: a 64-character account and a limit of exactly maxAmountCents', async () => {
    const r = await api.sign(TOKENS.PI0001, { id: 'MV-edge', kind: 'entrusted', payer: 'CMB', account: 'z'.repeat(64), perPaymentMaxCents: MAX_AMOUNT });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'pending', perPaymentMaxCents: MAX_AMOUNT });
  });

  it('does not decode a body that is not JSON', async () => {
    const r = await http(engine.base, 'POST', '/v1/mandates', { token: TOKENS.PI0001, raw: '{"id":', contentType: 'application/json' });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('INVALID_MESSAGE');
  });
});

describe('revocation (机构解约, 银行解约)', () => {
  it('by the institution: revoked, notified, idempotent; later payments refused, earlier ones stand', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    await inst.request({ op: 'subscribe', topics: ['notifications'] });
    try {
      await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MX-1', kind: 'agreement', payer: 'ICBC', account: 'x1' });
      await waitFor(inst, mandateNote('MX-1'));
      const before = await api.submit(TOKENS.PI0001, agreement('MX-1-a', { mandate: 'MX-1' }));
      expect(before.body.status).toBe('cleared');

      const r = await api.revoke(TOKENS.PI0001, 'PI0001', 'MX-1', {});
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ institution: 'PI0001', id: 'MX-1', status: 'revoked', revokedBy: 'institution', via: 'offline' });
      expect(r.body.revokedAt).toMatch(ISO);
      expect(await waitFor(inst, mandateNote('MX-1'))).toEqual({ op: 'notify', institution: 'PI0001', mandate: 'MX-1', status: 'revoked' });

      // Idempotent: the same view, whoever asks again; no second notification.
      const again = await api.revoke(TOKENS.PI0001, 'PI0001', 'MX-1');
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ status: 'revoked', revokedBy: 'institution', revokedAt: r.body.revokedAt });
      const byBank = await api.revoke(TOKENS.ICBC, 'PI0001', 'MX-1', {});
      expect(byBank.status).toBe(200);
      expect(byBank.body).toMatchObject({ status: 'revoked', revokedBy: 'institution', revokedAt: r.body.revokedAt });
      await noneFor(inst, mandateNote('MX-1'));

      const after = await api.submit(TOKENS.PI0001, agreement('MX-1-b', { mandate: 'MX-1' }));
      expect(after.status).toBe(422);
      expect(after.body).toMatchObject({ id: 'MX-1-b', status: 'rejected', code: 'MANDATE_INVALID' });
      expect(typeof after.body.message).toBe('string');
      expect((await api.instruction(TOKENS.PI0001, 'PI0001', 'MX-1-b')).status).toBe(404);
      expect((await api.instruction(TOKENS.PI0001, 'PI0001', 'MX-1-a')).body).toMatchObject({ status: 'cleared', mandate: 'MX-1' });
    } finally {
      inst.close();
    }
  });

  it('by the payer bank (empty body) and by an operator record who revoked', async () => {
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MX-2', kind: 'agreement', payer: 'ICBC', account: 'x2' });
    const r = await api.revoke(TOKENS.ICBC, 'PI0001', 'MX-2');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'revoked', revokedBy: 'bank' });
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MX-2')).body).toMatchObject({ status: 'revoked', revokedBy: 'bank', revokedAt: r.body.revokedAt });

    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MX-3', kind: 'agreement', payer: 'ICBC', account: 'x3' });
    const op = await api.revoke(TOKENS.ops, 'PI0001', 'MX-3', {});
    expect(op.status).toBe(200);
    expect(op.body).toMatchObject({ status: 'revoked', revokedBy: 'operator' });
  });

  it('of a pending gateway mandate: revoked, and the bank\'s later confirm is refused', async () => {
    await api.sign(TOKENS.PI0001, { id: 'MX-4', kind: 'agreement', payer: 'ICBC', account: 'x4' });
    const r = await api.revoke(TOKENS.PI0001, 'PI0001', 'MX-4', {});
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'revoked', revokedBy: 'institution' });
    const late = await api.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MX-4', outcome: 'confirm' });
    expect(late.status).toBe(409);
    expect(late.body.code).toBe('NOT_PENDING');
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MX-4')).body.status).toBe('revoked');
  });

  it('is refused to another institution and to a bank that is not the payer (FORBIDDEN), and NOT_FOUND for no such mandate', async () => {
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MX-5', kind: 'agreement', payer: 'ICBC', account: 'x5' });
    const other = await api.revoke(TOKENS.PI0002, 'PI0001', 'MX-5', {});
    expect(other.status).toBe(403);
    expect(other.body.code).toBe('FORBIDDEN');
    const bank = await api.revoke(TOKENS.CMB, 'PI0001', 'MX-5', {});
    expect(bank.status).toBe(403);
    expect(bank.body.code).toBe('FORBIDDEN');
    const unknown = await api.revoke(TOKENS.PI0001, 'PI0001', 'MX-NONE', {});
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('NOT_FOUND');
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MX-5')).body.status).toBe('active');
    expect((await api.submit(TOKENS.PI0001, agreement('MX-5-pay', { mandate: 'MX-5' }))).body.status).toBe('cleared');
  });
});

describe('query (协议查询)', () => {
  it('is scoped: own institution, payer bank and operator see it; another institution or bank is FORBIDDEN; no such mandate NOT_FOUND', async () => {
    await api.sign(TOKENS.PI0001, { id: 'MQ-1', kind: 'entrusted', payer: 'ICBC', account: 'q1' });
    for (const token of [TOKENS.PI0001, TOKENS.ICBC, TOKENS.ops]) {
      const r = await api.get(token, 'PI0001', 'MQ-1');
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ institution: 'PI0001', id: 'MQ-1', kind: 'entrusted', payer: 'ICBC', account: 'q1', status: 'pending', via: 'gateway' });
    }
    const other = await api.get(TOKENS.PI0002, 'PI0001', 'MQ-1');
    expect(other.status).toBe(403);
    expect(other.body.code).toBe('FORBIDDEN');
    for (const token of [TOKENS.CMB, ABC_TOKEN]) {
      const r = await api.get(token, 'PI0001', 'MQ-1');
      expect(r.status).toBe(403);
      expect(r.body.code).toBe('FORBIDDEN');
    }
    expect((await api.get(TOKENS.PI0001, 'PI0001', 'MQ-NONE')).status).toBe(404);
    expect((await api.get(TOKENS.ops, 'PI0001', 'MQ-NONE')).body.code).toBe('NOT_FOUND');
    expect((await http(engine.base, 'GET', '/v1/mandates/PI0001/MQ-1', {})).status).toBe(401);
  });
});

describe('admission of agreement and entrusted instructions', () => {
  beforeAll(async () => {
    // MA-1: active, ICBC, at most 10,000 cents a payment. MA-P: pending. MA-R: revoked. MA-2: PI0002's.
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MA-1', kind: 'agreement', payer: 'ICBC', account: 'a1', perPaymentMaxCents: 10_000 });
    await api.sign(TOKENS.PI0001, { id: 'MA-P', kind: 'agreement', payer: 'ICBC', account: 'ap' });
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MA-R', kind: 'agreement', payer: 'ICBC', account: 'ar' });
    await api.revoke(TOKENS.PI0001, 'PI0001', 'MA-R', {});
    await api.sign(TOKENS.ICBC, { institution: 'PI0002', id: 'MA-2', kind: 'agreement', payer: 'ICBC', account: 'a2' });
  });

  it('clears under an active mandate (single- and two-phase, both kinds), and shows the mandate in the query view', async () => {
    const before = await api.row('ICBC');
    const one = await api.submit(TOKENS.PI0001, agreement('AD-1', { mandate: 'MA-1', amount: 10_000 }));
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: 'AD-1', status: 'cleared' });
    const ent = await api.submit(TOKENS.PI0001, { id: 'AD-2', type: 'entrusted', payer: 'ICBC', payee: 'BOC', amount: 500, mandate: 'MA-1' });
    expect(ent.body).toMatchObject({ id: 'AD-2', status: 'cleared' });
    expect((await api.instruction(TOKENS.PI0001, 'PI0001', 'AD-1')).body).toMatchObject({ type: 'agreement', mandate: 'MA-1', status: 'cleared', amount: 10_000 });
    expect((await api.row('ICBC')).paid).toBe(String(BigInt(before.paid) + 10_500n));

    const two = await api.submit(TOKENS.PI0001, agreement('AD-3', { mandate: 'MA-1', twoPhase: true, timeoutMs: 600_000 }));
    expect(two.body).toMatchObject({ id: 'AD-3', status: 'pending' });
    const rc = await api.receipt(TOKENS.ICBC, { institution: 'PI0001', id: 'AD-3', outcome: 'confirm' });
    expect(rc.body).toMatchObject({ status: 'cleared' });

    // Without a mandate (requireMandates is off) agreement instructions go through as before.
    expect((await api.submit(TOKENS.PI0001, agreement('AD-4'))).body.status).toBe('cleared');
  });

  const REFUSALS: [string, Record<string, unknown>, string][] = [
    ['a mandate that does not exist', agreement('AR-1', { mandate: 'MA-NONE' }), 'PI0001'],
    ['a pending mandate', agreement('AR-2', { mandate: 'MA-P' }), 'PI0001'],
    ['a revoked mandate', agreement('AR-3', { mandate: 'MA-R' }), 'PI0001'],
    ['a mandate of another payer bank', agreement('AR-4', { mandate: 'MA-1', payer: 'CMB', payee: 'ICBC' }), 'PI0001'],
    ['an amount above perPaymentMaxCents', agreement('AR-5', { mandate: 'MA-1', amount: 10_001 }), 'PI0001'],
    ['a mandate of another institution', agreement('AR-6', { mandate: 'MA-1' }), 'PI0002'],
    ['an entrusted payment over the limit', { id: 'AR-7', type: 'entrusted', payer: 'ICBC', payee: 'CMB', amount: 20_000, mandate: 'MA-1' }, 'PI0001'],
    ['a two-phase payment under a revoked mandate', agreement('AR-8', { mandate: 'MA-R', twoPhase: true }), 'PI0001'],
  ];
  for (const [name, ins, who] of REFUSALS) {
    it(`refuses ${name} with MANDATE_INVALID and stores nothing`, async () => {
      const token = TOKENS[who as 'PI0001' | 'PI0002'];
      const before = await api.row('ICBC');
      const r = await api.submit(token, ins);
      expect(r.status).toBe(422);
      expect(r.body).toMatchObject({ id: ins['id'], status: 'rejected', code: 'MANDATE_INVALID' });
      expect(r.body.message.length).toBeGreaterThan(0);
      expect((await api.instruction(token, who, ins['id'] as string)).status).toBe(404);
      const after = await api.row('ICBC');
      expect(after).toMatchObject({ paid: before.paid, received: before.received, pendingDebit: before.pendingDebit });
    });
  }

  it('answers each item of a batch on its own, over HTTP and WebSocket', async () => {
    const r = await api.submit(TOKENS.PI0001, { instructions: [agreement('AB-1', { mandate: 'MA-1' }), agreement('AB-2', { mandate: 'MA-R' }), agreement('AB-3', { mandate: 'MA-1', amount: 10_001 })] });
    expect(r.status).toBe(200);
    expect(r.body.results.map((x: any) => x.status)).toEqual(['cleared', 'rejected', 'rejected']);
    expect(r.body.results[1].code).toBe('MANDATE_INVALID');
    expect(r.body.results[2].code).toBe('MANDATE_INVALID');
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    try {
      const ack = await c.submit([agreement('AB-4', { mandate: 'MA-1' }), agreement('AB-5', { mandate: 'MA-P' })]);
      expect(ack.results![0]).toMatchObject({ id: 'AB-4', status: 'cleared' });
      expect(ack.results![1]).toMatchObject({ id: 'AB-5', status: 'rejected', code: 'MANDATE_INVALID' });
    } finally {
      c.close();
    }
  });

  it('refuses `mandate` on gateway, authenticated and payout instructions with INVALID_FIELD, and a malformed mandate id', async () => {
    for (const type of ['gateway', 'authenticated', 'payout']) {
      const r = await api.submit(TOKENS.PI0001, { id: `AF-${type}`, type, payer: 'ICBC', payee: 'CMB', amount: 100, mandate: 'MA-1' });
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ status: 'rejected', code: 'INVALID_FIELD', field: 'mandate' });
      expect((await api.instruction(TOKENS.PI0001, 'PI0001', `AF-${type}`)).status).toBe(404);
    }
    for (const mandate of ['a/b', '', 'm'.repeat(65), 42]) {
      const r = await api.submit(TOKENS.PI0001, agreement('AF-bad', { mandate }));
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ code: 'INVALID_FIELD', field: 'mandate' });
    }
  });

  it('keeps duplicates: an identical resubmission after revocation is a duplicate; a different mandate is DUPLICATE_CONFLICT', async () => {
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MA-DUP', kind: 'agreement', payer: 'ICBC', account: 'd' });
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MA-DUP2', kind: 'agreement', payer: 'ICBC', account: 'd2' });
    const ins = agreement('AP-1', { mandate: 'MA-DUP', reference: 'order 77' });
    const first = await api.submit(TOKENS.PI0001, ins);
    expect(first.body).toMatchObject({ status: 'cleared' });
    const paid = (await api.row('ICBC')).paid;
    expect((await api.revoke(TOKENS.PI0001, 'PI0001', 'MA-DUP', {})).body.status).toBe('revoked');

    const again = await api.submit(TOKENS.PI0001, ins);
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ id: 'AP-1', status: 'cleared', batch: first.body.batch, duplicate: true });
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    try {
      expect((await c.submit([ins])).results![0]).toMatchObject({ status: 'cleared', duplicate: true });
    } finally {
      c.close();
    }

    const other = await api.submit(TOKENS.PI0001, { ...ins, mandate: 'MA-DUP2' });
    expect(other.status).toBe(409);
    expect(other.body).toMatchObject({ id: 'AP-1', status: 'rejected', code: 'DUPLICATE_CONFLICT' });
    const withoutMandate: Record<string, unknown> = { ...ins };
    delete withoutMandate['mandate'];
    const none = await api.submit(TOKENS.PI0001, withoutMandate);
    expect(none.status).toBe(409);
    expect(none.body.code).toBe('DUPLICATE_CONFLICT');
    expect((await api.row('ICBC')).paid).toBe(paid);
    expect((await api.instruction(TOKENS.PI0001, 'PI0001', 'AP-1')).body).toMatchObject({ mandate: 'MA-DUP', status: 'cleared' });

    // A stored instruction without a mandate, resubmitted with one: also a conflict.
    expect((await api.submit(TOKENS.PI0001, agreement('AP-2'))).body.status).toBe('cleared');
    const added = await api.submit(TOKENS.PI0001, agreement('AP-2', { mandate: 'MA-DUP2' }));
    expect(added.status).toBe(409);
    expect(added.body.code).toBe('DUPLICATE_CONFLICT');
  });
});

describe('a revocation racing payments', () => {
  it('splits cleanly: what was answered cleared is stored, what was refused is MANDATE_INVALID and absent, nothing sent after the revocation answer clears', async () => {
    await api.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MRACE', kind: 'entrusted', payer: 'ICBC', account: 'race' });
    const payees = ['ABC', 'BOC', 'CCB', 'BOCOM', 'CMB', 'CITIC', 'SPDB'];
    const AMOUNT = 3;
    const PER_FRAME = 40;
    const WINDOW = 4;
    const before = await api.row('ICBC');
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    interface Frame {
      items: Record<string, unknown>[];
      sentAt: number;
      results?: any[];
    }
    const frames: Frame[] = [];
    let revokeAnsweredAt = Infinity;
    let revokeReply: HttpReply | undefined;
    let revoke: Promise<void> | undefined;
    let sentAfterAnswer = 0;
    const inflight = new Set<Promise<void>>();
    try {
      for (let f = 0; sentAfterAnswer < 12; f++) {
        if (f > 2000) throw new Error('the revocation was never answered');
        while (inflight.size >= WINDOW) await Promise.race(inflight);
        if (f === 10) {
          revoke = api.revoke(TOKENS.PI0001, 'PI0001', 'MRACE', {}).then((r) => {
            revokeAnsweredAt = performance.now();
            revokeReply = r;
          });
        }
        const items = Array.from({ length: PER_FRAME }, (_, i) => ({
          id: `RACE-${f}-${i}`,
          type: 'entrusted',
          payer: 'ICBC',
          payee: payees[(f * PER_FRAME + i) % payees.length]!,
          amount: AMOUNT,
          mandate: 'MRACE',
        }));
        const sentAt = performance.now();
        if (sentAt > revokeAnsweredAt) sentAfterAnswer++;
        const frame: Frame = { items, sentAt };
        frames.push(frame);
        const p: Promise<void> = c.submit(items).then((ack) => {
          frame.results = ack.results;
          inflight.delete(p);
        });
        inflight.add(p);
        // Yield to the event loop so that the revocation's answer is seen as soon as it arrives.
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all(inflight);
      await revoke;
    } finally {
      c.close();
    }

    expect(revokeReply!.status).toBe(200);
    expect(revokeReply!.body).toMatchObject({ status: 'revoked', revokedBy: 'institution' });
    const cleared: string[] = [];
    const refused: string[] = [];
    for (const frame of frames) {
      expect(frame.results).toHaveLength(frame.items.length);
      frame.results!.forEach((r, i) => {
        expect(r.id).toBe(frame.items[i]!['id']);
        if (r.status === 'cleared') {
          // Clean split: nothing sent after the revocation was answered was admitted.
          expect(frame.sentAt).toBeLessThan(revokeAnsweredAt);
          cleared.push(r.id);
        } else {
          expect(r).toMatchObject({ status: 'rejected', code: 'MANDATE_INVALID' });
          refused.push(r.id);
        }
      });
    }
    expect(cleared.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThanOrEqual(12 * PER_FRAME);

    // Every answer is the truth: cleared ones are stored, refused ones are not.
    const check = async (ids: string[], want: number, status?: string): Promise<void> => {
      for (let i = 0; i < ids.length; i += 50) {
        const replies = await Promise.all(ids.slice(i, i + 50).map((id) => api.instruction(TOKENS.PI0001, 'PI0001', id)));
        replies.forEach((r, k) => {
          expect(r.status, ids[i + k]).toBe(want);
          if (status !== undefined) expect(r.body).toMatchObject({ status, mandate: 'MRACE' });
        });
      }
    };
    await check(cleared, 200, 'cleared');
    await check(refused, 404);
    const after = await api.row('ICBC');
    expect(BigInt(after.paid) - BigInt(before.paid)).toBe(BigInt(cleared.length * AMOUNT));

    // An identical resubmission of an admitted one is still a duplicate now that the mandate is revoked.
    const first = frames[0]!;
    const again = await api.submit(TOKENS.PI0001, first.items[0]);
    expect(again.body).toMatchObject({ status: 'cleared', duplicate: true });
  });
});

describe('listing (GET /v1/mandates)', () => {
  let le: RunningEngine;
  const lapi = on(() => le);

  beforeAll(async () => {
    const dir = dirs.make();
    le = await startEngine(dir, configFor(dir));
    for (let i = 0; i < 5; i++) await lapi.sign(TOKENS.PI0002, { id: `L-0${i}`, kind: 'agreement', payer: 'ICBC', account: `l${i}` });
    for (let i = 5; i < 7; i++) await lapi.sign(TOKENS.CMB, { institution: 'PI0002', id: `L-0${i}`, kind: 'entrusted', payer: 'CMB', account: `l${i}` });
    await lapi.sign(TOKENS.PI0001, { id: 'L-X', kind: 'agreement', payer: 'ICBC', account: 'lx' });
  });

  afterAll(async () => {
    await le?.stop();
  });

  async function all(token: string, query: string, limit: number): Promise<any[]> {
    const out: any[] = [];
    let after: string | null = null;
    for (let page = 0; page < 50; page++) {
      const sep = query === '' ? '?' : '&';
      const r = await lapi.list(token, `${query}${sep}limit=${limit}${after === null ? '' : `&after=${encodeURIComponent(after)}`}`);
      expect(r.status).toBe(200);
      expect(r.body.mandates.length).toBeLessThanOrEqual(limit);
      out.push(...r.body.mandates);
      after = r.body.next;
      if (after === null) return out;
      expect(typeof after).toBe('string');
    }
    throw new Error('paging did not end');
  }

  it('pages an institution\'s own mandates in id order with limit, after and next', async () => {
    const p1 = await lapi.list(TOKENS.PI0002, '?institution=PI0002&limit=3');
    expect(p1.status).toBe(200);
    expect(p1.body.mandates.map((m: any) => m.id)).toEqual(['L-00', 'L-01', 'L-02']);
    expect(typeof p1.body.next).toBe('string');
    const p2 = await lapi.list(TOKENS.PI0002, `?institution=PI0002&limit=3&after=${encodeURIComponent(p1.body.next)}`);
    expect(p2.body.mandates.map((m: any) => m.id)).toEqual(['L-03', 'L-04', 'L-05']);
    const p3 = await lapi.list(TOKENS.PI0002, `?institution=PI0002&limit=3&after=${encodeURIComponent(p2.body.next)}`);
    expect(p3.body.mandates.map((m: any) => m.id)).toEqual(['L-06']);
    expect(p3.body.next).toBeNull();
    expect(p1.body.mandates[0]).toMatchObject({ institution: 'PI0002', id: 'L-00', kind: 'agreement', payer: 'ICBC', account: 'l0', status: 'pending', via: 'gateway' });
    expect(p2.body.mandates[2]).toMatchObject({ institution: 'PI0002', id: 'L-05', payer: 'CMB', status: 'active', via: 'offline' });

    const whole = await lapi.list(TOKENS.PI0002, '?institution=PI0002');
    expect(whole.body.mandates.map((m: any) => m.id)).toEqual(['L-00', 'L-01', 'L-02', 'L-03', 'L-04', 'L-05', 'L-06']);
    expect(whole.body.next).toBeNull();
    expect((await all(TOKENS.PI0002, '?institution=PI0002', 1)).map((m) => m.id)).toEqual(['L-00', 'L-01', 'L-02', 'L-03', 'L-04', 'L-05', 'L-06']);
  });

  it('shows an institution only its own, and refuses another institution\'s list', async () => {
    const own = await all(TOKENS.PI0002, '', 2);
    expect(own.map((m) => m.id)).toEqual(['L-00', 'L-01', 'L-02', 'L-03', 'L-04', 'L-05', 'L-06']);
    expect(own.every((m) => m.institution === 'PI0002')).toBe(true);
    const foreign = await lapi.list(TOKENS.PI0002, '?institution=PI0001');
    expect(foreign.status).toBe(403);
    expect(foreign.body.code).toBe('FORBIDDEN');
    expect((await lapi.list(TOKENS.PI0001, '')).body.mandates.map((m: any) => m.id)).toEqual(['L-X']);
  });

  it('shows a bank only the mandates it is payer of, ordered by institution then id', async () => {
    const icbc = await all(TOKENS.ICBC, '', 4);
    expect(icbc.map((m) => `${m.institution}/${m.id}`)).toEqual(['PI0001/L-X', 'PI0002/L-00', 'PI0002/L-01', 'PI0002/L-02', 'PI0002/L-03', 'PI0002/L-04']);
    const icbc2 = await lapi.list(TOKENS.ICBC, '?institution=PI0002');
    expect(icbc2.body.mandates.map((m: any) => m.id)).toEqual(['L-00', 'L-01', 'L-02', 'L-03', 'L-04']);
    const cmb = await lapi.list(TOKENS.CMB, '');
    expect(cmb.body.mandates.map((m: any) => m.id)).toEqual(['L-05', 'L-06']);
    const abc = await lapi.list(ABC_TOKEN, '');
    expect(abc.status).toBe(200);
    expect(abc.body).toEqual({ mandates: [], next: null });
  });

  it('lets an operator see all and filter by status', async () => {
    const every = await all(TOKENS.ops, '', 3);
    expect(every.map((m) => `${m.institution}/${m.id}`)).toEqual(['PI0001/L-X', ...['L-00', 'L-01', 'L-02', 'L-03', 'L-04', 'L-05', 'L-06'].map((id) => `PI0002/${id}`)]);
    const active = await lapi.list(TOKENS.ops, '?institution=PI0002&status=active');
    expect(active.body.mandates.map((m: any) => m.id)).toEqual(['L-05', 'L-06']);
    const pending = await lapi.list(TOKENS.PI0002, '?status=pending');
    expect(pending.body.mandates.map((m: any) => m.id)).toEqual(['L-00', 'L-01', 'L-02', 'L-03', 'L-04']);
    await lapi.revoke(TOKENS.PI0002, 'PI0002', 'L-01', {});
    const revoked = await lapi.list(TOKENS.ops, '?status=revoked');
    expect(revoked.body.mandates.map((m: any) => `${m.institution}/${m.id}`)).toEqual(['PI0002/L-01']);
  });

  it('refuses a bad limit', async () => {
    for (const limit of ['0', '1001', 'x', '1.5']) {
      const r = await lapi.list(TOKENS.ops, `?limit=${limit}`);
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ code: 'INVALID_FIELD', field: 'limit' });
    }
    expect((await lapi.list(TOKENS.ops, '?limit=1000')).status).toBe(200);
    expect((await http(le.base, 'GET', '/v1/mandates', {})).status).toBe(401);
  });
});

describe('requireMandates: true', () => {
  let re: RunningEngine;
  let rdir: string;
  let rconfig: Record<string, unknown>;
  const rapi = on(() => re);

  beforeAll(async () => {
    rdir = dirs.make();
    rconfig = configFor(rdir, {
      requireMandates: true,
      banks: BANKS.map((code) => (code === 'ABC' ? { code, name: 'capped', debitCapCents: 1000 } : { code, name: code })),
      mandates: [
        { institution: 'PI0001', id: 'M-CFG', kind: 'agreement', payer: 'ICBC', account: 'cfg-acct' },
        { institution: 'PI0001', id: 'M-CFG-CMB', kind: 'entrusted', payer: 'CMB', account: 'cfg-cmb', perPaymentMaxCents: 5000 },
      ],
    });
    re = await startEngine(rdir, rconfig);
  });

  afterAll(async () => {
    await re?.stop();
  });

  it('makes configured mandates active offline at start', async () => {
    const r = await rapi.get(TOKENS.PI0001, 'PI0001', 'M-CFG');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ institution: 'PI0001', id: 'M-CFG', kind: 'agreement', payer: 'ICBC', account: 'cfg-acct', status: 'active', via: 'offline' });
    expect((await rapi.get(TOKENS.CMB, 'PI0001', 'M-CFG-CMB')).body).toMatchObject({ status: 'active', perPaymentMaxCents: 5000 });
  });

  it('refuses agreement and entrusted instructions without a mandate, and admits them with one', async () => {
    for (const ins of [
      agreement('RQ-1'),
      { id: 'RQ-2', type: 'entrusted', payer: 'ICBC', payee: 'CMB', amount: 100 },
      agreement('RQ-3', { twoPhase: true }),
      // Checked before the debit cap: ABC's cap would refuse this too.
      agreement('RQ-4', { payer: 'ABC', amount: 5000 }),
    ]) {
      const r = await rapi.submit(TOKENS.PI0001, ins);
      expect(r.status).toBe(422);
      expect(r.body).toMatchObject({ id: ins['id'], status: 'rejected', code: 'MANDATE_INVALID' });
      expect((await rapi.instruction(TOKENS.PI0001, 'PI0001', ins['id'] as string)).status).toBe(404);
    }
    expect((await rapi.submit(TOKENS.PI0001, agreement('RQ-1', { mandate: 'M-CFG' }))).body).toMatchObject({ status: 'cleared' });
    expect((await rapi.submit(TOKENS.PI0001, { id: 'RQ-2', type: 'entrusted', payer: 'CMB', payee: 'ICBC', amount: 5000, mandate: 'M-CFG-CMB' })).body).toMatchObject({ status: 'cleared' });
    expect((await rapi.submit(TOKENS.PI0001, { id: 'RQ-5', type: 'entrusted', payer: 'CMB', payee: 'ICBC', amount: 5001, mandate: 'M-CFG-CMB' })).body).toMatchObject({ code: 'MANDATE_INVALID' });
    // Another institution cannot use PI0001's mandate.
    expect((await rapi.submit(TOKENS.PI0002, agreement('RQ-6', { mandate: 'M-CFG' }))).body).toMatchObject({ code: 'MANDATE_INVALID' });
  });

  it('does not require a mandate of gateway, authenticated and payout instructions', async () => {
    for (const type of ['gateway', 'authenticated', 'payout']) {
      const r = await rapi.submit(TOKENS.PI0001, { id: `RQ-${type}`, type, payer: 'ICBC', payee: 'CMB', amount: 100 });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ id: `RQ-${type}`, status: 'cleared' });
      const two = await rapi.submit(TOKENS.PI0001, { id: `RQ-${type}-2p`, type, payer: 'ICBC', payee: 'CMB', amount: 100, twoPhase: true, timeoutMs: 600_000 });
      expect(two.body).toMatchObject({ status: 'pending' });
    }
  });

  it('does not bring back a configured mandate that was revoked, after a restart', async () => {
    expect((await rapi.revoke(TOKENS.ICBC, 'PI0001', 'M-CFG', {})).body).toMatchObject({ status: 'revoked', revokedBy: 'bank' });
    await re.kill9();
    re = await startEngine(rdir, rconfig);
    expect((await rapi.get(TOKENS.PI0001, 'PI0001', 'M-CFG')).body).toMatchObject({ status: 'revoked', revokedBy: 'bank' });
    expect((await rapi.submit(TOKENS.PI0001, agreement('RQ-7', { mandate: 'M-CFG' }))).body).toMatchObject({ code: 'MANDATE_INVALID' });
    expect((await rapi.get(TOKENS.PI0001, 'PI0001', 'M-CFG-CMB')).body).toMatchObject({ status: 'active' });
  });
});

describe('durability', () => {
  it('keeps every mandate and its status across kill -9, and admits by it after the restart', async () => {
    const dir = dirs.make();
    const config = configFor(dir);
    let e = await startEngine(dir, config);
    const kapi = on(() => e);
    try {
      await kapi.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MK-A', kind: 'agreement', payer: 'ICBC', account: 'ka', perPaymentMaxCents: 700 });
      await kapi.sign(TOKENS.PI0001, { id: 'MK-P', kind: 'entrusted', payer: 'ICBC', account: 'kp' });
      await kapi.sign(TOKENS.PI0001, { id: 'MK-C', kind: 'agreement', payer: 'CMB', account: 'kc' });
      await kapi.mreceipt(TOKENS.CMB, { institution: 'PI0001', id: 'MK-C', outcome: 'confirm' });
      await kapi.sign(TOKENS.PI0001, { id: 'MK-D', kind: 'agreement', payer: 'ICBC', account: 'kd' });
      await kapi.mreceipt(TOKENS.ICBC, { institution: 'PI0001', id: 'MK-D', outcome: 'decline' });
      await kapi.sign(TOKENS.ICBC, { institution: 'PI0001', id: 'MK-R', kind: 'agreement', payer: 'ICBC', account: 'kr' });
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-1', { mandate: 'MK-R', amount: 10 }))).body.status).toBe('cleared');
      // The last answer before the kill: a revocation.
      expect((await kapi.revoke(TOKENS.ICBC, 'PI0001', 'MK-R', {})).body.status).toBe('revoked');
      const ids = ['MK-A', 'MK-P', 'MK-C', 'MK-D', 'MK-R'];
      const views = new Map<string, any>();
      for (const id of ids) views.set(id, (await kapi.get(TOKENS.ops, 'PI0001', id)).body);
      expect(ids.map((id) => views.get(id).status)).toEqual(['active', 'pending', 'active', 'declined', 'revoked']);

      await e.kill9();
      e = await startEngine(dir, config);

      for (const id of ids) expect((await kapi.get(TOKENS.ops, 'PI0001', id)).body).toEqual(views.get(id));
      expect((await kapi.instruction(TOKENS.PI0001, 'PI0001', 'K-1')).body).toMatchObject({ status: 'cleared', mandate: 'MK-R' });

      // Admission after the restart follows the stored statuses.
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-2', { mandate: 'MK-A', amount: 700 }))).body.status).toBe('cleared');
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-3', { mandate: 'MK-A', amount: 701 }))).body.code).toBe('MANDATE_INVALID');
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-4', { mandate: 'MK-R' }))).body.code).toBe('MANDATE_INVALID');
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-5', { mandate: 'MK-D' }))).body.code).toBe('MANDATE_INVALID');
      expect((await kapi.submit(TOKENS.PI0001, agreement('K-6', { mandate: 'MK-C', payer: 'CMB', payee: 'ICBC' }))).body.status).toBe('cleared');
      expect((await kapi.submit(TOKENS.PI0001, { id: 'K-7', type: 'entrusted', payer: 'ICBC', payee: 'CMB', amount: 10, mandate: 'MK-P' })).body.code).toBe('MANDATE_INVALID');

      // The pending one is forwarded again to its payer bank, whose confirm now makes it active.
      const icbc = await StreamClient.connect(e.base, TOKENS.ICBC, 'json');
      try {
        await icbc.request({ op: 'subscribe', topics: ['forwards'] });
        await waitFor(icbc, mandateForward('MK-P'));
        expect((await icbc.request({ op: 'mandate-receipt', receipts: [{ institution: 'PI0001', id: 'MK-P', outcome: 'confirm' }] })).results![0]).toMatchObject({ status: 'active' });
      } finally {
        icbc.close();
      }
      expect((await kapi.submit(TOKENS.PI0001, { id: 'K-7', type: 'entrusted', payer: 'ICBC', payee: 'CMB', amount: 10, mandate: 'MK-P' })).body.status).toBe('cleared');
      // And the confirm itself is durable.
      await e.kill9();
      e = await startEngine(dir, config);
      expect((await kapi.get(TOKENS.ops, 'PI0001', 'MK-P')).body).toMatchObject({ status: 'active' });
      expect((await kapi.instruction(TOKENS.PI0001, 'PI0001', 'K-7')).body).toMatchObject({ status: 'cleared', mandate: 'MK-P' });
    } finally {
      await e.stop();
    }
  });
});
