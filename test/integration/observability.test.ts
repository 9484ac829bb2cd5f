/**
 * Observability, end to end, against the real engine under a short load:
 *
 * - `promtool check metrics` accepts the scraped /metrics;
 * - `promtool check config` / `check rules` accept grafana/prometheus.yml and grafana/alerts.yml, and
 *   `promtool test rules` passes grafana/alerts.test.yml;
 * - a real Prometheus server, on loopback with a copy of grafana/prometheus.yml pointed at the test
 *   engine, scrapes it, loads the alert rules and evaluates them without error (none firing), and
 *   answers every expression of every dashboard panel with data;
 * - every metric a dashboard or an alert rule names is exported by the engine, so dashboards cannot
 *   silently rot when a metric is renamed;
 * - /metrics needs a `metrics` (or operator) token, which the shipped prometheus.yml sends, and a
 *   fresh engine exports its labelled counters from 0.
 *
 * Needs Debian's `prometheus` package (`promtool` and `prometheus`); `.ci/run` installs it. Without it
 * the tests fail, they are not skipped.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, StreamClient } from '../helpers/clients.js';
import { BANKS, startEngine, tempDir, testConfig, TOKENS, type RunningEngine } from '../helpers/engine-process.js';
import { DEMO_CONFIG } from '../../src/config/demo.js';
import { ClusterMetrics } from '../../src/cluster/cluster-metrics.js';

const GRAFANA = fileURLToPath(new URL('../../grafana/', import.meta.url));
const DASHBOARDS = join(GRAFANA, 'dashboards');
const JOB = 'netting-engine';
/** What Grafana variables become when an expression is sent to Prometheus directly. */
const RATE_INTERVAL = '1m';
const RANGE = '5m';
/** Series Prometheus makes itself for every target, not exported by the engine. */
const PROMETHEUS_SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_samples_post_metric_relabeling', 'scrape_series_added']);
/** Series only a cluster node exports (src/cluster/cluster-metrics.ts). The engine here runs alone, so panels and rules
 * that read nothing else are checked for valid PromQL and exported names, not for data (test/cluster/ runs a cluster). */
const CLUSTER_ONLY = /^netting_cluster_/;
const clusterOnly = (expr: string): boolean => {
  const names = metricNames(expr);
  return names.length > 0 && names.every((n) => CLUSTER_ONLY.test(n));
};
/** The test engine's `metrics` principal, which the rewritten prometheus.yml sends. */
const METRICS_TOKEN = 'test-token-metrics-prometheus';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ tools

function requireTool(name: string): void {
  const r = spawnSync(name, ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) {
    throw new Error(
      `'${name}' is not installed or does not run (${r.error?.message ?? `exit ${r.status}`}). ` +
        `Install Debian's prometheus package: apt-get install -y prometheus (.ci/run does it).`,
    );
  }
}

function run(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): { status: number | null; output: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd, input: opts.input, timeout: 60_000 });
  if (r.error !== undefined) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

// ------------------------------------------------------------------ Prometheus

interface RunningPrometheus {
  base: string;
  proc: ChildProcess;
  dir: string;
  output: () => string;
  stop: () => Promise<void>;
}

/** The project's prometheus.yml with the scrape target, the token and the intervals rewritten for the test. */
function testPrometheusConfig(target: string): string {
  const original = readFileSync(join(GRAFANA, 'prometheus.yml'), 'utf8');
  const rewrites: [RegExp, string][] = [
    [/targets:\s*\[[^\]\n]*\]/g, `targets: ['${target}']`],
    [/credentials:\s*\S+/g, `credentials: ${METRICS_TOKEN}`],
    [/scrape_interval:\s*\S+/g, 'scrape_interval: 1s'],
    [/scrape_timeout:\s*\S+/g, 'scrape_timeout: 1s'],
    [/evaluation_interval:\s*\S+/g, 'evaluation_interval: 1s'],
  ];
  let text = original;
  for (const [re, to] of rewrites) {
    const n = (text.match(re) ?? []).length;
    if (n !== 1) throw new Error(`grafana/prometheus.yml: expected one line matching ${re} for the test to rewrite, found ${n}`);
    text = text.replace(re, to);
  }
  return text;
}

