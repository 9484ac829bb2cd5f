/**
 * The engine's own environment: the data folder's layout (fixed shard
 * count) and the open settlement batch. Written only by the main thread.
 */

import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { enginePath, LAYOUT_VERSION } from './schema.js';

export interface Layout {
  version: number;
  shards: number;
  createdAt: number;
}

export interface OpenBatch {
  id: string;
  openedAt: number;
}

export class LayoutError extends Error {
  override name = 'LayoutError';
}

export class EngineStore {
  private readonly env: RootDatabase;
  private readonly meta: Database<unknown, string>;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.env = open({ path: enginePath(dataDir), maxDbs: 8 });
    this.meta = this.env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
  }

  /** Record the layout on first start; refuse a data folder made for another shard count. */
  async checkLayout(shards: number): Promise<Layout> {
    const existing = this.meta.get('layout') as Layout | undefined;
    if (existing === undefined) {
      const layout: Layout = { version: LAYOUT_VERSION, shards, createdAt: Date.now() };
      await this.meta.put('layout', layout);
      return layout;
    }
    if (existing.version !== LAYOUT_VERSION) {
      throw new LayoutError(`data folder has layout version ${existing.version}; this engine reads version ${LAYOUT_VERSION}`);
    }
    if (existing.shards !== shards) {
      throw new LayoutError(`data folder was created with ${existing.shards} shards but the config says ${shards}; shards are fixed for a data folder`);
    }
    return existing;
  }

  openBatch(): OpenBatch | undefined {
    return this.meta.get('openBatch') as OpenBatch | undefined;
  }

  async setOpenBatch(batch: OpenBatch): Promise<void> {
    await this.meta.put('openBatch', batch);
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}

/** Business dates follow Beijing time (UTC+8), as the clearing day does. */
export function businessDate(ms: number): string {
  const d = new Date(ms + 8 * 3600_000);
  const y = d.getUTCFullYear();
  const m = String(d.getUTCMonth() + 1).padStart(2, '0');
  const day = String(d.getUTCDate()).padStart(2, '0');
  return `${y}${m}${day}`;
}

/** Batches per business day: the three-digit suffix keeps ids sorting as strings. */
export const BATCHES_PER_DAY_MAX = 999;

export class BatchIdExhausted extends Error {
  override name = 'BatchIdExhausted';
}

/** The batch after `previous` (or the first), opened at `now`: ids sort in creation order. */
export function nextBatchId(previous: string | undefined, now: number): string {
  const date = businessDate(now);
  if (previous !== undefined) {
    const [prevDate, prevSeq] = previous.split('-');
    if (prevDate !== undefined && prevDate >= date) {
      // A clock that went backwards keeps the previous date so ids still sort.
      const seq = Number(prevSeq) + 1;
      if (seq > BATCHES_PER_DAY_MAX) throw new BatchIdExhausted(`business day ${prevDate} already has ${BATCHES_PER_DAY_MAX} batches`);
      return `${prevDate}-${String(seq).padStart(3, '0')}`;
    }
  }
  return `${date}-001`;
}
