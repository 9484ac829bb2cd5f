/**
 * The seeded simulator: the real clearing core (src/clearing/ and all it
 * holds: router, debit caps, live view, lifecycle, mandates, cut-offs,
 * snapshots, resynchronisation) and the real shard ledger, over simulated
 * ports: a clock of simulated time, workers that commit and report late or
 * never, an engine store whose writes fail, and crashes of the whole
 * process.
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
 *   the stored flows equal to the stored cleared instructions at every step
 *   (so a payout is netted only once its payee bank confirmed it);
 * - every stored record in a status and step its kind's flow allows;
 * - no capped bank past its cap, in any batch, at any moment, counting what
 *   is on disk whether or not it was reported, except by the two-phase
 *   debits carried into the batch: those sent before it opened, still open
 *   or cleared into it (PROTOCOL.md's cap, `paid − received + pendingDebit
 *   + amount`, lets credits make room for pending debits, which a cut-off
 *   then carries into a batch without those credits); the pending debits
 *   equal to the open two-phase instructions (pending or awaiting
 *   submission);
 * - every answer true when it is given, and an answer that says "not
 *   stored" stays true until the client sends the id again;
 * - no instruction admitted under a mandate that was not durably active, or
 *   whose revocation had begun, when it was sent; mandates as durable as
 *   their answers said.
 */

import { Clearing, type ClearingConfig } from '../../src/clearing/clearing.js';
import { setVerify } from '../../src/core/assert.js';
import { contentKey, INSTRUCTION_TYPES, type InstructionType } from '../../src/core/instruction.js';
import type { Logger } from '../../src/core/log.js';
import type { BatchRecord, InstructionLookup, Located } from '../../src/core/ports.js';
import { checkStoredInstruction, isOpen, storedContentKey, type Step, type StoredInstruction } from '../../src/core/stored-instruction.js';
import type { ForwardItem, Notification, ReceiptResult } from '../../src/lifecycle/lifecycle.js';
import type { MandateActor } from '../../src/mandates/mandate-book.js';
import { mandateView, type MandateKind, type MandateNotification, type MandateReceiptResult, type MandateRecord, type MandateView } from '../../src/mandates/mandate.js';
import type { InstructionResult } from '../../src/protocol/messages.js';
import { ShardLedger } from '../../src/shard/ledger.js';
import { BatchFigures } from '../../src/store/batch-figures.js';
import { INDEX_PACING, type IndexPacing } from '../../src/store/bucket-index.js';
import { instructionKey, splitInstructionKey } from '../../src/store/schema.js';
import type { MemDb } from './mem-lmdb.js';
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

/**
 * The bucket index's pacing for a seed, taken from the seed itself rather
 * than the PRNG so that older seeds replay as they did: the engine's own,
 * or one small enough that a run of a few hundred tasks moves entries out
 * of the task records by size and by age.
 */
export function indexPacingOf(seed: number): IndexPacing {
  const paces: IndexPacing[] = [INDEX_PACING, { flushPairs: 1, lagTasks: 1 }, { flushPairs: 3, lagTasks: 5 }, { flushPairs: 8, lagTasks: 40 }];
  return paces[seed % paces.length]!;
}

export const DEFAULT_SIM: Omit<SimOptions, 'seed'> = { steps: 3000, banks: 6, shards: 4, workers: 2, faults: true, crashes: true };

export interface SimReport {
  seed: number;
  steps: number;
  simulatedMs: number;
  submitted: number;
  answers: Record<string, number>;
  /** The business flows exercised: steps taken, refusals, mandates, and how the two-phase instructions ended. */
  flows: Record<string, number>;
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
/** Outcomes that mean nothing was stored. */
const NOT_STORED = new Set(['INTERNAL', 'STORAGE_FULL', 'OVERLOADED', 'DEBIT_CAP_EXCEEDED', 'NOT_READY', 'MANDATE_INVALID']);

type Outcome = 'confirm' | 'decline' | 'verify';

/** The steps of each kind's two-phase flow, in order (PROTOCOL.md, the five business kinds). */
const PATHS: Record<InstructionType, readonly Step[]> = {
  agreement: ['receipt'],
  entrusted: ['receipt'],
  gateway: ['receipt'],
  authenticated: ['verify', 'submission', 'receipt'],
  payout: ['payer', 'payee'],
};

/** The steps at which a confirmation clears an instruction of each kind. */
const CLEARING_STEPS: Record<InstructionType, readonly Step[]> = {
  agreement: ['receipt'],
  entrusted: ['receipt'],
  gateway: ['receipt'],
  authenticated: ['verify', 'receipt'],
  payout: ['payee'],
};

function stepIndex(type: InstructionType, step: Step | undefined): number {
  return step === undefined ? -1 : PATHS[type].indexOf(step);
}

/** A two-phase record at `step` or past it. */
function reachedStep(rec: StoredInstruction, step: Step): boolean {
  return rec.tp === 1 && stepIndex(rec.t, step) >= 0 && stepIndex(rec.t, rec.st) >= stepIndex(rec.t, step);
}

/** The bank whose answer a step awaits (undefined: the institution's submission). */
function awaitedAt(rec: { p: string; q: string }, step: Step | undefined): string | undefined {
  return step === 'payee' ? rec.q : step === 'submission' ? undefined : rec.p;
}

function isFinal(status: string): boolean {
  return status === 'cleared' || status === 'reversed' || status === 'declined' || status === 'expired';
}

/**
 * Whether an answer naming `status` (and `batch`, when cleared) is the
 * record's state or one it passed through on its way to it: an answer is
 * given when its task is reported, and the instruction may have moved on.
 */
function stateReached(rec: StoredInstruction, status: string, batch?: string): boolean {
  switch (status) {
    case 'cleared':
      return (rec.s === 'cleared' || rec.s === 'reversed') && (batch === undefined || rec.b === batch);
    case 'reversed':
    case 'declined':
    case 'expired':
      return rec.s === status;
    case 'awaiting-submission':
      return rec.t === 'authenticated' && reachedStep(rec, 'submission');
    case 'pending':
      return rec.tp === 1;
    default:
      return false;
  }
}

/**
 * Whether a bank's answer is one the record shows taken (by this answer or
 * an earlier one): what makes a repeat of it a duplicate. A repeat of the
 * final outcome, or of an answer to a step already passed (PROTOCOL.md).
 * Only a payout's payee bank answers besides the payer bank.
 */
function answerTaken(rec: StoredInstruction, bank: string, outcome: Outcome): boolean {
  if (bank !== rec.p && rec.t !== 'payout') return false;
  const cleared = rec.s === 'cleared' || rec.s === 'reversed';
  switch (outcome) {
    case 'confirm':
      if (rec.t === 'payout' && bank === rec.p) return reachedStep(rec, 'payee');
      return cleared;
    case 'verify':
      // Taken only if the verify step was passed: after a one-step confirm or decline a verify contradicts.
      return rec.t === 'authenticated' && reachedStep(rec, 'submission');
    case 'decline':
      return rec.s === 'declined';
  }
}

/** The status an answer leaves when it is the one that applies (not a duplicate). */
function effectOf(rec: StoredInstruction, bank: string, outcome: Outcome): string {
  if (outcome === 'verify') return 'awaiting-submission';
  if (outcome === 'decline') return 'declined';
  return rec.t === 'payout' && bank === rec.p ? 'pending' : 'cleared';
}

/** A record's step and status fit its kind's flow; what is wrong, or null. */
function recordFault(r: StoredInstruction): string | null {
  const settled = r.s === 'cleared' || r.s === 'reversed';
  if (settled !== (r.b !== undefined)) return 'has a batch without being cleared, or is cleared without one';
  if (r.tp !== 1) {
    if (!settled) return 'is single-phase and not cleared';
    if (r.st !== undefined || r.sa !== undefined || r.vf !== undefined) return 'is single-phase with a step';
    return null;
  }
  const i = stepIndex(r.t, r.st);
  if (i < 0) return `is at step ${r.st} outside the ${r.t} flow`;
  if (r.s === 'awaiting-submission' && r.st !== 'submission') return 'awaits its submission outside step submission';
  if (r.s === 'pending' && r.st === 'submission') return 'is pending at step submission';
  if (settled && !CLEARING_STEPS[r.t].includes(r.st!)) return `was cleared at step ${r.st}, where no confirmation clears a ${r.t}`;
  if ((r.vf !== undefined) !== (r.t === 'authenticated' && r.st === 'receipt')) return 'has a verification out of step receipt';
  if (r.dl !== (r.sa ?? r.at) + r.to!) return 'has a deadline that is not its step start plus its timeout';
  if ((r.sa !== undefined) !== i > 0 || (r.sa !== undefined && r.sa < r.at)) return 'has a step start out of order';
  if (isOpen(r) && r.ft !== undefined) return 'is open with a final time';
  return null;
}

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
  /** Contents of it sent while their mandate allowed them (the only ones that may be stored, under a mandate). */
  allowed: Set<string>;
  /** Payment submissions taken for it (answered pending, not a duplicate): at most one, ever. */
  submissionsTaken: number;
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
  mandate?: string;
}

