/**
 * Start-up: a bad configuration stops the engine with a message naming the
 * key; a data folder made for another shard count is refused; with no
 * configuration the engine runs on its embedded demo configuration and
 * prints its demo tokens.
 */

import { spawn } from 'node:child_process';
import { open } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { MAIN, runToExit, startEngine, tempDirs, testConfig, TOKENS } from '../helpers/engine-process.js';
import { enginePath, LAYOUT_UPGRADES_FROM, LAYOUT_VERSION } from '../../src/store/schema.js';

const dirs = tempDirs();
afterAll(dirs.cleanup);
const dir = dirs.make;

describe('start-up', () => {
  it('refuses bad configurations, naming the key', async () => {
    const d = dir();
    const base = testConfig(d);
    const cases: [string, string][] = [
      [JSON.stringify({ ...base, shardz: 2 }), 'shardz'],
      [JSON.stringify({ ...base, limits: { batchItemsMax: 0 } }), 'limits.batchItemsMax'],
      [JSON.stringify({ ...base, banks: [{ code: 'icbc', name: 'x' }, { code: 'ABC', name: 'y' }] }), 'banks[0].code'],
      [JSON.stringify({ ...base, principals: [{ token: 'has a space', role: 'operator', id: 'ops' }] }), 'principals[0].token'],
      [JSON.stringify({ ...base, principals: [{ token: '', role: 'operator', id: 'ops' }] }), 'principals[0].token'],
      [JSON.stringify({ ...base, principals: [{ token: 'abc', role: 'operator', id: 'ops' }, { token: 'abc', role: 'operator', id: 'ops2' }] }), 'principals[1].token'],
      [JSON.stringify({ ...base, banks: [{ code: 'ICBC', name: '' }, { code: 'ABC' }] }), 'banks[0].name'],
      [JSON.stringify({ ...base, listen: { port: 'eighty' } }), 'listen.port'],
      ['{ not json', '--config'],
    ];
    for (const [text, key] of cases) {
      const { code, output } = await runToExit(d, text);
      expect(code, key).toBe(2);
      expect(output).toContain(`'${key}'`);
    }
  });

  it('starts on what the contract allows: short tokens (warned about by key, never shown), banks without names, a 10 ms snapshot interval', async () => {
    const d = dir();
    const engine = await startEngine(d, {
      ...testConfig(d),
      banks: [{ code: 'ICBC' }, { code: 'CMB', name: 'China Merchants Bank' }],
      principals: [
        { token: 'pi1', role: 'institution', id: 'PI0001' },
        { token: TOKENS.ICBC, role: 'bank', id: 'ICBC' },
        { token: 'ops-short', role: 'operator', id: 'ops' },
      ],
      snapshotIntervalMs: 10,
    });
    try {
      const out = engine.output();
      const warnings = out
        .split('\n')
        .filter((l) => l.includes('"level":40'))
        .map((l) => JSON.parse(l).msg);
      expect(warnings).toEqual([
        'principals[0].token is shorter than 16 characters; use a long random token outside a trial',
        'principals[2].token is shorter than 16 characters; use a long random token outside a trial',
      ]);
      expect(out).not.toContain('pi1');
      expect(out).not.toContain('ops-short');
      // The warnings come before the engine listens.
      expect(out.indexOf('shorter than 16')).toBeLessThan(out.indexOf('"msg":"listening"'));

      const r = await http(engine.base, 'POST', '/v1/instructions', { token: 'pi1', body: { id: 'S-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 250 } });
      expect(r.body).toMatchObject({ id: 'S-1', status: 'cleared' });
      const first = (await http(engine.base, 'GET', '/v1/snapshots/latest', { token: 'ops-short' })).body.seq;
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect((await http(engine.base, 'GET', '/v1/snapshots/latest', { token: 'ops-short' })).body.seq).toBeGreaterThan(first + 3);
      // A bank without a name is named by its code in the settlement file.
      const report = (await http(engine.base, 'POST', '/v1/batches/close', { token: 'ops-short' })).body;
      const csv = await http(engine.base, 'GET', `/v1/batches/${report.batch}/settlement.csv`, { token: 'ops-short' });
      expect(csv.body.trim().split(/\r?\n/).slice(1)).toEqual([`${report.batch},ICBC,ICBC,250,0,-250,debit,250`, `${report.batch},CMB,China Merchants Bank,0,250,250,credit,250`]);
    } finally {
      expect(await engine.stop()).toBe(0);
    }
  });

  it('starts on the example configuration of the contract: one bank, on which nothing can be paid, and answers SAME_BANK', async () => {
    const d = dir();
    const engine = await startEngine(d, {
      listen: { host: '127.0.0.1', port: 0 },
      dataDir: d,
      banks: [{ code: 'ICBC', name: 'Industrial and Commercial Bank of China', debitCapCents: 500000000000 }],
      principals: [
        { token: TOKENS.PI0001, role: 'institution', id: 'PI0001' },
        { token: TOKENS.ICBC, role: 'bank', id: 'ICBC' },
        { token: TOKENS.ops, role: 'operator', id: 'ops' },
      ],
      snapshotIntervalMs: 1000,
      shards: 2,
    });
    try {
      expect((await http(engine.base, 'GET', '/readyz')).status).toBe(200);
      const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'E-1', type: 'gateway', payer: 'ICBC', payee: 'ICBC', amount: 5 } });
      expect(r.body).toMatchObject({ id: 'E-1', status: 'rejected', code: 'SAME_BANK' });
      const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
      expect(positions.banks).toEqual([{ bank: 'ICBC', net: '0', paid: '0', received: '0', pendingDebit: '0', count: 0 }]);
    } finally {
      expect(await engine.stop()).toBe(0);
    }
  });

  it('refuses a data folder created with another shard count', async () => {
    const d = dir();
    const engine = await startEngine(d, testConfig(d, { shards: 4 }));
    expect(await engine.stop()).toBe(0);
    const { code, output } = await runToExit(d, JSON.stringify(testConfig(d, { shards: 2, workers: 2 })));
    expect(code).toBe(2);
    expect(output).toMatch(/created with 4 shards/);
  });

  /** A data folder an engine made and stopped, then marked as of layout `version`; its layout record as the engine wrote it. */
  async function folderOfLayout(version: number): Promise<{ d: string; layout: { version: number; shards: number; createdAt: number } }> {
    const d = dir();
    const engine = await startEngine(d, testConfig(d));
    expect(await engine.stop()).toBe(0);
    const env = open({ path: enginePath(d), maxDbs: 12 });
    const meta = env.openDB<{ version: number; shards: number; createdAt: number }, string>({ name: 'meta', encoding: 'msgpack' });
    const layout = meta.get('layout')!;
    expect(layout.version).toBe(LAYOUT_VERSION);
    await meta.put('layout', { ...layout, version });
    await env.close();
    return { d, layout };
  }

  /** The layout record of a stopped engine's folder. */
  async function layoutOf(d: string): Promise<unknown> {
    const env = open({ path: enginePath(d), maxDbs: 12 });
    const layout = env.openDB<{ version: number }, string>({ name: 'meta', encoding: 'msgpack' }).get('layout');
    await env.close();
    return layout;
  }

  it('refuses a data folder of another storage layout, and leaves it as it was', async () => {
    // The folder as an engine of layout 2 would have left it.
    const { d, layout } = await folderOfLayout(2);
    const { code, output } = await runToExit(d, JSON.stringify(testConfig(d)));
    expect(code).toBe(2);
    expect(output).toContain(`data folder has layout version 2; this engine reads version ${LAYOUT_VERSION}`);
    expect(await layoutOf(d)).toEqual({ ...layout, version: 2 });
  });

  it.each([3, 4, 5])('takes over a data folder of layout %i as it is, and marks it as its own so that an older engine refuses it', async (version) => {
    expect(LAYOUT_UPGRADES_FROM).toContain(version);
    const { d, layout } = await folderOfLayout(version);
    const again = await startEngine(d, testConfig(d));
    expect(await again.stop()).toBe(0);
    expect(await layoutOf(d)).toEqual({ ...layout, version: LAYOUT_VERSION });
  });

  it('starts on the embedded demo configuration and prints its demo tokens', async () => {
    const cwd = dir();
    const proc = spawn(process.execPath, [MAIN], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETTING_CONFIG: '', NETTING_PORT: '0' } });
    let out = '';
    proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(out)), 20_000);
      proc.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /"port":(\d+),"msg":"listening"/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    try {
      expect(out).toContain('DEMO configuration');
      const token = /operator\s+ops\s+(\S+)/.exec(out)?.[1];
      expect(token).toMatch(/^demo-/);
      const base = `http://127.0.0.1:${port}`;
      const r = await http(base, 'GET', '/v1/positions', { token });
      expect(r.status).toBe(200);
      expect(r.body.banks.map((b: { bank: string }) => b.bank)).toContain('ICBC');
      // As by default, an agreement payment is held to a mandate only when it names one; the shipped ones admit payments.
      const inst = /institution\s+PI0001\s+(\S+)/.exec(out)?.[1];
      const pay = async (id: string, extra: Record<string, unknown>): Promise<any> =>
        (await http(base, 'POST', '/v1/instructions', { token: inst, body: { id, type: 'agreement', payer: 'ICBC', payee: 'CMB', amount: 19900, ...extra } })).body;
      expect(await pay('AG-1', { mandate: 'M-PI0001-ICBC' })).toMatchObject({ status: 'cleared' });
      expect(await pay('AG-2', {})).toMatchObject({ status: 'cleared' });
      expect(await pay('AG-3', { mandate: 'M-NONE' })).toMatchObject({ status: 'rejected', code: 'MANDATE_INVALID', field: 'mandate' });
      expect(await pay('AG-4', { mandate: 'M-PI0001-CMB' })).toMatchObject({ status: 'rejected', code: 'MANDATE_INVALID' });
    } finally {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});
