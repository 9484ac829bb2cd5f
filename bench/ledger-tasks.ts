/**
 * What a shard task costs by its size and by the number of banks:
 * `npm run bench:ledger -- [instructions] [banks,...]` (default 200,000 per
 * row, at 20 and 500 banks).
 *
 * It applies the same instructions to a shard ledger (src/shard/ledger.ts)
 * in tasks of 20, 100 and 1,000, each task one committed transaction as in
 * the engine, and reads the process's user and system CPU per instruction.
 * Instructions come from the benches' fixture: 8 institutions, payer and
 * payee drawn skewed over the banks.
 * Beside it, in the same run and on the same kind of LMDB environment, the
 * baseline: the same records written with plain puts in transactions of the
 * same size (no duplicate check, flows, digests or index). The difference
 * between sizes is the fixed cost of a task and its commit; the difference
 * from the baseline is what the ledger adds per instruction.
 *
 * Everything runs in this process, on temporary folders removed at the end.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InstructionType } from '../src/core/instruction.js';
import { ShardLedger } from '../src/shard/ledger.js';
import type { ShardOp } from '../src/shard/tasks.js';
import { instructionKey, openShardDbs, type ShardDbs } from '../src/store/schema.js';
import { institutionIds, instructionPool, poolEntry, type PoolEntry } from './fixture.js';
import { isMainScript } from './paths.js';

const SIZES = [20, 100, 1000];
const BANKS = [20, 500];
const INSTITUTIONS = institutionIds(8);
const BATCH = '20261122-001';
const MAP_BYTES = 8 * 1024 * 1024 * 1024;

interface Figures {
  userUs: number;
  systemUs: number;
}

let pool: PoolEntry[] = [];
let next = 0;

/** A task's worth of new instructions, spread over the institutions as the benches send them. */
function ops(size: number): ShardOp[] {
  const out: ShardOp[] = [];
  for (let i = 0; i < size; i++, next++) {
    const e = poolEntry(pool, next);
    out.push(['S', INSTITUTIONS[next % INSTITUTIONS.length]!, `LT-${next}`, e.type as InstructionType, e.payer, e.payee, e.amount, e.reference ?? null, 0, null]);
  }
  return out;
}

async function measure(total: number, size: number, apply: (ops: ShardOp[], now: number) => Promise<unknown>): Promise<Figures> {
  const tasks = Math.ceil(total / size);
  const before = process.cpuUsage();
  for (let t = 0; t < tasks; t++) await apply(ops(size), Date.now());
  const used = process.cpuUsage(before);
  return { userUs: used.user / (tasks * size), systemUs: used.system / (tasks * size) };
}

/** The baseline: each instruction's record, and nothing else, in one transaction per task. */
function plainPuts(dbs: ShardDbs): (ops: ShardOp[], now: number) => Promise<unknown> {
  return (o, now) =>
    dbs.env.childTransaction(() => {
      for (const op of o) {
        if (op[0] !== 'S') continue;
        dbs.ins.put(instructionKey(op[1], op[2]), { t: op[3], p: op[4], q: op[5], a: op[6], s: 'cleared', at: now, b: BATCH, ct: now });
      }
    });
}

function show(f: Figures): string {
  return `${(f.userUs + f.systemUs).toFixed(2)} µs (user ${f.userUs.toFixed(2)}, system ${f.systemUs.toFixed(2)})`;
}

export interface LedgerTaskRow {
  banks: number;
  taskSize: number;
  ledger: Figures;
  plain: Figures;
  /** Ledger CPU over baseline CPU per instruction. */
  ratio: number;
}

export interface LedgerTaskFigures {
  rows: LedgerTaskRow[];
  /** The ledgers' own audits of what they stored: instructions cleared in the batch, and whether flows and digests match them. */
  audits: { banks: number; cleared: number; matches: boolean }[];
}

/** Run every task size at every number of banks with `total` instructions each; temporary folders are removed at the end. */
export async function runLedgerTaskBench(total: number, log: (line: string) => void = () => undefined, banksList: readonly number[] = BANKS): Promise<LedgerTaskFigures> {
  if (!Number.isSafeInteger(total) || total < 100 || total > 10_000_000) throw new Error('give a number of instructions per size from 100 to 10,000,000');
  const dir = mkdtempSync(join(tmpdir(), 'netting-bench-ledger-'));
  const rows: LedgerTaskRow[] = [];
  const audits: LedgerTaskFigures['audits'] = [];
  try {
    log(`CPU per instruction, ${total.toLocaleString('en')} instructions per row, one commit per task, ${INSTITUTIONS.length} institutions, skewed pairs`);
    log('| banks | task size | ledger | plain puts (baseline) | ledger / baseline |');
    log('| ---: | ---: | ---: | ---: | ---: |');
    for (const banks of banksList) {
      pool = instructionPool({ seed: 1, banks, institutions: INSTITUTIONS.length, pairs: 'skewed' });
      const ledgerDbs = openShardDbs(join(dir, `ledger-${banks}`), MAP_BYTES);
      const plainDbs = openShardDbs(join(dir, `plain-${banks}`), MAP_BYTES);
      try {
        const ledger = new ShardLedger(0, ledgerDbs, Number.MAX_SAFE_INTEGER);
        for (const taskSize of SIZES) {
          const l = await measure(total, taskSize, (o, now) => ledger.apply({ kind: 'apply', shard: 0, batch: BATCH, now, ops: o }));
          const p = await measure(total, taskSize, plainPuts(plainDbs));
          const ratio = (l.userUs + l.systemUs) / (p.userUs + p.systemUs);
          rows.push({ banks, taskSize, ledger: l, plain: p, ratio });
          log(`| ${banks} | ${taskSize} | ${show(l)} | ${show(p)} | ${ratio.toFixed(2)} |`);
        }
        const audit = ledger.verify(BATCH);
        audits.push({ banks, cleared: audit.cleared, matches: audit.matches });
        log(`ledger audit at ${banks} banks: ${audit.cleared.toLocaleString('en')} cleared, flows and digests ${audit.matches ? 'match' : 'do not match'}`);
      } finally {
        await ledgerDbs.env.close();
        await plainDbs.env.close();
      }
    }
    return { rows, audits };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainScript(import.meta.url)) {
  const banks = process.argv[3] === undefined ? BANKS : process.argv[3].split(',').map(Number);
  runLedgerTaskBench(Number(process.argv[2] ?? 200_000), (line) => console.log(line), banks).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