/** A forward or a query a bank holds until it answers: the step it was sent for, and what it answered before if this is a repeat. */
interface Inboxed {
  institution: string;
  id: string;
  type: string;
  step: Step;
  repeat?: Outcome;
}

/** An authenticated payment awaiting its submission, as its institution was told (notification or query). */
interface Awaiting {
  id: string;
  /** The verification sent before, when this is a repeat. */
  code?: string;
}

/** A mandate as its institution and payer bank know it. */
interface SimMandate {
  institution: string;
  id: string;
  kind: MandateKind;
  payer: string;
  account: string;
  max?: number;
  via: 'gateway' | 'offline';
  /** Revocations by an allowed party, not answered yet (or answered as not stored): the mandate may be revoked in memory. */
  revoking: number;
  /** A revocation of it was answered: revoked for ever. */
  revokedAnswered: boolean;
  /** Calls on it (signing, receipts, revocations) not answered yet. */
  calls: number;
}

/** Let every promise continuation that is ready run, as an event turn's end would. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** What one pass over the disk's instruction records finds. */
interface DiskScan {
  /** Per payer bank, the amounts of its open two-phase instructions. */
  openDebit: Map<string, bigint>;
  /** Per payer bank, the amounts of its open two-phase instructions sent before the open batch opened (carried into it). */
  carriedOpen: Map<string, bigint>;
  /** Per batch, per payer bank, the amounts of its two-phase instructions cleared into the batch and sent before it opened. */
  carriedIn: Map<string, Map<string, bigint>>;
  /** Per batch, per bank, paid − received from the stored cleared and reversed instructions. */
  netDebit: Map<string, Map<string, bigint>>;
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
  /** Per two-phase instruction (`<institution>/<id>`), the oldest batch still changing when it was first sent (see sentBefore). */
  private readonly twoPhaseFrom = new Map<string, string>();
  private readonly config: ClearingConfig;
  private readonly sent = new Map<string, Sent>();
  /** Per bank, the forwards and queries it has yet to answer. */
  private readonly inbox = new Map<string, Inboxed[]>();
  /** Per institution, its authenticated payments awaiting the payer's verification. */
  private readonly awaiting = new Map<string, Awaiting[]>();
  /** Per bank, the gateway signings it has yet to answer. */
  private readonly mandateInbox = new Map<string, { institution: string; id: string; repeat?: 'confirm' | 'decline' }[]>();
  /** Every mandate signed (or tried), in order. */
  private readonly mandates: SimMandate[] = [];
  private readonly mandateByKey = new Map<string, SimMandate>();
  private nextId = 0;
  private nextMandate = 0;
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
      flows: {},
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

