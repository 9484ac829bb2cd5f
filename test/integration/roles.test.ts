/**
 * Authentication and role scoping: every route and stream op tried with no
 * token, an unknown token, and each role; banks and institutions see only
 * their own rows of snapshots (served and pushed) and settlement reports.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

let engine: RunningEngine;
let cleanup: () => void;

/** The monitoring system's token: GET /metrics and nothing else. */
const METRICS_TOKEN = 'test-token-metrics-prometheus';

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  const config = testConfig(t.dir);
  config['principals'] = [...(config['principals'] as object[]), { token: METRICS_TOKEN, role: 'metrics', id: 'prometheus' }];
  engine = await startEngine(t.dir, config);
  // One instruction of PI0001 between ICBC and ABC, one of PI0002 between BOC and CCB.
  await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'own-1', type: 'payout', payer: 'ICBC', payee: 'ABC', amount: 500 } });
  await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: { id: 'other-1', type: 'payout', payer: 'BOC', payee: 'CCB', amount: 700 } });
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

const NEW = { id: 'role-x', type: 'payout', payer: 'CMB', payee: 'ABC', amount: 1 };

type Who = 'none' | 'unknown' | 'PI0001' | 'ICBC' | 'ops' | 'metrics';
const token = (who: Who): string | undefined =>
  who === 'none' ? undefined : who === 'unknown' ? 'not-a-known-token-at-all' : who === 'metrics' ? METRICS_TOKEN : TOKENS[who];

/** [method, path, body, expected status per caller] */
const TABLE: [string, string, unknown, Record<Who, number>][] = [
  ['POST', '/v1/instructions', NEW, { none: 401, unknown: 401, PI0001: 200, ICBC: 403, ops: 403, metrics: 403 }],
  ['GET', '/v1/instructions/PI0001/own-1', undefined, { none: 401, unknown: 401, PI0001: 200, ICBC: 200, ops: 200, metrics: 403 }],
  ['GET', '/v1/instructions/PI0002/other-1', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200, metrics: 403 }],
  ['GET', '/v1/positions', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 200, ops: 200, metrics: 403 }],
  ['GET', '/v1/positions/ICBC', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 200, ops: 200, metrics: 403 }],
  ['GET', '/v1/positions/CMB', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200, metrics: 403 }],
  ['GET', '/v1/audit', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200, metrics: 403 }],
  ['GET', '/v1/batches', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 200, ops: 200, metrics: 403 }],
  ['GET', '/v1/snapshots/latest', undefined, { none: 401, unknown: 401, PI0001: 200, ICBC: 200, ops: 200, metrics: 403 }],
  ['GET', '/v1/operator-actions', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200, metrics: 403 }],
  ['GET', '/metrics', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200, metrics: 200 }],
];

describe('roles on HTTP routes', () => {
  for (const [method, path, body, expected] of TABLE) {
    for (const who of Object.keys(expected) as Who[]) {
      it(`${method} ${path} as ${who} → ${expected[who]}`, async () => {
        const r = await http(engine.base, method, path, { token: token(who), body: body === undefined ? undefined : { ...(body as object), id: `role-${who}` } });
        expect(r.status).toBe(expected[who]);
        const code = { 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 404: 'NOT_FOUND' }[r.status as 401 | 403 | 404];
        if (code !== undefined) expect(r.body.code).toBe(code);
      });
    }
  }

  it('shows a bank only its own row of the positions, the operator every row, and both the batch totals', async () => {
    const bank = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ICBC });
    expect(bank.body.banks).toHaveLength(1);
    expect(bank.body.banks[0]).toMatchObject({ bank: 'ICBC', paid: '500', net: '-500' });
    const ops = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
    expect(ops.body.banks.length).toBeGreaterThan(1);
    expect(ops.body.totals.gross).toBeDefined();
    // The totals are no bank's row: the route's shape, { batch, seq, banks, totals }, for every reader.
    expect(bank.body.totals).toEqual(ops.body.totals);
  });

  it('leaves open the routes that need no token', async () => {
    expect((await http(engine.base, 'GET', '/healthz')).status).toBe(200);
    const ready = await http(engine.base, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.status).toBe('ready');
    // HEAD, as load balancers check health: the GET's status, no body.
    for (const path of ['/healthz', '/readyz']) expect(await http(engine.base, 'HEAD', path)).toMatchObject({ status: 200, body: undefined });
  });

  it('never stored the refused submissions', async () => {
    for (const who of ['none', 'unknown', 'ICBC', 'ops', 'metrics']) {
      const r = await http(engine.base, 'GET', `/v1/instructions/PI0001/role-${who}`, { token: TOKENS.ops });
      expect(r.status).toBe(404);
    }
  });
});

