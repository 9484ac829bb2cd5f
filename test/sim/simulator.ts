/**
 * The seeded simulator: the real clearing core (src/clearing/ and all it
 * holds: router, debit caps, live view, lifecycle, cut-offs, snapshots,
 * resynchronisation) and the real shard ledger, over simulated ports: a
 * clock of simulated time, workers that commit and report late or never,
 * an engine store whose writes fail, and crashes of the whole process.
 *
 * One PRNG, seeded, decides the workload, the delays and the faults, so a
 * seed replays a run exactly. After every step the laws of DESIGN.md are
 * checked against the simulated disk and against what the clients were
 * told:
 *
 * - conservation in every batch of the live view (law 2) and in every
 *   settlement report; net(b) = Σ net(b, c) (law 3);
 * - every acknowledged instruction stored, once, as acknowledged (law 4),
 *   in the batch its ack named (law 5); every report equal to the
 *   instructions stored in its batch;
 * - the live view equal to a recomputation from the stored instructions,
 *   and stored flows equal to it too (law 6), whenever nothing is in flight;
 * - no capped bank past its cap, in any batch, at any moment, counting what
 *   is on disk whether or not it was reported;
 * - every answer true when it is given, and an answer that says "not
 *   stored" stays true until the client sends the id again.
 */

import { Clearing, type ClearingConfig } from '../../src/clearing/clearing.js';
import { setVerify } from '../../src/core/assert.js';
import { contentKey, INSTRUCTION_TYPES, type InstructionType } from '../../src/core/instruction.js';
import type { Logger } from '../../src/core/log.js';
import type { BatchRecord, InstructionLookup, Located } from '../../src/core/ports.js';
import { checkStoredInstruction, storedContentKey, type StoredInstruction } from '../../src/core/stored-instruction.js';
import type { ForwardItem, ReceiptResult } from '../../src/lifecycle/lifecycle.js';
import type { InstructionResult } from '../../src/protocol/messages.js';
import { ShardLedger } from '../../src/shard/ledger.js';
import { flowFromStored, flowRange, instructionKey } from '../../src/store/schema.js';
import { Prng } from './prng.js';
import { SimClock } from './sim-clock.js';
import { SimDisk, SimShards } from './sim-shards.js';
import { SimStore } from './sim-store.js';

export interface SimOptions {
  seed: number;
  steps: number;
  banks: number;
  shards: number;
  workers: number;
  /** Inject task, worker and store faults, late timers. */
  faults: boolean;
  /** Crash and restart the whole engine now and then. */
  crashes: boolean;
}

export const DEFAULT_SIM: Omit<SimOptions, 'seed'> = { steps: 3000, banks: 6, shards: 4, workers: 2, faults: true, crashes: true };

export interface SimReport {
  seed: number;
  steps: number;
  simulatedMs: number;
  submitted: number;
  answers: Record<string, number>;
  cutoffs: number;
  cutoffFailures: number;
  restarts: number;
  tasks: number;
  faults: { commitFails: number; reportsLost: number; workerDeaths: number; storeWriteFailures: number };
}

export class SimFailure extends Error {
  override name = 'SimFailure';
}

const INSTITUTIONS = ['PI01', 'PI02'] as const;
const START_MS = Date.UTC(2026, 10, 27, 1, 0, 0);
/** The statuses an instruction can reach after the one an answer named. */
const LATER: Record<string, readonly string[]> = {
  pending: ['cleared', 'declined', 'expired', 'reversed'],
  cleared: ['reversed'],
};
/** Outcomes that mean nothing was stored. */
const NOT_STORED = new Set(['INTERNAL', 'STORAGE_FULL', 'OVERLOADED', 'DEBIT_CAP_EXCEEDED', 'NOT_READY']);

interface Sent {
  institution: string;
  id: string;
  raw: WireInstruction;
  content: string;
  /** Submissions of this key not answered yet (lost in a crash: never). */
  outstanding: number;
  /** What the last answer said was stored, if anything. */
  acked?: { status: string; batch?: string };
  /** The last answer said it was not stored, and nothing was sent since. */
  notStored: boolean;
  /** Conflicting submissions of this key (another amount) not answered yet. */
  conflicting: number;
  /** Answers that said this submission stored it (not a duplicate): at most one, ever. */
  storedAnswers: number;
  /** A submission of it went unanswered through a crash. */
  lost: boolean;
}

