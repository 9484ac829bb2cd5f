/**
 * How a data-folder copy bounds the log: the leader purges the log below
 * what every other node has committed (less `cluster.logRetainEntries`).
 * A node with an empty data folder can then no longer catch up from the
 * log and refuses to run (exit 2, naming where the log starts); a node
 * started from a copy of a follower's data folder catches up from the
 * copy's sequence and can lead with the same state.
 */

import { cpSync, rmSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { LOG_STREAM } from '../../src/cluster/replicated-log.js';
import { http } from '../helpers/clients.js';
import { startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { freePort, NatsCluster } from '../helpers/nats-cluster.js';

const dirs = tempDirs();
let nats: NatsCluster | undefined;
const nodes: { name: string; dir: string; port: number; engine: RunningEngine | undefined }[] = [];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

afterAll(async () => {
  for (const n of nodes) await n.engine?.kill9();
  await nats?.stop();
  dirs.cleanup();
});

function config(i: number): Record<string, unknown> {
  const n = nodes[i]!;
  return testConfig(`${n.dir}/data`, {
    listen: { host: '127.0.0.1', port: n.port },
    cluster: { node: n.name, advertise: `http://127.0.0.1:${n.port}`, nats: nats!.urls, replicas: 3, leaseMs: 1000, logRetainEntries: 0 },
  });
}

async function readyz(i: number): Promise<{ status: number; body: any } | undefined> {
  return http(`http://127.0.0.1:${nodes[i]!.port}`, 'GET', '/readyz').catch(() => undefined);
}

async function leader(among: number[], timeoutMs = 30_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    for (const i of among) if ((await readyz(i))?.status === 200) return i;
    await sleep(100);
  }
  throw new Error('no leader');
}

async function firstSeq(): Promise<number> {
  const nc = await connect({ servers: nats!.urls });
  try {
    return (await (await jetstreamManager(nc)).streams.info(LOG_STREAM)).state.first_seq;
  } finally {
    await nc.close();
  }
}

describe('the log purged below what every node has committed', () => {
  it('turns away an empty node, and takes one started from a copied data folder up to leading', async () => {
    nats = await NatsCluster.start(dirs.make());
    for (let i = 0; i < 3; i++) nodes.push({ name: `p${i + 1}`, dir: dirs.make(), port: await freePort(), engine: undefined });
    for (let i = 0; i < 3; i++) nodes[i]!.engine = await startEngine(nodes[i]!.dir, config(i));
    const lead = await leader([0, 1, 2]);
    const base = `http://127.0.0.1:${nodes[lead]!.port}`;
    let paid = 0;
    for (let k = 0; k < 40; k++) {
      const r = await http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: `P-${k}`, type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 100 + k } });
      expect(r.body.status).toBe('cleared');
      paid += 100 + k;
    }
    // Followers report every 2 s, the leader purges every 10 s.
    let first = 1;
    for (let t = 0; t < 300 && first <= 40; t++) {
      await sleep(100);
      first = await firstSeq();
    }
    expect(first).toBeGreaterThan(40);

    const [a, b] = [0, 1, 2].filter((i) => i !== lead) as [number, number];
    // An empty data folder cannot catch up from a purged log.
    expect(await nodes[a]!.engine!.stop()).toBe(0);
    rmSync(`${nodes[a]!.dir}/data`, { recursive: true, force: true });
    const refused = await startEngine(nodes[a]!.dir, config(a)).catch((err: Error) => err);
    nodes[a]!.engine = refused instanceof Error ? undefined : refused;
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toMatch(/exited with 2/);
    expect((refused as Error).message).toMatch(/the log now starts at \d+: start it from a copy of a follower's data folder/);

    // A copy of the other follower's folder (taken while it is stopped) can.
    expect(await nodes[b]!.engine!.stop()).toBe(0);
    cpSync(`${nodes[b]!.dir}/data`, `${nodes[a]!.dir}/data`, { recursive: true });
    nodes[b]!.engine = await startEngine(nodes[b]!.dir, config(b));
    nodes[a]!.engine = await startEngine(nodes[a]!.dir, config(a));
    const more = await http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'P-after', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 7 } });
    expect(more.body.status).toBe('cleared');
    paid += 7;

    // Leave the copied node alone: it must lead, with everything.
    expect(await nodes[b]!.engine!.stop()).toBe(0);
    nodes[b]!.engine = undefined;
    await nodes[lead]!.engine!.kill9();
    nodes[lead]!.engine = undefined;
    const next = await leader([a]);
    const pos = await http(`http://127.0.0.1:${nodes[next]!.port}`, 'GET', '/v1/positions/ICBC', { token: TOKENS.ops });
    expect(pos.body.paid).toBe(String(paid));
    expect(pos.body.count).toBe(41);
  }, 120_000);
});
