/**
 * Engine nodes of a cluster as real processes on loopback, and a client
 * side that follows the leader through failovers.
 *
 * - `EngineCluster` starts, kills (SIGKILL), stops (SIGTERM), pauses
 *   (SIGSTOP), resumes (SIGCONT) and wipes engine nodes that share one
 *   NATS JetStream cluster (test/helpers/nats-cluster.ts), and finds the
 *   leader by polling `GET /readyz`. Every engine it starts has a bound on
 *   its life and is killed by `stopAll` (call it in afterAll).
 * - `ClientLedger` is what the clients know: every instruction sent, what
 *   it was answered, and the reference model of every acknowledged
 *   `cleared` result. It records as a violation every answer that
 *   contradicts an earlier one (an acknowledged instruction answered fresh
 *   again, a final status going back).
 * - `StreamLoad` streams instructions over WebSocket to one leader with
 *   several frames in flight per connection, while a bank confirms the
 *   two-phase gateway payments among them over HTTP; `settle` retries on a
 *   (new) leader everything that was not answered, with the same ids.
 */

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { join } from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { http, StreamClient, type Ack } from './clients.js';
import { BANKS, startEngine, tempDirs, testConfig, TOKENS, type RunningEngine } from './engine-process.js';
import { freePort, NatsCluster } from './nats-cluster.js';
import { randomInstruction, ReferenceModel, rowsOf, type RefInstruction } from './reference-model.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long an engine node may live at most, whatever the test does (the soak runs for many minutes). */
const ENGINE_LIFE_MS = 90 * 60 * 1000;

export interface EngineNode {
  index: number;
  name: string;
  /** The folder with the node's config.json; its data folder is `dataDir`. */
  dir: string;
  dataDir: string;
  port: number;
  base: string;
  engine: RunningEngine | undefined;
  paused: boolean;
  /** Output of the node's earlier processes (tails), for diagnostics. */
  history: string[];
}

export interface ReadyReply {
  status: number;
  body: any;
}

/** GET with a bound: a paused node accepts connections (the kernel does) but answers nothing. */
export async function getWithin(url: string, timeoutMs: number, token?: string): Promise<ReadyReply | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON (metrics)
    }
    return { status: res.status, body };
  } catch {
    return undefined;
  }
}

export class EngineCluster {
  private constructor(
    readonly nats: NatsCluster,
    readonly nodes: EngineNode[],
    private readonly leaseMs: number,
    private readonly overrides: Record<string, unknown>,
  ) {}

  /** Prepare `count` nodes (folders and ports) and start them all. */
  static async start(nats: NatsCluster, makeDir: () => string, opts: { count?: number; leaseMs?: number; overrides?: Record<string, unknown> } = {}): Promise<EngineCluster> {
    const nodes: EngineNode[] = [];
    for (let i = 0; i < (opts.count ?? 3); i++) {
      const dir = makeDir();
      const port = await freePort();
      nodes.push({ index: i, name: `n${i + 1}`, dir, dataDir: join(dir, 'data'), port, base: `http://127.0.0.1:${port}`, engine: undefined, paused: false, history: [] });
    }
    const cluster = new EngineCluster(nats, nodes, opts.leaseMs ?? 1000, opts.overrides ?? {});
    for (let i = 0; i < nodes.length; i++) await cluster.start(i);
    return cluster;
  }

  name(i: number): string {
    return this.nodes[i]!.name;
  }

  base(i: number): string {
    return this.nodes[i]!.base;
  }

  config(i: number): Record<string, unknown> {
    const n = this.nodes[i]!;
    return testConfig(n.dataDir, {
      listen: { host: '127.0.0.1', port: n.port },
      cluster: { node: n.name, advertise: n.base, nats: this.nats.urls, replicas: 3, leaseMs: this.leaseMs },
      ...this.overrides,
    });
  }

