/**
 * The life of an instruction after intake, as a clearing switch runs it:
 * forwarding two-phase instructions to the payer bank (接收并转发指令),
 * receipts, query compensation when a receipt is late (查询补偿), expiry,
 * terminal notifications (终端通知), manual resolution and reversals
 * (差错处理).
 *
 * State changes go through the router to the shard that holds the
 * instruction, like everything else; this module reacts to their commits.
 * Pending instructions are durable in the shards (with their deadlines), and
 * this module's timers are rebuilt from them at start.
 */

import { assert } from '../core/assert.js';
import { ID_PATTERN, isPlainObject, PARTY_CODE_PATTERN, rawParty } from '../core/instruction.js';
import { MinHeap } from '../core/min-heap.js';
import type { ShardMap } from '../core/shard-map.js';
import { failure, type Failure } from '../core/failures.js';
import { AnswerList, type OpResult, type OutcomeTarget, type ShardRouter } from '../router/shard-router.js';
import type { ApplyResult, ApplyTask, LifecycleKind, LifecycleOp, PendingEntry, ShardOp } from '../shard/tasks.js';
import type { Clock, InstructionLookup, TimerHandle } from '../core/ports.js';
import { firstStep, STEPS, type StoredInstruction } from '../core/stored-instruction.js';
import type { EngineCounters } from '../core/counters.js';
import type { LiveView } from '../view/live-view.js';
import type { Logger } from '../core/log.js';
import type { Step } from '../core/stored-instruction.js';
export type { Step };

/** A two-phase instruction as forwarded to the bank whose answer its step awaits. */
export interface ForwardItem {
  institution: string;
  id: string;
  type: string;
  step: Step;
  payer: string;
  payee: string;
  amount: number;
  reference?: string;
  acceptedAt: string;
  deadline: string;
  /** The payer's verification code, in the receipt step of an authenticated payment. */
  verification?: string;
}

export interface Notification {
  op: 'notify';
  institution: string;
  id: string;
  type: string;
  status: 'cleared' | 'declined' | 'expired' | 'reversed' | 'awaiting-submission';
  batch?: string;
  /** The leg a payout ended on, when declined or expired. */
  leg?: 'payer' | 'payee';
}

/**
 * A query compensation (查询补偿) for an overdue step: to the bank whose
 * answer is awaited, or, in the submission step of an authenticated
 * payment, to the institution (`bank` undefined).
 */
export interface QueryPush {
  bank: string | undefined;
  message: { op: 'query'; institution: string; id: string; type: string; step: Step };
}

export interface ReceiptResult {
  institution?: string;
  id?: string;
  status: string;
  batch?: string;
  duplicate?: true;
  code?: string;
  message?: string;
  field?: string;
}

/** Where the lifecycle's pushes go: the gateway fans them out to subscribed connections. */
export interface LifecyclePushes {
  forward(bank: string, items: ForwardItem[]): void;
  query(q: QueryPush): void;
  notify(n: Notification): void;
  /** Whether anyone listens to an institution's notifications (so none are built for nobody). */
  listening(institution: string): boolean;
}

interface Pending {
  entry: PendingEntry;
  shard: number;
  /** Its events still in the timer heap. */
  armed: number;
  /** No longer tracked at this step: its events in the heap are dead and are dropped. */
  final: boolean;
  /** When it began to be tracked, counted: a backlog read leaves out what the forward push has yet to carry. */
  order: number;
}

interface TimerEvent {
  key: string;
  pending: Pending;
  kind: 'query' | 'expire';
}

/** The timer heap is rebuilt without dead events once they are more than half of it (and at least this many). */
const HEAP_DEAD_EVENTS_MIN = 1024;

type Outcome = 'confirm' | 'decline' | 'verify';

/** After a restart that missed every query of a step, how long the one query sent then has before the step expires. */
const QUERY_GRACE_MS = 1000;
/**
 * After a restart, how long a step whose deadline passed while the engine
 * was down waits for its query: at the moment of recovery the engine is not
 * listening yet, so a query then would reach nobody, and the step would
 * expire unqueried. Its awaited party has this long to reconnect.
 */
const RECOVERY_QUERY_DELAY_MS = 2000;

/** How soon an expiry that could not be committed is tried again. */
const EXPIRY_RETRY_MS = 1000;

const RECEIPT_KEYS = new Set(['institution', 'id', 'outcome', 'reason']);
const REASON_LENGTH_MAX = 140;
export const VERIFICATION_LENGTH_MAX = 32;
const BAD_TEXT = /\p{Cc}|\p{Cs}/u;

