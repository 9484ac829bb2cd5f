/**
 * HTTP plumbing for uWebSockets.js: reading a bounded body, choosing the
 * body's and the reply's encodings, and writing replies the way uWS requires (corked, never
 * after an abort); and the steps the route modules share.
 */

import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { Role } from '../config/config.js';
import { ID_PATTERN, PARTY_CODE_PATTERN } from '../core/instruction.js';
import type { Engine } from '../engine/engine.js';
import { Codec, DecodeFailure, type Encoding } from '../protocol/codec.js';
import type { Authenticator, Principal } from './auth.js';
import { receiptItems } from './intake.js';
import { failure, httpStatusOf, statusLine, type ErrorCode, type Failure } from '../protocol/errors.js';

/** Per-request state kept on the side, since `res` is only valid until answered or aborted. */
export interface Exchange {
  res: HttpResponse;
  aborted: boolean;
  answered: boolean;
  encoding: Encoding;
}

const CONTENT_TYPE: Record<Encoding, string> = { json: 'application/json', msgpack: 'application/msgpack' };
const MSGPACK_TYPES: ReadonlySet<string> = new Set(['application/msgpack', 'application/x-msgpack']);
/** A media range's `q=0`: the client refuses that type, so the range does not count as naming it. */
const Q_ZERO = /^\s*q\s*=\s*0(\.0{0,3})?\s*$/i;

/**
 * Must be called in the synchronous part of the handler, before any await.
 * Every reply of the exchange, errors included, uses `replyEncoding(req)`,
 * so that one rule holds on every route.
 */
export function beginExchange(res: HttpResponse, req: HttpRequest): Exchange {
  const ex: Exchange = { res, aborted: false, answered: false, encoding: replyEncoding(req) };
  res.onAborted(() => {
    ex.aborted = true;
  });
  return ex;
}

function mediaType(value: string): string {
  return value.split(';')[0]!.trim().toLowerCase();
}

/**
 * The body's encoding: msgpack when the Content-Type's media type is
 * msgpack, JSON otherwise, with no Content-Type or another one included.
 * A client that forgot the header (fetch sends `text/plain` for a string,
 * `curl -d` a form type) is read as JSON rather than refused; a body that
 * does not parse is INVALID_MESSAGE.
 */
export function bodyEncoding(req: HttpRequest): Encoding {
  return MSGPACK_TYPES.has(mediaType(req.getHeader('content-type'))) ? 'msgpack' : 'json';
}

/**
 * The reply's encoding (PROTOCOL.md: "the reply uses the request's encoding
 * (or Accept)"). An Accept that names msgpack and not JSON gets msgpack,
 * one that names JSON and not msgpack gets JSON; otherwise (no Accept, only
 * wildcards, or both) the body's encoding, which is JSON without a body.
 */
export function replyEncoding(req: HttpRequest): Encoding {
  const accept = req.getHeader('accept');
  // What most clients send (nothing, or fetch's and curl's wildcard) is decided without splitting anything.
  if (accept === '' || accept === '*/*') return bodyEncoding(req);
  let json = false;
  let msgpack = false;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';');
    if (params.some((p) => Q_ZERO.test(p))) continue;
    const media = type!.trim().toLowerCase();
    if (media === 'application/json') json = true;
    else if (MSGPACK_TYPES.has(media)) msgpack = true;
  }
  if (msgpack !== json) return msgpack ? 'msgpack' : 'json';
  return bodyEncoding(req);
}

export function reply(ex: Exchange, codec: Codec, status: number, body: unknown, closeConnection = false): void {
  if (ex.aborted || ex.answered) return;
  ex.answered = true;
  const payload = codec.encode(body, ex.encoding);
  ex.res.cork(() => {
    ex.res.writeStatus(statusLine(status)).writeHeader('content-type', CONTENT_TYPE[ex.encoding]).end(payload, closeConnection);
  });
}

