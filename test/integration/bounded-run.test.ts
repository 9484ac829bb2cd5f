/**
 * A long run stays bounded: two-phase instructions with an hour's timeout,
 * each confirmed by its payer bank as soon as it is forwarded, stream for
 * several seconds. Their query and expiry timers must leave the heap as
 * they become final, and the connections must be gone once the clients
 * close. The engine's own figures come from /metrics and /proc.
 */

import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { StreamClient } from '../helpers/clients.js';
import { startEngine, tempDir, testConfig, TOKENS } from '../helpers/engine-process.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKENS.ops}` } })).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

describe('a long run of two-phase instructions', () => {
  it('keeps the timer heap and the connections bounded', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const engine = await startEngine(t.dir, testConfig(t.dir, { receiptQueryScheduleMs: [600_000, 1_200_000] }));
    try {
      const inst = await StreamClient.connect(engine.base, TOKENS.PI0001, 'msgpack');
      const bank = await StreamClient.connect(engine.base, TOKENS.ICBC, 'msgpack');
      await bank.request({ op: 'subscribe', topics: ['forwards'] });
      const rssStart = rssMiB(engine.proc.pid!);
      let n = 0;
      let confirmed = 0;
      let peakEvents = 0;
      const deadline = Date.now() + 8_000;
      const samples: string[] = [];
      // The bank confirms what it is forwarded, as it comes.
      const confirmer = (async () => {
        while (Date.now() < deadline + 5_000) {
          const forwards = bank.unmatched.splice(0).filter((m) => m.op === 'forward');
          const receipts = forwards.flatMap((f) => (f['instructions'] as { institution: string; id: string }[]).map((i) => ({ institution: i.institution, id: i.id, outcome: 'confirm' })));
          for (let k = 0; k < receipts.length; k += 500) {
            const ack = await bank.request({ op: 'receipt', receipts: receipts.slice(k, k + 500) });
            confirmed += ack.results!.filter((r) => r.status === 'cleared').length;
          }
          if (receipts.length === 0) {
            if (Date.now() >= deadline && confirmed === n) break;
            await new Promise((r) => setTimeout(r, 5));
          }
        }
      })();
      for (let f = 0; f < 2000 && Date.now() < deadline; f++) {
        const items = Array.from({ length: 100 }, () => ({ id: `BR-${n++}`, type: 'gateway', payer: 'ICBC', payee: 'CMB', amount: 100, twoPhase: true, timeoutMs: 3_600_000 }));
        const ack = await inst.submit(items);
        expect(ack.results!.every((r) => r.status === 'pending')).toBe(true);
        if (f % 20 === 0) {
          const events = await metric(engine.base, 'netting_lifecycle_timer_events');
          const pending = await metric(engine.base, 'netting_pending_instructions');
          peakEvents = Math.max(peakEvents, events);
          if (f % 100 === 0) samples.push(`${n} sent, ${pending} pending, ${events} timer events, ${rssMiB(engine.proc.pid!).toFixed(0)} MiB`);
          // Dead events never outnumber the live ones by more than the compaction threshold allows.
          expect(events).toBeLessThanOrEqual(2 * 3 * pending + 2048);
        }
      }
      await confirmer;
      expect(confirmed).toBe(n);
      // n instructions armed 3n events; the heap holds a small fraction of them.
      expect(n).toBeGreaterThan(5_000);
      expect(peakEvents).toBeLessThan(n);
      expect(await metric(engine.base, 'netting_pending_instructions')).toBe(0);
      inst.close();
      bank.close();
      for (let k = 0; k < 100 && (await metric(engine.base, 'netting_ws_connections')) > 0; k++) await new Promise((r) => setTimeout(r, 20));
      expect(await metric(engine.base, 'netting_ws_connections')).toBe(0);
      console.log(`bounded run: ${n} two-phase instructions confirmed; RSS ${rssStart.toFixed(0)} → ${rssMiB(engine.proc.pid!).toFixed(0)} MiB; peak timer events ${peakEvents}; samples: ${samples.join(' | ')}`);
    } finally {
      await engine.stop();
    }
  });
});