async function startPrometheus(target: string): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'netting-prometheus-'));
  writeFileSync(join(dir, 'prometheus.yml'), testPrometheusConfig(target));
  copyFileSync(join(GRAFANA, 'alerts.yml'), join(dir, 'alerts.yml'));
  const port = await freePort();
  const proc = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (gone) throw new Error(`prometheus exited at start:\n${out}`);
    const ok = await fetch(`${base}/-/ready`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`prometheus was not ready in 30 s:\n${out}`);
    }
    await sleep(200);
  }
  return {
    base,
    proc,
    dir,
    output: () => out,
    stop: async () => {
      if (!gone) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface QueryResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

async function promQuery(base: string, query: string): Promise<QueryResult> {
  const res = await fetch(`${base}/api/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ query }).toString(),
  });
  return (await res.json()) as QueryResult;
}

/** Poll a PromQL query until `pred` holds, or fail with what the last answer was. */
async function waitForQuery(base: string, query: string, pred: (r: QueryResult) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: QueryResult | undefined;
  for (;;) {
    last = await promQuery(base, query);
    if (pred(last)) return;
    if (Date.now() > deadline) throw new Error(`${what}: '${query}' still answers ${JSON.stringify(last)}`);
    await sleep(250);
  }
}

// ------------------------------------------------------------------ dashboards and rules

interface Expression {
  where: string;
  expr: string;
}

interface Dashboard {
  file: string;
  json: any;
}

function loadDashboards(): Dashboard[] {
  return readdirSync(DASHBOARDS)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, json: JSON.parse(readFileSync(join(DASHBOARDS, file), 'utf8')) }));
}

function allPanels(panels: any[] | undefined): any[] {
  return (panels ?? []).flatMap((p) => [p, ...allPanels(p.panels)]);
}

function panelExpressions(d: Dashboard): Expression[] {
  return allPanels(d.json.panels).flatMap((p) =>
    (p.targets ?? []).map((t: any) => ({ where: `${d.file} / "${p.title}" / ${t.refId}`, expr: String(t.expr) })),
  );
}

/** The selector of a `label_values(selector, label)` variable query, and its label. */
function variableQueries(d: Dashboard): { where: string; selector: string; label: string }[] {
  return (d.json.templating?.list ?? [])
    .filter((v: any) => v.type === 'query')
    .map((v: any) => {
      const q = typeof v.query === 'string' ? v.query : String(v.query?.query);
      const m = /^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$/.exec(q.trim());
      if (m === null) throw new Error(`${d.file}: variable $${v.name} is not a label_values(selector, label) query: ${q}`);
      return { where: `${d.file} / variable $${v.name}`, selector: m[1]!, label: m[2]! };
    });
}

function annotationExpressions(d: Dashboard): Expression[] {
  return (d.json.annotations?.list ?? [])
    .filter((a: any) => a.datasource?.uid === 'prometheus')
    .map((a: any) => ({ where: `${d.file} / annotation "${a.name}"`, expr: String(a.expr) }));
}

/** Grafana's variables replaced the way Grafana would, for a direct Prometheus query. */
function forPrometheus(expr: string): string {
  const out = expr
    .replace(/\$\{?__rate_interval\}?/g, RATE_INTERVAL)
    .replace(/\$\{?__interval\}?/g, RATE_INTERVAL)
    .replace(/\$\{?__range\}?/g, RANGE)
    // Template variables are only used in regex matchers (instance=~"$instance"): select everything.
    .replace(/\$\{?[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}?/g, '.*');
  if (out.includes('$')) throw new Error(`an unknown Grafana variable is left in: ${out}`);
  return out;
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan']);

/** The metric names a PromQL expression selects. */
function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{?[a-zA-Z_][a-zA-Z0-9_:]*\}?/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const word = m[0];
    const before = s[m.index - 1] ?? ' ';
    if (/[0-9.]/.test(before)) continue; // 1e9, 5m
    if (/^\s*\(/.test(s.slice(m.index + word.length))) continue; // a function or an aggregation
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    names.push(word);
  }
  return names;
}

// ------------------------------------------------------------------ the engine under load

let engine: RunningEngine;
let prometheus: RunningPrometheus | undefined;
/** /metrics as the engine answered it right after start, before any traffic. */
let freshExposition = '';
let cleanupEngine: () => void = () => {};

/** GET /metrics with a bearer token, as Prometheus does it. */
async function scrape(base: string, token: string): Promise<string> {
  const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status} ${await res.text()}`);
  return res.text();
}

async function ok(p: Promise<{ status: number; body: any }>, what: string): Promise<any> {
  const r = await p;
  if (r.status !== 200) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * A short, bounded load that gives (almost) every series data: single-phase instructions of every type
 * over every bank pair (so every shard commits) over HTTP (JSON and msgpack) and WebSocket (JSON and
 * msgpack), two-phase instructions confirmed and declined over both channels, one expired and two left
 * pending, a reversal, duplicates, rejections, and a batch cut-off with more traffic after it.
 */
async function driveLoad(base: string): Promise<void> {
  const types = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'];
  const pairs = BANKS.flatMap((a) => BANKS.filter((b) => b !== a).map((b) => [a, b] as const));
  const batch = (prefix: string, n: number) =>
    Array.from({ length: n }, (_, i) => {
      const [payer, payee] = pairs[i % pairs.length]!;
      return { id: `${prefix}-${i}`, type: types[i % types.length]!, payer, payee, amount: 100 + ((i * 7919) % 100_000) };
    });

  const inst2 = await StreamClient.connect(base, TOKENS.PI0002, 'json');
  const inst1 = await StreamClient.connect(base, TOKENS.PI0001, 'msgpack');
  const icbc = await StreamClient.connect(base, TOKENS.ICBC, 'msgpack');
  try {
    await inst2.request({ op: 'subscribe', topics: ['notifications', 'snapshots'] });
    await icbc.request({ op: 'subscribe', topics: ['forwards'] });
    await inst1.request({ op: 'ping' });

    for (const round of [0, 1]) {
      // HTTP, JSON and msgpack bodies.
      for (let i = 0; i < 6; i++) {
        const body = await ok(
          http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, enc: i % 2 === 0 ? 'json' : 'msgpack', body: { instructions: batch(`H${round}-${i}`, 60) } }),
          'HTTP batch',
        );
        expect(body.results.every((r: any) => r.status === 'cleared')).toBe(true);
      }
      // WebSocket, several frames in flight.
      const acks = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? inst2 : inst1).submit(batch(`W${round}-${i}`, 60))),
      );
      for (const ack of acks) {
        expect(ack.results, JSON.stringify(ack)).toBeDefined();
        expect(ack.results!.every((r: any) => r.status === 'cleared')).toBe(true);
      }

      if (round === 0) {
        // Two-phase: ICBC confirms over WebSocket, declines over HTTP; CMB confirms over HTTP; one expires.
        const tp = (id: string, payer: string, payee: string, timeoutMs = 60_000) => ({ id, type: 'agreement', payer, payee, amount: 2500, twoPhase: true, timeoutMs });
        const pending = await ok(
          http(base, 'POST', '/v1/instructions', {
            token: TOKENS.PI0001,
            body: { instructions: [tp('TP-1', 'ICBC', 'CMB'), tp('TP-2', 'ICBC', 'ABC'), tp('TP-3', 'ICBC', 'BOC'), tp('TP-4', 'CMB', 'ICBC'), tp('TP-5', 'CMB', 'CCB'), tp('TP-6', 'ICBC', 'SPDB', 300)] },
          }),
          'two-phase batch',
        );
        expect(pending.results.map((r: any) => r.status)).toEqual(Array(6).fill('pending'));
        const wsReceipt = await icbc.request({ op: 'receipt', receipts: [{ institution: 'PI0001', id: 'TP-1', outcome: 'confirm' }] });
        expect(wsReceipt.results![0].status).toBe('cleared');
        const declined = await ok(http(base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { institution: 'PI0001', id: 'TP-2', outcome: 'decline', reason: 'insufficient funds' } }), 'decline');
        expect(declined.status).toBe('declined');
        const confirmed = await ok(http(base, 'POST', '/v1/receipts', { token: TOKENS.CMB, body: { institution: 'PI0001', id: 'TP-4', outcome: 'confirm' } }), 'confirm');
        expect(confirmed.status).toBe('cleared');
        // TP-3 and TP-5 stay pending; TP-6 expires after 300 ms.

        // Duplicates and rejections.
        const again = await http(base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: batch('H0-0', 1)[0] });
        expect(again.body.duplicate).toBe(true);
        const refused = await ok(
          http(base, 'POST', '/v1/instructions', {
            token: TOKENS.PI0001,
            body: {
              instructions: [
                { ...batch('H0-0', 1)[0]!, amount: 1 }, // DUPLICATE_CONFLICT
                { id: 'R-1', type: 'payout', payer: 'ICBC', payee: 'ICBC', amount: 1 }, // SAME_BANK
                { id: 'R-2', type: 'payout', payer: 'ICBC', payee: 'NOPE', amount: 1 }, // UNKNOWN_BANK
                { id: 'R-3', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 0 }, // AMOUNT_OUT_OF_RANGE
                { id: 'R-4', type: 'wire', payer: 'ICBC', payee: 'CMB', amount: 1 }, // INVALID_FIELD
              ],
            },
          }),
          'rejections',
        );
        expect(refused.results.map((r: any) => r.code)).toEqual(['DUPLICATE_CONFLICT', 'SAME_BANK', 'UNKNOWN_BANK', 'AMOUNT_OUT_OF_RANGE', 'INVALID_FIELD']);

        // A reversal, then the cut-off.
        const reversed = await ok(http(base, 'POST', '/v1/instructions/PI0001/H0-1-0/reverse', { token: TOKENS.ops, body: {} }), 'reverse');
        expect(reversed.status).toBe('reversed');
        const report = await ok(http(base, 'POST', '/v1/batches/close', { token: TOKENS.ops }), 'batch close');
        expect(report.status).toBe('closed');
        expect(report.debits).toBe(report.credits);
      }
    }
    // The short two-phase instruction has expired by now (its deadline was 300 ms).
    const deadline = Date.now() + 10_000;
    while ((await http(base, 'GET', '/v1/instructions/PI0001/TP-6', { token: TOKENS.ops })).body.status !== 'expired') {
      if (Date.now() > deadline) throw new Error('TP-6 did not expire');
      await sleep(100);
    }
  } finally {
    inst1.close();
    inst2.close();
    icbc.close();
  }
}

