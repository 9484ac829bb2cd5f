/**
 * One engine node of a cluster (PROTOCOL.md, "Replicated deployment"). It
 * holds its data folder's lock for its whole life and is, at any time:
 *
 * - a follower: it applies the replicated log to its own LMDB and answers
 *   every request but health, readiness and metrics with NOT_LEADER; it
 *   watches the lease and, once the lease has lapsed, tries to take it;
 * - a leader: it has taken the lease, applied the whole log, fenced every
 *   earlier writer out with a term entry, and runs the engine (recovered
 *   from its LMDB like any restart) with every state change going through
 *   the log before it is answered. It renews the lease; when a renewal
 *   fails, or the lease runs out before an answer, or an append is fenced,
 *   it steps down at once: it closes every connection, answers nothing
 *   more, and becomes a follower again.
 *
 * The leader trusts its lease only until a margin before it would lapse,
 * counted from before the renewal was sent, so a follower that takes the
 * lapsed lease never overlaps a leader that still answers.
 */

import { mkdirSync } from 'node:fs';
import type { ClusterConfig, EngineConfig } from '../config/config.js';
import { DataLock } from '../engine/data-lock.js';
import { Engine } from '../engine/engine.js';
import type { Logger } from '../engine/log.js';
import { FollowerGateway } from '../gateway/follower-server.js';
import { Gateway } from '../gateway/server.js';
import { ShardPools } from '../shard/shard-pools.js';
import { EngineStore } from '../store/engine-store.js';
import { ClusterMetrics } from './cluster-metrics.js';
import { Follower, LogBehindError } from './follower.js';
import { FencedError, ReplicatedLog, type LeaderInfo } from './replicated-log.js';
import { ReplicatedTransport } from './replicated-transport.js';

/** The leader answers only while its lease has at least this share of `leaseMs` left. */
const LEASE_TRUST = 0.75;
/** How often a follower records its committed sequence, and how often the leader purges the log. */
const REPORT_MS = 2000;
const PURGE_MS = 10_000;
/** How long a stop waits for NATS (giving the lease back, closing the connection). */
const NATS_STOP_MS = 2000;

/** `p`, or nothing once `ms` have passed. */
function within(p: Promise<unknown>, ms: number): Promise<unknown> {
  return Promise.race([p.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, ms).unref())]);
}

/** A follower this many entries behind the log waits before it tries to lead. */
const FAR_BEHIND_ENTRIES = 10_000;
/** How long a node keeps trying to become a follower while JetStream does not answer. */
const FOLLOWER_RETRY_MS = 120_000;
/** How long a deposed leader's engine may take to stop before the process exits instead. */
const STEP_DOWN_STOP_MS = 10_000;
/** How long a new leader may take to apply the rest of the log before it gives the lease back. */
const CATCH_UP_MS = 60_000;

type Role = 'follower' | 'promoting' | 'leader' | 'demoting' | 'stopped';

export class ClusterNode {
  private role: Role = 'follower';
  private leaseRevision: number | undefined;
  private leaseUntil = 0;
  private followerParts: { store: EngineStore; pools: ShardPools; follower: Follower; gateway: FollowerGateway } | undefined;
  private engine: Engine | undefined;
  private gateway: Gateway | undefined;
  private leader: LeaderInfo | undefined;
  private lastSeqSeen = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  readonly metrics: ClusterMetrics;

  private constructor(
    private readonly config: EngineConfig,
    private readonly cluster: ClusterConfig,
    private readonly logger: Logger,
    private readonly dataLock: DataLock,
    private readonly log: ReplicatedLog,
  ) {
    this.metrics = new ClusterMetrics({
      role: () => (this.role === 'leader' ? 'leader' : 'follower'),
      leaderKnown: () => this.role === 'leader' || this.leader !== undefined,
      appliedSeq: () => this.followerParts?.follower.readThrough ?? this.lastSeqSeen,
      logLastSeq: () => (this.logEndRead || this.role === 'leader' ? this.lastSeqSeen : undefined),
    });
  }

