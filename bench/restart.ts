/**
 * Memory as the ledger grows, and the time to restart with it stored:
 * `npm run bench:restart -- [instructions] [banks]` (default 10,000,000
 * at 500 banks, with 100 institutions configured).
 *
 * It loads the engine through four WebSocket connections, each of another
 * institution (frames of 1,000, a window of 4 frames each; payer and payee
 * drawn skewed over the banks), reads its resident memory (split into
 * anonymous memory and the LMDB files' mapped pages), stops it with
 * SIGTERM, starts it again on the same data folder and times it from spawn
 * to listening. The data folder is temporary and removed at the end.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode, encode } from '@msgpack/msgpack';
import WebSocket from 'ws';
import { engineConfig, institutionIds, instructionPool, institutionToken, wireInstruction, type FixtureSpec, type WireInstruction } from './fixture.js';
import { ENGINE_MAIN, isMainScript } from './paths.js';
import { readMappedFileBytes, readStatusBytes } from './target-process.js';

const FRAME = 1000;
const CONNECTIONS = 4;
const WINDOW = 4;
const BANKS = 500;
const INSTITUTIONS = 100;
const START_MS_MAX = 120_000;

interface Started {
  proc: ChildProcess;
  port: number;
  spawnToListeningMs: number;
  recoveryMs: number;
}

function start(configPath: string): Promise<Started> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const proc = spawn(process.execPath, [ENGINE_MAIN, '--config', configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error('the engine did not start in time')), START_MS_MAX);
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const listening = /"port":(\d+),"msg":"listening"/.exec(out);
      if (listening === null) return;
      clearTimeout(timer);
      const recovery = /"recoveryMs":(\d+)/.exec(out);
      resolve({ proc, port: Number(listening[1]), spawnToListeningMs: Math.round(performance.now() - t0), recoveryMs: recovery === null ? -1 : Number(recovery[1]) });
    });
    proc.once('exit', (code) => reject(new Error(`the engine exited with ${code}`)));
  });
}

function stop(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
  });
}

/** Resident memory in MiB: all of it, anonymous (heaps), file-backed, and of that LMDB's mapped pages (the data files' mappings). */
export interface MemoryFigures {
  rssMiB: number;
  anonymousMiB: number;
  fileMiB: number;
  lmdbPagesMiB: number;
}

function memory(pid: number): MemoryFigures {
  const mib = (bytes: number | undefined): number => Math.round((bytes ?? 0) / 2 ** 20);
  const status = (key: string): number => mib(readStatusBytes(pid, key));
  return { rssMiB: status('VmRSS'), anonymousMiB: status('RssAnon'), fileMiB: status('RssFile'), lmdbPagesMiB: mib(readMappedFileBytes(pid, 'data.mdb')) };
}

function showMemory(m: MemoryFigures): string {
  return `${m.rssMiB} MiB (anonymous ${m.anonymousMiB}, file-backed ${m.fileMiB}, of which LMDB's data files ${m.lmdbPagesMiB})`;
}

/** Bytes of every file under a folder (the LMDB data files, mostly). */
function folderBytes(dir: string): number {
  let bytes = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += statSync(join(entry.parentPath, entry.name)).size;
  }
  return bytes;
}

/** Load `total` instructions over CONNECTIONS connections of as many institutions; answers the number acknowledged. */
async function load(port: number, total: number, fixture: FixtureSpec): Promise<number> {
  const pool = instructionPool(fixture);
  let sent = 0;
  let acked = 0;
  const connection = async (institution: string): Promise<void> => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/stream?token=${institutionToken(institution)}`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const waiting = new Map<number, () => void>();
    ws.on('message', (data: Buffer) => {
      const m = decode(data) as { op: string; seq: number; results?: { status: string }[] };
      if (m.op !== 'ack') throw new Error(`unexpected ${m.op}`);
      for (const r of m.results ?? []) if (r.status !== 'cleared') throw new Error(`an instruction was ${r.status}`);
      acked += m.results?.length ?? 0;
      waiting.get(m.seq)?.();
      waiting.delete(m.seq);
    });
    let seq = 0;
    const pump = async (): Promise<void> => {
      while (sent < total) {
        const list: WireInstruction[] = [];
        for (let i = 0; i < FRAME && sent < total; i++, sent++) list.push(wireInstruction(pool, `RS-${sent}`, sent));
        const s = ++seq;
        await new Promise<void>((resolve) => {
          waiting.set(s, resolve);
          ws.send(encode({ op: 'submit', seq: s, instructions: list }));
        });
      }
    };
    await Promise.all(Array.from({ length: WINDOW }, pump));
    ws.close();
  };
  await Promise.all(institutionIds(CONNECTIONS).map(connection));
  return acked;
}

export interface RestartFigures {
  instructions: number;
  banks: number;
  loadPerS: number;
  afterLoad: MemoryFigures;
  dataFolderMiB: number;
  spawnToListeningMs: number;
  recoveryMs: number;
  afterRestart: MemoryFigures;
}

/** Load `total` instructions, measure, restart on the same data, measure again; the folder is removed at the end. */
export async function runRestartBench(total: number, log: (line: string) => void = () => undefined, banks = BANKS): Promise<RestartFigures> {
  if (!Number.isSafeInteger(total) || total < 1 || total > 100_000_000) throw new Error('give a number of instructions from 1 to 100,000,000');
  const fixture: FixtureSpec = { seed: 1, banks, institutions: INSTITUTIONS, pairs: 'skewed' };
  const dir = mkdtempSync(join(tmpdir(), 'netting-bench-restart-'));
  try {
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify(engineConfig(join(dir, 'data'), 2, 2, fixture)));
    const first = await start(configPath);
    const t0 = performance.now();
    const acked = await load(first.port, total, fixture);
    const seconds = (performance.now() - t0) / 1000;
    const loadPerS = Math.round(acked / seconds);
    log(`loaded ${acked.toLocaleString('en')} instructions at ${banks} banks in ${seconds.toFixed(1)} s (${loadPerS.toLocaleString('en')}/s)`);
    const afterLoad = memory(first.proc.pid!);
    log(`memory after the load: ${showMemory(afterLoad)}`);
    await stop(first.proc);
    const dataFolderMiB = Math.round(folderBytes(join(dir, 'data')) / 2 ** 20);
    log(`data folder: ${dataFolderMiB.toLocaleString('en')} MiB`);
    const second = await start(configPath);
    log(`restart to listening with ${acked.toLocaleString('en')} stored: ${second.spawnToListeningMs} ms (recovery ${second.recoveryMs} ms)`);
    const afterRestart = memory(second.proc.pid!);
    log(`memory after the restart: ${showMemory(afterRestart)}`);
    await stop(second.proc);
    return { instructions: acked, banks, loadPerS, afterLoad, dataFolderMiB, spawnToListeningMs: second.spawnToListeningMs, recoveryMs: second.recoveryMs, afterRestart };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainScript(import.meta.url)) {
  runRestartBench(Number(process.argv[2] ?? 10_000_000), (line) => console.log(line), Number(process.argv[3] ?? BANKS)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
