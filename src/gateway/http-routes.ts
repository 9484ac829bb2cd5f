/**
 * The HTTP routes of PROTOCOL.md (and the engine's additions), each with
 * its role check. Handlers answer synchronously where they can; the
 * submission route answers once the shards have committed.
 */

import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { isPlainObject } from '../core/instruction.js';
import { statusLine, type Failure } from '../protocol/errors.js';
import { bankRowWire, counterpartyWire, instructionView, totalsWire, type InstructionResult } from '../protocol/messages.js';
import { authorize, beginExchange, beginScopedRead, checkIds, deposed, notServing, param, postBankReceipts, reply, replyCode, replyFailure, replyItems, replyStatusOnly, withBody, type Exchange, type HttpContext } from './http-io.js';
import { ROLES } from '../config/config.js';
import { submissionItems } from './intake.js';
import { registerBatchRoutes } from './batch-routes.js';
import { registerMandateRoutes } from './mandate-routes.js';

function postInstructions(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const started = performance.now();
  withBody(ctx, res, req, ['institution'], (ex, principal, body) => {
    const parsed = submissionItems(body, ctx.engine.config.limits.batchItemsMax);
    if ('code' in parsed) {
      replyFailure(ex, ctx.codec, parsed as Failure);
      return;
    }
    ctx.engine.submit(principal.id, parsed.items, (results: InstructionResult[]) => {
      replyItems(ctx, ex, parsed.single, results);
      ctx.engine.metrics.observeAck('http', started);
    });
  });
}

