/**
 * HTTP routes of settlement batches (清算场次), reconciliation snapshots and
 * digest reconciliation (高频对账). Role checks are per route; banks and
 * institutions see only their own rows.
 */

import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { digestHex, isDigestHex } from '../core/digest.js';
import { isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';
import { centsToWire } from '../core/money.js';
import type { Engine } from '../engine/engine.js';
import { reportCsv, reportWire, type BatchStatus } from '../settlement/settlement-report.js';
import { BatchIdExhausted } from '../settlement/batch-id.js';
import { snapshotFor } from '../snapshots/snapshots.js';
import { DecodeFailure, type Codec } from '../protocol/codec.js';
import { statusLine } from '../protocol/errors.js';
import type { BatchRecord } from '../core/ports.js';
import type { Authenticator, Principal } from './auth.js';
import { authorize, beginExchange, bodyEncoding, param, readBody, reply, replyCode, type Exchange } from './http-io.js';

export interface BatchRoutesContext {
  engine: Engine;
  codec: Codec;
  auth: Authenticator;
}

const BATCH_ID = /^[0-9]{8}-[0-9]{3}$/;
const DECIMAL = /^(0|-?[1-9][0-9]*)$/;

type Found = { record: BatchRecord; status: BatchStatus };

/** A batch by id: the open one (provisional figures) or a closed one. */
function findBatch(engine: Engine, batch: string): Found | undefined {
  if (batch === engine.openBatchId) return { record: engine.openBatchRecord(), status: 'open' };
  const record = engine.batch(batch);
  if (record === undefined) return undefined;
  return { record, status: record.settled ? 'settled' : 'closed' };
}

/**
 * The batch a path names, or undefined once answered NOT_FOUND. A path id
 * that cannot be a batch id names no batch either: the contract's NOT_FOUND
 * is "no such instruction, batch or snapshot", so it is answered as an
 * unknown well-formed one is.
 */
function batchParam(ctx: BatchRoutesContext, ex: Exchange, req: HttpRequest): Found | undefined {
  const batch = pathBatchId(ctx, ex, req);
  if (batch === undefined) return undefined;
  const found = findBatch(ctx.engine, batch);
  if (found === undefined) replyCode(ex, ctx.codec, 'NOT_FOUND', `no batch '${batch}'`);
  return found;
}

/** The path's batch id when it is well formed; otherwise answers NOT_FOUND (see batchParam) and returns undefined. */
function pathBatchId(ctx: BatchRoutesContext, ex: Exchange, req: HttpRequest): string | undefined {
  const batch = param(req, 0);
  if (batch !== undefined && BATCH_ID.test(batch)) return batch;
  replyCode(ex, ctx.codec, 'NOT_FOUND', `no batch '${shown(batch ?? '')}'`);
  return undefined;
}

/** A path part echoed in a message: bounded and printable, whatever the client sent. */
function shown(text: string): string {
  return text.slice(0, 32).replace(/[^\x20-\x7e]/g, '?');
}

function onlyBank(p: Principal): string | undefined {
  return p.role === 'bank' ? p.id : undefined;
}

function closeBatch(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (p === undefined) return;
  if (!ctx.engine.ready) {
    replyCode(ex, ctx.codec, 'NOT_READY');
    return;
  }
  ctx.engine.closeBatch(`operator:${p.id}`).then(
    async (record) => {
      await ctx.engine.recordAction(p.id, 'close-batch', record.batch, `closed: ${record.count} entries, debits ${record.debits}`);
      reply(ex, ctx.codec, 200, reportWire(record, 'closed'));
    },
    async (err: unknown) => {
      // The day's batch ids are used up: refused before anything changed, and the open batch stays open.
      if (err instanceof BatchIdExhausted) {
        await ctx.engine.recordAction(p.id, 'close-batch', ctx.engine.openBatchId, 'BATCH_LIMIT');
        replyCode(ex, ctx.codec, 'BATCH_LIMIT', `${err.message}; batch ${ctx.engine.openBatchId} stays open until a cut-off on the next business day`);
        return;
      }
      ctx.engine.log.error({ err }, 'cut-off failed');
      await ctx.engine.recordAction(p.id, 'close-batch', ctx.engine.openBatchId, 'failed');
      replyCode(ex, ctx.codec, 'INTERNAL', 'the cut-off failed');
    },
  );
}

/** Batches in one page of `GET /v1/batches` when `?limit=` is not given, and at most. */
export const BATCH_PAGE_ITEMS_DEFAULT = 100;
export const BATCH_PAGE_ITEMS_MAX = 10_000;

/**
 * `GET /v1/batches`: a page of batch reports, oldest first. With no cursor,
 * the newest `limit` (the open batch last), as before paging existed. With
 * `?after=<batch>` (empty for the first batch) the `limit` batches after it;
 * with `?before=<batch>` the newest `limit` before it. `next` is the cursor
 * for `?after=` when batches follow the page, `previous` the one for
 * `?before=` when batches precede it; each is null otherwise.
 */
function listBatches(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['bank', 'operator']);
  if (p === undefined) return;
  const limitText = req.getQuery('limit');
  const limit = limitText === undefined ? BATCH_PAGE_ITEMS_DEFAULT : Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > BATCH_PAGE_ITEMS_MAX) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', `limit must be an integer from 1 to ${BATCH_PAGE_ITEMS_MAX}`, 'limit');
    return;
  }
  const after = req.getQuery('after');
  const before = req.getQuery('before');
  if (after !== undefined && before !== undefined) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'give one cursor: after or before', 'before');
    return;
  }
  if (after !== undefined && after !== '' && !BATCH_ID.test(after)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'after must be a batch id such as 20261122-001, or empty for the first batch', 'after');
    return;
  }
  if (before !== undefined && !BATCH_ID.test(before)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'before must be a batch id such as 20261122-001', 'before');
    return;
  }
  const cursor: { after?: string; before?: string } = {};
  if (after !== undefined) cursor.after = after;
  if (before !== undefined) cursor.before = before;
  const page = ctx.engine.batchPage(cursor, limit);
  const openId = ctx.engine.openBatchId;
  const batches = page.records.map((r) => reportWire(r, r.batch === openId ? 'open' : r.settled ? 'settled' : 'closed', onlyBank(p)));
  const first = page.records[0];
  const last = page.records.at(-1);
  reply(ex, ctx.codec, 200, {
    batches,
    next: page.later && last !== undefined ? last.batch : null,
    previous: page.earlier && first !== undefined ? first.batch : null,
  });
}

