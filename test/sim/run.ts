/**
 * Run the simulator from the command line: one seed to replay a failure
 * (`npm run sim -- --seed 1234`), or many (`npm run sim:soak -- --seeds 500`).
 * A failure prints its seed and the command that replays it; many seeds
 * end with the totals of the faults and of the business flows exercised.
 */

import { DEFAULT_SIM, simulate, SimFailure } from './simulator.js';

function flag(name: string): number | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} needs a whole number`);
  return v;
}

// A law found broken inside one of the core's callbacks is thrown there as well, to stop that work; the
// run reports it from its own loop, so such a rejection is not the end of the process (nor of a soak).
process.on('unhandledRejection', (err) => {
  if (!(err instanceof SimFailure)) throw err;
});

const seed = flag('seed');
const seeds = flag('seeds') ?? 1;
const first = flag('from') ?? seed ?? 1;
const steps = flag('steps') ?? DEFAULT_SIM.steps;
let failures = 0;
const started = Date.now();
let totals = { submitted: 0, restarts: 0, cutoffs: 0, workerDeaths: 0, reportsLost: 0, commitFails: 0, storeWriteFailures: 0, tasks: 0 };
const flows: Record<string, number> = {};
for (let s = first; s < first + seeds; s++) {
  try {
    const r = await simulate({ ...DEFAULT_SIM, seed: s, steps });
    totals = {
      submitted: totals.submitted + r.submitted,
      restarts: totals.restarts + r.restarts,
      cutoffs: totals.cutoffs + r.cutoffs,
      workerDeaths: totals.workerDeaths + r.faults.workerDeaths,
      reportsLost: totals.reportsLost + r.faults.reportsLost,
      commitFails: totals.commitFails + r.faults.commitFails,
      storeWriteFailures: totals.storeWriteFailures + r.faults.storeWriteFailures,
      tasks: totals.tasks + r.tasks,
    };
    for (const [k, n] of Object.entries(r.flows)) flows[k] = (flows[k] ?? 0) + n;
    if (seeds === 1) console.log(JSON.stringify(r, null, 2));
  } catch (err) {
    failures++;
    console.error(err instanceof SimFailure ? err.message : err);
    console.error(`replay: npm run sim -- --seed ${s} --steps ${steps}`);
  }
}
if (seeds > 1) console.log(JSON.stringify(Object.fromEntries(Object.entries(flows).sort(([a], [b]) => (a < b ? -1 : 1))), null, 2));
console.log(`${seeds - failures} passed, ${failures} failed: seeds ${first}..${first + seeds - 1}, ${steps} steps each, ${((Date.now() - started) / 1000).toFixed(1)} s; ${JSON.stringify(totals)}`);
process.exitCode = failures === 0 ? 0 : 1;