/** The bank whose answer a step awaits; undefined in the submission step, which awaits the institution. */
export function awaitedBank(e: Pick<PendingEntry, 'payer' | 'payee'>, step: Step): string | undefined {
  return step === 'payee' ? e.payee : step === 'submission' ? undefined : e.payer;
}

/** The leg a payout ended on, for its notification and query view. */
function legOf(type: string, step: Step | undefined): 'payer' | 'payee' | undefined {
  return type === 'payout' && (step === 'payer' || step === 'payee') ? step : undefined;
}

function forwardOf(e: PendingEntry): ForwardItem {
  const f: ForwardItem = {
    institution: e.institution,
    id: e.id,
    type: e.type,
    step: e.step,
    payer: e.payer,
    payee: e.payee,
    amount: e.amount,
    acceptedAt: new Date(e.acceptedAt).toISOString(),
    deadline: new Date(e.deadline).toISOString(),
  };
  if (e.reference !== undefined) f.reference = e.reference;
  if (e.verification !== undefined && e.step === 'receipt') f.verification = e.verification;
  return f;
}

/** The forwards awaiting `bank` among `pending` tracked up to `orderMax`, made as they are pulled. */
function* forwardsOf(pending: Iterator<Pending>, bank: string, orderMax: number): Generator<ForwardItem, void, undefined> {
  for (let next = pending.next(); next.done !== true; next = pending.next()) {
    const p = next.value;
    if (p.order <= orderMax && awaitedBank(p.entry, p.entry.step) === bank) yield forwardOf(p.entry);
  }
}

/** A receipt item that passed its shape checks. */
interface ReceiptItem {
  institution: string;
  id: string;
  outcome: Outcome;
  reason: string | null;
}

