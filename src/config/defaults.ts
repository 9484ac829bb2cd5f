/**
 * Every default and bound of the engine, in one place, with units in the
 * names. A configuration file overrides any of them (see config.ts).
 */

export const DEFAULTS = {
  listen: { host: '127.0.0.1', port: 8080 },
  dataDir: './data',
  snapshotIntervalMs: 1000,
  /** An hour of snapshots at the default interval. */
  snapshotRetention: 3600,
  /** Queries to a silent payer bank at 5, 10 and 20 s; the default receipt timeout is 30 s. */
  receiptQueryScheduleMs: [5_000, 10_000, 20_000],
  shards: 2,
  /** Worker threads; each owns shards s where s % workers === its index. */
  workers: 2,
  maxAmountCents: 1_000_000_000_000,
  /** Rebuild positions from the stored instructions at start and compare (law 6). */
  verifyOnStart: false,
  logLevel: 'info' as const,
  limits: {
    /** Largest HTTP request body. */
    bodyBytesMax: 1_048_576,
    /** Largest WebSocket frame the engine answers; larger ones get PAYLOAD_TOO_LARGE. */
    frameBytesMax: 1_048_576,
    /** Instructions in one POST or one `submit` frame. */
    batchItemsMax: 10_000,
    /** Instructions submitted on one connection and not yet answered. */
    connectionInflightMax: 50_000,
    /** Instructions queued for one shard and not yet handed to its worker. */
    shardQueueMax: 200_000,
    /** Instructions in one task handed to a shard worker (one LMDB transaction). */
    shardTaskItemsMax: 4_096,
    /** Tasks a shard may have at its worker at once; more queue in the router. */
    shardTasksInflightMax: 2,
    /** Send buffer of a WebSocket connection past which it is closed. */
    wsBackpressureBytesMax: 16_777_216,
    /** Seconds without traffic before a WebSocket is closed (uWS rounds to 4 s). */
    wsIdleTimeoutS: 120,
    /** WebSocket connections open at once over all principals; an upgrade past it is refused OVERLOADED. Keep it under the process's open-file limit. */
    wsConnectionsMax: 10_000,
    /** WebSocket connections one principal may hold at once, so that one client cannot take them all. */
    wsConnectionsPerPrincipalMax: 4_096,
    /** Forwards in one catch-up frame to a bank that subscribes to `forwards` (fewer when wsBackpressureBytesMax is small). */
    wsForwardFrameItemsMax: 1_000,
    /** Initial LMDB map size per shard environment (lmdb-js grows it as needed). */
    shardMapBytes: 8 * 1024 * 1024 * 1024,
    /** Storage one shard may use; past it, new instructions are refused with STORAGE_FULL. */
    shardBytesMax: 64 * 1024 * 1024 * 1024,
    /** Bloom filter of known instruction ids (a power of two); 16 MiB keeps false positives under 1% to 10 million ids. */
    idFilterBytes: 16 * 1024 * 1024,
    /** On SIGTERM/SIGINT: how long work already at the shards may take to commit and be answered. */
    shutdownDrainMs: 5_000,
    /** On SIGTERM/SIGINT: the process exits by then, whatever is left. */
    shutdownMs: 10_000,
  },
} as const;

/**
 * The shortest interval between scheduled cut-offs. A business day has 999
 * batch ids, so an interval under about 86.5 s uses them up before the day
 * ends: the cut-offs left that day are skipped with a warning, and the open
 * batch goes on until the next business day.
 */
export const BATCH_INTERVAL_MS_MIN = 1000;
/** The smallest snapshot interval the engine accepts; a snapshot still being written is never overtaken, so a short one only costs CPU. */
export const SNAPSHOT_INTERVAL_MS_MIN = 10;
/** Shards are fixed for a data folder; this bound keeps per-shard overhead sane. */
export const SHARDS_MAX = 64;
/** A shorter token is accepted (the contract sets no length) but warned about at start. */
export const TOKEN_LENGTH_MIN = 16;