  /** Start node `i` on its data folder (as it was left, or empty after `wipe`). */
  async start(i: number): Promise<void> {
    const n = this.nodes[i]!;
    if (n.engine !== undefined) throw new Error(`${n.name} is running`);
    const engine = await startEngine(n.dir, this.config(i));
    const bound = setTimeout(() => engine.proc.kill('SIGKILL'), ENGINE_LIFE_MS);
    bound.unref();
    engine.proc.once('exit', () => clearTimeout(bound));
    n.engine = engine;
    n.paused = false;
  }

  running(i: number): boolean {
    const e = this.nodes[i]!.engine;
    return e !== undefined && e.proc.exitCode === null && e.proc.signalCode === null;
  }

  private forget(i: number): void {
    const n = this.nodes[i]!;
    if (n.engine !== undefined) n.history.push(n.engine.output().slice(-20_000));
    if (n.history.length > 5) n.history.shift();
    n.engine = undefined;
    n.paused = false;
  }

  /** SIGKILL node `i` and wait until it is gone. */
  async kill9(i: number): Promise<void> {
    const e = this.nodes[i]!.engine;
    if (e !== undefined) await e.kill9();
    this.forget(i);
  }

  /** SIGTERM node `i` (resumed first if paused); its exit code. */
  async stop(i: number): Promise<number | null> {
    const n = this.nodes[i]!;
    const e = n.engine;
    if (e === undefined) return null;
    if (n.paused) this.resume(i);
    const timer = setTimeout(() => e.proc.kill('SIGKILL'), 30_000);
    const code = await e.stop();
    clearTimeout(timer);
    this.forget(i);
    return code;
  }

  pause(i: number): void {
    const n = this.nodes[i]!;
    n.engine!.proc.kill('SIGSTOP');
    n.paused = true;
  }

  resume(i: number): void {
    const n = this.nodes[i]!;
    n.engine!.proc.kill('SIGCONT');
    n.paused = false;
  }

  /** Delete node `i`'s data folder (the node must be stopped). */
  wipe(i: number): void {
    if (this.nodes[i]!.engine !== undefined) throw new Error('wipe a stopped node only');
    rmSync(this.nodes[i]!.dataDir, { recursive: true, force: true });
  }

  async readyz(i: number, timeoutMs = 1000): Promise<ReadyReply | undefined> {
    return getWithin(`${this.base(i)}/readyz`, timeoutMs);
  }

  /** Poll `GET /readyz` on the running, unpaused nodes (but `exclude`) until one answers 200 as leader. */
  async waitLeader(opts: { exclude?: number[]; timeoutMs?: number; pollMs?: number } = {}): Promise<number> {
    const until = Date.now() + (opts.timeoutMs ?? 30_000);
    const exclude = new Set(opts.exclude ?? []);
    while (Date.now() < until) {
      const candidates = this.nodes.filter((n) => !exclude.has(n.index) && n.engine !== undefined && !n.paused);
      const replies = await Promise.all(candidates.map(async (n) => ({ n, r: await this.readyz(n.index, 1000) })));
      const leaders = replies.filter(({ r }) => r?.status === 200 && r.body?.role === 'leader');
      if (leaders.length > 1) throw new Error(`two nodes answer as leader: ${leaders.map(({ n }) => n.name).join(', ')}`);
      if (leaders.length === 1) return leaders[0]!.n.index;
      await sleep(opts.pollMs ?? 50);
    }
    throw new Error(`no leader in time:\n${this.tails()}`);
  }

  /** Until node `i` answers 503 NOT_LEADER as a follower naming `leader` as the leader. */
  async waitFollowing(i: number, leader: number, timeoutMs = 20_000): Promise<ReadyReply> {
    const until = Date.now() + timeoutMs;
    let last: ReadyReply | undefined;
    while (Date.now() < until) {
      last = await this.readyz(i, 1000);
      if (last?.status === 503 && last.body?.code === 'NOT_LEADER' && last.body?.role === 'follower' && last.body?.leader?.node === this.name(leader)) return last;
      await sleep(50);
    }
    throw new Error(`${this.name(i)} does not follow ${this.name(leader)}: last /readyz ${JSON.stringify(last)}\n${this.tails()}`);
  }

