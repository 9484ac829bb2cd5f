/**
 * Cluster mode over real processes on loopback: three nats-server nodes
 * (JetStream, R3) and three engine nodes. Exactly one leads; followers
 * answer NOT_LEADER naming it; the leader's acknowledgements survive its
 * kill -9 and are answered as duplicates by the next leader.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { freePort, NatsCluster } from '../helpers/nats-cluster.js';

const dirs = tempDirs();
let nats: NatsCluster;
const nodes: { name: string; dir: string; port: number; engine: RunningEngine | undefined }[] = [];

async function startNode(i: number): Promise<void> {
  const n = nodes[i]!;
  n.engine = await startEngine(
    n.dir,
    testConfig(`${n.dir}/data`, {
      listen: { host: '127.0.0.1', port: n.port },
      cluster: { node: n.name, advertise: `http://127.0.0.1:${n.port}`, nats: nats.urls, replicas: 3, leaseMs: 1000 },
    }),
  );
}

async function readyz(i: number): Promise<{ status: number; body: any }> {
  try {
    return await http(`http://127.0.0.1:${nodes[i]!.port}`, 'GET', '/readyz');
  } catch {
    return { status: 0, body: undefined } as never;
  }
}

async function waitLeader(timeoutMs = 20_000, not?: number): Promise<number> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    for (let i = 0; i < nodes.length; i++) {
      if (i === not || nodes[i]!.engine === undefined) continue;
      const r = await readyz(i);
      if (r.status === 200 && r.body?.role === 'leader') return i;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no leader');
}

beforeAll(async () => {
  nats = await NatsCluster.start(dirs.make());
  for (let i = 0; i < 3; i++) nodes.push({ name: `n${i + 1}`, dir: dirs.make(), port: await freePort(), engine: undefined });
  for (let i = 0; i < 3; i++) await startNode(i);
}, 60_000);

afterAll(async () => {
  for (const n of nodes) await n.engine?.kill9();
  await nats?.stop();
  dirs.cleanup();
});

describe('a three-node cluster', () => {
  it('has one leader, and followers answer NOT_LEADER naming it', async () => {
    const leader = await waitLeader();
    const r = await readyz(leader);
    expect(r.body).toMatchObject({ role: 'leader', node: nodes[leader]!.name });
    for (let i = 0; i < 3; i++) {
      if (i === leader) continue;
      // A follower learns the leader from the lease within a fraction of leaseMs.
      let f = await readyz(i);
      for (let t = 0; t < 50 && f.body?.leader === undefined; t++) {
        await new Promise((r) => setTimeout(r, 100));
        f = await readyz(i);
      }
      expect(f.status).toBe(503);
      expect(f.body).toMatchObject({ code: 'NOT_LEADER', role: 'follower', node: nodes[i]!.name, leader: { node: nodes[leader]!.name, url: `http://127.0.0.1:${nodes[leader]!.port}` } });
      const post = await http(`http://127.0.0.1:${nodes[i]!.port}`, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'F-1', type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 5 } });
      expect(post.status).toBe(503);
      expect(post.body).toMatchObject({ code: 'NOT_LEADER', leader: { node: nodes[leader]!.name } });
    }
  }, 40_000);

  it('keeps what the leader acknowledged across its kill -9', async () => {
    const leader = await waitLeader();
    const base = `http://127.0.0.1:${nodes[leader]!.port}`;
    const items = Array.from({ length: 50 }, (_, i) => ({ id: `K-${i}`, type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 100 + i }));
    const r = await http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: items } });
    expect(r.status).toBe(200);
    expect(r.body.results.every((x: any) => x.status === 'cleared')).toBe(true);
    await nodes[leader]!.engine!.kill9();
    nodes[leader]!.engine = undefined;
    const next = await waitLeader(30_000, leader);
    const nb = `http://127.0.0.1:${nodes[next]!.port}`;
    const again = await http(nb, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: items } });
    expect(again.body.results.map((x: any) => [x.status, x.duplicate])).toEqual(items.map(() => ['cleared', true]));
    const pos = await http(nb, 'GET', '/v1/positions/ICBC', { token: TOKENS.ops });
    expect(pos.body.paid).toBe(String(items.reduce((s, i) => s + i.amount, 0)));
    await startNode(leader);
  }, 90_000);
});
