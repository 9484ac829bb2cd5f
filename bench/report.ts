/**
 * The report of a bench run: the machine, the parameters, and for each
 * scenario the engine's figures beside the bare ceiling's with their
 * ratios, memory, and the audit. Written as JSON (for tools) and as a
 * Markdown summary (for people) into bench/results/.
 */

import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import type { CeilingCheck, EngineAudit } from './audit.js';
import type { LatencyMs } from './latency.js';
import type { BenchParams } from './params.js';
import type { EndpointLatency } from './probes.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  freeMemoryBytesAtStart: number;
  loadAverage1mAtStart: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryBytes: totalmem(),
    freeMemoryBytesAtStart: freemem(),
    loadAverage1mAtStart: loadavg()[0] ?? 0,
    node: process.version,
    platform: `${process.platform} ${release()}`,
  };
}

export interface SideFigures {
  throughputPerS: number;
  latencyMs: LatencyMs;
  /** Resident set size of the server process at the end of the load. */
  rssBytes: number | undefined;
  /**
   * The server process's CPU time (user and system, every thread) over the
   * whole load phase, warm-up and drain included, per instruction it
   * acknowledged in that time: what each instruction costs the machine.
   */
  cpuUsPerInstruction: number | undefined;
  /** The same for the main thread alone (/proc/<pid>/task/<pid>/stat): the engine's event loop, which decodes, routes and answers. */
  mainThreadCpuUsPerInstruction?: number | undefined;
  /** Disk space of the data folder once the server has stopped (allocated blocks). */
  dataBytes?: number | undefined;
  /** dataBytes per million stored instructions (the engine's audited count; the ceiling's records). */
  dataBytesPerMillion?: number | undefined;
}

/** engine ÷ ceiling for each figure: above 1 is better for throughput, worse for latency and memory. */
export interface Ratios {
  throughput: number | null;
  p50: number | null;
  p99: number | null;
  p999: number | null;
  max: number | null;
  rss: number | null;
  cpu: number | null;
  mainThreadCpu: number | null;
  dataPerMillion: number | null;
}

export interface SideReport<Check> {
  figures: SideFigures;
  /** Counts and details of the load as this server saw it. */
  load: Record<string, unknown>;
  check: Check;
  exitCode: number | null;
}

export interface ScenarioReport {
  name: string;
  description: string;
  engine: SideReport<EngineAudit>;
  ceiling: SideReport<CeilingCheck>;
  ratio: Ratios;
  ok: boolean;
  problems: string[];
  /** What a reader must know to read the figures, e.g. a parameter that makes them meaningless. */
  notes: string[];
  /** Latency of the engine's read endpoints after the load (bench:scale). */
  reads?: EndpointLatency[];
}

export interface BenchReport {
  kind: string;
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  params: BenchParams;
  ceiling: string;
  scenarios: ScenarioReport[];
  ok: boolean;
}

export const CEILING_NOTE =
  'bare ceiling: bench/bare-server.ts, a uWebSockets.js server in its own process that decodes the same frames ' +
  '(msgpack submit frames; JSON bodies on POST /v1/instructions, single or batched), writes the same instruction ' +
  'records to one LMDB environment (key <institution>/<id>, one transaction per frame or request) and answers ' +
  'after the commit in the engine\'s shapes, with no validation, no duplicate rules, no netting, no shards.';

/** A ratio rounded to three places; none when the ceiling's figure is zero or unknown. */
export function ratioOf(engine: number | undefined, ceiling: number | undefined): number | null {
  if (engine === undefined || ceiling === undefined || !(ceiling > 0) || !Number.isFinite(engine)) return null;
  return Math.round((engine / ceiling) * 1000) / 1000;
}

