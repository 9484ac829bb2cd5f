/**
 * The rules of the five business kinds, as pure functions and against a
 * real shard ledger: who may answer at each step, what a repeat or a
 * contradiction gets, which lifecycle operation applies to which stored
 * state, the mandate admission rule, and the mandate book's durability
 * order (a revocation refuses at once; an activation allows only once
 * durable).
 */

import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { failure } from '../../src/core/failures.js';
import type { Clock, MandateStore, TimerHandle } from '../../src/core/ports.js';
import { firstStep, lifecycleApplies, lifecycleLanded, type LifecycleKind, type StoredInstruction } from '../../src/core/stored-instruction.js';
import { decideReceipt, type Held } from '../../src/lifecycle/lifecycle.js';
import { mandateRefusal, validateMandateTerms, type MandateRecord } from '../../src/mandates/mandate.js';
import { MandateBook } from '../../src/mandates/mandate-book.js';
import { ShardLedger } from '../../src/shard/ledger.js';
import type { ApplyTask, ShardOp, SubmitOp } from '../../src/shard/tasks.js';
import { openShardDbs, type ShardDbs } from '../../src/store/schema.js';
import { tempDirs } from '../helpers/engine-process.js';

const held = (type: string, status: string, step: Held['step']): Held => ({ type, payer: 'ICBC', payee: 'CMB', status, step });

describe('decideReceipt: who may answer at each step', () => {
  it('routes the answer of the current step to its operation', () => {
    expect(decideReceipt(held('authenticated', 'pending', 'verify'), 'ICBC', 'verify')).toEqual({ kind: 'V' });
    expect(decideReceipt(held('authenticated', 'pending', 'verify'), 'ICBC', 'confirm')).toEqual({ kind: 'C' });
    expect(decideReceipt(held('authenticated', 'pending', 'verify'), 'ICBC', 'decline')).toEqual({ kind: 'D' });
    expect(decideReceipt(held('authenticated', 'pending', 'receipt'), 'ICBC', 'confirm')).toEqual({ kind: 'C' });
    expect(decideReceipt(held('payout', 'pending', 'payer'), 'ICBC', 'confirm')).toEqual({ kind: 'P' });
    expect(decideReceipt(held('payout', 'pending', 'payer'), 'ICBC', 'decline')).toEqual({ kind: 'D' });
    expect(decideReceipt(held('payout', 'pending', 'payee'), 'CMB', 'confirm')).toEqual({ kind: 'C' });
    expect(decideReceipt(held('payout', 'pending', 'payee'), 'CMB', 'decline')).toEqual({ kind: 'D' });
    expect(decideReceipt(held('gateway', 'pending', 'receipt'), 'ICBC', 'decline')).toEqual({ kind: 'D' });
  });

  it('refuses the bank of another step, and verify outside authenticated payments', () => {
    const forbidden = expect.objectContaining({ code: 'FORBIDDEN' });
    expect(decideReceipt(held('payout', 'pending', 'payer'), 'CMB', 'confirm')).toEqual(forbidden);
    expect(decideReceipt(held('payout', 'pending', 'payee'), 'ICBC', 'decline')).toEqual(forbidden);
    expect(decideReceipt(held('gateway', 'pending', 'receipt'), 'CMB', 'confirm')).toEqual(forbidden);
    expect(decideReceipt(held('authenticated', 'pending', 'verify'), 'CMB', 'verify')).toEqual(forbidden);
    expect(decideReceipt(held('gateway', 'pending', 'receipt'), 'ICBC', 'verify')).toEqual(expect.objectContaining({ code: 'INVALID_FIELD', field: 'outcome' }));
  });

  it('answers a repeat of an answer already taken as a duplicate, and a contradiction NOT_PENDING', () => {
    const dup = { duplicate: true };
    const notPending = expect.objectContaining({ code: 'NOT_PENDING' });
    // Steps already passed.
    expect(decideReceipt(held('payout', 'pending', 'payee'), 'ICBC', 'confirm')).toEqual(dup);
    expect(decideReceipt(held('authenticated', 'awaiting-submission', 'submission'), 'ICBC', 'verify')).toEqual(dup);
    expect(decideReceipt(held('authenticated', 'pending', 'receipt'), 'ICBC', 'verify')).toEqual(dup);
    // The institution's submission is awaited: the bank cannot finish it.
    expect(decideReceipt(held('authenticated', 'awaiting-submission', 'submission'), 'ICBC', 'confirm')).toEqual(notPending);
    // Final.
    expect(decideReceipt(held('gateway', 'cleared', 'receipt'), 'ICBC', 'confirm')).toEqual(dup);
    expect(decideReceipt(held('gateway', 'cleared', 'receipt'), 'ICBC', 'decline')).toEqual(notPending);
    // Final, but still only the bank whose answer the kind takes: the payee of a gateway payment never answers.
    expect(decideReceipt(held('gateway', 'cleared', 'receipt'), 'CMB', 'confirm')).toEqual(expect.objectContaining({ code: 'FORBIDDEN' }));
    expect(decideReceipt(held('payout', 'expired', 'payee'), 'ICBC', 'confirm')).toEqual(dup);
    expect(decideReceipt(held('gateway', 'declined', 'receipt'), 'ICBC', 'decline')).toEqual(dup);
    expect(decideReceipt(held('gateway', 'declined', 'receipt'), 'ICBC', 'confirm')).toEqual(notPending);
    expect(decideReceipt(held('gateway', 'expired', 'receipt'), 'ICBC', 'confirm')).toEqual(notPending);
    expect(decideReceipt(held('payout', 'declined', 'payee'), 'ICBC', 'confirm')).toEqual(dup);
    expect(decideReceipt(held('payout', 'declined', 'payer'), 'ICBC', 'confirm')).toEqual(notPending);
    // A verify is a repeat only where one was taken: not after a confirm or decline in the verify step itself.
    expect(decideReceipt(held('authenticated', 'cleared', 'receipt'), 'ICBC', 'verify')).toEqual(dup);
    expect(decideReceipt(held('authenticated', 'cleared', 'verify'), 'ICBC', 'verify')).toEqual(notPending);
    expect(decideReceipt(held('authenticated', 'declined', 'verify'), 'ICBC', 'verify')).toEqual(notPending);
    expect(decideReceipt(held('authenticated', 'expired', 'submission'), 'ICBC', 'verify')).toEqual(dup);
  });
});

