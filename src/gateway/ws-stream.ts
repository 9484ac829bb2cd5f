/**
 * WebSocket `/v1/stream`: `submit`, `receipt`, `mandate-receipt` and
 * `submit-verification` answered by `ack`; `subscribe`; `ping`/`pong`.
 *
 * Binary frames are msgpack and text frames JSON; a reply uses the
 * encoding of the frame it answers. Frames past `frameBytesMax` are
 * answered PAYLOAD_TOO_LARGE; uWS itself closes the connection at twice
 * that. A connection that does not read its replies is closed once its send
 * buffer passes `wsBackpressureBytesMax` (closeOnBackpressureLimit).
 *
 * Connections are bounded in all (`wsConnectionsMax`) and per principal
 * (`wsConnectionsPerPrincipalMax`): an upgrade past either bound is refused
 * with 503 OVERLOADED naming the bound. A bank's backlog of forwards is read
 * lazily from the lifecycle's pending instructions, a bounded frame at a
 * time as its send buffer drains, never copied whole; the mandates awaiting
 * its answer follow them.
 */

import { Counter, Gauge, type Registry } from 'prom-client';
import type { HttpRequest, HttpResponse, TemplatedApp, us_socket_context_t, WebSocket } from 'uWebSockets.js';
import { ID_PATTERN, isPlainObject, PARTY_CODE_PATTERN } from '../core/instruction.js';
import type { Engine } from '../engine/engine.js';
import { DecodeFailure, type Codec, type Encoding } from '../protocol/codec.js';
import { failure, statusLine, type ErrorCode, type Failure } from '../protocol/errors.js';
import { rejectedResult, type InstructionResult } from '../protocol/messages.js';
import type { Authenticator, Principal } from './auth.js';
import { itemsFromList } from './intake.js';
import { snapshotFor } from '../snapshots/snapshots.js';
import { deposed, notServing } from './http-io.js';
import type { ForwardItem, ReceiptResult } from '../lifecycle/lifecycle.js';
import type { MandateView } from '../mandates/mandate.js';
import type { Limits } from '../config/config.js';

/**
 * The contract's three topics, and `steps`: an institution's messages of a
 * step that awaits it (an authenticated payment's `awaiting-submission`
 * notify, and the query when its payment submission is overdue). Those are
 * no final status, so they are not sent on `notifications`, which carries
 * final statuses and reversals only.
 */
export const TOPICS = ['notifications', 'snapshots', 'forwards', 'steps'] as const;
/** Entries in one `subscribe` list, repeats included. */
const SUBSCRIBE_ENTRIES_MAX = 64;
/** Slack past frameBytesMax within which a frame is still read and answered PAYLOAD_TOO_LARGE. */
const FRAME_SLACK_BYTES_MIN = 16 * 1024 * 1024;

/** The longest frame uWS takes in before dropping the connection: frameBytesMax plus at least 16 MiB. */
export function wsPayloadLengthMax(frameBytesMax: number): number {
  return frameBytesMax + Math.max(frameBytesMax, FRAME_SLACK_BYTES_MIN);
}
/** Ops counted by name in the metrics; anything else is 'unknown', keeping label values bounded. */
const KNOWN_OPS: ReadonlySet<string> = new Set(['submit', 'receipt', 'mandate-receipt', 'submit-verification', 'subscribe', 'ping']);
/** What the engine sends, for counters that start at zero. */
const OUT_OPS = ['ack', 'subscribed', 'pong', 'error', 'forward', 'query', 'notify', 'snapshot'] as const;
const ROLES = ['institution', 'bank', 'operator'] as const;
/** About what one forward takes on the wire, to keep catch-up frames well under the send-buffer bound. */
const FORWARD_ITEM_BYTES_ESTIMATE = 400;
export type Topic = (typeof TOPICS)[number];

export interface Connection {
  principal: Principal;
  closed: boolean;
  /** Instructions submitted on this connection and not yet acknowledged. */
  inflight: number;
  /** Encoding of the last frame received; pushes use it. */
  encoding: Encoding;
  topics: Set<Topic>;
  /**
   * Catch-up forwards not yet sent, pulled from the lifecycle's pending
   * instructions a frame at a time as the send buffer drains, so a long
   * backlog neither trips the bound nor is copied per subscription.
   */
  backlog?: Iterator<ForwardItem>;
  /** Mandates awaiting the bank's answer when it subscribed, sent from `at` on once `backlog` is out. */
  mandateBacklog?: { views: readonly MandateView[]; at: number };
}

