/**
 * The latency of the engine's read endpoints at a run's size: the open
 * batch's positions, one bank's positions with its counterparties, the
 * latest snapshot and a Prometheus scrape, each asked `count` times one
 * request at a time (after one untimed request), with the operator's
 * token (`GET /metrics` takes a `metrics` or `operator` token). They are
 * taken right after a load, with the run's data in place and nothing else
 * asking, so they show what the size costs rather than queueing.
 */

import { performance } from 'node:perf_hooks';
import { OPERATOR_TOKEN } from './fixture.js';

const REQUEST_TIMEOUT_MS = 30_000;

export interface EndpointLatency {
  /** What is asked, e.g. `GET /v1/positions/{bank}`. */
  name: string;
  path: string;
  /** Status of the last answer (every answer is checked). */
  status: number;
  /** Size of the last answer's body. */
  bytes: number;
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** The value at percentile `q` (0..100) of sorted samples, by nearest rank. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((q / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

async function timeGet(base: string, path: string): Promise<{ ms: number; status: number; bytes: number }> {
  const t0 = performance.now();
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const body = await res.arrayBuffer();
  return { ms: performance.now() - t0, status: res.status, bytes: body.byteLength };
}

/** The endpoints timed: `bank` is the one whose own positions are asked (the largest, with the most counterparties). */
export function probeTargets(bank: string): { name: string; path: string }[] {
  return [
    { name: 'GET /v1/positions', path: '/v1/positions' },
    { name: 'GET /v1/positions/{bank}', path: `/v1/positions/${bank}` },
    { name: 'GET /v1/snapshots/latest', path: '/v1/snapshots/latest' },
    { name: 'GET /metrics', path: '/metrics' },
  ];
}

/** Time each endpoint `count` times; problems name any answer other than 200. */
export async function probeReads(base: string, bank: string, count: number): Promise<{ endpoints: EndpointLatency[]; problems: string[] }> {
  const endpoints: EndpointLatency[] = [];
  const problems: string[] = [];
  for (const { name, path } of probeTargets(bank)) {
    let last = await timeGet(base, path);
    const samples: number[] = [];
    let failures = 0;
    for (let i = 0; i < count; i++) {
      last = await timeGet(base, path);
      if (last.status !== 200) failures++;
      samples.push(last.ms);
    }
    if (failures > 0) problems.push(`${name}: ${failures} of ${count} answers were not 200 (last ${last.status})`);
    samples.sort((a, b) => a - b);
    const round = (ms: number): number => Math.round(ms * 1000) / 1000;
    endpoints.push({ name, path, status: last.status, bytes: last.bytes, count, p50Ms: round(percentile(samples, 50)), p99Ms: round(percentile(samples, 99)), maxMs: round(samples[samples.length - 1]!) });
  }
  return { endpoints, problems };
}
