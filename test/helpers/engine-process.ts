/**
 * Starts the real engine (the compiled dist/src/main.js) as a child process
 * on a loopback port with its data in a temporary folder, and stops it
 * politely (SIGTERM) or brutally (SIGKILL).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));

export const BANKS = ['ICBC', 'ABC', 'BOC', 'CCB', 'BOCOM', 'CMB', 'CITIC', 'SPDB'] as const;

export const TOKENS = {
  PI0001: 'test-token-institution-PI0001',
  PI0002: 'test-token-institution-PI0002',
  ICBC: 'test-token-bank-ICBC-xxxxxxxx',
  CMB: 'test-token-bank-CMB-xxxxxxxxx',
  ops: 'test-token-operator-ops-xxxxx',
} as const;

export function testConfig(dataDir: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    banks: BANKS.map((code) => ({ code, name: `${code} test bank` })),
    principals: [
      { token: TOKENS.PI0001, role: 'institution', id: 'PI0001' },
      { token: TOKENS.PI0002, role: 'institution', id: 'PI0002' },
      { token: TOKENS.ICBC, role: 'bank', id: 'ICBC' },
      { token: TOKENS.CMB, role: 'bank', id: 'CMB' },
      { token: TOKENS.ops, role: 'operator', id: 'ops' },
    ],
    shards: 4,
    workers: 2,
    verifyOnStart: true,
    logLevel: 'info',
    ...overrides,
  };
}

export interface RunningEngine {
  port: number;
  base: string;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for the exit code. */
  stop: () => Promise<number | null>;
  /** SIGKILL and wait for the process to be gone. */
  kill9: () => Promise<void>;
}

export function tempDir(prefix = 'netting-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Temporary folders for one test file, all removed by `cleanup` (call it in afterAll). */
export function tempDirs(): { make: () => string; cleanup: () => void } {
  const made: (() => void)[] = [];
  return {
    make: () => {
      const t = tempDir();
      made.push(t.cleanup);
      return t.dir;
    },
    cleanup: () => made.forEach((c) => c()),
  };
}

/**
 * Engines started and not yet exited. A test that fails before stopping its
 * engine would leave it running after the test run; test/helpers/setup.ts
 * kills whatever is left after each test file.
 */
const live = new Set<ChildProcess>();

/** SIGKILL every engine this test file started that is still running; returns how many there were. */
export function killLeftoverEngines(): number {
  const left = [...live];
  for (const proc of left) proc.kill('SIGKILL');
  return left.length;
}

/** Write the config into `dir` and start the engine on it. */
export async function startEngine(dir: string, config: Record<string, unknown>): Promise<RunningEngine> {
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, JSON.stringify(config));
  const proc = spawn(process.execPath, [MAIN, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let out = '';
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      live.delete(proc);
      resolve(code);
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`engine did not start in time:\n${out}`)), 30_000);
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      const m = /"port":(\d+),"msg":"listening"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`engine exited with ${code} before listening:\n${out}`));
    });
  });
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    proc,
    output: () => out,
    stop: async () => {
      proc.kill('SIGTERM');
      return exited;
    },
    kill9: async () => {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Run the engine to completion with a config and collect its exit code and output (for start-up failures). */
export async function runToExit(dir: string, configText: string): Promise<{ code: number | null; output: string }> {
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, configText);
  const proc = spawn(process.execPath, [MAIN, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, output };
}
