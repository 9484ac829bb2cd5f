/**
 * Where a shard's bytes go, per instruction:
 * `npm run bench:storage -- [instructions] [banks] [ids]` (default
 * 1,000,000 at 500 banks, `ordered` ids).
 *
 * It applies instructions to one shard ledger (src/shard/ledger.ts) in
 * tasks of 1,000, as the engine commits them, then reads LMDB's own
 * statistics of each database (branch, leaf and overflow pages) and of
 * the environment's file. Ids are either `ordered` (zero-padded, so each
 * institution's arrive in key order, as a payment institution's serial
 * numbers do) or `scattered` (unpadded counters, whose inserts land all
 * over the B-tree). Resident memory follows the file's size, since LMDB
 * reads every page it rewrites through its map (docs/architecture.md).
 *
 * Everything runs in this process, on a temporary folder removed at the end.
 */

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InstructionType } from '../src/core/instruction.js';
import { ShardLedger } from '../src/shard/ledger.js';
import type { ShardOp } from '../src/shard/tasks.js';
import { openShardDbs, type ShardDbs } from '../src/store/schema.js';
import { institutionIds, instructionPool, poolEntry } from './fixture.js';
import { isMainScript } from './paths.js';

const TASK = 1000;
const INSTITUTIONS = institutionIds(4);
const BATCH = '20261122-001';
const MAP_BYTES = 16 * 1024 * 1024 * 1024;
const DATABASES = ['ins', 'pos', 'jrn', 'bkt', 'bkj', 'pnd', 'meta'] as const;

export type IdOrder = 'ordered' | 'scattered';

export interface StorageRow {
  database: (typeof DATABASES)[number];
  entries: number;
  pages: number;
  bytesPerInstruction: number;
}

export interface StorageFigures {
  instructions: number;
  banks: number;
  ids: IdOrder;
  rows: StorageRow[];
  /** The data file's size, and its pages in use (the rest is free pages LMDB reuses). */
  fileBytes: number;
  usedPages: number;
  fileBytesPerInstruction: number;
}

interface DbStats {
  entryCount: number;
  treeBranchPageCount: number;
  treeLeafPageCount: number;
  overflowPages: number;
  pageSize: number;
}

function statsOf(dbs: ShardDbs, name: (typeof DATABASES)[number]): DbStats {
  return (dbs[name] as unknown as { getStats(): DbStats }).getStats();
}

/** Load `total` instructions into one shard and measure its databases; the folder is removed at the end. */
export async function runStorageBench(total: number, banks = 500, ids: IdOrder = 'ordered', log: (line: string) => void = () => undefined): Promise<StorageFigures> {
  if (!Number.isSafeInteger(total) || total < TASK || total > 50_000_000) throw new Error(`give a number of instructions from ${TASK} to 50,000,000`);
  const dir = mkdtempSync(join(tmpdir(), 'netting-bench-storage-'));
  const path = join(dir, 'shard');
  const dbs = openShardDbs(path, MAP_BYTES);
  try {
    const pool = instructionPool({ seed: 1, banks, institutions: INSTITUTIONS.length, pairs: 'skewed' });
    const ledger = new ShardLedger(0, dbs, Number.MAX_SAFE_INTEGER);
    const idOf = (n: number): string => (ids === 'ordered' ? `RS-${String(n).padStart(12, '0')}` : `RS-${n}`);
    for (let next = 0; next < total; ) {
      const ops: ShardOp[] = [];
      for (let i = 0; i < TASK && next < total; i++, next++) {
        const e = poolEntry(pool, next);
        ops.push(['S', INSTITUTIONS[next % INSTITUTIONS.length]!, idOf(next), e.type as InstructionType, e.payer, e.payee, e.amount, e.reference ?? null, 0, null]);
      }
      await ledger.apply({ kind: 'apply', shard: 0, batch: BATCH, now: Date.now(), ops });
    }
    const rows: StorageRow[] = [];
    let usedPages = 0;
    log(`${total.toLocaleString('en')} instructions at ${banks} banks, ${INSTITUTIONS.length} institutions, ${ids} ids, tasks of ${TASK}`);
    log('| database | entries | pages | bytes per instruction |');
    log('| --- | ---: | ---: | ---: |');
    for (const name of DATABASES) {
      const s = statsOf(dbs, name);
      const pages = s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
      usedPages += pages;
      const row = { database: name, entries: s.entryCount, pages, bytesPerInstruction: (pages * s.pageSize) / total };
      rows.push(row);
      log(`| ${name} | ${row.entries.toLocaleString('en')} | ${pages.toLocaleString('en')} | ${row.bytesPerInstruction.toFixed(1)} |`);
    }
    const fileBytes = statSync(join(path, 'data.mdb')).size;
    const fileBytesPerInstruction = fileBytes / total;
    log(`data file: ${(fileBytes / 2 ** 20).toFixed(1)} MiB, ${fileBytesPerInstruction.toFixed(1)} bytes per instruction (pages in the databases' trees: ${usedPages.toLocaleString('en')})`);
    return { instructions: total, banks, ids, rows, fileBytes, usedPages, fileBytesPerInstruction };
  } finally {
    await dbs.env.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainScript(import.meta.url)) {
  const ids = process.argv[4] ?? 'ordered';
  if (ids !== 'ordered' && ids !== 'scattered') throw new Error('ids: ordered or scattered');
  runStorageBench(Number(process.argv[2] ?? 1_000_000), Number(process.argv[3] ?? 500), ids, (line) => console.log(line)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