const record = (t: StoredInstruction['t'], s: StoredInstruction['s'], st?: StoredInstruction['st'], vf?: string): StoredInstruction => {
  const r: StoredInstruction = { t, p: 'ICBC', q: 'CMB', a: 100, s, at: 1, tp: 1, to: 1000, dl: 1001 };
  if (st !== undefined) r.st = st;
  if (vf !== undefined) r.vf = vf;
  if (s === 'cleared') r.b = 'B';
  return r;
};

describe('lifecycle operations against stored states', () => {
  it('apply only to the state each needs', () => {
    const cases: [LifecycleKind, StoredInstruction, boolean][] = [
      ['V', record('authenticated', 'pending', 'verify'), true],
      ['V', record('authenticated', 'pending', 'receipt'), false],
      ['U', record('authenticated', 'awaiting-submission', 'submission'), true],
      ['U', record('authenticated', 'pending', 'verify'), false],
      ['P', record('payout', 'pending', 'payer'), true],
      ['P', record('payout', 'pending', 'payee'), false],
      ['C', record('payout', 'pending', 'payer'), false],
      ['C', record('payout', 'pending', 'payee'), true],
      ['C', record('gateway', 'pending'), true],
      ['C', record('authenticated', 'awaiting-submission', 'submission'), false],
      ['D', record('authenticated', 'awaiting-submission', 'submission'), true],
      ['X', record('authenticated', 'awaiting-submission', 'submission'), true],
      ['X', record('gateway', 'cleared'), false],
      ['R', record('gateway', 'cleared'), true],
    ];
    for (const [kind, rec, applies] of cases) expect([kind, rec.s, rec.st, lifecycleApplies(kind, rec)]).toEqual([kind, rec.s, rec.st, applies]);
  });

  it('decided at one step, do not land on the next', () => {
    // A payer's decline queued behind its own payer-leg confirm must not decline the payee leg.
    expect(lifecycleApplies('D', record('payout', 'pending', 'payer'), 'payer')).toBe(true);
    expect(lifecycleApplies('D', record('payout', 'pending', 'payee'), 'payer')).toBe(false);
    // A verify step's decline or expiry must not end the submission step that the verify began.
    expect(lifecycleApplies('D', record('authenticated', 'awaiting-submission', 'submission'), 'verify')).toBe(false);
    expect(lifecycleApplies('X', record('authenticated', 'awaiting-submission', 'submission'), 'verify')).toBe(false);
    expect(lifecycleApplies('X', record('authenticated', 'awaiting-submission', 'submission'), 'submission')).toBe(true);
  });

  it('are read as landed only from the state they leave', () => {
    expect(lifecycleLanded('U', null, record('authenticated', 'pending', 'receipt', 'code-1'))).toBe(false);
    expect(lifecycleLanded('U', 'code-1', record('authenticated', 'pending', 'receipt', 'code-1'))).toBe(true);
    expect(lifecycleLanded('U', 'code-2', record('authenticated', 'pending', 'receipt', 'code-1'))).toBe(false);
    expect(lifecycleLanded('P', null, record('payout', 'pending', 'payee'))).toBe(true);
    expect(lifecycleLanded('P', null, record('payout', 'pending', 'payer'))).toBe(false);
    expect(lifecycleLanded('V', null, record('authenticated', 'awaiting-submission', 'submission'))).toBe(true);
  });

  it('start each kind at its first step', () => {
    expect([firstStep('authenticated'), firstStep('payout'), firstStep('gateway'), firstStep('agreement'), firstStep('entrusted')]).toEqual(['verify', 'payer', 'receipt', 'receipt', 'receipt']);
  });
});

