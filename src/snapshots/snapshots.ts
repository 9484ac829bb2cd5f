/**
 * Reconciliation snapshots (高频对账): every `snapshotIntervalMs`, the live
 * view of the open batch as one record with a sequence number — bank
 * positions, totals, and per institution its count, amount and digest.
 *
 * The live view only ever holds committed, acknowledged instructions and
 * changes one whole commit at a time, so a snapshot is a consistent cut of
 * every shard: exactly the instructions acknowledged before `takenAt`.
 * Conservation is asserted on every one. Snapshots are stored (pruned to
 * `snapshotRetention`) before they are pushed to subscribers.
 */

import { digestHex } from '../core/digest.js';
import { centsToWire } from '../core/money.js';
import { bankRowWire, totalsWire, type BankRowWire } from '../protocol/messages.js';
import type { Logger } from '../core/log.js';
import type { BatchStore, Clock, TimerHandle } from '../core/ports.js';
import type { LiveView } from '../view/live-view.js';

export interface SnapshotDeps {
  view: LiveView;
  store: Pick<BatchStore, 'putSnapshot' | 'snapshot'>;
  clock: Clock;
  log: Logger;
  retention: number;
  /** Called with each snapshot once it is stored: the gateway pushes it to subscribers. */
  onSnapshot: (s: Snapshot) => void;
}

export interface InstitutionRowWire {
  institution: string;
  count: number;
  amount: string;
  digest: string;
}

export interface Snapshot {
  seq: number;
  takenAt: string;
  batch: string;
  banks: BankRowWire[];
  totals: { gross: string; net: string };
  institutions: InstitutionRowWire[];
}

export class SnapshotTaker {
  private timer: TimerHandle | undefined;
  private intervalMs = 0;
  private running: Promise<void> | undefined;
  private last: Snapshot | undefined;
  /** Wall time the last snapshot took, from reading the view to the durable write. */
  lastDurationMs = 0;

  constructor(
    private readonly deps: SnapshotDeps,
    private seq: number,
  ) {}

  get latest(): Snapshot | undefined {
    return this.last;
  }

  start(intervalMs: number): void {
    this.intervalMs = intervalMs;
    this.arm();
  }

  private arm(): void {
    this.timer = this.deps.clock.after(this.intervalMs, () => {
      this.arm();
      // A snapshot still being written is not overtaken; the next tick takes the next one.
      if (this.running === undefined) {
        this.running = this.take()
          .then(() => undefined)
          .catch((err: unknown) => this.deps.log.error({ err }, 'snapshot failed'))
          .finally(() => {
            this.running = undefined;
          });
      }
    });
  }

  stop(): void {
    if (this.timer !== undefined) this.deps.clock.cancel(this.timer);
    this.timer = undefined;
    this.intervalMs = 0;
  }

  async idle(): Promise<void> {
    await this.running;
  }

  /** Build a snapshot from the live view, store it, then push it. */
  async take(): Promise<Snapshot> {
    const started = this.deps.clock.monotonicMs();
    const { view, clock } = this.deps;
    const o = view.overview();
    const snapshot: Snapshot = {
      seq: ++this.seq,
      takenAt: new Date(clock.now()).toISOString(),
      batch: o.batch,
      banks: o.banks.map((b) => bankRowWire(b, view.pendingDebit(b.bank))),
      totals: totalsWire(o.totals),
      institutions: view.institutions(o.batch).map((t) => ({ institution: t.institution, count: t.count, amount: centsToWire(t.amount), digest: digestHex(t.digest) })),
    };
    await this.deps.store.putSnapshot(snapshot.seq, snapshot, this.deps.retention);
    this.last = snapshot;
    this.lastDurationMs = clock.monotonicMs() - started;
    this.deps.onSnapshot(snapshot);
    return snapshot;
  }

  get(seq: number): Snapshot | undefined {
    if (this.last?.seq === seq) return this.last;
    return this.deps.store.snapshot(seq) as Snapshot | undefined;
  }
}

/**
 * What a principal may see of a snapshot (PROTOCOL.md: "an institution or
 * bank sees only its own rows"): an operator everything; a bank its own
 * bank row, an institution its own institution row. The batch's totals
 * (gross, and net as settlement moves it) are no row, and are the
 * snapshot's shape for every reader.
 */
export function snapshotFor(s: Snapshot, role: 'institution' | 'bank' | 'operator' | 'metrics', id: string): Snapshot {
  if (role === 'operator') return s;
  return {
    seq: s.seq,
    takenAt: s.takenAt,
    batch: s.batch,
    banks: role === 'bank' ? s.banks.filter((b) => b.bank === id) : [],
    totals: s.totals,
    institutions: role === 'institution' ? s.institutions.filter((i) => i.institution === id) : [],
  };
}
