/**
 * A server under load, as a child process: the engine (dist/src/main.js)
 * or the bare ceiling (dist/bench/bare-server.js). Both take `--config
 * file`, listen on a port the system picks, and announce it in a JSON log
 * line `"port":N,"msg":"listening"`; both stop in order on SIGTERM.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** How long a server may take to listen; the engine recovers its shards first. */
const START_MS_MAX = 30_000;
/** How long SIGTERM may take before SIGKILL; the engine's own limit is 10 s. */
const STOP_MS_MAX = 15_000;
/** Output kept for error messages; the rest is dropped so a chatty server cannot grow this process. */
const OUTPUT_TAIL_CHARS = 64 * 1024;

export interface TargetProcess {
  name: string;
  pid: number;
  port: number;
  base: string;
  dataDir: string;
  /** Resident set size now, from /proc; undefined where there is no /proc. */
  rssBytes(): number | undefined;
  /** CPU time the process has used so far, user and system, all threads; undefined where there is no /proc. */
  cpuSeconds(): number | undefined;
  /** CPU time of the main thread alone (its thread id is the process id): the engine's event loop. */
  mainThreadCpuSeconds(): number | undefined;
  output(): string;
  /** SIGTERM, then SIGKILL past STOP_MS_MAX; resolves with the exit code (null when killed). */
  stop(): Promise<number | null>;
  /** Remove the temporary folder (data and config). */
  cleanup(): void;
}

/** A memory figure of a process, e.g. VmRSS or RssAnon, read from /proc/<pid>/status (kB in the file). */
export function readStatusBytes(pid: number, key: string): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/**
 * Resident bytes of a process's mappings of files whose path ends with
 * `suffix` (for LMDB, `data.mdb`), from /proc/<pid>/smaps: RssFile also
 * counts the Node binary's and the libraries' pages.
 */
export function readMappedFileBytes(pid: number, suffix: string): number | undefined {
  try {
    const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    let bytes = 0;
    let inFile = false;
    for (const line of smaps.split('\n')) {
      if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inFile = line.trimEnd().endsWith(suffix);
      else if (inFile && line.startsWith('Rss:')) bytes += Number(/(\d+)/.exec(line)![1]) * 1024;
    }
    return bytes;
  } catch {
    return undefined;
  }
}

/** Resident set size of a process. */
export function readRssBytes(pid: number): number | undefined {
  return readStatusBytes(pid, 'VmRSS');
}

/** Clock ticks per second of /proc/<pid>/stat times: USER_HZ, 100 on Linux. */
const CLOCK_TICKS_PER_S = 100;

/** utime + stime (fields 14 and 15, after the command name) of a /proc stat file. */
function statCpuSeconds(path: string): number | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, all threads, from /proc/<pid>/stat. */
export function readCpuSeconds(pid: number): number | undefined {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/** utime + stime of one thread of a process, from /proc/<pid>/task/<tid>/stat; the main thread's tid is the pid. */
export function readThreadCpuSeconds(pid: number, tid: number = pid): number | undefined {
  return statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
}

/** Disk space the files under a folder take (allocated blocks, so a sparse or pre-sized file counts for what it holds). */
export function folderBytes(dir: string): number {
  let bytes = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += statSync(join(entry.parentPath, entry.name)).blocks * 512;
  }
  return bytes;
}

/**
 * Start `script --config <tmp>/config.json` with the config that
 * `makeConfig(dataDir)` returns, `dataDir` being a fresh folder inside the
 * temporary one.
 */
export async function startTarget(name: string, script: string, makeConfig: (dataDir: string) => Record<string, unknown>): Promise<TargetProcess> {
  const dir = mkdtempSync(join(tmpdir(), `netting-bench-${name}-`));
  const dataDir = join(dir, 'data');
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, JSON.stringify(makeConfig(dataDir), null, 2));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });

  // BENCH_NODE_ARGS passes flags to the servers under test only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile them.
  const nodeArgs = (process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '');
  const proc: ChildProcess = spawn(process.execPath, [...nodeArgs, script, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (chunk: Buffer): void => {
    out += chunk.toString();
    if (out.length > OUTPUT_TAIL_CHARS * 2) out = out.slice(-OUTPUT_TAIL_CHARS);
  };
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      exitCode = code;
      resolve(code);
    }),
  );

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      let seen = '';
      let announced = false;
      const timer = setTimeout(() => reject(new Error(`${name} did not listen within ${START_MS_MAX} ms:\n${out}`)), START_MS_MAX);
      proc.stdout!.on('data', (chunk: Buffer) => {
        keep(chunk);
        if (announced) return;
        // Only the start-up lines are searched, which are few; afterwards output is merely kept.
        seen += chunk.toString();
        const m = /"port":(\d+),"msg":"listening"/.exec(seen);
        if (m !== null) {
          announced = true;
          seen = '';
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      proc.stderr!.on('data', keep);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited with ${code} before listening:\n${out}`));
      });
    });
  } catch (err) {
    proc.kill('SIGKILL');
    cleanup();
    throw err;
  }

  const pid = proc.pid!;
  return {
    name,
    pid,
    port,
    base: `http://127.0.0.1:${port}`,
    dataDir,
    rssBytes: () => readRssBytes(pid),
    cpuSeconds: () => readCpuSeconds(pid),
    mainThreadCpuSeconds: () => readThreadCpuSeconds(pid),
    output: () => out,
    stop: async () => {
      if (exitCode !== undefined) return exitCode;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), STOP_MS_MAX);
      const code = await exited;
      clearTimeout(killer);
      return code;
    },
    cleanup,
  };
}
