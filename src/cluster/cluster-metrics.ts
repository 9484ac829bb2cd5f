/**
 * Cluster mode's metrics: the node's role, how far it has applied the log,
 * how far behind it is, leader changes and lease renewals. A follower
 * serves them alone; the leader adds them to the engine's registry.
 */

import { Counter, Gauge, Registry } from 'prom-client';

export interface ClusterMetricsSource {
  role(): 'leader' | 'follower';
  /** A leader is known to this node (itself, or the one the lease names). */
  leaderKnown(): boolean;
  appliedSeq(): number;
  /** The log's last sequence as last read; undefined before the first read, when the lag is unknown. */
  logLastSeq(): number | undefined;
}

export class ClusterMetrics {
  readonly registry = new Registry();
  readonly leaderChanges: Counter;
  readonly leaseRenewals: Counter;
  private readonly all: (Counter | Gauge)[] = [];

  constructor(source: ClusterMetricsSource) {
    const r = [this.registry];
    this.all.push(
      new Gauge({
        name: 'netting_cluster_role',
        help: 'This node\'s role: 1 on the series of its current role',
        labelNames: ['role'],
        registers: r,
        collect() {
          const role = source.role();
          this.set({ role: 'leader' }, role === 'leader' ? 1 : 0);
          this.set({ role: 'follower' }, role === 'follower' ? 1 : 0);
        },
      }),
      new Gauge({
        name: 'netting_cluster_leader_known',
        help: 'Whether this node knows of a leader (1) or sees none (0)',
        registers: r,
        collect() {
          this.set(source.leaderKnown() ? 1 : 0);
        },
      }),
      new Gauge({
        name: 'netting_cluster_applied_seq',
        help: 'The last log sequence this node has applied to its LMDB',
        registers: r,
        collect() {
          this.set(source.appliedSeq());
        },
      }),
      new Gauge({
        name: 'netting_cluster_replication_lag_entries',
        help: 'Log entries this node has yet to apply: the log\'s last sequence minus the applied one (NaN until the log has been read)',
        registers: r,
        collect() {
          const last = source.logLastSeq();
          this.set(last === undefined ? Number.NaN : Math.max(0, last - source.appliedSeq()));
        },
      }),
    );
    this.leaderChanges = new Counter({ name: 'netting_cluster_leader_changes_total', help: 'Leader changes this node has seen (its own promotions and demotions included)', registers: r });
    this.leaseRenewals = new Counter({ name: 'netting_cluster_lease_renewals_total', help: 'Lease renewals by this node while it leads', registers: r });
    this.all.push(this.leaderChanges, this.leaseRenewals);
  }

  /** Add these metrics to another registry (the leader's engine's). */
  registerInto(other: Registry): void {
    for (const m of this.all) other.registerMetric(m);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
