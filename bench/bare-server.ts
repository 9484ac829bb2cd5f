/**
 * The bare ceiling: the least a server can do with the engine's traffic and
 * still acknowledge durably. It decodes the same msgpack `submit` frames
 * (and JSON `POST /v1/instructions` bodies), writes the same instruction
 * records to LMDB (one environment, key `<institution>/<id>`) and answers
 * after the commit in the engine's shapes. No validation, no duplicate
 * rules, no netting, no shards, no worker threads: whatever the engine
 * costs beyond this is what its work costs.
 *
 * Run as its own process: `node dist/bench/bare-server.js --config file`,
 * the file holding `listen`, `dataDir` and `principals` as the engine's does.
 * It is a benchmark baseline, not a server to expose to anything.
 */

import { mkdirSync, readFileSync } from 'node:fs';
import { Decoder, Encoder } from '@msgpack/msgpack';
import { open } from 'lmdb';
import type { WireInstruction } from './fixture.js';
import { instructionDbOptions } from '../src/store/schema.js';
import { App, us_listen_socket_close, us_socket_local_port, type HttpResponse, type us_listen_socket, type us_socket, type WebSocket } from 'uWebSockets.js';

interface BareConfig {
  listen: { host: string; port: number };
  dataDir: string;
  principals: { token: string; role: string; id: string }[];
}

/** The engine's record of a cleared instruction (src/store/schema.ts), written the same way. */
interface BareRecord {
  t: string;
  p: string;
  q: string;
  a: number;
  s: 'cleared';
  b: string;
  at: number;
  ct: number;
  r?: string;
}

/** A submitted instruction: the same shape the load generators send. */
type Submitted = WireInstruction;

interface Result {
  id: string;
  status: 'cleared';
  batch: string;
}

interface Conn {
  institution: string;
  closed: boolean;
}

/** The engine's default limits, so both servers accept and refuse the same frames. */
const FRAME_BYTES_MAX = 1_048_576;
const BACKPRESSURE_BYTES_MAX = 16_777_216;
const MAP_BYTES = 8 * 1024 * 1024 * 1024;

function readConfig(argv: readonly string[]): BareConfig {
  const i = argv.indexOf('--config');
  const path = i >= 0 ? argv[i + 1] : undefined;
  if (path === undefined) throw new Error('usage: bare-server.js --config file.json');
  return JSON.parse(readFileSync(path, 'utf8')) as BareConfig;
}

/** China Standard Time, the platform's business day, which the engine's batch ids carry. */
const CST_OFFSET_MS = 8 * 3600 * 1000;

/** A batch id in the engine's form (YYYYMMDD-NNN), fixed for the process: the ceiling has no cut-offs. */
function batchId(nowMs: number): string {
  const cst = new Date(nowMs + CST_OFFSET_MS);
  const y = cst.getUTCFullYear();
  const m = String(cst.getUTCMonth() + 1).padStart(2, '0');
  const d = String(cst.getUTCDate()).padStart(2, '0');
  return `${y}${m}${d}-001`;
}

