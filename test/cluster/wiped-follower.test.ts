/**
 * A follower whose data folder is lost (stopped, folder deleted, started
 * again empty) catches up from the replicated log alone, and can then lead
 * with exactly the state the old leader had: open-batch positions with
 * pending reservations, a closed batch's report, every instruction as it
 * reads back. To make sure the wiped node is the one that takes over, the
 * other follower is stopped before the leader is killed.
 */

import { describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { ClientLedger, confirmReceipts, reportProblems, sleep, StreamLoad, useClusters, type EngineCluster } from '../helpers/cluster-nodes.js';
import { BANKS, TOKENS } from '../helpers/engine-process.js';
import { rng } from '../helpers/reference-model.js';

const LEASE_MS = 1000;

const clusters = useClusters({ leaseMs: LEASE_MS });

async function stream(c: EngineCluster, leader: number, ledger: ClientLedger, prefix: string, answers: number, rand: () => number): Promise<void> {
  const load = new StreamLoad(ledger, { prefix, rand, frameSize: 50, inFlight: 3, twoPhaseShare: 0.1 });
  await load.start(c.base(leader));
  const until = Date.now() + 60_000;
  while (load.answered < answers && Date.now() < until) await sleep(10);
  load.stop();
  await load.done;
  load.close();
  await ledger.settle(async () => c.base(leader));
  expect(ledger.violations).toEqual([]);
}

/** What a client can read of the state: positions, each bank's bilateral rows, closed batches, and the given instructions. */
async function readState(base: string, instructions: { institution: string; id: string }[]): Promise<Record<string, unknown>> {
  const get = async (path: string): Promise<unknown> => {
    const r = await http(base, 'GET', path, { token: TOKENS.ops });
    return { status: r.status, body: r.body };
  };
  const positions = (await http(base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
  const state: Record<string, unknown> = { batch: positions.batch, banks: positions.banks, totals: positions.totals };
  for (const b of BANKS) {
    // `seq` numbers the live view's changes since the process started: not state.
    const { seq: _seq, ...row } = (await http(base, 'GET', `/v1/positions/${b}`, { token: TOKENS.ops })).body;
    state[`bank ${b}`] = row;
  }
  const batches = (await http(base, 'GET', '/v1/batches', { token: TOKENS.ops })).body;
  state['batches'] = batches;
  for (const b of batches.batches ?? batches) if (typeof b?.batch === 'string' && b.status !== 'open') state[`batch ${b.batch}`] = await get(`/v1/batches/${b.batch}`);
  for (const i of instructions) state[`ins ${i.institution}/${i.id}`] = await get(`/v1/instructions/${i.institution}/${i.id}`);
  return state;
}

describe('a wiped follower', () => {
  it('catches up from the log and leads with identical state', async () => {
    const c = clusters.cluster();
    const rand = rng(23);
    const leader = await c.waitLeader({ timeoutMs: 60_000 });
    const [wiped, other] = [0, 1, 2].filter((i) => i !== leader) as [number, number];

    // Batch 1: a stream, then a cut-off whose report must survive.
    const first = new ClientLedger();
    await stream(c, leader, first, 'W1', 2500, rand);
    const closed = await http(c.base(leader), 'POST', '/v1/batches/close', { token: TOKENS.ops });
    expect(closed.status).toBe(200);
    expect(reportProblems(closed.body, first.model, first.clearedCount)).toEqual([]);

    // Batch 2 (open): a stream, and two-phase payments left pending (reserved against ICBC's cap) across the takeover.
    const second = new ClientLedger();
    await stream(c, leader, second, 'W2', 2500, rand);
    const held = Array.from({ length: 20 }, (_, k) => second.add('PI0001', { id: `WP-${k}`, type: 'gateway', payer: 'ICBC', payee: BANKS[1 + (k % 7)]!, amount: 1000 + k, twoPhase: true, timeoutMs: 3_600_000 }));
    const sub = await http(c.base(leader), 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: held.map((t) => t.ins) } });
    expect(sub.status).toBe(200);
    held.forEach((t, j) => second.onResult(t, sub.body.results[j], 'first'));
    expect(held.every((t) => t.state === 'pending')).toBe(true);

    const sample = [...first.clearedOrder.slice(-100), ...second.clearedOrder.slice(-100), ...held.map((t) => t.key)].map((k) => {
      const [institution, id] = k.split('/') as [string, string];
      return { institution, id };
    });
    for (let k = 0; k < 100; k++) {
      const key = first.clearedOrder[Math.floor(rand() * first.clearedCount)]!;
      const [institution, id] = key.split('/') as [string, string];
      sample.push({ institution, id });
    }
    const before = await readState(c.base(leader), sample);
    expect((before['banks'] as { bank: string; pendingDebit: string }[]).find((b) => b.bank === 'ICBC')!.pendingDebit).not.toBe('0');

    // Wipe the follower and let it catch up from the log alone.
    expect(await c.stop(wiped)).toBe(0);
    c.wipe(wiped);
    const restartedAt = Date.now();
    await c.start(wiped);
    // From its first answer it names the leader, and its lag counts from the log's end (not 0 before it first looks).
    const ready = await http(c.base(wiped), 'GET', '/readyz');
    expect(ready.body).toMatchObject({ code: 'NOT_LEADER', role: 'follower', leader: { node: c.name(leader) } });
    // HEAD, as load balancers check health: alive, and not the leader.
    expect((await http(c.base(wiped), 'HEAD', '/healthz')).status).toBe(200);
    expect((await http(c.base(wiped), 'HEAD', '/readyz')).status).toBe(503);
    expect((await http(c.base(leader), 'HEAD', '/readyz')).status).toBe(200);
    const target = (await c.metric(leader, 'netting_cluster_applied_seq'))!;
    expect(target).toBeGreaterThan(0);
    const [lag0, applied0, known0] = [
      await c.metric(wiped, 'netting_cluster_replication_lag_entries'),
      await c.metric(wiped, 'netting_cluster_applied_seq'),
      await c.metric(wiped, 'netting_cluster_leader_known'),
    ];
    expect(known0).toBe(1);
    // Nothing is appended meanwhile: what it has applied and what it lags add up to the log's end, whenever it is read.
    expect(lag0! + applied0!, `lag ${lag0}, applied ${applied0}, the log's end ${target}`).toBeGreaterThanOrEqual(target);
    await c.waitFollowing(wiped, leader);
    let applied = 0;
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      applied = (await c.metric(wiped, 'netting_cluster_applied_seq')) ?? 0;
      if (applied >= target) break;
      await sleep(100);
    }
    expect(applied, c.tails()).toBeGreaterThanOrEqual(target);
    const catchUpMs = Date.now() - restartedAt;

    // Only the wiped node is left to take over.
    expect(await c.stop(other)).toBe(0);
    await c.kill9(leader);
    const killedAt = Date.now();
    const next = await c.waitLeader({ timeoutMs: 30_000, pollMs: 20 });
    const takeoverMs = Date.now() - killedAt;
    expect(next).toBe(wiped);
    const after = await readState(c.base(next), sample);
    expect(after, `warnings and errors of the nodes:\n${c.grep(/"level":[4-6]0/).join('\n')}`).toEqual(before);

    // It goes on from there: the pending payments are confirmed, more is streamed, the others rejoin as followers.
    await confirmReceipts(c.base(next), second, held);
    expect(held.every((t) => t.state === 'cleared')).toBe(true);
    await stream(c, next, second, 'W3', 1000, rand);
    const check = await second.verify(c.base(next), 60, rand);
    expect(check.problems).toEqual([]);
    await c.start(leader);
    await c.start(other);
    await c.waitFollowing(leader, next);
    await c.waitFollowing(other, next);
    const report1 = await http(c.base(next), 'GET', `/v1/batches/${closed.body.batch}`, { token: TOKENS.ops });
    expect(reportProblems(report1.body, first.model, first.clearedCount)).toEqual([]);
    console.log(
      `wiped follower: caught up from the log to sequence ${applied} in ${catchUpMs} ms (start included); took over ${takeoverMs} ms after the leader's kill -9 ` +
        `with identical positions, closed batch and ${sample.length} instruction reads; ${first.clearedCount + second.clearedCount} acknowledged instructions verified`,
    );
  }, 240_000);
});
