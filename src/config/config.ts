/**
 * The engine's configuration: the JSON file of PROTOCOL.md, validated at
 * start. Unknown keys and bad values stop the engine with a message that
 * names the key (e.g. `limits.batchItemsMax`). Defaults come from
 * defaults.ts; the result is a frozen, fully-resolved `EngineConfig`, with
 * warnings for what the contract allows but a production engine should not
 * run with (main.ts logs them at start).
 */

import { readFileSync } from 'node:fs';
import { isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';
import { AMOUNT_CENTS_LIMIT } from '../core/money.js';
import { parseTimes, type BatchScheduleConfig } from '../core/business-time.js';
import { mandateKey, validateMandateTerms, type MandateTerms } from '../mandates/mandate.js';
import { BATCH_INTERVAL_MS_MIN, DEFAULTS, SHARDS_MAX, SNAPSHOT_INTERVAL_MS_MIN, TOKEN_LENGTH_MIN } from './defaults.js';

/** `metrics` is the monitoring system (Prometheus): it may read `GET /metrics` and nothing else. */
export type Role = 'institution' | 'bank' | 'operator' | 'metrics';
export const ROLES: readonly Role[] = ['institution', 'bank', 'operator', 'metrics'];

export interface BankConfig {
  code: string;
  /** The bank's name; its code when the configuration gives none (the contract does not require one). */
  name: string;
  /** Cap on paid − received + pending debit, in cents; absent means no cap. */
  debitCapCents?: number;
}

export interface PrincipalConfig {
  token: string;
  role: Role;
  id: string;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface Limits {
  bodyBytesMax: number;
  frameBytesMax: number;
  batchItemsMax: number;
  connectionInflightMax: number;
  shardQueueMax: number;
  shardTaskItemsMax: number;
  shardTasksInflightMax: number;
  wsBackpressureBytesMax: number;
  wsIdleTimeoutS: number;
  wsConnectionsMax: number;
  wsConnectionsPerPrincipalMax: number;
  wsForwardFrameItemsMax: number;
  shardMapBytes: number;
  shardBytesMax: number;
  idFilterBytes: number;
  shutdownDrainMs: number;
  shutdownMs: number;
}

export interface ClusterConfig {
  /** This node's name, unique in the cluster. */
  node: string;
  /** The URL clients use to reach this node. */
  advertise: string;
  /** The NATS servers of the cluster's JetStream. */
  nats: string[];
  /** JetStream replicas of the log: 1, 3 or 5. */
  replicas: number;
  /** How long a dead leader keeps its role. */
  leaseMs: number;
  /**
   * Log entries kept below the lowest sequence every other node has
   * committed; older ones are purged. A node whose data is older than the
   * log starts from a copy of a follower's data folder.
   */
  logRetainEntries: number;
}

export interface TlsConfig {
  certFile: string;
  keyFile: string;
  passphrase?: string;
}

export interface EngineConfig {
  listen: { host: string; port: number };
  /** Serve HTTPS and WSS with this certificate and key (uWebSockets.js SSLApp). */
  tls?: TlsConfig;
  dataDir: string;
  banks: BankConfig[];
  principals: PrincipalConfig[];
  snapshotIntervalMs: number;
  /** Snapshots kept on disk; older ones are dropped. */
  snapshotRetention: number;
  /** When to send a query (查询补偿) to a payer bank that has not answered, in ms after acceptance. */
  receiptQueryScheduleMs: number[];
  /** Automatic cut-offs; absent means operator cut-offs only. */
  batchSchedule?: BatchScheduleConfig;
  shards: number;
  workers: number;
  maxAmountCents: number;
  verifyOnStart: boolean;
  /** Every `agreement` and `entrusted` instruction needs an active mandate (MANDATE_INVALID otherwise). */
  requireMandates: boolean;
  /** Mandates made active (offline signing) at start when not yet stored. */
  mandates: MandateTerms[];
  /** Cluster mode (PROTOCOL.md, "Replicated deployment"): absent, the engine runs alone and needs no NATS. */
  cluster?: ClusterConfig;
  /** Test-only: lets an operator make a worker thread exit (POST /v1/debug/workers/{w}/crash). */
  faultInjection: boolean;
  logLevel: LogLevel;
  limits: Limits;
}

/** The file as written: anything, until validated. */
export type RawConfig = Record<string, unknown>;

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super(`config key '${key}': ${problem}`);
  }
}

const OPERATOR_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], at: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw new ConfigError(at ? `${at}.${key}` : key, 'unknown key');
  }
}

function int(value: unknown, key: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new ConfigError(key, 'must be an integer');
  if (value < min || value > max) throw new ConfigError(key, `must be from ${min} to ${max}`);
  return value;
}

function str(value: unknown, key: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new ConfigError(key, 'must be a non-empty string');
  return value;
}