export function ratios(engine: SideFigures, ceiling: SideFigures): Ratios {
  return {
    throughput: ratioOf(engine.throughputPerS, ceiling.throughputPerS),
    p50: ratioOf(engine.latencyMs.p50, ceiling.latencyMs.p50),
    p99: ratioOf(engine.latencyMs.p99, ceiling.latencyMs.p99),
    p999: ratioOf(engine.latencyMs.p999, ceiling.latencyMs.p999),
    max: ratioOf(engine.latencyMs.max, ceiling.latencyMs.max),
    rss: ratioOf(engine.rssBytes, ceiling.rssBytes),
    cpu: ratioOf(engine.cpuUsPerInstruction, ceiling.cpuUsPerInstruction),
    mainThreadCpu: ratioOf(engine.mainThreadCpuUsPerInstruction, ceiling.mainThreadCpuUsPerInstruction),
    dataPerMillion: ratioOf(engine.dataBytesPerMillion, ceiling.dataBytesPerMillion),
  };
}

export function n(v: number | null | undefined, digits = 0): string {
  if (v === null || v === undefined) return '—';
  return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? '—' : n(bytes / (1024 * 1024), 0);
}

/** The load as each server saw it, in one line: what was sent, shed, answered, and how busy the generator was. */
function loadLine(side: string, load: Record<string, unknown>): string {
  const num = (k: string): number => (typeof load[k] === 'number' ? (load[k] as number) : 0);
  const parts = [`sent ${n(num('sentInstructions'))}`, `cleared ${n(num('clearedInstructions'))}`];
  if (typeof load['driver'] === 'string') parts.unshift(`driver ${load['driver']}`);
  if (num('institutionsUsed') > 0) parts.push(`from ${n(num('institutionsUsed'))} institutions`);
  if (num('shedInstructions') > 0) parts.push(`shed by the generator ${n(num('shedInstructions'))}`);
  if (num('notCleared') > 0) parts.push(`not cleared ${n(num('notCleared'))} ${JSON.stringify(load['codes'])}`);
  if (num('unanswered') > 0) parts.push(`unanswered at the end ${n(num('unanswered'))}`);
  if (num('sendLagMsMax') > 0) parts.push(`generator behind schedule by ${n(num('sendLagMsMax'), 1)} ms at worst`);
  const elu = load['generatorEventLoopUtilization'];
  if (Array.isArray(elu) && elu.length > 0) parts.push(`generator thread utilisation ${elu.map((x: number) => n(x, 2)).join(', ')}`);
  if (typeof load['generatorCpuCores'] === 'number') parts.push(`wrk used ${n(load['generatorCpuCores'], 2)} cores`);
  return `${side}: ${parts.join('; ')}.`;
}

function auditLine(a: EngineAudit): string {
  if (a.ok) {
    return (
      `**audit ok**: Σ net = ${a.netSumCents}, GET /v1/audit ok, cleared ${n(a.engineAuditCleared)} = ` +
      `${n(a.ackedCleared)} acknowledged + ${n(a.unansweredCommitted)} committed of ${n(a.unanswered)} unanswered at the end; ` +
      'every result cleared; every bank\'s net equals the model.'
    );
  }
  return `**AUDIT FAILED**:\n${a.problems.map((p) => `  - ${p}`).join('\n')}`;
}