  /** A gauge from node `i`'s metrics (leader or follower), or undefined. */
  async metric(i: number, name: string): Promise<number | undefined> {
    const r = await getWithin(`${this.base(i)}/metrics`, 2000, TOKENS.ops);
    if (r === undefined || typeof r.body !== 'string') return undefined;
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(r.body);
    return m === null ? undefined : Number(m[1]);
  }

  /** Nodes that were started and whose process has ended by itself (not killed or stopped by the test), with their last output. */
  crashed(): string[] {
    return this.nodes
      .filter((n) => n.engine !== undefined && !this.running(n.index))
      .map((n) => `${n.name} exited (code ${n.engine!.proc.exitCode}, signal ${n.engine!.proc.signalCode}):\n${n.engine!.output().split('\n').slice(-30).join('\n')}`);
  }

  /**
   * What a process supervisor does: start again every node whose process
   * ended by itself. Answers what each had printed last, for the report.
   */
  async restartExited(): Promise<string[]> {
    const found = this.crashed();
    for (const n of this.nodes) {
      if (n.engine === undefined || this.running(n.index)) continue;
      this.forget(n.index);
      await this.start(n.index);
    }
    return found;
  }

  /** The last lines of every node's output, for a failure message. */
  tails(lines = 25): string {
    return this.nodes
      .map((n) => {
        const out = n.engine?.output() ?? n.history.at(-1) ?? '';
        return `--- ${n.name}${n.engine === undefined ? ' (not running)' : ''}\n${out.split('\n').slice(-lines).join('\n')}`;
      })
      .join('\n');
  }

  /** Lines of every node's output (current process and earlier ones) that match `pattern`. */
  grep(pattern: RegExp): string[] {
    const out: string[] = [];
    for (const n of this.nodes) {
      for (const text of [...n.history, n.engine?.output() ?? '']) {
        for (const line of text.split('\n')) if (pattern.test(line)) out.push(`${n.name}: ${line}`);
      }
    }
    return out;
  }

  /** Write every node's output (earlier processes first) and every NATS server's log into `dir`. */
  dump(dir: string): void {
    mkdirSync(dir, { recursive: true });
    for (const n of this.nodes) writeFileSync(join(dir, `${n.name}.log`), [...n.history, n.engine?.output() ?? ''].join('\n--- restarted ---\n'));
    this.nats.nodes.forEach((s, i) => writeFileSync(join(dir, `${s.name}.log`), this.nats.logOf(i)));
  }

  /** SIGKILL every node still running (paused ones included). */
  async stopAll(): Promise<void> {
    // CLUSTER_DUMP=<folder> keeps every process's output for a look after the run.
    const dumpDir = process.env['CLUSTER_DUMP'];
    if (dumpDir !== undefined && dumpDir !== '') this.dump(join(dumpDir, `${Date.now()}`));
    for (let i = 0; i < this.nodes.length; i++) await this.kill9(i);
  }
}

/** Run `work` with a JetStream manager on a connection of its own, closed after. */
async function withJetStream<T>(nats: NatsCluster, work: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
  const nc = await connect({ servers: nats.urls, timeout: 5000 });
  try {
    return await work(await jetstreamManager(nc, { timeout: 5000 }));
  } finally {
    await nc.close();
  }
}

/** The name of the NATS server that leads stream `stream`'s Raft group, as JetStream reports it. */
export async function streamLeader(nats: NatsCluster, stream: string): Promise<string | undefined> {
  return withJetStream(nats, async (jsm) => {
    try {
      return (await jsm.streams.info(stream)).cluster?.leader;
    } catch {
      return undefined;
    }
  });
}