describe('roles on the stream', () => {
  it('refuses an upgrade without a known token', async () => {
    await expect(StreamClient.connect(engine.base, undefined, 'json')).rejects.toThrow(/401/);
    await expect(StreamClient.connect(engine.base, 'not-a-known-token-at-all', 'json')).rejects.toThrow(/401/);
    await expect(StreamClient.connect(engine.base, 'not-a-known-token-at-all', 'json', 'query')).rejects.toThrow(/401/);
  });

  it('refuses a metrics token an upgrade: it reads GET /metrics and nothing else', async () => {
    await expect(StreamClient.connect(engine.base, METRICS_TOKEN, 'json')).rejects.toThrow(/403/);
    await expect(StreamClient.connect(engine.base, METRICS_TOKEN, 'json', 'query')).rejects.toThrow(/403/);
  });

  it('lets only institutions submit, and any role subscribe to any of the topics', async () => {
    for (const who of ['ICBC', 'ops'] as const) {
      const c = await StreamClient.connect(engine.base, TOKENS[who], 'json');
      expect(await c.submit([{ ...NEW, id: `ws-role-${who}` }])).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
      c.close();
    }
    // PROTOCOL.md: `subscribe` is for "any" role, topics "any of notifications, snapshots, forwards".
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    expect(await inst.request({ op: 'subscribe', topics: ['forwards'] })).toMatchObject({ op: 'subscribed', topics: ['forwards'] });
    expect(await inst.request({ op: 'subscribe', topics: ['notifications', 'snapshots'] })).toMatchObject({ op: 'subscribed', topics: ['forwards', 'notifications', 'snapshots'] });
    expect(await inst.request({ op: 'subscribe', topics: ['gossip'] })).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'topics' });
    expect(await inst.request({ op: 'subscribe', topics: ['forwards', 'gossip'] })).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'topics' });
    // "Any of": none changes nothing, and repeats count once.
    expect(await inst.request({ op: 'subscribe', topics: [] })).toMatchObject({ op: 'subscribed', topics: ['forwards', 'notifications', 'snapshots'] });
    expect(await inst.request({ op: 'subscribe', topics: ['steps', 'steps', 'forwards', 'notifications', 'snapshots', 'steps'] })).toMatchObject({
      op: 'subscribed',
      topics: ['forwards', 'notifications', 'snapshots', 'steps'],
    });
    expect(await inst.request({ op: 'subscribe', topics: new Array<string>(65).fill('forwards') })).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'topics' });
    inst.close();
    const ops = await StreamClient.connect(engine.base, TOKENS.ops, 'msgpack');
    expect(await ops.request({ op: 'subscribe', topics: ['notifications', 'snapshots', 'forwards'] })).toMatchObject({ op: 'subscribed', topics: ['notifications', 'snapshots', 'forwards'] });
    ops.close();
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    expect(await bank.request({ op: 'subscribe', topics: ['forwards'] })).toMatchObject({ op: 'subscribed', topics: ['forwards'] });
    bank.close();
    for (const who of ['ICBC', 'ops']) {
      expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/ws-role-${who}`, { token: TOKENS.ops })).status).toBe(404);
    }
  });
});

describe('each party sees only its own rows', () => {
  /** The first snapshot pushed to `c` after now. */
  async function pushedSnapshot(c: StreamClient): Promise<Record<string, unknown>> {
    for (;;) {
      const m = await c.nextUnmatched(5000);
      if (m.op === 'snapshot') return m;
    }
  }

  it('serves a bank its own bank row of a snapshot and an institution its own institution row, with the batch totals', async () => {
    const taken = await http(engine.base, 'GET', '/v1/snapshots/latest', { token: TOKENS.ops });
    expect(taken.body.banks.length).toBeGreaterThan(1);
    expect(taken.body.totals.gross).toBeDefined();
    expect(taken.body.institutions.map((i: any) => i.institution).sort()).toEqual(['PI0001', 'PI0002']);
    for (const path of ['/v1/snapshots/latest', `/v1/snapshots/${taken.body.seq}`]) {
      const bank = (await http(engine.base, 'GET', path, { token: TOKENS.ICBC })).body;
      expect(bank.banks.map((b: any) => b.bank)).toEqual(['ICBC']);
      expect(bank.institutions).toEqual([]);
      expect(bank.totals).toEqual(taken.body.totals);
      const inst = (await http(engine.base, 'GET', path, { token: TOKENS.PI0001 })).body;
      expect(inst.banks).toEqual([]);
      expect(inst.institutions.map((i: any) => i.institution)).toEqual(['PI0001']);
      expect(inst.totals).toEqual(taken.body.totals);
    }
    const bySeq = (await http(engine.base, 'GET', `/v1/snapshots/${taken.body.seq}`, { token: TOKENS.ICBC })).body;
    expect(bySeq.banks).toEqual(taken.body.banks.filter((b: any) => b.bank === 'ICBC'));
  });

  it('pushes each subscriber only its own rows of a snapshot, with the batch totals', async () => {
    const ops = await StreamClient.connect(engine.base, TOKENS.ops, 'json');
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    try {
      for (const c of [ops, bank, inst]) expect(await c.request({ op: 'subscribe', topics: ['snapshots'] })).toMatchObject({ op: 'subscribed' });
      const [o, b, i] = await Promise.all([pushedSnapshot(ops), pushedSnapshot(bank), pushedSnapshot(inst)]);
      expect((o['banks'] as unknown[]).length).toBeGreaterThan(1);
      expect(o['totals']).toBeDefined();
      expect((b['banks'] as { bank: string }[]).map((r) => r.bank)).toEqual(['ICBC']);
      expect(b['institutions']).toEqual([]);
      expect(i['banks']).toEqual([]);
      expect((i['institutions'] as { institution: string }[]).map((r) => r.institution)).toEqual(['PI0001']);
      // The same snapshot to each (pushed at one seq), so the same totals.
      expect(b['seq']).toBe(o['seq']);
      expect(i['seq']).toBe(o['seq']);
      expect(b['totals']).toEqual(o['totals']);
      expect(i['totals']).toEqual(o['totals']);
    } finally {
      ops.close();
      bank.close();
      inst.close();
    }
  });

  it('shows a bank only its own line of a settlement report, with the batch-wide figures of its shape', async () => {
    const systemWide = ['count', 'gross', 'debits', 'credits'];
    const open = (await http(engine.base, 'GET', '/readyz')).body.batch;
    const closed = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    expect(closed.batch).toBe(open);
    for (const key of systemWide) expect(closed).toHaveProperty(key);
    expect(closed.banks.length).toBeGreaterThan(1);

    const own = (await http(engine.base, 'GET', `/v1/batches/${closed.batch}`, { token: TOKENS.ICBC })).body;
    expect(own).toMatchObject({ batch: closed.batch, status: 'closed', openedAt: closed.openedAt, closedAt: closed.closedAt, settled: false });
    expect(own.banks).toEqual(closed.banks.filter((r: any) => r.bank === 'ICBC'));
    expect(own.banks[0]).toMatchObject({ bank: 'ICBC', net: '-500', settlement: 'debit', amount: '500' });
    for (const key of systemWide) expect(own[key]).toEqual(closed[key]);

    const list = (await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ICBC })).body.batches;
    expect(list.map((r: any) => r.status)).toEqual(['closed', 'open']);
    for (const r of list) {
      expect(r.banks.map((b: any) => b.bank)).toEqual(['ICBC']);
      for (const key of systemWide) expect(r).toHaveProperty(key);
    }
    const all = (await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ops })).body.batches;
    for (const r of all) for (const key of systemWide) expect(r).toHaveProperty(key);

    // Institutions read no settlement reports at all; the settlement file is the operator's.
    expect((await http(engine.base, 'GET', `/v1/batches/${closed.batch}`, { token: TOKENS.PI0001 })).status).toBe(403);
    expect((await http(engine.base, 'GET', `/v1/batches/${closed.batch}/settlement.csv`, { token: TOKENS.ICBC })).status).toBe(403);
  });
});

describe('receipts and drill-downs outside a principal’s part', () => {
  it('refuses a receipt from a bank that neither pays nor receives the instruction (FORBIDDEN), and names the item in every result', async () => {
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'rcpt-1', type: 'gateway', payer: 'BOC', payee: 'CCB', amount: 300, twoPhase: true } });
    const single = await http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'rcpt-1', outcome: 'confirm' } });
    expect(single.status).toBe(403);
    expect(single.body).toMatchObject({ institution: 'PI0001', id: 'rcpt-1', status: 'rejected', code: 'FORBIDDEN' });
    // Items refused for a bad field still name the institution and id they carried, when those are well formed.
    const batch = await http(engine.base, 'POST', '/v1/receipts', {
      token: TOKENS.ICBC,
      body: {
        receipts: [
          { institution: 'PI0001', id: 'rcpt-1', outcome: 'yes' },
          { institution: 'PI0001', id: 'rcpt-1', outcome: 'decline', reason: 'x'.repeat(200) },
          { institution: 'pi-bad', id: 'rcpt-1', outcome: 'confirm' },
          { institution: 'PI0001', id: 'NO-SUCH', outcome: 'confirm' },
        ],
      },
    });
    expect(batch.status).toBe(200);
    expect(batch.body.results[0]).toMatchObject({ institution: 'PI0001', id: 'rcpt-1', status: 'rejected', code: 'INVALID_FIELD', field: 'outcome' });
    expect(batch.body.results[1]).toMatchObject({ institution: 'PI0001', id: 'rcpt-1', status: 'rejected', code: 'INVALID_FIELD', field: 'reason' });
    expect(batch.body.results[2]).toMatchObject({ id: 'rcpt-1', status: 'rejected', code: 'INVALID_FIELD', field: 'institution' });
    expect(batch.body.results[2]).not.toHaveProperty('institution');
    expect(batch.body.results[3]).toMatchObject({ institution: 'PI0001', id: 'NO-SUCH', code: 'NOT_FOUND' });
    // The same over the stream, and nothing changed: the payer bank's answer still decides it.
    const ws = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    try {
      const ack = await ws.request({ op: 'receipt', seq: 1, receipts: [{ institution: 'PI0001', id: 'rcpt-1', outcome: 'maybe' }] });
      expect(ack.results![0]).toMatchObject({ institution: 'PI0001', id: 'rcpt-1', code: 'INVALID_FIELD', field: 'outcome' });
    } finally {
      ws.close();
    }
    expect((await http(engine.base, 'GET', '/v1/instructions/PI0001/rcpt-1', { token: TOKENS.ops })).body.status).toBe('pending');
  });

  it('names the mandate in a refused mandate receipt’s result', async () => {
    const r = await http(engine.base, 'POST', '/v1/mandates/receipts', { token: TOKENS.ICBC, body: { receipts: [{ institution: 'PI0001', id: 'MR-1', outcome: 'perhaps' }] } });
    expect(r.status).toBe(200);
    expect(r.body.results[0]).toMatchObject({ institution: 'PI0001', id: 'MR-1', status: 'rejected', code: 'INVALID_FIELD', field: 'outcome' });
  });

  it('refuses an institution that names another institution’s buckets (FORBIDDEN), and serves its own with or without the name', async () => {
    const batch = (await http(engine.base, 'GET', '/readyz')).body.batch;
    const other = await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets?institution=PI0002`, { token: TOKENS.PI0001 });
    expect(other.status).toBe(403);
    expect(other.body.code).toBe('FORBIDDEN');
    const own = await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets?institution=PI0001`, { token: TOKENS.PI0001 });
    const plain = await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets`, { token: TOKENS.PI0001 });
    expect(own.status).toBe(200);
    expect(own.body).toEqual(plain.body);
    expect(plain.body.buckets).toHaveLength(256);
    // The operator names any institution: PI0002's buckets count the instruction it clears now.
    const countOf = async (): Promise<number> => {
      const r = await http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets?institution=PI0002`, { token: TOKENS.ops });
      expect(r.status).toBe(200);
      return r.body.buckets.reduce((n: number, b: { count: number }) => n + b.count, 0);
    };
    const before = await countOf();
    expect((await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: { id: 'bkt-1', type: 'gateway', payer: 'BOC', payee: 'CCB', amount: 9 } })).body.status).toBe('cleared');
    expect(await countOf()).toBe(before + 1);
  });
});