interface WireInstruction {
  id: string;
  type: InstructionType;
  payer: string;
  payee: string;
  amount: number;
  twoPhase?: boolean;
  timeoutMs?: number;
  reference?: string;
}


/** Let every promise continuation that is ready run, as an event turn's end would. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class Simulation {
  readonly prng: Prng;
  readonly clock: SimClock;
  readonly disk: SimDisk;
  readonly store: SimStore;
  private shards!: SimShards;
  private clearing!: Clearing;
  private readonly banks: string[];
  private readonly caps = new Map<string, bigint>();
  private readonly config: ClearingConfig;
  private readonly sent = new Map<string, Sent>();
  private readonly inbox = new Map<string, ForwardItem[]>();
  private nextId = 0;
  private step = 0;
  private epoch = 0;
  /** Shards whose ledgers the simulator reads, apart from any worker's. */
  private readonly readers: ShardLedger[] = [];
  readonly report: SimReport;
  private closedBatches = new Set<string>();

  constructor(private readonly opts: SimOptions) {
    this.prng = new Prng(opts.seed);
    this.clock = new SimClock(START_MS, this.prng);
    this.disk = new SimDisk(opts.shards);
    this.store = new SimStore(this.clock, this.prng);
    this.banks = Array.from({ length: opts.banks }, (_, i) => `BK${String(i + 1).padStart(2, '0')}`);
    // Two capped banks, tight enough that caps bind often.
    this.caps.set(this.banks[0]!, 60_000n);
    this.caps.set(this.banks[1]!, 150_000n);
    this.config = {
      banks: this.banks.map((code) => (this.caps.has(code) ? { code, debitCapCents: Number(this.caps.get(code)!) } : { code })),
      shards: opts.shards,
      maxAmountCents: 1_000_000,
      receiptQueryScheduleMs: [40, 150],
      snapshotRetention: 4,
      verifyOnStart: true,
      idFilterBits: 1 << 14,
      limits: { shardQueueMax: 60, shardTaskItemsMax: 6, shardTasksInflightMax: 2 },
      requireMandates: false,
      mandates: [],
    };
    for (let s = 0; s < opts.shards; s++) this.readers.push(new ShardLedger(s, this.disk.dbs[s]!, Number.MAX_SAFE_INTEGER));
    this.report = {
      seed: opts.seed,
      steps: 0,
      simulatedMs: 0,
      submitted: 0,
      answers: {},
      cutoffs: 0,
      cutoffFailures: 0,
      restarts: 0,
      tasks: 0,
      faults: { commitFails: 0, reportsLost: 0, workerDeaths: 0, storeWriteFailures: 0 },
    };
  }

  /** The first law found broken: kept, since a check inside the core's callbacks cannot throw out of them. */
  private failure: SimFailure | undefined;

  private fail(message: string): never {
    const f = new SimFailure(`seed ${this.opts.seed}, step ${this.step}, t+${this.clock.now() - START_MS} ms: ${message}`);
    this.failure ??= f;
    throw f;
  }

  /** Stop the run at the first broken law, wherever it was found. */
  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private check(condition: unknown, message: () => string): asserts condition {
    if (!condition) this.fail(message());
  }

  private count(answer: string): void {
    this.report.answers[answer] = (this.report.answers[answer] ?? 0) + 1;
  }

  // ---- the simulated disk, read directly -------------------------------------------------

  /** The core's log: quiet, except that a broken assertion it reports fails the run. */
  private readonly log: Logger = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (obj: object | string) => {
      const err = typeof obj === 'object' ? (obj as { err?: unknown }).err : undefined;
      if ((err as Error | undefined)?.name === 'AssertionError') this.failure ??= new SimFailure(`seed ${this.opts.seed}, step ${this.step}: the core reported a broken law: ${(err as Error).message}`);
    },
  };

  private readonly lookup: InstructionLookup = {
    find: (institution, id) => this.find(institution, id),
    refresh: () => {},
  };

  private find(institution: string, id: string): Located | undefined {
    const key = instructionKey(institution, id);
    for (let s = 0; s < this.opts.shards; s++) {
      const v = this.disk.dbs[s]!.ins.get(key);
      if (v !== undefined) return { shard: s, record: checkStoredInstruction(v, key) };
    }
    return undefined;
  }

  private stored(): { key: string; record: StoredInstruction }[] {
    const out: { key: string; record: StoredInstruction }[] = [];
    for (const dbs of this.disk.dbs) for (const { key, value } of dbs.ins.getRange({})) out.push({ key, record: checkStoredInstruction(value, key) });
    return out;
  }

  /** paid − received of `bank` in `batch`, from the stored pair flows of every shard. */
  private diskNetDebit(bank: string, batch: string): bigint {
    let d = 0n;
    for (const dbs of this.disk.dbs) {
      for (const { key, value } of dbs.pos.getRange(flowRange(batch))) {
        const [, a, b] = key.split('|');
        const f = flowFromStored(a!, b!, value);
        if (a === bank) d += f.aToB - f.bToA;
        else if (b === bank) d += f.bToA - f.aToB;
      }
    }
    return d;
  }

  private diskPending(bank: string): bigint {
    let d = 0n;
    for (const dbs of this.disk.dbs) {
      for (const key of dbs.pnd.getKeys({})) {
        const r = checkStoredInstruction(dbs.ins.get(key), key);
        if (r.p === bank) d += BigInt(r.a);
      }
    }
    return d;
  }

  // ---- the engine ------------------------------------------------------------------------

  private async startEngine(attempt = 0): Promise<void> {
    const epoch = this.epoch;
    this.shards = new SimShards(this.disk, this.opts.workers, this.clock, this.prng, {
      commitFails: this.opts.faults ? 0.01 : 0,
      reportLost: this.opts.faults ? 0.01 : 0,
    });
    const live = (): boolean => epoch === this.epoch;
    const starting = Clearing.start(this.config, {
      clock: this.clock,
      transport: this.shards,
      lookup: this.lookup,
      store: this.store,
      log: this.log,
      mandateStore: this.store,
      mandatePushes: { forwardMandates: () => {}, notify: () => {} },
      pushes: {
        forward: (bank, items) => {
          if (live()) this.inbox.set(bank, [...(this.inbox.get(bank) ?? []), ...items]);
        },
        query: ({ bank, message: { institution, id } }) => {
          if (!live() || bank === undefined) return;
          const r = this.find(institution, id)?.record;
          if (r !== undefined && r.s === 'pending') this.inbox.set(bank, [...(this.inbox.get(bank) ?? []), { institution, id } as ForwardItem]);
        },
        notify: () => {},
        listening: () => true,
      },
      onSnapshot: (s) => {
        if (!live()) return;
        const net = s.banks.reduce((sum, b) => sum + BigInt(b.net), 0n);
        this.check(net === 0n, () => `snapshot ${s.seq} does not conserve: Σ net = ${net}`);
      },
    });
    let started: Clearing | undefined;
    let error: unknown;
    starting.then(
      (c) => {
        started = c;
      },
      (e: unknown) => {
        error = e;
      },
    );
    // Start-up needs the workers to open the shards: run the clock until it is done.
    for (let i = 0; i < 100_000 && started === undefined && error === undefined; i++) {
      await settle();
      this.throwIfFailed();
      if (started !== undefined || error !== undefined) break;
      if (!this.clock.step()) await settle();
    }
    if (error !== undefined) {
      // A store write or a worker failed during start-up: the process exits, and is started again.
      if (/simulated/.test(String(error)) && attempt < 20) {
        this.shards.crash();
        this.clock.newEpoch();
        this.epoch++;
        return this.startEngine(attempt + 1);
      }
      throw error;
    }
    this.check(started !== undefined, () => 'the engine did not start');
    this.clearing = started;
    this.clearing.snapshots.start(97);
  }

  /** The whole process dies mid-step and starts again from what the disk and the store hold. */
  private async crashAndRestart(): Promise<void> {
    this.report.restarts++;
    this.shards.crash();
    this.clearing.stop();
    this.store.crash();
    this.clock.newEpoch();
    this.epoch++;
    this.addFaults();
    // Answers that never came: the clients will send those ids again.
    for (const s of this.sent.values()) {
      if (s.outstanding > 0 || s.conflicting > 0) s.lost = true;
      s.outstanding = 0;
      s.conflicting = 0;
    }
    this.inbox.clear();
    await this.startEngine();
    this.checkAll('after a restart');
  }

  private addFaults(): void {
    const f = this.shards.faultsInjected;
    this.report.faults.commitFails += f.commitFails;
    this.report.faults.reportsLost += f.reportsLost;
    this.report.faults.workerDeaths += f.workerDeaths;
    this.report.tasks += this.shards.tasksRun;
  }

  // ---- the clients -----------------------------------------------------------------------

  private newInstruction(): WireInstruction {
    const payer = this.prng.chance(0.5) ? this.banks[this.prng.int(2)]! : this.prng.pick(this.banks);
    let payee = this.prng.pick(this.banks);
    while (payee === payer) payee = this.prng.pick(this.banks);
    const i: WireInstruction = {
      id: `S${this.opts.seed}-${this.nextId++}`,
      type: this.prng.pick(INSTRUCTION_TYPES),
      payer,
      payee,
      amount: this.prng.chance(0.8) ? this.prng.between(1, 9_000) : this.prng.between(9_000, 60_000),
    };
    if (this.prng.chance(0.3)) {
      i.twoPhase = true;
      i.timeoutMs = this.prng.pick([100, 300, 1000]);
    }
    if (this.prng.chance(0.2)) i.reference = `ref-${this.prng.int(1000)}`;
    return i;
  }

  private submit(institution: string, items: WireInstruction[]): void {
    const epoch = this.epoch;
    for (const raw of items) {
      const key = `${institution}/${raw.id}`;
      let s = this.sent.get(key);
      if (s === undefined) {
        s = { institution, id: raw.id, raw, content: contentOf(raw), outstanding: 0, notStored: false, conflicting: 0, storedAnswers: 0, lost: false };
        this.sent.set(key, s);
      }
      s.outstanding++;
      s.notStored = false;
      this.report.submitted++;
    }
    this.clearing.router.submit(institution, items, (results) => {
      if (epoch !== this.epoch) this.fail('an answer came from an engine that had crashed');
      results.forEach((r, i) => this.checkSubmitAnswer(institution, items[i]!, r));
    });
  }

  /** The truth of an answer to a submission, at the moment it is given. */
  private checkSubmitAnswer(institution: string, raw: WireInstruction, r: InstructionResult): void {
    const key = `${institution}/${raw.id}`;
    const s = this.sent.get(key)!;
    s.outstanding--;
    const rec = this.find(institution, raw.id)?.record;
    const what = (): string => `${key} answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
    this.count(r.status === 'rejected' ? r.code! : r.duplicate === true ? `${r.status} (duplicate)` : r.status);
    if (r.status === 'rejected') {
      if (r.code === 'DUPLICATE_CONFLICT') {
        // The other content is stored, or a conflicting submission of it is in flight.
        const storedOther = rec !== undefined && storedContentKey(rec) !== contentOf(raw);
        this.check(storedOther || (rec === undefined && s.conflicting > 0), () => `DUPLICATE_CONFLICT with nothing different stored or in flight: ${what()}`);
        return;
      }
      this.check(NOT_STORED.has(r.code!), () => `unexpected rejection: ${what()}`);
      // A frame is answered when its last item is, so another submission of the id may have stored it since.
      this.check(rec === undefined || s.storedAnswers > 0 || s.outstanding > 0 || s.lost, () => `answered ${r.code} (not stored) but it is stored: ${what()}`);
      if (rec === undefined && s.outstanding === 0 && s.conflicting === 0 && s.acked === undefined) s.notStored = true;
      return;
    }
    this.check(rec !== undefined, () => `answered ${r.status} but nothing is stored: ${what()}`);
    this.check(storedContentKey(rec) === contentOf(raw), () => `answered ${r.status} for other content: ${what()}`);
    // A frame is answered once its last item is: an item's state may have moved on since it was decided.
    this.check(rec.s === r.status || LATER[r.status]?.includes(rec.s) === true, () => `answered ${r.status} but the stored status is ${rec.s}: ${what()}`);
    if (r.status === 'cleared') this.check(rec.b === r.batch, () => `acknowledged in batch ${r.batch} but stored in ${rec.b}: ${what()}`);
    if (r.duplicate !== true && ++s.storedAnswers > 1) this.fail(`stored twice: a second answer without duplicate: ${what()}`);
    s.acked = { status: r.status, batch: r.batch };
    s.notStored = false;
  }

  private receipts(bank: string): void {
    const inbox = this.inbox.get(bank) ?? [];
    if (inbox.length === 0) return;
    const n = this.prng.between(1, Math.min(4, inbox.length));
    const picked = inbox.splice(0, n);
    // Some receipts are repeated or contradicted later: put a few back.
    for (const p of picked) if (this.prng.chance(0.15)) inbox.push(p);
    const raws = picked.map((p) => ({ institution: p.institution, id: p.id, outcome: this.prng.chance(0.75) ? 'confirm' : 'decline' }));
    const epoch = this.epoch;
    this.clearing.lifecycle.receipts(bank, raws, (results) => {
      if (epoch !== this.epoch) this.fail('a receipt answer came from an engine that had crashed');
      results.forEach((r, i) => this.checkReceiptAnswer(bank, raws[i]!, r));
    });
  }

  private checkReceiptAnswer(bank: string, raw: { institution: string; id: string; outcome: string }, r: ReceiptResult): void {
    const rec = this.find(raw.institution, raw.id)?.record;
    const what = (): string => `receipt ${JSON.stringify(raw)} from ${bank} answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
    this.count(`receipt ${r.code ?? r.status}${r.duplicate === true ? ' (duplicate)' : ''}`);
    const wanted = raw.outcome === 'confirm' ? 'cleared' : 'declined';
    if (r.code === undefined) {
      this.check(rec !== undefined && (rec.s === r.status || LATER[r.status]?.includes(rec.s) === true), what);
      if (r.duplicate !== true) this.check(r.status === wanted, what);
      if (r.status === 'cleared') this.check(rec.b === r.batch, what);
      return;
    }
    switch (r.code) {
      case 'NOT_FOUND':
        this.check(rec === undefined || (rec.p !== bank && rec.q !== bank), what);
        return;
      case 'NOT_PENDING':
        this.check(rec !== undefined && rec.s !== 'pending' && rec.s !== wanted, what);
        return;
      case 'INTERNAL':
      case 'OVERLOADED':
        // This receipt was not applied; another one may have finished the instruction since.
        this.check(rec !== undefined && (rec.s === 'pending' || r.code === 'INTERNAL' || r.code === 'OVERLOADED'), what);
        return;
      default:
        this.fail(`unexpected receipt answer: ${what()}`);
    }
  }

  private operatorAction(): void {
    const keys = [...this.sent.values()].filter((s) => s.acked !== undefined);
    if (keys.length === 0) return;
    const s = this.prng.pick(keys);
    const epoch = this.epoch;
    if (this.prng.chance(0.5)) {
      this.clearing.lifecycle.reverse(s.institution, s.id, 'sim').then((f) => {
        if (epoch !== this.epoch) return;
        const rec = this.find(s.institution, s.id)?.record;
        const what = (): string => `reversal of ${s.institution}/${s.id}: ${JSON.stringify(f)}; stored ${JSON.stringify(rec)}`;
        this.count(`reverse ${f?.code ?? 'ok'}`);
        if (f === undefined) this.check(rec?.s === 'reversed', what);
        else if (f.code === 'DEBIT_CAP_EXCEEDED' || f.code === 'INTERNAL' || f.code === 'OVERLOADED') this.check(rec?.s === 'cleared', what);
        else if (f.code === 'NOT_PENDING') this.check(rec !== undefined && rec.s !== 'cleared' && rec.s !== 'reversed', what);
        else this.fail(what());
      });
    } else {
      const outcome = this.prng.chance(0.5) ? 'confirm' : 'decline';
      this.clearing.lifecycle.resolve(s.institution, s.id, outcome, 'sim').then((f) => {
        if (epoch !== this.epoch) return;
        const rec = this.find(s.institution, s.id)?.record;
        const wanted = outcome === 'confirm' ? 'cleared' : 'declined';
        const what = (): string => `resolution ${outcome} of ${s.institution}/${s.id}: ${JSON.stringify(f)}; stored ${JSON.stringify(rec)}`;
        this.count(`resolve ${f?.code ?? 'ok'}`);
        if (f === undefined) this.check(rec?.s === wanted || (wanted === 'cleared' && rec?.s === 'reversed'), what);
        else if (f.code === 'NOT_PENDING') this.check(rec !== undefined && rec.s !== 'pending', what);
        else if (f.code === 'INTERNAL' || f.code === 'OVERLOADED') this.check(rec?.s === 'pending', what);
        else this.fail(what());
      });
    }
  }

  private cutoff(): void {
    const epoch = this.epoch;
    this.clearing.closeBatch('operator').then(
      (record) => {
        if (epoch !== this.epoch) return;
        this.report.cutoffs++;
        this.checkReport(record, 'at its cut-off');
      },
      (err: unknown) => {
        if (epoch !== this.epoch) return;
        this.check(String(err).includes('simulated store write failure'), () => `cut-off failed: ${String(err)}`);
        this.report.cutoffFailures++;
      },
    );
  }

  // ---- the laws --------------------------------------------------------------------------

  /** A settlement report equals the instructions stored in its batch, conserves, and keeps every cap. */
  private checkReport(record: BatchRecord, when: string): void {
    const paid = new Map<string, bigint>();
    const received = new Map<string, bigint>();
    let count = 0;
    const add = (payer: string, payee: string, a: number): void => {
      paid.set(payer, (paid.get(payer) ?? 0n) + BigInt(a));
      received.set(payee, (received.get(payee) ?? 0n) + BigInt(a));
      count++;
    };
    for (const { record: r } of this.stored()) {
      if (r.b === record.batch && (r.s === 'cleared' || r.s === 'reversed')) add(r.p, r.q, r.a);
      if (r.s === 'reversed' && r.rb === record.batch) add(r.q, r.p, r.a);
    }
    this.check(record.debits === record.credits, () => `report ${record.batch} ${when}: debits ${record.debits} ≠ credits ${record.credits}`);
    this.check(record.count === count, () => `report ${record.batch} ${when}: count ${record.count}, stored ${count}`);
    let sum = 0n;
    for (const row of record.banks) {
      const p = paid.get(row.bank) ?? 0n;
      const q = received.get(row.bank) ?? 0n;
      this.check(row.paid === p.toString() && row.received === q.toString(), () => `report ${record.batch} ${when}: ${row.bank} paid ${row.paid} received ${row.received}, stored ${p} and ${q}`);
      sum += BigInt(row.net);
      const cap = this.caps.get(row.bank);
      if (cap !== undefined) this.check(p - q <= cap, () => `report ${record.batch}: ${row.bank} owes ${p - q}, past its cap ${cap}`);
    }
    this.check(sum === 0n, () => `report ${record.batch} ${when}: Σ net = ${sum}`);
    this.closedBatches.add(record.batch);
  }

  /** The cheap laws, after every step. */
  private checkStep(): void {
    const view = this.clearing.view;
    for (const batch of view.batches()) {
      const o = view.overview(batch); // asserts conservation itself
      const sum = o.banks.reduce((t, b) => t + b.net, 0n);
      this.check(sum === 0n, () => `live view of ${batch}: Σ net = ${sum}`);
    }
    for (const b of this.banks) view.bank(b); // asserts net(b) = Σ net(b, c)
    // Bounded timers: dead events (of final instructions) never outnumber the live ones by much.
    const lc = this.clearing.lifecycle;
    const liveMax = lc.pendingCount * (this.config.receiptQueryScheduleMs.length + 2);
    this.check(lc.timerEvents <= 2 * liveMax + 1024, () => `${lc.timerEvents} timer events for ${lc.pendingCount} pending instructions`);
    // Caps against the disk itself, reported or not.
    const current = this.clearing.openBatchId;
    for (const [bank, cap] of this.caps) {
      // Closed batches are checked by their reports; these are the ones still changing.
      for (const batch of view.batches()) {
        const d = this.diskNetDebit(bank, batch);
        this.check(d <= cap, () => `${bank} owes ${d} in batch ${batch} on disk, past its cap ${cap}`);
      }
      const exposure = this.diskNetDebit(bank, current) + this.diskPending(bank);
      this.check(exposure <= cap, () => `${bank}'s net debit plus pending in ${current} is ${exposure} on disk, past its cap ${cap}`);
    }
    for (const s of this.sent.values()) {
      if (s.notStored && s.outstanding === 0 && s.conflicting === 0) {
        this.check(this.find(s.institution, s.id) === undefined, () => `${s.institution}/${s.id} was answered "not stored" and is stored`);
      }
    }
  }

  /** Every law, against everything: at restarts, when nothing is in flight, and at the end. */
  private checkAll(when: string): void {
    this.checkStep();
    // Law 4: everything acknowledged is stored, as acknowledged.
    const byKey = new Map(this.stored().map((e) => [e.key, e.record]));
    for (const s of this.sent.values()) {
      if (s.acked === undefined) continue;
      const rec = byKey.get(instructionKey(s.institution, s.id));
      this.check(rec !== undefined, () => `${when}: acknowledged ${s.institution}/${s.id} is not stored`);
      this.check(storedContentKey(rec) === s.content, () => `${when}: ${s.institution}/${s.id} stored with other content`);
      if (s.acked.status === 'cleared') this.check(rec.b === s.acked.batch, () => `${when}: ${s.institution}/${s.id} acknowledged in ${s.acked!.batch}, stored in ${rec.b}`);
    }
    // Exactly one answer said "stored" for each stored id whose submissions were all answered.
    for (const s of this.sent.values()) {
      if (s.outstanding > 0 || s.conflicting > 0 || s.lost) continue;
      const stored = byKey.has(instructionKey(s.institution, s.id));
      this.check(s.storedAnswers === (stored ? 1 : 0), () => `${when}: ${s.institution}/${s.id} is ${stored ? '' : 'not '}stored and ${s.storedAnswers} answers said it was stored`);
    }
    // Every batch that holds instructions is open, being closed, or has its report stored.
    const held = new Set(this.clearing.view.batches());
    const unfinished = this.clearing.unfinishedBatch;
    for (const r of byKey.values()) {
      for (const b of [r.b, r.rb]) {
        if (b === undefined || held.has(b) || b === unfinished || this.store.batch(b) !== undefined) continue;
        this.fail(`${when}: batch ${b} holds instructions but has no report and is not open`);
      }
    }
    for (const batch of this.closedBatches) this.checkReport(this.store.batch(batch)!, when);
    for (const record of this.store.batches.values()) if (!this.closedBatches.has(record.batch)) this.checkReport(record, when);
    // Law 6 and the live view, when no commit can be unreported.
    if (this.shards.busy === 0 && this.clearing.router.inflightCount === 0) {
      for (const batch of this.clearing.view.batches()) {
        for (const ledger of this.readers) {
          const v = ledger.verify(batch);
          this.check(v.matches, () => `${when}: shard ${v.shard} does not match its instruction log in ${batch}: ${v.mismatches.join(', ')}`);
        }
        const o = this.clearing.view.overview(batch);
        for (const row of o.banks) {
          const d = this.diskNetDebit(row.bank, batch);
          this.check(row.paid - row.received === d, () => `${when}: live view has ${row.bank} owing ${row.paid - row.received} in ${batch}, the disk ${d}`);
        }
      }
      for (const b of this.banks) {
        const p = this.diskPending(b);
        this.check(this.clearing.view.pendingDebit(b) === p, () => `${when}: live pending debit of ${b} is ${this.clearing.view.pendingDebit(b)}, the disk ${p}`);
      }
    }
  }

  // ---- the run ---------------------------------------------------------------------------

  private async act(): Promise<void> {
    const roll = this.prng.int(1000);
    const institution = this.prng.pick(INSTITUTIONS);
    if (roll < 350) {
      const items = Array.from({ length: this.prng.between(1, 8) }, () => this.newInstruction());
      this.submit(institution, items);
    } else if (roll < 470) {
      // Identical resubmissions: of anything sent, above all what was never answered.
      const unanswered = [...this.sent.values()].filter((s) => s.acked === undefined && s.outstanding === 0);
      const pool = unanswered.length > 0 && this.prng.chance(0.6) ? unanswered : [...this.sent.values()];
      if (pool.length === 0) return;
      const picks = Array.from({ length: this.prng.between(1, 4) }, () => this.prng.pick(pool));
      for (const p of picks) this.submit(p.institution, [p.raw]);
    } else if (roll < 500) {
      // A conflicting resubmission: same id, another amount.
      const pool = [...this.sent.values()];
      if (pool.length === 0) return;
      const p = this.prng.pick(pool);
      if (p.outstanding > 0 || p.conflicting > 0) return; // one content of a key in flight at a time, besides its original
      const other = { ...p.raw, amount: p.raw.amount + 1 };
      p.conflicting++;
      p.notStored = false;
      const epoch = this.epoch;
      this.clearing.router.submit(p.institution, [other], ([r]) => {
        if (epoch !== this.epoch) this.fail('an answer came from an engine that had crashed');
        p.conflicting--;
        const rec = this.find(p.institution, p.id)?.record;
        const what = (): string => `a conflicting resubmission of ${p.institution}/${p.id} answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
        this.count(`conflict ${r!.code ?? r!.status}`);
        if (r!.status === 'rejected' && r!.code === 'DUPLICATE_CONFLICT') {
          this.check((rec !== undefined && storedContentKey(rec) !== contentOf(other)) || (rec === undefined && p.outstanding > 0), what);
        } else if (r!.status === 'rejected') {
          this.check(NOT_STORED.has(r!.code!) && (rec === undefined || storedContentKey(rec) !== contentOf(other)), what);
          if (rec === undefined && p.outstanding === 0 && p.acked === undefined) p.notStored = true;
        } else {
          // Nothing was stored under the id before, so this content now is: the model follows it.
          this.check(rec !== undefined && storedContentKey(rec) === contentOf(other) && r!.duplicate !== true && p.acked === undefined, what);
          p.storedAnswers++;
          p.raw = other;
          p.content = contentOf(other);
          p.acked = { status: r!.status, batch: r!.batch };
        }
      });
    } else if (roll < 620) {
      this.receipts(this.prng.pick(this.banks));
    } else if (roll < 640) {
      this.operatorAction();
    } else if (roll < 660) {
      this.cutoff();
    } else if (roll < 670) {
      // Its write completes as the clock runs; a failed write only loses that snapshot.
      this.clearing.snapshots.take().catch(() => undefined);
    } else if (this.opts.faults && roll < 678) {
      this.shards.killWorker(this.prng.int(this.opts.workers));
    } else if (this.opts.crashes && roll < 681) {
      await this.crashAndRestart();
    } else {
      // Let time pass: a few events.
      for (let k = this.prng.between(1, 6); k > 0 && this.clock.step(); k--) await settle();
    }
  }

  async run(): Promise<SimReport> {
    setVerify(true);
    if (this.opts.faults) {
      this.clock.lateTimerChance = 0.1;
      this.clock.lateTimerMsMax = 200;
      this.store.writeFails = 0.03;
    }
    await this.startEngine();
    for (this.step = 0; this.step < this.opts.steps; this.step++) {
      await this.act();
      await settle();
      this.throwIfFailed();
      this.checkStep();
      if (this.step % 200 === 199) await this.quiesce(`step ${this.step}`);
    }
    // The end: no new faults, every client retries what was never answered, and the engine drains.
    this.shards.rates = { commitFails: 0, reportLost: 0 };
    this.store.writeFails = 0;
    for (let round = 0; round < 5; round++) {
      const unanswered = [...this.sent.values()].filter((s) => s.acked === undefined && s.outstanding === 0 && !s.notStored);
      for (const s of unanswered) this.submit(s.institution, [s.raw]);
      await this.quiesce('at the end');
    }
    this.cutoff();
    await this.quiesce('after the last cut-off');
    // Liveness: every request was answered, and nothing is left in flight.
    this.check(this.clearing.router.inflightCount === 0, () => `${this.clearing.router.inflightCount} operations are still in flight at the end`);
    for (const s of this.sent.values()) this.check(s.outstanding === 0 && s.conflicting === 0, () => `${s.institution}/${s.id} was never answered`);
    this.check(this.report.cutoffs > 0 || this.opts.steps < 100, () => 'no cut-off completed');
    this.addFaults();
    this.report.faults.storeWriteFailures = this.store.failures;
    this.report.steps = this.opts.steps;
    this.report.simulatedMs = this.clock.now() - START_MS;
    return this.report;
  }

  /** Run the clock until nothing is in flight (timers aside), then check everything. */
  private async quiesce(when: string): Promise<void> {
    for (let i = 0; i < 200_000; i++) {
      await settle();
      this.throwIfFailed();
      if (this.shards.busy === 0 && this.clearing.router.inflightCount === 0 && !this.clockHasWorkSoon()) break;
      if (!this.clock.step()) break;
    }
    await settle();
    this.throwIfFailed();
    this.checkAll(when);
  }

  /** Events other than far timers (snapshots, expiries) still to run. */
  private clockHasWorkSoon(): boolean {
    const at = this.clock.nextAt();
    return at !== undefined && at <= this.clock.now();
  }
}

function contentOf(raw: WireInstruction): string {
  return contentKey({ type: raw.type, payer: raw.payer, payee: raw.payee, amount: raw.amount, twoPhase: raw.twoPhase === true, timeoutMs: raw.twoPhase === true ? raw.timeoutMs ?? 30_000 : undefined, reference: raw.reference });
}

export async function simulate(opts: SimOptions): Promise<SimReport> {
  return new Simulation(opts).run();
}