export interface WsContext {
  engine: Engine;
  codec: Codec;
  auth: Authenticator;
  connections: Set<WebSocket<Connection>>;
  /**
   * The same connections by principal ('bank:ICBC'), so pushes to one party
   * do not scan them all. The sizes of these sets are the counts the
   * connection bounds are checked against.
   */
  byPrincipal: Map<string, Set<WebSocket<Connection>>>;
  /** Upgrades refused at a connection bound, by the bound: read by the metrics. */
  refused?: { total: number; principal: number };
}

function principalKey(p: Principal): string {
  return `${p.role}:${p.id}`;
}

/**
 * One frame out, counted. A send that uWS drops (over the backpressure
 * bound) is followed by uWS closing the connection: closeOnBackpressureLimit.
 */
function sendCounted(ctx: WsContext, ws: WebSocket<Connection>, payload: Uint8Array | string, encoding: Encoding, op: string): void {
  const counters = ctx.engine.counters;
  counters.wsMessages.add(`out|${op}`);
  if (ws.send(payload, encoding === 'msgpack') === 2) counters.wsBackpressureCloses++;
}

/** `conn` is the connection's user data, read before any await: `ws` itself may not be touched once closed. */
function send(ctx: WsContext, ws: WebSocket<Connection>, message: unknown, encoding: Encoding, conn: Connection = ws.getUserData()): void {
  if (conn.closed) return;
  const payload = ctx.codec.encode(message, encoding);
  ws.cork(() => {
    sendCounted(ctx, ws, payload, encoding, (message as { op: string }).op);
  });
}

function sendError(ctx: WsContext, ws: WebSocket<Connection>, encoding: Encoding, seq: number | undefined, f: Failure): void {
  const msg: Record<string, unknown> = { op: 'error' };
  if (seq !== undefined) msg['seq'] = seq;
  msg['code'] = f.code;
  msg['message'] = f.message;
  if (f.field !== undefined) msg['field'] = f.field;
  send(ctx, ws, msg, encoding);
}

/**
 * The bound an upgrade by `key` would pass, as a failure to answer with, or
 * undefined when it may open. uWS calls `open` synchronously inside
 * `res.upgrade`, so the sets already count every connection that passed
 * this check: there is no window in which two upgrades see the same count.
 */
function connectionBound(ctx: WsContext, key: string, limits: Limits): Failure | undefined {
  const refused = (ctx.refused ??= { total: 0, principal: 0 });
  if (ctx.connections.size >= limits.wsConnectionsMax) {
    refused.total++;
    return failure('OVERLOADED', `the engine holds ${limits.wsConnectionsMax} WebSocket connections, its limit (limits.wsConnectionsMax); retry later`);
  }
  const own = ctx.byPrincipal.get(key)?.size ?? 0;
  if (own >= limits.wsConnectionsPerPrincipalMax) {
    refused.principal++;
    return failure('OVERLOADED', `${key} holds ${limits.wsConnectionsPerPrincipalMax} WebSocket connections, the limit per principal (limits.wsConnectionsPerPrincipalMax); close one or retry later`);
  }
  return undefined;
}

function upgrade(ctx: WsContext, res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
  const header = req.getHeader('authorization');
  const principal = header !== '' ? ctx.auth.fromAuthorization(header) : ctx.auth.fromToken(req.getQuery('token'));
  if (principal === undefined) {
    res.writeStatus(statusLine(401)).writeHeader('content-type', 'application/json').end(JSON.stringify(failure('UNAUTHORIZED', 'a valid bearer token is required')), true);
    return;
  }
  if (principal.role === 'metrics') {
    // The monitoring system's token reads GET /metrics and nothing else: no stream.
    res.writeStatus(statusLine(403)).writeHeader('content-type', 'application/json').end(JSON.stringify(failure('FORBIDDEN', "role 'metrics' may not open a stream")), true);
    return;
  }
  if (!ctx.engine.ready) {
    res.writeStatus(statusLine(503)).writeHeader('content-type', 'application/json').end(JSON.stringify(notServing(ctx.engine)), true);
    return;
  }
  const bound = connectionBound(ctx, principalKey(principal), ctx.engine.config.limits);
  if (bound !== undefined) {
    res.writeStatus(statusLine(503)).writeHeader('content-type', 'application/json').writeHeader('retry-after', '1').end(JSON.stringify(bound), true);
    return;
  }
  const conn: Connection = { principal, closed: false, inflight: 0, encoding: 'json', topics: new Set() };
  res.upgrade(conn, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
}

function seqOf(msg: Record<string, unknown>): number | undefined | Failure {
  if (!Object.hasOwn(msg, 'seq')) return undefined;
  const seq = msg['seq'];
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) return failure('INVALID_FIELD', 'seq must be an integer', 'seq');
  return seq;
}

