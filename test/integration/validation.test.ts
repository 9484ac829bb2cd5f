/**
 * Every validation code of PROTOCOL.md, over HTTP and WebSocket, in both
 * encodings; each bad input gets its code and changes nothing, while the
 * good items of the same batch go through.
 */

import { request } from 'node:http';
import { decode, encode } from '@msgpack/msgpack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, StreamClient, type Enc } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

let engine: RunningEngine;
let cleanup: () => void;

beforeAll(async () => {
  const t = tempDir();
  cleanup = t.cleanup;
  engine = await startEngine(
    t.dir,
    testConfig(t.dir, {
      maxAmountCents: 1_000_000,
      limits: { bodyBytesMax: 64 * 1024, frameBytesMax: 64 * 1024, batchItemsMax: 50, connectionInflightMax: 60 },
    }),
  );
});

afterAll(async () => {
  await engine.stop();
  cleanup();
});

const good = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id,
  type: 'agreement',
  payer: 'ICBC',
  payee: 'ABC',
  amount: 100,
  ...extra,
});

/** Bad items, each with the code and field it must get. */
const BAD: [string, unknown, string, string | undefined][] = [
  ['not an object', [1, 2], 'INVALID_MESSAGE', undefined],
  ['a string item', 'hello', 'INVALID_MESSAGE', undefined],
  ['unknown field', good('b1', { colour: 'red' }), 'INVALID_FIELD', 'colour'],
  ['missing id', { type: 'agreement', payer: 'ICBC', payee: 'ABC', amount: 1 }, 'INVALID_FIELD', 'id'],
  ['id with a slash', good('a/b'), 'INVALID_FIELD', 'id'],
  ['id too long', good('x'.repeat(65)), 'INVALID_FIELD', 'id'],
  ['id with unicode', good('订单1'), 'INVALID_FIELD', 'id'],
  ['bad type', good('b2', { type: 'wire' }), 'INVALID_FIELD', 'type'],
  ['payer not a string', good('b3', { payer: 7 }), 'INVALID_FIELD', 'payer'],
  ['unknown payer', good('b4', { payer: 'NOPE' }), 'UNKNOWN_BANK', 'payer'],
  ['unknown payee', good('b5', { payee: 'icbc' }), 'UNKNOWN_BANK', 'payee'],
  ['same bank', good('b6', { payee: 'ICBC' }), 'SAME_BANK', 'payee'],
  ['fractional amount', good('b7', { amount: 1.5 }), 'INVALID_FIELD', 'amount'],
  ['string amount', good('b8', { amount: '100' }), 'INVALID_FIELD', 'amount'],
  ['zero amount', good('b9', { amount: 0 }), 'AMOUNT_OUT_OF_RANGE', 'amount'],
  ['negative amount', good('b10', { amount: -100 }), 'AMOUNT_OUT_OF_RANGE', 'amount'],
  ['amount over the maximum', good('b11', { amount: 1_000_001 }), 'AMOUNT_OUT_OF_RANGE', 'amount'],
  ['huge amount', good('b12', { amount: 1e21 }), 'AMOUNT_OUT_OF_RANGE', 'amount'],
  ['twoPhase not boolean', good('b13', { twoPhase: 'yes' }), 'INVALID_FIELD', 'twoPhase'],
  ['timeoutMs on a single-phase instruction', good('b14', { timeoutMs: 1000 }), 'INVALID_FIELD', 'timeoutMs'],
  ['reference too long', good('b15', { reference: 'r'.repeat(141) }), 'INVALID_FIELD', 'reference'],
  ['reference with a control character', good('b16', { reference: 'a\u0007b' }), 'INVALID_FIELD', 'reference'],
];

