/**
 * The audit after each run. On the engine: conservation (the banks' nets
 * sum to zero), the engine's own recomputation (`GET /v1/audit`) agrees
 * with what it stores, every acknowledged instruction is in the ledger
 * exactly once (its count of cleared instructions equals the distinct
 * acknowledged ids, plus those in flight at the end that the engine did
 * commit), every result was `cleared`, and each bank's net equals the
 * bench's own model of the acknowledged instructions. On the ceiling, only
 * that it stored what it acknowledged.
 */

import { bankCodes, NetTally, OPERATOR_TOKEN, poolEntry, type PoolEntry } from './fixture.js';
import type { Unanswered } from './ws-load-protocol.js';

/** Unanswered instructions asked about one by one; more than this means the run itself failed. */
const UNANSWERED_QUERIES_MAX = 50_000;
const QUERY_CONCURRENCY = 16;
const REQUEST_TIMEOUT_MS = 60_000;
/** Banks named one by one when their nets differ from the model. */
const MISMATCHES_NAMED_MAX = 20;

/** What a load reports that the audit needs. */
export interface LoadTally {
  clearedInstructions: number;
  notCleared: number;
  duplicates: number;
  idMismatches: number;
  unknownAcks?: number;
  errorFrames?: number;
  closedEarly?: number;
  nets: Float64Array;
  unanswered: Unanswered[];
}

export interface EngineAudit {
  ok: boolean;
  /** Σ net over the banks of GET /v1/positions, in cents: must be "0". */
  netSumCents: string;
  conservation: boolean;
  /** Every bank's net equals the bench's model of the acknowledged instructions. */
  positionsMatchModel: boolean;
  /** `ok` of GET /v1/audit: the engine's recomputation matches its stored and live flows. */
  engineAuditOk: boolean;
  engineAuditCleared: number;
  /** Distinct ids acknowledged `cleared`. */
  ackedCleared: number;
  /** Sent but unanswered when the load ended (autocannon cuts its connections; drains can time out). */
  unanswered: number;
  /** Of those, the ones the engine did commit. */
  unansweredCommitted: number;
  /** ackedCleared + unansweredCommitted: what engineAuditCleared must equal. */
  expectedCleared: number;
  everyResultCleared: boolean;
  problems: string[];
}

async function getJson(base: string, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const text = await res.text();
  let body: unknown;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** Ask the engine about each unanswered instruction; count and model the committed ones. */
async function committedOf(base: string, unanswered: readonly Unanswered[], pool: readonly PoolEntry[], tally: NetTally, problems: string[]): Promise<number> {
  let committed = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < unanswered.length) {
      const u = unanswered[next++]!;
      const { status, body } = await getJson(base, `/v1/instructions/${u.institution}/${encodeURIComponent(u.id)}`);
      if (status === 404) continue;
      const e = poolEntry(pool, u.n);
      if (status !== 200 || body?.status !== 'cleared') {
        problems.push(`unanswered ${u.institution}/${u.id}: HTTP ${status} ${JSON.stringify(body).slice(0, 200)}`);
      } else if (body.payer !== e.payer || body.payee !== e.payee || body.amount !== e.amount) {
        problems.push(`unanswered ${u.institution}/${u.id} was stored with other content`);
      } else {
        committed++;
        tally.add(e);
      }
    }
  };
  await Promise.all(Array.from({ length: QUERY_CONCURRENCY }, worker));
  return committed;
}

