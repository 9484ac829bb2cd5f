/**
 * `npm run bench:scale`: how the engine fares as the platform grows, over
 * numbers of banks (20, 100, 500 and 2,000 by default, `--sizes` to
 * change). At each size, in the same run, the WebSocket closed loop drives
 * the engine and then the bare ceiling with the same fixture (that many
 * banks in both configurations, the institutions, the pairs and amounts),
 * and the report takes for each: throughput, server CPU per instruction,
 * the engine's main-thread CPU per instruction, resident memory, the data
 * folder per million instructions, and the latency of the engine's read
 * endpoints (positions, one bank's positions, the latest snapshot, a
 * scrape) with that run's data in place. Every size ends with the audit.
 *
 * The report is Markdown with a table and an SVG chart of throughput and
 * the engine/ceiling ratio against the number of banks, beside the JSON,
 * in bench/results/ (scale-<time>.* and latest-scale.*).
 */

import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { bankCodes } from './fixture.js';
import type { BenchParams } from './params.js';
import { probeReads, probeTargets, type EndpointLatency } from './probes.js';
import { CEILING_NOTE, machine, mib, n, stamp, type Machine, type ScenarioReport } from './report.js';
import { wsScenario } from './suite.js';
import { lineChart } from './svg-plot.js';

export interface ScaleRow {
  banks: number;
  /** The sweep it was measured in (from 1). */
  round: number;
  /** The WebSocket closed-loop scenario at this size, engine and ceiling, with the engine's read latencies. */
  scenario: ScenarioReport;
}

export interface ScaleReport {
  kind: 'scale';
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  params: BenchParams;
  ceiling: string;
  /** The bank whose own positions are read at each size: the first, the largest under skewed pairs. */
  probedBank: string;
  rows: ScaleRow[];
  /** Per number of banks, medians over the rounds. */
  summary: ScaleSummaryRow[];
  ok: boolean;
}

/**
 * One number of banks over every round: the medians of the engine's and
 * the ceiling's throughput and of their ratio, and the engine's throughput
 * against the smallest size's in the same round, plainly and with each
 * run divided by its own ceiling (which cancels a drift between the runs).
 */
export interface ScaleSummaryRow {
  banks: number;
  rounds: number;
  engineMedianPerS: number;
  ceilingMedianPerS: number;
  ratioMedian: number;
  /** Median over rounds of engine(this size) / engine(smallest size). */
  vsSmallest: number;
  /** Median over rounds of ratio(this size) / ratio(smallest size). */
  vsSmallestByCeiling: number;
}

/** The median; NaN for none. */
function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Medians per number of banks, in increasing order of banks, from rows of one or more rounds. */
export function scaleSummary(rows: readonly ScaleRow[]): ScaleSummaryRow[] {
  const sizes = [...new Set(rows.map((r) => r.banks))].sort((a, b) => a - b);
  const smallest = sizes[0];
  const ofRound = new Map<string, ScaleRow>();
  for (const r of rows) ofRound.set(`${r.round}|${r.banks}`, r);
  return sizes.map((banks) => {
    const mine = rows.filter((r) => r.banks === banks);
    const vs: number[] = [];
    const vsByCeiling: number[] = [];
    for (const r of mine) {
      const base = ofRound.get(`${r.round}|${smallest}`);
      if (base === undefined) continue;
      vs.push(r.scenario.engine.figures.throughputPerS / base.scenario.engine.figures.throughputPerS);
      const ratio = r.scenario.ratio.throughput;
      const baseRatio = base.scenario.ratio.throughput;
      if (ratio !== null && baseRatio !== null) vsByCeiling.push(ratio / baseRatio);
    }
    return {
      banks,
      rounds: mine.length,
      engineMedianPerS: median(mine.map((r) => r.scenario.engine.figures.throughputPerS)),
      ceilingMedianPerS: median(mine.map((r) => r.scenario.ceiling.figures.throughputPerS)),
      ratioMedian: median(mine.flatMap((r) => (r.scenario.ratio.throughput === null ? [] : [r.scenario.ratio.throughput]))),
      vsSmallest: median(vs),
      vsSmallestByCeiling: median(vsByCeiling),
    };
  });
}

/** The summary table: one row per number of banks, medians over the rounds. */
export function summaryTable(r: ScaleReport): string {
  const smallest = r.summary[0]?.banks ?? 0;
  const lines = [
    `| banks | rounds | engine /s (median) | ceiling /s (median) | ratio (median) | engine ÷ engine at ${smallest} banks, same round (median) | the same, each run against its own ceiling (median) |`,
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of r.summary) {
    lines.push(`| ${n(s.banks)} | ${s.rounds} | ${n(s.engineMedianPerS)} | ${n(s.ceilingMedianPerS)} | ${n(s.ratioMedian, 3)} | ${n(s.vsSmallest, 3)} | ${n(s.vsSmallestByCeiling, 3)} |`);
  }
  return lines.join('\n');
}

