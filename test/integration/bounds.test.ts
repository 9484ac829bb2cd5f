/**
 * Bounded state against the real engine: WebSocket connections past the
 * per-principal and the total bound are refused OVERLOADED and freed on
 * close; a bank's backlog of forwards arrives complete, once, in frames of
 * a bounded size and at the pace of its send buffer; and the paged lists
 * (batches, the operator's audit trail) walk every entry exactly once.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { http, StreamClient, type Ack } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

const CONNECTIONS_MAX = 6;
const PER_PRINCIPAL_MAX = 3;
const FRAME_ITEMS_MAX = 25;

let engine: RunningEngine;
let cleanup: () => void;

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  engine = await startEngine(
    t.dir,
    testConfig(t.dir, {
      // No query falls inside the test: a silent bank is asked half way to a 10-minute deadline.
      receiptQueryScheduleMs: [],
      limits: {
        wsConnectionsMax: CONNECTIONS_MAX,
        wsConnectionsPerPrincipalMax: PER_PRINCIPAL_MAX,
        wsForwardFrameItemsMax: FRAME_ITEMS_MAX,
        // Far below the backlog sent below: the backlog must follow the send buffer, or the connection is closed.
        wsBackpressureBytesMax: 64 * 1024,
      },
    }),
  );
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

type Attempt = { ws: WebSocket } | { status: number; body: any; retryAfter: string | undefined };

/** Try a WebSocket upgrade: the open socket, or the refusal's status and body. */
function tryOpen(token: string): Promise<Attempt> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${engine.port}/v1/stream`, { headers: { authorization: `Bearer ${token}` } });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), retryAfter: res.headers['retry-after'] as string | undefined }));
    });
    ws.once('error', reject);
  });
}

async function open(token: string): Promise<WebSocket> {
  const a = await tryOpen(token);
  if (!('ws' in a)) throw new Error(`upgrade refused: ${a.status} ${JSON.stringify(a.body)}`);
  return a.ws;
}

async function refused(token: string): Promise<{ status: number; body: any; retryAfter: string | undefined }> {
  const a = await tryOpen(token);
  if ('ws' in a) {
    a.ws.terminate();
    throw new Error('upgrade accepted past a bound');
  }
  return a;
}

/** Open once a slot is free: the engine learns of a close a moment after the client does. */
async function openWhenFree(token: string, timeoutMs = 5000): Promise<WebSocket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const a = await tryOpen(token);
    if ('ws' in a) return a.ws;
    if (Date.now() > deadline) throw new Error(`still refused: ${JSON.stringify(a.body)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function closeAndWait(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    ws.once('close', () => resolve());
    ws.close();
  });
}

