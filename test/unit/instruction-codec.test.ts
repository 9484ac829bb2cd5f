/**
 * The instruction records' codec (layout 6): codes for type, status,
 * batches and banks, the acceptance time counted from the batch's date,
 * the clearing time left out when it is the acceptance time; records of
 * layouts 3 to 5 read beside them as they are. Against msgpackr with
 * shared structures, and against a real LMDB environment.
 */

import { open } from 'lmdb';
import { Packr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import { checkStoredInstruction, type StoredInstruction } from '../../src/core/stored-instruction.js';
import { BANK_CODES_KEY, batchCode, batchFromCode, fromDisk, InstructionPackr, toDisk } from '../../src/store/instruction-codec.js';
import { openShardDbs, sharedStructures, type ShardDbs } from '../../src/store/schema.js';
import { tempDirs } from '../helpers/engine-process.js';

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

const AT = 1_795_000_000_000;
/** 2026-11-27, the date of the records' batches, in ms since 1970. */
const BATCH_DAY = Date.UTC(2026, 10, 27);

/** Wait until the codec has committed codes for the banks it met (on their own, after the turn that met them), and answer them. */
async function codesFor(dbs: ShardDbs, n: number): Promise<string[]> {
  const banks = (dbs.ins as unknown as { encoder: InstructionPackr }).encoder.banks!;
  await banks.settled();
  const codes = (dbs.meta.get(BANK_CODES_KEY) as string[] | undefined) ?? [];
  expect(codes).toHaveLength(n);
  return codes;
}

/** One record of each shape the ledger writes. */
const RECORDS: StoredInstruction[] = [
  { t: 'gateway', p: 'ICBC', q: 'BOC', a: 1, s: 'cleared', at: AT, b: '20261127-001', ct: AT },
  { t: 'agreement', p: 'ICBC', q: 'BOC', a: 1_000_000_000_000, s: 'cleared', at: AT, b: '20261127-001', ct: AT, r: 'invoice 7', m: 'M-1' },
  { t: 'entrusted', p: 'ABC', q: 'CMB', a: 500, s: 'pending', at: AT, tp: 1, to: 30_000, dl: AT + 30_000, st: 'receipt' },
  { t: 'entrusted', p: 'ABC', q: 'CMB', a: 500, s: 'cleared', at: AT, tp: 1, to: 30_000, dl: AT + 30_000, st: 'receipt', b: '20261127-002', ct: AT + 1_234 },
  { t: 'gateway', p: 'ABC', q: 'CMB', a: 500, s: 'cleared', at: AT, tp: 1, to: 100, dl: AT + 100, st: 'receipt', b: '20261127-001', ct: AT },
  { t: 'payout', p: 'CCB', q: 'PSBC', a: 77, s: 'declined', at: AT, tp: 1, to: 100, dl: AT + 100, st: 'payee', sa: AT + 50, ft: AT + 60, rs: 'no such account' },
  { t: 'authenticated', p: 'CCB', q: 'PSBC', a: 77, s: 'awaiting-submission', at: AT, tp: 1, to: 100, dl: AT + 200, st: 'submission', sa: AT + 100 },
  { t: 'authenticated', p: 'CCB', q: 'PSBC', a: 77, s: 'expired', at: AT, tp: 1, to: 100, dl: AT + 200, st: 'receipt', sa: AT + 100, vf: '123456', ft: AT + 300 },
  { t: 'gateway', p: 'ICBC', q: 'BOC', a: 9, s: 'reversed', at: AT, b: '20261127-001', ct: AT, rb: '20261127-003', ft: AT + 9_000 },
];

describe('instruction records', () => {
  it('read back as they were written, for every shape the ledger writes', () => {
    const packr = new InstructionPackr({ structures: [] });
    for (const rec of RECORDS) {
      const back = packr.decode(packr.encode(rec));
      expect(back).toEqual(rec);
      expect(checkStoredInstruction(back, 'PI0001/T-1')).toEqual(rec);
    }
  });

  it('hold codes, and no clearing time that equals the acceptance time', () => {
    const cleared = RECORDS[0]!;
    // The acceptance time from the start of the batch's date (a week earlier here: any offset reads back).
    expect(toDisk(cleared)).toEqual({ t: 3, p: 'ICBC', q: 'BOC', a: 1, s: 1, ad: AT - BATCH_DAY, b: batchCode('20261127-001') });
    // No batch, no offset: a pending record keeps its time as it is.
    expect(toDisk(RECORDS[2]!)['at']).toBe(AT);
    expect(toDisk(RECORDS[2]!)['ad']).toBeUndefined();
    expect(typeof toDisk(cleared)['b']).toBe('number');
    expect(toDisk(RECORDS[8]!)['rb']).toBe(batchCode('20261127-003'));
    // Cleared later than accepted (a two-phase confirmation): the time is kept.
    expect(toDisk(RECORDS[3]!)['ct']).toBe(AT + 1_234);
    // Written again (msgpackr retries a write whose structure could not be saved): the same.
    expect(toDisk(toDisk(cleared) as unknown as StoredInstruction)).toEqual(toDisk(cleared));
    const compact = new InstructionPackr({ structures: [] });
    const plain = new Packr({ structures: [] });
    // The first write of a shape defines its structure; the second is the size every later record has.
    compact.encode(cleared);
    plain.encode(cleared);
    expect(compact.encode(cleared).length).toBeLessThanOrEqual(plain.encode(cleared).length - 30);
  });

  it('write a batch id as an integer that reads back as the same id, and any id that is not a date and a sequence as it is', () => {
    for (const id of ['19700101-001', '20000229-000', '20261127-001', '20261231-999', '20991231-042']) {
      const code = batchCode(id);
      expect(typeof code).toBe('number');
      expect(code).toBeLessThan(2 ** 32);
      expect(batchFromCode(code)).toBe(id);
    }
    // Later ids sort later as codes too, and consecutive ones differ by one.
    expect(batchCode('20261128-001')).toBeGreaterThan(batchCode('20261127-999') as number);
    expect((batchCode('20261127-002') as number) - (batchCode('20261127-001') as number)).toBe(1);
    for (const id of ['20261399-001', '20250229-001', 'nope', '2026112-001', '20261127-01']) expect(batchCode(id)).toBe(id);
    const odd: StoredInstruction = { ...RECORDS[0]!, b: '20261399-001' };
    const packr = new InstructionPackr({ structures: [] });
    expect(packr.decode(packr.encode(odd))).toEqual(odd);
  });

  it('read a record of an earlier layout as it is, and leave an unknown code for the check to refuse', () => {
    for (const rec of RECORDS) expect(fromDisk({ ...rec })).toEqual(rec);
    const unknown = fromDisk({ ...toDisk(RECORDS[0]!), t: 42 });
    expect(() => checkStoredInstruction(unknown, 'PI0001/T-1')).toThrow(/bad type/);
    const badStatus = fromDisk({ ...toDisk(RECORDS[0]!), s: 0 });
    expect(() => checkStoredInstruction(badStatus, 'PI0001/T-1')).toThrow(/bad status/);
    // A time counted from a batch that is not a code has nothing to count from: no time, refused.
    const noDay = fromDisk({ ...toDisk(RECORDS[0]!), b: 'x' });
    expect(() => checkStoredInstruction(noDay, 'PI0001/T-1')).toThrow(/no acceptance time/);
    // A layout-5 record: banks by name, the absolute time beside a batch code.
    const five: Record<string, unknown> = { ...toDisk(RECORDS[0]!), at: AT };
    delete five['ad'];
    expect(fromDisk(five)).toEqual(RECORDS[0]);
  });

  it('in LMDB: a bank is written by name until its code is committed, then by code, and every reader reads both', async () => {
    const path = dirs.make();
    const dbs = openShardDbs(path, 64 * 1024 * 1024);
    // A reader with its own codec, opened before any code exists (as the main thread opens a shard).
    const reader = openShardDbs(path, 64 * 1024 * 1024);
    try {
      const rec = (i: number): StoredInstruction => ({ ...RECORDS[0]!, p: `B${String(i % 300).padStart(3, '0')}`, q: `B${String((i + 1) % 300).padStart(3, '0')}`, a: i + 1 });
      await dbs.env.transaction(() => {
        for (let i = 0; i < 300; i++) dbs.ins.put(`PI0001/A-${i}`, rec(i));
      });
      const codes = await codesFor(dbs, 300);
      expect(new Set(codes).size).toBe(300);
      await dbs.env.transaction(() => {
        for (let i = 0; i < 300; i++) dbs.ins.put(`PI0001/B-${i}`, rec(i));
      });
      const raw = (key: string): number => dbs.ins.getBinary(key)!.length;
      // Names are 5 bytes of msgpack each; codes below 128 take 1, below 256 take 2.
      expect(raw('PI0001/B-5')).toBe(raw('PI0001/A-5') - 8);
      expect(raw('PI0001/B-200')).toBe(raw('PI0001/A-200') - 6);
      for (const db of [dbs, reader]) {
        for (let i = 0; i < 300; i++) {
          expect(db.ins.get(`PI0001/A-${i}`)).toEqual(rec(i));
          expect(db.ins.get(`PI0001/B-${i}`)).toEqual(rec(i));
        }
      }
      // A transaction that fails leaves no code behind that a record could name without its list: the codes of
      // banks met in it are committed on their own, and a fresh environment reads everything back.
      await expect(
        dbs.env.childTransaction(() => {
          dbs.ins.putSync('PI0001/C-1', { ...rec(1), p: 'NEW1', q: 'NEW2' });
          throw new Error('the transaction fails');
        }),
      ).rejects.toThrow(/fails/);
      expect(dbs.ins.get('PI0001/C-1')).toBeUndefined();
      await codesFor(dbs, 302);
      await dbs.env.transaction(() => {
        dbs.ins.put('PI0001/C-2', { ...rec(2), p: 'NEW1', q: 'NEW2' });
      });
      expect(reader.ins.get('PI0001/C-2')).toEqual({ ...rec(2), p: 'NEW1', q: 'NEW2' });
    } finally {
      await reader.env.close();
      await dbs.env.close();
    }
    const again = openShardDbs(path, 64 * 1024 * 1024);
    try {
      const all = [...again.ins.getRange({})].map(({ key, value }) => checkStoredInstruction(value, key));
      expect(all).toHaveLength(601);
      expect(again.ins.get('PI0001/C-2')!.p).toBe('NEW1');
    } finally {
      await again.env.close();
    }
  });

  it('in LMDB: records a layout-4 engine wrote read beside new ones, one by one and in a range, and a rewrite compacts them', async () => {
    const path = dirs.make();
    // As layout 4 opened the database: plain msgpack with the shared structures kept in meta.
    const old = open({ path, maxDbs: 12 });
    const oldMeta = old.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
    const oldIns = old.openDB<StoredInstruction, string>({ name: 'ins', encoding: 'msgpack', ...sharedStructures(oldMeta, 'ins') });
    await old.transaction(() => {
      RECORDS.forEach((rec, i) => oldIns.put(`PI0001/OLD-${i}`, rec));
    });
    await old.close();

    const dbs = openShardDbs(path, 64 * 1024 * 1024);
    try {
      await dbs.env.transaction(() => {
        RECORDS.forEach((rec, i) => dbs.ins.put(`PI0002/NEW-${i}`, rec));
      });
      RECORDS.forEach((rec, i) => {
        expect(dbs.ins.get(`PI0001/OLD-${i}`)).toEqual(rec);
        expect(dbs.ins.get(`PI0002/NEW-${i}`)).toEqual(rec);
      });
      const all = [...dbs.ins.getRange({})].map(({ key, value }) => [key, checkStoredInstruction(value, key)]);
      expect(all).toHaveLength(2 * RECORDS.length);
      for (const [key, value] of all) expect(value).toEqual(RECORDS[Number(String(key).split('-')[1])]);
      // The raw bytes: the new record is the shorter one, and an old record rewritten becomes as short.
      const raw = (key: string): number => dbs.ins.getBinary(key)!.length;
      expect(raw('PI0002/NEW-0')).toBeLessThan(raw('PI0001/OLD-0'));
      await codesFor(dbs, 6);
      await dbs.ins.put('PI0002/NEW-0', dbs.ins.get('PI0002/NEW-0')!);
      await dbs.ins.put('PI0001/OLD-0', dbs.ins.get('PI0001/OLD-0')!);
      expect(raw('PI0001/OLD-0')).toBe(raw('PI0002/NEW-0'));
      expect(dbs.ins.get('PI0001/OLD-0')).toEqual(RECORDS[0]);
    } finally {
      await dbs.env.close();
    }
  });
});
