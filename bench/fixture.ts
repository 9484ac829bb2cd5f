/**
 * What every bench run shares: the participant banks, the principals and
 * their tokens, the engine's configuration, and a deterministic pool of
 * instructions from which the generators draw, so that the auditor can
 * recompute what an acknowledged instruction did from its id alone.
 *
 * A run's fixture is set by four numbers: the seed, how many banks and
 * institutions, and how payer and payee are drawn. Banks beyond the 14
 * real codes get generated ones (B0015, B0016, ...); amounts are skewed as
 * real payments are; pairs are uniform or concentrated on a few large banks.
 */

/** The 14 participant banks of the demo configuration: a realistic NetsUnion-like set, always the first banks. */
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

/** Bounds of the generated names: four digits after the prefix. */
export const BANKS_MAX = 9999;
export const INSTITUTIONS_MAX = 9999;

export type PairsMode = 'uniform' | 'skewed';

/** What decides a run's banks, institutions and instructions; every generator thread and the auditor derive the same from it. */
export interface FixtureSpec {
  seed: number;
  banks: number;
  institutions: number;
  pairs: PairsMode;
}

/** The demo-sized fixture the restart and ledger benches use: the 14 real banks, 4 institutions. */
export const DEFAULT_FIXTURE: FixtureSpec = { seed: 1, banks: BANKS.length, institutions: 4, pairs: 'uniform' };

/** Bank `i` (from 0): the real ones first, then B0015, B0016, ... (codes match ^[A-Z0-9]{2,16}$). */
export function bankCodes(count: number): string[] {
  if (!Number.isInteger(count) || count < 2 || count > BANKS_MAX) throw new Error(`banks: from 2 to ${BANKS_MAX}`);
  return Array.from({ length: count }, (_, i) => (i < BANKS.length ? BANKS[i]!.code : `B${String(i + 1).padStart(4, '0')}`));
}

export function bankList(count: number): { code: string; name: string }[] {
  return bankCodes(count).map((code, i) => ({ code, name: i < BANKS.length ? BANKS[i]!.name : `Bench Bank ${code.slice(1)}` }));
}

/** Institutions that submit: PI0001, PI0002, ... */
export function institutionIds(count: number): string[] {
  if (!Number.isInteger(count) || count < 1 || count > INSTITUTIONS_MAX) throw new Error(`institutions: from 1 to ${INSTITUTIONS_MAX}`);
  return Array.from({ length: count }, (_, i) => `PI${String(i + 1).padStart(4, '0')}`);
}

/** The demo-sized institutions, for the benches that do not take a fixture. */
export const INSTITUTIONS: readonly string[] = institutionIds(DEFAULT_FIXTURE.institutions);

/**
 * Which institution WebSocket connection `k` of `connections` speaks for:
 * with as many connections as institutions or more they take them in turn;
 * with fewer, they are spread evenly over the whole list, so that the
 * sample of submitting institutions spans it.
 */
export function connectionInstitution(k: number, connections: number, institutions: number): number {
  return connections >= institutions ? k % institutions : Math.floor((k * institutions) / connections);
}

/** Which institution the HTTP request with index `r` (counted per generator) speaks for: all of them in turn. */
export function requestInstitution(r: number, institutions: number): number {
  return r % institutions;
}

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

export function principals(institutions: number): Principal[] {
  return [
    ...institutionIds(institutions).map((id) => ({ token: institutionToken(id), role: 'institution' as const, id })),
    { token: BANK_TOKEN, role: 'bank', id: BANKS[0].code },
    { token: OPERATOR_TOKEN, role: 'operator', id: 'ops' },
  ];
}

/** The demo-sized principals. */
export const PRINCIPALS: readonly Principal[] = principals(DEFAULT_FIXTURE.institutions);

/**
 * The engine's configuration for one run: a fresh data folder, a port
 * picked by the system, the fixture's banks and principals.
 * BENCH_ENGINE_CONFIG (a JSON object) overrides keys, e.g.
 * '{"snapshotIntervalMs":100}' to measure snapshots at ten times the
 * default rate.
 */
export function engineConfig(dataDir: string, shards: number, workers: number, fixture: FixtureSpec = DEFAULT_FIXTURE): Record<string, unknown> {
  const extra = process.env['BENCH_ENGINE_CONFIG'];
  return {
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    banks: bankList(fixture.banks),
    principals: principals(fixture.institutions),
    shards,
    workers,
    logLevel: 'info',
    ...(extra === undefined || extra === '' ? {} : (JSON.parse(extra) as Record<string, unknown>)),
  };
}