const dirs = tempDirs();
const opened: ShardDbs[] = [];
afterAll(() => dirs.cleanup());
afterEach(async () => {
  for (const dbs of opened.splice(0)) await dbs.env.close();
});

function submit(id: string, type: SubmitOp[3], mandate: string | null = null): SubmitOp {
  return ['S', 'PI0001', id, type, 'ICBC', 'CMB', 500, null, 10_000, mandate];
}

function task(ops: ShardOp[], now: number): ApplyTask {
  return { kind: 'apply', shard: 0, batch: '20261127-001', now, ops };
}

describe('the shard ledger', () => {
  it('moves a payout through its two legs and nets it only at the payee confirmation', async () => {
    const dbs = openShardDbs(dirs.make(), 64 * 1024 * 1024);
    opened.push(dbs);
    const l = new ShardLedger(0, dbs, 1 << 30);
    expect((await l.apply(task([submit('PO', 'payout')], 1000))).delta.flows).toEqual([]);
    expect(l.pending()).toMatchObject([{ id: 'PO', step: 'payer', stepAt: 1000, deadline: 11_000 }]);
    // The payee's confirmation does not apply at the payer leg.
    expect((await l.apply(task([['C', 'PI0001', 'PO', null]], 2000))).outcomes).toEqual([{ status: 'pending', step: 'payer' }]);
    const leg = await l.apply(task([['P', 'PI0001', 'PO', null]], 3000));
    expect(leg.outcomes).toEqual([null]);
    expect(leg.delta.flows).toEqual([]);
    expect(l.pending()).toMatchObject([{ id: 'PO', step: 'payee', stepAt: 3000, deadline: 13_000 }]);
    const done = await l.apply(task([['C', 'PI0001', 'PO', null]], 4000));
    expect(done.outcomes).toEqual([null]);
    expect(done.delta.flows).toHaveLength(1);
    expect(l.pending()).toEqual([]);
  });

  it('moves an authenticated payment through verify, submission and receipt, keeping the verification', async () => {
    const dbs = openShardDbs(dirs.make(), 64 * 1024 * 1024);
    opened.push(dbs);
    const l = new ShardLedger(0, dbs, 1 << 30);
    await l.apply(task([submit('AU', 'authenticated')], 1000));
    expect((await l.apply(task([['U', 'PI0001', 'AU', 'early']], 1500))).outcomes).toEqual([{ status: 'pending', step: 'verify' }]);
    await l.apply(task([['V', 'PI0001', 'AU', null]], 2000));
    expect(l.pending()).toMatchObject([{ id: 'AU', step: 'submission', deadline: 12_000 }]);
    expect(dbs.ins.get('PI0001/AU')).toMatchObject({ s: 'awaiting-submission', st: 'submission' });
    await l.apply(task([['U', 'PI0001', 'AU', 'code-7']], 3000));
    expect(l.pending()).toMatchObject([{ id: 'AU', step: 'receipt', verification: 'code-7', deadline: 13_000 }]);
    // A second submission finds it moved on, with the verification it took.
    expect((await l.apply(task([['U', 'PI0001', 'AU', 'code-8']], 3500))).outcomes).toEqual([{ status: 'pending', step: 'receipt', verification: 'code-7' }]);
    expect((await l.apply(task([['C', 'PI0001', 'AU', null]], 4000))).outcomes).toEqual([null]);
    expect(dbs.ins.get('PI0001/AU')).toMatchObject({ s: 'cleared', b: '20261127-001' });
  });

  it('stores the mandate as part of the content', async () => {
    const dbs = openShardDbs(dirs.make(), 64 * 1024 * 1024);
    opened.push(dbs);
    const l = new ShardLedger(0, dbs, 1 << 30);
    await l.apply(task([submit('AG', 'agreement', 'M-1')], 1000));
    const again = await l.apply(task([submit('AG', 'agreement', 'M-2'), submit('AG', 'agreement', 'M-1')], 2000));
    expect(again.outcomes).toEqual([expect.objectContaining({ conflict: true }), expect.objectContaining({ conflict: false })]);
    expect(dbs.ins.get('PI0001/AG')).toMatchObject({ m: 'M-1' });
  });
});