function onSubmit(ctx: WsContext, ws: WebSocket<Connection>, msg: Record<string, unknown>, seq: number, encoding: Encoding): void {
  const conn = ws.getUserData();
  const { engine } = ctx;
  if (conn.principal.role !== 'institution') {
    sendError(ctx, ws, encoding, seq, failure('FORBIDDEN', 'only institutions submit instructions'));
    return;
  }
  if (!engine.ready) {
    sendError(ctx, ws, encoding, seq, notServing(ctx.engine));
    return;
  }
  const items = itemsFromList(msg['instructions'], 'instructions', engine.config.limits.batchItemsMax);
  if (!Array.isArray(items)) {
    sendError(ctx, ws, encoding, seq, items);
    return;
  }
  if (conn.inflight + items.length > engine.config.limits.connectionInflightMax) {
    // Answer item by item, so the client can retry exactly these ids.
    const f = failure('OVERLOADED', `more than ${engine.config.limits.connectionInflightMax} instructions in flight on this connection`);
    const results: InstructionResult[] = items.map((raw) => {
      const id = isPlainObject(raw) && typeof raw['id'] === 'string' ? raw['id'] : undefined;
      return rejectedResult(id, f);
    });
    send(ctx, ws, { op: 'ack', seq, results }, encoding);
    return;
  }
  conn.inflight += items.length;
  const started = performance.now();
  engine.submit(conn.principal.id, items, (results) => {
    conn.inflight -= items.length;
    send(ctx, ws, { op: 'ack', seq, results }, encoding, conn);
    engine.metrics.observeAck('ws', started);
  });
}

/** Where a bank's receipts go: instruction receipts or mandate receipts, answered alike. */
type ReceiptSink = (bank: string, items: unknown[], onDone: (results: object[]) => void) => void;

function onReceipt(ctx: WsContext, ws: WebSocket<Connection>, msg: Record<string, unknown>, seq: number, encoding: Encoding, sink: ReceiptSink): void {
  const conn = ws.getUserData();
  if (conn.principal.role !== 'bank') {
    sendError(ctx, ws, encoding, seq, failure('FORBIDDEN', 'only banks send receipts'));
    return;
  }
  if (!ctx.engine.ready) {
    sendError(ctx, ws, encoding, seq, notServing(ctx.engine));
    return;
  }
  const items = itemsFromList(msg['receipts'], 'receipts', ctx.engine.config.limits.batchItemsMax);
  if (!Array.isArray(items)) {
    sendError(ctx, ws, encoding, seq, items);
    return;
  }
  sink(conn.principal.id, items, (results) => send(ctx, ws, { op: 'ack', seq, results }, encoding, conn));
}

/**
 * The payment submission (支付提交) of an authenticated payment: one item,
 * answered as an ack of one result. Only the principal's own institution;
 * the verification itself is the core's to judge.
 */
function onSubmitVerification(ctx: WsContext, ws: WebSocket<Connection>, msg: Record<string, unknown>, seq: number, encoding: Encoding): void {
  const conn = ws.getUserData();
  if (conn.principal.role !== 'institution') {
    sendError(ctx, ws, encoding, seq, failure('FORBIDDEN', 'only institutions send payment submissions'));
    return;
  }
  if (!ctx.engine.ready) {
    sendError(ctx, ws, encoding, seq, notServing(ctx.engine));
    return;
  }
  const institution = conn.principal.id;
  const id = msg['id'];
  const named = Object.hasOwn(msg, 'institution') ? msg['institution'] : institution;
  let refusal: Failure | undefined;
  if (named !== institution) refusal = failure('FORBIDDEN', 'an institution submits only for its own instructions');
  else if (typeof id !== 'string' || !ID_PATTERN.test(id)) refusal = failure('INVALID_FIELD', 'id must match ^[A-Za-z0-9._:-]{1,64}$', 'id');
  if (refusal === undefined) {
    ctx.engine.submitVerification(institution, id as string, msg['verification'], (result) => send(ctx, ws, { op: 'ack', seq, results: [result] }, encoding, conn));
    return;
  }
  // Refused before the core sees it: the result names what of the item is well formed.
  const r: ReceiptResult = { status: 'rejected', code: refusal.code, message: refusal.message };
  if (typeof named === 'string' && PARTY_CODE_PATTERN.test(named)) r.institution = named;
  if (typeof id === 'string' && ID_PATTERN.test(id)) r.id = id;
  if (refusal.field !== undefined) r.field = refusal.field;
  send(ctx, ws, { op: 'ack', seq, results: [r] }, encoding);
}

