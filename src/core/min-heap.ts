/**
 * A binary min-heap keyed by a number: the timer queue of pending
 * two-phase instructions (queries and deadlines), where a sweep over every
 * pending instruction would cost too much.
 */

export class MinHeap<T> {
  private readonly keys: number[] = [];
  private readonly values: T[] = [];

  get size(): number {
    return this.keys.length;
  }

  push(key: number, value: T): void {
    this.keys.push(key);
    this.values.push(value);
    let i = this.keys.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.keys[parent]! <= key) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  peekKey(): number | undefined {
    return this.keys[0];
  }

  pop(): T | undefined {
    const n = this.keys.length;
    if (n === 0) return undefined;
    const top = this.values[0]!;
    this.swap(0, n - 1);
    this.keys.pop();
    this.values.pop();
    this.siftDown(0, n - 1);
    return top;
  }

  /** Keep only the values `keep` accepts, and restore the heap order (O(n)). */
  retain(keep: (value: T) => boolean): void {
    let n = 0;
    for (let i = 0; i < this.keys.length; i++) {
      if (!keep(this.values[i]!)) continue;
      this.keys[n] = this.keys[i]!;
      this.values[n] = this.values[i]!;
      n++;
    }
    this.keys.length = n;
    this.values.length = n;
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i, n);
  }

  private siftDown(start: number, size: number): void {
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && this.keys[l]! < this.keys[m]!) m = l;
      if (r < size && this.keys[r]! < this.keys[m]!) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const k = this.keys[a]!;
    this.keys[a] = this.keys[b]!;
    this.keys[b] = k;
    const v = this.values[a]!;
    this.values[a] = this.values[b]!;
    this.values[b] = v;
  }
}