describe('the mandate rule', () => {
  const active: MandateRecord = { institution: 'PI0001', id: 'M', kind: 'agreement', payer: 'ICBC', account: 'acc', perPaymentMaxCents: 1000, status: 'active', via: 'offline', createdAt: 1, activatedAt: 1 };
  it('admits only under an active mandate of the payer bank within its per-payment maximum', () => {
    expect(mandateRefusal(active, 'M', 'ICBC', 1000)).toBeUndefined();
    expect(mandateRefusal(active, 'M', 'ICBC', 1001)?.code).toBe('MANDATE_INVALID');
    expect(mandateRefusal(active, 'M', 'CMB', 10)?.code).toBe('MANDATE_INVALID');
    expect(mandateRefusal(undefined, 'M', 'ICBC', 10)?.code).toBe('MANDATE_INVALID');
    for (const status of ['pending', 'declined', 'revoked'] as const) expect(mandateRefusal({ ...active, status }, 'M', 'ICBC', 10)?.code).toBe('MANDATE_INVALID');
  });

  it('validates signing terms field by field', () => {
    const rules = { isBank: (c: string) => c === 'ICBC', amountCentsMax: 10_000 };
    const ok = { id: 'M-1', kind: 'entrusted', payer: 'ICBC', account: 'acc' };
    expect(validateMandateTerms(ok, 'PI0001', rules)).toEqual({ institution: 'PI0001', ...ok });
    expect(validateMandateTerms({ ...ok, institution: 'PI0002' }, undefined, rules)).toMatchObject({ institution: 'PI0002' });
    expect(validateMandateTerms({ ...ok, institution: 'PI0002' }, 'PI0001', rules)).toMatchObject({ code: 'INVALID_FIELD', field: 'institution' });
    expect(validateMandateTerms({ ...ok, kind: 'gateway' }, 'PI0001', rules)).toMatchObject({ code: 'INVALID_FIELD', field: 'kind' });
    expect(validateMandateTerms({ ...ok, payer: 'XXXX' }, 'PI0001', rules)).toMatchObject({ code: 'UNKNOWN_BANK' });
    expect(validateMandateTerms({ ...ok, account: '' }, 'PI0001', rules)).toMatchObject({ field: 'account' });
    expect(validateMandateTerms({ ...ok, account: 'x'.repeat(65) }, 'PI0001', rules)).toMatchObject({ field: 'account' });
    expect(validateMandateTerms({ ...ok, perPaymentMaxCents: 10_001 }, 'PI0001', rules)).toMatchObject({ code: 'AMOUNT_OUT_OF_RANGE' });
    expect(validateMandateTerms({ ...ok, perPaymentMaxCents: 1.5 }, 'PI0001', rules)).toMatchObject({ code: 'INVALID_FIELD' });
  });
});

/** A store whose writes wait until released, and can be made to fail. */
class GatedStore implements MandateStore {
  readonly stored = new Map<string, MandateRecord>();
  private gates: { record: MandateRecord; resolve: () => void; reject: (e: Error) => void }[] = [];
  loadMandates(): Iterable<MandateRecord> {
    return [...this.stored.values()];
  }
  putMandate(record: MandateRecord): Promise<void> {
    return new Promise((resolve, reject) => this.gates.push({ record: { ...record }, resolve, reject }));
  }
  release(ok = true): void {
    for (const g of this.gates.splice(0)) {
      if (ok) {
        this.stored.set(`${g.record.institution}/${g.record.id}`, g.record);
        g.resolve();
      } else {
        g.reject(new Error('disk failure'));
      }
    }
  }
}

