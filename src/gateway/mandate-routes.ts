/**
 * HTTP routes of mandates (委托协议): signing (网关签约 by an institution,
 * 线下签约 by the payer bank), revocation, the payer bank's receipts, and
 * the queries. The core decides who may sign, revoke or answer; the reads
 * are scoped here, like instruction reads.
 */

import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';
import type { MandateActor, MandateFilter } from '../engine/engine.js';
import { MANDATE_STATUSES, type MandateStatus } from '../mandates/mandate.js';
import type { Failure } from '../protocol/errors.js';
import type { Principal } from './auth.js';
import { authorize, beginExchange, beginScopedRead, checkIds, param, postBankReceipts, reply, replyCode, replyFailure, withBody, type Exchange, type HttpContext } from './http-io.js';

/** Mandates in one page of `GET /v1/mandates` when `?limit=` is not given, and at most. */
const MANDATE_PAGE_ITEMS_DEFAULT = 100;
const MANDATE_PAGE_ITEMS_MAX = 1000;

type Handler = (ctx: HttpContext, res: HttpResponse, req: HttpRequest) => void;

/** The acting party: every mandate route's role list leaves `metrics` out. */
function actorOf(p: Principal): MandateActor {
  return { role: p.role as MandateActor['role'], id: p.id };
}

/** Answer a mandate the core answers with once it is durable, or its failure. */
function answerMandate<T extends object>(ctx: HttpContext, ex: Exchange, outcome: Promise<T | Failure>, body: (done: T) => unknown): void {
  outcome.then(
    (r) => {
      if ('code' in r) replyFailure(ex, ctx.codec, r as Failure);
      else reply(ex, ctx.codec, 200, body(r as T));
    },
    (err: unknown) => {
      ctx.engine.log.error({ err }, 'mandate action failed');
      replyCode(ex, ctx.codec, 'INTERNAL');
    },
  );
}

/** An institution signs through the gateway (pending until its payer bank answers); a bank signs offline (active at once). */
function postMandate(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  withBody(ctx, res, req, ['institution', 'bank'], (ex, principal, body) => {
    answerMandate(ctx, ex, ctx.engine.signMandate(actorOf(principal), body), (r) => (r.duplicate ? { ...r.mandate, duplicate: true } : r.mandate));
  });
}

function postRevoke(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  // Path parameters live only as long as the synchronous part of the handler.
  const institution = param(req, 0);
  const id = param(req, 1);
  withBody(
    ctx,
    res,
    req,
    ['institution', 'bank', 'operator'],
    (ex, principal, body) => {
      const ids = checkIds(ctx, ex, institution, id);
      if (ids === undefined) return;
      if (!isPlainObject(body) || Object.keys(body).length !== 0) {
        replyCode(ex, ctx.codec, 'INVALID_MESSAGE', 'a revocation has an empty body or {}');
        return;
      }
      let outcome = ctx.engine.revokeMandate(actorOf(principal), ids[0], ids[1]);
      if (principal.role === 'operator') {
        // An operator's revocation goes on the audit trail before it is answered, like every operator action.
        outcome = outcome.then(async (r) => {
          await ctx.engine.recordAction(principal.id, 'revoke-mandate', `${ids[0]}/${ids[1]}`, 'code' in r ? r.code : r.status);
          return r;
        });
      }
      answerMandate(ctx, ex, outcome, (view) => view);
    },
    {},
  );
}

function getMandate(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const read = beginScopedRead(ctx, res, req, 'mandates');
  if (read === undefined) return;
  const { ex, principal, institution, id } = read;
  const view = ctx.engine.mandate(institution, id);
  if (view === undefined) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no mandate '${id}' of institution '${institution}'`);
    return;
  }
  // A bank reads only the mandates it is the payer bank of: any other is outside its role.
  if (principal.role === 'bank' && view.payer !== principal.id) {
    replyCode(ex, ctx.codec, 'FORBIDDEN', `bank '${principal.id}' is not the payer bank of this mandate`);
    return;
  }
  reply(ex, ctx.codec, 200, view);
}

/**
 * `GET /v1/mandates?institution=&status=&limit=&after=`: a page in
 * (institution, id) order. An institution sees its own, a bank those it is
 * payer of, an operator all; `next` is the cursor for `?after=`, or null.
 */
function listMandates(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'bank', 'operator']);
  if (principal === undefined) return;
  const limitText = req.getQuery('limit');
  const limit = limitText === undefined ? MANDATE_PAGE_ITEMS_DEFAULT : Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MANDATE_PAGE_ITEMS_MAX) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', `limit must be an integer from 1 to ${MANDATE_PAGE_ITEMS_MAX}`, 'limit');
    return;
  }
  const filter: MandateFilter = {};
  const status = req.getQuery('status');
  if (status !== undefined) {
    if (!(MANDATE_STATUSES as readonly string[]).includes(status)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', `status must be one of ${MANDATE_STATUSES.join(', ')}`, 'status');
      return;
    }
    filter.status = status as MandateStatus;
  }
  const institution = req.getQuery('institution');
  if (institution !== undefined) {
    if (!PARTY_CODE_PATTERN.test(institution)) {
      replyCode(ex, ctx.codec, 'INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
      return;
    }
    if (principal.role === 'institution' && institution !== principal.id) {
      replyCode(ex, ctx.codec, 'FORBIDDEN', 'an institution may list only its own mandates');
      return;
    }
    filter.institution = institution;
  }
  if (principal.role === 'institution') filter.institution = principal.id;
  if (principal.role === 'bank') filter.payer = principal.id;
  // An empty `after=` asks for the first page, as no cursor does.
  const after = req.getQuery('after') || undefined;
  reply(ex, ctx.codec, 200, ctx.engine.mandatePage(filter, after, limit));
}

/** The payer bank's answers to gateway signings: one receipt, or `{ "receipts": [ … ] }`, as for instructions. */
function postMandateReceipts(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  postBankReceipts(ctx, res, req, (bank, items, onDone) => ctx.engine.mandateReceipts(bank, items, onDone));
}

export function registerMandateRoutes(app: TemplatedApp, guard: (handler: Handler) => (res: HttpResponse, req: HttpRequest) => void): void {
  app.post('/v1/mandates', guard(postMandate));
  app.get('/v1/mandates', guard(listMandates));
  app.post('/v1/mandates/receipts', guard(postMandateReceipts));
  app.get('/v1/mandates/:institution/:id', guard(getMandate));
  app.post('/v1/mandates/:institution/:id/revoke', guard(postRevoke));
}
