import { describe, expect, it } from 'vitest';
import { LiveView } from '../../src/view/live-view.js';
import { DebitCaps } from '../../src/router/debit-caps.js';

const BANKS = [{ code: 'ICBC', debitCapCents: 1000 }, { code: 'CMB' }, { code: 'ABC' }];

function setup(): { view: LiveView; caps: DebitCaps } {
  const view = new LiveView(
    BANKS.map((b) => b.code),
    '20261122-001',
  );
  return { view, caps: new DebitCaps(BANKS, view) };
}

describe('DebitCaps', () => {
  it('reserves up to the cap and not a cent more; uncapped banks are not tracked', () => {
    const { caps } = setup();
    expect(caps.reserve('ICBC', 600, false, '20261122-001')).toBe(true);
    expect(caps.reserve('ICBC', 401, false, '20261122-001')).toBe(false);
    expect(caps.reserve('ICBC', 400, false, '20261122-001')).toBe(true);
    expect(caps.exposure('ICBC')).toBe(1000n);
    expect(caps.reserve('CMB', 1e12, false, '20261122-001')).toBe(true);
    expect(caps.exposure('CMB')).toBe(0n);
  });

  it('counts committed debits and credits of the open batch and pending reservations', () => {
    const { view, caps } = setup();
    // ICBC paid 700 to CMB and received 300 from ABC, committed.
    view.apply({ batch: '20261122-001', flows: [{ a: 'CMB', b: 'ICBC', aToB: 0n, bToA: 700n, countAToB: 0, countBToA: 1 }], institutions: [] }, 0);
    view.apply({ batch: '20261122-001', flows: [{ a: 'ABC', b: 'ICBC', aToB: 300n, bToA: 0n, countAToB: 1, countBToA: 0 }], institutions: [] }, 1);
    view.addPending(0, 'ICBC', 200n);
    expect(caps.exposure('ICBC')).toBe(700n - 300n + 200n);
    expect(caps.reserve('ICBC', 401, true, '20261122-001')).toBe(false);
    expect(caps.reserve('ICBC', 400, true, '20261122-001')).toBe(true);
    // The two-phase reservation becomes pending at its commit: released from in flight, added as pending.
    caps.release('ICBC', 400, true, '20261122-001');
    view.addPending(0, 'ICBC', 400n);
    expect(caps.exposure('ICBC')).toBe(1000n);
  });

  it('keeps reservations per batch: during a cut-off the next batch starts from nothing committed', () => {
    const { view, caps } = setup();
    view.apply({ batch: '20261122-001', flows: [{ a: 'CMB', b: 'ICBC', aToB: 0n, bToA: 900n, countAToB: 0, countBToA: 1 }], institutions: [] }, 0);
    expect(caps.reserve('ICBC', 100, false, '20261122-001')).toBe(true);
    // The router routes into the next batch while the view still shows the closing one.
    expect(caps.exposure('ICBC', '20261122-002')).toBe(0n);
    expect(caps.reserve('ICBC', 1000, false, '20261122-002')).toBe(true);
    expect(caps.reserve('ICBC', 1, false, '20261122-002')).toBe(false);
    // A pending reservation spans batches: it counts in the next batch too.
    caps.release('ICBC', 1000, false, '20261122-002');
    expect(caps.reserve('ICBC', 600, true, '20261122-001')).toBe(false);
    expect(caps.reserve('ICBC', 600, true, '20261122-002')).toBe(true);
    expect(caps.exposure('ICBC', '20261122-002')).toBe(600n);
  });

  it("lets credits make room for pending debits as for single-phase ones: paid − received + pendingDebit + amount (PROTOCOL.md)", () => {
    const { view, caps } = setup();
    // ICBC received 800 in the open batch: its exposure is -800.
    view.apply({ batch: '20261122-001', flows: [{ a: 'CMB', b: 'ICBC', aToB: 800n, bToA: 0n, countAToB: 1, countBToA: 0 }], institutions: [] }, 0);
    expect(caps.exposure('ICBC')).toBe(-800n);
    // A single-phase debit may use those credits...
    expect(caps.reserve('ICBC', 1500, false, '20261122-001')).toBe(true);
    caps.release('ICBC', 1500, false, '20261122-001');
    // ...and so may a pending one, beyond the cap on its own: -800 + 1500 = 700.
    expect(caps.reserve('ICBC', 1500, true, '20261122-001')).toBe(true);
    expect(caps.exposure('ICBC')).toBe(700n);
    expect(caps.reserve('ICBC', 301, true, '20261122-001')).toBe(false);
    expect(caps.reserve('ICBC', 301, false, '20261122-001')).toBe(false);
    expect(caps.reserve('ICBC', 300, true, '20261122-001')).toBe(true);
    // In the next batch the 1,800 pending are carried with no credits: 800 over the cap, so nothing more is admitted.
    expect(caps.exposure('ICBC', '20261122-002')).toBe(1800n);
    expect(caps.reserve('ICBC', 1, false, '20261122-002')).toBe(false);
    expect(caps.reserve('ICBC', 1, true, '20261122-002')).toBe(false);
  });
});
