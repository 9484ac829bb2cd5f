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
import { ID_PATTERN, isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';
import { MinHeap } from '../core/min-heap.js';
import type { ShardMap } from '../core/shard-map.js';
import { failure, type Failure } from '../core/failures.js';
import { AnswerList, type OpResult, type OutcomeTarget, type ShardRouter } from '../router/shard-router.js';
import type { ApplyResult, ApplyTask, LifecycleOp, PendingEntry, ShardOp } from '../shard/tasks.js';
import type { Clock, InstructionLookup, TimerHandle } from '../core/ports.js';
import type { StoredInstruction } from '../core/stored-instruction.js';
import type { EngineCounters } from '../core/counters.js';
import type { LiveView } from '../view/live-view.js';
import type { Logger } from '../core/log.js';

/** A two-phase instruction as forwarded to its payer bank. */
export interface ForwardItem {
  institution: string;
  id: string;
  type: string;
  payer: string;
  payee: string;
  amount: number;
  reference?: string;
  acceptedAt: string;
  deadline: string;
}

export interface Notification {
  op: 'notify';
  institution: string;
  id: string;
  status: 'cleared' | 'declined' | 'expired' | 'reversed';
  batch?: string;
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
  query(bank: string, institution: string, id: string): void;
  notify(n: Notification): void;
  /** Whether anyone listens to an institution's notifications (so none are built for nobody). */
  listening(institution: string): boolean;
}

interface Pending {
  entry: PendingEntry;
  shard: number;
  /** Its events still in the timer heap. */
  armed: number;
  /** No longer pending: its events in the heap are dead and are dropped. */
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

type Outcome = 'confirm' | 'decline';

/** How soon an expiry that could not be committed is tried again. */
const EXPIRY_RETRY_MS = 1000;

const RECEIPT_KEYS = new Set(['institution', 'id', 'outcome', 'reason']);
const REASON_LENGTH_MAX = 140;
const BAD_TEXT = /\p{Cc}|\p{Cs}/u;

function forwardOf(e: PendingEntry): ForwardItem {
  const f: ForwardItem = {
    institution: e.institution,
    id: e.id,
    type: e.type,
    payer: e.payer,
    payee: e.payee,
    amount: e.amount,
    acceptedAt: new Date(e.acceptedAt).toISOString(),
    deadline: new Date(e.deadline).toISOString(),
  };
  if (e.reference !== undefined) f.reference = e.reference;
  return f;
}

/** The forwards of `bank` among `pending` tracked up to `orderMax`, made as they are pulled. */
function* forwardsOf(pending: Iterator<Pending>, bank: string, orderMax: number): Generator<ForwardItem, void, undefined> {
  for (let next = pending.next(); next.done !== true; next = pending.next()) {
    const p = next.value;
    if (p.entry.payer === bank && p.order <= orderMax) yield forwardOf(p.entry);
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
  if (outcome !== 'confirm' && outcome !== 'decline') return failure('INVALID_FIELD', 'outcome must be confirm or decline', 'outcome');
  if (reason !== undefined && (typeof reason !== 'string' || [...reason].length > REASON_LENGTH_MAX || BAD_TEXT.test(reason))) {
    return failure('INVALID_FIELD', `reason must be text of at most ${REASON_LENGTH_MAX} characters`, 'reason');
  }
  return { institution, id, outcome, reason: typeof reason === 'string' && reason.length > 0 ? reason : null };
}

function isFailure(x: ReceiptItem | Failure): x is Failure {
  return (x as Failure).code !== undefined;
}

/** Answers for a list of receipts, filled in as shards commit. */
class ReceiptBatch extends AnswerList<ReceiptResult> implements OutcomeTarget {
  readonly items: (ReceiptItem | undefined)[];

  constructor(size: number, onDone: (results: ReceiptResult[]) => void) {
    super(size, onDone);
    this.items = new Array(size);
  }

  fail(index: number, item: ReceiptItem | undefined, f: Failure, status = 'rejected'): void {
    const r: ReceiptResult = item === undefined ? { status } : { institution: item.institution, id: item.id, status };
    r.code = f.code;
    r.message = f.message;
    if (f.field !== undefined) r.field = f.field;
    this.settle(index, r);
  }

  deliver(index: number, result: OpResult, primary: boolean): void {
    const item = this.items[index]!;
    const wanted = item.outcome === 'confirm' ? 'cleared' : 'declined';
    if (result.kind === 'applied') {
      const r: ReceiptResult = { institution: item.institution, id: item.id, status: wanted };
      if (wanted === 'cleared') r.batch = result.batch;
      if (!primary) r.duplicate = true;
      this.settle(index, r);
    } else if (result.kind === 'found') {
      answerFromStored(this, index, item, result.outcome.status, result.outcome.batch);
    } else {
      this.fail(index, item, result.failure);
    }
  }
}

/** A receipt for an instruction that is no longer pending: a repeat of its outcome, or a contradiction. */
function answerFromStored(batch: ReceiptBatch, index: number, item: ReceiptItem, status: string, storedBatch: string | undefined): void {
  const wanted = item.outcome === 'confirm' ? 'cleared' : 'declined';
  if (status === 'missing') {
    batch.fail(index, item, failure('NOT_FOUND', `no instruction '${item.id}' of institution '${item.institution}'`));
  } else if (status === wanted || (wanted === 'cleared' && status === 'reversed')) {
    const r: ReceiptResult = { institution: item.institution, id: item.id, status, duplicate: true };
    if (storedBatch !== undefined) r.batch = storedBatch;
    batch.settle(index, r);
  } else {
    batch.fail(index, item, failure('NOT_PENDING', `the instruction is already ${status}`), status);
  }
}

/** One operation's answer, for the operator's single calls. */
class OneShot implements OutcomeTarget {
  constructor(private readonly done: (result: OpResult) => void) {}

  deliver(_index: number, result: OpResult): void {
    this.done(result);
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
   * Arm an instruction's queries and its expiry. The payer bank is asked
   * at `receiptQueryScheduleMs` after acceptance, as far as the schedule
   * falls before the deadline; when none of it does (a timeout shorter
   * than the schedule's first entry), it is asked once half way to the
   * deadline, so no instruction expires without a query (查询补偿).
   */
  private track(e: PendingEntry, now: number): void {
    const key = `${e.institution}/${e.id}`;
    const pending: Pending = { entry: e, shard: this.shardMap.shardOf(e.payer, e.payee), armed: 0, final: false, order: ++this.tracked };
    this.pending.set(key, pending);
    let queries = 0;
    let lastQueryAt = Number.NEGATIVE_INFINITY;
    for (const offset of this.querySchedulesMs) {
      const at = e.acceptedAt + offset;
      if (at < e.deadline && at > e.acceptedAt) {
        queries++;
        lastQueryAt = Math.max(lastQueryAt, at);
        if (at > now) this.schedule(at, { key, pending, kind: 'query' });
      }
    }
    if (queries === 0) {
      lastQueryAt = Math.max(now, e.acceptedAt + Math.floor((e.deadline - e.acceptedAt) / 2));
      this.schedule(lastQueryAt, { key, pending, kind: 'query' });
    }
    // A deadline that passed while the engine was down still comes after the query.
    this.schedule(Math.max(e.deadline, lastQueryAt + 1), { key, pending, kind: 'expire' });
  }

  /**
   * An operation whose commit was learned from its shard's disk after its
   * task failed. The resynchronisation already settled pending
   * instructions; what is left to tell is a single-phase clearing and a
   * reversal.
   */
  onRecovered(op: ShardOp, record: StoredInstruction): void {
    const institution = op[1];
    const id = op[2];
    if (op[0] === 'S' && record.s === 'cleared' && this.pushes.listening(institution)) {
      this.pushes.notify({ op: 'notify', institution, id, status: 'cleared', batch: record.b! });
    } else if (op[0] === 'R') {
      this.counters.instructions.add(`${record.t}|reversed`);
      if (this.pushes.listening(institution)) this.pushes.notify({ op: 'notify', institution, id, status: 'reversed', batch: record.rb! });
    }
  }

  /**
   * Make the pending instructions of one shard agree with its disk, after
   * its worker died: some receipts, expiries or submissions may have been
   * committed without the engine hearing of it.
   */
  resyncShard(shard: number, onDisk: readonly PendingEntry[]): void {
    const keys = new Set(onDisk.map((e) => `${e.institution}/${e.id}`));
    for (const [key, p] of [...this.pending]) {
      if (p.shard !== shard || keys.has(key)) continue;
      this.settle(key, p);
      const found = this.lookup.find(p.entry.institution, p.entry.id);
      const status = found?.record.s;
      if ((status === 'cleared' || status === 'declined' || status === 'expired') && this.pushes.listening(p.entry.institution)) {
        const n: Notification = { op: 'notify', institution: p.entry.institution, id: p.entry.id, status };
        if (status === 'cleared' && found?.record.b !== undefined) n.batch = found.record.b;
        this.pushes.notify(n);
      }
    }
    const now = this.clock.now();
    for (const e of onDisk) {
      if (this.pending.has(`${e.institution}/${e.id}`)) continue;
      this.track(e, now);
      this.queueForward(e);
    }
  }

  /**
   * Pending instructions of one payer bank, as forwards made one at a time
   * while the caller pulls them: what it is sent when it subscribes to
   * forwards, read from the pending map itself rather than a copy. The
   * map is iterated live, so an instruction that becomes final before the
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
            const e: PendingEntry = { institution, id, type: op[3], payer: op[4], payee: op[5], amount: op[6], acceptedAt: task.now, deadline: task.now + timeoutMs };
            if (op[7] !== null) e.reference = op[7];
            this.track(e, task.now);
            this.view.addPending(task.shard, e.payer, BigInt(e.amount));
            this.queueForward(e);
          } else if (this.pushes.listening(institution)) {
            this.pushes.notify({ op: 'notify', institution, id, status: 'cleared', batch: task.batch });
          }
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
          if (this.pushes.listening(institution)) {
            const n: Notification = { op: 'notify', institution, id, status };
            if (status === 'cleared') n.batch = task.batch;
            this.pushes.notify(n);
          }
          if (status === 'expired') this.log.info({ institution, id, payer: p.entry.payer }, 'instruction expired without a receipt');
          break;
        }
        case 'R':
          this.counters.instructions.add(`${this.lookup.find(institution, id)?.record.t ?? 'unknown'}|reversed`);
          if (this.pushes.listening(institution)) this.pushes.notify({ op: 'notify', institution, id, status: 'reversed', batch: task.batch });
          break;
      }
    }
  }

  private queueForward(e: PendingEntry): void {
    let list = this.forwards.get(e.payer);
    if (list === undefined) {
      list = [];
      this.forwards.set(e.payer, list);
    }
    list.push(forwardOf(e));
    if (!this.forwardsScheduled) {
      this.forwardsScheduled = true;
      // Everything committed in this turn goes to each bank as one frame.
      this.clock.defer(() => {
        this.forwardsScheduled = false;
        for (const [bank, items] of this.forwards) this.pushes.forward(bank, items);
        this.forwards.clear();
        this.forwardedThrough = this.tracked;
      });
    }
  }

  /** An instruction is final: it leaves the pending map, and its timers are dead. */
  private settle(key: string, p: Pending): void {
    this.pending.delete(key);
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
        // 查询补偿: ask the payer bank what became of it; it answers with a receipt.
        this.counters.queriesSent++;
        this.pushes.query(p.entry.payer, p.entry.institution, p.entry.id);
      } else {
        this.router.lifecycle(p.shard, ['X', p.entry.institution, p.entry.id, null], new OneShot((r) => this.afterExpiry(ev.key, p, r)), 0);
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

  /** Receipts from a payer bank, over HTTP or WebSocket. */
  receipts(bank: string, raws: readonly unknown[], onDone: (results: ReceiptResult[]) => void): void {
    const batch = new ReceiptBatch(raws.length, onDone);
    for (let i = 0; i < raws.length; i++) {
      const item = parseReceipt(raws[i]);
      if (isFailure(item)) {
        batch.fail(i, undefined, item);
        continue;
      }
      batch.items[i] = item;
      const key = `${item.institution}/${item.id}`;
      const p = this.pending.get(key);
      if (p !== undefined) {
        if (p.entry.payer !== bank) {
          batch.fail(i, item, failure('FORBIDDEN', 'only the payer bank answers for an instruction'));
          continue;
        }
        this.router.lifecycle(p.shard, [item.outcome === 'confirm' ? 'C' : 'D', item.institution, item.id, item.reason], batch, i);
        continue;
      }
      const found = this.lookup.find(item.institution, item.id);
      if (found === undefined || (found.record.p !== bank && found.record.q !== bank)) {
        batch.fail(i, item, failure('NOT_FOUND', `no instruction '${item.id}' of institution '${item.institution}'`));
      } else if (found.record.p !== bank) {
        batch.fail(i, item, failure('FORBIDDEN', 'only the payer bank answers for an instruction'));
      } else if (found.record.s === 'pending') {
        // Committed as pending, but its commit has not reached this module yet (its task is still
        // being reported, or failed and its shard is being resynchronised): the router orders the
        // receipt after it.
        this.router.lifecycle(found.shard, [item.outcome === 'confirm' ? 'C' : 'D', item.institution, item.id, item.reason], batch, i);
      } else {
        answerFromStored(batch, i, item, found.record.s, found.record.b);
      }
    }
    if (raws.length === 0) onDone([]);
  }

  /** Manual result of a query compensation, by an operator. */
  resolve(institution: string, id: string, outcome: Outcome, operator: string): Promise<Failure | undefined> {
    const key = `${institution}/${id}`;
    const p = this.pending.get(key);
    this.log.info({ operator, institution, id, outcome }, 'operator resolves a pending instruction');
    if (p === undefined) {
      const found = this.lookup.find(institution, id);
      if (found === undefined) return Promise.resolve(failure('NOT_FOUND', `no instruction '${id}' of institution '${institution}'`));
      const wanted = outcome === 'confirm' ? 'cleared' : 'declined';
      return Promise.resolve(found.record.s === wanted ? undefined : failure('NOT_PENDING', `the instruction is already ${found.record.s}`));
    }
    const op: LifecycleOp = [outcome === 'confirm' ? 'C' : 'D', institution, id, outcome === 'decline' ? `resolved by operator ${operator}` : null];
    return this.runOne(p.shard, op, outcome === 'confirm' ? 'cleared' : 'declined');
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
