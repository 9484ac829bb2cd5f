/**
 * The operations in flight, by institution and id. Two levels of maps
 * rather than one map of '<institution>/<id>' strings: the id as decoded is
 * a flat string whose hash V8 computes once and keeps, where a joined key
 * would be built, flattened and hashed afresh for every instruction.
 */

export class InflightIndex<E> {
  private readonly byInstitution = new Map<string, Map<string, E>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(institution: string, id: string): E | undefined {
    return this.byInstitution.get(institution)?.get(id);
  }

  /** Add an entry; the caller has checked that none is there. */
  add(institution: string, id: string, entry: E): void {
    let ids = this.byInstitution.get(institution);
    if (ids === undefined) {
      ids = new Map();
      this.byInstitution.set(institution, ids);
    }
    ids.set(id, entry);
    this.count++;
  }

  /** Remove an entry; false if there was none. */
  delete(institution: string, id: string): boolean {
    const ids = this.byInstitution.get(institution);
    if (ids === undefined || !ids.delete(id)) return false;
    this.count--;
    return true;
  }
}
