/**
 * The operations in flight, findable by institution and id.
 *
 * Almost every submission carries an id the id filter has never seen, and
 * almost none is ever looked up while in flight. Such an entry is only
 * listed (`addUnindexed`); the listed entries still in flight are put into
 * the maps the first time anything is looked up, so a look-up sees every
 * entry, and the common path costs no map insert or delete.
 *
 * The maps are two levels, institution then id, rather than one map of
 * '<institution>/<id>' strings: the id as decoded is a flat string whose
 * hash V8 computes once, where a joined key would be built, flattened and
 * hashed afresh.
 */

import { AssertionError } from '../core/assert.js';

export interface IndexedEntry {
  /** The operation: [kind, institution, id, ...]. */
  readonly op: readonly [string, string, string, ...unknown[]];
  /** Where the entry is: listed only, in the maps, or out of flight. */
  place: 'listed' | 'mapped' | 'gone';
}

export class InflightIndex<E extends IndexedEntry> {
  private readonly byInstitution = new Map<string, Map<string, E>>();
  private listed: E[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(institution: string, id: string): E | undefined {
    if (this.listed.length > 0) this.mapListed();
    return this.byInstitution.get(institution)?.get(id);
  }

  /** Add an entry that must be findable at once (the caller has checked that no entry has its key). */
  add(entry: E): void {
    entry.place = 'mapped';
    this.map(entry);
    this.count++;
  }

  /** Add an entry whose key is certainly not in flight (the id filter had never seen it). */
  addUnindexed(entry: E): void {
    entry.place = 'listed';
    this.listed.push(entry);
    this.count++;
    // Entries that left flight are dropped from the list now and then, so it stays within twice the live ones.
    if (this.listed.length > 2 * this.count + 1024) this.listed = this.listed.filter((e) => e.place === 'listed');
  }

  delete(entry: E): void {
    if (entry.place === 'gone') throw new AssertionError(`in-flight entry ${entry.op[1]}/${entry.op[2]} removed twice`);
    if (entry.place === 'mapped' && this.byInstitution.get(entry.op[1])?.delete(entry.op[2]) !== true) {
      throw new AssertionError(`no in-flight entry for ${entry.op[1]}/${entry.op[2]}`);
    }
    entry.place = 'gone';
    this.count--;
  }

  private mapListed(): void {
    for (const e of this.listed) {
      if (e.place !== 'listed') continue;
      e.place = 'mapped';
      this.map(e);
    }
    this.listed = [];
  }

  private map(entry: E): void {
    const [, institution, id] = entry.op;
    let ids = this.byInstitution.get(institution);
    if (ids === undefined) {
      ids = new Map();
      this.byInstitution.set(institution, ids);
    }
    ids.set(id, entry);
  }
}