  static async start(config: EngineConfig, logger: Logger): Promise<ClusterNode> {
    const cluster = config.cluster;
    if (cluster === undefined) throw new Error('cluster mode needs the cluster configuration');
    mkdirSync(config.dataDir, { recursive: true });
    const dataLock = await DataLock.acquire(config.dataDir);
    let log: ReplicatedLog;
    try {
      log = await ReplicatedLog.open(cluster, (err) => logger.warn({ err: (err as Error).message }, 'JetStream is not answering yet; retrying'));
    } catch (err) {
      dataLock.release();
      throw err;
    }
    const node = new ClusterNode(config, cluster, logger, dataLock, log);
    try {
      await node.becomeFollower();
    } catch (err) {
      await log.close();
      dataLock.release();
      throw err;
    }
    node.schedule();
    logger.info({ node: cluster.node, nats: cluster.nats, replicas: cluster.replicas, leaseMs: cluster.leaseMs }, 'cluster node started as a follower');
    return node;
  }

  get port(): number | undefined {
    return this.gateway?.port ?? this.followerParts?.gateway.port;
  }

  /** Leading, or taking the lead: the node holds the lease and renews it. */
  private leading(): boolean {
    return this.role === 'leader' || this.role === 'promoting';
  }

  /** Whether this node may still answer as leader: it holds the lease with a margin left. */
  private holds(): boolean {
    return this.leading() && Date.now() < this.leaseUntil;
  }

  /** The lease was taken or renewed at `revision` by a request sent at `sentAt`: it is trusted to a margin before it lapses. */
  private holdLease(revision: number, sentAt: number): void {
    this.leaseRevision = revision;
    this.leaseUntil = sentAt + Math.floor(this.cluster.leaseMs * LEASE_TRUST);
  }