/** Send a bank the instructions, then the mandates, it has not answered, in frames of a bounded size. */
function sendPendingForwards(ctx: WsContext, ws: WebSocket<Connection>, conn: Connection): void {
  conn.backlog = ctx.engine.pendingForwards(conn.principal.id);
  // Taken now, so a mandate signed after this is forwarded once, live; one answered meanwhile is left out when sent.
  const views = ctx.engine.pendingMandateForwards(conn.principal.id);
  if (views.length > 0) conn.mandateBacklog = { views, at: 0 };
  else delete conn.mandateBacklog;
  pumpBacklog(ctx, ws, conn);
}

/**
 * Send catch-up frames while the send buffer is under half its bound;
 * `drain` calls this again. A frame holds at most `wsForwardFrameItemsMax`
 * forwards, fewer when the send-buffer bound is small; only that frame's
 * instructions are ever held here. The mandates follow the instructions.
 */
function pumpBacklog(ctx: WsContext, ws: WebSocket<Connection>, conn: Connection): void {
  const { wsBackpressureBytesMax: bound, wsForwardFrameItemsMax } = ctx.engine.config.limits;
  const perFrame = Math.max(1, Math.min(wsForwardFrameItemsMax, Math.floor(bound / 4 / FORWARD_ITEM_BYTES_ESTIMATE)));
  while (!conn.closed && ws.getBufferedAmount() < bound / 2) {
    const backlog = conn.backlog;
    if (backlog !== undefined) {
      const items: ForwardItem[] = [];
      for (let next = backlog.next(); next.done !== true; next = backlog.next()) {
        items.push(next.value);
        if (items.length === perFrame) break;
      }
      if (items.length > 0) send(ctx, ws, { op: 'forward', instructions: items }, conn.encoding, conn);
      if (items.length < perFrame) delete conn.backlog;
      continue;
    }
    const mandates = conn.mandateBacklog;
    if (mandates === undefined) return;
    const views = mandates.views.slice(mandates.at, mandates.at + perFrame).filter((v) => ctx.engine.mandate(v.institution, v.id)?.status === 'pending');
    mandates.at += perFrame;
    if (views.length > 0) send(ctx, ws, { op: 'forward', mandates: views }, conn.encoding, conn);
    if (mandates.at >= mandates.views.length) delete conn.mandateBacklog;
  }
}

function onSubscribe(ctx: WsContext, ws: WebSocket<Connection>, msg: Record<string, unknown>, seq: number | undefined, encoding: Encoding): void {
  const conn = ws.getUserData();
  const topics = msg['topics'];
  // "Any of" the topics: none (the answer then lists what the connection holds) and repeats are accepted.
  if (!Array.isArray(topics) || topics.length > SUBSCRIBE_ENTRIES_MAX) {
    sendError(ctx, ws, encoding, seq, failure('INVALID_FIELD', `topics must be a list of at most ${SUBSCRIBE_ENTRIES_MAX} of ${TOPICS.join(', ')}`, 'topics'));
    return;
  }
  for (const t of topics) {
    if (typeof t !== 'string' || !(TOPICS as readonly string[]).includes(t)) {
      sendError(ctx, ws, encoding, seq, failure('INVALID_FIELD', `unknown topic; topics are ${TOPICS.join(', ')}`, 'topics'));
      return;
    }
  }
  // The contract opens `subscribe` to any role with any of the topics. Forwards go only to `bank:<code>`
  // connections (fanOut), so `forwards` held by another role is accepted and delivers nothing.
  const fresh = [...new Set(topics as Topic[])].filter((t) => !conn.topics.has(t));
  const wasListening = listens(conn);
  for (const t of fresh) conn.topics.add(t);
  if (!wasListening && listens(conn)) listen(ctx, conn, 1);
  const reply: Record<string, unknown> = { op: 'subscribed', topics: [...conn.topics] };
  if (seq !== undefined) reply['seq'] = seq;
  send(ctx, ws, reply, encoding);
  // A bank that (re)subscribes gets every instruction still waiting for its receipt. Only a bank: an
  // institution's id can equal a bank code, and the backlog is looked up by that id.
  if (fresh.includes('forwards') && conn.principal.role === 'bank') sendPendingForwards(ctx, ws, conn);
}

