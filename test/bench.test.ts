/**
 * The benches at their small size, so that they cannot rot: each runs the
 * real engine and the bare ceiling for a second or two under real load,
 * and the report must hold sensible figures and a clean audit. These are
 * not measurements; the large size (npm run bench) is.
 */

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveParams } from '../bench/params.js';
import { ratioOf, type BenchReport, type SideFigures } from '../bench/report.js';
import { runLedgerTaskBench } from '../bench/ledger-tasks.js';
import { runRestartBench } from '../bench/restart.js';
import { runBench } from '../bench/suite.js';

const resultsDir = mkdtempSync(join(tmpdir(), 'netting-bench-test-'));
afterAll(() => rmSync(resultsDir, { recursive: true, force: true }));

function expectOrderedLatency(f: SideFigures): void {
  const l = f.latencyMs;
  expect(l.count).toBeGreaterThan(0);
  expect(l.p50).toBeGreaterThanOrEqual(0);
  expect(l.p50).toBeLessThanOrEqual(l.p99);
  expect(l.p99).toBeLessThanOrEqual(l.p999);
  expect(l.p999).toBeLessThanOrEqual(l.max);
}

function expectSoundReport(report: BenchReport, names: string[]): void {
  expect(report.scenarios.map((s) => s.name)).toEqual(names);
  for (const s of report.scenarios) {
    expect(s.problems, s.name).toEqual([]);
    expect(s.engine.figures.throughputPerS).toBeGreaterThan(0);
    expect(s.ceiling.figures.throughputPerS).toBeGreaterThan(0);
    expectOrderedLatency(s.engine.figures);
    expectOrderedLatency(s.ceiling.figures);
    // Every ratio is engine ÷ ceiling, and is left out only where the ceiling's figure is zero.
    const e = s.engine.figures;
    const c = s.ceiling.figures;
    expect(s.ratio.throughput).toBeGreaterThan(0);
    expect(s.ratio.throughput).toBe(ratioOf(e.throughputPerS, c.throughputPerS));
    // CPU is read from /proc over the load: every acknowledged instruction cost each server something.
    expect(e.cpuUsPerInstruction).toBeGreaterThan(0);
    expect(c.cpuUsPerInstruction).toBeGreaterThan(0);
    expect(s.ratio.cpu).toBe(ratioOf(e.cpuUsPerInstruction, c.cpuUsPerInstruction));
    expect(s.ratio.p50).toBe(ratioOf(e.latencyMs.p50, c.latencyMs.p50));
    expect(s.ratio.p99).toBe(ratioOf(e.latencyMs.p99, c.latencyMs.p99));
    expect(s.ratio.p999).toBe(ratioOf(e.latencyMs.p999, c.latencyMs.p999));
    expect(s.ratio.max).toBe(ratioOf(e.latencyMs.max, c.latencyMs.max));
    expect(s.ratio.rss).toBe(ratioOf(e.rssBytes, c.rssBytes));
    expect(e.rssBytes).toBeGreaterThan(0);
    const audit = s.engine.check;
    expect(audit.ok, audit.problems.join('\n')).toBe(true);
    expect(audit.conservation).toBe(true);
    expect(audit.netSumCents).toBe('0');
    expect(audit.engineAuditOk).toBe(true);
    expect(audit.everyResultCleared).toBe(true);
    expect(audit.positionsMatchModel).toBe(true);
    expect(audit.ackedCleared).toBeGreaterThan(0);
    expect(audit.engineAuditCleared).toBe(audit.expectedCleared);
    expect(s.ceiling.check.ok, s.ceiling.check.problems.join('\n')).toBe(true);
    expect(s.engine.exitCode).toBe(0);
    expect(s.ceiling.exitCode).toBe(0);
  }
  expect(report.ok).toBe(true);
  expect(report.machine.cores).toBeGreaterThan(0);
}

describe('benches at the small size', () => {
  it('http: single and batched POSTs against the engine and the ceiling, audited', async () => {
    const params = resolveParams(new Map(), {}, { size: 'small', resultsDir });
    const { report, files } = await runBench('http', params);
    expectSoundReport(report, ['http-single', 'http-batch']);
    expect(JSON.parse(readFileSync(files.json, 'utf8')).ok).toBe(true);
    expect(readFileSync(files.markdown, 'utf8')).toContain('## http-single');
  }, 90_000);

  it('ws: closed and open loop msgpack streams against the engine and the ceiling, audited', async () => {
    const params = resolveParams(new Map(), {}, { size: 'small', resultsDir });
    const { report, files } = await runBench('ws', params);
    expectSoundReport(report, ['ws-closed', 'ws-open']);
    expect(report.scenarios[1]!.engine.load['offeredPerS']).toBe(params.wsOfferedPerS);
    expect(readFileSync(files.markdown, 'utf8')).toContain('## ws-open');
  }, 90_000);

  it('restart: loads the engine, restarts it on the same data and reports memory and start-up time', async () => {
    const lines: string[] = [];
    const f = await runRestartBench(20_000, (l) => lines.push(l));
    expect(f.instructions).toBe(20_000);
    expect(f.loadPerS).toBeGreaterThan(0);
    for (const m of [f.afterLoad, f.afterRestart]) {
      expect(m.rssMiB).toBeGreaterThan(0);
      expect(m.anonymousMiB + m.lmdbPagesMiB).toBeLessThanOrEqual(m.rssMiB + 1);
    }
    expect(f.dataFolderMiB).toBeGreaterThan(0);
    expect(f.recoveryMs).toBeGreaterThanOrEqual(0);
    expect(f.spawnToListeningMs).toBeGreaterThanOrEqual(f.recoveryMs);
    expect(lines).toHaveLength(5);
  }, 90_000);

  it('ledger: tasks of each size against plain puts, and the ledger audits clean', async () => {
    const f = await runLedgerTaskBench(1000);
    expect(f.rows.map((r) => r.taskSize)).toEqual([20, 100, 1000]);
    for (const r of f.rows) {
      expect(r.ledger.userUs + r.ledger.systemUs).toBeGreaterThan(0);
      expect(r.plain.userUs + r.plain.systemUs).toBeGreaterThan(0);
      expect(r.ratio).toBeCloseTo((r.ledger.userUs + r.ledger.systemUs) / (r.plain.userUs + r.plain.systemUs));
    }
    expect(f.cleared).toBe(3000);
    expect(f.matches).toBe(true);
  }, 90_000);
});
