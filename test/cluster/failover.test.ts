/**
 * Failover under load, over real processes on loopback: three nats-server
 * nodes (JetStream, R3) and three engine nodes. Each cycle streams
 * instructions to the leader over WebSocket (two institutions, several
 * frames in flight, random bank pairs over every shard, two-phase gateway
 * payments confirmed by the payer bank), kills the leader with SIGKILL
 * mid-stream, waits for another node to answer GET /readyz as leader, and
 * retries there everything that was not answered, with the same ids. The
 * killed node is started again on its data folder and must rejoin as a
 * follower. After every cycle the new leader's positions equal the
 * reference model of the acknowledged results, a sample of acknowledged
 * instructions reads back, and acknowledged instructions sent again are
 * duplicates. At the end a closed batch's settlement report equals the
 * model too.
 *
 * CLUSTER_KILL_CYCLES sets the cycles (10 by default; `npm run
 * cluster:soak` runs 100).
 */

import { describe, expect, it } from 'vitest';
import { http } from '../helpers/clients.js';
import { ClientLedger, medianWorst, reportProblems, sleep, StreamLoad, useClusters } from '../helpers/cluster-nodes.js';
import { TOKENS } from '../helpers/engine-process.js';
import { rng, rowsOf } from '../helpers/reference-model.js';

const CYCLES = Number(process.env['CLUSTER_KILL_CYCLES'] ?? 10);
const SEED = Number(process.env['CLUSTER_SEED'] ?? 7);
const LEASE_MS = 1000;

const clusters = useClusters({ leaseMs: LEASE_MS });

describe('failover under load', () => {
  it(`loses nothing acknowledged when the leader is killed with SIGKILL mid-stream, ${CYCLES} cycles`, async () => {
    const c = clusters.cluster();
    const ledger = new ClientLedger();
    const rand = rng(SEED);
    const failovers: number[] = [];
    let readsVerified = 0;
    let leader = await c.waitLeader({ timeoutMs: 60_000 });

    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const at = `cycle ${cycle}`;
      const clearedBefore = ledger.clearedCount;
      const load = new StreamLoad(ledger, { prefix: `C${cycle}`, rand, frameSize: 50, inFlight: 3, twoPhaseShare: 0.1 });
      await load.start(c.base(leader));
      // The kill lands at a random point of the stream, with frames in flight on both connections.
      const killAfter = 200 + Math.floor(rand() * 1500);
      const until = Date.now() + 30_000;
      while (load.answered < killAfter && Date.now() < until) await sleep(5);
      expect(load.answered, `${at}: the stream did not get going\n${c.tails()}`).toBeGreaterThanOrEqual(killAfter);
      const killedAt = Date.now();
      const old = leader;
      await c.kill9(old);
      load.stop();
      await load.done;

      leader = await c.waitLeader({ exclude: [old], timeoutMs: 30_000, pollMs: 20 });
      failovers.push(Date.now() - killedAt);

      // The killed node comes back on its data folder while the clients retry on the new leader.
      const rejoin = c.start(old);
      await ledger.settle(async () => c.base(await c.waitLeader({ timeoutMs: 30_000 })));
      await rejoin;
      leader = await c.waitLeader({ timeoutMs: 30_000 });
      expect(ledger.violations, `${at}\n${c.tails()}`).toEqual([]);

      // What was acknowledged before the kill, the newest first (the most at risk), is a duplicate now.
      const ackedThisCycle = ledger.clearedOrder.slice(clearedBefore);
      const firstTime = ackedThisCycle.map((k) => ledger.items.get(k)!).filter((t) => t.ackedFirstTime && !t.retried);
      await ledger.resubmit(c.base(leader), firstTime.slice(-150), 'resend');
      expect(ledger.violations, `${at}: acknowledged instructions sent again`).toEqual([]);

      const check = await ledger.verify(c.base(leader), 40, rand);
      readsVerified += check.read;
      expect(check.problems, `${at}: leader ${c.name(leader)}\n${c.tails()}`).toEqual([]);
      // The restarted node rejoined as a follower of the new leader, and no node's process ended by itself.
      await c.waitFollowing(old, leader);
      expect(c.crashed(), at).toEqual([]);
    }

    // A cut-off on the last leader: its report covers everything acknowledged, once.
    const base = c.base(leader);
    const closed = await http(base, 'POST', '/v1/batches/close', { token: TOKENS.ops });
    expect(closed.status).toBe(200);
    expect(reportProblems(closed.body, ledger.model, ledger.clearedCount)).toEqual([]);
    const after = await http(base, 'GET', '/v1/positions', { token: TOKENS.ops });
    expect(after.body.batch).not.toBe(closed.body.batch);
    expect(rowsOf(after.body).every((r) => r['paid'] === '0' && r['received'] === '0' && r['count'] === 0)).toBe(true);
    const audit = await http(base, 'GET', '/v1/audit', { token: TOKENS.ops });
    expect(audit.body.ok, JSON.stringify(audit.body)).toBe(true);

    const { median, worst } = medianWorst(failovers);
    const s = ledger.stats;
    console.log(
      `cluster failover: ${CYCLES} kill -9 cycles survived; ${ledger.clearedCount} instructions acknowledged cleared and verified in positions and the closed batch's report ` +
        `(${s.sent} sent; ${s.receiptsCleared} two-phase cleared by receipt; unanswered at a kill and retried: ${s.retriedDuplicate} found stored, ${s.retriedFresh} cleared fresh; ` +
        `${s.duplicateChecks} acknowledged ones sent again answered duplicate; ${readsVerified} read back one by one); ` +
        `failover (kill to new leader ready, leaseMs ${LEASE_MS}): median ${median} ms, worst ${worst} ms; all: ${failovers.join(' ')}`,
    );
  }, 120_000 + CYCLES * 30_000);
});