/** A status line and no body: what a HEAD request is answered. */
export function replyStatusOnly(res: HttpResponse, status: number): void {
  res.cork(() => res.writeStatus(statusLine(status)).end());
}

export function replyFailure(ex: Exchange, codec: Codec, f: Failure, closeConnection = false): void {
  reply(ex, codec, httpStatusOf(f.code), f, closeConnection);
}

/**
 * What a node that is not taking requests answers. Alone: NOT_READY (it is
 * starting or stopping). In cluster mode, this gateway is a leader's, and
 * a leader that is not ready is one whose lease lapsed (paused, cut off),
 * or one taking or giving up the lead: it is no leader, and answers as
 * PROTOCOL.md has a follower answer, NOT_LEADER, with `leader` left out
 * since it does not know who leads now.
 */
export function notServing(engine: Pick<Engine, 'clusterNode'>): Failure & { role?: 'follower'; node?: string } {
  if (engine.clusterNode === undefined) return failure('NOT_READY');
  return { ...failure('NOT_LEADER', 'this node does not lead now (its lease lapsed, or it is taking or giving up the lead); send requests to the leader'), role: 'follower', node: engine.clusterNode };
}

/** In cluster mode, whether this (leader's) gateway must answer NOT_LEADER to everything but health and metrics. */
export function deposed(engine: Pick<Engine, 'clusterNode' | 'ready'>): boolean {
  return engine.clusterNode !== undefined && !engine.ready;
}

export function replyCode(ex: Exchange, codec: Codec, code: ErrorCode, message?: string, field?: string): void {
  replyFailure(ex, codec, failure(code, message, field));
}

/**
 * Collect the request body up to `limitBytes`. uWS hands chunks that are
 * only valid during the callback, so each is copied. Past the limit the
 * request is answered PAYLOAD_TOO_LARGE at once, and the connection stays
 * open: uWS reads and discards the rest of the body, so a client still
 * sending gets the answer instead of a reset, and can go on.
 */
