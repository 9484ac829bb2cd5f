import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { openShardDbs, type StoredInstruction } from '../../src/store/schema.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const SHAPES: StoredInstruction[] = [
  { t: 'gateway', p: 'ICBC', q: 'BOC', a: 100, s: 'cleared', at: 1, b: '20261127-001', ct: 1 },
  { t: 'agreement', p: 'ICBC', q: 'BOC', a: 250, s: 'cleared', at: 2, r: '订单 7', m: 'M1', b: '20261127-001', ct: 2 },
  { t: 'payout', p: 'CCB', q: 'ABC', a: 9, s: 'pending', at: 3, tp: 1, to: 30_000, dl: 30_003, st: 'payer' },
];

/** A reader in another thread, as the main thread reads what a shard's worker writes: it opened the environment before the records existed. */
function readerThread(path: string): { read: (keys: string[]) => Promise<unknown[]>; stop: () => Promise<number> } {
  // The built module (npm test builds first): a worker thread cannot load TypeScript.
  const url = new URL('../../dist/src/store/schema.js', import.meta.url).href;
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.url).then(({ openShardDbs }) => {
       const dbs = openShardDbs(workerData.path, 1 << 30);
       parentPort.on('message', (keys) => { dbs.env.resetReadTxn(); parentPort.postMessage(keys.map((k) => dbs.ins.get(k))); });
       parentPort.postMessage('ready');
     });`,
    { eval: true, workerData: { url, path } },
  );
  const ready = new Promise((resolve) => w.once('message', resolve));
  return {
    read: async (keys) => {
      await ready;
      const answer = new Promise<unknown[]>((resolve) => w.once('message', resolve));
      w.postMessage(keys);
      return answer;
    },
    stop: () => w.terminate(),
  };
}

describe('instruction records', () => {
  it('are stored without their key lists (shared record structures), and read back after a reopen and by another thread', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'netting-structures-'));
    dirs.push(dir);
    const path = join(dir, 'shard-0');
    let dbs = openShardDbs(path, 1 << 30);
    await dbs.env.childTransaction(() => {});
    const reader = readerThread(path);
    await reader.read([]);
    await dbs.env.childTransaction(() => SHAPES.forEach((r, i) => dbs.ins.put(`PI0001/X${i}`, r)));
    for (let i = 0; i < SHAPES.length; i++) {
      const raw = dbs.ins.getBinary(`PI0001/X${i}`)!;
      // A record id (0x40-0x7f), not an inline record definition (ext 0xd4 'r'): the key list is not repeated in every record.
      expect(raw[0]).toBeGreaterThanOrEqual(0x40);
      expect(raw[0]).toBeLessThanOrEqual(0x7f);
    }
    expect(await reader.read(SHAPES.map((_, i) => `PI0001/X${i}`))).toEqual(SHAPES);
    await reader.stop();
    await dbs.env.close();
    dbs = openShardDbs(path, 1 << 30);
    for (let i = 0; i < SHAPES.length; i++) expect(dbs.ins.get(`PI0001/X${i}`)).toEqual(SHAPES[i]);
    // The structures live beside the records: a scan over every instruction key meets instruction keys only.
    expect([...dbs.ins.getKeys({})]).toEqual(SHAPES.map((_, i) => `PI0001/X${i}`));
    await dbs.env.close();
  });
});
