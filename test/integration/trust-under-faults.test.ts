/**
 * Trust under faults: after a shard worker dies, every answer the engine
 * gives is still the truth. An item answered INTERNAL was not stored (a
 * retry with the same id is never a duplicate); an item answered cleared is
 * in the batch its answer names, and every settlement report equals what
 * was acknowledged into it; a capped payer never passes its cap in any
 * batch, however crashes and cut-offs interleave; and an identical
 * resubmission racing its payer bank's receipt answers the stored state as
 * a duplicate, never as a conflict.
 */

import { afterAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { ReferenceModel, rng, rowsOf, type RefInstruction } from '../helpers/reference-model.js';

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

type InstitutionId = 'PI0001' | 'PI0002';

/** An instruction as sent, with the institution that sent it. */
interface Sent {
  institution: InstitutionId;
  item: RefInstruction & { twoPhase?: boolean; timeoutMs?: number };
}

interface Refused extends Sent {
  code: string;
}

const TYPES = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'] as const;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)]!;
}

/** A bank's figures as a report or the model writes them, without the fields only one of them has. */
function figures(rows: readonly { bank: string; net: string; paid: string; received: string }[]): { bank: string; net: string; paid: string; received: string }[] {
  return rows.map(({ bank, net, paid, received }) => ({ bank, net, paid, received }));
}

/** Start an engine, run `body` against it, and make sure it is gone afterwards whatever happened. */
async function withEngine(overrides: Record<string, unknown>, body: (engine: RunningEngine) => Promise<void>): Promise<void> {
  const dir = dirs.make();
  const engine = await startEngine(dir, testConfig(dir, overrides));
  let stopped = false;
  try {
    await body(engine);
    stopped = true;
    expect(await engine.stop()).toBe(0);
  } finally {
    if (!stopped) await engine.kill9();
  }
}

/**
 * One stream of frames of 100 fresh instructions on `c`, while `more(f)`
 * holds for frame `f`: a frame answered with anything but one result per
 * item is an anomaly; each result goes to `onResult` with what was sent.
 * Answers the number of instructions sent.
 */
async function pumpFrames(
  c: StreamClient,
  more: (frame: number) => boolean,
  nextItem: () => Sent,
  anomalies: string[],
  onResult: (r: any, s: Sent, i: number) => void,
): Promise<number> {
  let sent = 0;
  for (let f = 0; more(f); f++) {
    const list: Sent[] = Array.from({ length: 100 }, nextItem);
    sent += list.length;
    const ack = await c.submit(list.map((s) => s.item));
    if (ack.op !== 'ack' || ack.results?.length !== list.length) {
      anomalies.push(`frame answered ${JSON.stringify(ack).slice(0, 200)}`);
      continue;
    }
    ack.results.forEach((r, i) => onResult(r, list[i]!, i));
  }
  return sent;
}

async function crashWorker(engine: RunningEngine, worker: number): Promise<void> {
  const r = await http(engine.base, 'POST', `/v1/debug/workers/${worker}/crash`, { token: TOKENS.ops });
  expect(r.status).toBe(202);
}

/** Retry items with the same ids and content, in frames of 500, over a connection of each one's institution. */
async function retry(clients: Record<InstitutionId, StreamClient>, items: readonly Sent[]): Promise<{ sent: Sent; result: any }[]> {
  const out: { sent: Sent; result: any }[] = [];
  for (const institution of ['PI0001', 'PI0002'] as const) {
    const mine = items.filter((s) => s.institution === institution);
    for (let k = 0; k < mine.length; k += 500) {
      const chunk = mine.slice(k, k + 500);
      const ack = await clients[institution].submit(chunk.map((s) => s.item));
      expect(ack.op).toBe('ack');
      chunk.forEach((sent, i) => out.push({ sent, result: ack.results![i] }));
    }
  }
  return out;
}

const CAP = 50_000_000;
const CAPPED = 'ABC';