function getBatch(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['bank', 'operator']);
  if (p === undefined) return;
  const found = batchParam(ctx, ex, req);
  if (found !== undefined) reply(ex, ctx.codec, 200, reportWire(found.record, found.status, onlyBank(p)));
}

function getSettlementCsv(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  // The file itself is CSV; the refusals before it are encoded like every other reply.
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (p === undefined) return;
  const found = batchParam(ctx, ex, req);
  if (found === undefined) return;
  if (found.status === 'open') {
    replyCode(ex, ctx.codec, 'BATCH_OPEN', 'a settlement file exists once the batch is closed');
    return;
  }
  const names = new Map(ctx.engine.config.banks.map((b) => [b.code, b.name]));
  const csv = reportCsv(found.record, names);
  ex.answered = true;
  res.cork(() => {
    res
      .writeStatus(statusLine(200))
      .writeHeader('content-type', 'text/csv; charset=utf-8')
      .writeHeader('content-disposition', `attachment; filename="settlement-${found.record.batch}.csv"`)
      .end(csv);
  });
}

function markSettled(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (p === undefined) return;
  const batch = pathBatchId(ctx, ex, req);
  if (batch === undefined) return;
  ctx.engine.markSettled(batch, p.id).then(
    async (r) => {
      await ctx.engine.recordAction(p.id, 'mark-settled', batch, r === undefined ? 'NOT_FOUND' : r === 'open' ? 'BATCH_OPEN' : 'settled');
      if (r === undefined) replyCode(ex, ctx.codec, 'NOT_FOUND', `no batch '${batch}'`);
      else if (r === 'open') replyCode(ex, ctx.codec, 'BATCH_OPEN', 'close the batch before recording its settlement');
      else reply(ex, ctx.codec, 200, reportWire(r, 'settled'));
    },
    (err: unknown) => {
      ctx.engine.log.error({ err }, 'marking a batch settled failed');
      replyCode(ex, ctx.codec, 'INTERNAL');
    },
  );
}

