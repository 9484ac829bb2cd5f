/**
 * The two mechanisms cluster mode's safety rests on, against a real
 * three-node JetStream cluster: appends fenced by the expected last
 * sequence (a writer that has been replaced can append nothing more, and
 * once one of its appends fails every later one does), and the lease (one
 * holder at a time; it can be taken only once it has lapsed, and the old
 * holder's renewal then fails).
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEntry, FencedError, ReplicatedLog } from '../../src/cluster/replicated-log.js';
import { tempDirs } from '../helpers/engine-process.js';
import { NatsCluster } from '../helpers/nats-cluster.js';

const dirs = tempDirs();
let nats: NatsCluster;
const opened: ReplicatedLog[] = [];
const LEASE_MS = 1000;

async function open(node: string): Promise<ReplicatedLog> {
  const log = await ReplicatedLog.open({ node, advertise: `http://127.0.0.1:1/${node}`, nats: nats.urls, replicas: 3, leaseMs: LEASE_MS }, () => undefined, 30_000);
  opened.push(log);
  return log;
}

const task = (shard: number, id: string) => ({ kind: 'apply' as const, shard, batch: 'B', now: 1, ops: [['S', 'PI0001', id, 'gateway', 'ICBC', 'CMB', 1, null, 0, null] as never] });

beforeAll(async () => {
  nats = await NatsCluster.start(dirs.make());
}, 60_000);

afterAll(async () => {
  for (const l of opened) await l.close();
  await nats?.stop();
  dirs.cleanup();
});

describe('the replicated log', () => {
  it('fences out a writer that has been replaced, for good', async () => {
    const a = await open('a');
    const b = await open('b');
    const start = await a.lastSeq();
    const termA = await a.beginTerm(start);
    expect(termA).toBe(start + 1);
    expect(await a.appendTask(task(0, 'X-1'))).toBe(start + 2);
    // b takes over from what it has read.
    const termB = await b.beginTerm(await b.lastSeq());
    expect(termB).toBe(start + 3);
    await expect(a.appendTask(task(1, 'X-2'))).rejects.toBeInstanceOf(FencedError);
    // Once fenced, always fenced: even an append whose expectation might match again fails.
    await expect(a.appendTask(task(1, 'X-3'))).rejects.toBeInstanceOf(FencedError);
    expect(await b.appendTask(task(1, 'X-4'))).toBe(start + 4);
    // What the log holds, in order: a's term, a's task, b's term, b's task; nothing of the fenced writer after b's term.
    const messages = await b.follow(start + 1);
    const seen: string[] = [];
    for await (const m of messages) {
      const e = decodeEntry(m.data);
      seen.push(e.k === 'term' ? `term:${e.node}` : e.k === 'task' ? `task:${String(e.task.ops[0]![2])}` : 'store');
      if (m.seq >= start + 4) break;
    }
    await messages.close();
    expect(seen).toEqual(['term:a', 'task:X-1', 'term:b', 'task:X-4']);
  }, 30_000);

  it('has one lease holder, which others can take only once it lapses', async () => {
    const a = await open('la');
    const b = await open('lb');
    // A lease left by the previous test's writers may still be live: wait for it to lapse.
    let revA: number | undefined;
    for (let i = 0; i < 50 && revA === undefined; i++) {
      revA = await a.acquire();
      if (revA === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    expect(revA).toBeDefined();
    expect(await b.acquire()).toBeUndefined();
    expect(await b.leader()).toMatchObject({ node: 'la' });
    const renewed = await a.renew(revA!);
    expect(renewed).toBeGreaterThan(revA!);
    // Unrenewed, it lapses after LEASE_MS; then b can take it, and a's renewal fails.
    let revB: number | undefined;
    const until = Date.now() + LEASE_MS * 5;
    while (revB === undefined && Date.now() < until) {
      revB = await b.acquire();
      if (revB === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    expect(revB).toBeDefined();
    expect(await a.renew(renewed!)).toBeUndefined();
    expect(await a.leader()).toMatchObject({ node: 'lb' });
    // A clean stop gives it up at once. The bucket answers reads from any replica (direct get), so another
    // node's read may trail the release by a replica's apply: it must show no leader within moments, not the lease's life.
    await b.release(revB!);
    let seen = await a.leader();
    for (let i = 0; i < 20 && seen !== undefined; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = await a.leader();
    }
    expect(seen).toBeUndefined();
    expect(await a.acquire()).toBeDefined();
  }, 30_000);
});