beforeAll(async () => {
  requireTool('promtool');
  requireTool('prometheus');
  const t = tempDir('netting-observability-');
  cleanupEngine = t.cleanup;
  const config = testConfig(t.dir, { receiptQueryScheduleMs: [200] });
  config['principals'] = [...(config['principals'] as object[]), { token: METRICS_TOKEN, role: 'metrics', id: 'prometheus' }];
  engine = await startEngine(t.dir, config);
  freshExposition = await scrape(engine.base, METRICS_TOKEN);
  prometheus = await startPrometheus(`127.0.0.1:${engine.port}`);
  await waitForQuery(prometheus.base, `up{job="${JOB}"}`, (r) => r.data?.result[0]?.value[1] === '1', 'Prometheus has not scraped the engine');
  await driveLoad(engine.base);
  // Let Prometheus scrape the state after the load at least twice, so rates over it have two samples.
  await waitForQuery(
    prometheus.base,
    `count_over_time(netting_batch_cutoffs_total{job="${JOB}", trigger="operator"}[1m]) >= 3`,
    (r) => (r.data?.result.length ?? 0) > 0,
    'Prometheus has not scraped the cut-off',
  );
}, 180_000);

afterAll(async () => {
  await prometheus?.stop();
  await engine?.stop();
  cleanupEngine();
}, 60_000);

