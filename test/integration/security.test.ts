/**
 * Security and operations: TLS with a certificate made here, tokens never
 * in the logs, every new route checked for every role, an audit trail of
 * operator actions, a bounded graceful stop under load, and thousands of
 * idle connections held while dead ones are timed out.
 */

import { execFileSync } from 'node:child_process';
import { request } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDirs, testConfig, TOKENS } from '../helpers/engine-process.js';
import { randomInstruction, rng } from '../helpers/reference-model.js';

/** The monitoring system's token: GET /metrics and nothing else. */
const METRICS_TOKEN = 'test-token-metrics-prometheus';

/** The test configuration with a `metrics` principal added. */
function withMetricsPrincipal(config: Record<string, unknown>): Record<string, unknown> {
  return { ...config, principals: [...(config['principals'] as object[]), { token: METRICS_TOKEN, role: 'metrics', id: 'prometheus' }] };
}

const dirs = tempDirs();
afterAll(dirs.cleanup);
const dir = dirs.make;

function httpsJson(port: number, ca: Buffer, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { host: '127.0.0.1', port, method, path, ca, servername: 'localhost', headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(payload ? { 'content-type': 'application/json' } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('TLS', () => {
  it('serves HTTPS and WSS with a certificate from the configuration', async () => {
    const d = dir();
    const key = join(d, 'key.pem');
    const cert = join(d, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    const engine = await startEngine(d, testConfig(d, { tls: { certFile: cert, keyFile: key } }));
    expect(engine.output()).toMatch(/"tls":true/);
    const ca = execFileSync('cat', [cert]);
    expect((await httpsJson(engine.port, ca, 'GET', '/healthz')).status).toBe(200);
    const r = await httpsJson(engine.port, ca, 'POST', '/v1/instructions', TOKENS.PI0001, { id: 'tls-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 10 });
    expect(r.body).toMatchObject({ id: 'tls-1', status: 'cleared' });
    const tlsOptions = { ca, servername: 'localhost', headers: { authorization: `Bearer ${TOKENS.PI0001}` } };
    const ws = new WebSocket(`wss://127.0.0.1:${engine.port}/v1/stream`, tlsOptions);
    const pong = await new Promise<any>((resolve, reject) => {
      ws.once('open', () => ws.send(JSON.stringify({ op: 'ping', seq: 1 })));
      ws.once('message', (m) => resolve(JSON.parse(m.toString())));
      ws.once('error', reject);
    });
    expect(pong).toEqual({ op: 'pong', seq: 1 });
    ws.close();
    // Plain HTTP to the TLS port gets no answer.
    await expect(fetch(`${engine.base}/healthz`)).rejects.toThrow();
    expect(await engine.stop()).toBe(0);
  });

  it('refuses to start with a certificate file it cannot read, naming the key', async () => {
    const d = dir();
    const { runToExit } = await import('../helpers/engine-process.js');
    const { code, output } = await runToExit(d, JSON.stringify(testConfig(d, { tls: { certFile: join(d, 'none.pem'), keyFile: join(d, 'none.key') } })));
    expect(code).toBe(2);
    expect(output).toContain("'tls.certFile'");
  });
});

describe('tokens, roles and the audit trail', () => {
  it('never writes a token to the logs, even at trace level', async () => {
    const d = dir();
    const engine = await startEngine(d, testConfig(d, { logLevel: 'trace' }));
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'log-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 10 } });
    await http(engine.base, 'POST', '/v1/instructions', { token: 'an-unknown-token-that-must-not-show', body: {} });
    await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops });
    await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
    const c = await StreamClient.connect(engine.base, TOKENS.ICBC, 'json', 'query');
    await c.request({ op: 'ping' });
    c.close();
    await expect(StreamClient.connect(engine.base, 'another-unknown-token-xyz', 'json', 'query')).rejects.toThrow();
    expect(await engine.stop()).toBe(0);
    const out = engine.output();
    expect(out).toMatch(/operator action/);
    for (const t of [...Object.values(TOKENS), 'an-unknown-token-that-must-not-show', 'another-unknown-token-xyz']) expect(out).not.toContain(t);
    expect(out.toLowerCase()).not.toContain('bearer ');
  });

  it('checks every route added for the lifecycle, batches, snapshots and reconciliation for every role', async () => {
    const d = dir();
    const engine = await startEngine(d, withMetricsPrincipal(testConfig(d)));
    const batch = (await http(engine.base, 'GET', '/readyz')).body.batch;
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'r-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 10 } });
    type Who = 'none' | 'PI0001' | 'ICBC' | 'ops' | 'metrics';
    const tok = (w: Who): string | undefined => (w === 'none' ? undefined : w === 'metrics' ? METRICS_TOKEN : TOKENS[w]);
    const table: [string, string, unknown, Record<Who, number[]>][] = [
      ['POST', '/v1/receipts', { institution: 'PI0001', id: 'r-1', outcome: 'confirm' }, { none: [401], PI0001: [403], ICBC: [200], ops: [403], metrics: [403] }],
      ['POST', '/v1/instructions/PI0001/r-1/resolve', { outcome: 'confirm' }, { none: [401], PI0001: [403], ICBC: [403], ops: [200, 409], metrics: [403] }],
      ['POST', '/v1/instructions/PI0001/nope/reverse', {}, { none: [401], PI0001: [403], ICBC: [403], ops: [404], metrics: [403] }],
      ['GET', '/v1/batches', undefined, { none: [401], PI0001: [403], ICBC: [200], ops: [200], metrics: [403] }],
      ['GET', `/v1/batches/${batch}`, undefined, { none: [401], PI0001: [403], ICBC: [200], ops: [200], metrics: [403] }],
      ['GET', `/v1/batches/${batch}/settlement.csv`, undefined, { none: [401], PI0001: [403], ICBC: [403], ops: [409], metrics: [403] }],
      ['POST', `/v1/batches/${batch}/settled`, {}, { none: [401], PI0001: [403], ICBC: [403], ops: [409], metrics: [403] }],
      ['GET', '/v1/snapshots/latest', undefined, { none: [401], PI0001: [200], ICBC: [200], ops: [200], metrics: [403] }],
      ['POST', '/v1/reconciliation', { batch, count: 1, amount: '10', digest: '0000000000000000' }, { none: [401], PI0001: [200], ICBC: [403], ops: [403], metrics: [403] }],
      ['GET', `/v1/reconciliation/${batch}/buckets`, undefined, { none: [401], PI0001: [200], ICBC: [403], ops: [400], metrics: [403] }],
      ['GET', '/v1/operator-actions', undefined, { none: [401], PI0001: [403], ICBC: [403], ops: [200], metrics: [403] }],
      ['POST', '/v1/debug/workers/0/crash', {}, { none: [401], PI0001: [404], ICBC: [404], ops: [404], metrics: [404] }],
      ['GET', '/metrics', undefined, { none: [401], PI0001: [403], ICBC: [403], ops: [200], metrics: [200] }],
      // Last, since the operator's try closes the batch.
      ['POST', '/v1/batches/close', undefined, { none: [401], PI0001: [403], ICBC: [403], metrics: [403], ops: [200] }],
    ];
    for (const [method, path, body, expected] of table) {
      for (const who of Object.keys(expected) as Who[]) {
        const r = await http(engine.base, method, path, { token: tok(who), body });
        expect(expected[who], `${method} ${path} as ${who} gave ${r.status}`).toContain(r.status);
      }
    }
    // Stream ops by role: only banks send receipts.
    for (const who of ['PI0001', 'ops'] as const) {
      const c = await StreamClient.connect(engine.base, TOKENS[who], 'json');
      expect(await c.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'r-1', outcome: 'confirm' }] })).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
      c.close();
    }
    // A metrics token opens no stream at all.
    await expect(StreamClient.connect(engine.base, METRICS_TOKEN, 'json')).rejects.toThrow(/403/);
    expect(await engine.stop()).toBe(0);
  });

  it('writes operator actions to a durable audit trail', async () => {
    const d = dir();
    const config = testConfig(d);
    let engine = await startEngine(d, config);
    await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'a-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 10 } });
    const closed = (await http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops })).body;
    await http(engine.base, 'POST', `/v1/batches/${closed.batch}/settled`, { token: TOKENS.ops });
    await http(engine.base, 'POST', '/v1/instructions/PI0001/a-1/reverse', { token: TOKENS.ops });
    await http(engine.base, 'POST', '/v1/instructions/PI0001/none/resolve', { token: TOKENS.ops, body: { outcome: 'confirm' } });
    await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
    await engine.kill9();
    engine = await startEngine(d, config);
    const actions = (await http(engine.base, 'GET', '/v1/operator-actions', { token: TOKENS.ops })).body.actions;
    expect(actions.map((a: any) => [a.action, a.target, a.outcome])).toEqual([
      ['close-batch', closed.batch, expect.stringMatching(/^closed: 1 entries/)],
      ['mark-settled', closed.batch, 'settled'],
      ['reverse', 'PI0001/a-1', 'reversed'],
      ['resolve', 'PI0001/none', 'NOT_FOUND'],
      ['audit', expect.any(String), 'ok'],
    ]);
    for (const a of actions) expect(a.operator).toBe('ops');
    expect(actions.map((a: any) => a.seq)).toEqual([1, 2, 3, 4, 5]);
    expect((await http(engine.base, 'GET', '/v1/operator-actions?limit=2', { token: TOKENS.ops })).body.actions.map((a: any) => a.seq)).toEqual([4, 5]);
    expect(await engine.stop()).toBe(0);
  });
});

