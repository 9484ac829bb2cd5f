/**
 * The reconciliation digest of PROTOCOL.md (高频对账).
 *
 * For each cleared instruction, the ASCII line
 * `<institution>|<id>|<payer>|<payee>|<amount>` is hashed with FNV-1a 64;
 * a digest is the sum of those hashes modulo 2^64, written as 16 lowercase
 * hex digits, and a reversal subtracts its instruction's hash. Sums commute,
 * so digests are kept incrementally per institution, batch and bucket (the
 * hash's top byte) and combined across shards by addition.
 *
 * The hash runs on the hot path, so it is computed on two 32-bit halves
 * with plain numbers rather than BigInt. Every character of the line is
 * ASCII (ids, codes and digits only), so a UTF-16 code unit is its byte.
 */

const MASK64 = (1n << 64n) - 1n;

/** FNV-1a 64 of an ASCII string, as [high 32 bits, low 32 bits]. */
export function fnv1a64Halves(text: string): [number, number] {
  // Offset basis 0xcbf29ce484222325.
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < text.length; i++) {
    lo = (lo ^ text.charCodeAt(i)) >>> 0;
    // h * 0x100000001b3 = h * 0x1b3 + (h << 40), modulo 2^64.
    const loMul = lo * 0x1b3;
    const carry = Math.floor(loMul / 0x100000000);
    const newLo = loMul >>> 0;
    hi = (Math.imul(hi, 0x1b3) + carry + (lo << 8)) >>> 0;
    lo = newLo;
  }
  return [hi, lo];
}

export function fnv1a64(text: string): bigint {
  const [hi, lo] = fnv1a64Halves(text);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

export function digestLine(institution: string, id: string, payer: string, payee: string, amount: number): string {
  return `${institution}|${id}|${payer}|${payee}|${amount}`;
}

/** The bucket of a hash: its top byte, 0..255. */
export function bucketOfHigh(hi: number): number {
  return hi >>> 24;
}

export function addDigest(a: bigint, b: bigint): bigint {
  return (a + b) & MASK64;
}

export function subDigest(a: bigint, b: bigint): bigint {
  return (a - b) & MASK64;
}

export function digestHex(d: bigint): string {
  return (d & MASK64).toString(16).padStart(16, '0');
}

const HEX16 = /^[0-9a-f]{16}$/;

export function isDigestHex(text: unknown): text is string {
  return typeof text === 'string' && HEX16.test(text);
}

export function digestFromHex(text: string): bigint {
  return BigInt(`0x${text}`);
}

/**
 * Running sums of many hashes, kept as two number halves so that adding a
 * hash costs no BigInt; exact while fewer than 2^21 hashes are added, far
 * above any task size. `fold` gives the sum modulo 2^64.
 */
export class DigestAccumulator {
  private hiSum = 0;
  private loSum = 0;

  add(hi: number, lo: number, sign: 1 | -1): void {
    this.hiSum += sign * hi;
    this.loSum += sign * lo;
  }

  fold(): bigint {
    return ((BigInt(this.hiSum) << 32n) + BigInt(this.loSum)) & MASK64;
  }
}

/** An institution's reconciliation figures in a batch (or one shard's or one task's share of them). */
export interface InstitutionTotals {
  institution: string;
  /** Cleared instructions, minus reversals netted in the batch. */
  count: number;
  amount: bigint;
  /** Sum of FNV-1a 64 hashes modulo 2^64. */
  digest: bigint;
}

/** Add figures into a map of totals by institution, creating the row when first seen. */
export function addInstitutionTotals(into: Map<string, InstitutionTotals>, institution: string, count: number, amount: bigint, digest: bigint): void {
  const t = into.get(institution);
  if (t === undefined) {
    into.set(institution, { institution, count, amount, digest: digest & MASK64 });
  } else {
    t.count += count;
    t.amount += amount;
    t.digest = addDigest(t.digest, digest);
  }
}
