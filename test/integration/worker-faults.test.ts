/**
 * Worker faults: a shard worker thread dies in the middle of a stream. The
 * engine brings the shard back from its LMDB environment, answers the
 * affected items with what it holds (cleared if their commit landed,
 * INTERNAL only if it did not: never a false ack, never a false refusal),
 * and goes on; retries with the same ids settle every item exactly once.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS } from '../helpers/engine-process.js';
import { randomInstruction, ReferenceModel, rng, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

describe('a shard worker that dies', () => {
  it('costs no acknowledged instruction and no double booking, and the engine goes on', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir, { shards: 4, workers: 2, faultInjection: true, receiptQueryScheduleMs: [] }));
    const rand = rng(77);
    const clients = await Promise.all([0, 1, 2].map(() => StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack')));
    const all: RefInstruction[] = [];
    const failed: RefInstruction[] = [];
    let cleared = 0;
    let n = 0;
    let crashes = 0;
    let crashing = true;
    // Each client keeps two frames in flight until the crashes are over (at least 25 frames a pump, at most 400), so the crashes land mid-stream.
    const pump = async (c: StreamClient): Promise<void> => {
      for (let f = 0; f < 400 && (f < 25 || crashing); f++) {
        const list = Array.from({ length: 100 }, () => randomInstruction(rand, BANKS, `WF-${n++}`));
        all.push(...list);
        const ack = await c.submit(list);
        ack.results!.forEach((r, i) => {
          if (r.status === 'cleared') cleared++;
          else {
            expect(r).toMatchObject({ status: 'rejected', code: 'INTERNAL' });
            failed.push(list[i]!);
          }
        });
      }
    };
    // Three crashes, alternating workers, and more (at most twelve) until one has caught a task in the act: a
    // crash between tasks fails nothing, and the shards commit fast enough for that to happen.
    const crash = async (): Promise<void> => {
      for (let k = 0; k < 12 && (k < 3 || failed.length === 0); k++) {
        const w = k % 2;
        await new Promise((r) => setTimeout(r, 150));
        const r = await http(engine.base, 'POST', `/v1/debug/workers/${w}/crash`, { token: TOKENS.ops });
        expect(r.status).toBe(202);
        crashes++;
      }
      crashing = false;
    };
    await Promise.all([...clients.flatMap((c) => [pump(c), pump(c)]), crash()]);
    expect(crashes).toBeGreaterThanOrEqual(3);
    expect(failed.length).toBeGreaterThan(0);
    expect(cleared + failed.length).toBe(all.length);

    // Retry what failed: each is either found (it was committed after all) or booked now; never twice.
    let found = 0;
    for (let k = 0; k < failed.length; k += 500) {
      const chunk = failed.slice(k, k + 500);
      const ack = await clients[0]!.submit(chunk);
      ack.results!.forEach((r) => {
        expect(r.status).toBe('cleared');
        if (r.duplicate === true) found++;
      });
    }
    const model = new ReferenceModel(BANKS);
    all.forEach((i) => model.clear(i));
    const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
    expect(rowsOf(positions)).toEqual(model.rows());
    const audit = (await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops })).body;
    expect(audit.ok).toBe(true);
    expect(audit.cleared).toBe(all.length);
    // The engine is still whole: a new stream goes through.
    const after = await clients[1]!.submit([randomInstruction(rand, BANKS, 'WF-after')]);
    expect(after.results![0].status).toBe('cleared');
    expect(engine.output()).toMatch(/shard resynchronised from disk/);
    // INTERNAL is definitive: none of those items had been stored.
    expect(found).toBe(0);
    console.log(`worker faults: ${crashes} crashes, ${failed.length} items answered INTERNAL, ${found} of them found committed on retry`);
    for (const c of clients) c.close();
    expect(await engine.stop()).toBe(0);
  });
});
