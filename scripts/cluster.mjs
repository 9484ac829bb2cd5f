#!/usr/bin/env node
/**
 * `npm run cluster`: a three-node cluster on this machine, on loopback
 * only, for trials of cluster mode (docs/cluster.md). It builds when the
 * build is stale (scripts/build-if-stale.mjs, as `npm start` does), then
 * starts
 *
 * - three nats-server nodes (Debian's package), JetStream on, clustered by
 *   routes: clients on 127.0.0.1:4222-4224, routes on 6222-6224,
 *   monitoring on 8222-8224, stores under ./cluster-data/nats-<n>;
 * - three engine nodes n1..n3 on the demo configuration's banks,
 *   principals and mandates (dist/src/config/demo.js), listening on
 *   127.0.0.1:8081-8083, data under ./cluster-data/engine-<n>, log
 *   replicas 3, lease 3000 ms.
 *
 * The configurations it writes (./cluster-data/*.conf, *.json) are the
 * same shape as a real deployment's; every process logs to
 * ./cluster-data/logs/. It prints the leader once one answers
 * GET /readyz 200, then every change of leader (it asks every node once a
 * second), and any process that exits. SIGINT (Ctrl-C), SIGTERM, SIGHUP
 * or the end of its parent process stops the engines (followers first, so
 * the leader is not replaced on the way out) and then the NATS servers; a
 * second signal kills what is left at once. It stops only the processes
 * it started.
 *
 * Not for production: a real cluster runs each nats-server and each engine
 * under its own supervisor on its own machine (docs/cluster.md, "Start").
 */

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const DIR = join(root, 'cluster-data');
const LOGS = join(DIR, 'logs');
const PIDS = join(DIR, 'pids.json');
const HOST = '127.0.0.1';
const SIZE = 3;
const NATS_PORT_BASE = 4222;
const NATS_ROUTE_PORT_BASE = 6222;
const NATS_MONITOR_PORT_BASE = 8222;
const ENGINE_PORT_BASE = 8081;
const REPLICAS = 3;
const LEASE_MS = 3000;
const POLL_MS = 1000;
/** The engines open the log for up to 120 s while JetStream elects its meta leader; a leader needs a little more. */
const LEADER_WAIT_MS = 150_000;
const NATS_READY_MS = 30_000;
/** An engine exits within limits.shutdownMs (10 s by default) of SIGTERM; past this it is killed. */
const ENGINE_STOP_MS = 15_000;
const NATS_STOP_MS = 10_000;
const READYZ_TIMEOUT_MS = 900;
/** A signal this soon after the first is taken as the same one delivered twice. */
const SIGNAL_ECHO_MS = 1000;
/**
 * `npm run` starts this script through `sh -c`, and npm passes SIGTERM on
 * to that shell, which exits without passing it on: the script would be
 * left running. So it also stops everything once its parent is gone.
 */
const PARENT_PID = process.ppid;