async function positions(): Promise<unknown> {
  return (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
}

describe('validation over HTTP', () => {
  for (const enc of ['json', 'msgpack'] as Enc[]) {
    it(`gives every bad single item its code and status (${enc}) and changes nothing`, async () => {
      const before = await positions();
      for (const [name, item, code, field] of BAD) {
        const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: item, enc });
        const expectedStatus = { INVALID_MESSAGE: 400, INVALID_FIELD: 400, UNKNOWN_BANK: 422, SAME_BANK: 422, AMOUNT_OUT_OF_RANGE: 422 }[code];
        expect(r.status, name).toBe(expectedStatus);
        expect(r.body.code, name).toBe(code);
        expect(r.body.field, name).toBe(field);
        expect(typeof r.body.message).toBe('string');
        if (r.body.status !== undefined) expect(r.body.status).toBe('rejected');
      }
      expect(await positions()).toEqual(before);
    });
  }

  it('answers a batch item by item: bad items rejected, good ones cleared', async () => {
    const items = [good('mix-1'), ...BAD.slice(2, 12).map(([, item]) => item), good('mix-2', { amount: 999 })];
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: items } });
    expect(r.status).toBe(200);
    expect(r.body.results[0]).toMatchObject({ id: 'mix-1', status: 'cleared' });
    expect(r.body.results.at(-1)).toMatchObject({ id: 'mix-2', status: 'cleared' });
    BAD.slice(2, 12).forEach(([name, , code], i) => expect(r.body.results[i + 1].code, name).toBe(code));
    const p = await http(engine.base, 'GET', '/v1/positions/ICBC', { token: TOKENS.ops });
    expect(p.body.paid).toBe(String(100 + 999));
  });

  it('lets a rejected id be submitted again, correctly', async () => {
    const bad = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: good('retry-1', { payee: 'ZZZ' }) });
    expect(bad.body.code).toBe('UNKNOWN_BANK');
    const q = await http(engine.base, 'GET', '/v1/instructions/PI0001/retry-1', { token: TOKENS.PI0001 });
    expect(q.status).toBe(404);
    expect(q.body.code).toBe('NOT_FOUND');
    const ok = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: good('retry-1') });
    expect(ok.body).toMatchObject({ id: 'retry-1', status: 'cleared' });
    expect(ok.body.duplicate).toBeUndefined();
  });

  it('refuses bodies that do not decode or have the wrong shape', async () => {
    const cases: [Uint8Array | string, string, string][] = [
      ['{"id": "x",', 'application/json', 'INVALID_MESSAGE'],
      ['[1,2,3]', 'application/json', 'INVALID_MESSAGE'],
      ['"just a string"', 'application/json', 'INVALID_MESSAGE'],
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 'application/json', 'INVALID_MESSAGE'],
      [new Uint8Array([0x85, 0xa2]), 'application/msgpack', 'INVALID_MESSAGE'],
      [new Uint8Array([0xc1]), 'application/msgpack', 'INVALID_MESSAGE'],
      [encode({ instructions: [], extra: 1 }), 'application/msgpack', 'INVALID_MESSAGE'],
      ['{"instructions": 5}', 'application/json', 'INVALID_FIELD'],
      ['{"instructions": []}', 'application/json', 'INVALID_FIELD'],
    ];
    for (const [raw, contentType, code] of cases) {
      const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw, contentType });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe(code);
    }
    // A body that is not msgpack is read as JSON whatever its Content-Type; a form does not parse.
    const form = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw: 'a=b', contentType: 'application/x-www-form-urlencoded' });
    expect(form.status).toBe(400);
    expect(form.body.code).toBe('INVALID_MESSAGE');
  });

  it('refuses an amount written as a number that is no integer, even one JSON rounds to an integer', async () => {
    const positions = async (): Promise<unknown> => (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body.banks;
    const before = await positions();
    for (const [i, literal] of ['999999999999.99999', '1.0000000000000001', '7.000000000000000000001', '1.5'].entries()) {
      const raw = `{"id":"frac-${i}","type":"gateway","payer":"ICBC","payee":"CMB","amount":${literal}}`;
      const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw, contentType: 'application/json' });
      expect(r.status, literal).toBe(400);
      expect(r.body, literal).toMatchObject({ code: 'INVALID_FIELD', field: 'amount' });
      expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/frac-${i}`, { token: TOKENS.PI0001 })).status).toBe(404);
    }
    // In a batch the item alone is refused; an integer written with a zero fraction is an integer.
    const raw = '{"instructions":[{"id":"frac-a","type":"gateway","payer":"ICBC","payee":"CMB","amount":5.0000000000000001},{"id":"frac-b","type":"gateway","payer":"ICBC","payee":"CMB","amount":6.0}]}';
    const batch = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw, contentType: 'application/json' });
    expect(batch.body.results).toMatchObject([{ id: 'frac-a', status: 'rejected', code: 'INVALID_FIELD', field: 'amount' }, { id: 'frac-b', status: 'cleared' }]);
    expect((await http(engine.base, 'GET', '/v1/instructions/PI0001/frac-b', { token: TOKENS.PI0001 })).body.amount).toBe(6);
    expect(await positions()).not.toEqual(before);
  });

  it('refuses bodies and batches over their limits with PAYLOAD_TOO_LARGE', async () => {
    const big = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw: JSON.stringify({ id: 'x', pad: 'p'.repeat(70 * 1024) }) });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('PAYLOAD_TOO_LARGE');
    const many = Array.from({ length: 51 }, (_, i) => good(`many-${i}`));
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: many } });
    expect(r.status).toBe(413);
    expect(r.body.code).toBe('PAYLOAD_TOO_LARGE');
    const q = await http(engine.base, 'GET', '/v1/instructions/PI0001/many-0', { token: TOKENS.PI0001 });
    expect(q.status).toBe(404);
  });

  it('answers an over-limit body while it is still arriving, and keeps the connection usable', async () => {
    const { connect } = await import('node:net');
    const socket = connect(engine.port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    const body = Buffer.alloc(200 * 1024, 'x');
    socket.write(`POST /v1/instructions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKENS.PI0001}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    socket.write(`${body.length.toString(16)}\r\n`);
    socket.write(body);
    socket.write('\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const deadline = Date.now() + 5000;
    while (!text.includes('{"status":"ok"}') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 413/);
    expect(text).toContain('PAYLOAD_TOO_LARGE');
    expect(text).toContain('{"status":"ok"}');
  });

  it('answers unknown routes and malformed query paths with clear codes', async () => {
    expect((await http(engine.base, 'GET', '/v1/nothing-here', { token: TOKENS.ops })).body.code).toBe('NOT_FOUND');
    expect((await http(engine.base, 'DELETE', '/v1/instructions', { token: TOKENS.PI0001 })).status).toBe(404);
    // Without a known token every request but GET /healthz and /readyz is UNAUTHORIZED first, a route or not.
    for (const [method, path] of [['GET', '/v1/nothing-here'], ['DELETE', '/v1/instructions'], ['POST', '/v1/positions'], ['POST', '/healthz']] as const) {
      expect(await http(engine.base, method, path), `${method} ${path}`).toMatchObject({ status: 401, body: { code: 'UNAUTHORIZED' } });
      expect((await http(engine.base, method, path, { token: 'not-a-token' })).status, `${method} ${path}`).toBe(401);
    }
    const badId = await http(engine.base, 'GET', '/v1/instructions/PI0001/a%20b', { token: TOKENS.ops });
    expect(badId.status).toBe(400);
    expect(badId.body).toMatchObject({ code: 'INVALID_FIELD', field: 'id' });
    expect((await http(engine.base, 'GET', '/v1/positions/NOPE', { token: TOKENS.ops })).status).toBe(404);
  });
});