const clock: Clock = { now: () => 1_795_000_000_000, monotonicMs: () => 0, defer: (fn) => queueMicrotask(fn), after: () => ({}) as TimerHandle, cancel: () => {} };
const quiet = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} } as never;
const instruction = { institution: 'PI0001', id: 'T', type: 'agreement' as const, payer: 'ICBC', payee: 'CMB', amount: 10, twoPhase: false, mandate: 'M-9' };
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('the mandate book', () => {
  it('allows admission only once an activation is durable, and refuses from the moment a revocation begins', async () => {
    const store = new GatedStore();
    const notes: unknown[] = [];
    const book = await MandateBook.open({ isBank: () => true, amountCentsMax: 1e9, requireMandates: true, seeds: [] }, store, clock, quiet, { forwardMandates: () => {}, notify: (n) => notes.push(n) });
    expect(book.refusal({ ...instruction, mandate: undefined } as never)).toEqual(failure('MANDATE_INVALID', 'agreement instructions need a mandate on this platform', 'mandate'));
    const signing = book.sign({ role: 'bank', id: 'ICBC' }, { institution: 'PI0001', id: 'M-9', kind: 'agreement', payer: 'ICBC', account: 'acc' });
    await tick();
    expect(book.refusal(instruction)?.code).toBe('MANDATE_INVALID'); // not durable yet
    store.release();
    expect(await signing).toMatchObject({ mandate: { status: 'active', via: 'offline' }, duplicate: false });
    expect(book.refusal(instruction)).toBeUndefined();

    const revoking = book.revoke({ role: 'institution', id: 'PI0001' }, 'PI0001', 'M-9');
    await tick();
    expect(book.refusal(instruction)?.code).toBe('MANDATE_INVALID'); // refused before the revocation is durable
    store.release(false);
    expect(await revoking).toMatchObject({ code: 'INTERNAL' });
    expect(book.refusal(instruction)).toBeUndefined(); // the failed revocation leaves it active, as the disk has it

    const again = book.revoke({ role: 'bank', id: 'ICBC' }, 'PI0001', 'M-9');
    await tick();
    store.release();
    expect(await again).toMatchObject({ status: 'revoked', revokedBy: 'bank' });
    expect(await book.revoke({ role: 'institution', id: 'PI0001' }, 'PI0001', 'M-9')).toMatchObject({ status: 'revoked', revokedBy: 'bank' });
    expect(notes).toEqual([
      { op: 'notify', institution: 'PI0001', mandate: 'M-9', status: 'active' },
      { op: 'notify', institution: 'PI0001', mandate: 'M-9', status: 'revoked' },
    ]);
    // A restart reads what is stored.
    const reopened = await MandateBook.open({ isBank: () => true, amountCentsMax: 1e9, requireMandates: true, seeds: [] }, store, clock, quiet, { forwardMandates: () => {}, notify: () => {} });
    expect(reopened.view('PI0001', 'M-9')).toMatchObject({ status: 'revoked' });
    expect(reopened.countBy('revoked')).toBe(1);
  });

  it('pages in (institution, id) order and forwards gateway signings to the payer bank', async () => {
    const store = new GatedStore();
    const forwarded: [string, unknown[]][] = [];
    const book = await MandateBook.open({ isBank: () => true, amountCentsMax: 1e9, requireMandates: false, seeds: [] }, store, clock, quiet, { forwardMandates: (b, v) => forwarded.push([b, v]), notify: () => {} });
    const signings = ['M-3', 'M-1', 'M-2'].map((id) => book.sign({ role: 'institution', id: 'PI0002' }, { id, kind: 'entrusted', payer: 'CMB', account: 'a' }));
    for (let i = 0; i < 3; i++) {
      await tick();
      store.release();
    }
    await Promise.all(signings);
    expect(forwarded.map(([b, v]) => [b, (v[0] as { id: string }).id])).toEqual([
      ['CMB', 'M-3'],
      ['CMB', 'M-1'],
      ['CMB', 'M-2'],
    ]);
    const first = book.page({}, undefined, 2);
    expect(first.mandates.map((m) => m.id)).toEqual(['M-1', 'M-2']);
    const second = book.page({}, first.next!, 2);
    expect([second.mandates.map((m) => m.id), second.next]).toEqual([['M-3'], null]);
    expect(book.pendingFor('CMB')).toHaveLength(3);
    expect(book.pendingFor('ICBC')).toHaveLength(0);
  });
});
