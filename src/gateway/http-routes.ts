/**
 * The HTTP routes of PROTOCOL.md (and the engine's additions), each with
 * its role check. Handlers answer synchronously where they can; the
 * submission route answers once the shards have committed.
 */

import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { Engine } from '../engine/engine.js';
import { ID_PATTERN, PARTY_CODE_PATTERN } from '../core/instruction.js';
import { httpStatusOf, type Failure } from '../protocol/errors.js';
import { bankRowWire, counterpartyWire, instructionView, totalsWire, type InstructionResult } from '../protocol/messages.js';
import type { Codec } from '../protocol/codec.js';
import type { Authenticator } from './auth.js';
import { acceptEncoding, authorize, beginExchange, bodyEncoding, param, readBody, reply, replyCode, replyFailure } from './http-io.js';
import { submissionItems } from './intake.js';
import { registerBatchRoutes } from './batch-routes.js';
import { DecodeFailure } from '../protocol/codec.js';

export interface HttpContext {
  engine: Engine;
  codec: Codec;
  auth: Authenticator;
}

function postInstructions(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const encoding = bodyEncoding(req);
  const ex = beginExchange(res, encoding ?? acceptEncoding(req));
  const { engine, codec } = ctx;
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['institution']);
  if (principal === undefined) return;
  if (encoding === undefined) {
    replyCode(ex, codec, 'UNSUPPORTED_MEDIA_TYPE');
    return;
  }
  if (!engine.ready) {
    replyCode(ex, codec, 'NOT_READY');
    return;
  }
  const limits = engine.config.limits;
  readBody(ex, codec, req, limits.bodyBytesMax, (bytes) => {
    let body: unknown;
    try {
      body = codec.decode(bytes, encoding);
    } catch (err) {
      replyCode(ex, codec, 'INVALID_MESSAGE', err instanceof DecodeFailure ? err.message : 'the body does not decode');
      return;
    }
    const parsed = submissionItems(body, limits.batchItemsMax);
    if ('code' in parsed) {
      replyFailure(ex, codec, parsed as Failure);
      return;
    }
    if (!engine.ready) {
      replyCode(ex, codec, 'NOT_READY');
      return;
    }
    engine.router.submit(principal.id, parsed.items, (results: InstructionResult[]) => {
      if (parsed.single) {
        const r = results[0]!;
        reply(ex, codec, r.code === undefined ? 200 : httpStatusOf(r.code), r);
      } else {
        reply(ex, codec, 200, { results });
      }
    });
  });
}

function getInstruction(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, acceptEncoding(req));
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'bank', 'operator']);
  if (principal === undefined) return;
  const institution = param(req, 0);
  const id = param(req, 1);
  if (institution === undefined || !PARTY_CODE_PATTERN.test(institution)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
    return;
  }
  if (id === undefined || !ID_PATTERN.test(id)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
    return;
  }
  if (principal.role === 'institution' && principal.id !== institution) {
    replyCode(ex, ctx.codec, 'FORBIDDEN', "an institution may read only its own instructions");
    return;
  }
  const found = ctx.engine.readers.find(institution, id);
  // A bank sees only instructions it pays or receives; others are "not found" to it, not merely forbidden.
  if (found === undefined || (principal.role === 'bank' && found.record.p !== principal.id && found.record.q !== principal.id)) {
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no instruction '${id}' of institution '${institution}'`);
    return;
  }
  reply(ex, ctx.codec, 200, instructionView(institution, id, found.record));
}

function getPositions(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, acceptEncoding(req));
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['bank', 'operator']);
  if (principal === undefined) return;
  const o = ctx.engine.view.overview();
  if (principal.role === 'operator') {
    reply(ex, ctx.codec, 200, { batch: o.batch, seq: o.seq, banks: o.banks.map((b) => bankRowWire(b, ctx.engine.view.pendingDebit(b.bank))), totals: totalsWire(o.totals) });
  } else {
    // A bank sees its own row only; system totals are the operator's.
    const own = o.banks.filter((b) => b.bank === principal.id);
    reply(ex, ctx.codec, 200, { batch: o.batch, seq: o.seq, banks: own.map((b) => bankRowWire(b, ctx.engine.view.pendingDebit(b.bank))) });
  }
}

function getBankPosition(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, acceptEncoding(req));
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
  const d = ctx.engine.view.bank(bank);
  reply(ex, ctx.codec, 200, {
    batch: ctx.engine.view.batch,
    seq: ctx.engine.view.seq,
    ...bankRowWire(d.position, ctx.engine.view.pendingDebit(bank)),
    counterparties: d.counterparties.map(counterpartyWire),
  });
}

function getAudit(ctx: HttpContext, res: HttpResponse, req: HttpRequest): void {
  const ex = beginExchange(res, acceptEncoding(req));
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['operator']);
  if (principal === undefined) return;
  ctx.engine.log.info({ operator: principal.id }, 'audit requested');
  ctx.engine.audit().then(
    (report) => reply(ex, ctx.codec, report.ok ? 200 : 500, report),
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
      try {
        handler(ctx, res, req);
      } catch (err) {
        ctx.engine.log.error({ err, url: req.getUrl() }, 'request handler failed');
        const ex = beginExchange(res, 'json');
        replyCode(ex, ctx.codec, 'INTERNAL');
      }
    };

  app.get('/healthz', (res) => {
    reply(beginExchange(res, 'json'), ctx.codec, 200, { status: 'ok' });
  });
  app.get('/readyz', (res) => {
    const ex = beginExchange(res, 'json');
    if (ctx.engine.ready) reply(ex, ctx.codec, 200, { status: 'ready', batch: ctx.engine.openBatchId });
    else replyCode(ex, ctx.codec, 'NOT_READY');
  });
  app.post('/v1/instructions', guard(postInstructions));
  app.get('/v1/instructions/:institution/:id', guard(getInstruction));
  app.get('/v1/positions', guard(getPositions));
  app.get('/v1/positions/:bank', guard(getBankPosition));
  app.get('/v1/audit', guard(getAudit));
  registerBatchRoutes(app, ctx, (h) => guard((_ctx, res, req) => h(res, req)));
  app.any('/*', (res, req) => {
    const ex = beginExchange(res, acceptEncoding(req));
    replyCode(ex, ctx.codec, 'NOT_FOUND', `no route ${req.getMethod().toUpperCase()} ${req.getUrl().slice(0, 100)}`);
  });
}
