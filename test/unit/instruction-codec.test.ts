/**
 * The instruction records' codec (layout 5): codes for type and status,
 * the clearing time left out when it is the acceptance time; records of
 * layouts 3 and 4 read beside them as they are. Against msgpackr with
 * shared structures, and against a real LMDB environment.
 */

import { open } from 'lmdb';
import { Packr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import { checkStoredInstruction, type StoredInstruction } from '../../src/core/stored-instruction.js';
import { batchCode, batchFromCode, fromDisk, InstructionPackr, toDisk } from '../../src/store/instruction-codec.js';
import { openShardDbs, sharedStructures } from '../../src/store/schema.js';
import { tempDirs } from '../helpers/engine-process.js';

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

const AT = 1_795_000_000_000;

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
    expect(toDisk(cleared)).toEqual({ t: 3, p: 'ICBC', q: 'BOC', a: 1, s: 1, at: AT, b: batchCode('20261127-001') });
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
      await dbs.ins.put('PI0001/OLD-0', dbs.ins.get('PI0001/OLD-0')!);
      expect(raw('PI0001/OLD-0')).toBe(raw('PI0002/NEW-0'));
      expect(dbs.ins.get('PI0001/OLD-0')).toEqual(RECORDS[0]);
    } finally {
      await dbs.env.close();
    }
  });
});