export interface ScaleRun {
  report: ScaleReport;
  files: { json: string; markdown: string; svg: string };
}

function read(row: ScaleRow, name: string): EndpointLatency | undefined {
  return row.scenario.reads?.find((r) => r.name === name);
}

function readCell(e: EndpointLatency | undefined): string {
  return e === undefined ? '—' : `${n(e.p50Ms, 1)} / ${n(e.p99Ms, 1)}`;
}

/** The main table: one row per number of banks. */
export function scaleTable(r: ScaleReport): string {
  const names = probeTargets('{bank}').map((t) => t.name);
  const lines = [
    `| banks | round | engine /s | ceiling /s | ratio | CPU µs/instr., engine / ceiling | engine main thread µs/instr. | RSS MiB, engine / ceiling | data MiB per million, engine / ceiling | ${names.map((x) => `${x.replace(/^GET /, '')} p50 / p99 ms`).join(' | ')} | audit |`,
    `| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ${names.map(() => '---:').join(' | ')} | --- |`,
  ];
  for (const row of r.rows) {
    const s = row.scenario;
    const e = s.engine.figures;
    const c = s.ceiling.figures;
    lines.push(
      `| ${n(row.banks)} | ${row.round} | ${n(e.throughputPerS)} | ${n(c.throughputPerS)} | ${n(s.ratio.throughput, 3)} | ${n(e.cpuUsPerInstruction, 1)} / ${n(c.cpuUsPerInstruction, 1)} | ` +
        `${n(e.mainThreadCpuUsPerInstruction, 1)} | ${mib(e.rssBytes)} / ${mib(c.rssBytes)} | ${mib(e.dataBytesPerMillion)} / ${mib(c.dataBytesPerMillion)} | ` +
        `${names.map((x) => readCell(read(row, x))).join(' | ')} | ${s.ok ? 'ok' : '**FAILED**'} |`,
    );
  }
  return lines.join('\n');
}

/** Size and spread of each read's answer, by number of banks. */
function readsTable(r: ScaleReport): string {
  const lines = ['| banks | endpoint | answer (KiB) | p50 (ms) | p99 (ms) | max (ms) | requests |', '| ---: | --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const row of r.rows) {
    for (const e of row.scenario.reads ?? []) {
      lines.push(`| ${n(row.banks)} | ${e.name} | ${n(e.bytes / 1024, 1)} | ${n(e.p50Ms, 2)} | ${n(e.p99Ms, 2)} | ${n(e.maxMs, 2)} | ${n(e.count)} |`);
    }
  }
  return lines.join('\n');
}

export function scaleChart(r: ScaleReport): string {
  const xs = r.summary.map((s) => s.banks);
  return lineChart({
    title: `Engine and bare ceiling by number of banks (WebSocket closed loop, ${r.params.pairs} pairs)`,
    xLabel: 'participant banks (logarithmic)',
    xs,
    panels: [
      {
        yLabel: 'acknowledged instructions/s',
        series: [
          { name: 'engine', color: '#1f77b4', values: r.summary.map((s) => s.engineMedianPerS) },
          { name: 'bare ceiling', color: '#888888', values: r.summary.map((s) => s.ceilingMedianPerS), dashed: true },
        ],
      },
      {
        yLabel: 'engine ÷ ceiling',
        yMinTop: 1,
        reference: 1,
        series: [{ name: 'throughput ratio', color: '#d62728', values: r.summary.map((s) => s.ratioMedian) }],
      },
    ],
  });
}