describe('answers after shard worker crashes', () => {
  it('keep a capped payer within its cap in every batch, and every batch report equals what was acknowledged into it', async () => {
    const banks = BANKS.map((code) => (code === CAPPED ? { code, name: 'capped test bank', debitCapCents: CAP } : { code, name: `${code} test bank` }));
    await withEngine({ banks, shards: 4, workers: 2, faultInjection: true, receiptQueryScheduleMs: [] }, async (engine) => {
      const started = Date.now();
      const deadline = started + 25_000;
      const rand = rng(4711);
      const others = BANKS.filter((b) => b !== CAPPED);
      const institutions: InstitutionId[] = ['PI0001', 'PI0002', 'PI0001', 'PI0002'];
      const clients = await Promise.all(institutions.map((inst) => StreamClient.connect(engine.base, TOKENS[inst], 'msgpack')));
      const retryClients = { PI0001: clients[0]!, PI0002: clients[1]! };

      // Half of the items make the capped bank pay, a tenth make it receive: its cap binds all the time.
      const make = (id: string): RefInstruction => {
        const r = rand();
        let payer: string;
        let payee: string;
        if (r < 0.5) {
          payer = CAPPED;
          payee = pick(rand, others);
        } else if (r < 0.6) {
          payer = pick(rand, others);
          payee = CAPPED;
        } else {
          payer = pick(rand, others);
          do payee = pick(rand, others);
          while (payee === payer);
        }
        const i: RefInstruction = { id, type: pick(rand, TYPES), payer, payee, amount: 1 + Math.floor(rand() * 1_000_000) };
        if (rand() < 0.2) i.reference = `order ${id}`;
        return i;
      };

      /** The reference of each batch, built from the acknowledgements alone. */
      const byBatch = new Map<string, ReferenceModel>();
      const countByBatch = new Map<string, number>();
      const book = (batch: string, item: RefInstruction): void => {
        let m = byBatch.get(batch);
        if (m === undefined) byBatch.set(batch, (m = new ReferenceModel(BANKS)));
        m.clear(item);
        countByBatch.set(batch, (countByBatch.get(batch) ?? 0) + 1);
      };
      const refused: Refused[] = [];
      const anomalies: string[] = [];
      const codes = new Map<string, number>();
      let sent = 0;
      let cleared = 0;
      let n = 0;
      let faulting = true;

      const pump = async (c: StreamClient, institution: InstitutionId, tag: string): Promise<void> => {
        // Added after the await: `sent += await …` would read `sent` before the other pumps add to it.
        const count = await pumpFrames(
          c,
          (f) => f < 300 && (f < 20 || faulting) && Date.now() < deadline,
          () => ({ institution, item: make(`CAPF-${tag}-${n++}`) }),
          anomalies,
          (r, s, i) => {
            if (r.id !== s.item.id) anomalies.push(`result ${i} names ${r.id}, not ${s.item.id}`);
            if (r.duplicate !== undefined) anomalies.push(`fresh id ${s.item.id} answered with duplicate: ${r.duplicate}`);
            if (r.status === 'cleared' && typeof r.batch === 'string') {
              cleared++;
              book(r.batch, s.item);
            } else if (r.status === 'rejected' && ['INTERNAL', 'DEBIT_CAP_EXCEEDED', 'OVERLOADED'].includes(r.code)) {
              codes.set(r.code, (codes.get(r.code) ?? 0) + 1);
              refused.push({ ...s, code: r.code });
            } else {
              anomalies.push(`${s.item.id} answered ${JSON.stringify(r)}`);
            }
          },
        );
        sent += count;
      };

      // Sixteen crashes, alternating workers; a cut-off after every third, not awaited, so crashes land while it drains.
      const cutoffs: Promise<{ status: number; body: any }>[] = [];
      let crashes = 0;
      const faults = async (): Promise<void> => {
        try {
          await sleep(200);
          for (let k = 0; k < 16 && Date.now() < deadline; k++) {
            await sleep(100 + Math.floor(rand() * 150));
            await crashWorker(engine, k % 2);
            crashes++;
            if (k % 3 === 2) cutoffs.push(http(engine.base, 'POST', '/v1/batches/close', { token: TOKENS.ops }));
          }
          await Promise.all(cutoffs);
        } finally {
          faulting = false;
        }
      };
      await Promise.all([...clients.flatMap((c, i) => [pump(c, institutions[i]!, `${i}a`), pump(c, institutions[i]!, `${i}b`)]), faults()]);
      const closes = await Promise.all(cutoffs);
      const streamMs = Date.now() - started;

      expect(anomalies.slice(0, 10)).toEqual([]);
      expect(crashes).toBe(16);
      expect(closes.map((c) => c.status)).toEqual(closes.map(() => 200));
      expect(cleared + refused.length).toBe(sent);
      // The cap was binding: without refusals the test would prove nothing about it.
      expect(codes.get('DEBIT_CAP_EXCEEDED') ?? 0).toBeGreaterThan(0);

      // Every refused item is retried with the same id and content: none was stored, so none is a duplicate.
      // A retry may clear now (in the open batch, which its answer names) or be refused by the cap again.
      const retried = await retry(retryClients, refused);
      const falseRefusals: string[] = [];
      let retryCleared = 0;
      for (const { sent: s, result: r } of retried) {
        const was = (s as Refused).code;
        if (r.duplicate === true) falseRefusals.push(`${s.institution}/${s.item.id} answered ${was}, but was stored: ${JSON.stringify(r)}`);
        else if (r.status === 'cleared' && typeof r.batch === 'string') {
          retryCleared++;
          book(r.batch, s.item);
        } else if (!(r.status === 'rejected' && r.code === 'DEBIT_CAP_EXCEEDED')) anomalies.push(`retry of ${s.item.id} answered ${JSON.stringify(r)}`);
      }
      expect(falseRefusals.slice(0, 10)).toEqual([]);
      expect(anomalies.slice(0, 10)).toEqual([]);

      // Every closed batch: its report equals the reference of its acknowledgements, and the capped bank is within its cap.
      const list = await http(engine.base, 'GET', '/v1/batches', { token: TOKENS.ops });
      expect(list.status).toBe(200);
      const reports: any[] = list.body.batches;
      const open = reports.filter((b) => b.status === 'open');
      expect(open).toHaveLength(1);
      const closed = reports.filter((b) => b.status !== 'open');
      expect(closed.length).toBe(closes.length);
      const known = new Set(reports.map((b) => b.batch));
      for (const batch of byBatch.keys()) expect(known.has(batch), `batch ${batch} named by an acknowledgement is not listed`).toBe(true);
      for (const listed of closed) {
        const one = await http(engine.base, 'GET', `/v1/batches/${listed.batch}`, { token: TOKENS.ops });
        expect(one.status).toBe(200);
        expect(one.body).toEqual(listed);
        const model = byBatch.get(listed.batch) ?? new ReferenceModel(BANKS);
        expect(figures(one.body.banks), `batch ${listed.batch}`).toEqual(figures(model.rows()));
        expect(one.body.count, `batch ${listed.batch}`).toBe(countByBatch.get(listed.batch) ?? 0);
        expect(one.body.gross, `batch ${listed.batch}`).toBe(model.gross.toString());
        const row = one.body.banks.find((b: any) => b.bank === CAPPED);
        expect(-BigInt(row.net), `${CAPPED}'s net debit in batch ${listed.batch}`).toBeLessThanOrEqual(BigInt(CAP));
      }
      // Each cut-off answered the report that is stored for its batch.
      for (const c of closes) expect((await http(engine.base, 'GET', `/v1/batches/${c.body.batch}`, { token: TOKENS.ops })).body).toEqual(c.body);

      // The open batch: the positions equal the reference of what was acknowledged into it, within the cap too.
      const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
      expect(positions.batch).toBe(open[0].batch);
      expect(rowsOf(positions)).toEqual((byBatch.get(positions.batch) ?? new ReferenceModel(BANKS)).rows());
      const mine = positions.banks.find((b: any) => b.bank === CAPPED);
      expect(BigInt(mine.paid) - BigInt(mine.received) + BigInt(mine.pendingDebit)).toBeLessThanOrEqual(BigInt(CAP));
      const audit = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
      expect(audit.body.ok).toBe(true);
      expect(engine.output()).toMatch(/shard resynchronised from disk/);
      console.log(
        `capped payer under faults: ${crashes} crashes, ${closes.length} cut-offs, ${sent} items in ${streamMs} ms, ${cleared} cleared, ` +
          `refused ${JSON.stringify(Object.fromEntries(codes))}, ${retryCleared} cleared on retry, ${byBatch.size} batches with entries`,
      );
      for (const c of clients) c.close();
    });
  }, 50_000);

  it('an identical resubmission racing its payer bank receipt answers the stored state as a duplicate, never a conflict', async () => {
    await withEngine({ shards: 4, workers: 2, receiptQueryScheduleMs: [] }, async (engine) => {
      const deadline = Date.now() + 20_000;
      const rand = rng(99);
      const payees = BANKS.filter((b) => b !== 'ICBC');
      const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
      const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
      const model = new ReferenceModel(BANKS);
      const anomalies: string[] = [];
      const seen = { pending: 0, cleared: 0 };
      let raced = 0;

      const receiptOf = (id: string) => ({ institution: 'PI0001', id, outcome: 'confirm' });
      for (let round = 0; round < 15 && Date.now() < deadline; round++) {
        const list: Sent['item'][] = Array.from({ length: 10 }, (_, i) => {
          const item: Sent['item'] = { id: `RACE-${round}-${i}`, type: 'gateway', payer: 'ICBC', payee: pick(rand, payees), amount: 1 + Math.floor(rand() * 5_000_000), twoPhase: true };
          if (rand() < 0.5) item.timeoutMs = 60_000;
          if (rand() < 0.3) item.reference = `race ${round}/${i}`;
          return item;
        });
        const first = await inst.submit(list);
        first.results!.forEach((r, i) => {
          if (!(r.status === 'pending' && r.id === list[i]!.id && r.duplicate === undefined)) anomalies.push(`first submission of ${list[i]!.id} answered ${JSON.stringify(r)}`);
        });
        // For each: the payer bank's receipt and an identical resubmission, sent together, in varying orders and over both transports.
        await Promise.all(
          list.map(async (item, i) => {
            const mode = (round * 10 + i) % 4;
            let receipt: Promise<any>;
            let again: Promise<any>;
            if (mode === 0) {
              receipt = bank.request({ op: 'receipt', receipts: [receiptOf(item.id)] }).then((a) => a.results?.[0]);
              again = inst.submit([item]).then((a) => a.results?.[0]);
            } else if (mode === 1) {
              again = inst.submit([item]).then((a) => a.results?.[0]);
              receipt = bank.request({ op: 'receipt', receipts: [receiptOf(item.id)] }).then((a) => a.results?.[0]);
            } else if (mode === 2) {
              receipt = http(engine.base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: receiptOf(item.id) }).then((r) => r.body);
              again = inst.submit([item]).then((a) => a.results?.[0]);
            } else {
              // The resubmission follows a moment later, while the receipt's commit is on its way to disk.
              receipt = bank.request({ op: 'receipt', receipts: [receiptOf(item.id)] }).then((a) => a.results?.[0]);
              await new Promise((r) => setImmediate(r));
              again = inst.submit([item]).then((a) => a.results?.[0]);
            }
            const [rc, dup] = await Promise.all([receipt, again]);
            raced++;
            if (!(rc?.status === 'cleared' && typeof rc.batch === 'string' && rc.code === undefined)) anomalies.push(`receipt for ${item.id} answered ${JSON.stringify(rc)}`);
            if (dup?.code === 'DUPLICATE_CONFLICT') anomalies.push(`resubmission of ${item.id} answered DUPLICATE_CONFLICT: ${JSON.stringify(dup)}`);
            else if (!(dup?.id === item.id && dup.duplicate === true && (dup.status === 'pending' || dup.status === 'cleared') && dup.code === undefined)) {
              anomalies.push(`resubmission of ${item.id} answered ${JSON.stringify(dup)}`);
            } else {
              seen[dup.status as 'pending' | 'cleared']++;
              if (dup.status === 'cleared' && dup.batch !== rc?.batch) anomalies.push(`resubmission of ${item.id} names batch ${dup.batch}, its receipt ${rc?.batch}`);
            }
            model.clear(item);
          }),
        );
      }
      expect(anomalies.slice(0, 10)).toEqual([]);
      expect(raced).toBe(150);

      // Everything was confirmed once: each is cleared, and the positions hold each exactly once.
      for (const id of ['RACE-0-0', 'RACE-7-3', 'RACE-14-9']) {
        expect((await http(engine.base, 'GET', `/v1/instructions/PI0001/${id}`, { token: TOKENS.ops })).body.status).toBe('cleared');
      }
      const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
      expect(rowsOf(positions)).toEqual(model.rows());
      expect(positions.banks.find((b: any) => b.bank === 'ICBC').pendingDebit).toBe('0');
      expect((await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops })).body.ok).toBe(true);
      console.log(`receipt races: ${raced} resubmissions, ${seen.pending} answered pending, ${seen.cleared} answered cleared, all as duplicates`);
      inst.close();
      bank.close();
    });
  }, 30_000);

  it('never answer INTERNAL for an item that was stored', async () => {
    await withEngine({ shards: 4, workers: 2, faultInjection: true, receiptQueryScheduleMs: [] }, async (engine) => {
      const started = Date.now();
      const deadline = started + 20_000;
      const rand = rng(2026);
      const institutions: InstitutionId[] = ['PI0001', 'PI0002', 'PI0001'];
      const clients = await Promise.all(institutions.map((inst) => StreamClient.connect(engine.base, TOKENS[inst], 'msgpack')));
      const model = new ReferenceModel(BANKS);
      const internal: Refused[] = [];
      const anomalies: string[] = [];
      let sent = 0;
      let cleared = 0;
      let n = 0;
      let faulting = true;

      const make = (id: string): RefInstruction => {
        const payer = pick(rand, BANKS);
        let payee: string = payer;
        while (payee === payer) payee = pick(rand, BANKS);
        const i: RefInstruction = { id, type: pick(rand, TYPES), payer, payee, amount: 1 + Math.floor(rand() * 100_000_000) };
        if (rand() < 0.3) i.reference = `order ${id} 订单`;
        return i;
      };
      const pump = async (c: StreamClient, institution: InstitutionId, tag: string): Promise<void> => {
        // Added after the await: `sent += await …` would read `sent` before the other pumps add to it.
        const count = await pumpFrames(
          c,
          (f) => f < 400 && (f < 20 || faulting) && Date.now() < deadline,
          () => ({ institution, item: make(`TF-${tag}-${n++}`) }),
          anomalies,
          (r, s) => {
            if (r.status === 'cleared' && typeof r.batch === 'string' && r.duplicate === undefined && r.id === s.item.id) {
              cleared++;
              model.clear(s.item);
            } else if (r.status === 'rejected' && r.code === 'INTERNAL' && r.id === s.item.id) {
              internal.push({ ...s, code: r.code });
            } else {
              anomalies.push(`${s.item.id} answered ${JSON.stringify(r)}`);
            }
          },
        );
        sent += count;
      };
      // At least eight crashes, alternating workers, and more (at most twenty) until two of them have caught a task.
      const failedTasks = (): number => engine.output().split('shard task failed').length - 1;
      let crashes = 0;
      const faults = async (): Promise<void> => {
        try {
          await sleep(200);
          for (let k = 0; k < 20 && (k < 8 || failedTasks() < 2) && Date.now() < deadline; k++) {
            await sleep(100 + Math.floor(rand() * 100));
            await crashWorker(engine, k % 2);
            crashes++;
          }
          // Let the last crash's resynchronisation land while the stream still runs.
          await sleep(300);
        } finally {
          faulting = false;
        }
      };
      await Promise.all([...clients.flatMap((c, i) => [pump(c, institutions[i]!, `${i}a`), pump(c, institutions[i]!, `${i}b`)]), faults()]);
      const streamMs = Date.now() - started;
      expect(anomalies.slice(0, 10)).toEqual([]);
      expect(cleared + internal.length).toBe(sent);
      expect(crashes).toBeGreaterThanOrEqual(8);
      // The crashes caught tasks in the act, so their items went through the answer-from-disk path.
      expect(failedTasks()).toBeGreaterThan(0);
      expect(engine.output()).toMatch(/shard resynchronised from disk/);

      // An item answered INTERNAL is not found by the query route...
      const probe = internal.slice(0, 200);
      for (let k = 0; k < probe.length; k += 50) {
        const found = await Promise.all(
          probe.slice(k, k + 50).map(async (s) => ({ s, r: await http(engine.base, 'GET', `/v1/instructions/${s.institution}/${s.item.id}`, { token: TOKENS.ops }) })),
        );
        for (const { s, r } of found) if (r.status !== 404) anomalies.push(`${s.institution}/${s.item.id} answered INTERNAL but the query route finds it: ${r.status} ${JSON.stringify(r.body)}`);
      }
      expect(anomalies.slice(0, 10)).toEqual([]);
      // ...and its retry with the same id and content is booked now, never answered as a duplicate of a stored one.
      const retried = await retry({ PI0001: clients[0]!, PI0002: clients[1]! }, internal);
      for (const { sent: s, result: r } of retried) {
        if (r.duplicate === true) anomalies.push(`${s.institution}/${s.item.id} answered INTERNAL, but was stored: ${JSON.stringify(r)}`);
        else if (r.status === 'cleared' && typeof r.batch === 'string') {
          cleared++;
          model.clear(s.item);
        } else anomalies.push(`retry of ${s.item.id} answered ${JSON.stringify(r)}`);
      }
      expect(anomalies.slice(0, 10)).toEqual([]);

      // The positions hold exactly the acknowledged items, and the stored instructions agree with the stored flows.
      const positions = (await http(engine.base, 'GET', '/v1/positions', { token: TOKENS.ops })).body;
      expect(rowsOf(positions)).toEqual(model.rows());
      const audit = await http(engine.base, 'GET', '/v1/audit', { token: TOKENS.ops });
      expect(audit.body.ok).toBe(true);
      expect(audit.body.cleared).toBe(cleared);
      console.log(`INTERNAL answers under faults: ${crashes} crashes, ${failedTasks()} failed tasks, ${sent} items in ${streamMs} ms, ${internal.length} answered INTERNAL, none stored`);
      for (const c of clients) c.close();
    });
  }, 40_000);
});