describe('validation over WebSocket', () => {
  for (const enc of ['json', 'msgpack'] as Enc[]) {
    it(`acks each bad item with its code and clears the good ones (${enc})`, async () => {
      const c = await StreamClient.connect(engine.base, TOKENS.PI0002, enc);
      const items = [good(`ws-ok-${enc}`), ...BAD.map(([, item]) => item)];
      // Over the 50-item batch limit: split the bad list in two frames.
      const first = await c.submit(items.slice(0, 12));
      const second = await c.submit(items.slice(12));
      const results = [...first.results!, ...second.results!];
      expect(results[0]).toMatchObject({ id: `ws-ok-${enc}`, status: 'cleared' });
      BAD.forEach(([name, , code, field], i) => {
        expect(results[i + 1].status, name).toBe('rejected');
        expect(results[i + 1].code, name).toBe(code);
        expect(results[i + 1].field, name).toBe(field);
      });
      c.close();
    });

    it(`answers frames that cannot be answered item by item with an error (${enc})`, async () => {
      const c = await StreamClient.connect(engine.base, TOKENS.PI0002, enc);
      expect(await c.request({ op: 'fly' })).toMatchObject({ op: 'error', code: 'INVALID_MESSAGE' });
      expect(await c.request({ op: 'submit', instructions: 'none' })).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'instructions' });
      expect(await c.request({ op: 'submit', instructions: [] })).toMatchObject({ op: 'error', code: 'INVALID_FIELD' });
      const tooMany = Array.from({ length: 51 }, (_, i) => good(`wsmany-${enc}-${i}`));
      expect(await c.request({ op: 'submit', instructions: tooMany })).toMatchObject({ op: 'error', code: 'PAYLOAD_TOO_LARGE' });
      // No seq on a submit, a seq that is not an integer, a frame that is not an object, bytes that do not decode.
      c.sendRaw({ op: 'submit', instructions: [good('noseq')] });
      expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'seq' });
      c.sendRaw({ op: 'ping', seq: 1.5 });
      expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'INVALID_FIELD', field: 'seq' });
      c.sendRaw([1, 2, 3]);
      expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'INVALID_MESSAGE' });
      // No op, but a seq to tell the frame by: echoed.
      c.sendRaw({ seq: 16 });
      expect(await c.nextUnmatched()).toEqual({ op: 'error', seq: 16, code: 'INVALID_MESSAGE', message: expect.any(String) });
      c.ws.send(enc === 'msgpack' ? Buffer.from([0x92, 0xc1]) : '{"op":', { binary: enc === 'msgpack' });
      expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'INVALID_MESSAGE' });
      // The connection is still usable.
      expect(await c.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
      expect((await http(engine.base, 'GET', '/v1/instructions/PI0002/noseq', { token: TOKENS.PI0002 })).status).toBe(404);
      c.close();
    });
  }

  it('refuses a frame over frameBytesMax with PAYLOAD_TOO_LARGE and keeps the connection', async () => {
    const c = await StreamClient.connect(engine.base, TOKENS.PI0002, 'json');
    c.sendRaw({ op: 'submit', seq: 9, instructions: [good('huge', { reference: 'x'.repeat(80 * 1024) })] });
    expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'PAYLOAD_TOO_LARGE' });
    expect(await c.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
    // Far over the limit (ten times it) the answer is the same, not a dropped connection.
    c.sendRaw({ op: 'submit', seq: 10, instructions: [good('huger', { reference: 'x'.repeat(640 * 1024) })] });
    expect(await c.nextUnmatched()).toMatchObject({ op: 'error', code: 'PAYLOAD_TOO_LARGE' });
    expect(await c.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
    expect((await http(engine.base, 'GET', '/v1/instructions/PI0002/huger', { token: TOKENS.PI0002 })).status).toBe(404);
    c.close();
  });

  it('sheds load past connectionInflightMax with OVERLOADED per item, never a false ack', async () => {
    const c = await StreamClient.connect(engine.base, TOKENS.PI0002, 'msgpack');
    const frames = Array.from({ length: 4 }, (_, f) => Array.from({ length: 40 }, (_, i) => good(`ovl-${f}-${i}`, { amount: 1 + i })));
    const acks = await Promise.all(frames.map((list) => c.submit(list)));
    const overloaded = acks.filter((a) => a.results!.every((r) => r.code === 'OVERLOADED'));
    const cleared = acks.filter((a) => a.results!.every((r) => r.status === 'cleared'));
    expect(overloaded.length).toBeGreaterThan(0);
    expect(overloaded.length + cleared.length).toBe(4);
    // Every OVERLOADED id is absent; every cleared id is stored.
    for (const [f, ack] of acks.entries()) {
      const q = await http(engine.base, 'GET', `/v1/instructions/PI0002/ovl-${f}-0`, { token: TOKENS.PI0002 });
      expect(q.status).toBe(ack.results![0].status === 'cleared' ? 200 : 404);
    }
    c.close();
  });
});