/**
 * Wait until every replica of each stream is current (none offline or
 * behind): a NATS server that was restarted has caught up, so losing
 * another one leaves a majority that can go on. Answers whether it did in
 * time.
 */
export async function waitStreamsCurrent(nats: NatsCluster, streams: readonly string[], timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  return withJetStream(nats, async (jsm) => {
    while (Date.now() < until) {
      let current = true;
      for (const stream of streams) {
        try {
          const cluster = (await jsm.streams.info(stream)).cluster;
          if (cluster?.leader === undefined || (cluster.replicas ?? []).some((r) => !r.current || r.offline === true)) current = false;
        } catch {
          current = false;
        }
      }
      if (current) return true;
      await sleep(250);
    }
    return false;
  });
}

// ---- the clients' side ------------------------------------------------------------------

export interface SentInstruction extends RefInstruction {
  twoPhase?: boolean;
  timeoutMs?: number;
}

type State = 'unanswered' | 'pending' | 'cleared';

export interface Tracked {
  key: string;
  institution: string;
  ins: SentInstruction;
  state: State;
  /** Answered `cleared` on the first submission, before any failover. */
  ackedFirstTime: boolean;
  /** Sent again after it went unanswered. */
  retried: boolean;
  /** A receipt for it is in flight. */
  receiptInFlight: boolean;
}

export const INSTITUTION_TOKENS: Record<string, string> = { PI0001: TOKENS.PI0001, PI0002: TOKENS.PI0002 };

/** Answers that ask the client to send again later: nothing was stored. */
const RETRY_CODES = new Set(['OVERLOADED', 'INTERNAL', 'NOT_LEADER']);

export class ClientLedger {
  readonly model = new ReferenceModel(BANKS);
  readonly items = new Map<string, Tracked>();
  /** Keys answered `cleared`, in the order the answers came. */
  readonly clearedOrder: string[] = [];
  readonly violations: string[] = [];
  readonly stats = {
    sent: 0,
    clearedAnswers: 0,
    /** Retries of unanswered instructions answered as duplicates: they had been stored before the failover. */
    retriedDuplicate: 0,
    /** Retries of unanswered instructions answered fresh: they had not been stored. */
    retriedFresh: 0,
    /** Acknowledged instructions sent again on purpose and answered duplicate. */
    duplicateChecks: 0,
    receiptsCleared: 0,
  };

  add(institution: string, ins: SentInstruction): Tracked {
    const key = `${institution}/${ins.id}`;
    if (this.items.has(key)) throw new Error(`id reused by the test: ${key}`);
    const t: Tracked = { key, institution, ins, state: 'unanswered', ackedFirstTime: false, retried: false, receiptInFlight: false };
    this.items.set(key, t);
    this.open.add(t);
    this.stats.sent++;
    return t;
  }

  get clearedCount(): number {
    return this.clearedOrder.length;
  }

  /** Instructions not answered yet, and two-phase ones answered pending: kept apart so a long run does not scan everything. */
  private readonly open = new Set<Tracked>();
  private readonly pending = new Set<Tracked>();

  private clear(t: Tracked): void {
    this.open.delete(t);
    this.pending.delete(t);
    t.state = 'cleared';
    this.model.clear(t.ins);
    this.clearedOrder.push(t.key);
  }