/** `banks` is the run's number of banks: the engine must list every one. */
export async function auditEngine(base: string, load: LoadTally, pool: readonly PoolEntry[], banks: number): Promise<EngineAudit> {
  const problems: string[] = [];
  const codes = bankCodes(banks);
  const tally = new NetTally(codes);
  tally.addNets(load.nets);

  let unansweredCommitted = 0;
  if (load.unanswered.length > UNANSWERED_QUERIES_MAX) {
    problems.push(`${load.unanswered.length} instructions unanswered at the end: too many to reconcile`);
  } else {
    unansweredCommitted = await committedOf(base, load.unanswered, pool, tally, problems);
  }

  const positions = await getJson(base, '/v1/positions');
  let netSum = 0n;
  let positionsMatchModel = positions.status === 200;
  if (positions.status !== 200) problems.push(`GET /v1/positions: HTTP ${positions.status}`);
  const model = tally.byBank();
  const rows = (positions.body?.banks ?? []) as { bank: string; net: string }[];
  let mismatched = 0;
  for (const row of rows) {
    netSum += BigInt(row.net);
    const expected = BigInt(model.get(row.bank) ?? 0);
    if (BigInt(row.net) !== expected) {
      positionsMatchModel = false;
      // With thousands of banks one fault could list them all: a few are named, the rest counted.
      if (++mismatched <= MISMATCHES_NAMED_MAX) problems.push(`bank ${row.bank}: engine net ${row.net}, model ${expected}`);
    }
  }
  if (mismatched > MISMATCHES_NAMED_MAX) problems.push(`… and ${mismatched - MISMATCHES_NAMED_MAX} more banks whose net differs from the model`);
  if (rows.length !== codes.length) {
    positionsMatchModel = false;
    problems.push(`GET /v1/positions lists ${rows.length} banks, not ${codes.length}`);
  }
  const conservation = positions.status === 200 && netSum === 0n;
  if (!conservation) problems.push(`the banks' nets sum to ${netSum}, not 0`);

  const audit = await getJson(base, '/v1/audit');
  const engineAuditOk = audit.status === 200 && audit.body?.ok === true;
  if (!engineAuditOk) problems.push(`GET /v1/audit: HTTP ${audit.status} ${JSON.stringify(audit.body).slice(0, 500)}`);
  const engineAuditCleared = typeof audit.body?.cleared === 'number' ? (audit.body.cleared as number) : -1;
  const expectedCleared = load.clearedInstructions + unansweredCommitted;
  if (engineAuditCleared !== expectedCleared) {
    problems.push(`the engine holds ${engineAuditCleared} cleared instructions; ${load.clearedInstructions} were acknowledged and ${unansweredCommitted} more committed unanswered`);
  }

  const everyResultCleared =
    load.notCleared === 0 && load.duplicates === 0 && load.idMismatches === 0 && (load.unknownAcks ?? 0) === 0 && (load.errorFrames ?? 0) === 0 && (load.closedEarly ?? 0) === 0;
  if (!everyResultCleared) {
    problems.push(
      `results not all cleared: ${load.notCleared} not cleared, ${load.duplicates} duplicates, ${load.idMismatches} id mismatches, ` +
        `${load.unknownAcks ?? 0} unknown acks, ${load.errorFrames ?? 0} error frames, ${load.closedEarly ?? 0} connections closed early`,
    );
  }

  return {
    ok: problems.length === 0,
    netSumCents: netSum.toString(),
    conservation,
    positionsMatchModel,
    engineAuditOk,
    engineAuditCleared,
    ackedCleared: load.clearedInstructions,
    unanswered: load.unanswered.length,
    unansweredCommitted,
    expectedCleared,
    everyResultCleared,
    problems,
  };
}

export interface CeilingCheck {
  ok: boolean;
  records: number;
  ackedCleared: number;
  unanswered: number;
  problems: string[];
}

/** The ceiling has no audit of its own; it must at least hold every record it acknowledged, and no more than it was sent. */
export async function checkCeiling(base: string, load: LoadTally): Promise<CeilingCheck> {
  const res = await fetch(`${base}/v1/count`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const records = ((await res.json()) as { records: number }).records;
  const problems: string[] = [];
  if (records < load.clearedInstructions || records > load.clearedInstructions + load.unanswered.length) {
    problems.push(`the ceiling holds ${records} records for ${load.clearedInstructions} acknowledged and ${load.unanswered.length} unanswered`);
  }
  if (load.notCleared + load.idMismatches + (load.errorFrames ?? 0) > 0) problems.push('the ceiling answered something other than cleared');
  return { ok: problems.length === 0, records, ackedCleared: load.clearedInstructions, unanswered: load.unanswered.length, problems };
}