function log(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

const config = readConfig(process.argv.slice(2));
mkdirSync(config.dataDir, { recursive: true });
const env = open({ path: config.dataDir, maxDbs: 8, mapSize: MAP_BYTES });
// Records are written as the engine writes them: the same codec and shared msgpack structures (src/store/schema.ts).
const meta = env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
const ins = env.openDB<BareRecord, string>(instructionDbOptions(meta));
const BATCH = batchId(Date.now());

// The same bounds as the engine's codec: the library's defaults are unbounded.
const decoder = new Decoder({ maxStrLength: 4096, maxBinLength: 4096, maxArrayLength: FRAME_BYTES_MAX, maxMapLength: 64, maxExtLength: 16 });
const encoder = new Encoder({ ignoreUndefined: true });

const institutionByHeader = new Map<string, string>();
const institutionByToken = new Map<string, string>();
for (const p of config.principals) {
  if (p.role !== 'institution') continue;
  institutionByHeader.set(`Bearer ${p.token}`, p.id);
  institutionByToken.set(p.token, p.id);
}

/**
 * Write the items and return the promise of their commit. Every put is
 * issued in this one event turn, so lmdb-js commits them in one
 * transaction, and the last put's promise resolves when that transaction
 * is on disk.
 */
function store(institution: string, items: readonly Submitted[], results: Result[]): Promise<unknown> {
  const now = Date.now();
  let last: Promise<unknown> = Promise.resolve();
  for (const it of items) {
    const rec: BareRecord = { t: it.type, p: it.payer, q: it.payee, a: it.amount, s: 'cleared', b: BATCH, at: now, ct: now };
    if (it.reference !== undefined) rec.r = it.reference;
    last = ins.put(`${institution}/${it.id}`, rec);
    results.push({ id: it.id, status: 'cleared', batch: BATCH });
  }
  return last;
}

const sockets = new Set<WebSocket<Conn>>();
const app = App();

app.ws<Conn>('/v1/stream', {
  maxPayloadLength: FRAME_BYTES_MAX * 2,
  maxBackpressure: BACKPRESSURE_BYTES_MAX,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
  upgrade: (res, req, context) => {
    const institution = institutionByHeader.get(req.getHeader('authorization')) ?? institutionByToken.get(req.getQuery('token') ?? '');
    if (institution === undefined) {
      res.writeStatus('401 Unauthorized').end('', true);
      return;
    }
    const conn: Conn = { institution, closed: false };
    res.upgrade(conn, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => {
    sockets.add(ws);
  },
  message: (ws, data, isBinary) => {
    const conn = ws.getUserData();
    let msg: { op?: unknown; seq?: unknown; instructions?: unknown };
    try {
      // Decoding copies the strings, so nothing refers to uWS's buffer after this handler returns.
      msg = (isBinary ? decoder.decode(new Uint8Array(data)) : JSON.parse(Buffer.from(data).toString('utf8'))) as typeof msg;
    } catch {
      ws.send(encoder.encode({ op: 'error', code: 'INVALID_MESSAGE', message: 'the frame does not decode' }), true);
      return;
    }
    if (msg.op !== 'submit' || !Array.isArray(msg.instructions)) {
      ws.send(encoder.encode({ op: 'error', seq: msg.seq, code: 'INVALID_MESSAGE', message: 'only submit is served here' }), true);
      return;
    }
    const seq = msg.seq;
    const results: Result[] = [];
    store(conn.institution, msg.instructions as Submitted[], results).then(
      () => {
        if (conn.closed) return;
        const payload = encoder.encode({ op: 'ack', seq, results });
        ws.cork(() => ws.send(payload, true));
      },
      (err: unknown) => {
        log({ level: 50, err: String(err), msg: 'commit failed' });
        if (!conn.closed) ws.send(encoder.encode({ op: 'error', seq, code: 'INTERNAL', message: 'commit failed' }), true);
      },
    );
  },
  close: (ws) => {
    ws.getUserData().closed = true;
    sockets.delete(ws);
  },
});

function answer(res: HttpResponse, aborted: { value: boolean }, status: string, body: string): void {
  if (aborted.value) return;
  res.cork(() => {
    res.writeStatus(status).writeHeader('content-type', 'application/json').end(body);
  });
}

app.post('/v1/instructions', (res, req) => {
  const aborted = { value: false };
  res.onAborted(() => {
    aborted.value = true;
  });
  const institution = institutionByHeader.get(req.getHeader('authorization'));
  if (institution === undefined) {
    res.writeStatus('401 Unauthorized').writeHeader('content-type', 'application/json').end('{"code":"UNAUTHORIZED"}');
    return;
  }
  const chunks: Buffer[] = [];
  res.onData((chunk, isLast) => {
    // uWS reuses the chunk's memory once this callback returns, so it is copied.
    chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
    if (!isLast) return;
    let body: Submitted | { instructions: Submitted[] };
    try {
      body = JSON.parse((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8')) as typeof body;
    } catch {
      answer(res, aborted, '400 Bad Request', '{"code":"INVALID_MESSAGE"}');
      return;
    }
    const batched = 'instructions' in body && Array.isArray(body.instructions);
    const items = batched ? (body as { instructions: Submitted[] }).instructions : [body as Submitted];
    const results: Result[] = [];
    store(institution, items, results).then(
      () => answer(res, aborted, '200 OK', JSON.stringify(batched ? { results } : results[0])),
      () => answer(res, aborted, '500 Internal Server Error', '{"code":"INTERNAL"}'),
    );
  });
});

// How many records the ceiling holds, so the bench can see that it did store what it acknowledged.
app.get('/v1/count', (res) => {
  const stats = ins.getStats() as { entryCount?: number };
  res.writeHeader('content-type', 'application/json').end(JSON.stringify({ records: stats.entryCount ?? -1 }));
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end();
});

let listenSocket: us_listen_socket | undefined;
app.listen(config.listen.host, config.listen.port, (socket: us_listen_socket | false) => {
  if (socket === false) {
    process.stderr.write(`bare-server: cannot listen on ${config.listen.host}:${config.listen.port}\n`);
    process.exit(1);
  }
  listenSocket = socket;
  log({ host: config.listen.host, port: us_socket_local_port(socket as unknown as us_socket), msg: 'listening' });
});

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  if (listenSocket !== undefined) us_listen_socket_close(listenSocket);
  for (const ws of [...sockets]) {
    const conn = ws.getUserData();
    if (!conn.closed) {
      conn.closed = true;
      ws.end(1001, 'shutting down');
    }
  }
  // close() waits for the writes in flight, so nothing acknowledged is cut short.
  env.close().then(
    () => {
      app.close();
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`bare-server: close failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