function getSnapshot(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest, latest: boolean): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'bank', 'operator']);
  if (p === undefined) return;
  if (latest) {
    const s = ctx.engine.latestSnapshot();
    if (s !== undefined) {
      reply(ex, ctx.codec, 200, snapshotFor(s, p.role, p.id));
      return;
    }
    // Nothing taken since start yet: take one now rather than answer with nothing.
    ctx.engine.takeSnapshot().then(
      (t) => reply(ex, ctx.codec, 200, snapshotFor(t, p.role, p.id)),
      () => replyCode(ex, ctx.codec, 'INTERNAL', 'no snapshot could be taken'),
    );
    return;
  }
  const seqText = param(req, 0) ?? '';
  const seq = Number(seqText);
  if (!/^[1-9][0-9]{0,15}$/.test(seqText) || !Number.isSafeInteger(seq)) {
    // Not a seq, so no snapshot: NOT_FOUND, as for one never taken.
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no snapshot '${shown(seqText)}'`);
    return;
  }
  const s = ctx.engine.snapshot(seq);
  if (s === undefined) replyCode(ex, ctx.codec, 'NOT_FOUND', `no snapshot ${seq} (never taken, or past the retention)`);
  else reply(ex, ctx.codec, 200, snapshotFor(s, p.role, p.id));
}

/** An institution's platform figures for a batch: live for the open batch, recorded for a closed one. */
function platformTotals(engine: Engine, batch: string, institution: string): { count: number; amount: string; digest: string } | undefined {
  const live = engine.liveTotals(batch, institution);
  if (live !== undefined) return { count: live.count, amount: centsToWire(live.amount), digest: digestHex(live.digest) };
  const record = engine.batch(batch);
  if (record === undefined) return undefined;
  const row = record.institutions.find((i) => i.institution === institution);
  return row === undefined ? { count: 0, amount: '0', digest: digestHex(0n) } : { count: row.count, amount: row.amount, digest: row.digest };
}

function reconcile(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const encoding = bodyEncoding(req);
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['institution']);
  if (p === undefined) return;
  readBody(ex, ctx.codec, req, 64 * 1024, (bytes) => {
    let body: unknown;
    try {
      body = ctx.codec.decode(bytes, encoding);
    } catch (err) {
      replyCode(ex, ctx.codec, 'INVALID_MESSAGE', err instanceof DecodeFailure ? err.message : 'the body does not decode');
      return;
    }
    if (!isPlainObject(body)) {
      replyCode(ex, ctx.codec, 'INVALID_MESSAGE', 'the body must be { batch, count, amount, digest }');
      return;
    }
    for (const key of Object.keys(body)) {
      if (!['batch', 'count', 'amount', 'digest'].includes(key)) {
        replyCode(ex, ctx.codec, 'INVALID_FIELD', `unknown field '${key.slice(0, 40)}'`, key.slice(0, 40));
        return;
      }
    }
    const { batch, count, amount, digest } = body as Record<string, unknown>;
    if (typeof batch !== 'string' || !BATCH_ID.test(batch)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'batch must look like 20261122-001', 'batch');
      return;
    }
    if (typeof count !== 'number' || !Number.isSafeInteger(count)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'count must be an integer', 'count');
      return;
    }
    const amountText = typeof amount === 'number' && Number.isSafeInteger(amount) ? String(amount) : amount;
    if (typeof amountText !== 'string' || !DECIMAL.test(amountText)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'amount must be decimal integer cents (a string)', 'amount');
      return;
    }
    const digestText = typeof digest === 'string' ? digest.toLowerCase() : digest;
    if (!isDigestHex(digestText)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'digest must be 16 hex digits', 'digest');
      return;
    }
    const platform = platformTotals(ctx.engine, batch, p.id);
    if (platform === undefined) {
      replyCode(ex, ctx.codec, 'NOT_FOUND', `no batch '${batch}'`);
      return;
    }
    const match = platform.count === count && platform.amount === amountText && platform.digest === digestText;
    reply(ex, ctx.codec, 200, { batch, institution: p.id, match, platform });
  });
}

/** The institution whose buckets are asked for: its own, or for an operator `?institution=`. An institution that names another is refused. */
function bucketInstitution(ctx: BatchRoutesContext, ex: Exchange, req: HttpRequest, p: Principal): string | undefined {
  const inst = req.getQuery('institution');
  if (p.role === 'institution') {
    if (inst !== undefined && inst !== '' && inst !== p.id) {
      replyCode(ex, ctx.codec, 'FORBIDDEN', 'an institution reads only its own buckets');
      return undefined;
    }
    return p.id;
  }
  if (inst === undefined || !PARTY_CODE_PATTERN.test(inst)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'an operator names the institution: ?institution=PI0001', 'institution');
    return undefined;
  }
  return inst;
}

function knownBatch(ctx: BatchRoutesContext, batch: string): boolean {
  return ctx.engine.hasBatch(batch);
}

function getBuckets(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'operator']);
  if (p === undefined) return;
  const batch = param(req, 0);
  const institution = bucketInstitution(ctx, ex, req, p);
  if (institution === undefined) return;
  if (batch === undefined || !BATCH_ID.test(batch) || !knownBatch(ctx, batch)) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', 'no such batch');
    return;
  }
  const buckets = ctx.engine.buckets(batch, institution).map((b) => ({ n: b.n, count: b.count, amount: centsToWire(b.amount), digest: digestHex(b.digest) }));
  reply(ex, ctx.codec, 200, { batch, institution, buckets });
}

function getBucket(ctx: BatchRoutesContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const p = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'operator']);
  if (p === undefined) return;
  const batch = param(req, 0);
  const nText = param(req, 1) ?? '';
  const institution = bucketInstitution(ctx, ex, req, p);
  if (institution === undefined) return;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(nText) || Number(nText) > 255) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'a bucket is 0..255', 'n');
    return;
  }
  if (batch === undefined || !BATCH_ID.test(batch) || !knownBatch(ctx, batch)) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', 'no such batch');
    return;
  }
  const n = Number(nText);
  ctx.engine.bucketEntries(batch, institution, n).then(
    (entries) => {
      const instructions = entries.map((e) => ({ id: e.id, payer: e.record.p, payee: e.record.q, amount: e.record.a, status: e.sign > 0 ? 'cleared' : 'reversed' }));
      reply(ex, ctx.codec, 200, { batch, institution, n, instructions });
    },
    (err: unknown) => {
      ctx.engine.log.error({ err, batch, institution, n }, 'bucket drill-down failed');
      replyCode(ex, ctx.codec, 'INTERNAL', 'the bucket could not be read');
    },
  );
}

export function registerBatchRoutes(app: TemplatedApp, ctx: BatchRoutesContext, guard: (h: (res: HttpResponse, req: HttpRequest) => void) => (res: HttpResponse, req: HttpRequest) => void): void {
  app.post('/v1/batches/close', guard((res, req) => closeBatch(ctx, res, req)));
  app.get('/v1/batches', guard((res, req) => listBatches(ctx, res, req)));
  app.get('/v1/batches/:batch', guard((res, req) => getBatch(ctx, res, req)));
  app.get('/v1/batches/:batch/settlement.csv', guard((res, req) => getSettlementCsv(ctx, res, req)));
  app.post('/v1/batches/:batch/settled', guard((res, req) => markSettled(ctx, res, req)));
  app.get('/v1/snapshots/latest', guard((res, req) => getSnapshot(ctx, res, req, true)));
  app.get('/v1/snapshots/:seq', guard((res, req) => getSnapshot(ctx, res, req, false)));
  app.post('/v1/reconciliation', guard((res, req) => reconcile(ctx, res, req)));
  app.get('/v1/reconciliation/:batch/buckets', guard((res, req) => getBuckets(ctx, res, req)));
  app.get('/v1/reconciliation/:batch/buckets/:n', guard((res, req) => getBucket(ctx, res, req)));
}