  private flow(what: string): void {
    this.report.flows[what] = (this.report.flows[what] ?? 0) + 1;
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

  /** Per bank, paid − received in `batch`, from the stored pair flows of every shard (the fold's pages and the journal). */
  private diskNetDebits(batch: string): Map<string, bigint> {
    const d = new Map<string, bigint>();
    for (const dbs of this.disk.dbs) {
      for (const f of BatchFigures.load(dbs, batch).flows()) {
        d.set(f.a, (d.get(f.a) ?? 0n) + f.aToB - f.bToA);
        d.set(f.b, (d.get(f.b) ?? 0n) + f.bToA - f.aToB);
      }
    }
    return d;
  }

  /**
   * One pass over every stored instruction, read in place: each record's
   * status and step checked against its kind's flow, the pending index
   * against the open records, and the sums the laws compare.
   */
  private scanDisk(batches: readonly string[]): DiskScan {
    const openDebit = new Map<string, number>();
    const carriedOpen = new Map<string, number>();
    const net = new Map<string, Map<string, number>>(batches.map((b) => [b, new Map()]));
    const carriedIn = new Map<string, Map<string, number>>(batches.map((b) => [b, new Map()]));
    const current = this.clearing.openBatchId;
    const add = (m: Map<string, number>, bank: string, a: number): void => {
      m.set(bank, (m.get(bank) ?? 0) + a);
    };
    for (let s = 0; s < this.opts.shards; s++) {
      const dbs = this.disk.dbs[s]!;
      const pnd = (dbs.pnd as unknown as MemDb).committed;
      let open = 0;
      for (const [key, value] of (dbs.ins as unknown as MemDb).committed) {
        const r = checkStoredInstruction(value, key);
        const fault = recordFault(r);
        if (fault !== null) this.fail(`${key} ${fault}: ${JSON.stringify(r)}`);
        if (isOpen(r)) {
          open++;
          add(openDebit, r.p, r.a);
          this.check(pnd.has(key), () => `open ${key} is missing from shard ${s}'s pending index`);
          if (this.sentBefore(key, current)) add(carriedOpen, r.p, r.a);
        }
        const carried = r.b === undefined || !this.carriedInto(key, r, r.b) ? undefined : carriedIn.get(r.b);
        if (carried !== undefined) add(carried, r.p, r.a);
        const inB = r.b === undefined ? undefined : net.get(r.b);
        if (inB !== undefined) {
          add(inB, r.p, r.a);
          add(inB, r.q, -r.a);
        }
        const inRb = r.rb === undefined ? undefined : net.get(r.rb);
        if (inRb !== undefined) {
          add(inRb, r.q, r.a);
          add(inRb, r.p, -r.a);
        }
      }
      this.check(pnd.size === open, () => `shard ${s}'s pending index holds ${pnd.size} keys for ${open} open instructions`);
    }
    const toBig = (m: Map<string, number>): Map<string, bigint> => new Map([...m].map(([k, v]) => [k, BigInt(v)]));
    return {
      openDebit: toBig(openDebit),
      carriedOpen: toBig(carriedOpen),
      carriedIn: new Map([...carriedIn].map(([b, m]) => [b, toBig(m)])),
      netDebit: new Map([...net].map(([b, m]) => [b, toBig(m)])),
    };
  }

  /**
   * Whether the two-phase instruction `key` was first sent before `batch`
   * opened. Each is marked, when first sent, with the oldest batch still
   * changing then (the closing one during a cut-off), so the mark is never
   * later than the batch it was routed into: the law it loosens stays sound.
   */
  private sentBefore(key: string, batch: string): boolean {
    const from = this.twoPhaseFrom.get(key);
    return from === undefined || from < batch;
  }

  /** Whether a stored record is a two-phase debit carried into `batch`: cleared into it, and first sent before it opened. */
  private carriedInto(key: string, r: StoredInstruction, batch: string): boolean {
    return r.b === batch && r.tp === 1 && this.sentBefore(key, batch);
  }

  private markTwoPhase(institution: string, items: readonly WireInstruction[]): void {
    const batches = this.clearing.view.batches();
    let oldest = this.clearing.openBatchId;
    for (const b of batches) if (b < oldest) oldest = b;
    for (const raw of items) {
      const key = `${institution}/${raw.id}`;
      if (raw.twoPhase === true && !this.twoPhaseFrom.has(key)) this.twoPhaseFrom.set(key, oldest);
    }
  }

  // ---- the engine ------------------------------------------------------------------------

  private async startEngine(attempt = 0): Promise<void> {
    const epoch = this.epoch;
    this.shards = new SimShards(this.disk, this.opts.workers, this.clock, this.prng, {
      commitFails: this.opts.faults ? 0.01 : 0,
      reportLost: this.opts.faults ? 0.01 : 0,
    });
    this.shards.indexPacing = indexPacingOf(this.opts.seed);
    const live = (): boolean => epoch === this.epoch;
    const starting = Clearing.start(this.config, {
      clock: this.clock,
      transport: this.shards,
      lookup: this.lookup,
      store: this.store,
      log: this.log,
      mandateStore: this.store,
      mandatePushes: {
        forwardMandates: (bank, views) => {
          if (!live()) return;
          for (const v of views) this.mandateBox(bank).push({ institution: v.institution, id: v.id });
        },
        notify: (n) => {
          if (live()) this.checkMandateNotification(n);
        },
      },
      pushes: {
        forward: (bank, items) => {
          if (!live()) return;
          for (const f of items) this.checkForward(bank, f);
          this.bankBox(bank).push(...items.map((f) => ({ institution: f.institution, id: f.id, type: f.type, step: f.step })));
        },
        query: ({ bank, message: { institution, id, type, step } }) => {
          if (!live()) return;
          const r = this.find(institution, id)?.record;
          this.check(r !== undefined && r.t === type && reachedStep(r, step) && awaitedAt(r, step) === bank, () => `query of ${institution}/${id} at step ${step} to ${bank ?? 'the institution'}; stored ${JSON.stringify(r)}`);
          if (!isOpen(r)) return;
          if (bank === undefined) this.awaitingBox(institution).push({ id });
          else this.bankBox(bank).push({ institution, id, type, step });
        },
        notify: (n) => {
          if (!live()) return;
          this.checkNotification(n);
          if (n.status === 'awaiting-submission') this.awaitingBox(n.institution).push({ id: n.id });
        },
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

  private bankBox(bank: string): Inboxed[] {
    let box = this.inbox.get(bank);
    if (box === undefined) this.inbox.set(bank, (box = []));
    return box;
  }

  private awaitingBox(institution: string): Awaiting[] {
    let box = this.awaiting.get(institution);
    if (box === undefined) this.awaiting.set(institution, (box = []));
    return box;
  }

  private mandateBox(bank: string): { institution: string; id: string; repeat?: 'confirm' | 'decline' }[] {
    let box = this.mandateInbox.get(bank);
    if (box === undefined) this.mandateInbox.set(bank, (box = []));
    return box;
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
    for (const m of this.mandates) {
      m.revoking = 0;
      m.calls = 0;
    }
    this.inbox.clear();
    this.awaiting.clear();
    this.mandateInbox.clear();
    await this.startEngine();
    // Mandates are what the store holds, whatever was under way.
    for (const m of this.mandates) {
      const d = this.store.mandate(m.institution, m.id);
      const v = this.clearing.mandates.view(m.institution, m.id);
      this.check(JSON.stringify(v) === JSON.stringify(d === undefined ? undefined : mandateViewOf(d)), () => `after a restart mandate ${m.institution}/${m.id} is ${JSON.stringify(v)}, the store holds ${JSON.stringify(d)}`);
    }
    // The clients reconnect: each bank subscribes to its forwards, each institution reads what awaits its submission.
    for (const bank of this.banks) {
      const it = this.clearing.lifecycle.pendingForwards(bank);
      for (let n = it.next(); n.done !== true; n = it.next()) {
        this.checkForward(bank, n.value);
        this.bankBox(bank).push({ institution: n.value.institution, id: n.value.id, type: n.value.type, step: n.value.step });
      }
      for (const v of this.clearing.mandates.pendingFor(bank)) this.mandateBox(bank).push({ institution: v.institution, id: v.id });
    }
    for (const { key, record } of this.stored()) {
      if (record.s !== 'awaiting-submission') continue;
      const [institution, id] = splitInstructionKey(key);
      this.awaitingBox(institution).push({ id });
    }
    this.checkAll('after a restart');
  }

  private addFaults(): void {
    const f = this.shards.faultsInjected;
    this.report.faults.commitFails += f.commitFails;
    this.report.faults.reportsLost += f.reportsLost;
    this.report.faults.workerDeaths += f.workerDeaths;
    this.report.tasks += this.shards.tasksRun;
  }

  // ---- pushes, checked as they go out ----------------------------------------------------

  /** A forward names a stored instruction at the step it is forwarded for (or past it), to that step's bank, with its deadline and verification. */
  private checkForward(bank: string, f: ForwardItem): void {
    const rec = this.find(f.institution, f.id)?.record;
    const what = (): string => `forward to ${bank}: ${JSON.stringify(f)}; stored ${JSON.stringify(rec)}`;
    this.check(rec !== undefined && rec.t === f.type && rec.p === f.payer && rec.q === f.payee && rec.a === f.amount && reachedStep(rec, f.step) && awaitedAt(rec, f.step) === bank, what);
    if (rec.st === f.step) this.check(f.deadline === new Date(rec.dl!).toISOString(), what);
    this.check(f.verification === (f.step === 'receipt' && f.type === 'authenticated' ? rec.vf : undefined), what);
    this.flow(`forward ${f.type} at ${f.step}`);
  }

  /** A notification tells the institution what the disk shows (or showed on the way to it). */
  private checkNotification(n: Notification): void {
    const rec = this.find(n.institution, n.id)?.record;
    const what = (): string => `notification ${JSON.stringify(n)}; stored ${JSON.stringify(rec)}`;
    this.check(rec !== undefined && rec.t === n.type, what);
    switch (n.status) {
      case 'awaiting-submission':
        this.check(stateReached(rec, 'awaiting-submission'), what);
        break;
      case 'cleared':
        this.check(n.batch !== undefined && stateReached(rec, 'cleared', n.batch), what);
        break;
      case 'reversed':
        this.check(rec.s === 'reversed' && rec.rb === n.batch, what);
        break;
      default:
        this.check(rec.s === n.status && n.leg === (rec.t === 'payout' ? rec.st : undefined), what);
    }
  }

  /** A mandate notification follows a durable change. */
  private checkMandateNotification(n: MandateNotification): void {
    const d = this.store.mandate(n.institution, n.mandate);
    this.check(d?.status === n.status, () => `mandate notification ${JSON.stringify(n)}; the store holds ${JSON.stringify(d)}`);
  }

  // ---- the clients: submissions --------------------------------------------------------

  private newInstruction(institution: string): WireInstruction {
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
    if ((i.type === 'agreement' || i.type === 'entrusted') && this.mandates.length > 0 && this.prng.chance(0.4)) this.underMandate(institution, i);
    return i;
  }

  /**
   * Put an instruction under a mandate: mostly one its institution holds
   * active, for its payer bank and within its maximum; sometimes one in
   * any status (pending, declined, revoked, never stored), for another
   * payer bank, over its maximum, unknown, or another institution's.
   */
  private underMandate(institution: string, i: WireInstruction): void {
    const mine = this.mandates.filter((m) => m.institution === institution);
    const roll = this.prng.int(100);
    if (mine.length === 0 || roll < 6) {
      i.mandate = this.prng.chance(0.5) ? `M${this.opts.seed}-none${this.prng.int(20)}` : this.prng.pick(this.mandates).id;
      return;
    }
    const active = mine.filter((m) => this.store.mandate(m.institution, m.id)?.status === 'active');
    const m = active.length > 0 && roll < 75 ? this.prng.pick(active) : this.prng.pick(mine);
    i.mandate = m.id;
    if (roll < 75 || roll >= 83) {
      i.payer = m.payer;
      while (i.payee === i.payer) i.payee = this.prng.pick(this.banks);
    }
    if (m.max !== undefined) {
      if (roll >= 83 && roll < 90) i.amount = m.max + this.prng.between(1, 500);
      else if (i.amount > m.max) i.amount = this.prng.between(1, m.max);
    }
  }

  /**
   * Whether the mandate of an instruction allows it now, as the clients
   * can know: durably active (the store holds it active), no revocation of
   * it begun and not refused, for this payer bank and amount.
   */
  private mandateAllows(institution: string, raw: WireInstruction): boolean {
    const d = this.store.mandate(institution, raw.mandate!);
    const m = this.mandateByKey.get(`${institution}/${raw.mandate}`);
    return d !== undefined && d.status === 'active' && (m === undefined || m.revoking === 0) && d.payer === raw.payer && (d.perPaymentMaxCents === undefined || raw.amount <= d.perPaymentMaxCents);
  }

  private sentOf(institution: string, raw: WireInstruction): Sent {
    const key = `${institution}/${raw.id}`;
    let s = this.sent.get(key);
    if (s === undefined) {
      s = { institution, id: raw.id, raw, content: contentOf(raw), outstanding: 0, notStored: false, conflicting: 0, storedAnswers: 0, lost: false, allowed: new Set(), submissionsTaken: 0 };
      this.sent.set(key, s);
    }
    return s;
  }

  private submit(institution: string, items: WireInstruction[]): void {
    const epoch = this.epoch;
    const allowed: (boolean | undefined)[] = [];
    const storedBefore: boolean[] = [];
    for (const raw of items) {
      const s = this.sentOf(institution, raw);
      s.outstanding++;
      s.notStored = false;
      this.report.submitted++;
      const ok = raw.mandate === undefined ? undefined : this.mandateAllows(institution, raw);
      if (ok === true) s.allowed.add(contentOf(raw));
      allowed.push(ok);
      storedBefore.push(this.find(institution, raw.id) !== undefined);
    }
    this.markTwoPhase(institution, items);
    this.clearing.router.submit(institution, items, (results) => {
      if (epoch !== this.epoch) this.fail('an answer came from an engine that had crashed');
      results.forEach((r, i) => this.checkSubmitAnswer(institution, items[i]!, r, allowed[i], storedBefore[i]!));
    });
  }

  /**
   * The mandate law of an answer: an instruction is admitted under a
   * mandate only if the mandate allowed it when it was sent, and refused
   * (MANDATE_INVALID, nothing stored) only if it did not and nothing was
   * stored under the id already.
   */
  private checkMandateAnswer(raw: WireInstruction, r: InstructionResult, allowed: boolean | undefined, storedBefore: boolean, what: () => string): void {
    if (r.code === 'MANDATE_INVALID') {
      this.check(allowed === false && !storedBefore, () => `MANDATE_INVALID for an instruction its mandate allowed, or already stored: ${what()}`);
      this.flow(`refused under a mandate`);
    } else if (raw.mandate !== undefined && r.status !== 'rejected' && r.duplicate !== true) {
      this.check(allowed === true, () => `admitted under a mandate that did not allow it when it was sent (not durably active, revoked or being revoked, another payer, or over its maximum): ${what()}`);
      this.flow('admitted under a mandate');
    }
  }

  /** The truth of an answer to a submission, at the moment it is given. */
  private checkSubmitAnswer(institution: string, raw: WireInstruction, r: InstructionResult, allowed: boolean | undefined, storedBefore: boolean): void {
    const key = `${institution}/${raw.id}`;
    const s = this.sent.get(key)!;
    s.outstanding--;
    const rec = this.find(institution, raw.id)?.record;
    const what = (): string => `${key} answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
    this.count(r.status === 'rejected' ? r.code! : r.duplicate === true ? `${r.status} (duplicate)` : r.status);
    this.checkMandateAnswer(raw, r, allowed, storedBefore, what);
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
    this.check(stateReached(rec, r.status, r.batch), () => `answered ${r.status} but the stored status is ${rec.s}: ${what()}`);
    if (r.status === 'cleared') this.check(rec.b === r.batch, () => `acknowledged in batch ${r.batch} but stored in ${rec.b}: ${what()}`);
    if (r.duplicate !== true && ++s.storedAnswers > 1) this.fail(`stored twice: a second answer without duplicate: ${what()}`);
    s.acked = { status: r.status, batch: r.batch };
    s.notStored = false;
  }

  private conflict(): void {
    // A conflicting resubmission: same id, another amount.
    const pool = [...this.sent.values()];
    if (pool.length === 0) return;
    const p = this.prng.pick(pool);
    if (p.outstanding > 0 || p.conflicting > 0) return; // one content of a key in flight at a time, besides its original
    const other = { ...p.raw, amount: p.raw.amount + 1 };
    p.conflicting++;
    p.notStored = false;
    const allowed = other.mandate === undefined ? undefined : this.mandateAllows(p.institution, other);
    if (allowed === true) p.allowed.add(contentOf(other));
    const storedBefore = this.find(p.institution, p.id) !== undefined;
    const epoch = this.epoch;
    this.markTwoPhase(p.institution, [other]);
    this.clearing.router.submit(p.institution, [other], ([r]) => {
      if (epoch !== this.epoch) this.fail('an answer came from an engine that had crashed');
      p.conflicting--;
      const rec = this.find(p.institution, p.id)?.record;
      const what = (): string => `a conflicting resubmission of ${p.institution}/${p.id} answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
      this.count(`conflict ${r!.code ?? r!.status}`);
      this.checkMandateAnswer(other, r!, allowed, storedBefore, what);
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
  }

  // ---- the clients: banks' answers -------------------------------------------------------

  /** What a bank answers to a forward or query at `step`: the payer verifies, confirms or declines at once; otherwise confirm or decline. */
  private outcomeFor(item: Inboxed): Outcome {
    if (item.step === 'verify') {
      const r = this.prng.int(100);
      return r < 55 ? 'verify' : r < 82 ? 'confirm' : 'decline';
    }
    // Now and then a verify out of place: a duplicate after the verify step, INVALID_FIELD for another kind.
    if (this.prng.chance(0.01)) return 'verify';
    return this.prng.chance(0.78) ? 'confirm' : 'decline';
  }

  /** Another answer than `o`: a contradiction. */
  private otherOutcome(o: Outcome, step: Step): Outcome {
    if (step === 'verify') return this.prng.pick((['verify', 'confirm', 'decline'] as const).filter((x) => x !== o));
    return o === 'confirm' ? 'decline' : 'confirm';
  }

  private receipts(bank: string): void {
    const inbox = this.inbox.get(bank) ?? [];
    if (inbox.length === 0) return;
    const n = this.prng.between(1, Math.min(4, inbox.length));
    const picked = inbox.splice(0, n);
    const calls = new Map<string, { raw: { institution: string; id: string; outcome: Outcome }; item: Inboxed }[]>();
    for (const p of picked) {
      const s = this.sent.get(`${p.institution}/${p.id}`)!;
      const outcome = p.repeat === undefined ? this.outcomeFor(p) : this.prng.chance(0.7) ? p.repeat : this.otherOutcome(p.repeat, p.step);
      // Now and then the wrong bank answers: the other party, or a bank that is neither (FORBIDDEN either way).
      let from = bank;
      const roll = this.prng.int(100);
      if (roll < 5) from = bank === s.raw.payer ? s.raw.payee : s.raw.payer;
      else if (roll < 7) from = this.prng.pick(this.banks.filter((b) => b !== s.raw.payer && b !== s.raw.payee));
      // Some answers are repeated later, the same or contradicting.
      if (this.prng.chance(0.15)) inbox.push({ ...p, repeat: outcome });
      let list = calls.get(from);
      if (list === undefined) calls.set(from, (list = []));
      list.push({ raw: { institution: p.institution, id: p.id, outcome }, item: p });
    }
    for (const [from, list] of calls) {
      const raws = list.map((l) => l.raw);
      const epoch = this.epoch;
      this.clearing.lifecycle.receipts(from, raws, (results) => {
        if (epoch !== this.epoch) this.fail('a receipt answer came from an engine that had crashed');
        results.forEach((r, i) => this.checkReceiptAnswer(from, list[i]!.item, raws[i]!, r));
      });
    }
  }

  /**
   * The truth of a bank's answer to a receipt, against the disk when it is
   * given: an answer that applied shows on the record at the step it
   * applied to; a duplicate is of an answer the record shows taken; a
   * refusal is true of a state the record was in.
   */
  private checkReceiptAnswer(bank: string, item: Inboxed, raw: { institution: string; id: string; outcome: Outcome }, r: ReceiptResult): void {
    const rec = this.find(raw.institution, raw.id)?.record;
    const outcome = raw.outcome;
    const dup = r.duplicate === true;
    const what = (): string => `receipt ${JSON.stringify(raw)} from ${bank} (forwarded to ${item.repeat === undefined ? '' : 'and answered before by '}a bank at step ${item.step}) answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
    this.count(`receipt ${r.code ?? r.status}${dup ? ' (duplicate)' : ''}`);
    if (r.code === undefined) {
      this.check(rec !== undefined && (bank === rec.p || bank === rec.q), what);
      this.check(stateReached(rec, r.status, r.batch), what);
      if (r.status === 'cleared') this.check(r.batch !== undefined, what);
      if (r.status === 'awaiting-submission') this.check(outcome === 'verify', what);
      if (r.status === 'pending') {
        // A payer leg confirmed (applied, or repeated at the payee), or a verify repeated at step receipt.
        this.check((rec.t === 'payout' && bank === rec.p && outcome === 'confirm' && reachedStep(rec, 'payee')) || (rec.t === 'authenticated' && outcome === 'verify' && reachedStep(rec, 'receipt')), what);
      }
      this.check(answerTaken(rec, bank, outcome), what);
      if (dup) {
        this.flow('receipt answered as a duplicate');
        return;
      }
      this.check(r.status === effectOf(rec, bank, outcome), what);
      // Applied: at a step this bank answers (a final record keeps the step it ended at).
      const at: Step | undefined = r.status === 'awaiting-submission' ? 'verify' : r.status === 'pending' ? 'payer' : rec.st;
      this.check(at !== undefined && at !== 'submission' && awaitedAt(rec, at) === bank, what);
      this.flow(`${rec.t} ${outcome} at ${at}`);
      return;
    }
    switch (r.code) {
      case 'NOT_FOUND':
        this.check(rec === undefined, what);
        return;
      case 'FORBIDDEN':
        // A bank with no part in it; or, of its two banks, one whose answer is not awaited: the payee of
        // anything but a payout, the payee of a payout before its payee leg, the payer's decline at the payee leg.
        this.check(
          rec !== undefined &&
            r.status === 'rejected' &&
            ((bank !== rec.p && bank !== rec.q) ||
              (bank === rec.q && (rec.t !== 'payout' || rec.tp === 1)) ||
              (bank === rec.p && rec.t === 'payout' && outcome === 'decline' && reachedStep(rec, 'payee'))),
          what,
        );
        this.flow(bank !== rec!.p && bank !== rec!.q ? 'receipt from a bank with no part refused' : 'receipt from the wrong bank refused');
        return;
      case 'NOT_PENDING':
        this.check(rec !== undefined && (bank === rec.p || (bank === rec.q && rec.t === 'payout')) && stateReached(rec, r.status), what);
        if (isFinal(r.status)) {
          // A contradiction of a final instruction: not a repeat of what it ended with, nor of a step it passed.
          this.check(!answerTaken(rec, bank, outcome), () => `NOT_PENDING for a repeat of an answer the instruction took (a duplicate by PROTOCOL.md): ${what()}`);
        } else if (r.status === 'awaiting-submission') {
          // The payer bank's confirm or decline while the institution's submission is awaited.
          this.check(bank === rec.p && outcome !== 'verify', what);
        } else {
          // It moved on to another step between the decision and its shard.
          this.check(r.status === 'pending' && rec.tp === 1, what);
        }
        this.flow('receipt contradicting refused');
        return;
      case 'INVALID_FIELD':
        this.check(rec !== undefined && outcome === 'verify' && rec.t !== 'authenticated' && r.field === 'outcome', what);
        return;
      case 'INTERNAL':
      case 'OVERLOADED':
        // This receipt was not applied; another one may have finished the instruction since.
        this.check(rec !== undefined, what);
        return;
      default:
        this.fail(`unexpected receipt answer: ${what()}`);
    }
  }

  // ---- the clients: payment submissions (支付提交) ----------------------------------------

  private submissions(): void {
    const institution = this.prng.pick(INSTITUTIONS);
    const box = this.awaitingBox(institution);
    const roll = this.prng.int(100);
    if (box.length > 0 && roll < 88) {
      const a = box.splice(this.prng.int(Math.min(3, box.length)), 1)[0]!;
      // The payer has not typed the code yet: later (perhaps too late).
      if (this.prng.chance(0.15)) {
        box.push(a);
        return;
      }
      let code = a.code ?? `c-${a.id}`;
      if (this.prng.chance(a.code === undefined ? 0.03 : 0.3)) code = `x${this.prng.int(1000)}`;
      this.sendVerification(institution, a.id, code);
      const twin = this.prng.int(100);
      if (twin < 8) this.sendVerification(institution, a.id, code);
      else if (twin < 14) this.sendVerification(institution, a.id, `x${this.prng.int(1000)}`);
      if (this.prng.chance(0.12)) box.push({ id: a.id, code });
      return;
    }
    if (box.length === 0 && roll < 70) return;
    // Out of turn: for a payment its bank has not verified yet, for another kind, for nothing, or with a bad code.
    if (roll < 95) {
      const pool = [...this.sent.values()].filter((s) => s.institution === institution && s.raw.twoPhase === true);
      if (pool.length === 0) return;
      const s = this.prng.pick(pool);
      this.sendVerification(institution, s.id, `c-${s.id}`);
    } else if (roll < 98) {
      this.sendVerification(institution, `S${this.opts.seed}-none${this.prng.int(100)}`, 'c');
    } else {
      const pool = [...this.sent.values()];
      if (pool.length > 0) this.sendVerification(institution, this.prng.pick(pool).id, this.prng.chance(0.5) ? '' : 'v'.repeat(33));
    }
  }

  private sendVerification(institution: string, id: string, code: string): void {
    const epoch = this.epoch;
    this.clearing.lifecycle.submitVerification(institution, id, code, (r) => {
      if (epoch !== this.epoch) this.fail('a submission answer came from an engine that had crashed');
      this.checkVerificationAnswer(institution, id, code, r);
    });
  }

  /** The truth of an answer to a payment submission, against the disk when it is given. */
  private checkVerificationAnswer(institution: string, id: string, code: string, r: ReceiptResult): void {
    const rec = this.find(institution, id)?.record;
    const dup = r.duplicate === true;
    const what = (): string => `submission of ${institution}/${id} with '${code}' answered ${JSON.stringify(r)}; stored ${JSON.stringify(rec)}`;
    this.count(`submission ${r.code ?? r.status}${dup ? ' (duplicate)' : ''}`);
    if (code.length === 0 || code.length > 32) {
      this.check(r.code === 'INVALID_FIELD' && r.field === 'verification', what);
      return;
    }
    if (r.code === undefined) {
      // Taken with this very verification: the record shows it, at step receipt or past it; a repeat
      // is answered with the status the instruction has now.
      this.check(rec !== undefined && rec.t === 'authenticated' && rec.vf === code && reachedStep(rec, 'receipt') && stateReached(rec, r.status), what);
      if (dup) {
        this.flow('submission answered as a duplicate');
        return;
      }
      this.check(r.status === 'pending', what);
      const s = this.sent.get(`${institution}/${id}`)!;
      this.check(++s.submissionsTaken === 1, () => `a second payment submission taken: ${what()}`);
      this.flow('submission taken');
      return;
    }
    switch (r.code) {
      case 'NOT_FOUND':
        this.check(rec === undefined, what);
        return;
      case 'NOT_PENDING':
        // Not an authenticated payment, not verified yet, already final, or another verification taken.
        this.check(rec !== undefined && (rec.t !== 'authenticated' || rec.vf !== code) && stateReached(rec, r.status), what);
        this.flow(rec.t !== 'authenticated' ? 'submission for another kind refused' : rec.vf !== undefined ? 'submission with another verification refused' : rec.st === 'verify' || rec.s === 'awaiting-submission' ? 'submission before verify refused' : 'submission after the end refused');
        return;
      case 'INTERNAL':
      case 'OVERLOADED':
        this.check(rec !== undefined && rec.t === 'authenticated', what);
        return;
      default:
        this.fail(`unexpected submission answer: ${what()}`);
    }
  }

  // ---- the clients: mandates (委托协议) ---------------------------------------------------

  /** A signing: a new mandate through the gateway or offline, the same signing again, or a bank signing for another bank's account. */
  private signMandate(): void {
    const roll = this.prng.int(100);
    if (this.mandates.length > 0 && roll < 15) {
      // The same signing again: with the same terms (a duplicate) or other ones (a conflict).
      const m = this.prng.pick(this.mandates);
      const same = this.prng.chance(0.6);
      this.sendSign(m, m.via === 'gateway' ? { role: 'institution', id: m.institution } : { role: 'bank', id: m.payer }, same ? m.account : `${m.account}-b`, same ? 'same' : 'other');
      return;
    }
    const n = this.nextMandate++;
    const m: SimMandate = {
      institution: this.prng.pick(INSTITUTIONS),
      id: `M${this.opts.seed}-${n}`,
      kind: this.prng.chance(0.5) ? 'agreement' : 'entrusted',
      payer: this.prng.pick(this.banks),
      account: `acct-${n}`,
      via: this.prng.chance(0.55) ? 'gateway' : 'offline',
      revoking: 0,
      revokedAnswered: false,
      calls: 0,
    };
    if (this.prng.chance(0.5)) m.max = this.prng.between(3_000, 20_000);
    if (m.via === 'offline' && roll >= 95) {
      // A bank signs offline for another bank's account: refused, and nothing is kept.
      this.sendSign(m, { role: 'bank', id: this.prng.pick(this.banks.filter((b) => b !== m.payer)) }, m.account, 'forbidden');
      return;
    }
    this.mandates.push(m);
    this.mandateByKey.set(`${m.institution}/${m.id}`, m);
    this.sendSign(m, m.via === 'gateway' ? { role: 'institution', id: m.institution } : { role: 'bank', id: m.payer }, m.account, 'new');
  }

  private sendSign(m: SimMandate, actor: MandateActor, account: string, expect: 'new' | 'same' | 'other' | 'forbidden'): void {
    const body: Record<string, unknown> = { id: m.id, kind: m.kind, payer: m.payer, account };
    if (m.max !== undefined) body['perPaymentMaxCents'] = m.max;
    if (actor.role === 'bank') body['institution'] = m.institution;
    m.calls++;
    const epoch = this.epoch;
    void this.clearing.mandates.sign(actor, body).then((res) => {
      if (epoch !== this.epoch) return;
      m.calls--;
      const d = this.store.mandate(m.institution, m.id);
      const what = (): string => `signing of mandate ${m.institution}/${m.id} by ${actor.role} ${actor.id} (${expect}, account ${account}) answered ${JSON.stringify(res)}; the store holds ${JSON.stringify(d)}`;
      if ('code' in res) {
        this.count(`mandate sign ${res.code}`);
        if (res.code === 'FORBIDDEN') this.check(expect === 'forbidden' && d === undefined, what);
        else if (res.code === 'DUPLICATE_CONFLICT') this.check(expect === 'other' && d !== undefined && d.account !== account, what);
        else if (res.code === 'INTERNAL') this.check(d === undefined, what);
        else this.fail(`unexpected answer: ${what()}`);
        return;
      }
      this.count(`mandate sign ${res.duplicate ? 'duplicate' : res.mandate.via}`);
      // Durable before answered, with the terms signed.
      this.check(expect !== 'forbidden' && d !== undefined && d.account === account && d.payer === m.payer && d.kind === m.kind && d.perPaymentMaxCents === m.max, what);
      if (res.duplicate) {
        this.check(res.mandate.status === d.status || (res.mandate.status === 'revoked' && m.revoking > 0), what);
        this.flow('mandate signing repeated');
        return;
      }
      const via = actor.role === 'bank' ? 'offline' : 'gateway';
      this.check(res.mandate.via === via && d.via === via && d.status === res.mandate.status && res.mandate.status === (via === 'offline' ? 'active' : 'pending'), what);
      m.account = account;
      m.via = via;
      this.flow(`mandate signed ${via}`);
    });
  }

  /** A payer bank answers gateway signings it was forwarded (one receipt per call, so each answer is read against the store as it is given). */
  private mandateReceipts(): void {
    const holding = this.banks.filter((b) => (this.mandateInbox.get(b)?.length ?? 0) > 0);
    if (holding.length === 0) return;
    const bank = this.prng.pick(holding);
    const box = this.mandateInbox.get(bank)!;
    const picked = box.splice(0, this.prng.between(1, Math.min(3, box.length)));
    for (const p of picked) {
      const m = this.mandateByKey.get(`${p.institution}/${p.id}`);
      this.check(m !== undefined, () => `mandate ${p.institution}/${p.id} was forwarded and never signed`);
      const outcome: 'confirm' | 'decline' = p.repeat === undefined ? (this.prng.chance(0.8) ? 'confirm' : 'decline') : this.prng.chance(0.7) ? p.repeat : p.repeat === 'confirm' ? 'decline' : 'confirm';
      const from = this.prng.chance(0.05) ? this.prng.pick(this.banks.filter((b) => b !== bank)) : bank;
      if (this.prng.chance(0.15)) box.push({ ...p, repeat: outcome });
      m.calls++;
      const epoch = this.epoch;
      this.clearing.mandates.receipts(from, [{ institution: p.institution, id: p.id, outcome }], ([r]) => {
        if (epoch !== this.epoch) return;
        m.calls--;
        this.checkMandateReceipt(from, m, outcome, r!);
      });
    }
  }

  private checkMandateReceipt(from: string, m: SimMandate, outcome: 'confirm' | 'decline', r: MandateReceiptResult): void {
    const d = this.store.mandate(m.institution, m.id);
    const wanted = outcome === 'confirm' ? 'active' : 'declined';
    const what = (): string => `mandate receipt ${outcome} of ${m.institution}/${m.id} from ${from} answered ${JSON.stringify(r)}; the store holds ${JSON.stringify(d)}`;
    this.count(`mandate receipt ${r.code ?? r.status}${r.duplicate === true ? ' (duplicate)' : ''}`);
    if (r.code === undefined) {
      this.check(d !== undefined && from === d.payer && d.via === 'gateway' && r.status === wanted && d.status === wanted, what);
      if (r.duplicate !== true) this.flow(`mandate ${wanted === 'active' ? 'confirmed' : 'declined'} by its bank`);
      return;
    }
    switch (r.code) {
      case 'NOT_FOUND':
        this.check(d === undefined, what);
        return;
      case 'FORBIDDEN':
        this.check(d !== undefined && from !== d.payer, what);
        return;
      case 'NOT_PENDING':
        this.check(d !== undefined && from === d.payer && r.status !== 'pending' && !(r.status === wanted && d.via === 'gateway') && (r.status === d.status || (r.status === 'revoked' && m.revoking > 0)), what);
        return;
      case 'INTERNAL':
        this.check(d !== undefined && d.status === 'pending' && r.status === 'pending', what);
        return;
      default:
        this.fail(`unexpected answer: ${what()}`);
    }
  }

  /** An instruction under mandate `m`, for its payer bank and within its maximum. */
  private underThis(m: SimMandate): WireInstruction {
    const i = this.newInstruction(m.institution);
    i.type = m.kind;
    i.mandate = m.id;
    i.payer = m.payer;
    while (i.payee === i.payer) i.payee = this.prng.pick(this.banks);
    if (m.max !== undefined && i.amount > m.max) i.amount = this.prng.between(1, m.max);
    return i;
  }

  /**
   * A revocation by the institution, the payer bank or an operator; now and
   * then by a party that may not. Its institution may race it: an
   * instruction under it sent just before the call (admitted if the
   * mandate allowed it then), and one sent once the call has begun, while
   * its store write is still under way (never admitted).
   */
  private async revokeMandate(): Promise<void> {
    if (this.mandates.length === 0) return;
    const m = this.prng.pick(this.mandates);
    if (this.prng.chance(0.3)) this.submit(m.institution, [this.underThis(m)]);
    const roll = this.prng.int(100);
    let actor: MandateActor;
    let valid = true;
    if (roll < 45) actor = { role: 'institution', id: m.institution };
    else if (roll < 80) actor = { role: 'bank', id: m.payer };
    else if (roll < 90) actor = { role: 'operator', id: 'sim' };
    else {
      valid = false;
      actor = roll < 95 ? { role: 'institution', id: INSTITUTIONS.find((i) => i !== m.institution)! } : { role: 'bank', id: this.prng.pick(this.banks.filter((b) => b !== m.payer)) };
    }
    // From this call on, no instruction under it may be admitted (until a refusal says it was not revoked).
    if (valid) m.revoking++;
    m.calls++;
    const epoch = this.epoch;
    void this.clearing.mandates.revoke(actor, m.institution, m.id).then((res) => {
      if (epoch !== this.epoch) return;
      m.calls--;
      if (valid) m.revoking--;
      const d = this.store.mandate(m.institution, m.id);
      const what = (): string => `revocation of ${m.institution}/${m.id} by ${actor.role} ${actor.id} answered ${JSON.stringify(res)}; the store holds ${JSON.stringify(d)}`;
      if ('code' in res) {
        this.count(`mandate revoke ${res.code}`);
        if (res.code === 'NOT_FOUND') this.check(!(actor.role === 'institution' && actor.id !== m.institution) && d === undefined, what);
        // Another institution, or a bank that is not the mandate's payer bank: outside its role.
        else if (res.code === 'FORBIDDEN') this.check((actor.role === 'institution' && actor.id !== m.institution) || (actor.role === 'bank' && d !== undefined && actor.id !== d.payer), what);
        else if (res.code === 'NOT_PENDING') this.check(d?.status === 'declined', what);
        else if (res.code === 'INTERNAL') this.check(valid && d !== undefined && d.status !== 'revoked', what);
        else this.fail(`unexpected answer: ${what()}`);
        return;
      }
      this.count('mandate revoke ok');
      // Durable before answered.
      this.check(valid && d !== undefined && d.status === 'revoked' && res.status === 'revoked', what);
      if (!m.revokedAnswered) this.flow(`mandate revoked by ${actor.role}`);
      m.revokedAnswered = true;
    });
    if (valid && this.prng.chance(0.7)) {
      // The call has begun (its continuations have run); its write waits for the clock.
      await settle();
      this.throwIfFailed();
      if (m.revoking > 0) this.flow('sent while its mandate was being revoked');
      this.submit(m.institution, [this.underThis(m)]);
    }
  }

  // ---- the operator ----------------------------------------------------------------------

  private operatorAction(): void {
    const keys = [...this.sent.values()].filter((s) => s.acked !== undefined);
    if (keys.length === 0) return;
    const s = this.prng.pick(keys);
    const epoch = this.epoch;
    if (this.prng.chance(0.5)) {
      void this.clearing.lifecycle.reverse(s.institution, s.id, 'sim').then((f) => {
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
      void this.clearing.lifecycle.resolve(s.institution, s.id, outcome, 'sim').then((f) => {
        if (epoch !== this.epoch) return;
        const rec = this.find(s.institution, s.id)?.record;
        const what = (): string => `resolution ${outcome} of ${s.institution}/${s.id}: ${JSON.stringify(f)}; stored ${JSON.stringify(rec)}`;
        this.count(`resolve ${f?.code ?? 'ok'}`);
        if (f === undefined) {
          // The answer the step awaited: a payout's payer leg confirmed goes on to its payee bank.
          if (outcome === 'decline') this.check(rec?.s === 'declined', what);
          else this.check(rec !== undefined && (rec.s === 'cleared' || rec.s === 'reversed' || (rec.t === 'payout' && reachedStep(rec, 'payee'))), what);
        } else if (f.code === 'NOT_PENDING') {
          // Final with another outcome, or (confirm) awaiting the institution's submission, or a payout whose legs both passed meanwhile.
          const ok =
            outcome === 'decline'
              ? rec !== undefined && !isOpen(rec) && rec.s !== 'declined'
              : rec !== undefined && ((!isOpen(rec) && rec.s !== 'cleared') || (rec.t === 'authenticated' && reachedStep(rec, 'submission')) || (rec.t === 'payout' && rec.s === 'cleared'));
          this.check(ok, what);
        } else if (f.code === 'INTERNAL' || f.code === 'OVERLOADED') this.check(rec !== undefined && isOpen(rec), what);
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
    const carried = new Map<string, bigint>();
    let count = 0;
    const add = (payer: string, payee: string, a: number): void => {
      paid.set(payer, (paid.get(payer) ?? 0n) + BigInt(a));
      received.set(payee, (received.get(payee) ?? 0n) + BigInt(a));
      count++;
    };
    for (const { key, record: r } of this.stored()) {
      if (r.b === record.batch && (r.s === 'cleared' || r.s === 'reversed')) add(r.p, r.q, r.a);
      if (this.carriedInto(key, r, record.batch)) carried.set(r.p, (carried.get(r.p) ?? 0n) + BigInt(r.a));
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
      const c = carried.get(row.bank) ?? 0n;
      if (cap !== undefined) this.check(p - q <= cap + c, () => `report ${record.batch}: ${row.bank} owes ${p - q}, past its cap ${cap} and the ${c} of two-phase debits carried into the batch`);
    }
    this.check(sum === 0n, () => `report ${record.batch} ${when}: Σ net = ${sum}`);
    this.closedBatches.add(record.batch);
  }

  /** The laws checked after every step; answers the disk scan for the checks at quiet points. */
  private checkStep(): DiskScan {
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
    // Every record in a state its flow allows; the stored flows of the batches still changing equal the
    // stored cleared instructions (a payout is netted only once cleared, by its payee bank).
    const current = this.clearing.openBatchId;
    const batches = view.batches();
    const scan = this.scanDisk(batches);
    const flows = new Map(batches.map((b) => [b, this.diskNetDebits(b)]));
    for (const batch of batches) {
      const fromRecords = scan.netDebit.get(batch)!;
      for (const bank of this.banks) {
        const f = flows.get(batch)!.get(bank) ?? 0n;
        const r = fromRecords.get(bank) ?? 0n;
        this.check(f === r, () => `${bank}'s stored flows in ${batch} make it owe ${f}, its stored cleared instructions ${r}`);
      }
    }
    // Caps against the disk itself, reported or not.
    for (const [bank, cap] of this.caps) {
      // Closed batches are checked by their reports; these are the ones still changing.
      for (const batch of batches) {
        const d = flows.get(batch)!.get(bank) ?? 0n;
        const c = scan.carriedIn.get(batch)!.get(bank) ?? 0n;
        this.check(d <= cap + c, () => `${bank} owes ${d} in batch ${batch} on disk, past its cap ${cap} and the ${c} of two-phase debits carried into the batch`);
      }
      const exposure = (flows.get(current) ?? this.diskNetDebits(current)).get(bank) ?? 0n;
      const open = scan.openDebit.get(bank) ?? 0n;
      const carried = (scan.carriedIn.get(current)?.get(bank) ?? 0n) + (scan.carriedOpen.get(bank) ?? 0n);
      this.check(exposure + open <= cap + carried, () => `${bank}'s net debit ${exposure} plus its open two-phase debits ${open} in ${current} on disk pass its cap ${cap} and the ${carried} carried into the batch`);
      // The cases the contract's cap allows and a stricter one would not: pending debits past the cap on their own, and a batch over it by them.
      if (open > cap) this.flow('pending debits past a cap on their own, on credits');
      if (exposure + open > cap) this.flow('a bank over its cap by the two-phase debits carried into a batch');
    }
    for (const s of this.sent.values()) {
      if (s.notStored && s.outstanding === 0 && s.conflicting === 0) {
        this.check(this.find(s.institution, s.id) === undefined, () => `${s.institution}/${s.id} was answered "not stored" and is stored`);
      }
    }
    return scan;
  }

  /** Every law, against everything: at restarts, when nothing is in flight, and at the end. */
  private checkAll(when: string): void {
    const scan = this.checkStep();
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
    // Under a mandate, only what was sent while the mandate allowed it is stored, answered or not.
    for (const [key, rec] of byKey) {
      if (rec.m === undefined) continue;
      const s = this.sent.get(key);
      this.check(s !== undefined && s.allowed.has(storedContentKey(rec)), () => `${when}: ${key} is stored under mandate ${rec.m}, which did not allow it when it was sent`);
    }
    // Mandates: a revocation answered stays revoked (in memory and in the store, across restarts);
    // with nothing under way on one, memory is what the store holds.
    for (const m of this.mandates) {
      const d = this.store.mandate(m.institution, m.id);
      const v = this.clearing.mandates.view(m.institution, m.id);
      if (m.revokedAnswered) this.check(d?.status === 'revoked' && v?.status === 'revoked', () => `${when}: mandate ${m.institution}/${m.id} was answered revoked and is ${v?.status} (stored ${d?.status})`);
      if (m.calls === 0) this.check(v?.status === d?.status, () => `${when}: mandate ${m.institution}/${m.id} is ${v?.status} in memory and ${d?.status} in the store`);
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
        const flows = this.diskNetDebits(batch);
        for (const row of o.banks) {
          const d = flows.get(row.bank) ?? 0n;
          this.check(row.paid - row.received === d, () => `${when}: live view has ${row.bank} owing ${row.paid - row.received} in ${batch}, the disk ${d}`);
        }
      }
      // The payer's reservation covers every open two-phase instruction, pending or awaiting its submission.
      for (const b of this.banks) {
        const p = scan.openDebit.get(b) ?? 0n;
        this.check(this.clearing.view.pendingDebit(b) === p, () => `${when}: live pending debit of ${b} is ${this.clearing.view.pendingDebit(b)}, its open two-phase instructions on disk ${p}`);
      }
    }
  }

  // ---- the run ---------------------------------------------------------------------------

  private async act(): Promise<void> {
    const roll = this.prng.int(1000);
    const institution = this.prng.pick(INSTITUTIONS);
    if (roll < 330) {
      const items = Array.from({ length: this.prng.between(1, 8) }, () => this.newInstruction(institution));
      this.submit(institution, items);
    } else if (roll < 440) {
      // Identical resubmissions: of anything sent, above all what was never answered.
      const unanswered = [...this.sent.values()].filter((s) => s.acked === undefined && s.outstanding === 0);
      const pool = unanswered.length > 0 && this.prng.chance(0.6) ? unanswered : [...this.sent.values()];
      if (pool.length === 0) return;
      const picks = Array.from({ length: this.prng.between(1, 4) }, () => this.prng.pick(pool));
      for (const p of picks) this.submit(p.institution, [p.raw]);
    } else if (roll < 465) {
      this.conflict();
    } else if (roll < 590) {
      this.receipts(this.prng.pick(this.banks));
    } else if (roll < 635) {
      this.submissions();
    } else if (roll < 647) {
      this.signMandate();
    } else if (roll < 654) {
      this.mandateReceipts();
    } else if (roll < 660) {
      await this.revokeMandate();
    } else if (roll < 685) {
      this.operatorAction();
    } else if (roll < 703) {
      this.cutoff();
    } else if (roll < 712) {
      // Its write completes as the clock runs; a failed write only loses that snapshot.
      this.clearing.snapshots.take().catch(() => undefined);
    } else if (this.opts.faults && roll < 720) {
      this.shards.killWorker(this.prng.int(this.opts.workers));
    } else if (this.opts.crashes && roll < 723) {
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
    for (const m of this.mandates) this.check(m.calls === 0, () => `a call on mandate ${m.institution}/${m.id} was never answered`);
    this.check(this.report.cutoffs > 0 || this.opts.steps < 100, () => 'no cut-off completed');
    // How the two-phase instructions ended (or stand), by kind and step, and the mandates by status.
    for (const { record: r } of this.stored()) if (r.tp === 1) this.flow(`end: ${r.t} ${r.s} at ${r.st}`);
    for (const m of this.mandates) this.flow(`end: mandate ${this.store.mandate(m.institution, m.id)?.status ?? 'not stored'}`);
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
      if (this.shards.busy === 0 && this.clearing.router.inflightCount === 0 && !this.mandateCallsInFlight() && !this.clockHasWorkSoon()) break;
      if (!this.clock.step()) break;
    }
    await settle();
    this.throwIfFailed();
    this.checkAll(when);
  }

  private mandateCallsInFlight(): boolean {
    return this.mandates.some((m) => m.calls > 0);
  }

  /** Events other than far timers (snapshots, expiries) still to run. */
  private clockHasWorkSoon(): boolean {
    const at = this.clock.nextAt();
    return at !== undefined && at <= this.clock.now();
  }
}

function contentOf(raw: WireInstruction): string {
  return contentKey({ type: raw.type, payer: raw.payer, payee: raw.payee, amount: raw.amount, twoPhase: raw.twoPhase === true, timeoutMs: raw.twoPhase === true ? raw.timeoutMs ?? 30_000 : undefined, reference: raw.reference, mandate: raw.mandate });
}

function mandateViewOf(d: Readonly<MandateRecord>): MandateView {
  return mandateView(d as MandateRecord);
}

export async function simulate(opts: SimOptions): Promise<SimReport> {
  return new Simulation(opts).run();
}
