import { describe, it, expect } from 'vitest';
import { AssertionError } from '../../src/core/assert.js';
import { EngineCounters } from '../../src/core/counters.js';
import { EngineMetrics } from '../../src/metrics/metrics.js';
import type { MetricsSource } from '../../src/metrics/metrics-source.js';
import { LiveView } from '../../src/view/live-view.js';

const BANKS = ['ABC', 'BOC', 'CCB'];
const BATCH = '20260101-001';

/** What the engine would hand the metrics, over a real live view. */
function sourceOver(view: LiveView): MetricsSource {
  return {
    config: { shards: 2, workers: 1, snapshotIntervalMs: 1000, banks: BANKS.map((code) => ({ code })), limits: { shardQueueMax: 100, shardBytesMax: 1 << 20 } },
    counters: new EngineCounters(),
    banks: BANKS,
    ready: true,
    startedAt: Date.now(),
    openBatchOpenedAt: Date.now(),
    lastClosed: undefined,
    lastSnapshotDurationMs: 0,
    shardLoad: () => ({ inflight: 0, queued: 0, tasksAtWorker: 0 }),
    positions: () => view.overview(),
    conservationImbalance: () => view.conservationImbalance(),
    pendingDebit: (bank) => view.pendingDebit(bank),
    pendingInstructions: () => 0,
    twoPhaseAtStep: () => 0,
    mandatesWithStatus: () => 0,
    timerEvents: () => 0,
    overdueInstructions: () => 0,
    latestSnapshot: () => undefined,
    unsettledBatches: 0,
    workerStats: () => Promise.resolve({ eventLoopLagMeanSeconds: 0, eventLoopLagP99Seconds: 0, heapUsedBytes: 0, shardBytes: {} }),
  };
}

/** The samples of one metric in an exposition text, by their label part ('' when unlabelled). */
function samples(text: string, name: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m !== null && m[1] === name) out.set(m[2] ?? '', m[3]!);
  }
  return out;
}

/** A balanced delta: ABC pays BOC 700 and BOC pays CCB 200. */
function balanced(): Parameters<LiveView['apply']>[0] {
  return {
    batch: BATCH,
    flows: [
      { a: 'ABC', b: 'BOC', aToB: 700n, bToA: 0n, countAToB: 1, countBToA: 0 },
      { a: 'BOC', b: 'CCB', aToB: 200n, bToA: 0n, countAToB: 1, countBToA: 0 },
    ],
    institutions: [],
  };
}

/** A hand-made delta no shard would report: ABC pays 500 to a bank that is not a participant. */
function leaking(): Parameters<LiveView['apply']>[0] {
  return { batch: BATCH, flows: [{ a: 'ABC', b: 'ZZZ', aToB: 500n, bToA: 0n, countAToB: 1, countBToA: 0 }], institutions: [] };
}

describe('LiveView.conservationImbalance', () => {
  it('is zero for what shards report, in agreement with the asserted overview', () => {
    const view = new LiveView(BANKS, BATCH);
    expect(view.conservationImbalance()).toBe(0n);
    view.apply(balanced(), 0);
    expect(view.conservationImbalance()).toBe(0n);
    expect(view.overview().banks.reduce((sum, b) => sum + b.net, 0n)).toBe(0n);
  });

  it('reads a broken conservation that overview() refuses to report', () => {
    const view = new LiveView(BANKS, BATCH);
    view.apply(balanced(), 0);
    view.apply(leaking(), 1);
    expect(() => view.overview()).toThrow(AssertionError);
    // ABC's net drops by 500 with no participant receiving it.
    expect(view.conservationImbalance()).toBe(-500n);
    expect(view.conservationImbalance('20991231-001')).toBe(0n);
  });
});