export function markdown(r: BenchReport): string {
  const m = r.machine;
  const p = r.params;
  const lines: string[] = [
    `# Bench report: ${r.kind} (${r.ok ? 'ok' : 'FAILED'})`,
    '',
    `${r.startedAt} → ${r.finishedAt}`,
    '',
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${n(m.memoryBytes / 2 ** 30, 1)} GiB, Node ${m.node}, ${m.platform}; load average at start ${n(m.loadAverage1mAtStart, 2)}.`,
    '',
    `Parameters: size ${p.size}, ${p.durationS} s per run (${p.warmupS} s warm-up left out of the figures), drain ≤ ${p.drainS} s; ` +
      `HTTP ${p.httpConnections} connections × pipelining ${p.httpPipelining}, batch ${p.httpBatchSize}; ` +
      `WebSocket ${p.wsConnections} connections on ${p.wsThreads} generator threads, ${p.wsBatchSize} instructions per frame, ` +
      `window ${p.wsWindowFrames} frames (closed loop), ${n(p.wsOfferedPerS)} instructions/s offered (open loop); ` +
      `engine ${p.shards} shards, ${p.workers} workers; ${n(p.banks)} banks, ${n(p.institutions)} institutions, ${p.pairs} pairs; ` +
      `HTTP driver ${p.httpDriver}; seed ${p.seed}.`,
    '',
    `Ceiling: ${r.ceiling}`,
    '',
  ];
  for (const s of r.scenarios) {
    const e = s.engine.figures;
    const c = s.ceiling.figures;
    lines.push(
      `## ${s.name}: ${s.description}`,
      '',
      '| figure | engine | ceiling | engine / ceiling |',
      '| --- | ---: | ---: | ---: |',
      `| throughput (instructions/s) | ${n(e.throughputPerS)} | ${n(c.throughputPerS)} | ${n(s.ratio.throughput, 3)} |`,
      `| ack latency p50 (ms) | ${n(e.latencyMs.p50, 2)} | ${n(c.latencyMs.p50, 2)} | ${n(s.ratio.p50, 2)} |`,
      `| ack latency p99 (ms) | ${n(e.latencyMs.p99, 2)} | ${n(c.latencyMs.p99, 2)} | ${n(s.ratio.p99, 2)} |`,
      `| ack latency p99.9 (ms) | ${n(e.latencyMs.p999, 2)} | ${n(c.latencyMs.p999, 2)} | ${n(s.ratio.p999, 2)} |`,
      `| ack latency max (ms) | ${n(e.latencyMs.max, 2)} | ${n(c.latencyMs.max, 2)} | ${n(s.ratio.max, 2)} |`,
      `| resident memory at the end (MiB) | ${mib(e.rssBytes)} | ${mib(c.rssBytes)} | ${n(s.ratio.rss, 2)} |`,
      `| server CPU per instruction (µs) | ${n(e.cpuUsPerInstruction, 1)} | ${n(c.cpuUsPerInstruction, 1)} | ${n(s.ratio.cpu, 2)} |`,
      `| main-thread CPU per instruction (µs) | ${n(e.mainThreadCpuUsPerInstruction, 1)} | ${n(c.mainThreadCpuUsPerInstruction, 1)} | ${n(s.ratio.mainThreadCpu, 2)} |`,
      `| data folder per million instructions (MiB) | ${mib(e.dataBytesPerMillion)} | ${mib(c.dataBytesPerMillion)} | ${n(s.ratio.dataPerMillion, 2)} |`,
      '',
      loadLine('Load on the engine', s.engine.load),
      loadLine('Load on the ceiling', s.ceiling.load),
      '',
      auditLine(s.engine.check),
      '',
      s.ceiling.check.ok ? `Ceiling check ok: it holds ${n(s.ceiling.check.records)} records for ${n(s.ceiling.check.ackedCleared)} acknowledged.` : `**CEILING CHECK FAILED**: ${s.ceiling.check.problems.join('; ')}`,
      '',
    );
    if (s.notes.length > 0) lines.push('Notes:', ...s.notes.map((x) => `- ${x}`), '');
    if (s.problems.length > 0) lines.push('Problems:', ...s.problems.map((x) => `- ${x}`), '');
  }
  return lines.join('\n');
}

export function stamp(iso: string): string {
  return iso.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').replace('T', '-');
}

/** Write `<kind>-<time>.json/.md` and copies named `latest-<kind>.json/.md`; returns the paths written. */
export function writeReport(r: BenchReport, dir: string): { json: string; markdown: string } {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${r.kind}-${stamp(r.startedAt)}`);
  const json = `${base}.json`;
  const md = `${base}.md`;
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(md, `${markdown(r)}\n`);
  copyFileSync(json, join(dir, `latest-${r.kind}.json`));
  copyFileSync(md, join(dir, `latest-${r.kind}.md`));
  return { json, markdown: md };
}
