/**
 * Ack latency histograms (HdrHistogram). Generator threads record in
 * microseconds into their own histogram and send it encoded; the main
 * thread merges them, so percentiles are computed over every instruction
 * rather than averaged over threads, which would be wrong.
 */

import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';

/** Two minutes in microseconds: anything slower is a failure anyway, and is clamped here rather than lost. */
export const LATENCY_US_MAX = 120_000_000;

export function latencyHistogram(): Histogram {
  return build({ bitBucketSize: 32, autoResize: false, lowestDiscernibleValue: 1, highestTrackableValue: LATENCY_US_MAX, numberOfSignificantValueDigits: 3 });
}

/** Record `count` instructions acknowledged `elapsedMs` after their frame was sent. */
export function recordLatency(h: Histogram, elapsedMs: number, count: number): void {
  const us = Math.min(LATENCY_US_MAX, Math.max(1, Math.round(elapsedMs * 1000)));
  h.recordValueWithCount(us, count);
}

export function encodeHistogram(h: Histogram): string {
  return encodeIntoCompressedBase64(h);
}

export function mergeHistograms(encoded: readonly string[]): Histogram {
  const merged = latencyHistogram();
  for (const e of encoded) {
    const h = decodeFromCompressedBase64(e);
    merged.add(h);
    h.destroy();
  }
  return merged;
}

export interface LatencyMs {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Instructions behind these percentiles. */
  count: number;
}

export function latencySummaryMs(h: Histogram): LatencyMs {
  const ms = (us: number): number => Math.round(us) / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    count: h.totalCount,
  };
}