const rel = (path) => relative(root, path) || '.';
const stamp = () => new Date().toTimeString().slice(0, 8);
const say = (line) => process.stdout.write(`${stamp()} ${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ build, and the demo configuration

const build = spawnSync(process.execPath, [join(root, 'scripts', 'build-if-stale.mjs')], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
const { DEMO_CONFIG } = await import(pathToFileURL(join(root, 'dist', 'src', 'config', 'demo.js')).href);
const { parseConfig } = await import(pathToFileURL(join(root, 'dist', 'src', 'config', 'config.js')).href);

// ------------------------------------------------------------------ the layout

const nats = Array.from({ length: SIZE }, (_, i) => ({
  name: `nats-${i + 1}`,
  port: NATS_PORT_BASE + i,
  routePort: NATS_ROUTE_PORT_BASE + i,
  monitorPort: NATS_MONITOR_PORT_BASE + i,
  storeDir: join(DIR, `nats-${i + 1}`),
  confFile: join(DIR, `nats-${i + 1}.conf`),
  logFile: join(LOGS, `nats-${i + 1}.log`),
  proc: undefined,
}));
const natsUrls = nats.map((n) => `nats://${HOST}:${n.port}`);

const engines = Array.from({ length: SIZE }, (_, i) => ({
  name: `n${i + 1}`,
  port: ENGINE_PORT_BASE + i,
  url: `http://${HOST}:${ENGINE_PORT_BASE + i}`,
  dataDir: `./cluster-data/engine-${i + 1}`,
  configFile: join(DIR, `engine-${i + 1}.json`),
  logFile: join(LOGS, `engine-${i + 1}.log`),
  proc: undefined,
}));

function natsConf(n) {
  const routes = nats.filter((o) => o !== n).map((o) => `nats://${HOST}:${o.routePort}`);
  return [
    `# ${n.name} of the local trial cluster, written by scripts/cluster.mjs (npm run cluster).`,
    `server_name: ${n.name}`,
    `listen: ${HOST}:${n.port}`,
    `http: ${HOST}:${n.monitorPort}`,
    'jetstream {',
    `  store_dir: "${n.storeDir}"`,
    '}',
    'cluster {',
    '  name: netting',
    `  listen: ${HOST}:${n.routePort}`,
    `  routes: [${routes.join(', ')}]`,
    '}',
    '',
  ].join('\n');
}

function engineConfig(e) {
  return {
    ...DEMO_CONFIG,
    listen: { host: HOST, port: e.port },
    dataDir: e.dataDir,
    cluster: { node: e.name, advertise: e.url, nats: natsUrls, replicas: REPLICAS, leaseMs: LEASE_MS },
  };
}

// ------------------------------------------------------------------ before anything starts

function portFree(port) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes a previous run wrote down and that still run (it was killed before it could stop them). */
function leftovers() {
  if (!existsSync(PIDS)) return [];
  try {
    const list = JSON.parse(readFileSync(PIDS, 'utf8'));
    return list.filter((p) => alive(p.pid) && readCmdline(p.pid).includes(p.match));
  } catch {
    return [];
  }
}

function readCmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

function writePids() {
  const list = [
    ...nats.filter((n) => n.proc?.pid !== undefined).map((n) => ({ name: n.name, pid: n.proc.pid, match: n.confFile })),
    ...engines.filter((e) => e.proc?.pid !== undefined).map((e) => ({ name: e.name, pid: e.proc.pid, match: rel(e.configFile) })),
  ];
  writeFileSync(PIDS, `${JSON.stringify(list, null, 2)}\n`);
}

async function preflight() {
  const which = spawnSync('nats-server', ['--version'], { encoding: 'utf8' });
  if (which.error !== undefined || which.status !== 0) {
    fail('nats-server is not installed (Debian: apt-get install --no-install-recommends nats-server; stop its own service: systemctl disable --now nats-server)');
  }
  const left = leftovers();
  if (left.length > 0) {
    const pids = (list) => list.map((p) => p.pid).join(' ');
    const leftEngines = left.filter((p) => !p.name.startsWith('nats-'));
    const leftNats = left.filter((p) => p.name.startsWith('nats-'));
    const how = [leftEngines.length > 0 ? `kill ${pids(leftEngines)}` : '', leftNats.length > 0 ? `kill -INT ${pids(leftNats)}` : ''].filter((c) => c !== '');
    fail(`processes of an earlier run still run: ${left.map((p) => `${p.name} (pid ${p.pid})`).join(', ')}; stop them, the engines first (${how.join(', then ')}), and start again`);
  }
  const busy = [];
  for (const port of [...nats.flatMap((n) => [n.port, n.routePort, n.monitorPort]), ...engines.map((e) => e.port)]) {
    if (!(await portFree(port))) busy.push(port);
  }
  if (busy.length > 0) {
    fail(
      `port(s) ${busy.join(', ')} on ${HOST} are in use. The cluster needs ${NATS_PORT_BASE}-${NATS_PORT_BASE + SIZE - 1}, ` +
        `${NATS_ROUTE_PORT_BASE}-${NATS_ROUTE_PORT_BASE + SIZE - 1}, ${NATS_MONITOR_PORT_BASE}-${NATS_MONITOR_PORT_BASE + SIZE - 1} and ` +
        `${ENGINE_PORT_BASE}-${ENGINE_PORT_BASE + SIZE - 1} (is Debian's nats-server service running? systemctl disable --now nats-server)`,
    );
  }
  process.stdout.write(`nats-server ${which.stdout.trim().replace(/^nats-server:\s*/, '')}\n`);
}

function fail(message) {
  process.stderr.write(`cluster: ${message}\n`);
  process.exit(1);
}

// ------------------------------------------------------------------ processes

let stopping = false;

/** Start a child in its own process group: a terminal's Ctrl-C reaches this script only, which stops the children in order. */
function launch(what, cmd, args, logFile) {
  const fd = openSync(logFile, 'a');
  const proc = spawn(cmd, args, { cwd: root, detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  proc.once('error', (err) => say(`${what}: ${err.message}`));
  void proc.exited.then(({ code, signal }) => {
    if (!stopping) say(`${what} (pid ${proc.pid}) exited: ${signal ?? `code ${code}`}; its log: ${rel(logFile)}`);
  });
  return proc;
}

function tail(file, lines = 15) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function gone(proc) {
  return proc === undefined || proc.exitCode !== null || proc.signalCode !== null;
}

async function startNats() {
  for (const n of nats) {
    mkdirSync(n.storeDir, { recursive: true });
    writeFileSync(n.confFile, natsConf(n));
    const check = spawnSync('nats-server', ['-t', '-c', n.confFile], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`${rel(n.confFile)} is refused by nats-server: ${`${check.stdout}${check.stderr}`.trim()}`);
  }
  for (const n of nats) {
    n.logStart = logSize(n.logFile);
    n.proc = launch(n.name, 'nats-server', ['-c', n.confFile], n.logFile);
  }
  writePids();
  // Every server ready, and one of them the JetStream meta leader: before that JetStream answers nothing.
  const until = Date.now() + NATS_READY_MS;
  while (!stopping) {
    const logs = nats.map((n) => logSince(n.logFile, n.logStart));
    const dead = nats.find((n) => gone(n.proc));
    if (dead !== undefined) throw new Error(`${dead.name} exited at start:\n${tail(dead.logFile)}`);
    const ready = logs.every((l) => /Server is ready/.test(l));
    const meta = logs.some((l) => /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(l));
    if (ready && meta) break;
    if (Date.now() > until) throw new Error(`the NATS servers are not ready in ${NATS_READY_MS / 1000} s; see ${rel(LOGS)}/nats-*.log`);
    await sleep(100);
  }
  if (stopping) return;
  say(`NATS JetStream cluster up: ${natsUrls.join(' ')} (monitoring: ${nats.map((n) => `http://${HOST}:${n.monitorPort}`).join(' ')})`);
}

function logSize(file) {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

function logSince(file, start) {
  try {
    return readFileSync(file).subarray(start).toString();
  } catch {
    return '';
  }
}

function startEngines() {
  for (const e of engines) {
    const raw = engineConfig(e);
    try {
      parseConfig(raw);
    } catch (err) {
      throw new Error(`the configuration of ${e.name} is refused: ${err.message}`);
    }
    writeFileSync(e.configFile, `${JSON.stringify(raw, null, 2)}\n`, { mode: 0o600 });
    e.proc = launch(`engine ${e.name}`, process.execPath, [join('dist', 'src', 'main.js'), '--config', rel(e.configFile)], e.logFile);
  }
  writePids();
  say(`engines started: ${engines.map((e) => `${e.name} ${e.url} (pid ${e.proc.pid})`).join(', ')}`);
}

/** GET /readyz: the node's answer, or undefined when it does not answer in time. */
async function readyz(e) {
  try {
    const res = await fetch(`${e.url}/readyz`, { signal: AbortSignal.timeout(READYZ_TIMEOUT_MS) });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  } catch {
    return undefined;
  }
}

/**
 * The nodes that answer GET /readyz 200 as leader. Every port is asked,
 * not only those of the engines this script started: a node restarted by
 * hand (docs/cluster.md, "Replace a node") counts too.
 */
async function leaders() {
  const answers = await Promise.all(engines.map((e) => readyz(e)));
  return engines.filter((_, i) => answers[i]?.status === 200 && answers[i]?.body?.role === 'leader');
}

function describe(list) {
  if (list.length === 0) return 'no node answers as leader';
  if (list.length > 1) return `more than one node answers as leader: ${list.map((e) => e.name).join(', ')} (a bug: report it)`;
  const e = list[0];
  return `leader: ${e.name} ${e.url}${gone(e.proc) ? ' (not started by this script)' : ` (pid ${e.proc.pid})`}`;
}

function printTokens() {
  const lines = [
    '',
    'The cluster runs on the DEMO configuration. Send requests to the leader;',
    'a follower answers 503 NOT_LEADER naming it.',
    `  banks: ${DEMO_CONFIG.banks.map((b) => b.code).join(' ')}`,
    '  DEMO tokens (for local trials only):',
    ...DEMO_CONFIG.principals.map((p) => `    ${p.role.padEnd(11)} ${p.id.padEnd(8)} ${p.token}`),
    `  logs: ${rel(LOGS)}/   configurations and data: ${rel(DIR)}/`,
    '  Ctrl-C stops all six processes.',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ------------------------------------------------------------------ stopping

/** Stop one child with `signal`, SIGKILL after `waitMs`; whether it was still running. */
async function stopProc(proc, signal, waitMs) {
  if (gone(proc)) return false;
  try {
    proc.kill(signal);
  } catch {
    return false;
  }
  const timer = setTimeout(() => {
    if (!gone(proc)) proc.kill('SIGKILL');
  }, waitMs);
  await proc.exited;
  clearTimeout(timer);
  return true;
}

let stopped;
let stopStartedMs = 0;

function stopAll(reason) {
  if (stopped !== undefined) {
    // A second signal, not the echo of the first (npm passes a terminal's Ctrl-C on as well): no more waiting.
    if (Date.now() - stopStartedMs > SIGNAL_ECHO_MS) {
      say(`${reason} again: killing what is left`);
      for (const p of [...engines, ...nats]) if (!gone(p.proc)) p.proc.kill('SIGKILL');
    }
    return stopped;
  }
  stopping = true;
  stopStartedMs = Date.now();
  say(`${reason}: stopping the engines, then the NATS servers`);
  stopped = (async () => {
    // Followers first: the leader stays leader until it gives its lease back itself.
    const lead = await leaders().catch(() => []);
    const followers = engines.filter((e) => !lead.includes(e));
    const report = (p, wasRunning) => {
      if (p.proc !== undefined) say(`${p.name} ${wasRunning ? 'stopped' : 'had already exited'} (${p.proc.signalCode ?? `exit ${p.proc.exitCode}`})`);
    };
    await Promise.all(followers.map(async (e) => report(e, await stopProc(e.proc, 'SIGTERM', ENGINE_STOP_MS))));
    await Promise.all(lead.map(async (e) => report(e, await stopProc(e.proc, 'SIGTERM', ENGINE_STOP_MS))));
    const strangers = (await Promise.all(engines.map(async (e) => ((await readyz(e)) === undefined ? undefined : e)))).filter((e) => e !== undefined);
    for (const e of strangers) say(`${e.name} still answers on ${e.url}, started by hand: stop it (SIGTERM) yourself; without NATS it cannot stop in order`);
    // nats-server shuts down in order on SIGINT and SIGTERM alike, but exits 1 on SIGTERM (Debian's unit stops it with SIGINT).
    await Promise.all(nats.map(async (n) => report(n, await stopProc(n.proc, 'SIGINT', NATS_STOP_MS))));
    rmSync(PIDS, { force: true });
  })();
  return stopped;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    void stopAll(signal).then(() => process.exit(0));
  });
}
const parentWatch = setInterval(() => {
  if (process.ppid === PARENT_PID) return;
  clearInterval(parentWatch);
  void stopAll(`the parent process (pid ${PARENT_PID}) is gone`).then(() => process.exit(0));
}, POLL_MS);
// Output to a terminal or pipe that has gone away must not crash the script and orphan its children.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

// ------------------------------------------------------------------ main

async function main() {
  await preflight();
  mkdirSync(LOGS, { recursive: true });
  await startNats();
  if (stopping) return;
  startEngines();
  say(`waiting for a leader (GET /readyz 200 on ${engines.map((e) => e.port).join(', ')})`);
  const until = Date.now() + LEADER_WAIT_MS;
  let current = [];
  while (!stopping) {
    current = await leaders();
    if (current.length > 0) break;
    if (engines.every((e) => gone(e.proc))) throw new Error(`every engine exited; the last lines of ${rel(engines[0].logFile)}:\n${tail(engines[0].logFile)}`);
    if (Date.now() > until) throw new Error(`no leader in ${LEADER_WAIT_MS / 1000} s; see ${rel(LOGS)}/engine-*.log`);
    await sleep(250);
  }
  if (stopping) return;
  say(describe(current));
  printTokens();
  let last = current.map((e) => e.name).join(',');
  while (!stopping) {
    await sleep(POLL_MS);
    if (stopping) break;
    current = await leaders();
    const now = current.map((e) => e.name).join(',');
    if (now !== last && !stopping) {
      say(describe(current));
      last = now;
    }
  }
}

main().catch(async (err) => {
  // A process stopped by a signal during the start is no start failure: the signal's stop is under way.
  if (stopping) return;
  process.stderr.write(`cluster: ${err.message}\n`);
  await stopAll('start failed');
  process.exit(1);
});