async function metric(name: string): Promise<number> {
  const text = String((await http(engine.base, 'GET', '/metrics', { token: TOKENS.ops })).body);
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

describe('WebSocket connection bounds', () => {
  it('refuses OVERLOADED past the per-principal and the total bound, and frees a connection on close', async () => {
    const icbc = [await open(TOKENS.ICBC), await open(TOKENS.ICBC), await open(TOKENS.ICBC)];
    const own = await refused(TOKENS.ICBC);
    expect(own.status).toBe(503);
    expect(own.body.code).toBe('OVERLOADED');
    expect(own.body.message).toContain('limits.wsConnectionsPerPrincipalMax');
    expect(own.body.message).toContain('bank:ICBC');
    expect(own.retryAfter).toBe('1');

    // The bound is per principal: another bank still connects, up to the total.
    const cmb = [await open(TOKENS.CMB), await open(TOKENS.CMB), await open(TOKENS.CMB)];
    const total = await refused(TOKENS.PI0001);
    expect(total.status).toBe(503);
    expect(total.body.code).toBe('OVERLOADED');
    expect(total.body.message).toContain('limits.wsConnectionsMax');
    // HTTP is not a WebSocket connection and goes on.
    expect((await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).status).toBe(200);

    // A closed connection's slot is free again, for its own principal and in the total.
    await closeAndWait(icbc.pop()!);
    icbc.push(await openWhenFree(TOKENS.ICBC));
    expect((await refused(TOKENS.PI0001)).body.message).toContain('limits.wsConnectionsMax');
    await closeAndWait(cmb.pop()!);
    const inst = await openWhenFree(TOKENS.PI0001);
    await closeAndWait(inst);

    // A connection dropped without a closing handshake is freed too.
    icbc.pop()!.terminate();
    icbc.push(await openWhenFree(TOKENS.ICBC));

    // Many opens and closes leave the counts exact: each round fills the principal's bound again.
    for (let round = 0; round < 20; round++) {
      await Promise.all(icbc.splice(0).map((ws) => closeAndWait(ws)));
      for (let i = 0; i < PER_PRINCIPAL_MAX; i++) icbc.push(await openWhenFree(TOKENS.ICBC));
      expect((await refused(TOKENS.ICBC)).body.message).toContain('limits.wsConnectionsPerPrincipalMax');
    }
    await Promise.all([...icbc, ...cmb].map((ws) => closeAndWait(ws)));

    expect(await metric('netting_ws_connections_refused_total{limit="principal"}')).toBeGreaterThanOrEqual(21);
    expect(await metric('netting_ws_connections_refused_total{limit="total"}')).toBeGreaterThanOrEqual(2);
    // Everything is closed: the whole bound is free.
    const all = [];
    for (const token of [TOKENS.ICBC, TOKENS.ICBC, TOKENS.CMB, TOKENS.CMB, TOKENS.PI0001, TOKENS.PI0002]) all.push(await openWhenFree(token));
    expect(await refused(TOKENS.ops)).toMatchObject({ status: 503, body: { code: 'OVERLOADED' } });
    await Promise.all(all.map((ws) => closeAndWait(ws)));
  });
});

const twoPhase = (id: string, payer: string, payee: string) => ({
  id,
  type: 'agreement',
  payer,
  payee,
  amount: 700,
  twoPhase: true,
  timeoutMs: 600_000,
  reference: 'r'.repeat(140),
});

/** Collect `forward` frames until `want` distinct ids came, checking each frame on the way. */
async function collectForwards(client: StreamClient, want: number, timeoutMs = 30_000): Promise<{ ids: string[]; frames: number }> {
  const ids: string[] = [];
  const seen = new Set<string>();
  let frames = 0;
  const deadline = Date.now() + timeoutMs;
  while (seen.size < want) {
    const m: Ack | undefined = client.unmatched.shift();
    if (m === undefined) {
      if (client.ws.readyState !== WebSocket.OPEN) throw new Error(`the connection closed after ${seen.size} of ${want} forwards`);
      if (Date.now() > deadline) throw new Error(`only ${seen.size} of ${want} forwards arrived`);
      await new Promise((r) => setTimeout(r, 10));
      continue;
    }
    expect(m.op).toBe('forward');
    const items = m['instructions'] as { id: string; payer: string }[];
    expect(items.length).toBeGreaterThan(0);
    expect(items.length).toBeLessThanOrEqual(FRAME_ITEMS_MAX);
    frames++;
    for (const i of items) {
      expect(i.payer).toBe('ICBC');
      ids.push(i.id);
      seen.add(i.id);
    }
  }
  return { ids, frames };
}

/** Frames of 1,000 two-phase instructions for ICBC: about 13 MB of forwards, more than the kernel's socket buffers hold. */
const BACKLOG_FRAMES = 30;

describe('the backlog of forwards', () => {
  it('arrives complete and once, in bounded frames at the pace of the send buffer', async () => {
    const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    const icbcIds: string[] = [];
    for (let f = 0; f < BACKLOG_FRAMES; f++) {
      const list = Array.from({ length: 1000 }, (_, i) => twoPhase(`FB-${f}-${i}`, 'ICBC', 'CMB'));
      const ack = await inst.submit(list);
      expect(ack.results!.every((r) => r.status === 'pending')).toBe(true);
      icbcIds.push(...list.map((x) => x.id));
    }
    // Another payer's pending instructions are not ICBC's backlog.
    const other = Array.from({ length: 300 }, (_, i) => twoPhase(`FO-${i}`, 'CMB', 'ICBC'));
    expect((await inst.submit(other)).results!.every((r) => r.status === 'pending')).toBe(true);

    const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json');
    // The bank does not read for a while as its backlog starts: what the kernel cannot hold waits in the engine,
    // which must send no more than its send-buffer bound lets it, or the connection is closed.
    const subscribed = bank.request({ op: 'subscribe', topics: ['forwards'] });
    bank.ws.pause();
    await new Promise((r) => setTimeout(r, 1000));
    bank.ws.resume();
    expect(await subscribed).toMatchObject({ op: 'subscribed' });
    // Submitted while the backlog streams: these come by the ordinary push, and only by it.
    const late = Array.from({ length: 200 }, (_, i) => twoPhase(`FL-${i}`, 'ICBC', 'CMB'));
    expect((await inst.submit(late)).results!.every((r) => r.status === 'pending')).toBe(true);

    const first = await collectForwards(bank, icbcIds.length + late.length);
    // Megabytes went through a 64 KiB send-buffer bound, and the connection is still open.
    expect(bank.ws.readyState).toBe(WebSocket.OPEN);
    expect(first.frames).toBeGreaterThanOrEqual(Math.ceil(icbcIds.length / FRAME_ITEMS_MAX));
    expect(first.ids.length).toBe(icbcIds.length + late.length);
    expect(new Set(first.ids)).toEqual(new Set([...icbcIds, ...late.map((x) => x.id)]));

    // The bank answers a thousand; a second connection that subscribes is sent exactly the rest.
    const answered = icbcIds.slice(0, 1000);
    for (let at = 0; at < answered.length; at += 250) {
      const receipts = answered.slice(at, at + 250).map((id) => ({ institution: 'PI0001', id, outcome: 'confirm' }));
      const ack = await bank.request({ op: 'receipt', receipts });
      expect(ack.results!.every((r: any) => r.status === 'cleared')).toBe(true);
    }
    const again = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
    await again.request({ op: 'subscribe', topics: ['forwards'] });
    const rest = [...icbcIds.slice(1000), ...late.map((x) => x.id)];
    const second = await collectForwards(again, rest.length);
    expect(second.ids.length).toBe(rest.length);
    expect(new Set(second.ids)).toEqual(new Set(rest));
    await new Promise((r) => setTimeout(r, 200));
    expect(again.unmatched.filter((m) => m.op === 'forward')).toEqual([]);

    for (const c of [inst, bank, again]) c.close();
  }, 60_000);
});

describe('paged lists', () => {
  it('walks every batch exactly once with ?after=, and back with ?before=, across a cut-off', async () => {
    const closed: string[] = [];
    for (let i = 0; i < 23; i++) {
      if (i % 4 === 0) {
        const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: `PG-${i}`, type: 'payout', payer: 'ABC', payee: 'BOC', amount: 10 + i } });
        expect(r.body.status).toBe('cleared');
      }
      closed.push((await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body.batch);
    }
    // The batches of the earlier tests of this file come first.
    const before = (await http(engine.base, 'GET', `/v1/batches?before=${closed[0]}&limit=10000`, { token: TOKENS.ops })).body;
    expect(before.previous).toBeNull();

    // Forward, five at a time, from the first batch; a cut-off in the middle of the walk is walked too.
    const walked: string[] = [];
    let cursor = '';
    let pages = 0;
    for (;;) {
      const page = (await http(engine.base, 'GET', `/v1/batches?after=${cursor}&limit=5`, { token: TOKENS.ops })).body;
      expect(page.batches.length).toBeLessThanOrEqual(5);
      walked.push(...page.batches.map((b: any) => b.batch));
      if (++pages === 2) closed.push((await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body.batch);
      if (page.next === null) {
        expect(page.batches.at(-1).status).toBe('open');
        break;
      }
      expect(page.next).toBe(page.batches.at(-1).batch);
      cursor = page.next;
    }
    const open = (await http(engine.base, 'GET', '/readyz')).body.batch;
    const everyBatch = [...before.batches.map((b: any) => b.batch), ...closed, open];
    expect(walked).toEqual(everyBatch);
    expect(new Set(walked).size).toBe(walked.length);

    // Without a cursor: the newest, as before paging, with the cursor to older ones.
    const newest = (await http(engine.base, 'GET', '/v1/batches?limit=4', { token: TOKENS.ops })).body;
    expect(newest.batches.map((b: any) => b.batch)).toEqual(everyBatch.slice(-4));
    expect(newest.next).toBeNull();
    const back: string[] = [...newest.batches.map((b: any) => b.batch)];
    let previous = newest.previous;
    while (previous !== null) {
      const page = (await http(engine.base, 'GET', `/v1/batches?before=${previous}&limit=4`, { token: TOKENS.ops })).body;
      back.unshift(...page.batches.map((b: any) => b.batch));
      previous = page.previous;
    }
    expect(back).toEqual(everyBatch);
    // The default page holds them all here (fewer than 100), as the list did before paging.
    const all = (await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ops })).body;
    expect(all.batches.map((b: any) => b.batch)).toEqual(everyBatch);
    expect(all).toMatchObject({ next: null, previous: null });

    // A bank's pages hold its own rows only.
    const asBank = (await http(engine.base, 'GET', `/v1/batches?after=&limit=3`, { token: TOKENS.ICBC })).body;
    for (const b of asBank.batches) expect(b.banks.every((row: any) => row.bank === 'ICBC')).toBe(true);

    for (const bad of ['after=nonsense', 'before=', 'limit=0', 'limit=10001', `after=${closed[0]}&before=${closed[1]}`]) {
      const r = await http(engine.base, 'GET', `/v1/batches?${bad}`, { token: TOKENS.ops });
      expect(r.status, bad).toBe(400);
      expect(r.body.code).toBe('INVALID_FIELD');
    }
  });

  it('walks the operator actions back with ?before=, each once', async () => {
    const newest = (await http(engine.base, 'GET', '/v1/operator-actions?limit=7', { token: TOKENS.ops })).body;
    expect(newest.actions).toHaveLength(7);
    const seqs: number[] = newest.actions.map((a: any) => a.seq);
    let previous = newest.previous;
    while (previous !== null) {
      const page = (await http(engine.base, 'GET', `/v1/operator-actions?before=${previous}&limit=7`, { token: TOKENS.ops })).body;
      expect(page.actions.length).toBeLessThanOrEqual(7);
      seqs.unshift(...page.actions.map((a: any) => a.seq));
      previous = page.previous;
    }
    // Every cut-off of the paging test is on the trail, from the first entry to the newest, each once.
    expect(seqs.length).toBeGreaterThanOrEqual(24);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    const all = (await http(engine.base, 'GET', '/v1/operator-actions?limit=10000', { token: TOKENS.ops })).body;
    expect(all.actions.map((a: any) => a.seq)).toEqual(seqs);
    expect(all.previous).toBeNull();
    expect((await http(engine.base, 'GET', '/v1/operator-actions?before=0', { token: TOKENS.ops })).status).toBe(400);
  });
});
