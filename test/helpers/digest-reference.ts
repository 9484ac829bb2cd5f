/**
 * A plain FNV-1a 64 and sum digest, written from PROTOCOL.md with BigInt
 * and UTF-8 bytes, independent of the engine's two-halves implementation.
 */

const OFFSET = 0xcbf29ce484222325n;
const PRIME = 0x100000001b3n;
const MOD = 1n << 64n;

export function fnv1a64Reference(text: string): bigint {
  let h = OFFSET;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= BigInt(byte);
    h = (h * PRIME) % MOD;
  }
  return h;
}

export function lineHash(institution: string, i: { id: string; payer: string; payee: string; amount: number }): bigint {
  return fnv1a64Reference(`${institution}|${i.id}|${i.payer}|${i.payee}|${i.amount}`);
}

export function hex16(d: bigint): string {
  return (((d % MOD) + MOD) % MOD).toString(16).padStart(16, '0');
}

export interface RefBucket {
  count: number;
  amount: bigint;
  digest: bigint;
  ids: string[];
}

/** Totals and 256 buckets of an institution's own records. */
export function referenceDigest(institution: string, records: { id: string; payer: string; payee: string; amount: number }[]): {
  count: number;
  amount: bigint;
  digest: bigint;
  buckets: RefBucket[];
} {
  const buckets: RefBucket[] = Array.from({ length: 256 }, () => ({ count: 0, amount: 0n, digest: 0n, ids: [] }));
  let amount = 0n;
  let digest = 0n;
  for (const r of records) {
    const h = lineHash(institution, r);
    const b = buckets[Number(h >> 56n)]!;
    b.count++;
    b.amount += BigInt(r.amount);
    b.digest = (b.digest + h) % MOD;
    b.ids.push(r.id);
    amount += BigInt(r.amount);
    digest = (digest + h) % MOD;
  }
  return { count: records.length, amount, digest, buckets };
}
