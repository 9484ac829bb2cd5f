/**
 * A local NATS JetStream cluster for tests and the local cluster script:
 * `nats-server` processes (Debian's package) on loopback ports, clustered
 * by routes, each with its JetStream store in a folder of its own. Every
 * process is stopped by whoever started it.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

/**
 * Every nats-server started here and not yet exited. Each is also killed
 * when its lifetime bound passes, and all of them when this process exits,
 * so none outlives the run that started it.
 */
const liveServers = new Set<ChildProcess>();
/** How long a nats-server may live at most unless the caller says otherwise. */
const SERVER_LIFE_MS = 90 * 60 * 1000;
let exitHook = false;

function track(child: ChildProcess, lifeMs: number): void {
  liveServers.add(child);
  const bound = setTimeout(() => child.kill('SIGKILL'), lifeMs);
  bound.unref();
  child.once('exit', () => {
    clearTimeout(bound);
    liveServers.delete(child);
  });
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => killLeftoverNats());
  }
}

/** SIGKILL every nats-server this process started that is still running; returns how many there were. */
export function killLeftoverNats(): number {
  const left = [...liveServers];
  for (const child of left) child.kill('SIGKILL');
  return left.length;
}

export interface NatsNode {
  name: string;
  port: number;
  clusterPort: number;
  url: string;
  process: ChildProcess | undefined;
  storeDir: string;
}

/** A free loopback port, as the kernel hands it out. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export class NatsCluster {
  private constructor(
    readonly nodes: NatsNode[],
    private readonly output: Map<string, string>,
    private readonly lifeMs = SERVER_LIFE_MS,
  ) {}

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** `lifeMs` bounds each server's life: it is killed when that time has passed, whatever the test does. */
  static async start(dir: string, size = 3, lifeMs = SERVER_LIFE_MS): Promise<NatsCluster> {
    const nodes: NatsNode[] = [];
    for (let i = 0; i < size; i++) {
      const port = await freePort();
      const clusterPort = await freePort();
      nodes.push({ name: `nats-${i + 1}`, port, clusterPort, url: `nats://127.0.0.1:${port}`, process: undefined, storeDir: join(dir, `nats-${i + 1}`) });
    }
    const cluster = new NatsCluster(nodes, new Map(), lifeMs);
    for (const n of nodes) cluster.spawnNode(n);
    await Promise.all(nodes.map((n) => cluster.waitReady(n)));
    await cluster.waitMetaLeader();
    return cluster;
  }

  private spawnNode(n: NatsNode): void {
    mkdirSync(n.storeDir, { recursive: true });
    const routes = this.nodes.filter((o) => o !== n).map((o) => `nats://127.0.0.1:${o.clusterPort}`).join(',');
    const args = ['-a', '127.0.0.1', '-p', String(n.port), '-n', n.name, '-js', '-sd', n.storeDir, '--cluster_name', 'netting', '--cluster', `nats://127.0.0.1:${n.clusterPort}`];
    if (routes !== '') args.push('--routes', routes);
    const child = spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.output.set(n.name, '');
    const keep = (chunk: Buffer): void => {
      const text = (this.output.get(n.name) ?? '') + chunk.toString();
      this.output.set(n.name, text.length > 200_000 ? text.slice(-100_000) : text);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    track(child, this.lifeMs);
    n.process = child;
  }

  private async waitReady(n: NatsNode, timeoutMs = 15_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if (/Server is ready/.test(this.output.get(n.name) ?? '')) return;
      if (n.process?.exitCode !== null && n.process?.exitCode !== undefined) throw new Error(`${n.name} exited: ${this.output.get(n.name)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${n.name} not ready in ${timeoutMs} ms: ${this.output.get(n.name)}`);
  }

  /** Until one server reports a JetStream meta leader: before that, JetStream answers nothing. */
  async waitMetaLeader(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if (this.nodes.some((_, i) => /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(this.logOf(i)))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('no JetStream meta leader in time');
  }

  /** Kill one server at once (SIGKILL). */
  kill(i: number): void {
    this.nodes[i]!.process?.kill('SIGKILL');
  }

  /** Kill one server with SIGKILL and wait until it is gone. */
  async killAndWait(i: number): Promise<void> {
    const p = this.nodes[i]!.process;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGKILL');
    await gone;
  }

  /** The index of the server named `name` (as JetStream names a stream's leader), or -1. */
  indexOf(name: string): number {
    return this.nodes.findIndex((n) => n.name === name);
  }

  /** Start a killed server again, on its ports and store. */
  async restart(i: number): Promise<void> {
    const n = this.nodes[i]!;
    this.output.set(n.name, '');
    this.spawnNode(n);
    await this.waitReady(n);
  }

  logOf(i: number): string {
    return this.output.get(this.nodes[i]!.name) ?? '';
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.nodes.map(
        (n) =>
          new Promise<void>((resolve) => {
            const p = n.process;
            if (p === undefined || p.exitCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGTERM');
            setTimeout(() => p.kill('SIGKILL'), 3000).unref();
          }),
      ),
    );
  }
}
