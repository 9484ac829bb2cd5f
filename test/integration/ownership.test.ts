/**
 * Exclusive ownership, over real processes: a second engine on a data
 * folder that a running engine holds is refused, naming the first one's
 * pid and command line; `kill -9` leaves no stale lock behind; a second
 * engine on a port that a running engine listens on is refused instead of
 * sharing it (uWebSockets.js would otherwise set SO_REUSEPORT).
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { runToExit, startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';

const dirs = tempDirs();
afterAll(dirs.cleanup);

/** Stop an engine politely if it is still running; a test that failed half-way leaves no process behind. */
async function stopIfRunning(engine: RunningEngine | undefined): Promise<void> {
  if (engine !== undefined && engine.proc.exitCode === null && engine.proc.signalCode === null) await engine.stop();
}

async function ready(engine: RunningEngine): Promise<void> {
  const r = await http(engine.base, 'GET', '/readyz');
  expect(r.status).toBe(200);
}

describe('ownership of a data folder', () => {
  it('refuses a second engine on a held folder, naming the holder; after kill -9 of the holder a new engine starts', async () => {
    const d = dirs.make();
    const config = JSON.stringify(testConfig(d));
    let first: RunningEngine | undefined;
    let third: RunningEngine | undefined;
    try {
      first = await startEngine(d, JSON.parse(config) as Record<string, unknown>);
      const pid = first.proc.pid;
      expect(pid).toBeTypeOf('number');

      const second = await runToExit(d, config);
      expect(second.code, second.output).toBe(2);
      expect(second.output).toContain(`data folder ${d} is in use by another engine: pid ${pid} `);
      expect(second.output).toContain('dist/src/main.js --config');
      // The refused engine opened nothing: the first one still serves.
      await ready(first);
      const put = await http(first.base, 'POST', '/v1/instructions', {
        token: TOKENS.PI0001,
        body: { id: 'OWN-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 1234 },
      });
      expect(put.status, JSON.stringify(put.body)).toBe(200);

      await first.kill9();
      third = await startEngine(d, JSON.parse(config) as Record<string, unknown>);
      await ready(third);
      const again = await http(third.base, 'GET', '/v1/instructions/PI0001/OWN-1', { token: TOKENS.ops });
      expect(again.status, JSON.stringify(again.body)).toBe(200);
      expect(await third.stop()).toBe(0);
    } finally {
      await stopIfRunning(first);
      await stopIfRunning(third);
    }
  });
});

describe('ownership of a port', () => {
  it('refuses a second engine on a port a running engine listens on', async () => {
    const d = dirs.make();
    const e = dirs.make();
    let first: RunningEngine | undefined;
    try {
      first = await startEngine(d, testConfig(d));
      const { code, output } = await runToExit(e, JSON.stringify(testConfig(e, { listen: { host: '127.0.0.1', port: first.port } })));
      expect(code, output).toBe(2);
      expect(output).toContain(`cannot listen on 127.0.0.1:${first.port}: the port is in use by another process`);
      // The refused engine gave its own data folder back in order.
      expect(output).toContain('engine stopped');
      // Every connection still reaches the first engine.
      for (let i = 0; i < 8; i++) await ready(first);
      expect(await first.stop()).toBe(0);
    } finally {
      await stopIfRunning(first);
    }
  });
});
