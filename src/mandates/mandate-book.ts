/**
 * The mandates the platform holds (委托协议), kept in memory for admission
 * and durable in the engine's store: gateway signing (网关签约), offline
 * signing (线下签约), revocation by the institution or the bank (机构解约,
 * 银行解约), queries (委托协议查询), and the payer bank's receipts.
 *
 * The router asks `refusal` for every `agreement` and `entrusted`
 * instruction in the one order of the stream. A mandate allows admission
 * only once its activation is durable, and stops allowing it the moment a
 * revocation begins (before it is durable): an instruction is never
 * admitted under a mandate that a restart would not show active, and a
 * revocation splits the stream into before and after. Changes to one
 * mandate run one after another.
 */

import { failure, type Failure } from '../core/failures.js';
import { isMandateKind, rawParty, type Instruction } from '../core/instruction.js';
import type { Logger } from '../core/log.js';
import type { Clock, MandateStore } from '../core/ports.js';
import { AnswerList } from '../router/shard-router.js';
import {
  checkMandateRecord,
  mandateKey,
  MANDATE_STATUSES,
  mandateRefusal,
  mandateView,
  parseMandateReceipt,
  sameTerms,
  validateMandateTerms,
  type MandateNotification,
  type MandateReceiptResult,
  type MandateRecord,
  type MandateRules,
  type MandateStatus,
  type MandateTerms,
  type MandateView,
} from './mandate.js';

export interface MandateActor {
  role: 'institution' | 'bank' | 'operator';
  id: string;
}

export interface MandateFilter {
  institution?: string;
  payer?: string;
  status?: MandateStatus;
}

/** Where mandate forwards and notifications go. */
export interface MandatePushes {
  forwardMandates(bank: string, views: MandateView[]): void;
  notify(n: MandateNotification): void;
}

export interface MandateBookConfig extends MandateRules {
  /** Every `agreement` and `entrusted` instruction needs a mandate. */
  requireMandates: boolean;
  /** Mandates made active (offline) at start when not yet stored: the demo configuration's. */
  seeds: readonly MandateTerms[];
}