/** The bare server reads the keys it needs (listen, dataDir, principals) from a file of the same shape, with the same banks. */
export function bareConfig(dataDir: string, fixture: FixtureSpec = DEFAULT_FIXTURE): Record<string, unknown> {
  return { listen: { host: '127.0.0.1', port: 0 }, dataDir, banks: bankList(fixture.banks), principals: principals(fixture.institutions) };
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

/**
 * A power of two, so that `n & POOL_MASK` picks the entry of instruction
 * number n; large enough that with 2,000 banks each still appears in many
 * entries (about 65 each when uniform).
 */
export const POOL_SIZE = 65_536;
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
 * Amounts, in integer cents, as payments through a retail clearing
 * platform are: most are small (log-normal around 100 yuan), a few are
 * large (2%, log-normal around 50,000 yuan), none above 10 million yuan,
 * far below the engine's default maxAmountCents (10^12).
 */
const RETAIL_MEDIAN_CENTS = 10_000;
const RETAIL_SIGMA = 1.4;
const LARGE_SHARE = 0.02;
const LARGE_MEDIAN_CENTS = 5_000_000;
const LARGE_SIGMA = 1.2;
export const AMOUNT_CENTS_MAX = 1_000_000_000;

/** A standard normal draw (Box–Muller) from the seeded generator. */
function normal(rand: () => number): number {
  const u1 = 1 - rand(); // in (0, 1], so the log is finite
  const u2 = rand();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

function amountCents(rand: () => number): number {
  const large = rand() < LARGE_SHARE;
  const cents = Math.exp(Math.log(large ? LARGE_MEDIAN_CENTS : RETAIL_MEDIAN_CENTS) + (large ? LARGE_SIGMA : RETAIL_SIGMA) * normal(rand));
  return Math.min(AMOUNT_CENTS_MAX, Math.max(1, Math.round(cents)));
}

/**
 * Draws a bank index. Uniform: every bank alike. Skewed: Zipf-like
 * weights 1/(rank+1) over the banks in their order, so the large real
 * banks first carry much of the traffic (with 500 banks the first 14 take
 * about half of it, the first one 15%), as on a national platform.
 */
function bankPicker(banks: number, pairs: PairsMode, rand: () => number): () => number {
  if (pairs === 'uniform') return () => Math.floor(rand() * banks);
  const cumulative = new Float64Array(banks);
  let total = 0;
  for (let i = 0; i < banks; i++) {
    total += 1 / (i + 1);
    cumulative[i] = total;
  }
  return () => {
    const x = rand() * total;
    let lo = 0;
    let hi = banks - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

/**
 * Instruction contents drawn once; instruction number n uses entry n mod
 * POOL_SIZE. A quarter carry a reference, as retail payments through the
 * platform do. Everything follows from the spec, so each thread and the
 * auditor build the same pool.
 */
export function instructionPool(spec: FixtureSpec = DEFAULT_FIXTURE): PoolEntry[] {
  const codes = bankCodes(spec.banks);
  const rand = rng(spec.seed);
  const pick = bankPicker(codes.length, spec.pairs, rand);
  const pool: PoolEntry[] = [];
  for (let i = 0; i < POOL_SIZE; i++) {
    const payerIndex = pick();
    let payeeIndex = payerIndex;
    while (payeeIndex === payerIndex) payeeIndex = pick();
    const entry: PoolEntry = {
      type: TYPES[Math.floor(rand() * TYPES.length)]!,
      payer: codes[payerIndex]!,
      payee: codes[payeeIndex]!,
      payerIndex,
      payeeIndex,
      amount: amountCents(rand),
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
 * over the acknowledged instructions. Amounts are at most 10^9 cents and
 * the pool's mean is near 2.5 × 10^5, so a bank's net stays an exact
 * integer in a double (below 2^53) for runs of up to 10^10 instructions.
 */
export class NetTally {
  readonly nets: Float64Array;

  constructor(readonly codes: readonly string[] = BANK_CODES) {
    this.nets = new Float64Array(codes.length);
  }

  add(e: PoolEntry): void {
    this.nets[e.payeeIndex]! += e.amount;
    this.nets[e.payerIndex]! -= e.amount;
  }

  addNets(other: ArrayLike<number>): void {
    for (let i = 0; i < this.nets.length; i++) this.nets[i]! += other[i]!;
  }

  byBank(): Map<string, number> {
    return new Map(this.codes.map((code, i) => [code, this.nets[i]!]));
  }
}
