/**
 * Authentication and role scoping: every route and stream op tried with no
 * token, an unknown token, and each role.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

let engine: RunningEngine;
let cleanup: () => void;

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  engine = await startEngine(t.dir, testConfig(t.dir));
  // One instruction of PI0001 between ICBC and ABC, one of PI0002 between BOC and CCB.
  await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'own-1', type: 'payout', payer: 'ICBC', payee: 'ABC', amount: 500 } });
  await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: { id: 'other-1', type: 'payout', payer: 'BOC', payee: 'CCB', amount: 700 } });
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

const NEW = { id: 'role-x', type: 'payout', payer: 'CMB', payee: 'ABC', amount: 1 };

type Who = 'none' | 'unknown' | 'PI0001' | 'ICBC' | 'ops';
const token = (who: Who): string | undefined =>
  who === 'none' ? undefined : who === 'unknown' ? 'not-a-known-token-at-all' : TOKENS[who];

/** [method, path, body, expected status per caller] */
const TABLE: [string, string, unknown, Record<Who, number>][] = [
  ['POST', '/v1/instructions', NEW, { none: 401, unknown: 401, PI0001: 200, ICBC: 403, ops: 403 }],
  ['GET', '/v1/instructions/PI0001/own-1', undefined, { none: 401, unknown: 401, PI0001: 200, ICBC: 200, ops: 200 }],
  ['GET', '/v1/instructions/PI0002/other-1', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 404, ops: 200 }],
  ['GET', '/v1/positions', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 200, ops: 200 }],
  ['GET', '/v1/positions/ICBC', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 200, ops: 200 }],
  ['GET', '/v1/positions/CMB', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200 }],
  ['GET', '/v1/audit', undefined, { none: 401, unknown: 401, PI0001: 403, ICBC: 403, ops: 200 }],
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

  it('shows a bank only its own row of the positions, and the operator every row with totals', async () => {
    const bank = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ICBC });
    expect(bank.body.banks).toHaveLength(1);
    expect(bank.body.banks[0]).toMatchObject({ bank: 'ICBC', paid: '500', net: '-500' });
    expect(bank.body.totals).toBeUndefined();
    const ops = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
    expect(ops.body.banks.length).toBeGreaterThan(1);
    expect(ops.body.totals.gross).toBeDefined();
  });

  it('leaves open the routes that need no token', async () => {
    expect((await http(engine.base, 'GET', '/healthz')).status).toBe(200);
    const ready = await http(engine.base, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.status).toBe('ready');
  });

  it('never stored the refused submissions', async () => {
    for (const who of ['none', 'unknown', 'ICBC', 'ops']) {
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

  it('lets only institutions submit, and only banks take forwards', async () => {
    for (const who of ['ICBC', 'ops'] as const) {
      const c = await StreamClient.connect(engine.base, TOKENS[who], 'json');
      expect(await c.submit([{ ...NEW, id: `ws-role-${who}` }])).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
      c.close();
    }
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    expect(await inst.request({ op: 'subscribe', topics: ['forwards'] })).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
    expect(await inst.request({ op: 'subscribe', topics: ['notifications', 'snapshots'] })).toMatchObject({ op: 'subscribed', topics: ['notifications', 'snapshots'] });
    expect(await inst.request({ op: 'subscribe', topics: ['gossip'] })).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'topics' });
    inst.close();
    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    expect(await bank.request({ op: 'subscribe', topics: ['forwards'] })).toMatchObject({ op: 'subscribed', topics: ['forwards'] });
    bank.close();
    for (const who of ['ICBC', 'ops']) {
      expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/ws-role-${who}`, { token: TOKENS.ops })).status).toBe(404);
    }
  });
});
