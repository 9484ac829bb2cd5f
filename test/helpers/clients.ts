/**
 * Real clients for the tests: HTTP over fetch (JSON or msgpack bodies) and
 * a WebSocket client (the `ws` package) that correlates acks by `seq`.
 */

import { expect } from 'vitest';
import { decode, encode } from '@msgpack/msgpack';
import WebSocket from 'ws';

export type Enc = 'json' | 'msgpack';

export interface HttpReply {
  status: number;
  body: any;
  /** The reply's Content-Type. */
  type: string;
}

export async function http(
  base: string,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; enc?: Enc; raw?: Uint8Array | string; contentType?: string; accept?: string } = {},
): Promise<HttpReply> {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`;
  const enc = opts.enc ?? 'json';
  let payload: Uint8Array | string | undefined;
  if (opts.raw !== undefined) payload = opts.raw;
  else if (opts.body !== undefined) payload = enc === 'msgpack' ? encode(opts.body) : JSON.stringify(opts.body);
  if (payload !== undefined) headers['content-type'] = opts.contentType ?? (enc === 'msgpack' ? 'application/msgpack' : 'application/json');
  if (opts.accept !== undefined) headers['accept'] = opts.accept;
  else if (enc === 'msgpack') headers['accept'] = 'application/msgpack';
  const res = await fetch(base + path, { method, headers, body: payload as string | Uint8Array | undefined });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  let body: unknown = undefined;
  if (bytes.length > 0) {
    if (type.includes('msgpack')) body = decode(bytes);
    else if (type.includes('json')) body = JSON.parse(new TextDecoder().decode(bytes));
    else body = new TextDecoder().decode(bytes);
  }
  return { status: res.status, body, type };
}

export interface Ack {
  op: string;
  seq?: number;
  results?: any[];
  code?: string;
  message?: string;
  field?: string;
  [k: string]: unknown;
}

/** Messages the engine pushes on its own; none of them answers a request, whatever fields it has. */
const PUSHED_OPS: ReadonlySet<string> = new Set(['snapshot', 'forward', 'query', 'notify']);

export class StreamClient {
  private nextSeq = 1;
  private readonly waiting = new Map<number, (m: Ack) => void>();
  readonly unmatched: Ack[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(
    readonly ws: WebSocket,
    readonly enc: Enc,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const msg = (isBinary ? decode(data) : JSON.parse(data.toString())) as Ack;
      // A pushed snapshot carries its own `seq` (the snapshot's number): it answers no request.
      const w = typeof msg.seq === 'number' && !PUSHED_OPS.has(msg.op) ? this.waiting.get(msg.seq) : undefined;
      if (w !== undefined) {
        this.waiting.delete(msg.seq!);
        w(msg);
      } else {
        this.unmatched.push(msg);
      }
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static connect(base: string, token: string | undefined, enc: Enc, via: 'header' | 'query' = 'header'): Promise<StreamClient> {
    const url = base.replace('http', 'ws') + '/v1/stream' + (token !== undefined && via === 'query' ? `?token=${encodeURIComponent(token)}` : '');
    const headers = token !== undefined && via === 'header' ? { authorization: `Bearer ${token}` } : {};
    const ws = new WebSocket(url, { headers, maxPayload: 256 * 1024 * 1024 });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new StreamClient(ws, enc)));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  sendRaw(frame: unknown, enc: Enc = this.enc): void {
    this.ws.send(enc === 'msgpack' ? encode(frame) : JSON.stringify(frame), { binary: enc === 'msgpack' });
  }

  /** Send a frame with a fresh seq and wait for the message that answers it. */
  request(frame: Record<string, unknown>, enc: Enc = this.enc): Promise<Ack> {
    const seq = this.nextSeq++;
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      this.sendRaw({ ...frame, seq }, enc);
    });
  }

  submit(instructions: unknown[], enc: Enc = this.enc): Promise<Ack> {
    return this.request({ op: 'submit', instructions }, enc);
  }

  /** Wait for the next message that no request claimed (errors without seq, pushes). */
  async nextUnmatched(timeoutMs = 5000): Promise<Ack> {
    const deadline = Date.now() + timeoutMs;
    while (this.unmatched.length === 0) {
      if (Date.now() > deadline) throw new Error('no message arrived');
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.unmatched.shift()!;
  }

  close(): void {
    this.ws.close();
  }
}

/** The first pushed message (not matched to a request) that `pred` accepts, taken out of `client.unmatched`; waits up to `timeoutMs`. */
export async function waitFor(client: StreamClient, pred: (m: Ack) => boolean, timeoutMs = 5000): Promise<Ack> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = client.unmatched.findIndex(pred);
    if (i >= 0) return client.unmatched.splice(i, 1)[0]!;
    if (Date.now() > deadline) throw new Error(`no matching message; have ${JSON.stringify(client.unmatched.slice(-5))}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Wait `ms` and check that no pushed message matches. */
export async function noneFor(client: StreamClient, pred: (m: Ack) => boolean, ms = 300): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  expect(client.unmatched.filter(pred)).toEqual([]);
}