/** The first index of `sorted` whose key is greater than `after`. */
function upperBound(sorted: readonly string[], after: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class MandateBook {
  private readonly byKey = new Map<string, MandateRecord>();
  /** Every key, in (institution, id) order: the list's pages. */
  private readonly sorted: string[] = [];
  /** Keys of the mandates awaiting their payer bank's answer. */
  private readonly pending = new Set<string>();
  private readonly counts = new Map<MandateStatus, number>(MANDATE_STATUSES.map((s) => [s, 0]));
  /** Per mandate, the end of the chain of its changes. */
  private readonly busy = new Map<string, Promise<unknown>>();

  private constructor(
    private readonly config: MandateBookConfig,
    private readonly store: MandateStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly pushes: MandatePushes,
  ) {}

  /** Load the stored mandates, and store the configured seeds not stored yet. */
  static async open(config: MandateBookConfig, store: MandateStore, clock: Clock, log: Logger, pushes: MandatePushes): Promise<MandateBook> {
    const book = new MandateBook(config, store, clock, log, pushes);
    // Stored in key order, so each insert into the sorted list lands at its end.
    for (const r of store.loadMandates()) book.set(checkMandateRecord(r));
    for (const seed of config.seeds) {
      if (book.byKey.has(mandateKey(seed))) continue;
      const now = clock.now();
      const r: MandateRecord = { ...seed, status: 'active', via: 'offline', createdAt: now, activatedAt: now };
      await store.putMandate(r);
      book.set(r);
    }
    return book;
  }

  /** Keep a record in memory: its place in the list, the pending set and the counts. */
  private set(r: MandateRecord): void {
    const key = mandateKey(r);
    const old = this.byKey.get(key);
    if (old !== undefined) this.counts.set(old.status, this.counts.get(old.status)! - 1);
    else this.sorted.splice(upperBound(this.sorted, key), 0, key);
    this.byKey.set(key, r);
    this.counts.set(r.status, this.counts.get(r.status)! + 1);
    if (r.status === 'pending') this.pending.add(key);
    else this.pending.delete(key);
  }

  /** Run `fn` after every earlier change of the same mandate. */
  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.busy.get(key) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.busy.set(key, tail);
    void tail.then(() => {
      if (this.busy.get(key) === tail) this.busy.delete(key);
    });
    return run;
  }

  /** Why an instruction may not be admitted under its mandate; undefined when it may. */
  refusal(i: Instruction): Failure | undefined {
    if (!isMandateKind(i.type)) return undefined;
    if (i.mandate === undefined) {
      return this.config.requireMandates ? failure('MANDATE_INVALID', `${i.type} instructions need a mandate on this platform`, 'mandate') : undefined;
    }
    return mandateRefusal(this.byKey.get(mandateKey({ institution: i.institution, id: i.mandate })), i.mandate, i.payer, i.amount);
  }

  /** Mandates by status, for the metrics. */
  countBy(status: MandateStatus): number {
    return this.counts.get(status) ?? 0;
  }

  view(institution: string, id: string): MandateView | undefined {
    const r = this.byKey.get(mandateKey({ institution, id }));
    return r === undefined ? undefined : mandateView(r);
  }

  page(filter: MandateFilter, after: string | undefined, limit: number): { mandates: MandateView[]; next: string | null } {
    const out: MandateView[] = [];
    let last: string | null = null;
    for (let i = after === undefined ? 0 : upperBound(this.sorted, after); i < this.sorted.length; i++) {
      const key = this.sorted[i]!;
      const r = this.byKey.get(key)!;
      if (filter.institution !== undefined && r.institution !== filter.institution) continue;
      if (filter.payer !== undefined && r.payer !== filter.payer) continue;
      if (filter.status !== undefined && r.status !== filter.status) continue;
      if (out.length === limit) return { mandates: out, next: last };
      out.push(mandateView(r));
      last = key;
    }
    return { mandates: out, next: null };
  }

  /** Mandates awaiting `bank`'s answer. */
  pendingFor(bank: string): MandateView[] {
    const out: MandateView[] = [];
    for (const key of this.pending) {
      const r = this.byKey.get(key)!;
      if (r.payer === bank) out.push(mandateView(r));
    }
    return out;
  }

  private notify(r: MandateRecord): void {
    this.pushes.notify({ op: 'notify', institution: r.institution, mandate: r.id, status: r.status });
  }

  /** Store a changed record, then keep it; an error leaves memory as it was. */
  private async commit(r: MandateRecord): Promise<void> {
    await this.store.putMandate(r);
    this.set(r);
  }

  /**
   * Sign a mandate: an institution through the bank's gateway (pending
   * until the payer bank answers), or a bank offline for one of its own
   * accounts (active at once).
   */
  sign(actor: MandateActor, raw: unknown): Promise<{ mandate: MandateView; duplicate: boolean } | Failure> {
    if (actor.role === 'operator') return Promise.resolve(failure('FORBIDDEN', 'mandates are signed by an institution or its payer bank'));
    const terms = validateMandateTerms(raw, actor.role === 'institution' ? actor.id : undefined, this.config);
    if ('code' in terms) return Promise.resolve(terms);
    if (actor.role === 'bank' && terms.payer !== actor.id) return Promise.resolve(failure('FORBIDDEN', 'a bank signs offline only mandates it is the payer bank of'));
    const key = mandateKey(terms);
    return this.serial(key, async () => {
      const stored = this.byKey.get(key);
      if (stored !== undefined) {
        if (sameTerms(stored, terms)) return { mandate: mandateView(stored), duplicate: true };
        return failure('DUPLICATE_CONFLICT', `mandate '${terms.id}' exists with different terms`);
      }
      const now = this.clock.now();
      const r: MandateRecord =
        actor.role === 'bank' ? { ...terms, status: 'active', via: 'offline', createdAt: now, activatedAt: now } : { ...terms, status: 'pending', via: 'gateway', createdAt: now };
      try {
        await this.commit(r);
      } catch (err) {
        this.log.error({ err, mandate: key }, 'a mandate could not be stored');
        return failure('INTERNAL', 'the mandate was not stored; send it again');
      }
      this.log.info({ mandate: key, via: r.via, status: r.status }, 'mandate signed');
      if (r.status === 'pending') this.pushes.forwardMandates(r.payer, [mandateView(r)]);
      else this.notify(r);
      return { mandate: mandateView(r), duplicate: false };
    });
  }

  /** Revoke a mandate (机构解约, 银行解约); idempotent. Instructions admitted before stand. */
  revoke(actor: MandateActor, institution: string, id: string): Promise<MandateView | Failure> {
    // Another institution is refused before anything is looked up, so it learns nothing of which ids exist.
    if (actor.role === 'institution' && actor.id !== institution) return Promise.resolve(failure('FORBIDDEN', 'an institution may revoke only its own mandates'));
    const key = mandateKey({ institution, id });
    return this.serial(key, async () => {
      const stored = this.byKey.get(key);
      if (stored === undefined) return failure('NOT_FOUND', `no mandate '${id}' of institution '${institution}'`);
      if (actor.role === 'bank' && stored.payer !== actor.id) return failure('FORBIDDEN', 'only the payer bank of a mandate (or its institution) revokes it');
      if (stored.status === 'revoked') return mandateView(stored);
      if (stored.status === 'declined') return failure('NOT_PENDING', 'the mandate was declined by its payer bank');
      const r: MandateRecord = { ...stored, status: 'revoked', revokedAt: this.clock.now(), revokedBy: actor.role };
      // From here on the router refuses instructions under it, before the revocation is durable.
      this.set(r);
      try {
        await this.store.putMandate(r);
      } catch (err) {
        this.set(stored);
        this.log.error({ err, mandate: key }, 'a revocation could not be stored');
        return failure('INTERNAL', 'the revocation was not stored; send it again');
      }
      this.log.info({ mandate: key, by: actor.role }, 'mandate revoked');
      this.notify(r);
      return mandateView(r);
    });
  }

  /** The payer bank's answers to gateway signings. */
  receipts(bank: string, raws: readonly unknown[], onDone: (results: MandateReceiptResult[]) => void): void {
    const answers = new AnswerList<MandateReceiptResult>(raws.length, onDone);
    if (raws.length === 0) onDone([]);
    raws.forEach((raw, index) => {
      const item = parseMandateReceipt(raw);
      if ('code' in item) {
        answers.settle(index, { ...rawParty(raw), status: 'rejected', ...item });
        return;
      }
      const { institution, id } = item;
      const key = mandateKey({ institution, id });
      const rejected = (f: Failure, status: MandateReceiptResult['status'] = 'rejected'): MandateReceiptResult => ({ institution, id, status, ...f });
      void this.serial(key, async () => {
        const stored = this.byKey.get(key);
        if (stored === undefined) return rejected(failure('NOT_FOUND', `no mandate '${id}' of institution '${institution}'`));
        if (stored.payer !== bank) return rejected(failure('FORBIDDEN', 'only the payer bank answers for a mandate'));
        const wanted: MandateStatus = item.outcome === 'confirm' ? 'active' : 'declined';
        if (stored.status !== 'pending') {
          if (stored.status === wanted && stored.via === 'gateway') return { institution, id, status: stored.status, duplicate: true as const };
          return rejected(failure('NOT_PENDING', `the mandate is already ${stored.status}`), stored.status);
        }
        const now = this.clock.now();
        const r: MandateRecord = wanted === 'active' ? { ...stored, status: 'active', activatedAt: now } : { ...stored, status: 'declined', declinedAt: now };
        if (wanted === 'declined' && item.reason !== null) r.reason = item.reason;
        try {
          await this.commit(r);
        } catch (err) {
          this.log.error({ err, mandate: key }, 'a mandate receipt could not be stored');
          return rejected(failure('INTERNAL', 'the receipt was not stored; send it again'), 'pending');
        }
        this.notify(r);
        return { institution, id, status: r.status };
      }).then((result) => answers.settle(index, result));
    });
  }
}
