/**
 * Cluster mode's replicated log and leader lease, on NATS JetStream (an
 * existing Raft-replicated engine, not a home-made protocol).
 *
 * - The log is one stream, `NETTING_LOG`, with `replicas` copies. Every
 *   state change is an entry: a shard task on `netting.log.shard.<n>`, a
 *   write of the engine's own store on `netting.log.engine`, and a new
 *   leader's first entry on `netting.log.term`. JetStream acknowledges an
 *   append once a majority of the replicas has stored it.
 * - Appends are fenced: each names the stream's last sequence it expects
 *   (JetStream's expected-last-sequence). A leader that has been replaced
 *   expects a sequence the new leader has already moved past, so its
 *   appends fail and it cannot acknowledge anything more.
 * - The lease is one key in a KV bucket whose entries live `leaseMs`: the
 *   leader creates it (create fails while it exists) and renews it by
 *   revision; a follower can take it only once it has lapsed.
 */

import { decode, encode } from '@msgpack/msgpack';
import { DeliverPolicy, DiscardPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ApplyTask } from '../shard/tasks.js';
import type { StoreWrite } from '../store/engine-store.js';

export const LOG_STREAM = 'NETTING_LOG';
export const LEASE_BUCKET = 'netting_leader';
/** Each node's committed log sequence, which bounds how far the log may be purged. */
export const APPLIED_BUCKET = 'netting_applied';
const LEASE_KEY = 'leader';
const SUBJECT_ENGINE = 'netting.log.engine';
const SUBJECT_TERM = 'netting.log.term';
const APPEND_TIMEOUT_MS = 5000;
/** How long start-up waits for the JetStream cluster to answer. */
const OPEN_TIMEOUT_MS = 120_000;

export function shardSubject(shard: number): string {
  return `netting.log.shard.${shard}`;
}

export type LogEntry = { k: 'task'; task: ApplyTask } | { k: 'store'; w: StoreWrite } | { k: 'term'; node: string; url: string };

export interface LeaderInfo {
  node: string;
  url: string;
}

export interface ClusterSettings {
  node: string;
  advertise: string;
  nats: readonly string[];
  replicas: number;
  leaseMs: number;
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test(String((err as Error | undefined)?.message));
}

export class FencedError extends Error {
  override name = 'FencedError';
}

export function encodeEntry(e: LogEntry): Uint8Array {
  return encode(e, { ignoreUndefined: true });
}

export function decodeEntry(data: Uint8Array): LogEntry {
  return decode(data) as LogEntry;
}

export class ReplicatedLog {
  /** The stream's last sequence as this leader knows it: the fence of its next append. */
  private expected = -1;

  private constructor(
    readonly nc: NatsConnection,
    /** Made once: making one asks the server for the account's JetStream info. */
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly kv: KV,
    private readonly appliedKv: KV,
    private readonly settings: ClusterSettings,
  ) {}

