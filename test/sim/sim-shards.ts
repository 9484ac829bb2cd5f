/**
 * Simulated shard workers: the shard transport port over the real shard
 * ledger (src/shard/ledger.ts) on in-memory environments. Shard s lives on
 * worker s % workers, as in production; a worker takes its tasks in order,
 * commits each after a random delay, and reports it after another, so
 * several tasks can be committed and unreported at once (pipelining).
 *
 * Faults it can inject, each chosen by the simulator's PRNG:
 * - a task whose commit fails (nothing applied, the task rejects);
 * - a task that commits and then fails to report (the task rejects);
 * - a worker that dies: every task at it rejects, those it had committed
 *   stay committed, and its ledgers start afresh from the environments;
 * - a process crash: every worker stops where it is and nothing more is
 *   reported (the environments keep what was committed).
 */

import { ShardLedger } from '../../src/shard/ledger.js';
import { INDEX_PACING, type IndexPacing } from '../../src/store/bucket-index.js';
import type { ShardTransport } from '../../src/core/ports.js';
import type { ApplyResult, ApplyTask, OpenResult, OpenTask } from '../../src/shard/tasks.js';
import type { ShardDbs } from '../../src/store/schema.js';
import { MemEnv, memShardDbs } from './mem-lmdb.js';
import type { Prng } from './prng.js';
import type { SimClock } from './sim-clock.js';

/** The shards' environments: what survives any crash. */
export class SimDisk {
  readonly envs: MemEnv[] = [];
  readonly dbs: ShardDbs[] = [];

  constructor(shards: number) {
    for (let s = 0; s < shards; s++) {
      const env = new MemEnv();
      this.envs.push(env);
      this.dbs.push(memShardDbs(env));
    }
  }
}

export interface FaultRates {
  /** Per task: its commit fails. */
  commitFails: number;
  /** Per task: it commits, then its report is lost (the worker is taken for dead). */
  reportLost: number;
}

interface Job {
  run: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  /** Committed and waiting to be reported. */
  committed: boolean;
  outcome?: { ok: true; value: unknown } | { ok: false; err: unknown };
}

class SimWorker {
  queue: Job[] = [];
  busy = false;
  ledgers = new Map<number, ShardLedger>();
  generation = 0;
}

export class SimShards implements ShardTransport {
  private readonly workers: SimWorker[] = [];
  private dead = false;
  tasksRun = 0;
  /** When bucket index entries leave the task records; the simulator varies it by seed so that small runs move them too. */
  indexPacing: IndexPacing = INDEX_PACING;
  faultsInjected = { commitFails: 0, reportsLost: 0, workerDeaths: 0 };

  constructor(
    private readonly disk: SimDisk,
    workers: number,
    private readonly clock: SimClock,
    private readonly prng: Prng,
    public rates: FaultRates,
  ) {
    for (let w = 0; w < workers; w++) this.workers.push(new SimWorker());
  }

  private workerOf(shard: number): SimWorker {
    return this.workers[shard % this.workers.length]!;
  }

  private ledger(w: SimWorker, shard: number): ShardLedger {
    let l = w.ledgers.get(shard);
    if (l === undefined) {
      l = new ShardLedger(shard, this.disk.dbs[shard]!, Number.MAX_SAFE_INTEGER, this.indexPacing);
      w.ledgers.set(shard, l);
    }
    return l;
  }

  apply(task: ApplyTask): Promise<ApplyResult> {
    return this.enqueue(task.shard, (w) => {
      // A copy, as the task crosses a thread boundary as JSON.
      const t = JSON.parse(JSON.stringify(task)) as ApplyTask;
      if (this.prng.chance(this.rates.commitFails)) {
        this.faultsInjected.commitFails++;
        this.disk.envs[task.shard]!.failNextCommit = true;
      }
      return this.ledger(w, task.shard).apply(t);
    }) as Promise<ApplyResult>;
  }

  open(task: OpenTask): Promise<OpenResult> {
    return this.enqueue(task.shard, (w) => Promise.resolve(this.ledger(w, task.shard).open(task))) as Promise<OpenResult>;
  }

  private enqueue(shard: number, run: (w: SimWorker) => Promise<unknown>): Promise<unknown> {
    const w = this.workerOf(shard);
    return new Promise((resolve, reject) => {
      if (this.dead) return; // a dead process answers nothing
      w.queue.push({ run: () => run(w), resolve, reject, committed: false });
      this.pump(w);
    });
  }

  /** The worker takes its next task after a short delay; its report comes later still. */
  private pump(w: SimWorker): void {
    if (w.busy || this.dead) return;
    const job = w.queue.find((j) => !j.committed && j.outcome === undefined);
    if (job === undefined) return;
    w.busy = true;
    const generation = w.generation;
    this.clock.schedule(this.prng.between(0, 3), () => {
      if (generation !== w.generation || this.dead) return;
      this.tasksRun++;
      job.run().then(
        (value) => {
          job.committed = true;
          job.outcome = { ok: true, value };
        },
        (err: unknown) => {
          job.outcome = { ok: false, err };
        },
      ).finally(() => {
        if (generation !== w.generation || this.dead) return;
        w.busy = false;
        this.pump(w);
        this.clock.schedule(this.prng.between(0, 4), () => this.report(w, generation), 'report');
      });
    }, 'work');
  }

  /** Reports go out in order: a job is reported once every job before it was. */
  private report(w: SimWorker, generation: number): void {
    if (generation !== w.generation || this.dead) return;
    while (w.queue.length > 0 && w.queue[0]!.outcome !== undefined) {
      const j = w.queue.shift()!;
      const o = j.outcome!;
      if (o.ok && this.prng.chance(this.rates.reportLost)) {
        // Committed, then the worker died before it could say so.
        this.faultsInjected.reportsLost++;
        j.reject(new Error('simulated worker death after commit'));
        this.killWorker(w);
        return;
      }
      if (o.ok) j.resolve(o.value);
      else j.reject(o.err);
    }
  }

  /** A worker dies: everything at it fails; what it committed stays committed. */
  killWorker(w: SimWorker | number): void {
    const worker = typeof w === 'number' ? this.workers[w % this.workers.length]! : w;
    this.faultsInjected.workerDeaths++;
    worker.generation++;
    worker.busy = false;
    worker.ledgers = new Map();
    const jobs = worker.queue;
    worker.queue = [];
    for (const j of jobs) j.reject(new Error('simulated worker death'));
  }

  get workerCount(): number {
    return this.workers.length;
  }

  /** Tasks at the workers (queued, running or unreported). */
  get busy(): number {
    let n = 0;
    for (const w of this.workers) n += w.queue.length;
    return n;
  }

  /** The whole process dies: nothing more is reported or run. */
  crash(): void {
    this.dead = true;
  }
}