function onMessage(ctx: WsContext, ws: WebSocket<Connection>, data: ArrayBuffer, isBinary: boolean): void {
  const conn = ws.getUserData();
  const encoding: Encoding = isBinary ? 'msgpack' : 'json';
  conn.encoding = encoding;
  if (data.byteLength > ctx.engine.config.limits.frameBytesMax) {
    sendError(ctx, ws, encoding, undefined, failure('PAYLOAD_TOO_LARGE', `frame over ${ctx.engine.config.limits.frameBytesMax} bytes`));
    return;
  }
  let msg: unknown;
  try {
    // Decoding copies what it keeps, so nothing refers to uWS's buffer after this handler returns.
    msg = ctx.codec.decode(new Uint8Array(data), encoding);
  } catch (err) {
    sendError(ctx, ws, encoding, undefined, failure('INVALID_MESSAGE', err instanceof DecodeFailure ? err.message : 'the frame does not decode'));
    return;
  }
  if (!isPlainObject(msg) || typeof msg['op'] !== 'string') {
    // An object's valid seq is echoed even so, so that the client can tell which frame this answers.
    const s = isPlainObject(msg) ? seqOf(msg) : undefined;
    sendError(ctx, ws, encoding, typeof s === 'number' ? s : undefined, failure('INVALID_MESSAGE', 'a frame is an object with a string "op"'));
    return;
  }
  const seq = seqOf(msg);
  if (typeof seq === 'object') {
    sendError(ctx, ws, encoding, undefined, seq);
    return;
  }
  const op = msg['op'];
  ctx.engine.counters.wsMessages.add(`in|${KNOWN_OPS.has(op) ? op : 'unknown'}`);
  // A leader whose lease lapsed answers no message, a ping included, until its step-down closes the connection.
  if (deposed(ctx.engine)) {
    sendError(ctx, ws, encoding, seq, notServing(ctx.engine));
    return;
  }
  switch (op) {
    case 'ping': {
      const pong: Record<string, unknown> = { op: 'pong' };
      if (seq !== undefined) pong['seq'] = seq;
      send(ctx, ws, pong, encoding);
      return;
    }
    case 'submit':
      if (seq === undefined) {
        sendError(ctx, ws, encoding, undefined, failure('INVALID_FIELD', 'submit needs an integer seq', 'seq'));
        return;
      }
      onSubmit(ctx, ws, msg, seq, encoding);
      return;
    case 'subscribe':
      onSubscribe(ctx, ws, msg, seq, encoding);
      return;
    case 'receipt':
    case 'mandate-receipt':
    case 'submit-verification':
      if (seq === undefined) {
        sendError(ctx, ws, encoding, undefined, failure('INVALID_FIELD', `${op} needs an integer seq`, 'seq'));
        return;
      }
      if (op === 'receipt') onReceipt(ctx, ws, msg, seq, encoding, (bank, items, onDone) => ctx.engine.receipts(bank, items, onDone));
      else if (op === 'mandate-receipt') onReceipt(ctx, ws, msg, seq, encoding, (bank, items, onDone) => ctx.engine.mandateReceipts(bank, items, onDone));
      else onSubmitVerification(ctx, ws, msg, seq, encoding);
      return;
    default:
      sendError(ctx, ws, encoding, seq, failure('INVALID_MESSAGE', `unknown op '${op.slice(0, 32).replace(/[^\x20-\x7e]/g, '?')}'`));
  }
}

/**
 * Push each snapshot to the connections subscribed to `snapshots`, each
 * seeing only its own rows; one encoding per distinct view and encoding.
 */
