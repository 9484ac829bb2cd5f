/**
 * The benches as functions: each scenario starts the engine on a fresh data
 * folder, drives it, takes its memory, audits it and stops it; then does
 * the same to the bare ceiling under the same load; then sets the figures
 * side by side. `runBench` runs the scenarios of a kind and writes the
 * report. The command line (run.ts) and the test suite both call it.
 */

import { auditEngine, checkCeiling, type CeilingCheck, type EngineAudit, type LoadTally } from './audit.js';
import { bareConfig, engineConfig, instructionPool } from './fixture.js';
import { effectiveHttpDriver, httpDriverFallback, runHttpLoad, type HttpLoadOutcome } from './http-load.js';
import { fixtureOf, PIPELINING_NOTE, type BenchParams, type HttpVariant, type WsMode } from './params.js';
import { BARE_SERVER_MAIN, ENGINE_MAIN } from './paths.js';
import type { EndpointLatency } from './probes.js';
import { CEILING_NOTE, machine, ratios, writeReport, type BenchReport, type ScenarioReport, type SideReport } from './report.js';
import { folderBytes, startTarget, type TargetProcess } from './target-process.js';
import { runWsLoad, type WsLoadOutcome } from './ws-load.js';

export type BenchKind = 'http' | 'ws' | 'all';

type Outcome = HttpLoadOutcome | WsLoadOutcome;

/** What of a load goes into the report: everything but the bulky per-instruction lists. */
function loadSummary(o: Outcome): Record<string, unknown> {
  const { nets: _nets, unanswered, latency: _latency, ...rest } = o;
  return { ...rest, unanswered: unanswered.length };
}

/** Run `body` against the target, stop it, and take the size of its data folder once it has stopped (everything flushed). */
async function withTarget<T>(target: TargetProcess, body: (t: TargetProcess) => Promise<T>): Promise<{ value: T; exitCode: number | null; dataBytes: number | undefined }> {
  try {
    const value = await body(target);
    const exitCode = await target.stop();
    let dataBytes: number | undefined;
    try {
      dataBytes = folderBytes(target.dataDir);
    } catch {
      dataBytes = undefined;
    }
    return { value, exitCode, dataBytes };
  } catch (err) {
    await target.stop();
    throw err;
  } finally {
    target.cleanup();
  }
}

/** Read endpoints timed on the engine after its load, before its audit (bench:scale). */
export type Probe = (base: string) => Promise<{ endpoints: EndpointLatency[]; problems: string[] }>;

function perInstruction(before: number | undefined, after: number | undefined, instructions: number): number | undefined {
  return before === undefined || after === undefined || instructions === 0 ? undefined : ((after - before) * 1e6) / instructions;
}

async function side<Check>(
  name: 'engine' | 'ceiling',
  p: BenchParams,
  drive: (base: string) => Promise<Outcome>,
  check: (base: string, load: LoadTally) => Promise<Check>,
  stored: (check: Check) => number,
  probe?: Probe,
): Promise<SideReport<Check> & { probed?: Awaited<ReturnType<Probe>> }> {
  const fixture = fixtureOf(p);
  const target =
    name === 'engine'
      ? await startTarget('engine', ENGINE_MAIN, (dir) => engineConfig(dir, p.shards, p.workers, fixture))
      : await startTarget('ceiling', BARE_SERVER_MAIN, (dir) => bareConfig(dir, fixture));
  const { value, exitCode, dataBytes } = await withTarget(target, async (t) => {
    const cpuBefore = t.cpuSeconds();
    const mainBefore = t.mainThreadCpuSeconds();
    const load = await drive(t.base);
    // Memory and CPU are taken right after the load, before the probes and the audit allocate or compute anything.
    const rssBytes = t.rssBytes();
    const cpuAfter = t.cpuSeconds();
    const mainAfter = t.mainThreadCpuSeconds();
    const answered = load.clearedInstructions + load.notCleared;
    const cpuUsPerInstruction = perInstruction(cpuBefore, cpuAfter, answered);
    const mainThreadCpuUsPerInstruction = perInstruction(mainBefore, mainAfter, answered);
    const probed = probe === undefined ? undefined : await probe(t.base);
    const checked = await check(t.base, load);
    return { load, rssBytes, cpuUsPerInstruction, mainThreadCpuUsPerInstruction, probed, checked };
  });
  const storedInstructions = stored(value.checked);
  const out: SideReport<Check> & { probed?: Awaited<ReturnType<Probe>> } = {
    figures: {
      throughputPerS: value.load.throughputPerS,
      latencyMs: value.load.latency,
      rssBytes: value.rssBytes,
      cpuUsPerInstruction: value.cpuUsPerInstruction,
      mainThreadCpuUsPerInstruction: value.mainThreadCpuUsPerInstruction,
      dataBytes,
      dataBytesPerMillion: dataBytes === undefined || !(storedInstructions > 0) ? undefined : (dataBytes / storedInstructions) * 1e6,
    },
    load: loadSummary(value.load),
    check: value.checked,
    exitCode,
  };
  if (value.probed !== undefined) out.probed = value.probed;
  return out;
}

