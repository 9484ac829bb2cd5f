/**
 * What every bench run shares: the participant banks, the principals and
 * their tokens, the engine's configuration, and a deterministic pool of
 * instructions from which the generators draw, so that the auditor can
 * recompute what an acknowledged instruction did from its id alone.
 */

/** The 14 participant banks of the demo configuration: a realistic NetsUnion-like set. */
export const BANKS = [
  { code: 'ICBC', name: 'Industrial and Commercial Bank of China' },
  { code: 'ABC', name: 'Agricultural Bank of China' },
  { code: 'BOC', name: 'Bank of China' },
  { code: 'CCB', name: 'China Construction Bank' },
  { code: 'BOCOM', name: 'Bank of Communications' },
  { code: 'PSBC', name: 'Postal Savings Bank of China' },
  { code: 'CMB', name: 'China Merchants Bank' },
  { code: 'CITIC', name: 'China CITIC Bank' },
  { code: 'SPDB', name: 'Shanghai Pudong Development Bank' },
  { code: 'CIB', name: 'Industrial Bank' },
  { code: 'CMBC', name: 'China Minsheng Bank' },
  { code: 'CEB', name: 'China Everbright Bank' },
  { code: 'HXB', name: 'Hua Xia Bank' },
  { code: 'PAB', name: 'Ping An Bank' },
] as const;

export const BANK_CODES: readonly string[] = BANKS.map((b) => b.code);

/** Institutions that submit; WebSocket connections take them in turn. */
export const INSTITUTIONS = ['PI0001', 'PI0002', 'PI0003', 'PI0004'] as const;

/** Bench-only tokens, for loopback runs on throw-away data folders. */
export function institutionToken(institution: string): string {
  return `bench-institution-${institution}-token`;
}
export const OPERATOR_TOKEN = 'bench-operator-ops-token';
const BANK_TOKEN = 'bench-bank-ICBC-token-xx';

export interface Principal {
  token: string;
  role: 'institution' | 'bank' | 'operator';
  id: string;
}

export const PRINCIPALS: readonly Principal[] = [
  ...INSTITUTIONS.map((id) => ({ token: institutionToken(id), role: 'institution' as const, id })),
  { token: BANK_TOKEN, role: 'bank', id: 'ICBC' },
  { token: OPERATOR_TOKEN, role: 'operator', id: 'ops' },
];

/**
 * The engine's configuration for one run: a fresh data folder, a port
 * picked by the system. BENCH_ENGINE_CONFIG (a JSON object) overrides keys,
 * e.g. '{"snapshotIntervalMs":100}' to measure snapshots at ten times the
 * default rate.
 */
export function engineConfig(dataDir: string, shards: number, workers: number): Record<string, unknown> {
  const extra = process.env['BENCH_ENGINE_CONFIG'];
  return {
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    banks: BANKS.map((b) => ({ code: b.code, name: b.name })),
    principals: PRINCIPALS,
    shards,
    workers,
    logLevel: 'info',
    ...(extra === undefined || extra === '' ? {} : (JSON.parse(extra) as Record<string, unknown>)),
  };
}

/** The bare server reads the same keys it needs from a file of the same shape. */
export function bareConfig(dataDir: string): Record<string, unknown> {
  return { listen: { host: '127.0.0.1', port: 0 }, dataDir, principals: PRINCIPALS };
}

const TYPES = ['agreement', 'entrusted', 'gateway', 'authenticated', 'payout'] as const;

export interface PoolEntry {
  type: string;
  payer: string;
  payee: string;
  payerIndex: number;
  payeeIndex: number;
  amount: number;
  reference?: string;
}

/** A power of two, so that `n & POOL_MASK` picks the entry of instruction number n. */
export const POOL_SIZE = 4096;
const POOL_MASK = POOL_SIZE - 1;

/** mulberry32: small, fast and deterministic, so a run can be replayed from its seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Instruction contents drawn once; instruction number n uses entry n mod
 * POOL_SIZE. Amounts go up to 10,000 yuan, a quarter carry a reference, as
 * retail payments through the platform do.
 */
export function instructionPool(seed: number): PoolEntry[] {
  const rand = rng(seed);
  const pool: PoolEntry[] = [];
  for (let i = 0; i < POOL_SIZE; i++) {
    const payerIndex = Math.floor(rand() * BANK_CODES.length);
    let payeeIndex = payerIndex;
    while (payeeIndex === payerIndex) payeeIndex = Math.floor(rand() * BANK_CODES.length);
    const entry: PoolEntry = {
      type: TYPES[Math.floor(rand() * TYPES.length)]!,
      payer: BANK_CODES[payerIndex]!,
      payee: BANK_CODES[payeeIndex]!,
      payerIndex,
      payeeIndex,
      amount: 1 + Math.floor(rand() * 1_000_000),
    };
    if (rand() < 0.25) entry.reference = `order ${i} 订单`;
    pool.push(entry);
  }
  return pool;
}

export function poolEntry(pool: readonly PoolEntry[], n: number): PoolEntry {
  return pool[n & POOL_MASK]!;
}

export interface WireInstruction {
  id: string;
  type: string;
  payer: string;
  payee: string;
  amount: number;
  reference?: string;
}

/** The instruction as submitted: the pool entry's content under its own id. */
export function wireInstruction(pool: readonly PoolEntry[], id: string, n: number): WireInstruction {
  const e = poolEntry(pool, n);
  const w: WireInstruction = { id, type: e.type, payer: e.payer, payee: e.payee, amount: e.amount };
  if (e.reference !== undefined) w.reference = e.reference;
  return w;
}

/**
 * The auditor's model of the positions: each bank's net (received − paid)
 * over the acknowledged instructions. Amounts are below 10^6 and runs below
 * 10^9 instructions, so every sum stays an exact integer in a double.
 */
export class NetTally {
  readonly nets = new Float64Array(BANK_CODES.length);

  add(e: PoolEntry): void {
    this.nets[e.payeeIndex]! += e.amount;
    this.nets[e.payerIndex]! -= e.amount;
  }

  addNets(other: ArrayLike<number>): void {
    for (let i = 0; i < this.nets.length; i++) this.nets[i]! += other[i]!;
  }

  byBank(): Map<string, number> {
    return new Map(BANK_CODES.map((code, i) => [code, this.nets[i]!]));
  }
}