/**
 * A request with exactly these headers: node:http adds neither Accept nor
 * Content-Type of its own, as fetch does. The reply is decoded by its type.
 */
function bare(method: string, path: string, headers: Record<string, string>, body?: Uint8Array | string): Promise<{ status: number; type: string; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${engine.base}${path}`, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const type = res.headers['content-type'] ?? '';
        resolve({ status: res.statusCode ?? 0, type, body: bytes.length === 0 ? undefined : type.includes('msgpack') ? decode(bytes) : JSON.parse(bytes.toString('utf8')) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const AUTH_PI0001 = { authorization: `Bearer ${TOKENS.PI0001}` };

describe('encodings over HTTP', () => {
  it('reads a body as msgpack when its Content-Type says so, and as JSON otherwise', async () => {
    // fetch with a string body and no Content-Type sends text/plain;charset=UTF-8.
    const plain = await fetch(`${engine.base}/v1/instructions`, { method: 'POST', headers: AUTH_PI0001, body: JSON.stringify(good('enc-text')) });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('content-type')).toBe('application/json');
    expect(await plain.json()).toMatchObject({ id: 'enc-text', status: 'cleared' });
    // curl -d sends a form type.
    const form = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw: JSON.stringify(good('enc-form')), contentType: 'application/x-www-form-urlencoded' });
    expect(form.body).toMatchObject({ id: 'enc-form', status: 'cleared' });
    // No Content-Type at all.
    const none = await bare('POST', '/v1/instructions', AUTH_PI0001, JSON.stringify(good('enc-none')));
    expect(none).toMatchObject({ status: 200, type: 'application/json', body: { id: 'enc-none', status: 'cleared' } });
    // msgpack by either name, any case, with parameters.
    for (const [id, contentType] of [['enc-mp', 'application/msgpack'], ['enc-xmp', 'application/x-msgpack'], ['enc-MP', 'Application/MsgPack; charset=binary']] as const) {
      const r = await bare('POST', '/v1/instructions', { ...AUTH_PI0001, 'content-type': contentType }, encode(good(id)));
      expect(r, contentType).toMatchObject({ status: 200, type: 'application/msgpack', body: { id, status: 'cleared' } });
    }
    // msgpack bytes under another type are read as JSON, and do not parse.
    const mislabelled = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, raw: encode(good('enc-bad')), contentType: 'text/plain' });
    expect(mislabelled.status).toBe(400);
    expect(mislabelled.body.code).toBe('INVALID_MESSAGE');
    // The other body routes read bodies the same way.
    const batch = (await http(engine.base, 'GET', '/readyz')).body.batch;
    const rec = await http(engine.base, 'POST', '/v1/reconciliation', { token: TOKENS.PI0001, raw: JSON.stringify({ batch, count: 0, amount: '0', digest: '0000000000000000' }), contentType: 'text/plain;charset=UTF-8' });
    expect(rec.status).toBe(200);
    expect(rec.body.batch).toBe(batch);
    const revoke = await http(engine.base, 'POST', '/v1/mandates/PI0001/none/revoke', { token: TOKENS.PI0001, raw: '{}', contentType: 'application/x-www-form-urlencoded' });
    expect(revoke.body.code).toBe('NOT_FOUND');
  });

  it('answers in the encoding Accept names alone, otherwise in the body\'s, and JSON without a body', async () => {
    const cases: [Enc, string | undefined, Enc][] = [
      ['json', 'application/msgpack', 'msgpack'],
      ['json', 'application/x-msgpack', 'msgpack'],
      ['json', 'text/html, application/msgpack;q=0.9', 'msgpack'],
      ['msgpack', 'application/json', 'json'],
      ['msgpack', 'application/json, application/msgpack;q=0', 'json'],
      ['msgpack', '*/*', 'msgpack'],
      ['msgpack', 'application/json, application/msgpack', 'msgpack'],
      ['json', 'application/msgpack, application/json', 'json'],
      ['msgpack', undefined, 'msgpack'],
      ['json', undefined, 'json'],
    ];
    for (const [i, [enc, accept, want]] of cases.entries()) {
      const id = `acc-${i}`;
      const headers: Record<string, string> = { ...AUTH_PI0001, 'content-type': enc === 'msgpack' ? 'application/msgpack' : 'application/json' };
      if (accept !== undefined) headers['accept'] = accept;
      const r = await bare('POST', '/v1/instructions', headers, enc === 'msgpack' ? encode(good(id)) : JSON.stringify(good(id)));
      expect(r.type, `${enc} body, Accept ${accept}`).toBe(want === 'msgpack' ? 'application/msgpack' : 'application/json');
      expect(r.body).toMatchObject({ id, status: 'cleared' });
    }
    // No body: Accept alone decides, JSON when it names neither or both.
    const ops = { authorization: `Bearer ${TOKENS.ops}` };
    for (const [accept, want] of [[undefined, 'json'], ['*/*', 'json'], ['application/msgpack', 'msgpack'], ['application/json, application/msgpack', 'json']] as const) {
      const r = await bare('GET', '/v1/positions', accept === undefined ? ops : { ...ops, accept });
      expect(r.status).toBe(200);
      expect(r.type, `GET, Accept ${accept}`).toBe(`application/${want}`);
      expect(r.body.banks.length).toBeGreaterThan(1);
    }
    // Body-less POSTs and the open routes follow the same rule.
    const msgpackOnly = { accept: 'application/msgpack' };
    for (const [method, path, headers, status] of [
      ['POST', '/v1/batches/20000101-001/settled', { ...ops, ...msgpackOnly }, 404],
      ['POST', '/v1/instructions/PI0001/none/reverse', { ...ops, ...msgpackOnly }, 404],
      ['GET', '/healthz', msgpackOnly, 200],
      ['GET', '/readyz', msgpackOnly, 200],
    ] as const) {
      const r = await bare(method, path, headers);
      expect(r.status, path).toBe(status);
      expect(r.type, path).toBe('application/msgpack');
    }
    expect((await bare('GET', '/healthz', {})).type).toBe('application/json');
  });

  it('encodes refusals by the same rule: 401, 403, 404, 413 and a body that does not decode', async () => {
    const mp = 'application/msgpack';
    const refusals: [string, string, Record<string, string>, Uint8Array | string | undefined, number, string][] = [
      ['POST', '/v1/instructions', { 'content-type': mp }, encode(good('ref-1')), 401, 'UNAUTHORIZED'],
      ['GET', '/v1/positions', { accept: mp }, undefined, 401, 'UNAUTHORIZED'],
      ['POST', '/v1/instructions', { authorization: `Bearer ${TOKENS.ops}`, 'content-type': mp }, encode(good('ref-2')), 403, 'FORBIDDEN'],
      ['GET', '/v1/positions', { ...AUTH_PI0001, accept: mp }, undefined, 403, 'FORBIDDEN'],
      ['GET', '/v1/nothing-here', { ...AUTH_PI0001, accept: mp }, undefined, 404, 'NOT_FOUND'],
      ['GET', '/v1/batches/nope', { authorization: `Bearer ${TOKENS.ops}`, accept: mp }, undefined, 404, 'NOT_FOUND'],
      ['GET', '/v1/batches/nope/settlement.csv', { authorization: `Bearer ${TOKENS.ops}`, accept: mp }, undefined, 404, 'NOT_FOUND'],
      ['POST', '/v1/instructions', { ...AUTH_PI0001, 'content-type': mp }, encode({ id: 'ref-3', pad: 'p'.repeat(70 * 1024) }), 413, 'PAYLOAD_TOO_LARGE'],
      ['POST', '/v1/instructions', { ...AUTH_PI0001, 'content-type': 'application/json', accept: mp }, '{"id": "x",', 400, 'INVALID_MESSAGE'],
      ['POST', '/v1/instructions', { ...AUTH_PI0001, 'content-type': mp }, new Uint8Array([0xc1]), 400, 'INVALID_MESSAGE'],
    ];
    for (const [method, path, headers, body, status, code] of refusals) {
      const r = await bare(method, path, headers, body);
      expect(r.status, `${method} ${path} ${status}`).toBe(status);
      expect(r.type, `${method} ${path} ${status}`).toBe('application/msgpack');
      expect(r.body.code).toBe(code);
    }
    // And in JSON when nothing asks for msgpack.
    const json = await bare('POST', '/v1/instructions', { 'content-type': 'text/plain' }, JSON.stringify(good('ref-4')));
    expect(json).toMatchObject({ status: 401, type: 'application/json', body: { code: 'UNAUTHORIZED' } });
  });
});