  /** One item's answer to a submission. `resend` says it was sent on purpose although it was answered already. */
  onResult(t: Tracked, r: any, how: 'first' | 'retry' | 'resend'): void {
    const where = `${t.key} (${how})`;
    if (r === undefined || typeof r !== 'object') {
      this.violations.push(`${where}: no result`);
      return;
    }
    if (r.id !== t.ins.id) this.violations.push(`${where}: answered with id ${r.id}`);
    if (r.status === 'rejected' && RETRY_CODES.has(r.code)) {
      if (how === 'resend') this.violations.push(`${where}: an acknowledged instruction answered ${r.code}`);
      return;
    }
    if (how === 'resend') {
      if (r.duplicate !== true || r.status !== (t.state === 'cleared' ? 'cleared' : r.status)) this.violations.push(`${where}: acknowledged as ${t.state}, sent again, answered ${JSON.stringify(r)}`);
      else this.stats.duplicateChecks++;
      return;
    }
    if (r.status === 'cleared') {
      this.stats.clearedAnswers++;
      if (t.state === 'cleared') {
        if (r.duplicate !== true) this.violations.push(`${where}: acknowledged cleared before, answered cleared again without duplicate: ${JSON.stringify(r)}`);
        return;
      }
      if (t.ins.twoPhase === true && t.state === 'unanswered' && r.duplicate !== true) this.violations.push(`${where}: a two-phase instruction answered cleared at once: ${JSON.stringify(r)}`);
      if (how === 'retry') {
        if (r.duplicate === true) this.stats.retriedDuplicate++;
        else this.stats.retriedFresh++;
      } else {
        t.ackedFirstTime = true;
      }
      this.clear(t);
      return;
    }
    if (r.status === 'pending' && t.ins.twoPhase === true) {
      if (t.state === 'cleared') this.violations.push(`${where}: acknowledged cleared before, now pending`);
      else {
        if (how === 'retry') {
          if (r.duplicate === true) this.stats.retriedDuplicate++;
          else this.stats.retriedFresh++;
        }
        t.state = 'pending';
        this.open.delete(t);
        this.pending.add(t);
      }
      return;
    }
    this.violations.push(`${where}: unexpected answer ${JSON.stringify(r)}`);
  }

  /** A bank's receipt (confirm) answered. */
  onReceipt(t: Tracked, r: any): void {
    if (r?.status === 'cleared') {
      if (t.state === 'pending') {
        this.stats.receiptsCleared++;
        this.clear(t);
      } else if (t.state === 'cleared' && r.duplicate !== true) {
        this.violations.push(`${t.key}: receipt answered cleared again without duplicate: ${JSON.stringify(r)}`);
      }
      return;
    }
    if (r?.code !== undefined && RETRY_CODES.has(r.code)) return;
    this.violations.push(`${t.key}: receipt answered ${JSON.stringify(r)}`);
  }

  unanswered(): Tracked[] {
    return [...this.open];
  }

  awaitingReceipt(): Tracked[] {
    return [...this.pending].filter((t) => !t.receiptInFlight);
  }

  /**
   * Everything must be answered: retry what was not (same ids, same
   * content) and confirm every pending two-phase instruction, on whichever
   * node leads (`leaderBase` is asked again after a connection is lost).
   */
  async settle(leaderBase: () => Promise<string>, deadlineMs = 60_000, except: ReadonlySet<string> = new Set()): Promise<void> {
    const until = Date.now() + deadlineMs;
    for (;;) {
      const open = this.unanswered().filter((t) => !except.has(t.key));
      const pending = [...this.pending];
      if (open.length === 0 && pending.length === 0) return;
      if (Date.now() > until) throw new Error(`could not settle: ${open.length} unanswered, ${pending.length} pending`);
      const base = await leaderBase();
      try {
        await this.resubmit(base, open, 'retry');
        await confirmReceipts(base, this, pending);
      } catch {
        await sleep(200);
      }
    }
  }

