/**
 * Plain counters that the hot path bumps and the metrics read at scrape
 * time: cheaper than a labelled prom-client call per instruction.
 */

export class LabelledCounts {
  private readonly counts = new Map<string, number>();

  /** Labels are joined with '|', which no label value here contains. */
  add(key: string, n = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  entries(): IterableIterator<[string, number]> {
    return this.counts.entries();
  }
}

/** What the engine counts as it runs, for /metrics. */
export class EngineCounters {
  /** 'type|status': cleared, pending, duplicate, declined, expired, reversed. */
  readonly instructions = new LabelledCounts();
  /** Rejections by result code. */
  readonly rejections = new LabelledCounts();
  /** 'in|op' for frames received, 'out|op' for frames sent. */
  readonly wsMessages = new LabelledCounts();
  readonly wsConnectionsOpened = new LabelledCounts();
  /** Connections closed by the engine because they did not read (send buffer over its bound). */
  wsBackpressureCloses = 0;
  /** Cut-offs by trigger: 'operator' or 'schedule'. */
  readonly cutoffs = new LabelledCounts();
  queriesSent = 0;
  /** Shard resynchronisations from disk, by shard. */
  readonly resyncs = new LabelledCounts();
  lawViolations = 0;
}