export function parseReceipt(raw: unknown): ReceiptItem | Failure {
  if (!isPlainObject(raw)) return failure('INVALID_MESSAGE', 'a receipt must be an object');
  for (const k of Object.keys(raw)) {
    if (!RECEIPT_KEYS.has(k)) return failure('INVALID_FIELD', `unknown field '${k.slice(0, 40).replace(/[^\x20-\x7e]/g, '?')}'`, k.slice(0, 40));
  }
  const { institution, id, outcome, reason } = raw as Record<string, unknown>;
  if (typeof institution !== 'string' || !PARTY_CODE_PATTERN.test(institution)) return failure('INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) return failure('INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
  if (outcome !== 'confirm' && outcome !== 'decline' && outcome !== 'verify') return failure('INVALID_FIELD', 'outcome must be confirm, decline or verify', 'outcome');
  if (reason !== undefined && (typeof reason !== 'string' || [...reason].length > REASON_LENGTH_MAX || BAD_TEXT.test(reason))) {
    return failure('INVALID_FIELD', `reason must be text of at most ${REASON_LENGTH_MAX} characters`, 'reason');
  }
  return { institution, id, outcome, reason: typeof reason === 'string' && reason.length > 0 ? reason : null };
}

function isFailure<T extends object>(x: T | Failure): x is Failure {
  return (x as Failure).code !== undefined;
}

/** The status an applied lifecycle operation leaves. */
const STATUS_AFTER = { C: 'cleared', D: 'declined', X: 'expired', V: 'awaiting-submission', U: 'pending', P: 'pending', R: 'reversed' } as const;

/** The state of an instruction that a receipt is decided against: tracked, or as stored. */
export interface Held {
  type: string;
  payer: string;
  payee: string;
  status: string;
  step: Step | undefined;
}

/**
 * What a bank's answer does to an instruction at its step (PROTOCOL.md,
 * the five business kinds): the lifecycle operation it makes, or, when it
 * makes none, its answer: a repeat of an answer already taken is a
 * duplicate, an answer out of turn is refused.
 */
export function decideReceipt(h: Held, bank: string, outcome: Outcome): { kind: LifecycleKind } | { duplicate: true } | Failure {
  if (outcome === 'verify' && h.type !== 'authenticated') return failure('INVALID_FIELD', 'verify answers only authenticated payments', 'outcome');
  const notYours = failure('FORBIDDEN', 'only the bank of the current step answers for an instruction');
  if (h.status === 'pending' || h.status === 'awaiting-submission') {
    switch (h.step ?? 'receipt') {
      case 'verify':
        if (bank !== h.payer) return notYours;
        return { kind: outcome === 'verify' ? 'V' : outcome === 'confirm' ? 'C' : 'D' };
      case 'submission':
        if (bank !== h.payer) return notYours;
        if (outcome === 'verify') return { duplicate: true };
        return failure('NOT_PENDING', "the payment awaits the institution's submission");
      case 'receipt':
        if (bank !== h.payer) return notYours;
        if (outcome === 'verify') return { duplicate: true };
        return { kind: outcome === 'confirm' ? 'C' : 'D' };
      case 'payer':
        if (bank !== h.payer) return notYours;
        return { kind: outcome === 'confirm' ? 'P' : 'D' };
      case 'payee':
        if (bank === h.payer && outcome === 'confirm') return { duplicate: true };
        if (bank !== h.payee) return notYours;
        return { kind: outcome === 'confirm' ? 'C' : 'D' };
    }
  }
  // Final. Only a payout's two banks both answer; for the other kinds an answer from the payee bank is out of turn.
  if (h.type !== 'payout' && bank !== h.payer) return notYours;
  // A repeat of the outcome it ended with (or of a step it passed) is a duplicate; anything else contradicts it.
  const cleared = h.status === 'cleared' || h.status === 'reversed';
  // An authenticated payment that ended past its verify step had its verify taken; one confirmed or declined in that step had not.
  const verifyTaken = h.type === 'authenticated' && h.step !== undefined && h.step !== 'verify';
  const repeat =
    (cleared && outcome === 'confirm') ||
    (h.status === 'declined' && outcome === 'decline') ||
    ((h.status === 'declined' || h.status === 'expired') && h.type === 'payout' && h.step === 'payee' && bank === h.payer && outcome === 'confirm') ||
    (outcome === 'verify' && verifyTaken);
  if (repeat) return { duplicate: true };
  return failure('NOT_PENDING', `the instruction is already ${h.status}`);
}

function heldOf(record: StoredInstruction): Held {
  return { type: record.t, payer: record.p, payee: record.q, status: record.s, step: record.st };
}

/** The answer to a receipt or a submission that changed nothing: its failure, and the instruction's status (`rejected` when refused at intake). */
function failedReceipt(item: { institution?: string; id?: string } | undefined, f: Failure, status: string): ReceiptResult {
  const r: ReceiptResult = { status };
  if (item?.institution !== undefined) r.institution = item.institution;
  if (item?.id !== undefined) r.id = item.id;
  r.code = f.code;
  r.message = f.message;
  if (f.field !== undefined) r.field = f.field;
  return r;
}

/** Answers for a list of receipts, filled in as shards commit. */
class ReceiptBatch extends AnswerList<ReceiptResult> implements OutcomeTarget {
  readonly items: (ReceiptItem | undefined)[];
  /** Per item routed, the state it was decided against, for deciding the answer when the shard found it moved on. */
  readonly held: (Held | undefined)[];
  /** Per item routed, the lifecycle operation it made. */
  readonly kinds: LifecycleKind[] = [];
  readonly bank: string;

  constructor(bank: string, size: number, onDone: (results: ReceiptResult[]) => void) {
    super(size, onDone);
    this.bank = bank;
    this.items = new Array(size);
    this.held = new Array(size);
  }

  fail(index: number, item: { institution?: string; id?: string } | undefined, f: Failure, status = 'rejected'): void {
    this.settle(index, failedReceipt(item, f, status));
  }

  deliver(index: number, result: OpResult, primary: boolean): void {
    const item = this.items[index]!;
    if (result.kind === 'applied') {
      const status = STATUS_AFTER[this.kinds[index]!];
      const r: ReceiptResult = { institution: item.institution, id: item.id, status };
      if (status === 'cleared') r.batch = result.batch;
      if (!primary) r.duplicate = true;
      this.settle(index, r);
    } else if (result.kind === 'found') {
      const o = result.outcome;
      if (o.status === 'missing') {
        this.fail(index, item, failure('NOT_FOUND', `no instruction '${item.id}' of institution '${item.institution}'`));
        return;
      }
      const h = this.held[index]!;
      this.answer(index, item, { ...h, status: o.status, step: o.step }, o.batch);
    } else {
      this.fail(index, item, result.failure);
    }
  }

  /** The answer for a receipt that makes no change: a duplicate, or a refusal. */
  answer(index: number, item: ReceiptItem, h: Held, batch: string | undefined): void {
    const d = decideReceipt(h, this.bank, item.outcome);
    if ('duplicate' in d) {
      const r: ReceiptResult = { institution: item.institution, id: item.id, status: h.status, duplicate: true };
      if (batch !== undefined && (h.status === 'cleared' || h.status === 'reversed')) r.batch = batch;
      this.settle(index, r);
    } else if ('code' in d) {
      this.fail(index, item, d, d.code === 'NOT_PENDING' ? h.status : 'rejected');
    } else {
      // The shard found it at another step than the one this was decided at: the answer is that it moved on.
      this.fail(index, item, failure('NOT_PENDING', `the instruction is ${h.status} at step ${h.step ?? 'receipt'}`), h.status);
    }
  }
}

/** One operation's answer, for the single calls. */
class OneShot implements OutcomeTarget {
  constructor(private readonly done: (result: OpResult, primary: boolean) => void) {}

  deliver(_index: number, result: OpResult, primary: boolean): void {
    this.done(result, primary);
  }
}

export class Lifecycle {
  private readonly pending = new Map<string, Pending>();
  private tracked = 0;
  /** Every instruction tracked up to this `order` was loaded at start or has had its forward pushed. */
  private forwardedThrough = 0;
  private readonly heap = new MinHeap<TimerEvent>();
  /** Events in the heap whose instruction is final. */
  private deadEvents = 0;
  private timer: TimerHandle | undefined;
  private timerAt = Infinity;
  private readonly forwards = new Map<string, ForwardItem[]>();
  private forwardsScheduled = false;
  private stopped = false;
  /** Tracked instructions by step, for the metrics. */
  private readonly bySteps = new Map<Step, number>(STEPS.map((s) => [s, 0]));

  constructor(
    private readonly router: ShardRouter,
    private readonly lookup: InstructionLookup,
    private readonly clock: Clock,
    private readonly shardMap: ShardMap,
    private readonly view: LiveView,
    private readonly log: Logger,
    private readonly querySchedulesMs: readonly number[],
    private readonly pushes: LifecyclePushes,
    private readonly counters: EngineCounters,
  ) {}

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Two-phase instructions not final, at `step`. */
  countAtStep(step: Step): number {
    return this.bySteps.get(step) ?? 0;
  }

  /** Pending instructions whose deadline is before `before`. */
  overdueCount(before: number): number {
    let n = 0;
    for (const p of this.pending.values()) if (p.entry.deadline < before) n++;
    return n;
  }

  /** Rebuild the timers of the pending instructions the shards recovered. */
  load(entries: PendingEntry[]): void {
    for (const e of entries) this.track(e, this.clock.now());
    this.forwardedThrough = this.tracked;
  }

  /**
   * Arm the queries and the expiry of an instruction's current step. The
   * awaited party is asked at `receiptQueryScheduleMs` after the step
   * began, as far as the schedule falls before the step's deadline; when
   * none of it does (a timeout shorter than the schedule's first entry),
   * it is asked once half way to the deadline, so no step expires without
   * a query (查询补偿).
   */
  private track(e: PendingEntry, now: number): void {
    const key = `${e.institution}/${e.id}`;
    const pending: Pending = { entry: e, shard: this.shardMap.shardOf(e.payer, e.payee), armed: 0, final: false, order: ++this.tracked };
    this.pending.set(key, pending);
    this.bySteps.set(e.step, this.bySteps.get(e.step)! + 1);
    let queries = 0;
    let lastQueryAt = Number.NEGATIVE_INFINITY;
    for (const offset of this.querySchedulesMs) {
      const at = e.stepAt + offset;
      if (at < e.deadline && at > e.stepAt) {
        queries++;
        lastQueryAt = Math.max(lastQueryAt, at);
        if (at > now) this.schedule(at, { key, pending, kind: 'query' });
      }
    }
    if (queries === 0) lastQueryAt = e.stepAt + Math.floor((e.deadline - e.stepAt) / 2);
    if (lastQueryAt <= now) {
      // Every query the step was due fell while the engine was down (queries are not stored): ask once, and
      // leave the awaited party a moment to answer before the step expires. A deadline still ahead is kept
      // where it can be; one that passed meanwhile gives the party time to reconnect first.
      const at = e.deadline > now ? Math.max(now, e.deadline - QUERY_GRACE_MS) : now + RECOVERY_QUERY_DELAY_MS;
      this.schedule(at, { key, pending, kind: 'query' });
      this.schedule(Math.max(e.deadline, at + QUERY_GRACE_MS), { key, pending, kind: 'expire' });
      return;
    }
    if (queries === 0) this.schedule(lastQueryAt, { key, pending, kind: 'query' });
    // A deadline that passed while the engine was down still comes after the query.
    this.schedule(Math.max(e.deadline, lastQueryAt + 1), { key, pending, kind: 'expire' });
  }

  /** An instruction reached a new step: its old timers die, the new step's are armed, and its awaited party is told. */
  private advance(key: string, p: Pending, next: PendingEntry): void {
    this.settle(key, p);
    this.track(next, this.clock.now());
    this.announce(next);
  }

  /** Tell the party a step awaits: the bank by a forward, the institution by a notification. */
  private announce(e: PendingEntry): void {
    if (e.step !== 'submission') {
      this.queueForward(e);
    } else if (this.pushes.listening(e.institution)) {
      this.pushes.notify({ op: 'notify', institution: e.institution, id: e.id, type: e.type, status: 'awaiting-submission' });
    }
  }

  private notifyFinal(institution: string, id: string, type: string, status: Notification['status'], batch: string | undefined, step: Step | undefined): void {
    if (!this.pushes.listening(institution)) return;
    const n: Notification = { op: 'notify', institution, id, type, status };
    if (batch !== undefined) n.batch = batch;
    const leg = status === 'declined' || status === 'expired' ? legOf(type, step) : undefined;
    if (leg !== undefined) n.leg = leg;
    this.pushes.notify(n);
  }

  /**
   * An operation whose commit was learned from its shard's disk after its
   * task failed. The resynchronisation already settled two-phase
   * instructions; what is left to tell is a single-phase clearing and a
   * reversal.
   */
  onRecovered(op: ShardOp, record: StoredInstruction): void {
    const institution = op[1];
    const id = op[2];
    if (op[0] === 'S' && record.s === 'cleared') {
      this.notifyFinal(institution, id, record.t, 'cleared', record.b, undefined);
    } else if (op[0] === 'R') {
      this.counters.instructions.add(`${record.t}|reversed`);
      this.notifyFinal(institution, id, record.t, 'reversed', record.rb, undefined);
    }
  }

  /**
   * Make the two-phase instructions of one shard agree with its disk,
   * after its worker died: some receipts, steps, expiries or submissions
   * may have been committed without the engine hearing of it.
   */
  resyncShard(shard: number, onDisk: readonly PendingEntry[]): void {
    const byKey = new Map(onDisk.map((e) => [`${e.institution}/${e.id}`, e]));
    for (const [key, p] of [...this.pending]) {
      if (p.shard !== shard) continue;
      const disk = byKey.get(key);
      if (disk !== undefined) {
        if (disk.step !== p.entry.step) this.advance(key, p, disk);
        continue;
      }
      this.settle(key, p);
      const found = this.lookup.find(p.entry.institution, p.entry.id);
      const status = found?.record.s;
      if (status === 'cleared' || status === 'declined' || status === 'expired') {
        this.notifyFinal(p.entry.institution, p.entry.id, p.entry.type, status, status === 'cleared' ? found?.record.b : undefined, found?.record.st);
      }
    }
    const now = this.clock.now();
    for (const [key, e] of byKey) {
      if (this.pending.has(key)) continue;
      this.track(e, now);
      this.announce(e);
    }
  }

  /**
   * Instructions awaiting a bank's answer, as forwards made one at a time
   * while the caller pulls them: what it is sent when it subscribes to
   * forwards, read from the pending map itself rather than a copy. The
   * map is iterated live, so an instruction that moves on before the
   * caller reaches it is left out; so is one whose forward push has not
   * gone out at this call, since that push reaches the new subscriber too.
   */
  pendingForwards(bank: string): Iterator<ForwardItem> {
    return forwardsOf(this.pending.values(), bank, this.forwardedThrough);
  }

  /** React to a committed task: the router calls this before it answers anyone. */
  onCommitted(task: ApplyTask, result: ApplyResult): void {
    for (let i = 0; i < task.ops.length; i++) {
      if (result.outcomes[i] !== null) continue;
      const op = task.ops[i]!;
      const institution = op[1];
      const id = op[2];
      switch (op[0]) {
        case 'S': {
          const timeoutMs = op[8];
          if (timeoutMs > 0) {
            const e: PendingEntry = {
              institution,
              id,
              type: op[3],
              payer: op[4],
              payee: op[5],
              amount: op[6],
              acceptedAt: task.now,
              deadline: task.now + timeoutMs,
              step: firstStep(op[3]),
              stepAt: task.now,
              timeoutMs,
            };
            if (op[7] !== null) e.reference = op[7];
            this.track(e, task.now);
            this.view.addPending(task.shard, e.payer, BigInt(e.amount));
            this.queueForward(e);
          } else {
            this.notifyFinal(institution, id, op[3], 'cleared', task.batch, undefined);
          }
          break;
        }
        case 'V':
        case 'U':
        case 'P': {
          const key = `${institution}/${id}`;
          const p = this.pending.get(key);
          assert(p !== undefined, `an instruction at a step ${key} left no trace`);
          const next: PendingEntry = { ...p.entry, step: op[0] === 'V' ? 'submission' : op[0] === 'U' ? 'receipt' : 'payee', stepAt: task.now, deadline: task.now + p.entry.timeoutMs };
          if (op[0] === 'U') next.verification = op[3]!;
          this.advance(key, p, next);
          break;
        }
        case 'C':
        case 'D':
        case 'X': {
          const key = `${institution}/${id}`;
          const p = this.pending.get(key);
          assert(p !== undefined, `a pending instruction ${key} left no trace`);
          this.settle(key, p);
          this.view.addPending(p.shard, p.entry.payer, -BigInt(p.entry.amount));
          const status = op[0] === 'C' ? 'cleared' : op[0] === 'D' ? 'declined' : 'expired';
          this.counters.instructions.add(`${p.entry.type}|${status}`);
          this.notifyFinal(institution, id, p.entry.type, status, status === 'cleared' ? task.batch : undefined, p.entry.step);
          if (status === 'expired') this.log.info({ institution, id, payer: p.entry.payer, step: p.entry.step }, 'instruction expired without an answer');
          break;
        }
        case 'R': {
          const type = this.lookup.find(institution, id)?.record.t ?? 'unknown';
          this.counters.instructions.add(`${type}|reversed`);
          this.notifyFinal(institution, id, type, 'reversed', task.batch, undefined);
          break;
        }
      }
    }
  }

  private queueForward(e: PendingEntry): void {
    const bank = awaitedBank(e, e.step);
    assert(bank !== undefined, 'a forward for a step that awaits no bank');
    let list = this.forwards.get(bank);
    if (list === undefined) {
      list = [];
      this.forwards.set(bank, list);
    }
    list.push(forwardOf(e));
    if (!this.forwardsScheduled) {
      this.forwardsScheduled = true;
      // Everything committed in this turn goes to each bank as one frame.
      this.clock.defer(() => {
        this.forwardsScheduled = false;
        for (const [b, items] of this.forwards) this.pushes.forward(b, items);
        this.forwards.clear();
        this.forwardedThrough = this.tracked;
      });
    }
  }

  /** An instruction leaves its step (final, or on to the next): it leaves the map, and its timers are dead. */
  private settle(key: string, p: Pending): void {
    this.pending.delete(key);
    this.bySteps.set(p.entry.step, this.bySteps.get(p.entry.step)! - 1);
    p.final = true;
    this.deadEvents += p.armed;
    p.armed = 0;
    if (this.deadEvents >= HEAP_DEAD_EVENTS_MIN && 2 * this.deadEvents > this.heap.size) {
      this.heap.retain((ev) => !ev.pending.final);
      this.deadEvents = 0;
    }
  }

  /** Timer events in the heap, live and dead: bounded by twice the live ones (or HEAP_DEAD_EVENTS_MIN). */
  get timerEvents(): number {
    return this.heap.size;
  }

  private schedule(at: number, event: TimerEvent): void {
    event.pending.armed++;
    this.heap.push(at, event);
    if (at < this.timerAt) this.arm(at);
  }

  private arm(at: number): void {
    if (this.stopped) return;
    if (this.timer !== undefined) this.clock.cancel(this.timer);
    this.timerAt = at;
    this.timer = this.clock.after(Math.max(0, at - this.clock.now()), () => this.fire());
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = this.clock.now();
    while ((this.heap.peekKey() ?? Infinity) <= now) {
      const ev = this.heap.pop()!;
      const p = ev.pending;
      if (p.final) {
        this.deadEvents--;
        continue;
      }
      p.armed--;
      if (ev.kind === 'query') {
        // 查询补偿: ask the awaited party what became of it; a bank answers with a receipt.
        const e = p.entry;
        this.counters.queriesSent++;
        this.pushes.query({ bank: awaitedBank(e, e.step), message: { op: 'query', institution: e.institution, id: e.id, type: e.type, step: e.step } });
      } else {
        this.router.lifecycle(p.shard, ['X', p.entry.institution, p.entry.id, null, p.entry.step], new OneShot((r) => this.afterExpiry(ev.key, p, r)), 0);
      }
    }
    const next = this.heap.peekKey();
    if (next !== undefined) this.arm(next);
  }

  private afterExpiry(key: string, p: Pending, r: OpResult): void {
    if (r.kind === 'failed') {
      // Not committed: try again shortly, the deadline has passed and still binds.
      this.log.warn({ key, code: r.failure.code }, 'expiry not committed; retrying');
      if (!p.final) this.schedule(this.clock.now() + EXPIRY_RETRY_MS, { key, pending: p, kind: 'expire' });
    }
  }

  /** Receipts from a bank (the payer bank's, or the payee bank's on a payout's second leg), over HTTP or WebSocket. */
  receipts(bank: string, raws: readonly unknown[], onDone: (results: ReceiptResult[]) => void): void {
    const batch = new ReceiptBatch(bank, raws.length, onDone);
    for (let i = 0; i < raws.length; i++) {
      const item = parseReceipt(raws[i]);
      if (isFailure(item)) {
        batch.fail(i, rawParty(raws[i]), item);
        continue;
      }
      batch.items[i] = item;
      const p = this.pending.get(`${item.institution}/${item.id}`);
      let held: Held;
      let shard: number;
      let storedBatch: string | undefined;
      if (p !== undefined) {
        held = { type: p.entry.type, payer: p.entry.payer, payee: p.entry.payee, status: p.entry.step === 'submission' ? 'awaiting-submission' : 'pending', step: p.entry.step };
        shard = p.shard;
      } else {
        // Not tracked: final, or committed and its commit not yet here (its task is still being
        // reported, or failed and its shard is being resynchronised): the router orders the receipt after it.
        const found = this.lookup.find(item.institution, item.id);
        if (found === undefined) {
          batch.fail(i, item, failure('NOT_FOUND', `no instruction '${item.id}' of institution '${item.institution}'`));
          continue;
        }
        held = heldOf(found.record);
        shard = found.shard;
        storedBatch = found.record.b;
      }
      if (bank !== held.payer && bank !== held.payee) {
        batch.fail(i, item, failure('FORBIDDEN', `bank '${bank}' neither pays nor receives this instruction`));
        continue;
      }
      const d = decideReceipt(held, bank, item.outcome);
      if ('kind' in d) {
        batch.held[i] = held;
        batch.kinds[i] = d.kind;
        this.router.lifecycle(shard, [d.kind, item.institution, item.id, d.kind === 'D' ? item.reason : null, held.step ?? 'receipt'], batch, i);
      } else {
        batch.answer(i, item, held, storedBatch);
      }
    }
    if (raws.length === 0) onDone([]);
  }

  /**
   * The payment submission (支付提交) of an authenticated payment: the
   * payer's verification, forwarded to the payer bank, whose confirm or
   * decline then finishes it. A repeat with the same verification is a
   * duplicate; any other submission out of its step is refused.
   */
  submitVerification(institution: string, id: string, verification: unknown, onDone: (result: ReceiptResult) => void): void {
    const fail = (f: Failure, status = 'rejected'): void => onDone(failedReceipt({ institution, id }, f, status));
    if (typeof verification !== 'string' || verification.length === 0 || [...verification].length > VERIFICATION_LENGTH_MAX || BAD_TEXT.test(verification)) {
      fail(failure('INVALID_FIELD', `verification must be text of 1 to ${VERIFICATION_LENGTH_MAX} characters`, 'verification'));
      return;
    }
    const answerStored = (status: string, step: Step | undefined, stored: string | undefined, type: string): void => {
      if (status === 'missing') fail(failure('NOT_FOUND', `no instruction '${id}' of institution '${institution}'`));
      else if (type !== 'authenticated') fail(failure('NOT_PENDING', 'only an authenticated payment takes a payment submission'), status);
      else if (stored === verification) onDone({ institution, id, status, duplicate: true });
      else if (status === 'pending' && step === 'verify') fail(failure('NOT_PENDING', 'the payer bank has not verified the payer yet'), status);
      else fail(failure('NOT_PENDING', stored === undefined ? `the instruction is already ${status}` : 'a submission with another verification was taken'), status);
    };
    const p = this.pending.get(`${institution}/${id}`);
    const found = p === undefined ? this.lookup.find(institution, id) : undefined;
    if (p === undefined && found === undefined) {
      answerStored('missing', undefined, undefined, '');
      return;
    }
    const type = p?.entry.type ?? found!.record.t;
    const step = p?.entry.step ?? found!.record.st;
    const awaiting = p !== undefined ? p.entry.step === 'submission' : found!.record.s === 'awaiting-submission';
    if (!awaiting) {
      answerStored(p !== undefined ? 'pending' : found!.record.s, step, p !== undefined ? p.entry.verification : found!.record.vf, type);
      return;
    }
    this.router.lifecycle(
      p?.shard ?? found!.shard,
      ['U', institution, id, verification],
      new OneShot((r, primary) => {
        if (r.kind === 'applied') {
          const answer: ReceiptResult = { institution, id, status: 'pending' };
          if (!primary) answer.duplicate = true;
          onDone(answer);
        } else if (r.kind === 'failed') fail(r.failure);
        else answerStored(r.outcome.status, r.outcome.step, r.outcome.verification, type);
      }),
      0,
    );
  }

  /**
   * Manual result of a query compensation, by an operator: the answer the
   * current step awaits (a payout's payer leg confirmed goes on to its
   * payee bank).
   */
  resolve(institution: string, id: string, outcome: 'confirm' | 'decline', operator: string): Promise<Failure | undefined> {
    const key = `${institution}/${id}`;
    const p = this.pending.get(key);
    this.log.info({ operator, institution, id, outcome }, 'operator resolves a pending instruction');
    if (p === undefined) {
      const found = this.lookup.find(institution, id);
      if (found === undefined) return Promise.resolve(failure('NOT_FOUND', `no instruction '${id}' of institution '${institution}'`));
      const wanted = outcome === 'confirm' ? 'cleared' : 'declined';
      return Promise.resolve(found.record.s === wanted ? undefined : failure('NOT_PENDING', `the instruction is already ${found.record.s}`));
    }
    // An operator's decline ends the instruction at whatever step it has reached when it lands; a confirm
    // applies only to the step it answers (P to the payer leg, C to a final step), like a bank's.
    const step = p.entry.step;
    if (outcome === 'decline') return this.runOne(p.shard, ['D', institution, id, `resolved by operator ${operator}`], 'declined');
    if (step === 'submission') return Promise.resolve(failure('NOT_PENDING', "the payment awaits the institution's submission"));
    if (step === 'payer') return this.runOne(p.shard, ['P', institution, id, null], 'pending');
    return this.runOne(p.shard, ['C', institution, id, null], 'cleared');
  }

  /** Reverse a cleared instruction with a correcting entry in the open batch (差错处理). Idempotent. */
  reverse(institution: string, id: string, operator: string): Promise<Failure | undefined> {
    const found = this.lookup.find(institution, id);
    if (found === undefined) return Promise.resolve(failure('NOT_FOUND', `no instruction '${id}' of institution '${institution}'`));
    this.log.info({ operator, institution, id }, 'operator reverses an instruction');
    // Only a cleared instruction takes a correcting entry; nothing else reserves the payee's debit.
    if (found.record.s === 'reversed') return Promise.resolve(undefined);
    if (found.record.s !== 'cleared') return Promise.resolve(failure('NOT_PENDING', `the instruction is ${found.record.s}`));
    // The payee pays the amount back: a debit against its cap like any other.
    return this.runOne(found.shard, ['R', institution, id, null], 'reversed', { bank: found.record.q, amount: found.record.a });
  }

  private runOne(shard: number, op: LifecycleOp, wanted: string, debit?: { bank: string; amount: number }): Promise<Failure | undefined> {
    return new Promise((resolve) => {
      this.router.lifecycle(
        shard,
        op,
        new OneShot((r) => {
          if (r.kind === 'applied') resolve(undefined);
          else if (r.kind === 'failed') resolve(r.failure);
          else if (r.outcome.status === 'missing') resolve(failure('NOT_FOUND', 'no such instruction'));
          else resolve(r.outcome.status === wanted ? undefined : failure('NOT_PENDING', `the instruction is ${r.outcome.status}`));
        }),
        0,
        debit,
      );
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.cancel(this.timer);
  }
}