  /** Send `list` again (same ids and content) on `base`, 200 per frame; throws if the connection is lost. */
  async resubmit(base: string, list: Tracked[], how: 'retry' | 'resend'): Promise<void> {
    const byInstitution = new Map<string, Tracked[]>();
    for (const t of list) {
      if (how === 'retry') t.retried = true;
      if (!byInstitution.has(t.institution)) byInstitution.set(t.institution, []);
      byInstitution.get(t.institution)!.push(t);
    }
    for (const [institution, items] of byInstitution) {
      const c = await StreamClient.connect(base, INSTITUTION_TOKENS[institution], 'msgpack');
      try {
        for (let k = 0; k < items.length; k += 200) {
          const chunk = items.slice(k, k + 200);
          const ack = await Promise.race([c.submit(chunk.map((t) => t.ins)), c.closed.then(() => undefined)]);
          if (ack === undefined) throw new Error('connection lost');
          if (ack.op !== 'ack') throw new Error(`frame answered ${JSON.stringify(ack)}`);
          chunk.forEach((t, j) => this.onResult(t, ack.results![j], how));
        }
      } finally {
        c.close();
      }
    }
  }

  /**
   * The leader's state equals what was acknowledged: positions (every
   * bank's net, paid, received and count, and the totals) equal the
   * reference model, nothing is pending, and a sample of acknowledged
   * instructions reads back cleared with their content.
   */
  async verify(base: string, sample: number, rand: () => number): Promise<{ problems: string[]; read: number }> {
    const problems: string[] = [];
    const positions = await http(base, 'GET', '/v1/positions', { token: TOKENS.ops });
    if (positions.status !== 200) problems.push(`GET /v1/positions answered ${positions.status} ${JSON.stringify(positions.body)}`);
    else {
      const rows = rowsOf(positions.body);
      const expected = this.model.rows();
      if (JSON.stringify(rows) !== JSON.stringify(expected)) problems.push(`positions differ from the model:\n engine ${JSON.stringify(rows)}\n model  ${JSON.stringify(expected)}`);
      if (JSON.stringify(positions.body.totals) !== JSON.stringify(this.model.totals())) problems.push(`totals ${JSON.stringify(positions.body.totals)} != model ${JSON.stringify(this.model.totals())}`);
      const pendingRows = positions.body.banks.filter((b: any) => b.pendingDebit !== '0');
      if (pendingRows.length > 0) problems.push(`pendingDebit left: ${JSON.stringify(pendingRows)}`);
    }
    const keys = this.clearedOrder;
    const picks = new Set<string>();
    // The newest acknowledged (the ones a failover puts at risk) and a spread of older ones.
    for (const k of keys.slice(-Math.floor(sample / 2))) picks.add(k);
    while (picks.size < Math.min(sample, keys.length)) picks.add(keys[Math.floor(rand() * keys.length)]!);
    let read = 0;
    for (const key of picks) {
      const t = this.items.get(key)!;
      const r = await http(base, 'GET', `/v1/instructions/${t.institution}/${encodeURIComponent(t.ins.id)}`, { token: TOKENS.ops });
      read++;
      const b = r.body ?? {};
      if (r.status !== 200 || b.status !== 'cleared' || b.payer !== t.ins.payer || b.payee !== t.ins.payee || b.amount !== t.ins.amount || b.type !== t.ins.type) {
        problems.push(`${key}: acknowledged cleared, reads ${r.status} ${JSON.stringify(b)}`);
      }
    }
    return { problems, read };
  }
}

/** Confirm `list` (pending gateway payments whose payer is ICBC) as bank ICBC over HTTP; throws if the node is gone. */
export async function confirmReceipts(base: string, ledger: ClientLedger, list: Tracked[]): Promise<void> {
  for (let k = 0; k < list.length; k += 200) {
    const chunk = list.slice(k, k + 200);
    chunk.forEach((t) => (t.receiptInFlight = true));
    try {
      const r = await http(base, 'POST', '/v1/receipts', { token: TOKENS.ICBC, body: { receipts: chunk.map((t) => ({ institution: t.institution, id: t.ins.id, outcome: 'confirm' })) } });
      if (r.status === 503) throw new Error(`receipts answered ${JSON.stringify(r.body)}`);
      if (!Array.isArray(r.body?.results)) {
        ledger.violations.push(`receipts answered ${r.status} ${JSON.stringify(r.body)}`);
        return;
      }
      chunk.forEach((t, j) => ledger.onReceipt(t, r.body.results[j]));
    } finally {
      chunk.forEach((t) => (t.receiptInFlight = false));
    }
  }
}

