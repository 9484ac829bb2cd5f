/**
 * Exclusive ownership of a data folder: one engine process at a time.
 *
 * lmdb-js lets several processes open one environment, so nothing else
 * stops a second engine from writing the same shards. The engine takes an
 * exclusive lock held by the kernel on `<dataDir>/engine.lock` before it
 * opens LMDB, and keeps the file open until it stops. The kernel drops the
 * lock when the process dies however it dies, `kill -9` included, so there
 * is never a stale lock to judge by age or remove by hand. The file's
 * content is only information: the holder writes its pid, host, command
 * line and start time there once it has the lock, and an engine that is
 * refused reads it to name the holder.
 *
 * Why fs-native-extensions. Node 20 has no flock. Options weighed:
 * - fs-native-extensions (chosen): on Linux an open file description lock
 *   (fcntl F_OFD_SETLK), which behaves like flock(2): it belongs to the
 *   open file, not to the process, so closing some other descriptor of the
 *   same file does not drop it, and a second open in the same process
 *   conflicts too; flock on macOS, LockFileEx on Windows. N-API binaries for
 *   each platform ship inside the package: no compiler and no install
 *   script at `npm ci`, and no rebuild when Node changes. Kept by the
 *   Holepunch team, with releases through 2026; their fd-lock builds on it.
 * - fs-ext: real flock(2), and the kernel shows the holder's pid in
 *   /proc/locks; but it is a nan addon compiled by node-gyp on every
 *   install (an install script npm 11 already flags under allowScripts),
 *   rebuilt for each Node version; its latest release is from 2024.
 * - os-lock: POSIX fcntl record locks, which any close() of any descriptor
 *   of the file in the process releases; compiled at install too.
 * - A Linux abstract-namespace unix socket named after the folder's real
 *   path: no dependency, and the holder could answer with its pid; but the
 *   name lives in a network namespace and a path, not in the file system:
 *   two containers sharing the volume, or one folder mounted at two paths,
 *   would each get "the" lock. A lock on a file in the folder follows the
 *   inode wherever it is mounted.
 * What it costs: an OFD lock does not carry the holder's pid (F_OFD_GETLK
 * and /proc/locks report -1), hence the record in the file; and like any
 * advisory lock it binds only processes that ask for it, so a tool that
 * writes LMDB directly while the engine runs is not stopped by it. The lock
 * is on the file's inode: deleting engine.lock while an engine runs lets a
 * second one create a new file and lock that, so the file is never removed,
 * not even at stop.
 *
 * Not for: locking anything inside the folder, or between threads.
 */

import { closeSync, constants, ftruncateSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLock } from 'fs-native-extensions';

export const DATA_LOCK_FILE = 'engine.lock';

/** A refused engine reads the holder's record this often while the holder may still be writing it. */
const HOLDER_READ_ATTEMPTS = 20;
const HOLDER_READ_INTERVAL_MS = 25;
/** The holder's record is read up to this size; the engine's own is far shorter. */
const HOLDER_RECORD_BYTES_MAX = 16 * 1024;
/** Command lines are cut here in the refusal message. */
const COMMAND_CHARS_MAX = 400;

/** What the process that holds the lock wrote about itself. */
export interface LockHolder {
  pid: number;
  host: string;
  command: string;
  since: string;
}

/** Another process holds the data folder: the engine must not start. */
export class DataLockedError extends Error {
  override name = 'DataLockedError';

  constructor(
    readonly dataDir: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(
      holder === undefined
        ? `data folder ${dataDir} is locked by another process, which did not record who it is (${join(dataDir, DATA_LOCK_FILE)}); stop it first`
        : `data folder ${dataDir} is in use by another engine: pid ${holder.pid} on ${holder.host}, running since ${holder.since}: ${holder.command}; stop it first, or give this engine another dataDir`,
    );
  }
}

export class DataLock {
  private constructor(
    private fd: number | undefined,
    readonly path: string,
  ) {}

  /**
   * Take the lock on `dataDir` (which must exist) or throw DataLockedError
   * naming the holder. Never waits for the lock: a running engine does not
   * give it up on its own.
   */
  static async acquire(dataDir: string): Promise<DataLock> {
    const path = join(dataDir, DATA_LOCK_FILE);
    // Not O_TRUNC: the holder's record must survive a refused open. Node adds O_CLOEXEC.
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    let taken: boolean;
    try {
      taken = tryLock(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    if (!taken) {
      // Closing this descriptor leaves the holder's lock alone: it belongs to the holder's open file.
      closeSync(fd);
      throw new DataLockedError(dataDir, await readHolder(path));
    }
    const record: LockHolder = { pid: process.pid, host: hostname(), command: ownCommand(), since: new Date().toISOString() };
    ftruncateSync(fd, 0);
    writeSync(fd, `${JSON.stringify(record)}\n`, 0);
    return new DataLock(fd, path);
  }

  /** Give the folder up: the record is emptied while the lock is still held, then the file is closed, which drops the lock. */
  release(): void {
    const fd = this.fd;
    if (fd === undefined) return;
    this.fd = undefined;
    try {
      ftruncateSync(fd, 0);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * The holder's record. The holder writes it right after taking the lock, so
 * a refusal in between finds the file empty: read again for a bounded time.
 * The record is trusted over /proc/<pid>: the holder may be in another pid
 * namespace (a container sharing the volume), where its pid names another
 * process here.
 */
async function readHolder(path: string): Promise<LockHolder | undefined> {
  for (let attempt = 0; attempt < HOLDER_READ_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(HOLDER_READ_INTERVAL_MS);
    const holder = parseHolder(readRecord(path));
    if (holder === undefined) continue;
    return { ...holder, command: clip(holder.command) };
  }
  return undefined;
}

/** The file's first HOLDER_RECORD_BYTES_MAX bytes: a longer record does not parse, and is not read whole. */
function readRecord(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY);
  } catch {
    return '';
  }
  try {
    const buffer = Buffer.alloc(HOLDER_RECORD_BYTES_MAX);
    const bytes = readSync(fd, buffer, 0, HOLDER_RECORD_BYTES_MAX, 0);
    return buffer.toString('utf8', 0, bytes);
  } catch {
    return '';
  } finally {
    closeSync(fd);
  }
}

function parseHolder(text: string): LockHolder | undefined {
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined; // Caught between the holder's truncate and write.
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { pid, host, command, since } = value as Record<string, unknown>;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return {
    pid,
    host: typeof host === 'string' ? host : 'an unknown host',
    command: typeof command === 'string' ? command : '(command line not recorded)',
    since: typeof since === 'string' ? since : 'an unknown time',
  };
}

/** This process's command line as the kernel has it (Linux), else as Node was given it. */
function ownCommand(): string {
  try {
    const command = readFileSync('/proc/self/cmdline', 'utf8').split('\0').filter((a) => a !== '').join(' ');
    if (command !== '') return command;
  } catch {
    // Not Linux: fall through.
  }
  return [process.execPath, ...process.execArgv, ...process.argv.slice(1)].join(' ');
}

function clip(command: string): string {
  return command.length <= COMMAND_CHARS_MAX ? command : `${command.slice(0, COMMAND_CHARS_MAX)}…`;
}