function object(value: unknown, key: string): Record<string, unknown> {
  if (!isPlainObject(value)) throw new ConfigError(key, 'must be an object');
  return value;
}

function opt<T>(obj: Record<string, unknown>, key: string, fallback: T, parse: (v: unknown) => T): T {
  return Object.hasOwn(obj, key) ? parse(obj[key]) : fallback;
}

/** A validated configuration and its warnings: one line each, naming the key, never showing a token. */
export interface CheckedConfig {
  config: EngineConfig;
  warnings: string[];
}

export function parseConfig(raw: unknown): EngineConfig {
  return parseConfigWithWarnings(raw).config;
}

export function parseConfigWithWarnings(raw: unknown): CheckedConfig {
  const warnings: string[] = [];
  const root = object(raw, '(root)');
  checkKeys(
    root,
    [
      'listen',
      'tls',
      'dataDir',
      'banks',
      'principals',
      'snapshotIntervalMs',
      'snapshotRetention',
      'receiptQueryScheduleMs',
      'batchSchedule',
      'shards',
      'workers',
      'maxAmountCents',
      'verifyOnStart',
      'requireMandates',
      'mandates',
      'cluster',
      'faultInjection',
      'logLevel',
      'limits',
    ],
    '',
  );

  const listen = opt(root, 'listen', { ...DEFAULTS.listen }, (v) => {
    const l = object(v, 'listen');
    checkKeys(l, ['host', 'port'], 'listen');
    return {
      host: opt(l, 'host', DEFAULTS.listen.host, (h) => str(h, 'listen.host')),
      port: opt(l, 'port', DEFAULTS.listen.port as number, (p) => int(p, 'listen.port', 0, 65535)),
    };
  });

  const tls = opt(root, 'tls', undefined as TlsConfig | undefined, (v) => {
    const t = object(v, 'tls');
    checkKeys(t, ['certFile', 'keyFile', 'passphrase'], 'tls');
    const out: TlsConfig = { certFile: str(t['certFile'], 'tls.certFile'), keyFile: str(t['keyFile'], 'tls.keyFile') };
    if (Object.hasOwn(t, 'passphrase')) out.passphrase = str(t['passphrase'], 'tls.passphrase');
    for (const key of ['certFile', 'keyFile'] as const) {
      try {
        readFileSync(out[key]);
      } catch (err) {
        throw new ConfigError(`tls.${key}`, `cannot read ${out[key]}: ${(err as Error).message}`);
      }
    }
    return out;
  });
  const dataDir = opt(root, 'dataDir', DEFAULTS.dataDir as string, (v) => str(v, 'dataDir'));

  if (!Object.hasOwn(root, 'banks')) throw new ConfigError('banks', 'is required');
  const banksRaw = root['banks'];
  // One bank is a platform on which nothing can be paid (payer and payee differ), but a valid one, as the contract's own example has it.
  if (!Array.isArray(banksRaw) || banksRaw.length < 1) throw new ConfigError('banks', 'must be an array of at least one bank');
  const codes = new Set<string>();
  const banks = banksRaw.map((b, i): BankConfig => {
    const at = `banks[${i}]`;
    const o = object(b, at);
    checkKeys(o, ['code', 'name', 'debitCapCents'], at);
    const code = str(o['code'], `${at}.code`);
    if (!PARTY_CODE_PATTERN.test(code)) throw new ConfigError(`${at}.code`, 'must match ^[A-Z0-9]{2,16}$');
    if (codes.has(code)) throw new ConfigError(`${at}.code`, `duplicate bank code '${code}'`);
    codes.add(code);
    const bank: BankConfig = { code, name: opt(o, 'name', code, (n) => str(n, `${at}.name`)) };
    if (Object.hasOwn(o, 'debitCapCents')) bank.debitCapCents = int(o['debitCapCents'], `${at}.debitCapCents`, 0, AMOUNT_CENTS_LIMIT);
    return bank;
  });

  if (!Object.hasOwn(root, 'principals')) throw new ConfigError('principals', 'is required');
  const principalsRaw = root['principals'];
  if (!Array.isArray(principalsRaw) || principalsRaw.length === 0) throw new ConfigError('principals', 'must be a non-empty array');
  const tokens = new Set<string>();
  const principals = principalsRaw.map((p, i): PrincipalConfig => {
    const at = `principals[${i}]`;
    const o = object(p, at);
    checkKeys(o, ['token', 'role', 'id'], at);
    const token = str(o['token'], `${at}.token`);
    if (!/^[\x21-\x7e]+$/.test(token)) throw new ConfigError(`${at}.token`, 'must be printable ASCII without spaces');
    if (tokens.has(token)) throw new ConfigError(`${at}.token`, 'duplicate token');
    tokens.add(token);
    // The contract sets no length, and a trial or a test may use short tokens; a guessable one is still a risk, so it is said at start.
    if (token.length < TOKEN_LENGTH_MIN) warnings.push(`${at}.token is shorter than ${TOKEN_LENGTH_MIN} characters; use a long random token outside a trial`);
    const role = o['role'];
    if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
      throw new ConfigError(`${at}.role`, `must be one of ${ROLES.join(', ')}`);
    }
    const id = str(o['id'], `${at}.id`);
    if (role === 'institution' && !PARTY_CODE_PATTERN.test(id)) throw new ConfigError(`${at}.id`, 'must match ^[A-Z0-9]{2,16}$');
    if (role === 'bank' && !codes.has(id)) throw new ConfigError(`${at}.id`, `bank '${id}' is not among the configured banks`);
    if ((role === 'operator' || role === 'metrics') && !OPERATOR_ID_PATTERN.test(id)) throw new ConfigError(`${at}.id`, 'must match ^[A-Za-z0-9._-]{1,64}$');
    return { token, role: role as Role, id };
  });

  const snapshotIntervalMs = opt(root, 'snapshotIntervalMs', DEFAULTS.snapshotIntervalMs as number, (v) =>
    int(v, 'snapshotIntervalMs', SNAPSHOT_INTERVAL_MS_MIN, 86_400_000),
  );
  const snapshotRetention = opt(root, 'snapshotRetention', DEFAULTS.snapshotRetention as number, (v) => int(v, 'snapshotRetention', 1, 10_000_000));
  const receiptQueryScheduleMs = opt(root, 'receiptQueryScheduleMs', [...DEFAULTS.receiptQueryScheduleMs] as number[], (v) => {
    if (!Array.isArray(v) || v.length > 16) throw new ConfigError('receiptQueryScheduleMs', 'must be an array of at most 16 delays in ms');
    const list = v.map((x, i) => int(x, `receiptQueryScheduleMs[${i}]`, 1, 86_400_000));
    for (let i = 1; i < list.length; i++) {
      if (list[i]! <= list[i - 1]!) throw new ConfigError(`receiptQueryScheduleMs[${i}]`, 'delays must increase');
    }
    return list;
  });
  const batchSchedule = opt(root, 'batchSchedule', undefined as BatchScheduleConfig | undefined, (v) => {
    const o = object(v, 'batchSchedule');
    if (Object.hasOwn(o, 'intervalMs')) {
      checkKeys(o, ['intervalMs'], 'batchSchedule');
      return { intervalMs: int(o['intervalMs'], 'batchSchedule.intervalMs', BATCH_INTERVAL_MS_MIN, 86_400_000) };
    }
    checkKeys(o, ['times'], 'batchSchedule');
    const times = o['times'];
    if (!Array.isArray(times) || times.length === 0 || !times.every((t) => typeof t === 'string')) {
      throw new ConfigError('batchSchedule.times', 'must be a non-empty array of "HH:MM" (Beijing time)');
    }
    try {
      parseTimes(times as string[]);
    } catch (err) {
      throw new ConfigError('batchSchedule.times', (err as Error).message);
    }
    return { times: [...(times as string[])] };
  });
  const shards = opt(root, 'shards', DEFAULTS.shards as number, (v) => int(v, 'shards', 1, SHARDS_MAX));
  const workers = opt(root, 'workers', Math.min(shards, DEFAULTS.workers), (v) => int(v, 'workers', 1, shards));
  const maxAmountCents = opt(root, 'maxAmountCents', DEFAULTS.maxAmountCents as number, (v) =>
    int(v, 'maxAmountCents', 1, AMOUNT_CENTS_LIMIT),
  );
  const verifyOnStart = opt(root, 'verifyOnStart', DEFAULTS.verifyOnStart as boolean, (v) => {
    if (typeof v !== 'boolean') throw new ConfigError('verifyOnStart', 'must be a boolean');
    return v;
  });
  const requireMandates = opt(root, 'requireMandates', false, (v) => {
    if (typeof v !== 'boolean') throw new ConfigError('requireMandates', 'must be a boolean');
    return v;
  });
  const bankCodes = new Set(banks.map((b) => b.code));
  const mandates = opt(root, 'mandates', [] as MandateTerms[], (v) => {
    if (!Array.isArray(v)) throw new ConfigError('mandates', 'must be a list');
    const seen = new Set<string>();
    return v.map((m, i) => {
      const terms = validateMandateTerms(m, undefined, { isBank: (code) => bankCodes.has(code), amountCentsMax: maxAmountCents });
      if ('code' in terms) throw new ConfigError(`mandates[${i}]${terms.field !== undefined ? `.${terms.field}` : ''}`, terms.message);
      const key = mandateKey(terms);
      if (seen.has(key)) throw new ConfigError(`mandates[${i}].id`, `mandate ${key} is listed twice`);
      seen.add(key);
      return terms;
    });
  });
  const cluster = opt(root, 'cluster', undefined as ClusterConfig | undefined, (v) => {
    const c = object(v, 'cluster');
    checkKeys(c, ['node', 'advertise', 'nats', 'replicas', 'leaseMs', 'logRetainEntries'], 'cluster');
    const node = str(c['node'], 'cluster.node');
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(node)) throw new ConfigError('cluster.node', 'must match ^[A-Za-z0-9_-]{1,32}$');
    const advertise = str(c['advertise'], 'cluster.advertise');
    if (!/^https?:\/\/[^\s/]+(\/\S*)?$/.test(advertise)) throw new ConfigError('cluster.advertise', 'must be an http:// or https:// URL');
    const nats = c['nats'];
    if (!Array.isArray(nats) || nats.length === 0 || !nats.every((u) => typeof u === 'string' && /^(nats|tls):\/\/\S+$/.test(u))) {
      throw new ConfigError('cluster.nats', 'must be a non-empty list of nats:// URLs');
    }
    const replicas = opt(c, 'replicas', 3, (r) => {
      if (r !== 1 && r !== 3 && r !== 5) throw new ConfigError('cluster.replicas', 'must be 1, 3 or 5');
      return r;
    });
    const leaseMs = opt(c, 'leaseMs', 3000, (l) => int(l, 'cluster.leaseMs', 500, 600_000));
    const logRetainEntries = opt(c, 'logRetainEntries', 10_000_000, (n) => int(n, 'cluster.logRetainEntries', 0, Number.MAX_SAFE_INTEGER));
    return { node, advertise, nats: [...(nats as string[])], replicas, leaseMs, logRetainEntries };
  });
  const faultInjection = opt(root, 'faultInjection', false, (v) => {
    if (typeof v !== 'boolean') throw new ConfigError('faultInjection', 'must be a boolean');
    return v;
  });
  const logLevel = opt(root, 'logLevel', DEFAULTS.logLevel as LogLevel, (v) => {
    if (typeof v !== 'string' || !(LOG_LEVELS as readonly string[]).includes(v)) {
      throw new ConfigError('logLevel', `must be one of ${LOG_LEVELS.join(', ')}`);
    }
    return v as LogLevel;
  });

  const limitsRaw = opt(root, 'limits', {} as Record<string, unknown>, (v) => object(v, 'limits'));
  const limitKeys = Object.keys(DEFAULTS.limits) as (keyof Limits)[];
  checkKeys(limitsRaw, limitKeys, 'limits');
  const limitBounds: Record<keyof Limits, [number, number]> = {
    bodyBytesMax: [1024, 64 * 1024 * 1024],
    frameBytesMax: [1024, 64 * 1024 * 1024],
    batchItemsMax: [1, 100_000],
    connectionInflightMax: [1, 10_000_000],
    shardQueueMax: [1, 10_000_000],
    shardTaskItemsMax: [1, 100_000],
    shardTasksInflightMax: [1, 64],
    wsBackpressureBytesMax: [1024, 1024 * 1024 * 1024],
    wsIdleTimeoutS: [0, 3600],
    wsConnectionsMax: [1, 1_000_000],
    wsConnectionsPerPrincipalMax: [1, 1_000_000],
    wsForwardFrameItemsMax: [1, 100_000],
    shardMapBytes: [1024 * 1024, 2 ** 40],
    shardBytesMax: [1024 * 1024, 2 ** 50],
    idFilterBytes: [128, 512 * 1024 * 1024],
    shutdownDrainMs: [0, 600_000],
    shutdownMs: [100, 600_000],
  };
  const limits = {} as Limits;
  for (const key of limitKeys) {
    const [min, max] = limitBounds[key];
    limits[key] = opt(limitsRaw, key, DEFAULTS.limits[key] as number, (v) => int(v, `limits.${key}`, min, max));
  }

  const config: EngineConfig = { listen, dataDir, banks, principals, snapshotIntervalMs, snapshotRetention, receiptQueryScheduleMs, shards, workers, maxAmountCents, verifyOnStart, requireMandates, mandates, faultInjection, logLevel, limits };
  if (batchSchedule !== undefined) config.batchSchedule = batchSchedule;
  if (tls !== undefined) config.tls = tls;
  if (cluster !== undefined) config.cluster = cluster;
  if (!Number.isInteger(Math.log2(limits.idFilterBytes))) throw new ConfigError('limits.idFilterBytes', 'must be a power of two');
  if (limits.shutdownDrainMs >= limits.shutdownMs) throw new ConfigError('limits.shutdownDrainMs', 'must be below limits.shutdownMs');
  return { config: deepFreeze(config), warnings };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

export function loadConfigFile(path: string): CheckedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('--config', `${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseConfigWithWarnings(raw);
}
