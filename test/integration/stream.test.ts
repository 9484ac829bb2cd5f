/**
 * The end-to-end stream: thousands of random instructions from two
 * institutions over HTTP and WebSocket, in JSON and msgpack, checked
 * against the reference model after every phase.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { http, StreamClient, type Enc } from '../helpers/clients.js';
import { randomInstruction, ReferenceModel, rng, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

let engine: RunningEngine;
let cleanup: () => void;
const model = new ReferenceModel(BANKS);
const rand = rng(20261122);

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  engine = await startEngine(t.dir, testConfig(t.dir));
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

async function expectPositionsMatchModel(): Promise<void> {
  const r = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
  expect(r.status).toBe(200);
  expect(rowsOf(r.body)).toEqual(model.rows());
  expect(r.body.totals).toEqual(model.totals());
  let sum = 0n;
  for (const row of r.body.banks) sum += BigInt(row.net);
  expect(sum).toBe(0n);
  // Bilateral: every bank's counterparties agree with the model and sum to its net.
  for (const bank of BANKS) {
    const d = await http(engine.base, 'GET', `/v1/positions/${bank}`, { token: TOKENS.ops });
    expect(d.status).toBe(200);
    expect(d.body.net).toBe(model.net(bank).toString());
    for (const c of d.body.counterparties) {
      expect(c.net).toBe(model.bilateral.get(bank)!.get(c.bank)!.toString());
    }
  }
}

function batchOf(prefix: string, n: number): RefInstruction[] {
  return Array.from({ length: n }, (_, i) => randomInstruction(rand, BANKS, `${prefix}-${i}`));
}

describe('a stream of random instructions', () => {
  it('nets HTTP submissions (single and batched, JSON and msgpack) exactly', async () => {
    for (const enc of ['json', 'msgpack'] as Enc[]) {
      // Single instructions.
      for (const ins of batchOf(`h1-${enc}`, 40)) {
        const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: ins, enc });
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ id: ins.id, status: 'cleared' });
        expect(r.body.batch).toMatch(/^\d{8}-\d{3}$/);
        model.clear(ins);
      }
      // Batches.
      for (let b = 0; b < 5; b++) {
        const list = batchOf(`hb-${enc}-${b}`, 200);
        const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0002, body: { instructions: list }, enc });
        expect(r.status).toBe(200);
        expect(r.body.results).toHaveLength(list.length);
        r.body.results.forEach((res: any, i: number) => {
          expect(res).toMatchObject({ id: list[i]!.id, status: 'cleared' });
          model.clear(list[i]!);
        });
      }
    }
    await expectPositionsMatchModel();
  });

  it('nets concurrent WebSocket streams in both encodings exactly', async () => {
    const clients = await Promise.all([
      StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack'),
      StreamClient.connect(engine.base, TOKENS.PI0001, 'json'),
      StreamClient.connect(engine.base, TOKENS.PI0002, 'msgpack', 'query'),
      StreamClient.connect(engine.base, TOKENS.PI0002, 'json', 'query'),
    ]);
    const acks = [];
    for (let frame = 0; frame < 40; frame++) {
      const client = clients[frame % clients.length]!;
      const list = batchOf(`ws-${frame}`, 100);
      acks.push(client.submit(list).then((ack) => ({ ack, list })));
    }
    for (const { ack, list } of await Promise.all(acks)) {
      expect(ack.op).toBe('ack');
      expect(ack.results).toHaveLength(list.length);
      ack.results!.forEach((res, i) => {
        expect(res).toMatchObject({ id: list[i]!.id, status: 'cleared' });
        model.clear(list[i]!);
      });
    }
    for (const c of clients) c.close();
    await expectPositionsMatchModel();
  });

  it('answers ping with pong in the encoding of the frame', async () => {
    const c = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    expect(await c.request({ op: 'ping' }, 'json')).toMatchObject({ op: 'pong' });
    const pong = await c.request({ op: 'ping' }, 'msgpack');
    expect(pong.op).toBe('pong');
    expect(typeof pong.seq).toBe('number');
    c.close();
  });

  it('lets the submitter, the banks of the pair and the operator read an instruction', async () => {
    const ins: RefInstruction = { id: 'Q-1', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 4200, reference: '账单 42' };
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: ins });
    expect(r.body.status).toBe('cleared');
    model.clear(ins);
    for (const token of [TOKENS.PI0001, TOKENS.ICBC, TOKENS.CMB, TOKENS.ops]) {
      const q = await http(engine.base, 'GET', '/v1/instructions/PI0001/Q-1', { token });
      expect(q.status).toBe(200);
      expect(q.body).toMatchObject({ institution: 'PI0001', id: 'Q-1', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 4200, status: 'cleared', reference: '账单 42', twoPhase: false });
      expect(q.body.batch).toBe(r.body.batch);
      expect(Date.parse(q.body.acceptedAt)).not.toBeNaN();
    }
    const m = await http(engine.base, 'GET', '/v1/instructions/PI0001/Q-1', { token: TOKENS.ops, enc: 'msgpack' });
    expect(m.body.id).toBe('Q-1');
    await expectPositionsMatchModel();
  });

  it('passes the audit: stored positions equal a recomputation from the instruction log', async () => {
    const r = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
    expect(r.status).toBe(200);
    expect(r.body.ok).toBe(true);
    let expected = 0;
    for (const b of BANKS) expected += model.count.get(b)!;
    expect(r.body.cleared).toBe(expected / 2);
    expect(r.body.shards).toHaveLength(4);
  });
});
