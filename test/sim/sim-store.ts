/**
 * The engine's own records (open batch, cut-offs, reports, snapshots,
 * mandates) in memory, with writes that take simulated time, can be made
 * to fail, and die with a crash half done (each write is atomic: all of it
 * or none).
 */

import type { BatchRecord, BatchStore, Closing, MandateStore, OpenBatch } from '../../src/core/ports.js';
import type { MandateRecord } from '../../src/mandates/mandate.js';
import type { Prng } from './prng.js';
import type { SimClock } from './sim-clock.js';

export class SimStore implements BatchStore, MandateStore {
  private readonly mandates = new Map<string, MandateRecord>();
  open: OpenBatch | undefined;
  closingRecord: Closing | undefined;
  readonly batches = new Map<string, BatchRecord>();
  readonly snapshots = new Map<number, unknown>();
  /** Probability that a write fails (nothing of it applied). */
  writeFails = 0;
  failures = 0;
  /** Writes under way: at a crash, each is applied or not. */
  private inflight: (() => void)[] = [];

  constructor(
    private readonly clock: SimClock,
    private readonly prng: Prng,
  ) {}

  private write(apply: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const epoch = this.clock.epoch;
      const fail = this.prng.chance(this.writeFails);
      const entry = (): void => {
        if (!fail) apply();
      };
      this.inflight.push(entry);
      this.clock.schedule(this.prng.between(0, 3), () => {
        if (epoch !== this.clock.epoch) return;
        this.inflight = this.inflight.filter((e) => e !== entry);
        if (fail) {
          this.failures++;
          reject(new Error('simulated store write failure'));
        } else {
          apply();
          resolve();
        }
      }, 'store');
    });
  }

  /** A crash: each write under way lands or not. */
  crash(): void {
    for (const w of this.inflight) if (this.prng.chance(0.5)) w();
    this.inflight = [];
  }

  openBatch(): OpenBatch | undefined {
    return this.open;
  }

  setOpenBatch(batch: OpenBatch): Promise<void> {
    return this.write(() => {
      this.open = { ...batch };
    });
  }

  closing(): Closing | undefined {
    return this.closingRecord;
  }

  beginCut(closing: Closing, next: OpenBatch): Promise<void> {
    return this.write(() => {
      this.closingRecord = { ...closing };
      this.open = { ...next };
    });
  }

  finishCut(record: BatchRecord): Promise<void> {
    return this.write(() => {
      this.batches.set(record.batch, structuredClone(record));
      this.closingRecord = undefined;
    });
  }

  batch(id: string): BatchRecord | undefined {
    return this.batches.get(id);
  }

  putBatch(record: BatchRecord): Promise<void> {
    return this.write(() => {
      this.batches.set(record.batch, structuredClone(record));
    });
  }

  lastClosed(): BatchRecord | undefined {
    const ids = [...this.batches.keys()].sort();
    const last = ids.at(-1);
    return last === undefined ? undefined : this.batches.get(last);
  }

  lastSnapshotSeq(): number {
    let m = 0;
    for (const k of this.snapshots.keys()) m = Math.max(m, k);
    return m;
  }

  putSnapshot(seq: number, snapshot: unknown, retention: number): Promise<void> {
    return this.write(() => {
      this.snapshots.set(seq, structuredClone(snapshot));
      for (const k of [...this.snapshots.keys()]) if (k <= seq - retention) this.snapshots.delete(k);
    });
  }

  snapshot(seq: number): unknown {
    return this.snapshots.get(seq);
  }

  loadMandates(): Iterable<MandateRecord> {
    return [...this.mandates.keys()].sort().map((k) => structuredClone(this.mandates.get(k)!));
  }

  /** The durable record of a mandate, as a restart would load it (read-only: the simulator's oracle). */
  mandate(institution: string, id: string): Readonly<MandateRecord> | undefined {
    return this.mandates.get(`${institution}/${id}`);
  }

  putMandate(record: MandateRecord): Promise<void> {
    const copy = structuredClone(record);
    return this.write(() => this.mandates.set(`${copy.institution}/${copy.id}`, copy));
  }
}