export interface LoadOptions {
  /** Ids start with this (unique per run of the load). */
  prefix: string;
  rand: () => number;
  /** Instructions per frame. */
  frameSize?: number;
  /** Frames in flight per connection. */
  inFlight?: number;
  /** Share of PI0001's items that are two-phase gateway payments with payer ICBC, confirmed by the bank. */
  twoPhaseShare?: number;
}

/**
 * Stream to one node until `stop()` or until its connections are lost:
 * PI0001 (msgpack) and PI0002 (JSON) each on a connection with several
 * frames in flight, random banks (so every shard is used), and the bank
 * ICBC confirming the two-phase items over HTTP as they are answered
 * pending. What was sent and not answered stays `unanswered` in the ledger.
 */
export class StreamLoad {
  private stopped = false;
  private n = 0;
  /** Items answered cleared or pending by this load (first submissions). */
  answered = 0;
  /** When each frame was answered (ms since the epoch). */
  readonly ackTimes: number[] = [];
  done: Promise<void> = Promise.resolve();
  readonly clients: StreamClient[] = [];
  /** When set, answers go here instead of the ledger (to judge a deposed leader's late answers). */
  divert: ((t: Tracked, r: any) => void) | undefined;

  constructor(
    private readonly ledger: ClientLedger,
    private readonly opts: LoadOptions,
  ) {}

  async start(base: string): Promise<void> {
    const institutions = ['PI0001', 'PI0002'];
    const conns = await Promise.all(institutions.map((inst, i) => StreamClient.connect(base, INSTITUTION_TOKENS[inst], i === 0 ? 'msgpack' : 'json')));
    this.clients.push(...conns);
    const pumps: Promise<void>[] = [];
    conns.forEach((c, i) => {
      for (let k = 0; k < (this.opts.inFlight ?? 3); k++) pumps.push(this.pump(c, institutions[i]!));
    });
    pumps.push(this.bank(base));
    this.done = Promise.all(pumps).then(() => undefined);
  }

  private frame(institution: string): Tracked[] {
    const size = this.opts.frameSize ?? 50;
    const out: Tracked[] = [];
    for (let k = 0; k < size; k++) {
      const id = `${this.opts.prefix}-${this.n++}`;
      let ins: SentInstruction;
      if (institution === 'PI0001' && this.opts.rand() < (this.opts.twoPhaseShare ?? 0)) {
        const payee = BANKS.filter((b) => b !== 'ICBC')[Math.floor(this.opts.rand() * (BANKS.length - 1))]!;
        ins = { id, type: 'gateway', payer: 'ICBC', payee, amount: 1 + Math.floor(this.opts.rand() * 1_000_000), twoPhase: true, timeoutMs: 3_600_000 };
      } else {
        ins = randomInstruction(this.opts.rand, BANKS, id);
      }
      out.push(this.ledger.add(institution, ins));
    }
    return out;
  }

  private async pump(c: StreamClient, institution: string): Promise<void> {
    while (!this.stopped) {
      const items = this.frame(institution);
      let ack: Ack | undefined;
      try {
        ack = await Promise.race([c.submit(items.map((t) => t.ins)), c.closed.then(() => undefined)]);
      } catch {
        ack = undefined;
      }
      if (ack === undefined) return;
      if (ack.op !== 'ack' || !Array.isArray(ack.results)) {
        // A frame answered as a whole (an error): nothing in it is known stored; it is retried later.
        continue;
      }
      this.ackTimes.push(Date.now());
      const divert = this.divert;
      if (divert !== undefined) {
        items.forEach((t, j) => divert(t, ack.results![j]));
        continue;
      }
      items.forEach((t, j) => {
        const before = t.state;
        this.ledger.onResult(t, ack.results![j], 'first');
        if (before === 'unanswered' && t.state !== 'unanswered') this.answered++;
      });
    }
  }

