/**
 * A paused leader (SIGSTOP: a long GC pause, a frozen VM) loses its lease
 * and a follower takes over. When it wakes up (SIGCONT) it must
 * acknowledge nothing more: a request sent to it before or while it was
 * paused may be answered `cleared` only if the new leader holds that
 * instruction; it rejoins as a follower naming the new leader; and the new
 * leader holds everything that was acknowledged, by either.
 */

import { describe, expect, it } from 'vitest';
import { http, StreamClient, type Ack } from '../helpers/clients.js';
import { ClientLedger, sleep, StreamLoad, useClusters, type Tracked } from '../helpers/cluster-nodes.js';
import { BANKS, TOKENS } from '../helpers/engine-process.js';
import { randomInstruction, rng } from '../helpers/reference-model.js';

const LEASE_MS = 1000;
/** How soon after SIGCONT the old leader must answer /readyz as a follower of the new one. */
const REJOIN_BOUND_MS = 10_000;

const clusters = useClusters({ leaseMs: LEASE_MS });

describe('a leader paused with SIGSTOP', () => {
  it('acknowledges nothing more once resumed, rejoins as a follower, and the new leader holds everything acknowledged', async () => {
    const c = clusters.cluster();
    const ledger = new ClientLedger();
    const rand = rng(11);
    const old = await c.waitLeader({ timeoutMs: 60_000 });

    // Load on the leader, frames in flight on both connections when it is paused.
    const load = new StreamLoad(ledger, { prefix: 'S', rand, frameSize: 50, inFlight: 3 });
    await load.start(c.base(old));
    const late = await StreamClient.connect(c.base(old), TOKENS.PI0002, 'msgpack');
    const until = Date.now() + 30_000;
    while (load.answered < 1500 && Date.now() < until) await sleep(5);
    expect(load.answered).toBeGreaterThanOrEqual(1500);

    /** Answers the old leader gives from now on, judged against the new leader below. */
    const lateAnswers: { t: Tracked; r: any; via: string; at: number }[] = [];
    c.pause(old);
    const pausedAt = Date.now();
    load.divert = (t, r) => lateAnswers.push({ t, r, via: 'stream', at: Date.now() });
    load.stop();
    const inFlightAtPause = new Set(ledger.unanswered().map((t) => t.key));

    // Sent while it is paused: a WebSocket frame and an HTTP batch (the kernel takes them; the process reads them once resumed).
    const wsItems = Array.from({ length: 50 }, (_, k) => ledger.add('PI0002', randomInstruction(rand, BANKS, `SW-${k}`)));
    const wsAnswer: Promise<Ack | undefined> = Promise.race([late.submit(wsItems.map((t) => t.ins)), late.closed.then(() => undefined)]);
    const httpItems = Array.from({ length: 50 }, (_, k) => ledger.add('PI0001', randomInstruction(rand, BANKS, `SH-${k}`)));
    const httpAnswer = http(c.base(old), 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: httpItems.map((t) => t.ins) } }).catch(
      (err: unknown) => ({ status: 0, body: String(err) }),
    );
    const sentToPaused = new Set([...inFlightAtPause, ...wsItems.map((t) => t.key), ...httpItems.map((t) => t.key)]);
    // Reads sent while it is paused: once resumed, it is no leader, and answers nothing from its (stale) state.
    const closed = { status: 0, body: 'connection closed' };
    const readsWhilePaused = [
      http(c.base(old), 'GET', '/v1/positions', { token: TOKENS.ops }).catch(() => closed),
      http(c.base(old), 'GET', `/v1/instructions/PI0001/${httpItems[0]!.ins.id}`, { token: TOKENS.ops }).catch(() => closed),
      http(c.base(old), 'GET', '/readyz').catch(() => closed),
    ];

    // A follower takes over once the lease has lapsed.
    const leader = await c.waitLeader({ exclude: [old], timeoutMs: 30_000, pollMs: 20 });
    const failoverMs = Date.now() - pausedAt;
    // Fresh load on the new leader, and everything unanswered that was not sent to the paused node, retried there.
    await ledger.settle(async () => c.base(leader), 60_000, sentToPaused);
    const load2 = new StreamLoad(ledger, { prefix: 'N', rand, frameSize: 50, inFlight: 2 });
    await load2.start(c.base(leader));
    while (load2.answered < 1000 && Date.now() < until + 30_000) await sleep(5);
    load2.stop();
    await load2.done;
    load2.close();
    await ledger.settle(async () => c.base(leader), 60_000, sentToPaused);

    // Wake the old leader up, and read from it at once, again and again, until it stops answering or answers as a follower.
    const resumedAt = Date.now();
    c.resume(old);
    const readsAfterResume: { status: number; body: unknown }[] = [];
    while (Date.now() - resumedAt < 2000) {
      const r = await http(c.base(old), 'GET', '/v1/positions', { token: TOKENS.ops }).catch(() => closed);
      readsAfterResume.push(r);
      if (r.status === 0 || (r.status === 503 && (r.body as { leader?: unknown }).leader !== undefined)) break;
    }
    const following = await c.waitFollowing(old, leader, REJOIN_BOUND_MS);
    const rejoinMs = Date.now() - resumedAt;
    expect(following.body).toMatchObject({ code: 'NOT_LEADER', role: 'follower', node: c.name(old), leader: { node: c.name(leader), url: c.base(leader) } });

    // Its connections are closed or answered; collect every late answer.
    const ws = await Promise.race([wsAnswer, sleep(10_000).then(() => 'hung' as const)]);
    if (ws !== undefined && ws !== 'hung' && ws.op === 'ack') wsItems.forEach((t, j) => lateAnswers.push({ t, r: ws.results![j], via: 'stream (sent while paused)', at: Date.now() }));
    const h = await Promise.race([httpAnswer, sleep(10_000).then(() => ({ status: -1, body: 'hung' }))]);
    if (h.status === 200) httpItems.forEach((t, j) => lateAnswers.push({ t, r: h.body.results[j], via: 'http (sent while paused)', at: Date.now() }));
    await Promise.race([load.done, sleep(10_000)]);
    load.close();
    late.close();
    for (const r of [...(await Promise.all(readsWhilePaused)), ...readsAfterResume]) {
      // NOT_LEADER (as a follower answers), or the connection closed by its step-down: never a stale 200, nor NOT_READY.
      if (r.status !== 0) expect(r, `a read sent to the paused leader was answered ${JSON.stringify(r)}`).toMatchObject({ status: 503, body: { code: 'NOT_LEADER', role: 'follower', node: c.name(old) } });
    }
    expect(ws, 'the WebSocket frame sent to the paused leader is neither answered nor closed after it resumed').not.toBe('hung');
    expect(h.status, `the HTTP request sent to the paused leader is still open after it resumed`).not.toBe(-1);

    // A late "cleared" (or "pending") from the old leader is true only if the new leader holds the instruction.
    const wrong: string[] = [];
    let lateCleared = 0;
    let afterResume = 0;
    for (const { t, r, via, at } of lateAnswers) {
      if (r?.status !== 'cleared' && r?.status !== 'pending') continue;
      lateCleared++;
      // A paused process sends nothing: what arrived before SIGCONT was sent before the pause.
      if (at >= resumedAt) afterResume++;
      const read = await http(c.base(leader), 'GET', `/v1/instructions/${t.institution}/${t.ins.id}`, { token: TOKENS.ops });
      if (read.status !== 200 || read.body.status !== r.status || read.body.amount !== t.ins.amount) {
        wrong.push(`${t.key} via ${via}: the old leader answered ${JSON.stringify(r)} after it was deposed; the new leader reads ${read.status} ${JSON.stringify(read.body)}`);
      }
    }
    expect(wrong, c.tails(40)).toEqual([]);
    for (const { t, r } of lateAnswers) ledger.onResult(t, r, 'first');

    // Everything is settled on the new leader; it holds everything acknowledged, by either leader.
    await ledger.settle(async () => c.base(await c.waitLeader({ timeoutMs: 30_000 })));
    expect(ledger.violations).toEqual([]);
    const check = await ledger.verify(c.base(leader), 60, rand);
    expect(check.problems, c.tails()).toEqual([]);
    // The old node is still a follower (its process did not end on the way).
    await c.waitFollowing(old, leader);
    expect(c.crashed()).toEqual([]);
    console.log(
      `paused leader: failover after SIGSTOP ${failoverMs} ms; after SIGCONT the old leader answered /readyz as a follower of ${c.name(leader)} in ${rejoinMs} ms; ` +
        `${sentToPaused.size} instructions were in flight at it or sent to it while paused, ${lateAnswers.length} answered by it once the pause began (${lateCleared} as cleared or pending, ${afterResume} of them after SIGCONT; all held by the new leader); ` +
        `the HTTP batch sent while paused got ${h.status === 0 ? 'its connection closed' : `${h.status} ${JSON.stringify(h.body).slice(0, 120)}`}, the WebSocket frame ${ws === undefined ? 'its connection closed' : JSON.stringify(ws).slice(0, 120)}; ` +
        `${ledger.clearedCount} acknowledged in all, verified on the new leader`,
    );
  }, 180_000);

  it('answers no request from its stale state once resumed, reads included: NOT_LEADER as a follower would, or its connection closed', async () => {
    const c = clusters.cluster();
    const old = await c.waitLeader({ timeoutMs: 60_000 });
    const id = 'PR-1';
    expect((await http(c.base(old), 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id, type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 700, twoPhase: true } })).body.status).toBe('pending');
    // Idle, so that nothing but the lease tells it that it was replaced.
    c.pause(old);
    const closed = { status: 0, body: 'connection closed' };
    const ask = (): Promise<{ status: number; body: any }>[] => [
      http(c.base(old), 'GET', `/v1/instructions/PI0001/${id}`, { token: TOKENS.PI0001 }).catch(() => closed),
      http(c.base(old), 'GET', '/v1/positions', { token: TOKENS.ops }).catch(() => closed),
      http(c.base(old), 'GET', '/readyz').catch(() => closed),
      http(c.base(old), 'GET', '/v1/no-such-route', { token: TOKENS.ops }).catch(() => closed),
    ];
    const whilePaused = ask();
    const leader = await c.waitLeader({ exclude: [old], timeoutMs: 30_000, pollMs: 20 });
    // The new leader moves the instruction on: the old one's state of it is stale from here.
    expect((await http(c.base(leader), 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id, outcome: 'confirm' } })).body.status).toBe('cleared');
    c.resume(old);
    const answers = [...(await Promise.all(whilePaused))];
    for (let k = 0; k < 5; k++) answers.push(...(await Promise.all(ask())));
    for (const r of answers) {
      if (r.status === 0) continue;
      // A follower's answer names the leader; until the node knows it, `leader` is left out.
      expect(r, `the resumed leader answered ${JSON.stringify(r)}`).toMatchObject({ status: 503, body: { code: 'NOT_LEADER', role: 'follower', node: c.name(old) } });
    }
    await c.waitFollowing(old, leader, REJOIN_BOUND_MS);
    expect((await http(c.base(leader), 'GET', `/v1/instructions/PI0001/${id}`, { token: TOKENS.ops })).body.status).toBe('cleared');
    expect(c.crashed()).toEqual([]);
  }, 120_000);
});
