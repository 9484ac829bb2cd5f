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
import { AMOUNT_CENTS_MAX, bankCodes, BANK_CODES, connectionInstitution, instructionPool, POOL_SIZE } from '../bench/fixture.js';
import { wrkAvailable, WRK_MISSING_NOTE } from '../bench/http-wrk.js';
import { ParamError, resolveParams } from '../bench/params.js';
import { ratioOf, type BenchReport, type SideFigures } from '../bench/report.js';
import { runLedgerTaskBench } from '../bench/ledger-tasks.js';
import { runStorageBench } from '../bench/storage.js';
import { runRestartBench } from '../bench/restart.js';
import { runScaleBench, scaleSummary, type ScaleRow } from '../bench/scale.js';
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
    // The engine's main thread is read on its own; the data folder is sized once each server has stopped.
    expect(e.mainThreadCpuUsPerInstruction).toBeGreaterThan(0);
    expect(s.ratio.mainThreadCpu).toBe(ratioOf(e.mainThreadCpuUsPerInstruction, c.mainThreadCpuUsPerInstruction));
    expect(e.dataBytes).toBeGreaterThan(0);
    expect(c.dataBytes).toBeGreaterThan(0);
    expect(e.dataBytesPerMillion).toBeCloseTo((e.dataBytes! / s.engine.check.engineAuditCleared) * 1e6);
    expect(s.ratio.dataPerMillion).toBe(ratioOf(e.dataBytesPerMillion, c.dataBytesPerMillion));
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

