/**
 * The engine's own environment: the data folder's layout (fixed shard
 * count) and the open settlement batch. Written only by the main thread.
 */

import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { BatchRecord, BatchStore, Closing, MandateStore, OpenBatch } from '../core/ports.js';
import { mandateKey, type MandateRecord } from '../mandates/mandate.js';
import { enginePath, LAYOUT_UPGRADES_FROM, LAYOUT_VERSION } from './schema.js';

export type { BatchRecord, Closing, OpenBatch };

export interface Layout {
  version: number;
  shards: number;
  createdAt: number;
}

/** One entry of the audit trail of operator actions. */
export interface OperatorAction {
  seq: number;
  /** ISO time */
  at: string;
  operator: string;
  action: 'close-batch' | 'mark-settled' | 'resolve' | 'reverse' | 'audit' | 'crash-worker' | 'revoke-mandate';
  target: string;
  outcome: string;
}

/** Cluster mode: how the store's writes go through the replicated log. */
export interface StoreReplicator {
  /** Append a write to the log; resolves with its sequence once a majority of the log's replicas holds it. */
  append(w: StoreWrite): Promise<number>;
  /** The write at this sequence is committed here too. */
  committed(seq: number): void;
}

/** A write of the engine's own store, as cluster mode's log carries it. */
export type StoreWrite =
  | { m: 'setOpenBatch'; a: [OpenBatch] }
  | { m: 'beginCut'; a: [Closing, OpenBatch] }
  | { m: 'finishCut'; a: [BatchRecord] }
  | { m: 'putBatch'; a: [BatchRecord] }
  | { m: 'putSnapshot'; a: [number, unknown, number] }
  | { m: 'putMandate'; a: [MandateRecord] }
  | { m: 'recordAction'; a: [Omit<OperatorAction, 'seq'>] };

export class LayoutError extends Error {
  override name = 'LayoutError';
}