export function readBody(ex: Exchange, codec: Codec, req: HttpRequest, limitBytes: number, onBody: (body: Uint8Array) => void): void {
  const declared = Number(req.getHeader('content-length') || '0');
  if (Number.isFinite(declared) && declared > limitBytes) {
    replyFailure(ex, codec, failure('PAYLOAD_TOO_LARGE', `body over ${limitBytes} bytes`), false);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  ex.res.onData((chunk, isLast) => {
    if (over || ex.aborted) return;
    size += chunk.byteLength;
    if (size > limitBytes) {
      over = true;
      replyFailure(ex, codec, failure('PAYLOAD_TOO_LARGE', `body over ${limitBytes} bytes`), false);
      return;
    }
    chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
    if (isLast) onBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  });
}

/** Authenticate and check the role; answers 401/403 itself and returns undefined then. */
export function authorize(auth: Authenticator, codec: Codec, ex: Exchange, req: HttpRequest, roles: readonly Role[]): Principal | undefined {
  const principal = auth.fromAuthorization(req.getHeader('authorization'));
  if (principal === undefined) {
    replyCode(ex, codec, 'UNAUTHORIZED', 'a valid bearer token is required');
    return undefined;
  }
  if (!roles.includes(principal.role)) {
    replyCode(ex, codec, 'FORBIDDEN', `role '${principal.role}' may not do this`);
    return undefined;
  }
  return principal;
}

/** A path parameter, percent-decoded; undefined when absent or malformed. */
export function param(req: HttpRequest, index: number): string | undefined {
  const raw = req.getParameter(index);
  if (raw === undefined) return undefined;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/** What every route handler works with. */
export interface HttpContext {
  engine: Engine;
  codec: Codec;
  auth: Authenticator;
}

/** A body handler: authorize, read and decode the body in its encoding, then `handle` it. */
export function withBody(
  ctx: HttpContext,
  res: HttpResponse,
  req: HttpRequest,
  roles: readonly ('institution' | 'bank' | 'operator')[],
  handle: (ex: Exchange, principal: Principal, body: unknown) => void,
  emptyBody?: unknown,
): void {
  const encoding = bodyEncoding(req);
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, roles);
  if (principal === undefined) return;
  if (!ctx.engine.ready) {
    replyFailure(ex, ctx.codec, notServing(ctx.engine));
    return;
  }
  readBody(ex, ctx.codec, req, ctx.engine.config.limits.bodyBytesMax, (bytes) => {
    let body: unknown;
    try {
      body = bytes.length === 0 && emptyBody !== undefined ? emptyBody : ctx.codec.decode(bytes, encoding);
    } catch (err) {
      replyCode(ex, ctx.codec, 'INVALID_MESSAGE', err instanceof DecodeFailure ? err.message : 'the body does not decode');
      return;
    }
    try {
      handle(ex, principal, body);
    } catch (err) {
      // A bug behind one request answers that request INTERNAL; it does not take the engine down with it.
      if ((err as Error).name === 'AssertionError') ctx.engine.counters.lawViolations++;
      ctx.engine.log.error({ err }, 'request handler failed');
      replyCode(ex, ctx.codec, 'INTERNAL');
    }
  });
}

/** One item answered alone (with its code's HTTP status), or a list answered 200 with `{ results }`. */
export function replyItems<R extends { code?: string }>(ctx: HttpContext, ex: Exchange, single: boolean, results: R[]): void {
  if (single) {
    const r = results[0]!;
    reply(ex, ctx.codec, r.code === undefined ? 200 : httpStatusOf(r.code as ErrorCode), r);
  } else {
    reply(ex, ctx.codec, 200, { results });
  }
}

/**
 * The start of a read of one institution's record (an instruction or a
 * mandate) by any role: the token, the path's institution and id, and an
 * institution kept to its own records. Answers itself and returns
 * undefined when any of these fails; the caller scopes a bank's read.
 */
export function beginScopedRead(ctx: HttpContext, res: HttpResponse, req: HttpRequest, noun: string): { ex: Exchange; principal: Principal; institution: string; id: string } | undefined {
  const ex = beginExchange(res, req);
  const principal = authorize(ctx.auth, ctx.codec, ex, req, ['institution', 'bank', 'operator']);
  if (principal === undefined) return undefined;
  const ids = checkIds(ctx, ex, param(req, 0), param(req, 1));
  if (ids === undefined) return undefined;
  const [institution, id] = ids;
  if (principal.role === 'institution' && principal.id !== institution) {
    replyCode(ex, ctx.codec, 'FORBIDDEN', `an institution may read only its own ${noun}`);
    return undefined;
  }
  return { ex, principal, institution, id };
}

/** Check the institution and id of an instruction or mandate route; answers 400 itself when they are malformed. */
export function checkIds(ctx: HttpContext, ex: Exchange, institution: string | undefined, id: string | undefined): [string, string] | undefined {
  if (institution === undefined || !PARTY_CODE_PATTERN.test(institution)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'institution must match ^[A-Z0-9]{2,16}$', 'institution');
    return undefined;
  }
  if (id === undefined || !ID_PATTERN.test(id)) {
    replyCode(ex, ctx.codec, 'INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
    return undefined;
  }
  return [institution, id];
}

/**
 * A bank's receipts route (instruction or mandate receipts): one receipt,
 * or `{ "receipts": [ … ] }`, handed to `sink` and answered item by item.
 */
export function postBankReceipts(
  ctx: HttpContext,
  res: HttpResponse,
  req: HttpRequest,
  sink: (bank: string, items: unknown[], onDone: (results: { code?: string }[]) => void) => void,
): void {
  withBody(ctx, res, req, ['bank'], (ex, principal, body) => {
    const parsed = receiptItems(body, ctx.engine.config.limits.batchItemsMax);
    if ('code' in parsed) {
      replyFailure(ex, ctx.codec, parsed as Failure);
      return;
    }
    sink(principal.id, parsed.items, (results) => replyItems(ctx, ex, parsed.single, results));
  });
}