async function scenario(name: string, description: string, p: BenchParams, drive: (base: string) => Promise<Outcome>, notes: string[] = [], probe?: Probe): Promise<ScenarioReport> {
  const pool = instructionPool(fixtureOf(p));
  const { probed, ...engine } = await side<EngineAudit>('engine', p, drive, (base, load) => auditEngine(base, load, pool, p.banks), (a) => a.engineAuditCleared, probe);
  const ceiling = await side<CeilingCheck>('ceiling', p, drive, checkCeiling, (c) => c.records);
  for (const [who, load] of [['the engine', engine.load], ['the ceiling', ceiling.load]] as const) {
    const shed = typeof load['shedInstructions'] === 'number' ? load['shedInstructions'] : 0;
    if (shed > 0) {
      notes.push(
        `${who} did not keep up with the offered rate: the generator shed ${shed.toLocaleString('en-US')} instructions ` +
          'at its in-flight bound per connection; the figures are for what was sent',
      );
    }
  }
  const problems: string[] = [...engine.check.problems, ...(probed?.problems ?? [])];
  if (engine.exitCode !== 0) problems.push(`the engine exited with ${engine.exitCode} on SIGTERM`);
  if (ceiling.exitCode !== 0) problems.push(`the ceiling exited with ${ceiling.exitCode} on SIGTERM`);
  problems.push(...ceiling.check.problems.map((x) => `ceiling: ${x}`));
  if (!(engine.figures.throughputPerS > 0)) problems.push('the engine cleared nothing in the measured window');
  if (!(ceiling.figures.throughputPerS > 0)) problems.push('the ceiling cleared nothing in the measured window');
  const report: ScenarioReport = { name, description, engine, ceiling, ratio: ratios(engine.figures, ceiling.figures), ok: problems.length === 0, problems, notes };
  if (probed !== undefined) report.reads = probed.endpoints;
  return report;
}

export function httpScenario(variant: HttpVariant, p: BenchParams): Promise<ScenarioReport> {
  const what = variant === 'single' ? 'one instruction per POST' : `${p.httpBatchSize} instructions per POST`;
  const driver = effectiveHttpDriver(p);
  const how = driver === 'wrk' ? `wrk (${p.httpThreads} thread${p.httpThreads === 1 ? '' : 's'}), ${what}, ${p.httpConnections} connections` : `autocannon, ${what}, ${p.httpConnections} connections × pipelining ${p.httpPipelining}`;
  const description = `${how}, institutions in turn per request`;
  const notes = driver === 'autocannon' && p.httpPipelining > 1 ? [`pipelining ${p.httpPipelining}: ${PIPELINING_NOTE}`] : [];
  const fallback = httpDriverFallback(p);
  if (fallback !== undefined) notes.push(fallback);
  if (driver === 'wrk' && p.httpPipelining > 1) notes.push('wrk sends one request at a time per connection: --pipelining applies to autocannon only');
  return scenario(`http-${variant}`, description, p, (base) => runHttpLoad(base, variant, p), notes);
}

export function wsScenario(mode: WsMode, p: BenchParams, probe?: Probe): Promise<ScenarioReport> {
  const loop = mode === 'closed' ? `closed loop, window ${p.wsWindowFrames} frames per connection` : `open loop, ${p.wsOfferedPerS.toLocaleString('en-US')} instructions/s offered`;
  const description = `msgpack submit frames of ${p.wsBatchSize}, ${p.wsConnections} connections on ${p.wsThreads} generator threads, ${loop}`;
  return scenario(`ws-${mode}`, description, p, (base) => runWsLoad(base, mode, p), [], probe);
}

export interface BenchRun {
  report: BenchReport;
  files: { json: string; markdown: string };
}

/** Run every scenario of `kind` one after the other, then write the report. */
export async function runBench(kind: BenchKind, p: BenchParams, progress: (line: string) => void = () => undefined): Promise<BenchRun> {
  const startedAt = new Date().toISOString();
  const m = machine();
  const fallback = kind === 'ws' ? undefined : httpDriverFallback(p);
  if (fallback !== undefined) progress(`bench: ${fallback}`);
  const plan: (() => Promise<ScenarioReport>)[] = [];
  if (kind === 'http' || kind === 'all') for (const v of p.httpVariants) plan.push(() => httpScenario(v, p));
  if (kind === 'ws' || kind === 'all') for (const mode of p.wsModes) plan.push(() => wsScenario(mode, p));
  const scenarios: ScenarioReport[] = [];
  for (const run of plan) {
    const s = await run();
    scenarios.push(s);
    progress(
      `${s.name}: engine ${Math.round(s.engine.figures.throughputPerS)}/s p99 ${s.engine.figures.latencyMs.p99} ms, ` +
        `ceiling ${Math.round(s.ceiling.figures.throughputPerS)}/s p99 ${s.ceiling.figures.latencyMs.p99} ms, ` +
        `ratio ${s.ratio.throughput}; audit ${s.engine.check.ok ? 'ok' : 'FAILED'}`,
    );
  }
  const report: BenchReport = { kind, startedAt, finishedAt: new Date().toISOString(), machine: m, params: p, ceiling: CEILING_NOTE, scenarios, ok: scenarios.every((s) => s.ok) };
  const files = writeReport(report, p.resultsDir);
  return { report, files };
}