  /**
   * Connect, and make sure the log stream and the lease bucket exist. A
   * JetStream cluster that is still electing its meta leader (a cold start
   * of the whole cluster) answers nothing for a while: this retries until
   * `startTimeoutMs`.
   */
  static async open(settings: ClusterSettings, onRetry: (err: unknown) => void, startTimeoutMs = OPEN_TIMEOUT_MS): Promise<ReplicatedLog> {
    const until = Date.now() + startTimeoutMs;
    const nc = await connect({ servers: [...settings.nats], name: `netting-${settings.node}`, maxReconnectAttempts: -1, reconnectTimeWait: 250, waitOnFirstConnect: true, timeout: startTimeoutMs });
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc);
        try {
          const info = await jsm.streams.info(LOG_STREAM);
          // The configuration decides the replication of an existing log too (JetStream scales a stream in place).
          if (info.config.num_replicas !== settings.replicas) await jsm.streams.update(LOG_STREAM, { num_replicas: settings.replicas });
        } catch (err) {
          if (!isNotFound(err)) throw err;
          await jsm.streams.add({
            name: LOG_STREAM,
            subjects: ['netting.log.>'],
            storage: StorageType.File,
            num_replicas: settings.replicas,
            retention: RetentionPolicy.Limits,
            discard: DiscardPolicy.New,
          });
        }
        const js = jetstream(nc);
        const kvm = new Kvm(js);
        const kv = await kvm.create(LEASE_BUCKET, { history: 1, ttl: settings.leaseMs, replicas: settings.replicas });
        // An existing lease bucket keeps the lease length it was made with unless it is changed here: a leader
        // trusting a shorter lease than the bucket's would step down early, a longer one would overlap its successor.
        const leaseStream = `KV_${LEASE_BUCKET}`;
        const lease = await jsm.streams.info(leaseStream);
        const maxAge = settings.leaseMs * 1_000_000;
        if (lease.config.max_age !== maxAge || lease.config.num_replicas !== settings.replicas) {
          await jsm.streams.update(leaseStream, { max_age: maxAge, num_replicas: settings.replicas });
        }
        const appliedKv = await kvm.create(APPLIED_BUCKET, { history: 1, replicas: settings.replicas });
        return new ReplicatedLog(nc, jsm, js, kv, appliedKv, settings);
      } catch (err) {
        if (Date.now() >= until) {
          await nc.close();
          throw err;
        }
        onRetry(err);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** The stream's first and last sequences: entries below the first have been purged; the last is 0 when none was ever appended. */
  async bounds(): Promise<{ first: number; last: number }> {
    const { state } = await this.jsm.streams.info(LOG_STREAM);
    return { first: state.first_seq, last: state.last_seq };
  }

  /** The stream's last sequence (0 when empty). */
  async lastSeq(): Promise<number> {
    return (await this.bounds()).last;
  }

  /**
   * Become the writer from `lastSeq` on: append the term entry that fences
   * every earlier writer out, and answer its sequence. Fails if anything
   * was appended after `lastSeq` meanwhile.
   */
  async beginTerm(lastSeq: number): Promise<number> {
    this.expected = lastSeq;
    return this.append(SUBJECT_TERM, { k: 'term', node: this.settings.node, url: this.settings.advertise });
  }

  /**
   * Append an entry, pipelined behind earlier appends: it expects the
   * sequence after the previous one, so a replaced writer's appends fail,
   * and once one append fails every later one does too.
   */
  append(subject: string, entry: LogEntry): Promise<number> {
    if (this.expected < 0) return Promise.reject(new FencedError('this node is not the log writer'));
    const expect = this.expected++;
    return this.js.publish(subject, encodeEntry(entry), { expect: { lastSequence: expect }, timeout: APPEND_TIMEOUT_MS }).then(
      (ack) => {
        if (ack.seq !== expect + 1) throw new FencedError(`append stored at ${ack.seq}, expected ${expect + 1}`);
        return ack.seq;
      },
      (err: unknown) => {
        this.expected = -1;
        throw new FencedError(`append failed: ${(err as Error).message}`);
      },
    );
  }

  appendTask(task: ApplyTask): Promise<number> {
    return this.append(shardSubject(task.shard), { k: 'task', task });
  }

  appendStore(w: StoreWrite): Promise<number> {
    return this.append(SUBJECT_ENGINE, { k: 'store', w });
  }

  /** Stop writing: every later append fails at once. */
  fence(): void {
    this.expected = -1;
  }

  /** Read the log from `fromSeq` on, in order, as it grows. */
  async follow(fromSeq: number): Promise<ConsumerMessages> {
    const consumer = await this.js.consumers.get(LOG_STREAM, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, fromSeq) });
    // Short pulls: when the NATS server serving the consumer dies, the ordered consumer notices at the
    // next pull's expiry and starts again on another, instead of after the default 30 s.
    return consumer.consume({ max_messages: 512, expires: 2000 });
  }

  /** Purge every entry below `seq`. */
  async purgeBelow(seq: number): Promise<number> {
    return (await this.jsm.streams.purge(LOG_STREAM, { seq })).purged;
  }

  /** Record the sequence this node has committed everything up to. */
  async reportApplied(seq: number): Promise<void> {
    await this.appliedKv.put(`applied.${this.settings.node}`, String(seq));
  }

  /**
   * The lowest committed sequence any other node has reported (a node that
   * is down keeps its last report, and so keeps the log it still needs);
   * undefined when no other node has reported.
   */
  async appliedFloor(): Promise<number | undefined> {
    let floor: number | undefined;
    for await (const key of await this.appliedKv.keys('applied.*')) {
      if (key === `applied.${this.settings.node}`) continue;
      const e = await this.appliedKv.get(key);
      if (e === null || e.operation !== 'PUT') continue;
      const seq = Number(new TextDecoder().decode(e.value));
      if (Number.isSafeInteger(seq)) floor = floor === undefined ? seq : Math.min(floor, seq);
    }
    return floor;
  }

  // ---- the lease ------------------------------------------------------------------------

  /** Take the lease if nobody holds it; its revision, or undefined. */
  async acquire(): Promise<number | undefined> {
    try {
      return await this.kv.create(LEASE_KEY, JSON.stringify({ node: this.settings.node, url: this.settings.advertise }));
    } catch {
      return undefined;
    }
  }

  /** Renew the lease held at `revision`; the new revision, or undefined when it is someone else's now. */
  async renew(revision: number): Promise<number | undefined> {
    try {
      return await this.kv.update(LEASE_KEY, JSON.stringify({ node: this.settings.node, url: this.settings.advertise }), revision);
    } catch {
      return undefined;
    }
  }

  /** Give the lease up at once (a clean stop), so a follower need not wait for it to lapse. */
  async release(revision: number): Promise<void> {
    try {
      await this.kv.delete(LEASE_KEY, { previousSeq: revision });
    } catch {
      // Someone else holds it already.
    }
  }

  /** Who holds the lease now, as the bucket says. */
  async leader(): Promise<LeaderInfo | undefined> {
    try {
      const e = await this.kv.get(LEASE_KEY);
      if (e === null || e.operation !== 'PUT') return undefined;
      return JSON.parse(new TextDecoder().decode(e.value)) as LeaderInfo;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}