function pushSnapshots(ctx: WsContext): void {
  ctx.engine.on('snapshot', (snapshot) => {
    const encoded = new Map<string, Uint8Array | string>();
    for (const ws of ctx.connections) {
      const conn = ws.getUserData();
      if (conn.closed || !conn.topics.has('snapshots')) continue;
      const { role, id } = conn.principal;
      const key = `${role}|${role === 'operator' ? '' : id}|${conn.encoding}`;
      let payload = encoded.get(key);
      if (payload === undefined) {
        payload = ctx.codec.encode({ op: 'snapshot', ...snapshotFor(snapshot, role, id) }, conn.encoding);
        encoded.set(key, payload);
      }
      const p = payload;
      ws.cork(() => {
        sendCounted(ctx, ws, p, conn.encoding, 'snapshot');
      });
    }
  });
}

/** Whether a connection hears an institution's lifecycle messages (final ones, or those of its steps). */
function listens(conn: Connection): boolean {
  return conn.topics.has('notifications') || conn.topics.has('steps');
}

/** Count a connection in or out of its institution's notification listeners (once, whichever of the two topics it holds). */
function listen(ctx: WsContext, conn: Connection, delta: 1 | -1): void {
  if (conn.principal.role !== 'institution') return;
  const m = ctx.engine.notificationListeners;
  const n = (m.get(conn.principal.id) ?? 0) + delta;
  if (n <= 0) m.delete(conn.principal.id);
  else m.set(conn.principal.id, n);
}

/** Send `message` to every open connection of one principal subscribed to `topic` (every one, when `topic` is undefined). */
function fanOut(ctx: WsContext, topic: Topic | undefined, principal: string, message: unknown): void {
  const set = ctx.byPrincipal.get(principal);
  if (set === undefined) return;
  const encoded: Partial<Record<Encoding, Uint8Array | string>> = {};
  for (const ws of set) {
    const conn = ws.getUserData();
    if (conn.closed || (topic !== undefined && !conn.topics.has(topic))) continue;
    const payload = (encoded[conn.encoding] ??= ctx.codec.encode(message, conn.encoding));
    ws.cork(() => {
      sendCounted(ctx, ws, payload, conn.encoding, (message as { op: string }).op);
    });
  }
}

/**
 * Forwards go to the connections of the bank whose answer is awaited that
 * subscribed to `forwards`. A query for an overdue receipt goes to every
 * stream connection of that bank, subscribed or not: the contract sends it
 * "to the payer bank" under no topic, and a bank that only sends receipts
 * must still hear it before the instruction expires. A query for an
 * overdue payment submission goes to the institution's `steps`
 * subscribers; notifications to its `notifications` subscribers.
 */
function pushLifecycle(ctx: WsContext): void {
  const perFrame = ctx.engine.config.limits.wsForwardFrameItemsMax;
  // What one turn committed can be more than a frame holds: it goes out in frames of the same bound as a backlog's.
  const forward = (code: string, field: 'instructions' | 'mandates', items: readonly unknown[]): void => {
    for (let at = 0; at < items.length; at += perFrame) {
      fanOut(ctx, 'forwards', `bank:${code}`, { op: 'forward', [field]: items.length <= perFrame ? items : items.slice(at, at + perFrame) });
    }
  };
  ctx.engine.on('forward', (code, items) => forward(code, 'instructions', items));
  ctx.engine.on('forward-mandates', (code, views) => forward(code, 'mandates', views));
  ctx.engine.on('query', (q) => {
    if (q.bank !== undefined) fanOut(ctx, undefined, `bank:${q.bank}`, q.message);
    else fanOut(ctx, 'steps', `institution:${q.message.institution}`, q.message);
  });
  ctx.engine.on('notify', (n) => fanOut(ctx, n.status === 'awaiting-submission' ? 'steps' : 'notifications', `institution:${n.institution}`, n));
}