export function scaleMarkdown(r: ScaleReport, svgFile: string): string {
  const m = r.machine;
  const p = r.params;
  const lines = [
    `# Bench report: scale (${r.ok ? 'ok' : 'FAILED'})`,
    '',
    `${r.startedAt} → ${r.finishedAt}`,
    '',
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${n(m.memoryBytes / 2 ** 30, 1)} GiB, Node ${m.node}, ${m.platform}; load average at start ${n(m.loadAverage1mAtStart, 2)}.`,
    '',
    `At each number of banks: WebSocket closed loop, msgpack submit frames of ${p.wsBatchSize}, ${p.wsConnections} connections on ${p.wsThreads} generator threads, ` +
      `window ${p.wsWindowFrames} frames; ${p.durationS} s per run (${p.warmupS} s warm-up left out), the engine then the bare ceiling; ` +
      `${n(p.institutions)} institutions, ${p.pairs} pairs, skewed amounts; engine ${p.shards} shards, ${p.workers} workers; seed ${p.seed}.`,
    '',
    `CPU is each server's (every thread) over the load, per instruction answered; the main thread's is read from /proc/<pid>/task/<pid>/stat. ` +
      'RSS is taken right after the load. The data folder is its disk space once the server has stopped, per million instructions stored. ' +
      `Reads are timed after the load, one request at a time, ${p.probes} of each (after one untimed), with the operator's token; ` +
      `\`/v1/positions/{bank}\` asks for ${r.probedBank}.`,
    '',
    `${r.params.scaleRounds} round${r.params.scaleRounds === 1 ? '' : 's'}: each sweep of the sizes runs in the reverse order of the one before, and the summary takes medians over them.`,
    '',
    summaryTable(r),
    '',
    `![throughput and ratio by number of banks](${svgFile})`,
    '',
    '## Every run',
    '',
    scaleTable(r),
    '',
    '## Read endpoints',
    '',
    readsTable(r),
    '',
    `Ceiling: ${r.ceiling}`,
    '',
  ];
  for (const row of r.rows) {
    const s = row.scenario;
    const a = s.engine.check;
    lines.push(
      `## ${n(row.banks)} banks, round ${row.round}`,
      '',
      a.ok
        ? `Audit ok: Σ net = ${a.netSumCents}, GET /v1/audit ok, cleared ${n(a.engineAuditCleared)} = ${n(a.ackedCleared)} acknowledged + ${n(a.unansweredCommitted)} committed unanswered; every bank's net equals the model.`
        : `**AUDIT FAILED**: ${a.problems.join('; ')}`,
      `Ack latency p50 / p99 (ms): engine ${n(s.engine.figures.latencyMs.p50, 2)} / ${n(s.engine.figures.latencyMs.p99, 2)}, ceiling ${n(s.ceiling.figures.latencyMs.p50, 2)} / ${n(s.ceiling.figures.latencyMs.p99, 2)}.`,
      '',
    );
    if (s.notes.length > 0) lines.push('Notes:', ...s.notes.map((x) => `- ${x}`), '');
    if (s.problems.length > 0) lines.push('Problems:', ...s.problems.map((x) => `- ${x}`), '');
  }
  return lines.join('\n');
}

/** Write `scale-<time>.json/.md/.svg` and `latest-scale.*` copies (the latest Markdown points at the latest chart). */
export function writeScaleReport(r: ScaleReport, dir: string): ScaleRun['files'] {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `scale-${stamp(r.startedAt)}`);
  const files = { json: `${base}.json`, markdown: `${base}.md`, svg: `${base}.svg` };
  const svg = scaleChart(r);
  writeFileSync(files.json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(files.svg, svg);
  writeFileSync(files.markdown, `${scaleMarkdown(r, basename(files.svg))}\n`);
  copyFileSync(files.json, join(dir, 'latest-scale.json'));
  writeFileSync(join(dir, 'latest-scale.svg'), svg);
  writeFileSync(join(dir, 'latest-scale.md'), `${scaleMarkdown(r, 'latest-scale.svg')}\n`);
  return files;
}

/** Sweep the sizes (`scaleRounds` times, each sweep in the reverse order of the one before), then write the report. */
export async function runScaleBench(p: BenchParams, progress: (line: string) => void = () => undefined): Promise<ScaleRun> {
  const startedAt = new Date().toISOString();
  const m = machine();
  const probedBank = bankCodes(2)[0]!;
  const rows: ScaleRow[] = [];
  for (let round = 1; round <= p.scaleRounds; round++) {
    const sizes = round % 2 === 1 ? p.scaleSizes : [...p.scaleSizes].reverse();
    for (const banks of sizes) {
      const sized: BenchParams = { ...p, banks };
      const scenario = await wsScenario('closed', sized, (base) => probeReads(base, probedBank, p.probes));
      rows.push({ banks, round, scenario });
      const reads = (scenario.reads ?? []).map((e) => `${e.name.replace(/^GET /, '')} ${n(e.p50Ms, 1)}/${n(e.p99Ms, 1)} ms`).join(', ');
      progress(
        `${p.scaleRounds > 1 ? `round ${round}, ` : ''}${banks} banks: engine ${Math.round(scenario.engine.figures.throughputPerS)}/s, ceiling ${Math.round(scenario.ceiling.figures.throughputPerS)}/s, ` +
          `ratio ${scenario.ratio.throughput}; ${reads}; audit ${scenario.engine.check.ok ? 'ok' : 'FAILED'}`,
      );
    }
  }
  const report: ScaleReport = {
    kind: 'scale',
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: m,
    params: p,
    ceiling: CEILING_NOTE,
    probedBank,
    rows,
    summary: scaleSummary(rows),
    ok: rows.every((r) => r.scenario.ok),
  };
  return { report, files: writeScaleReport(report, p.resultsDir) };
}
