/**
 * A log that has lost entries a node holds (JetStream lost a majority's
 * unsynced writes, or its stores were wiped) must not be applied on top of
 * that node's data: the node refuses to run, exit code 2, naming both
 * sequences, rather than diverge silently or crash at its first
 * instruction; but only once the log has said so for 15 s, since one
 * stale answer must not stop a healthy cluster.
 */

import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { freePort, NatsCluster } from '../helpers/nats-cluster.js';

const dirs = tempDirs();
let nats: NatsCluster | undefined;
let engine: RunningEngine | undefined;

afterAll(async () => {
  await engine?.kill9();
  await nats?.stop();
  dirs.cleanup();
});

describe('a node whose data is ahead of the log', () => {
  it('refuses to run instead of diverging', async () => {
    nats = await NatsCluster.start(dirs.make());
    const dir = dirs.make();
    const port = await freePort();
    const config = testConfig(`${dir}/data`, {
      listen: { host: '127.0.0.1', port },
      cluster: { node: 'n1', advertise: `http://127.0.0.1:${port}`, nats: nats.urls, replicas: 3, leaseMs: 1000 },
    });
    engine = await startEngine(dir, config);
    const base = `http://127.0.0.1:${port}`;
    let ready = false;
    for (let i = 0; i < 100 && !ready; i++) {
      ready = (await http(base, 'GET', '/readyz').catch(() => undefined))?.status === 200;
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    expect(ready).toBe(true);
    const r = await http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'L-1', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 10 } });
    expect(r.body.status).toBe('cleared');
    expect(await engine.stop()).toBe(0);
    engine = undefined;

    // Every NATS store is lost: the log starts again from nothing.
    await nats.stop();
    for (const n of nats.nodes) rmSync(n.storeDir, { recursive: true, force: true });
    await Promise.all(nats.nodes.map((_, i) => nats!.restart(i)));
    await nats.waitMetaLeader();

    const startedAt = Date.now();
    const again = await startEngine(dir, config).catch((err: Error) => err);
    expect(again).toBeInstanceOf(Error);
    expect((again as Error).message).toMatch(/exited with 2/);
    expect((again as Error).message).toMatch(/has applied the log up to \d+, but the log ends at 0/);
    // Not on one reading: a NATS server resumed after a pause can answer from a stale copy for a moment, so the
    // node reads the log again for 15 s before it believes the log lost entries.
    expect((again as Error).message).toMatch(/reading it again before believing it/);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(15_000);
  }, 90_000);
});