export class EngineStore implements BatchStore, MandateStore {
  private readonly env: RootDatabase;
  private readonly meta: Database<unknown, string>;
  private readonly batches: Database<BatchRecord, string>;
  private readonly snaps: Database<unknown, number>;
  private readonly trail: Database<OperatorAction, number>;
  /** Mandates, keyed '<institution>/<id>'. */
  private readonly mandates: Database<MandateRecord, string>;
  private trailSeq: number;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.env = open({ path: enginePath(dataDir), maxDbs: 8 });
    this.meta = this.env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
    this.batches = this.env.openDB<BatchRecord, string>({ name: 'batches', encoding: 'msgpack' });
    this.snaps = this.env.openDB<unknown, number>({ name: 'snaps', encoding: 'msgpack' });
    this.trail = this.env.openDB<OperatorAction, number>({ name: 'trail', encoding: 'msgpack' });
    this.mandates = this.env.openDB<MandateRecord, string>({ name: 'mandates', encoding: 'msgpack' });
    let last = 0;
    for (const key of this.trail.getKeys({ reverse: true, limit: 1 })) last = key;
    this.trailSeq = last;
  }

  /**
   * Cluster mode: how writes go through the log. Absent, the engine runs
   * alone and writes go straight to LMDB.
   */
  replicator: StoreReplicator | undefined;

  private async write(w: StoreWrite): Promise<unknown> {
    if (this.replicator === undefined) return this.applyLocal(w);
    const seq = await this.replicator.append(w);
    const done = await this.applyWrite(w, seq);
    this.replicator.committed(seq);
    return done;
  }

  /**
   * Make a logged write, with its log sequence: both are issued in one
   * event turn, so lmdb-js commits them in one transaction and a write is
   * applied exactly once however often the log is replayed.
   */
  applyWrite(w: StoreWrite, seq: number): Promise<unknown> {
    const done = this.applyLocal(w);
    void this.meta.put('applied', seq);
    return done;
  }

  private applyLocal(w: StoreWrite): Promise<unknown> {
    switch (w.m) {
      case 'setOpenBatch':
        return this.meta.put('openBatch', w.a[0]);
      case 'beginCut':
        this.meta.put('closing', w.a[0]);
        return this.meta.put('openBatch', w.a[1]);
      case 'finishCut':
        this.batches.put(w.a[0].batch, w.a[0]);
        return this.meta.remove('closing');
      case 'putBatch':
        return this.batches.put(w.a[0].batch, w.a[0]);
      case 'putSnapshot': {
        const [seq, snapshot, retention] = w.a;
        const oldest = seq - retention;
        if (oldest > 0) {
          for (const key of this.snaps.getKeys({ end: oldest + 1 })) this.snaps.remove(key);
        }
        return this.snaps.put(seq, snapshot);
      }
      case 'putMandate':
        return this.mandates.put(mandateKey(w.a[0]), w.a[0]);
      case 'recordAction': {
        const entry: OperatorAction = { seq: ++this.trailSeq, ...w.a[0] };
        return this.trail.put(entry.seq, entry).then(() => entry);
      }
    }
  }

  /** Append an operator action to the audit trail (durable once the promise resolves). */
  async recordAction(action: Omit<OperatorAction, 'seq'>): Promise<OperatorAction> {
    return (await this.write({ m: 'recordAction', a: [action] })) as OperatorAction;
  }

  /** The newest `limit` operator actions, oldest first. */
  operatorActions(limit: number): OperatorAction[] {
    const out = [...this.trail.getRange({ reverse: true, limit })].map((e) => e.value);
    return out.reverse();
  }

  /**
   * Record the layout on first start; refuse a data folder made for another
   * shard count or a layout this engine does not read. A layout it reads as
   * it is (LAYOUT_UPGRADES_FROM) is marked as its own, so that an older
   * engine then refuses the folder rather than misread it.
   */
  async checkLayout(shards: number): Promise<Layout> {
    const existing = this.meta.get('layout') as Layout | undefined;
    if (existing === undefined) {
      const layout: Layout = { version: LAYOUT_VERSION, shards, createdAt: Date.now() };
      await this.meta.put('layout', layout);
      return layout;
    }
    if (existing.version !== LAYOUT_VERSION && !LAYOUT_UPGRADES_FROM.includes(existing.version)) {
      throw new LayoutError(`data folder has layout version ${existing.version}; this engine reads version ${LAYOUT_VERSION}, and ${LAYOUT_UPGRADES_FROM.join(', ')} as it is`);
    }
    if (existing.shards !== shards) {
      throw new LayoutError(`data folder was created with ${existing.shards} shards but the config says ${shards}; shards are fixed for a data folder`);
    }
    if (existing.version === LAYOUT_VERSION) return existing;
    const upgraded: Layout = { ...existing, version: LAYOUT_VERSION };
    await this.meta.put('layout', upgraded);
    return upgraded;
  }

  openBatch(): OpenBatch | undefined {
    return this.meta.get('openBatch') as OpenBatch | undefined;
  }

  async setOpenBatch(batch: OpenBatch): Promise<void> {
    await this.write({ m: 'setOpenBatch', a: [batch] });
  }

  closing(): Closing | undefined {
    return this.meta.get('closing') as Closing | undefined;
  }

  /** The cut-off point, durable before anything is written into the next batch. */
  async beginCut(closing: Closing, next: OpenBatch): Promise<void> {
    await this.write({ m: 'beginCut', a: [closing, next] });
  }

  /** The closed batch's report, recorded together with the end of the cut-off. */
  async finishCut(record: BatchRecord): Promise<void> {
    await this.write({ m: 'finishCut', a: [record] });
  }

  batch(id: string): BatchRecord | undefined {
    return this.batches.get(id);
  }

  lastClosed(): BatchRecord | undefined {
    for (const { value } of this.batches.getRange({ reverse: true, limit: 1 })) return value;
    return undefined;
  }

  /** Up to `limit` closed batches with ids after `after` ('' for the first), oldest first: a range read. */
  closedAfter(after: string, limit: number): BatchRecord[] {
    const out: BatchRecord[] = [];
    for (const { key, value } of this.batches.getRange({ start: after, limit: limit + 1 })) {
      if (key === after) continue;
      out.push(value);
      if (out.length === limit) break;
    }
    return out;
  }

  /** Up to `limit` closed batches with ids before `before` (undefined: from the newest), newest first: a range read. */
  closedBefore(before: string | undefined, limit: number): BatchRecord[] {
    const out: BatchRecord[] = [];
    const range = before === undefined ? { reverse: true, limit } : { start: before, reverse: true, limit: limit + 1 };
    for (const { key, value } of this.batches.getRange(range)) {
      if (key === before) continue;
      out.push(value);
      if (out.length === limit) break;
    }
    return out;
  }

  /** Up to `limit` audit-trail entries with `seq` below `before`, newest first: a range read. */
  actionsBefore(before: number, limit: number): OperatorAction[] {
    const out: OperatorAction[] = [];
    for (const { value } of this.trail.getRange({ start: before - 1, reverse: true, limit })) out.push(value);
    return out;
  }

  loadMandates(): Iterable<MandateRecord> {
    return this.mandates.getRange({}).map(({ value }) => value);
  }

  async putMandate(record: MandateRecord): Promise<void> {
    await this.write({ m: 'putMandate', a: [record] });
  }

  /** Closed batches, oldest first. */
  closedBatches(): BatchRecord[] {
    return [...this.batches.getRange({})].map((e) => e.value);
  }

  async putBatch(record: BatchRecord): Promise<void> {
    await this.write({ m: 'putBatch', a: [record] });
  }

  lastSnapshotSeq(): number {
    for (const key of this.snaps.getKeys({ reverse: true, limit: 1 })) return key;
    return 0;
  }

  snapshot(seq: number): unknown {
    return this.snaps.get(seq);
  }

  /** Store a snapshot and drop the ones that fall out of the retention. */
  async putSnapshot(seq: number, snapshot: unknown, retention: number): Promise<void> {
    await this.write({ m: 'putSnapshot', a: [seq, snapshot, retention] });
  }

  /**
   * Cluster mode: the last log sequence applied to this store (see applyWrite).
   */
  appliedSeq(): number {
    return (this.meta.get('applied') as number | undefined) ?? 0;
  }

  /**
   * Cluster mode: a sequence up to which every log entry is committed in
   * this node's environments (each shard's applied sequence only moves
   * with an entry for that shard, so their minimum says nothing of a shard
   * that had none). Written only after those commits.
   */
  logCommittedThrough(): number {
    return (this.meta.get('logCommittedThrough') as number | undefined) ?? 0;
  }

  async setLogCommittedThrough(seq: number): Promise<void> {
    await this.meta.put('logCommittedThrough', seq);
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}