  private async bank(base: string): Promise<void> {
    while (!this.stopped && this.divert === undefined) {
      const list = this.ledger.awaitingReceipt();
      if (list.length > 0) {
        try {
          await confirmReceipts(base, this.ledger, list);
        } catch {
          return;
        }
      }
      await sleep(20);
    }
  }

  /** Send nothing more; frames in flight are still answered if the node lives. */
  stop(): void {
    this.stopped = true;
  }

  /** Close the connections (what they had in flight stays unanswered). */
  close(): void {
    this.stopped = true;
    for (const c of this.clients) c.close();
  }

  /** The longest time between two frame answers, and between the first and last. */
  longestGap(from: number, to: number): number {
    const times = [from, ...this.ackTimes.filter((t) => t >= from && t <= to), to].sort((a, b) => a - b);
    let gap = 0;
    for (let k = 1; k < times.length; k++) gap = Math.max(gap, times[k]! - times[k - 1]!);
    return gap;
  }
}

/** The settlement report of a closed batch against the model: problems found (none when it matches). */
export function reportProblems(report: any, model: ReferenceModel, count: number): string[] {
  const problems: string[] = [];
  if (report?.count !== count) problems.push(`report count ${report?.count} != ${count}`);
  if (report?.gross !== model.gross.toString()) problems.push(`report gross ${report?.gross} != ${model.gross}`);
  let debits = 0n;
  let credits = 0n;
  const seen = new Set<string>();
  for (const row of report?.banks ?? []) {
    seen.add(row.bank);
    const net = model.net(row.bank);
    if (row.net !== net.toString() || row.paid !== model.paid.get(row.bank)!.toString() || row.received !== model.received.get(row.bank)!.toString()) {
      problems.push(`report row ${JSON.stringify(row)} != model net ${net} paid ${model.paid.get(row.bank)} received ${model.received.get(row.bank)}`);
    }
    const want = net < 0n ? { settlement: 'debit', amount: (-net).toString() } : net > 0n ? { settlement: 'credit', amount: net.toString() } : { settlement: 'none' };
    if (row.settlement !== want.settlement || (want.amount !== undefined && row.amount !== want.amount)) problems.push(`report row ${row.bank}: settlement ${row.settlement} ${row.amount}, expected ${JSON.stringify(want)}`);
    if (net < 0n) debits += -net;
    else credits += net;
  }
  for (const b of model.banks) if (!seen.has(b) && model.paid.get(b)! + model.received.get(b)! > 0n) problems.push(`report lacks bank ${b}`);
  if (report?.debits !== debits.toString() || report?.credits !== credits.toString() || debits !== credits) problems.push(`report debits ${report?.debits} credits ${report?.credits}, expected ${debits}`);
  return problems;
}

/** Median and worst of a list of durations. */
export function medianWorst(xs: number[]): { median: number; worst: number } {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, worst: NaN };
  const mid = Math.floor(s.length / 2);
  return { median: s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, worst: s[s.length - 1]! };
}

export { sleep };

/**
 * A NATS cluster and an engine cluster for one test file: started before
 * its tests and stopped (every process) after them. The accessors answer
 * them once started.
 */
export function useClusters(options: { leaseMs: number }): { nats: () => NatsCluster; cluster: () => EngineCluster } {
  const dirs = tempDirs();
  let nats: NatsCluster | undefined;
  let cluster: EngineCluster | undefined;
  beforeAll(async () => {
    nats = await NatsCluster.start(dirs.make());
    cluster = await EngineCluster.start(nats, dirs.make, options);
  }, 90_000);
  afterAll(async () => {
    await cluster?.stopAll();
    await nats?.stop();
    dirs.cleanup();
  }, 60_000);
  return { nats: () => nats!, cluster: () => cluster! };
}
