/**
 * An in-memory stand-in for the few lmdb-js calls the shard ledger makes,
 * so the simulator runs the real ledger (src/shard/ledger.ts) with no disk.
 * A child transaction writes into an overlay that reads see at once and
 * that is applied whole on commit, or dropped whole when the simulator
 * makes the commit fail. Values are copied on the way in and out, as
 * serialisation would. Keys are strings, sorted as LMDB sorts them
 * (bytewise, which for these ASCII keys is string order).
 */

import type { ShardDbs } from '../../src/store/schema.js';

type Value = unknown;
const DELETED = Symbol('deleted');

function copy(v: Value): Value {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  return structuredClone(v);
}

export class MemEnv {
  /** The overlay of the write transaction running now, per database. */
  txn: Map<MemDb, Map<string, Value | typeof DELETED>> | undefined;
  /** Set by the simulator: the next commit fails and nothing of it is applied. */
  failNextCommit = false;
  readonly dbs: MemDb[] = [];

  db(): MemDb {
    const d = new MemDb(this);
    this.dbs.push(d);
    return d;
  }

  childTransaction(fn: () => void): Promise<void> {
    if (this.txn !== undefined) throw new Error('nested simulated transaction');
    this.txn = new Map();
    try {
      fn();
    } catch (err) {
      this.txn = undefined;
      return Promise.reject(err);
    }
    const txn = this.txn;
    this.txn = undefined;
    if (this.failNextCommit) {
      this.failNextCommit = false;
      return Promise.reject(new Error('simulated commit failure (MDB_PANIC)'));
    }
    for (const [db, writes] of txn) {
      db.invalidate();
      for (const [k, v] of writes) {
        if (v === DELETED) db.committed.delete(k);
        else db.committed.set(k, v);
      }
    }
    return Promise.resolve();
  }

  getStats(): { pageSize: number; lastPageNumber: number } {
    let n = 0;
    for (const d of this.dbs) n += d.committed.size;
    return { pageSize: 4096, lastPageNumber: n };
  }

  resetReadTxn(): void {}
}

export class MemDb {
  readonly committed = new Map<string, Value>();

  constructor(private readonly env: MemEnv) {}

  private overlay(): Map<string, Value | typeof DELETED> | undefined {
    const t = this.env.txn;
    if (t === undefined) return undefined;
    let o = t.get(this);
    if (o === undefined) {
      o = new Map();
      t.set(this, o);
    }
    return o;
  }

  private raw(key: string): Value | undefined {
    const o = this.env.txn?.get(this);
    if (o !== undefined && o.has(key)) {
      const v = o.get(key);
      return v === DELETED ? undefined : v;
    }
    return this.committed.get(key);
  }

  get(key: string): Value | undefined {
    const v = this.raw(key);
    return v === undefined ? undefined : copy(v);
  }

  put(key: string, value: Value): Promise<boolean> {
    const o = this.overlay();
    if (o === undefined) throw new Error('simulated write outside a transaction');
    o.set(key, copy(value));
    return Promise.resolve(true);
  }

  putSync(key: string, value: Value, options?: { noOverwrite?: boolean }): boolean {
    if (options?.noOverwrite === true && this.raw(key) !== undefined) return false;
    void this.put(key, value);
    return true;
  }

  remove(key: string): Promise<boolean> {
    const o = this.overlay();
    if (o === undefined) throw new Error('simulated write outside a transaction');
    o.set(key, DELETED);
    return Promise.resolve(true);
  }

  /** The committed keys in order, rebuilt only after a commit changed them. */
  private sorted: string[] | undefined;

  invalidate(): void {
    this.sorted = undefined;
  }

  private sortedKeys(range: { start?: string; end?: string }): string[] {
    const o = this.env.txn?.get(this);
    let keys: string[];
    if (o !== undefined && o.size > 0) {
      const all = new Set(this.committed.keys());
      for (const [k, v] of o) v === DELETED ? all.delete(k) : all.add(k);
      keys = [...all].sort();
    } else {
      this.sorted ??= [...this.committed.keys()].sort();
      keys = this.sorted;
    }
    const from = range.start === undefined ? 0 : lowerBound(keys, range.start);
    const to = range.end === undefined ? keys.length : lowerBound(keys, range.end);
    return keys.slice(from, to);
  }

  getKeys(range: { start?: string; end?: string } = {}): string[] {
    return this.sortedKeys(range);
  }

  getRange(range: { start?: string; end?: string } = {}): { key: string; value: Value }[] {
    return this.sortedKeys(range).map((key) => ({ key, value: copy(this.raw(key)) }));
  }
}

/** A shard's databases, shaped as the ledger expects them. */
export function memShardDbs(env: MemEnv): ShardDbs {
  const dbs = { env, ins: env.db(), pos: env.db(), jrn: env.db(), bkt: env.db(), bkj: env.db(), pnd: env.db(), meta: env.db() };
  return dbs as unknown as ShardDbs;
}

/** The first index whose key is not below `key`. */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