describe('stopping and connection limits', () => {
  it('stops on SIGTERM under load within its bound, losing nothing it acknowledged', async () => {
    const d = dir();
    const config = testConfig(d, { limits: { shutdownDrainMs: 1000, shutdownMs: 3000 } });
    let engine = await startEngine(d, config);
    const rand = rng(4);
    const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
    const acked: string[] = [];
    let n = 0;
    let stopping: Promise<number | null> | undefined;
    let stoppedAt = 0;
    for (let f = 0; f < 200; f++) {
      const list = Array.from({ length: 200 }, () => randomInstruction(rand, BANKS, `SD-${n++}`));
      const ack = await Promise.race([c.submit(list), c.closed.then(() => undefined)]);
      if (ack === undefined) break;
      if (ack.op === 'error') {
        // Once stopping, the engine refuses new work rather than take it on.
        expect(ack.code).toBe('NOT_READY');
        continue;
      }
      ack.results!.forEach((r, i) => {
        expect(r.status).toBe('cleared');
        acked.push(list[i]!.id);
      });
      if (f === 10) {
        stoppedAt = Date.now();
        stopping = engine.stop();
      }
    }
    expect(await stopping).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(3000 + 1000);
    expect(acked.length).toBeGreaterThan(0);
    engine = await startEngine(d, config);
    const audit = (await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops })).body;
    expect(audit.ok).toBe(true);
    for (const id of acked.filter((_, i) => i % 50 === 0)) {
      expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/${id}`, { token: TOKENS.ops })).status).toBe(200);
    }
    expect(audit.cleared).toBeGreaterThanOrEqual(acked.length);
    expect(await engine.stop()).toBe(0);
  });

  it('holds thousands of idle connections and times out one that never answers', async () => {
    const d = dir();
    const engine = await startEngine(d, testConfig(d, { limits: { wsIdleTimeoutS: 8 } }));
    const idle: WebSocket[] = [];
    const N = 2000;
    for (let i = 0; i < N; i += 200) {
      await Promise.all(
        Array.from({ length: 200 }, () => {
          const ws = new WebSocket(`ws://127.0.0.1:${engine.port}/v1/stream?token=${TOKENS.ICBC}`);
          idle.push(ws);
          return new Promise((resolve, reject) => {
            ws.once('open', resolve);
            ws.once('error', reject);
          });
        }),
      );
    }
    const metrics = (await http(engine.base, 'GET', '/metrics', { token: TOKENS.ops })).body as string;
    expect(metrics).toMatch(new RegExp(`netting_ws_connections\\{role="bank"\\} ${N}`));
    const fresh = await StreamClient.connect(engine.base, TOKENS.PI0001, 'json');
    expect(await fresh.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
    // A raw client that upgrades and then never answers pings is closed after the idle timeout.
    const raw = connect(engine.port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    raw.write(`GET /v1/stream?token=${TOKENS.ICBC} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    raw.on('data', () => undefined);
    const started = Date.now();
    await new Promise((resolve) => raw.once('close', resolve));
    const tookS = (Date.now() - started) / 1000;
    expect(tookS).toBeGreaterThan(4);
    expect(tookS).toBeLessThan(30);
    // The well-behaved clients, which answer pings, are all still there.
    expect(idle.filter((w) => w.readyState === WebSocket.OPEN)).toHaveLength(N);
    for (const w of idle) w.terminate();
    fresh.close();
    expect(await engine.stop()).toBe(0);
  }, 60_000);
});