describe('EngineMetrics scrape', () => {
  it('exports a zero imbalance and the positions when the laws hold', async () => {
    const view = new LiveView(BANKS, BATCH);
    view.apply(balanced(), 0);
    const { body } = await new EngineMetrics(sourceOver(view)).text();
    expect(samples(body, 'netting_conservation_imbalance_cents').get('')).toBe('0');
    expect(samples(body, 'netting_position_net_cents').get('{bank="BOC"}')).toBe('500');
    expect(samples(body, 'netting_gross_cents').get('')).toBe('900');
    // Every guarded metric has its failure count, at 0.
    const failures = samples(body, 'netting_metrics_collect_failures_total');
    expect(failures.get('{metric="netting_position_net_cents"}')).toBe('0');
    expect([...failures.values()].every((v) => v === '0')).toBe(true);
  });

  it('exports every label value known at start from 0 on a fresh engine', async () => {
    const { body } = await new EngineMetrics(sourceOver(new LiveView(BANKS, BATCH))).text();
    const cutoffs = samples(body, 'netting_batch_cutoffs_total');
    expect(cutoffs.get('{trigger="operator"}')).toBe('0');
    expect(cutoffs.get('{trigger="schedule"}')).toBe('0');
    const instructions = samples(body, 'netting_instructions_total');
    expect(instructions.size).toBe(5 * 6);
    expect(instructions.get('{type="payout",status="cleared"}')).toBe('0');
    expect(instructions.get('{type="agreement",status="expired"}')).toBe('0');
    expect(samples(body, 'netting_rejections_total').get('{code="DEBIT_CAP_EXCEEDED"}')).toBe('0');
    expect(samples(body, 'netting_shard_resyncs_total')).toEqual(new Map([['{shard="0"}', '0'], ['{shard="1"}', '0']]));
    expect(samples(body, 'netting_ack_latency_seconds_count')).toEqual(new Map([['{transport="http"}', '0'], ['{transport="ws"}', '0']]));
    expect(samples(body, 'netting_shard_task_seconds_count').get('{shard="1"}')).toBe('0');
    expect(samples(body, 'netting_settlement_unsettled_batches').get('')).toBe('0');
  });

  it('adds to the zeros what the engine counted, an unforeseen label value included', async () => {
    const source = sourceOver(new LiveView(BANKS, BATCH));
    const counters = source.counters as EngineCounters;
    counters.cutoffs.add('operator');
    counters.instructions.add('payout|cleared', 3);
    counters.instructions.add('unknown|reversed');
    const { body } = await new EngineMetrics(source).text();
    expect(samples(body, 'netting_batch_cutoffs_total')).toEqual(new Map([['{trigger="operator"}', '1'], ['{trigger="schedule"}', '0']]));
    const instructions = samples(body, 'netting_instructions_total');
    expect(instructions.get('{type="payout",status="cleared"}')).toBe('3');
    expect(instructions.get('{type="unknown",status="reversed"}')).toBe('1');
    expect(instructions.size).toBe(5 * 6 + 1);
  });

  it('succeeds with an imbalance, shows it on the gauge, and leaves the failing gauges without a value', async () => {
    const view = new LiveView(BANKS, BATCH);
    view.apply(balanced(), 0);
    const failures: string[] = [];
    const metrics = new EngineMetrics(sourceOver(view), (metric) => failures.push(metric));
    // A first scrape with the laws holding gives every gauge a value that a failure must not leave behind.
    await metrics.text();
    view.apply(leaking(), 1);

    const { body } = await metrics.text();
    expect(samples(body, 'netting_conservation_imbalance_cents').get('')).toBe('-500');
    // The gauges read through the asserting overview have no value rather than a stale one.
    expect(samples(body, 'netting_position_net_cents').size).toBe(0);
    // prom-client writes NaN as 'Nan'; Prometheus reads the word in any case.
    expect(samples(body, 'netting_gross_cents').get('')?.toLowerCase()).toBe('nan');
    expect(samples(body, 'netting_efficiency_ratio').get('')?.toLowerCase()).toBe('nan');
    // Everything else is still there.
    expect(samples(body, 'netting_pending_debit_cents').get('{bank="ABC"}')).toBe('0');
    expect(samples(body, 'netting_ready').get('')).toBe('1');
    expect(samples(body, 'netting_metrics_collect_failures_total').get('{metric="netting_position_net_cents"}')).toBe('1');
    expect(failures).toContain('netting_gross_cents');
    expect(failures).not.toContain('netting_conservation_imbalance_cents');

    // A failure is reported when it starts, not at every scrape; the count goes on.
    const reported = failures.length;
    const again = (await metrics.text()).body;
    expect(failures.length).toBe(reported);
    expect(samples(again, 'netting_metrics_collect_failures_total').get('{metric="netting_position_net_cents"}')).toBe('2');
    expect(samples(again, 'netting_conservation_imbalance_cents').get('')).toBe('-500');
  });
});
