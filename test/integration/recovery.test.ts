/**
 * Durability: after a polite restart, and after `kill -9` in the middle of
 * a stream, every acknowledged instruction is stored exactly once, retries
 * are answered as duplicates, and positions equal a recomputation from the
 * stored instructions.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { randomInstruction, ReferenceModel, rng, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

interface StreamOutcome {
  submitted: RefInstruction[];
  acked: Set<string>;
}

/**
 * Stream frames from several connections, each keeping a window of frames
 * unacknowledged, until `stopAfterAcks` instructions are acked; then send
 * one more frame, call `interrupt` while it is in flight, and stop sending.
 */
async function streamUntil(engine: RunningEngine, prefix: string, stopAfterAcks: number, interrupt: () => Promise<void>): Promise<StreamOutcome> {
  const rand = rng(prefix.length * 7919 + stopAfterAcks);
  const clients = await Promise.all([0, 1, 2].map((i) => StreamClient.connect(engine.base, i === 2 ? TOKENS.PI0002 : TOKENS.PI0001, i === 1 ? 'json' : 'msgpack')));
  const submitted: RefInstruction[] = [];
  const acked = new Set<string>();
  let interrupted = false;
  let n = 0;
  const pump = async (c: StreamClient, institution: string): Promise<void> => {
    while (!interrupted) {
      const list = Array.from({ length: 100 }, () => randomInstruction(rand, BANKS, `${prefix}-${n++}`));
      submitted.push(...list.map((i) => ({ ...i, id: `${institution}/${i.id}` })));
      const ack = await Promise.race([c.submit(list), c.closed.then(() => undefined)]);
      if (ack === undefined) return;
      ack.results!.forEach((r, i) => {
        expect(r.status).toBe('cleared');
        acked.add(`${institution}/${list[i]!.id}`);
      });
      if (acked.size >= stopAfterAcks && !interrupted) {
        interrupted = true;
        // One more frame goes out right before the kill, so something is in flight however fast the engine commits.
        const last = Array.from({ length: 100 }, () => randomInstruction(rand, BANKS, `${prefix}-${n++}`));
        submitted.push(...last.map((i) => ({ ...i, id: `${institution}/${i.id}` })));
        void c.submit(last).catch(() => undefined);
        await interrupt();
      }
    }
  };
  const pumps: Promise<void>[] = [];
  clients.forEach((c, i) => {
    const institution = i === 2 ? 'PI0002' : 'PI0001';
    // Two frames in flight per connection.
    pumps.push(pump(c, institution), pump(c, institution));
  });
  await Promise.all(pumps);
  for (const c of clients) c.close();
  return { submitted, acked };
}

/** Resubmit everything: acked ids must come back as duplicates; then positions must equal the model of all of it. */
async function checkAfterRestart(engine: RunningEngine, all: RefInstruction[], acked: Set<string>, model: ReferenceModel): Promise<void> {
  const byInstitution = new Map<string, RefInstruction[]>();
  for (const i of all) {
    const [inst, id] = i.id.split('/') as [string, string];
    if (!byInstitution.has(inst)) byInstitution.set(inst, []);
    byInstitution.get(inst)!.push({ ...i, id });
  }
  let resubmittedDuplicates = 0;
  for (const [inst, list] of byInstitution) {
    const c = await StreamClient.connect(engine.base, TOKENS[inst as 'PI0001' | 'PI0002'], 'msgpack');
    for (let k = 0; k < list.length; k += 1000) {
      const chunk = list.slice(k, k + 1000);
      const ack = await c.submit(chunk);
      ack.results!.forEach((r, j) => {
        const key = `${inst}/${chunk[j]!.id}`;
        expect(r.status, key).toBe('cleared');
        if (acked.has(key)) {
          expect(r.duplicate, `acked ${key} must be found as a duplicate`).toBe(true);
          resubmittedDuplicates++;
        }
      });
    }
    c.close();
  }
  expect(resubmittedDuplicates).toBe(acked.size);
  const positions = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
  expect(rowsOf(positions.body)).toEqual(model.rows());
  expect(positions.body.totals).toEqual(model.totals());
  const audit = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
  expect(audit.body.ok).toBe(true);
  expect(audit.body.cleared).toBe(model.gross === 0n ? 0 : new Set(all.map((i) => i.id)).size);
}

describe('recovery', () => {
  it('keeps every acknowledged instruction across a graceful restart', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const config = testConfig(t.dir);
    let engine = await startEngine(t.dir, config);
    const model = new ReferenceModel(BANKS);
    const rand = rng(42);
    const list = Array.from({ length: 500 }, (_, i) => randomInstruction(rand, BANKS, `G-${i}`));
    const r = await http(engine.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { instructions: list } });
    r.body.results.forEach((x: { status: string }) => expect(x.status).toBe('cleared'));
    list.forEach((i) => model.clear(i));
    const before = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
    expect(await engine.stop()).toBe(0);

    engine = await startEngine(t.dir, config);
    const after = await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops });
    expect(after.body.banks).toEqual(before.body.banks);
    expect(after.body.batch).toBe(before.body.batch);
    expect(rowsOf(after.body)).toEqual(model.rows());
    await checkAfterRestart(engine, list.map((i) => ({ ...i, id: `PI0001/${i.id}` })), new Set(list.map((i) => `PI0001/${i.id}`)), model);
    expect(await engine.stop()).toBe(0);
  });

  // `npm run soak` raises the cycles; each kill lands at a random point of the stream.
  const cycles = Number(process.env['SOAK_KILL_CYCLES'] ?? 3);
  it(`loses nothing acknowledged when killed with SIGKILL mid-stream, ${cycles} cycles`, async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const config = testConfig(t.dir, { workers: 2, shards: 4 });
    const model = new ReferenceModel(BANKS);
    const all: RefInstruction[] = [];
    const ackedAll = new Set<string>();
    const when = rng(Number(process.env['SOAK_SEED'] ?? 2026));
    for (let cycle = 0; cycle < cycles; cycle++) {
      const engine = await startEngine(t.dir, config);
      const killAfter = 300 + Math.floor(when() * 3000);
      const { submitted, acked } = await streamUntil(engine, `K${cycle}`, killAfter, () => engine.kill9());
      expect(acked.size).toBeGreaterThanOrEqual(killAfter);
      all.push(...submitted);
      for (const a of acked) ackedAll.add(a);
    }
    for (const i of all) model.clear(i);
    // The restarted engine verifies its shards against their instruction logs before it listens (verifyOnStart).
    const engine = await startEngine(t.dir, config);
    await checkAfterRestart(engine, all, ackedAll, model);
    console.log(`kill cycles: ${cycles} survived; ${ackedAll.size} acknowledged instructions verified present exactly once; ${all.length} submitted in all`);
    expect(await engine.stop()).toBe(0);
  }, 60_000 + cycles * 20_000);
});