  private schedule(): void {
    if (this.role === 'stopped') return;
    this.timer = setTimeout(() => {
      void this.tick().finally(() => this.schedule());
    }, Math.max(50, Math.floor(this.cluster.leaseMs / 5)));
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      if (this.leading()) {
        await this.renew();
        if (this.role === 'leader') {
          await this.reportAsLeader();
          await this.maybePurge();
        }
      } else if (this.role === 'follower') {
        await this.watch();
        await this.maybeReport();
      }
    } catch (err) {
      this.logger.error({ err }, 'cluster tick failed');
    } finally {
      this.ticking = false;
    }
  }

  private async renew(): Promise<void> {
    const sentAt = Date.now();
    const revision = this.leaseRevision === undefined ? undefined : await this.log.renew(this.leaseRevision);
    if (revision === undefined) {
      this.deposed(new FencedError('the lease could not be renewed'));
      return;
    }
    this.holdLease(revision, sentAt);
    this.metrics.leaseRenewals.inc();
  }

  private async watch(): Promise<void> {
    const parts = this.followerParts;
    if (parts === undefined) return;
    if (parts.follower.error !== undefined) {
      // Applying stopped on an error (a worker died mid-entry): read the log again from what is committed.
      this.logger.warn({ err: parts.follower.error }, 'restarting the log follower');
      await this.closeFollower();
      await this.becomeFollowerRetrying();
      return;
    }
    await this.readLogEnd();
    const leader = await this.log.leader();
    if (leader?.node !== this.leader?.node) {
      if (leader !== undefined) this.metrics.leaderChanges.inc();
      this.leader = leader;
    }
    if (leader !== undefined) {
      this.leaderlessSince = undefined;
      return;
    }
    this.leaderlessSince ??= Date.now();
    // A node far behind the log leaves the lease to a closer one for a while: it would hold it while catching up.
    const behind = this.lastSeqSeen - parts.follower.readThrough;
    if (behind > FAR_BEHIND_ENTRIES && Date.now() - this.leaderlessSince < this.cluster.leaseMs * 3) return;
    await this.tryLead();
  }

  private leaderlessSince: number | undefined;

  /** Whether the log's last sequence has been read since this node started (the lag is unknown before). */
  private logEndRead = false;

  private async readLogEnd(): Promise<void> {
    try {
      this.lastSeqSeen = Math.max(this.lastSeqSeen, await this.log.lastSeq());
      this.logEndRead = true;
    } catch {
      // JetStream did not answer: the last value stands, and the next watch reads it again.
    }
  }

  private reportedAt = 0;
  private purgedAt = 0;
  /** Leader: sequences appended and not yet committed here; and the highest one appended. */
  private readonly uncommitted = new Set<number>();
  private appendedThrough = 0;

  private committedHere(seq: number): void {
    this.uncommitted.delete(seq);
    this.appendedThrough = Math.max(this.appendedThrough, seq);
    this.lastSeqSeen = Math.max(this.lastSeqSeen, seq);
  }

  /** Leader: every entry up to this sequence is committed here. */
  private leaderCommittedThrough(): number {
    let low = Infinity;
    for (const s of this.uncommitted) low = Math.min(low, s);
    return low === Infinity ? this.appendedThrough : Math.min(this.appendedThrough, low - 1);
  }

  /** The leader records its committed sequence too, locally first: it is a follower again one day. */
  private async reportAsLeader(): Promise<void> {
    const engine = this.engine;
    if (engine === undefined || Date.now() - this.reportedAt < REPORT_MS) return;
    this.reportedAt = Date.now();
    const through = this.leaderCommittedThrough();
    await engine.recordLogCommittedThrough(through);
    await this.log.reportApplied(through);
  }

  /** A follower records how far it has committed the log, every REPORT_MS: the bound of the leader's purges. */
  private async maybeReport(): Promise<void> {
    const parts = this.followerParts;
    if (parts === undefined || Date.now() - this.reportedAt < REPORT_MS) return;
    this.reportedAt = Date.now();
    await this.log.reportApplied(await parts.follower.committedThrough());
  }

  /**
   * The leader purges the log below what every other node has committed,
   * less `logRetainEntries`, every PURGE_MS. A node that is down keeps its
   * last report, and so the log it needs; with no report from any other
   * node nothing is purged.
   */
  private async maybePurge(): Promise<void> {
    if (Date.now() - this.purgedAt < PURGE_MS) return;
    this.purgedAt = Date.now();
    const floor = await this.log.appliedFloor();
    if (floor === undefined) return;
    const below = floor - this.cluster.logRetainEntries + 1;
    if (below <= (await this.log.bounds()).first) return;
    const purged = await this.log.purgeBelow(below);
    this.logger.info({ below, purged, floor }, 'purged the log below what every node has committed');
  }

  private async becomeFollower(): Promise<void> {
    const store = new EngineStore(this.config.dataDir);
    let pools: ShardPools | undefined;
    let follower: Follower | undefined;
    try {
      await store.checkLayout(this.config.shards);
      pools = ShardPools.fromConfig(this.config, (err) => this.logger.error({ err }, 'a shard worker failed outside any task; it is replaced'));
      follower = new Follower(this.log, pools, store, this.config.shards, this.logger);
      await follower.start();
      // What the node answers and exposes from its first request: the log's end (so that its lag is true at once,
      // not 0 until the first watch) and the leader the lease names.
      await this.readLogEnd();
      this.leader = (await this.log.leader().catch(() => undefined)) ?? this.leader;
      const gateway = await FollowerGateway.listen(this.config, () => ({ node: this.cluster.node, leader: this.leader }), () => this.metrics.text());
      this.followerParts = { store, pools, follower, gateway };
    } catch (err) {
      // A follower already reading the log (its gateway could not listen yet) stops first: it would go on
      // applying entries to the store and pools closed here, and a write to a closed store ends the process.
      await follower?.stop().catch(() => undefined);
      await pools?.close();
      await store.close();
      throw err;
    }
  }

  private async closeFollower(): Promise<void> {
    const parts = this.followerParts;
    this.followerParts = undefined;
    if (parts === undefined) return;
    parts.gateway.close();
    await parts.follower.stop();
    await parts.pools.close();
    await parts.store.close();
  }

  /**
   * Take the lapsed lease, apply the whole log, fence earlier writers out
   * with a term entry, and start the engine on what this node's LMDB holds.
   * Any failure gives the lease back and leaves this node a follower.
   */
  private async tryLead(): Promise<void> {
    const sentAt = Date.now();
    const revision = await this.log.acquire();
    if (revision === undefined) return;
    this.holdLease(revision, sentAt);
    this.role = 'promoting';
    // The promotion runs beside the ticks, which renew the lease meanwhile (recovery can outlast it).
    void this.promote();
  }

  private async promote(): Promise<void> {
    const started = Date.now();
    try {
      const last = await this.log.lastSeq();
      if (!(await this.followerParts!.follower.drainTo(last, CATCH_UP_MS))) throw new Error(`could not apply the log up to ${last}`);
      await this.closeFollower();
      const term = await this.log.beginTerm(last);
      this.lastSeqSeen = term;
      // Everything before the term is committed here (the follower drained it); the term entry changes nothing.
      this.uncommitted.clear();
      this.appendedThrough = term;
      const engine = await Engine.start(this.config, this.logger, {
        replication: {
          node: this.cluster.node,
          holds: () => this.holds(),
          dataLock: this.dataLock,
          transport: (pools) =>
            new ReplicatedTransport(
              pools,
              this.config.shards,
              (task) => this.appended(this.log.appendTask(task)),
              () => this.holds(),
              (err) => this.deposed(err),
              (seq) => this.committedHere(seq),
            ),
          replicator: { append: (w) => this.appended(this.log.appendStore(w)), committed: (seq) => this.committedHere(seq) },
        },
      });
      this.engine = engine;
      this.metrics.registerInto(engine.metrics.registry);
      this.gateway = await Gateway.listen(engine);
      if (this.role !== 'promoting') throw new FencedError('deposed while starting');
      this.role = 'leader';
      this.leader = { node: this.cluster.node, url: this.cluster.advertise };
      this.metrics.leaderChanges.inc();
      this.logger.info({ node: this.cluster.node, term, promotionMs: Date.now() - started }, 'this node leads the cluster');
    } catch (err) {
      this.logger.error({ err }, 'promotion failed; staying a follower');
      await this.stepDown();
    }
  }

  /**
   * An append of this leader, as the engine may use it: its sequence once
   * it is in the log and the lease still holds (then it counts as not yet
   * committed here). A failed append fences every later one, and a lapsed
   * lease answers nothing: either way the node steps down.
   */
  private appended(append: Promise<number>): Promise<number> {
    return append.then(
      (seq) => {
        if (!this.holds()) {
          const err = new FencedError('the lease lapsed before an appended entry was applied');
          this.deposed(err);
          throw err;
        }
        this.uncommitted.add(seq);
        return seq;
      },
      (err: unknown) => {
        this.deposed(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
  }

  /** The lease lapsed, a renewal failed or an append was fenced: answer nothing more. */
  private deposed(err: Error): void {
    if (!this.leading()) return;
    this.logger.warn({ err: err.message, node: this.cluster.node }, 'this node no longer leads; stepping down');
    void this.stepDown();
  }

  private async stepDown(): Promise<void> {
    if (this.role === 'demoting' || this.role === 'stopped') return;
    const wasLeader = this.role === 'leader';
    this.role = 'demoting';
    this.leaseUntil = 0;
    this.log.fence();
    const revision = this.leaseRevision;
    this.leaseRevision = undefined;
    this.gateway?.close();
    this.gateway = undefined;
    const engine = this.engine;
    this.engine = undefined;
    // The engine's work in flight fails against the fenced log; a stop that still hangs leaves the
    // process no clean way back to a follower, so it exits and its supervisor starts it again.
    const stopped = await Promise.race([
      (engine?.stop(100) ?? Promise.resolve()).then(
        () => true,
        (err: unknown) => {
          this.logger.error({ err }, 'stopping the engine on step-down failed');
          return true;
        },
      ),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), STEP_DOWN_STOP_MS).unref()),
    ]);
    if (!stopped) {
      this.logger.fatal('the engine did not stop after losing the lead; exiting');
      process.exit(3);
    }
    if (revision !== undefined) await this.log.release(revision);
    if (wasLeader) this.metrics.leaderChanges.inc();
    this.leader = undefined;
    await this.closeFollower();
    await this.becomeFollowerRetrying();
    this.role = 'follower';
  }

  /**
   * Become a follower, retrying while JetStream does not answer (its log
   * stream may be electing a new leader after a NATS node was lost). A
   * log that has lost entries this node holds is not retried: the node
   * stops, for an operator to decide.
   */
  private async becomeFollowerRetrying(): Promise<void> {
    const until = Date.now() + FOLLOWER_RETRY_MS;
    for (;;) {
      try {
        await this.becomeFollower();
        return;
      } catch (err) {
        if (err instanceof LogBehindError || Date.now() >= until) {
          this.logger.fatal({ err }, 'could not become a follower; exiting');
          process.exit(err instanceof LogBehindError ? 2 : 1);
        }
        this.logger.warn({ err: (err as Error).message }, 'could not become a follower yet; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** A clean stop: a leader lets what is in flight finish and gives the lease back at once. */
  async stop(drainMs: number): Promise<void> {
    const wasLeader = this.role === 'leader';
    this.role = 'stopped';
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (wasLeader) {
      this.gateway?.stopListening();
      await this.engine?.stop(drainMs).catch((err: unknown) => this.logger.error({ err }, 'engine stop failed'));
      this.gateway?.close();
      // Giving the lease back only spares the followers a wait: NATS being gone must not hold the stop.
      if (this.leaseRevision !== undefined) await within(this.log.release(this.leaseRevision), NATS_STOP_MS);
    } else {
      await this.closeFollower();
    }
    await within(this.log.close(), NATS_STOP_MS);
    this.dataLock.release();
  }
}