function getInstruction(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const read = beginScopedRead(ctx, res, req, 'instructions');
  if (read === undefined) return;
  const { ex, principal, institution, id } = read;
  const found = ctx.engine.find(institution, id);
  if (found === undefined) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no instruction '${id}' of institution '${institution}'`);
    return;
  }
  // A bank reads only the instructions it pays or receives: any other is outside its role.
  if (principal.role === 'bank' && found.record.p !== principal.id && found.record.q !== principal.id) {
    replyCode(ex, ctx.codec, 'FORBIDDEN', `bank '${principal.id}' neither pays nor receives this instruction`);
    return;
  }
  reply(ex, ctx.codec, 200, instructionView(institution, id, found.record));
}

function getPositions(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['bank', 'operator']);
  if (principal === undefined) return;
  const o = ctx.engine.positions();
  // A bank sees its own row; the batch's totals are the route's shape for every reader.
  const rows = principal.role === 'operator' ? o.banks : o.banks.filter((b) => b.bank === principal.id);
  reply(ex, ctx.codec, 200, { batch: o.batch, seq: o.seq, banks: rows.map((b) => bankRowWire(b, ctx.engine.pendingDebit(b.bank))), totals: totalsWire(o.totals) });
}

function getBankPosition(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['bank', 'operator']);
  if (principal === undefined) return;
  const bank = param(req, 0) ?? '';
  if (principal.role === 'bank' && principal.id !== bank) {
    replyCode(ex, ctx.codec, 'FORBIDDEN', 'a bank may read only its own position');
    return;
  }
  if (!ctx.engine.config.banks.some((b) => b.code === bank)) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', `bank '${bank.slice(0, 32)}' is not a participant`);
    return;
  }
  const d = ctx.engine.bankDetail(bank);
  reply(ex, ctx.codec, 200, {
    batch: d.batch,
    seq: d.seq,
    ...bankRowWire(d.position, ctx.engine.pendingDebit(bank)),
    counterparties: d.counterparties.map(counterpartyWire),
  });
}

function postReceipts(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  postBankReceipts(ctx, res, req, (bank, items, onDone) => ctx.engine.receipts(bank, items, onDone));
}

/** Record an operator's action, then answer it with the instruction as the query route shows it. */
function answerAction(
  ctx: HttpContext,
  ex: Exchange,
  operator: string,
  action: 'resolve' | 'reverse',
  institution: string,
  id: string,
  outcome: Promise<Failure | undefined>,
): void {
  outcome.then(
    async (f) => {
      const found = f === undefined ? ctx.engine.find(institution, id) : undefined;
      await ctx.engine.recordAction(operator, action, `${institution}/${id}`, f?.code ?? found?.record.s ?? 'NOT_FOUND');
      if (f !== undefined) {
        replyFailure(ex, ctx.codec, f);
        return;
      }
      if (found === undefined) replyCode(ex, ctx.codec, 'NOT_FOUND');
      else reply(ex, ctx.codec, 200, instructionView(institution, id, found.record));
    },
    (err: unknown) => {
      ctx.engine.log.error({ err }, 'operator action failed');
      replyCode(ex, ctx.codec, 'INTERNAL');
    },
  );
}

function postResolve(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  // Path parameters live only as long as the synchronous part of the handler.
  const institution = param(req, 0);
  const id = param(req, 1);
  withBody(ctx, res, req, ['operator'], (ex, principal, body) => {
    const ids = checkIds(ctx, ex, institution, id);
    if (ids === undefined) return;
    if (!isPlainObject(body) || Object.keys(body).some((k) => k !== 'outcome')) {
      replyCode(ex, ctx.codec, 'INVALID_MESSAGE', 'the body is { "outcome": "confirm" | "decline" }');
      return;
    }
    const outcome = body['outcome'];
    if (outcome !== 'confirm' && outcome !== 'decline') {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'outcome must be confirm or decline', 'outcome');
      return;
    }
    answerAction(ctx, ex, principal.id, 'resolve', ids[0], ids[1], ctx.engine.resolve(ids[0], ids[1], outcome, principal.id));
  });
}

function postReverse(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const institution = param(req, 0);
  const id = param(req, 1);
  withBody(ctx, res, req, ['operator'], (ex, principal) => {
    const ids = checkIds(ctx, ex, institution, id);
    if (ids === undefined) return;
    answerAction(ctx, ex, principal.id, 'reverse', ids[0], ids[1], ctx.engine.reverse(ids[0], ids[1], principal.id));
  }, {});
}

/**
 * The payment submission (支付提交) of an authenticated payment: the
 * institution relays the payer's verification. Its shape is checked here;
 * the verification itself is the core's to judge.
 */
function postSubmission(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const institution = param(req, 0);
  const id = param(req, 1);
  withBody(ctx, res, req, ['institution'], (ex, principal, body) => {
    const ids = checkIds(ctx, ex, institution, id);
    if (ids === undefined) return;
    if (principal.id !== ids[0]) {
      replyCode(ex, ctx.codec, 'FORBIDDEN', 'an institution submits only for its own instructions');
      return;
    }
    if (!isPlainObject(body)) {
      replyCode(ex, ctx.codec, 'INVALID_MESSAGE', 'the body is { "verification": "…" }');
      return;
    }
    const unknown = Object.keys(body).find((k) => k !== 'verification');
    if (unknown !== undefined) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', `unknown field '${unknown.slice(0, 40)}'`, unknown.slice(0, 40));
      return;
    }
    ctx.engine.submitVerification(ids[0], ids[1], body['verification'], (result) => replyItems(ctx, ex, true, [result]));
  });
}

/** Entries in one page of the audit trail when `?limit=` is not given, and at most. */
const ACTION_PAGE_ITEMS_DEFAULT = 100;
const ACTION_PAGE_ITEMS_MAX = 10_000;

/**
 * `GET /v1/operator-actions`: the newest `limit` entries of the audit trail,
 * oldest first, or with `?before=<seq>` the newest `limit` below that seq.
 * `previous` is the cursor for `?before=` when older entries exist, else null.
 */
function getOperatorActions(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (principal === undefined) return;
  const limitText = req.getQuery('limit');
  const limit = limitText === undefined ? ACTION_PAGE_ITEMS_DEFAULT : Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > ACTION_PAGE_ITEMS_MAX) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', `limit must be an integer from 1 to ${ACTION_PAGE_ITEMS_MAX}`, 'limit');
    return;
  }
  const beforeText = req.getQuery('before');
  if (beforeText === undefined) {
    // One more than the page tells whether older entries exist.
    const newest = ctx.engine.operatorActions(limit + 1);
    const earlier = newest.length > limit;
    const page = earlier ? newest.slice(1) : newest;
    reply(ex, ctx.codec, 200, { actions: page, previous: earlier ? page[0]!.seq : null });
    return;
  }
  const before = Number(beforeText);
  if (!/^[1-9][0-9]{0,15}$/.test(beforeText) || !Number.isSafeInteger(before)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'before must be the seq of an entry, a positive integer', 'before');
    return;
  }
  const { actions, earlier } = ctx.engine.operatorActionsBefore(before, limit);
  reply(ex, ctx.codec, 200, { actions, previous: earlier && actions.length > 0 ? actions[0]!.seq : null });
}

function crashWorker(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (principal === undefined) return;
  const w = Number(param(req, 0));
  if (!Number.isInteger(w) || w < 0 || w >= ctx.engine.config.workers) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'no such worker', 'worker');
    return;
  }
  ctx.engine.crashWorker(w).catch(() => undefined);
  void ctx.engine.recordAction(principal.id, 'crash-worker', `worker-${w}`, 'crashing').then(() => reply(ex, ctx.codec, 202, { worker: w, crashing: true }));
}

function getAudit(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (principal === undefined) return;
  ctx.engine.audit().then(
    async (report) => {
      await ctx.engine.recordAction(principal.id, 'audit', report.batch, report.ok ? 'ok' : `mismatch: ${report.shards.flatMap((s) => s.mismatches).join(', ')}`);
      reply(ex, ctx.codec, report.ok ? 200 : 500, report);
    },
    (err: unknown) => {
      ctx.engine.log.error({ err }, 'audit failed');
      replyCode(ex, ctx.codec, 'INTERNAL', 'the audit could not run');
    },
  );
}

export function registerHttpRoutes(app: TemplatedApp, ctx: HttpContext): void {
  const guard =
    (handler: (ctx: HttpContext, res: HttpResponse, req: HttpRequest) => void) =>
    (res: HttpResponse, req: HttpRequest): void => {
      // A leader whose lease lapsed answers nothing from its state, reads included: it may be stale.
      if (deposed(ctx.engine)) {
        replyFailure(beginExchange(res, req), ctx.codec, notServing(ctx.engine));
        return;
      }
      try {
        handler(ctx, res, req);
      } catch (err) {
        if ((err as Error).name === 'AssertionError') ctx.engine.counters.lawViolations++;
        ctx.engine.log.error({ err, url: req.getUrl() }, 'request handler failed');
        const ex = beginExchange(res, req);
        replyCode(ex, ctx.codec, 'INTERNAL');
      }
    };

  app.get('/metrics', (res, req) => {
    const ex = beginExchange(res, req);
    // The exposition shows every bank's position: the monitoring system's `metrics` token or an operator's.
    if (authorize(ctx.auth, ctx.codec, ex, req, ['metrics', 'operator']) === undefined) return;
    ctx.engine.metrics.text().then(
      ({ contentType, body }) => {
        if (ex.aborted) return;
        ex.answered = true;
        res.cork(() => {
          res.writeStatus(statusLine(200)).writeHeader('content-type', contentType).end(body);
        });
      },
      (err: unknown) => {
        ctx.engine.log.error({ err }, 'metrics collection failed');
        replyCode(ex, ctx.codec, 'INTERNAL');
      },
    );
  });
  app.get('/healthz', (res, req) => {
    reply(beginExchange(res, req), ctx.codec, 200, { status: 'ok' });
  });
  // Load balancers that check health with HEAD get the GET's status, without its body.
  app.head('/healthz', (res) => replyStatusOnly(res, 200));
  app.head('/readyz', (res) => replyStatusOnly(res, ctx.engine.ready ? 200 : 503));
  app.get('/readyz', (res, req) => {
    const ex = beginExchange(res, req);
    const node = ctx.engine.clusterNode;
    if (ctx.engine.ready) reply(ex, ctx.codec, 200, node === undefined ? { status: 'ready', batch: ctx.engine.openBatchId } : { status: 'ready', role: 'leader', node, batch: ctx.engine.openBatchId });
    else replyFailure(ex, ctx.codec, notServing(ctx.engine));
  });
  app.post('/v1/instructions', guard(postInstructions));
  app.get('/v1/instructions/:institution/:id', guard(getInstruction));
  app.get('/v1/positions', guard(getPositions));
  app.get('/v1/positions/:bank', guard(getBankPosition));
  app.get('/v1/audit', guard(getAudit));
  app.post('/v1/receipts', guard(postReceipts));
  app.get('/v1/operator-actions', guard(getOperatorActions));
  if (ctx.engine.config.faultInjection) {
    // Test-only, off unless the configuration says `faultInjection: true`.
    app.post('/v1/debug/workers/:worker/crash', guard(crashWorker));
  }
  app.post('/v1/instructions/:institution/:id/resolve', guard(postResolve));
  app.post('/v1/instructions/:institution/:id/reverse', guard(postReverse));
  app.post('/v1/instructions/:institution/:id/submit', guard(postSubmission));
  registerMandateRoutes(app, guard);
  registerBatchRoutes(app, ctx, (h) => guard((_ctx, res, req) => h(res, req)));
  app.any('/*', (res, req) => {
    const ex = beginExchange(res, req);
    if (deposed(ctx.engine)) {
      replyFailure(ex, ctx.codec, notServing(ctx.engine));
      return;
    }
    // PROTOCOL.md: every request but GET /healthz and GET /readyz carries a token, and a missing or unknown one is
    // UNAUTHORIZED; so an unknown route is told it is unknown only with a known token (any role).
    if (authorize(ctx.auth, ctx.codec, ex, req, ROLES) === undefined) return;
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no route ${req.getMethod().toUpperCase()} ${req.getUrl().slice(0, 100)}`);
  });
}
