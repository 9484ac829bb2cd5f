/**
 * The audit answers while a stream runs: it checks each shard against one
 * read snapshot between its commits instead of waiting for the router to
 * fall idle, which never happens under steady load. And neither it nor a
 * bucket drill-down holds a shard's commits (or the main thread) for its
 * whole pass: over hundreds of thousands of instructions, submissions go on
 * being acknowledged while they read.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS } from '../helpers/engine-process.js';
import { randomInstruction, rng } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

describe('GET /v1/audit under load', () => {
  it('answers ok while clients keep streaming', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    try {
      const rand = rng(5);
      const clients = await Promise.all([0, 1].map(() => StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack')));
      let streaming = true;
      let n = 0;
      let acked = 0;
      const deadline = Date.now() + 20_000;
      // Each client keeps two frames in flight until the audits are done (bounded by count and time).
      const pump = async (c: StreamClient): Promise<void> => {
        for (let f = 0; f < 5000 && streaming && Date.now() < deadline; f++) {
          const ack = await c.submit(Array.from({ length: 50 }, () => randomInstruction(rand, BANKS, `AU-${n++}`)));
          acked += ack.results!.filter((r) => r.status === 'cleared').length;
        }
      };
      const audits: { ok: boolean; duringStream: boolean; cleared: number }[] = [];
      const auditor = async (): Promise<void> => {
        while (acked < 2000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        for (let k = 0; k < 3; k++) {
          const r = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
          expect(r.status).toBe(200);
          audits.push({ ok: r.body.ok, duringStream: streaming, cleared: r.body.cleared });
        }
        streaming = false;
      };
      await Promise.all([...clients.flatMap((c) => [pump(c), pump(c)]), auditor()]);
      expect(audits).toHaveLength(3);
      for (const a of audits) {
        expect(a.ok).toBe(true);
        expect(a.duringStream).toBe(true);
      }
      // The stream went on between the audits: each saw more committed than the one before or as many.
      expect(audits[2]!.cleared).toBeGreaterThanOrEqual(audits[0]!.cleared);
      for (const c of clients) c.close();
      const final = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
      expect(final.body.ok).toBe(true);
      expect(final.body.cleared).toBe(acked);
    } finally {
      await engine.stop();
    }
  });

  it('keeps acknowledging submissions while the audit or a bucket drill-down reads a large log', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    try {
      const rand = rng(9);
      const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
      // 400,000 instructions of one institution: a pass over them takes the workers the better part of a second.
      const inflight: Promise<unknown>[] = [];
      for (let f = 0; f < 400; f++) {
        inflight.push(c.submit(Array.from({ length: 1000 }, (_, i) => randomInstruction(rand, BANKS, `AL-${f}-${i}`))));
        if (inflight.length >= 8) await inflight.shift();
      }
      await Promise.all(inflight);
      const batch = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body.batch as string;
      let k = 0;
      /** Frames acknowledged while `read` ran: one small frame at a time, each over every shard (bounded by count). */
      const ackedWhile = async <T,>(read: Promise<T>): Promise<{ acked: number; result: T }> => {
        let answered = false;
        const done = read.then((r) => {
          answered = true;
          return r;
        });
        let acked = 0;
        for (let i = 0; i < 10_000 && !answered; i++) {
          const ack = await c.submit(Array.from({ length: 8 }, (_, j) => randomInstruction(rand, BANKS, `AD-${k++}-${j}`)));
          expect(ack.results!.every((r) => r.status === 'cleared')).toBe(true);
          if (!answered) acked++;
        }
        return { acked, result: await done };
      };
      // A pass that held the workers, or the main thread, would let one frame through at most: the one in flight as it began.
      const audit = await ackedWhile(http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops }));
      expect(audit.result.body.ok).toBe(true);
      expect(audit.result.body.cleared).toBeGreaterThanOrEqual(400_000);
      expect(audit.acked).toBeGreaterThanOrEqual(3);
      const drill = await ackedWhile(http(engine.base, 'GET', `/v1/reconciliation/${batch}/buckets/7`, { token: TOKENS.PI0001 }));
      expect(drill.result.status).toBe(200);
      const listed = drill.result.body.instructions as { id: string; status: string }[];
      // About 1/256 of 400,000, every one cleared.
      expect(listed.length).toBeGreaterThan(1000);
      expect(listed.every((i) => i.status === 'cleared')).toBe(true);
      expect(drill.acked).toBeGreaterThanOrEqual(3);
      c.close();
    } finally {
      await engine.stop();
    }
  }, 120_000);
});
