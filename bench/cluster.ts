/**
 * `npm run bench:cluster`: the replicated engine against the single engine
 * under the same WebSocket load, in the same run. The single engine runs
 * as `npm start` does; the replicated one is a three-node cluster (three
 * nats-server nodes with JetStream at R3, three engine nodes, the load on
 * the leader). Both are audited the same way. What the difference costs
 * is named in the report: a JetStream append (a Raft round among the NATS
 * nodes) before each task's commit, and two followers applying the log
 * on the same two cores.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, NatsCluster } from '../test/helpers/nats-cluster.js';
import { auditEngine } from './audit.js';
import { engineConfig, instructionPool } from './fixture.js';
import { fixtureOf, type BenchParams } from './params.js';
import { ENGINE_MAIN } from './paths.js';
import { machine } from './report.js';
import { startTarget, type TargetProcess } from './target-process.js';
import { runWsLoad, type WsLoadOutcome } from './ws-load.js';

interface Side {
  name: string;
  throughputPerS: number;
  p50: number;
  p99: number;
  cpuUsPerInstruction: number | undefined;
  audit: boolean;
  problems: string[];
}

const LEASE_MS = 3000;

async function measure(name: string, leader: TargetProcess, others: TargetProcess[], p: BenchParams): Promise<Side> {
  const cpu = (): number | undefined => {
    let sum = 0;
    for (const t of [leader, ...others]) {
      const s = t.cpuSeconds();
      if (s === undefined) return undefined;
      sum += s;
    }
    return sum;
  };
  const before = cpu();
  const load: WsLoadOutcome = await runWsLoad(leader.base, 'closed', p);
  const after = cpu();
  const answered = load.clearedInstructions + load.notCleared;
  const audit = await auditEngine(leader.base, load, instructionPool(fixtureOf(p)), p.banks);
  return {
    name,
    throughputPerS: load.throughputPerS,
    p50: load.latency.p50,
    p99: load.latency.p99,
    cpuUsPerInstruction: before === undefined || after === undefined || answered === 0 ? undefined : ((after - before) * 1e6) / answered,
    audit: audit.ok,
    problems: audit.problems,
  };
}

async function waitLeader(nodes: TargetProcess[], timeoutMs: number): Promise<TargetProcess> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    for (const n of nodes) {
      const r = await fetch(`${n.base}/readyz`).catch(() => undefined);
      if (r?.status === 200) return n;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no leader in time');
}

export async function runClusterBench(p: BenchParams, progress: (line: string) => void): Promise<{ ok: boolean; markdown: string; file: string }> {
  const fixture = fixtureOf(p);
  progress('single engine ...');
  const single = await startTarget('engine', ENGINE_MAIN, (dir) => engineConfig(dir, p.shards, p.workers, fixture));
  let alone: Side;
  try {
    alone = await measure('single engine', single, [], p);
  } finally {
    await single.stop();
    single.cleanup();
  }
  progress(`single engine: ${Math.round(alone.throughputPerS)}/s p99 ${alone.p99} ms`);

  progress('three-node cluster ...');
  const natsDir = mkdtempSync(join(tmpdir(), 'netting-bench-nats-'));
  const nats = await NatsCluster.start(natsDir);
  const nodes: TargetProcess[] = [];
  let replicated: Side;
  try {
    const ports = [await freePort(), await freePort(), await freePort()];
    for (let i = 0; i < 3; i++) {
      nodes.push(
        await startTarget(`node-${i + 1}`, ENGINE_MAIN, (dir) => ({
          ...engineConfig(dir, p.shards, p.workers, fixture),
          listen: { host: '127.0.0.1', port: ports[i] },
          cluster: { node: `n${i + 1}`, advertise: `http://127.0.0.1:${ports[i]}`, nats: nats.urls, replicas: 3, leaseMs: LEASE_MS },
        })),
      );
    }
    const leader = await waitLeader(nodes, 60_000);
    replicated = await measure('replicated (3 nodes, R3)', leader, nodes.filter((n) => n !== leader), p);
  } finally {
    for (const n of nodes) {
      await n.stop();
      n.cleanup();
    }
    await nats.stop();
    rmSync(natsDir, { recursive: true, force: true });
  }
  progress(`replicated: ${Math.round(replicated.throughputPerS)}/s p99 ${replicated.p99} ms`);

  const ratio = replicated.throughputPerS / alone.throughputPerS;
  const row = (s: Side): string =>
    `| ${s.name} | ${Math.round(s.throughputPerS).toLocaleString('en-US')} | ${s.p50} | ${s.p99} | ${s.cpuUsPerInstruction?.toFixed(1) ?? '–'} | ${s.audit ? 'ok' : 'FAILED'} |`;
  const m = machine();
  const markdown = [
    `# Replicated against single engine (${new Date().toISOString()})`,
    '',
    `Machine: ${m.cores} × ${m.cpuModel}, Node ${m.node}. Load: WebSocket closed loop, ${p.wsConnections} connections, frames of ${p.wsBatchSize}, window ${p.wsWindowFrames}, ${p.durationS} s (${p.warmupS} s warm-up), ${p.banks} banks, ${p.institutions} institutions.`,
    '',
    '| engine | instructions/s | p50 ms | p99 ms | CPU µs per instruction (all processes) | audit |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    row(alone),
    row(replicated),
    '',
    `Replicated throughput is ${ratio.toFixed(2)} of the single engine's.`,
    '',
    'What replication costs here: every task waits for a JetStream append acknowledged by two of the three NATS nodes (a Raft round) before its commit, ' +
      'the task travels to three NATS processes and to two followers, and the followers apply every task with the same shard code. ' +
      'On this machine all six processes and the load generator share two cores, so the followers\' and the NATS nodes\' CPU comes out of the leader\'s; on separate machines only the append latency remains.',
    '',
  ].join('\n');
  const file = join(p.resultsDir, `cluster-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}Z.md`);
  writeFileSync(file, markdown);
  const ok = alone.audit && replicated.audit;
  for (const s of [alone, replicated]) for (const x of s.problems) progress(`${s.name}: ${x}`);
  return { ok, markdown, file };
}