// ------------------------------------------------------------------ tests

describe('observability', () => {
  it('the dashboards are Grafana JSON that provisioning loads, on the prometheus data source', () => {
    const dashboards = loadDashboards();
    expect(dashboards.map((d) => d.file)).toEqual(['netting-settlement.json', 'overview.json', 'shards-storage.json']);
    const uids = new Set<string>();
    for (const { file, json } of dashboards) {
      expect(typeof json.uid, file).toBe('string');
      expect(uids.has(json.uid), `${file}: uid ${json.uid} is used twice`).toBe(false);
      uids.add(json.uid);
      expect(json.schemaVersion, file).toBeGreaterThanOrEqual(39);
      const panels = allPanels(json.panels);
      const ids = panels.map((p) => p.id);
      expect(new Set(ids).size, `${file}: panel ids are not unique`).toBe(ids.length);
      for (const p of panels) {
        expect(p.gridPos.x + p.gridPos.w, `${file} / ${p.title}: wider than the grid`).toBeLessThanOrEqual(24);
        if (p.type === 'row') continue;
        expect(p.datasource?.uid, `${file} / ${p.title}`).toBe('prometheus');
        expect(p.targets?.length ?? 0, `${file} / ${p.title}: no query`).toBeGreaterThan(0);
        for (const t of p.targets) expect(t.datasource?.uid ?? p.datasource.uid, `${file} / ${p.title} / ${t.refId}`).toBe('prometheus');
      }
    }
    const datasource = readFileSync(join(GRAFANA, 'provisioning/datasources/prometheus.yml'), 'utf8');
    expect(datasource).toMatch(/^\s+uid: prometheus$/m);
    expect(datasource).toMatch(/^\s+url: http:\/\/prometheus:9090$/m);
    const provider = readFileSync(join(GRAFANA, 'provisioning/dashboards/dashboards.yml'), 'utf8');
    const path = /^\s+path: (\S+)$/m.exec(provider)?.[1];
    expect(path).toBeDefined();
    // docker-compose.yml mounts the dashboards folder where the provider reads it.
    expect(readFileSync(join(GRAFANA, 'docker-compose.yml'), 'utf8')).toContain(`./dashboards:${path}:ro`);
  });

  it('every expression of every dashboard panel returns data from a real Prometheus scraping the engine', async () => {
    const base = prometheus!.base;
    const failures: string[] = [];
    let evaluated = 0;
    for (const d of loadDashboards()) {
      for (const { where, expr } of panelExpressions(d)) {
        const r = await promQuery(base, forPrometheus(expr));
        evaluated++;
        if (r.status !== 'success') failures.push(`${where}: ${r.error}\n    ${expr}`);
        else if ((r.data?.result.length ?? 0) === 0 && !clusterOnly(expr)) failures.push(`${where}: no data\n    ${expr}`);
      }
      for (const { where, selector, label } of variableQueries(d)) {
        const r = await promQuery(base, forPrometheus(selector));
        evaluated++;
        const values = (r.data?.result ?? []).map((s) => s.metric[label]).filter((v) => v !== undefined);
        if (values.length === 0) failures.push(`${where}: no values of '${label}' in ${selector} (${r.error ?? 'no data'})`);
      }
      // Annotations mark events (cut-offs, restarts), so they may rightly be empty; they must be valid.
      for (const { where, expr } of annotationExpressions(d)) {
        const r = await promQuery(base, forPrometheus(expr));
        evaluated++;
        if (r.status !== 'success') failures.push(`${where}: ${r.error}\n    ${expr}`);
      }
    }
    expect(failures, `${failures.length} of ${evaluated} dashboard queries failed`).toEqual([]);
    expect(evaluated).toBeGreaterThan(60);
  }, 120_000);

  it('/metrics answers a metrics or operator token only, and Prometheus scrapes it with the shipped token line', async () => {
    const none = await http(engine.base, 'GET', '/metrics');
    expect([none.status, none.body.code]).toEqual([401, 'UNAUTHORIZED']);
    const unknown = await http(engine.base, 'GET', '/metrics', { token: 'not-a-known-token-at-all' });
    expect([unknown.status, unknown.body.code]).toEqual([401, 'UNAUTHORIZED']);
    for (const token of [TOKENS.PI0001, TOKENS.ICBC]) {
      const r = await http(engine.base, 'GET', '/metrics', { token });
      expect([r.status, r.body.code]).toEqual([403, 'FORBIDDEN']);
    }
    for (const token of [METRICS_TOKEN, TOKENS.ops]) {
      const r = await http(engine.base, 'GET', '/metrics', { token });
      expect(r.status).toBe(200);
      expect(r.body).toMatch(/^netting_ready 1$/m);
    }
    // The metrics token reads nothing else.
    for (const [method, path] of [['GET', '/v1/positions'], ['GET', '/v1/snapshots/latest'], ['GET', '/v1/batches'], ['POST', '/v1/instructions']] as const) {
      expect((await http(engine.base, method, path, { token: METRICS_TOKEN, body: method === 'POST' ? {} : undefined })).status, `${method} ${path}`).toBe(403);
    }
    // The shipped prometheus.yml sends the demo configuration's metrics token, and the scrapes of the test's copy succeed.
    const demoToken = (DEMO_CONFIG['principals'] as { token: string; role: string }[]).find((p) => p.role === 'metrics')?.token;
    expect(demoToken).toBeDefined();
    expect(readFileSync(join(GRAFANA, 'prometheus.yml'), 'utf8')).toMatch(new RegExp(`^\\s+credentials: ${demoToken}(\\s|$)`, 'm'));
    const up = await promQuery(prometheus!.base, `min_over_time(up{job="${JOB}"}[1m])`);
    expect(up.data?.result[0]?.value[1]).toBe('1');
  });

  it('a fresh engine exports its labelled counters from 0, before anything happened', () => {
    const sample = (series: string): string | undefined => new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(freshExposition)?.[1];
    expect(sample('netting_batch_cutoffs_total{trigger="operator"}')).toBe('0');
    expect(sample('netting_batch_cutoffs_total{trigger="schedule"}')).toBe('0');
    expect(sample('netting_instructions_total{type="payout",status="cleared"}')).toBe('0');
    expect(sample('netting_instructions_total{type="agreement",status="declined"}')).toBe('0');
    expect(sample('netting_rejections_total{code="OVERLOADED"}')).toBe('0');
    expect(sample('netting_shard_resyncs_total{shard="3"}')).toBe('0');
    expect(sample('netting_ws_connections_opened_total{role="bank"}')).toBe('0');
    expect(sample('netting_ws_messages_total{direction="in",op="receipt"}')).toBe('0');
    expect(sample('netting_ws_messages_total{direction="out",op="forward"}')).toBe('0');
    expect(sample('netting_settlement_unsettled_batches')).toBe('0');
  });

  it('/metrics passes promtool check metrics with no complaint', async () => {
    const body = await scrape(engine.base, METRICS_TOKEN);
    const r = run('promtool', ['check', 'metrics'], { input: body });
    expect({ exit: r.status, complaints: r.output.split('\n').filter((l) => l !== '') }).toEqual({ exit: 0, complaints: [] });
  }, 120_000);

  it('grafana/prometheus.yml passes promtool check config, as shipped and as rewritten for this test', () => {
    const shipped = run('promtool', ['check', 'config', 'prometheus.yml'], { cwd: GRAFANA });
    expect(shipped.status, shipped.output).toBe(0);
    const rewritten = run('promtool', ['check', 'config', join(prometheus!.dir, 'prometheus.yml')]);
    expect(rewritten.status, rewritten.output).toBe(0);
  }, 120_000);

  it('grafana/alerts.yml passes promtool check rules and its unit tests', () => {
    const check = run('promtool', ['check', 'rules', 'alerts.yml'], { cwd: GRAFANA });
    expect(check.status, check.output).toBe(0);
    const tests = run('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: GRAFANA });
    expect(tests.status, tests.output).toBe(0);
    expect(tests.output).toContain('SUCCESS');
    // Every alert has a test case.
    const alerts = [...readFileSync(join(GRAFANA, 'alerts.yml'), 'utf8').matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);
    const tested = new Set([...readFileSync(join(GRAFANA, 'alerts.test.yml'), 'utf8').matchAll(/^\s*alertname: (\S+)$/gm)].map((m) => m[1]!));
    expect(alerts.filter((a) => !tested.has(a))).toEqual([]);
  }, 120_000);

  it('Prometheus loads every alert rule and evaluates it against the engine without error; none fires', async () => {
    const base = prometheus!.base;
    const declared = [...readFileSync(join(GRAFANA, 'alerts.yml'), 'utf8').matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);
    const deadline = Date.now() + 30_000;
    let rules: any[] = [];
    for (;;) {
      const body = (await (await fetch(`${base}/api/v1/rules`)).json()) as any;
      rules = body.data.groups.flatMap((g: any) => g.rules);
      if (rules.length > 0 && rules.every((r) => r.health !== 'unknown')) break;
      if (Date.now() > deadline) throw new Error(`rules not all evaluated: ${JSON.stringify(rules.map((r) => [r.name, r.health]))}`);
      await sleep(250);
    }
    expect(rules.map((r) => r.name).sort()).toEqual([...declared].sort());
    expect(rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);
    const firing = rules.flatMap((r) => (r.alerts ?? []).filter((a: any) => a.state === 'firing').map((a: any) => `${r.name} ${JSON.stringify(a.labels)}`));
    expect(firing).toEqual([]);
  }, 120_000);

  it('every metric a dashboard or an alert rule names is exported by the engine', async () => {
    const exposition = await scrape(engine.base, METRICS_TOKEN);
    const types = new Map<string, string>();
    // What a cluster node adds: the cluster metrics' own exposition, whatever their values.
    const cluster = await new ClusterMetrics({ role: () => 'follower', leaderKnown: () => false, appliedSeq: () => 0, logLastSeq: () => 0 }).text();
    for (const m of `${exposition}\n${cluster.body}`.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
    const exported = (name: string): boolean => {
      if (types.has(name) || PROMETHEUS_SYNTHETIC.has(name)) return true;
      const m = /^(.*)_(bucket|sum|count)$/.exec(name);
      const t = m === null ? undefined : types.get(m[1]!);
      return t === 'histogram' || (t === 'summary' && m![2] !== 'bucket');
    };

    const uses = new Map<string, Set<string>>();
    const note = (where: string, expr: string): void => {
      for (const name of metricNames(expr)) {
        if (!uses.has(name)) uses.set(name, new Set());
        uses.get(name)!.add(where);
      }
    };
    for (const d of loadDashboards()) {
      for (const { where, expr } of [...panelExpressions(d), ...annotationExpressions(d)]) note(where, expr);
      for (const { where, selector } of variableQueries(d)) note(where, selector);
    }
    // The rules as Prometheus parsed them from grafana/alerts.yml.
    const body = (await (await fetch(`${prometheus!.base}/api/v1/rules`)).json()) as any;
    for (const g of body.data.groups) for (const r of g.rules) note(`alerts.yml / ${r.name}`, r.query);

    expect(uses.size).toBeGreaterThan(30);
    const missing = [...uses].filter(([name]) => !exported(name)).map(([name, where]) => `${name} (used by ${[...where].join('; ')})`);
    expect(missing).toEqual([]);
  }, 120_000);

  it('finds metric names in PromQL', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le, transport) (rate(netting_ack_latency_seconds_bucket{job="x", instance=~"$instance"}[$__rate_interval]))) > 5e-2 and on (job) group_left up offset 5m',
      ),
    ).toEqual(['netting_ack_latency_seconds_bucket', 'up']);
    expect(metricNames('1 - a_cents / on (job, instance) group_left b_cents')).toEqual(['a_cents', 'b_cents']);
    expect(metricNames('time() - process_start_time_seconds')).toEqual(['process_start_time_seconds']);
  });
});