export function registerStream(app: TemplatedApp, ctx: WsContext): void {
  pushSnapshots(ctx);
  pushLifecycle(ctx);
  const limits = ctx.engine.config.limits;
  app.ws<Connection>('/v1/stream', {
    // A frame over frameBytesMax is read and answered PAYLOAD_TOO_LARGE (onMessage); uWS drops the connection only
    // past this length, which it checks from the frame's header before buffering anything.
    maxPayloadLength: wsPayloadLengthMax(limits.frameBytesMax),
    maxBackpressure: limits.wsBackpressureBytesMax,
    closeOnBackpressureLimit: true,
    idleTimeout: limits.wsIdleTimeoutS,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => upgrade(ctx, res, req, context),
    open: (ws) => {
      ctx.connections.add(ws);
      ctx.engine.counters.wsConnectionsOpened.add(ws.getUserData().principal.role);
      const key = principalKey(ws.getUserData().principal);
      let set = ctx.byPrincipal.get(key);
      if (set === undefined) {
        set = new Set();
        ctx.byPrincipal.set(key, set);
      }
      set.add(ws);
    },
    message: (ws, data, isBinary) => {
      try {
        onMessage(ctx, ws, data, isBinary);
      } catch (err) {
        ctx.engine.log.error({ err }, 'stream message handler failed');
        sendError(ctx, ws, isBinary ? 'msgpack' : 'json', undefined, failure('INTERNAL' as ErrorCode));
      }
    },
    drain: (ws) => {
      const conn = ws.getUserData();
      if (conn.backlog !== undefined || conn.mandateBacklog !== undefined) pumpBacklog(ctx, ws, conn);
    },
    close: (ws) => {
      const conn = ws.getUserData();
      conn.closed = true;
      delete conn.backlog;
      delete conn.mandateBacklog;
      // Leave the listener count once, whatever closes the connection.
      if (listens(conn)) listen(ctx, conn, -1);
      conn.topics.clear();
      // Set deletes are idempotent, so the counts the bounds read stay right however often this runs.
      ctx.connections.delete(ws);
      const key = principalKey(conn.principal);
      const set = ctx.byPrincipal.get(key);
      set?.delete(ws);
      if (set?.size === 0) ctx.byPrincipal.delete(key);
    },
  });
}

/** Gauges of the stream, read at scrape time. */
export function registerStreamMetrics(registry: Registry, ctx: WsContext): void {
  const { counters } = ctx.engine;
  new Gauge({
    name: 'netting_ws_connections',
    help: 'Open WebSocket connections by role',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      const byRole: Record<string, number> = { institution: 0, bank: 0, operator: 0 };
      for (const ws of ctx.connections) byRole[ws.getUserData().principal.role]!++;
      for (const [role, n] of Object.entries(byRole)) this.set({ role }, n);
    },
  });
  new Counter({
    name: 'netting_ws_connections_opened_total',
    help: 'WebSocket connections opened, by role',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      this.reset();
      // Every role shows from the start, at zero: a panel has a series before the first connection.
      for (const role of ROLES) this.inc({ role }, 0);
      for (const [role, n] of counters.wsConnectionsOpened.entries()) this.inc({ role }, n);
    },
  });
  new Counter({
    name: 'netting_ws_connections_refused_total',
    help: 'WebSocket upgrades refused OVERLOADED at a connection bound: limits.wsConnectionsMax (total) or limits.wsConnectionsPerPrincipalMax (principal)',
    labelNames: ['limit'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ limit: 'total' }, ctx.refused?.total ?? 0);
      this.inc({ limit: 'principal' }, ctx.refused?.principal ?? 0);
    },
  });
  new Counter({
    name: 'netting_ws_messages_total',
    help: 'WebSocket frames received (in) and sent (out), by op',
    labelNames: ['direction', 'op'],
    registers: [registry],
    collect() {
      this.reset();
      for (const op of KNOWN_OPS) this.inc({ direction: 'in', op }, 0);
      for (const op of OUT_OPS) this.inc({ direction: 'out', op }, 0);
      for (const [key, n] of counters.wsMessages.entries()) {
        const [direction, op] = key.split('|') as [string, string];
        this.inc({ direction, op }, n);
      }
    },
  });
  new Gauge({
    name: 'netting_ws_send_buffer_bytes',
    help: 'Bytes waiting in the send buffers of all WebSocket connections',
    registers: [registry],
    collect() {
      let sum = 0;
      for (const ws of ctx.connections) if (!ws.getUserData().closed) sum += ws.getBufferedAmount();
      this.set(sum);
    },
  });
  new Gauge({
    name: 'netting_ws_send_buffer_max_bytes',
    help: 'The largest send buffer of any one WebSocket connection',
    registers: [registry],
    collect() {
      let max = 0;
      for (const ws of ctx.connections) if (!ws.getUserData().closed) max = Math.max(max, ws.getBufferedAmount());
      this.set(max);
    },
  });
  new Counter({
    name: 'netting_ws_backpressure_closes_total',
    help: 'Connections closed because they did not read (send buffer over limits.wsBackpressureBytesMax)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(counters.wsBackpressureCloses);
    },
  });
}