describe('bench fixture', () => {
  it('generates valid bank codes after the 14 real ones, and a deterministic pool within the engine\'s amounts', () => {
    const codes = bankCodes(2000);
    expect(codes.slice(0, 14)).toEqual(BANK_CODES);
    expect(codes.slice(14, 16)).toEqual(['B0015', 'B0016']);
    expect(new Set(codes).size).toBe(2000);
    expect(codes.filter((c) => !/^[A-Z0-9]{2,16}$/.test(c))).toEqual([]);
    const spec = { seed: 7, banks: 500, institutions: 100, pairs: 'skewed' as const };
    const pool = instructionPool(spec);
    expect(pool).toHaveLength(POOL_SIZE);
    expect(instructionPool(spec)).toEqual(pool);
    const amounts = pool.map((e) => e.amount).sort((a, b) => a - b);
    expect(amounts.every((a) => Number.isInteger(a) && a >= 1 && a <= AMOUNT_CENTS_MAX)).toBe(true);
    // Many small, few large: the median is far below the mean.
    const mean = amounts.reduce((x, y) => x + y, 0) / amounts.length;
    expect(amounts[amounts.length >> 1]! * 5).toBeLessThan(mean);
    expect(pool.every((e) => e.payer !== e.payee && codes[e.payerIndex] === e.payer && codes[e.payeeIndex] === e.payee)).toBe(true);
    // Skewed pairs put the first bank in far more instructions than uniform pairs do.
    const share = (pairs: 'skewed' | 'uniform'): number => instructionPool({ ...spec, pairs }).filter((e) => e.payerIndex === 0 || e.payeeIndex === 0).length / POOL_SIZE;
    expect(share('skewed')).toBeGreaterThan(0.1);
    expect(share('uniform')).toBeLessThan(0.02);
    // Fewer connections than institutions: spread over the whole list.
    expect([0, 1, 2, 3].map((k) => connectionInstitution(k, 4, 100))).toEqual([0, 25, 50, 75]);
    expect([0, 1, 2, 3].map((k) => connectionInstitution(k, 4, 2))).toEqual([0, 1, 0, 1]);
  });

  it('takes the new flags and refuses bad ones', () => {
    const large = resolveParams(new Map(), {});
    expect([large.banks, large.institutions, large.pairs, large.httpDriver, large.scaleSizes]).toEqual([500, 100, 'skewed', 'autocannon', [20, 100, 500, 2000]]);
    const p = resolveParams(new Map([['banks', '40'], ['pairs', 'uniform'], ['sizes', '30,4'], ['http-driver', 'wrk']]), { BENCH_INSTITUTIONS: '7' }, { size: 'small' });
    expect([p.banks, p.institutions, p.pairs, p.httpDriver, p.scaleSizes]).toEqual([40, 7, 'uniform', 'wrk', [4, 30]]);
    expect(() => resolveParams(new Map([['banks', '1']]), {})).toThrow(ParamError);
    expect(() => resolveParams(new Map([['pairs', 'zipf']]), {})).toThrow(ParamError);
    expect(() => resolveParams(new Map([['sizes', '20,x']]), {})).toThrow(ParamError);
    expect(() => resolveParams(new Map([['http-driver', 'ab']]), {})).toThrow(ParamError);
    expect(resolveParams(new Map([['rounds', '3']]), {}).scaleRounds).toBe(3);
    expect(resolveParams(new Map(), {}).scaleRounds).toBe(1);
    expect(() => resolveParams(new Map([['rounds', '0']]), {})).toThrow(ParamError);
  });

  it('scale summary: medians over rounds, and each size against the smallest in the same round, plainly and against each run’s ceiling', () => {
    // Two rounds; the machine is twice as fast in the second, for the engine and its ceiling alike.
    const row = (banks: number, round: number, engine: number, ceiling: number): ScaleRow =>
      ({ banks, round, scenario: { engine: { figures: { throughputPerS: engine } }, ceiling: { figures: { throughputPerS: ceiling } }, ratio: { throughput: engine / ceiling } } }) as unknown as ScaleRow;
    const rows = [row(20, 1, 100, 200), row(500, 1, 90, 200), row(500, 2, 180, 400), row(20, 2, 160, 400), row(20, 3, 110, 220), row(500, 3, 99, 220)];
    const [small, large] = scaleSummary(rows);
    expect(small).toMatchObject({ banks: 20, rounds: 3, engineMedianPerS: 110, ceilingMedianPerS: 220, vsSmallest: 1, vsSmallestByCeiling: 1 });
    expect(large!.banks).toBe(500);
    // Per round: 0.9, 1.125, 0.9; the median is 0.9, whatever order the rounds ran the sizes in.
    expect(large!.vsSmallest).toBeCloseTo(0.9);
    expect(large!.vsSmallestByCeiling).toBeCloseTo(0.9);
    expect(large!.ratioMedian).toBeCloseTo(0.45);
  });
});

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

  it('scale: 4 and 30 banks, engine and ceiling at each, read latencies, a table and a chart, audited', async () => {
    const params = resolveParams(new Map(), {}, { size: 'small', resultsDir, durationS: 1, scaleSizes: [4, 30], institutions: 3, probes: 3 });
    const lines: string[] = [];
    const { report, files } = await runScaleBench(params, (l) => lines.push(l));
    expect(report.rows.map((r) => r.banks)).toEqual([4, 30]);
    expect(lines).toHaveLength(2);
    for (const row of report.rows) {
      expectSoundReport({ ...report, kind: 'ws', scenarios: [row.scenario] } as unknown as BenchReport, ['ws-closed']);
      const reads = row.scenario.reads!;
      expect(reads.map((r) => r.name)).toEqual(['GET /v1/positions', 'GET /v1/positions/{bank}', 'GET /v1/snapshots/latest', 'GET /metrics']);
      for (const r of reads) {
        expect(r.status, r.name).toBe(200);
        expect(r.bytes).toBeGreaterThan(0);
        expect(r.count).toBe(3);
        expect(r.p50Ms).toBeGreaterThan(0);
        expect(r.p50Ms).toBeLessThanOrEqual(r.p99Ms);
        expect(r.p99Ms).toBeLessThanOrEqual(r.maxMs);
      }
      // Two connections for three institutions: each speaks for a different one.
      expect(row.scenario.engine.load['institutionsUsed']).toBe(2);
    }
    expect(report.ok).toBe(true);
    expect(report.summary.map((s) => [s.banks, s.rounds])).toEqual([[4, 1], [30, 1]]);
    expect(report.summary[0]!.vsSmallest).toBe(1);
    const md = readFileSync(files.markdown, 'utf8');
    expect(md).toContain('| banks | rounds | engine /s (median) | ceiling /s (median) | ratio (median) |');
    expect(md).toContain('| banks | round | engine /s | ceiling /s | ratio |');
    expect(md).toMatch(/\n\| 30 \| 1 \| [\d,]+ \| [\d,]+ \| [\d.]+ \|/);
    expect(md).toContain(`](${files.svg.split('/').pop()!})`);
    const svg = readFileSync(files.svg, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    expect(JSON.parse(readFileSync(files.json, 'utf8')).ok).toBe(true);
  }, 90_000);

  it('http with wrk: single and batched POSTs from many institutions over 40 uniform banks, audited (autocannon when wrk is absent)', async () => {
    const params = resolveParams(new Map(), {}, { size: 'small', resultsDir, durationS: 1, httpDriver: 'wrk', banks: 40, institutions: 7, pairs: 'uniform' });
    const { report } = await runBench('http', params);
    expectSoundReport(report, ['http-single', 'http-batch']);
    const driver = wrkAvailable() ? 'wrk' : 'autocannon';
    for (const s of report.scenarios) {
      expect(s.description.startsWith(driver)).toBe(true);
      expect(s.engine.load['driver']).toBe(driver);
      expect(s.engine.load['institutionsUsed']).toBe(7);
      expect(s.notes.includes(WRK_MISSING_NOTE)).toBe(driver === 'autocannon');
    }
  }, 90_000);

  it('restart: loads the engine, restarts it on the same data and reports memory and start-up time', async () => {
    const lines: string[] = [];
    const f = await runRestartBench(20_000, (l) => lines.push(l));
    expect(f.instructions).toBe(20_000);
    expect(f.banks).toBe(500);
    expect(f.loadPerS).toBeGreaterThan(0);
    for (const m of [f.afterLoad, f.afterRestart]) {
      expect(m.rssMiB).toBeGreaterThan(0);
      expect(m.anonymousMiB + m.fileMiB).toBeLessThanOrEqual(m.rssMiB + 1);
      // The data files' pages are file-backed pages the engine has read: some, and no more than all of them.
      expect(m.lmdbPagesMiB).toBeGreaterThanOrEqual(0);
      expect(m.lmdbPagesMiB).toBeLessThanOrEqual(m.fileMiB);
    }
    expect(f.afterRestart.lmdbPagesMiB + f.afterLoad.lmdbPagesMiB).toBeGreaterThan(0);
    expect(f.dataFolderMiB).toBeGreaterThan(0);
    expect(f.recoveryMs).toBeGreaterThanOrEqual(0);
    expect(f.spawnToListeningMs).toBeGreaterThanOrEqual(f.recoveryMs);
    expect(lines).toHaveLength(5);
  }, 90_000);

  it('ledger: tasks of each size against plain puts, and the ledger audits clean', async () => {
    const f = await runLedgerTaskBench(1000);
    expect(f.rows.map((r) => [r.banks, r.taskSize])).toEqual([[20, 20], [20, 100], [20, 1000], [500, 20], [500, 100], [500, 1000]]);
    for (const r of f.rows) {
      expect(r.ledger.userUs + r.ledger.systemUs).toBeGreaterThan(0);
      expect(r.plain.userUs + r.plain.systemUs).toBeGreaterThan(0);
      expect(r.ratio).toBeCloseTo((r.ledger.userUs + r.ledger.systemUs) / (r.plain.userUs + r.plain.systemUs));
    }
    expect(f.audits).toEqual([{ banks: 20, cleared: 3000, matches: true }, { banks: 500, cleared: 3000, matches: true }]);
  }, 90_000);

  it('storage: every database’s pages per instruction, in ids of both orders, and the file at least their sum', async () => {
    for (const ids of ['ordered', 'scattered'] as const) {
      const lines: string[] = [];
      const f = await runStorageBench(3000, 20, ids, (l) => lines.push(l));
      expect(f.rows.map((r) => r.database)).toEqual(['ins', 'pos', 'jrn', 'bkt', 'bkj', 'pnd', 'meta']);
      const ins = f.rows.find((r) => r.database === 'ins')!;
      expect(ins.entries).toBe(3000);
      // A record, its key and its node header: more than 20 bytes an instruction, less than a page.
      expect(ins.bytesPerInstruction).toBeGreaterThan(20);
      expect(ins.bytesPerInstruction).toBeLessThan(4096);
      // The bank codes and the record structures are in meta.
      expect(f.rows.find((r) => r.database === 'meta')!.entries).toBe(2);
      expect(f.fileBytes).toBeGreaterThanOrEqual(f.usedPages * 4096);
      expect(lines.at(-1)).toContain('bytes per instruction');
    }
  }, 90_000);
});