describe('the unsettled-batch gauge', () => {
  it('is a count kept as batches close and are settled, recounted from the store at start', async () => {
    const t = tempDir('netting-unsettled-');
    const config = testConfig(t.dir);
    let e = await startEngine(t.dir, config);
    try {
      const unsettled = async (): Promise<string | undefined> =>
        /^netting_settlement_unsettled_batches (\S+)$/m.exec(await scrape(e.base, TOKENS.ops))?.[1];
      expect(await unsettled()).toBe('0');
      await ok(http(e.base, 'POST', '/v1/instructions', { token: TOKENS.PI0001, body: { id: 'u-1', type: 'payout', payer: 'ICBC', payee: 'CMB', amount: 10 } }), 'submit');
      const closed: string[] = [];
      for (let i = 0; i < 3; i++) closed.push((await ok(http(e.base, 'POST', '/v1/batches/close', { token: TOKENS.ops }), 'close')).batch);
      expect(await unsettled()).toBe('3');
      // Settling the same batch twice at once, and once more after, counts it once.
      const settle = (batch: string) => ok(http(e.base, 'POST', `/v1/batches/${batch}/settled`, { token: TOKENS.ops }), 'settle');
      await Promise.all([settle(closed[0]!), settle(closed[0]!)]);
      await settle(closed[0]!);
      expect(await unsettled()).toBe('2');
      // The open batch is not counted, and settling it is refused.
      expect((await http(e.base, 'POST', `/v1/batches/${(await http(e.base, 'GET', '/readyz')).body.batch}/settled`, { token: TOKENS.ops })).body.code).toBe('BATCH_OPEN');
      expect(await unsettled()).toBe('2');
      await e.kill9();
      e = await startEngine(t.dir, config);
      expect(await unsettled()).toBe('2');
      await settle(closed[2]!);
      expect(await unsettled()).toBe('1');
      await ok(http(e.base, 'POST', '/v1/batches/close', { token: TOKENS.ops }), 'close');
      expect(await unsettled()).toBe('2');
    } finally {
      await e.stop();
      t.cleanup();
    }
  }, 60_000);
});
