/**
 * The audit answers while a stream runs: it checks each shard against one
 * read snapshot between its commits instead of waiting for the router to
 * fall idle, which never happens under steady load. And it does not hold a
 * shard's commits for its whole pass: over hundreds of thousands of
 * instructions, submissions go on being acknowledged while it reads.
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

  it('keeps acknowledging submissions while it reads a large log', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir));
    try {
      const rand = rng(9);
      const c = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
      // 400,000 instructions: a pass over them takes the workers the better part of a second.
      const inflight: Promise<unknown>[] = [];
      for (let f = 0; f < 400; f++) {
        inflight.push(c.submit(Array.from({ length: 1000 }, (_, i) => randomInstruction(rand, BANKS, `AL-${f}-${i}`))));
        if (inflight.length >= 8) await inflight.shift();
      }
      await Promise.all(inflight);
      let answered = false;
      const audit = http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops }).then((r) => {
        answered = true;
        return r;
      });
      // One small frame at a time, each over every shard, until the audit answers (bounded by count).
      let ackedDuring = 0;
      for (let k = 0; k < 10_000 && !answered; k++) {
        const ack = await c.submit(Array.from({ length: 8 }, (_, i) => randomInstruction(rand, BANKS, `AD-${k}-${i}`)));
        expect(ack.results!.every((r) => r.status === 'cleared')).toBe(true);
        if (!answered) ackedDuring++;
      }
      const r = await audit;
      expect(r.body.ok).toBe(true);
      expect(r.body.cleared).toBeGreaterThanOrEqual(400_000);
      // A pass that held the workers would let one frame through at most, the one in flight as it began.
      expect(ackedDuring).toBeGreaterThanOrEqual(3);
      c.close();
    } finally {
      await engine.stop();
    }
  }, 120_000);
});
