/**
 * The gateway: one uWebSockets.js app on one port for HTTP and WebSocket,
 * on the main thread (a uWS socket owned by a worker thread takes the whole
 * process down when that thread ends).
 */

import {
  App,
  SSLApp,
  us_listen_socket_close,
  us_socket_local_port,
  type ListenOptions,
  type RecognizedString,
  type TemplatedApp,
  type us_listen_socket,
  type us_socket,
  type WebSocket,
} from 'uWebSockets.js';
import type { Engine } from '../engine/engine.js';
import { Codec } from '../protocol/codec.js';
import { Authenticator } from './auth.js';
import { registerHttpRoutes } from './http-routes.js';
import { registerStream, registerStreamMetrics, type Connection } from './ws-stream.js';

/**
 * uWebSockets.js sets SO_REUSEPORT on its listen sockets unless told
 * otherwise, so a second engine on the same port would listen too and the
 * kernel would split the connections between the two. LIBUS_LISTEN_EXCLUSIVE_PORT
 * leaves it off: the second one's listen fails. uws-pack 20.0.8 declares the
 * ListenOptions enum only as a type (its module exports no such value) and
 * types the options only for `listen(port, options, cb)`; the native binding
 * takes them after a host too, which this interface states.
 */
const LIBUS_LISTEN_EXCLUSIVE_PORT: ListenOptions = 1;

interface ListenWithOptions {
  listen(host: RecognizedString, port: number, options: ListenOptions, cb: (listenSocket: us_listen_socket | false) => void): unknown;
}

/** The engine could not take its port: another process has it, or the address is not this host's. */
export class ListenError extends Error {
  override name = 'ListenError';
}

/** Listen on the port alone: a second process on it fails here instead of sharing it. */
export function listenExclusive(app: TemplatedApp, host: string, port: number): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    (app as unknown as ListenWithOptions).listen(host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, (socket) => {
      if (socket === false) {
        reject(
          new ListenError(
            `cannot listen on ${host}:${port}: the port is in use by another process (the engine takes it exclusively; \`ss -ltnp 'sport = :${port}'\` names it) or ${host} is not an address of this host`,
          ),
        );
        return;
      }
      resolve(socket);
    });
  });
}

export class Gateway {
  private constructor(
    private readonly app: TemplatedApp,
    private listenSocket: us_listen_socket | undefined,
    private readonly connections: Set<WebSocket<Connection>>,
    readonly port: number,
  ) {}

  static listen(engine: Engine): Promise<Gateway> {
    const tls = engine.config.tls;
    const app =
      tls === undefined
        ? App()
        : SSLApp({ cert_file_name: tls.certFile, key_file_name: tls.keyFile, ...(tls.passphrase !== undefined ? { passphrase: tls.passphrase } : {}) });
    const { limits } = engine.config;
    const codec = new Codec({ messageBytesMax: Math.max(limits.bodyBytesMax, limits.frameBytesMax) });
    const auth = new Authenticator(engine.config.principals);
    const connections = new Set<WebSocket<Connection>>();
    const stream = { engine, codec, auth, connections, byPrincipal: new Map() };
    registerStream(app, stream);
    registerStreamMetrics(engine.metrics.registry, stream);
    registerHttpRoutes(app, { engine, codec, auth });
    const { host, port } = engine.config.listen;
    return listenExclusive(app, host, port).then((socket) => new Gateway(app, socket, connections, us_socket_local_port(socket as unknown as us_socket)));
  }

  /** Stop accepting connections; open ones stay until `close`. */
  stopListening(): void {
    if (this.listenSocket !== undefined) {
      us_listen_socket_close(this.listenSocket);
      this.listenSocket = undefined;
    }
  }

  /** Close every WebSocket (1001, going away) and the app. */
  close(): void {
    this.stopListening();
    for (const ws of [...this.connections]) {
      const conn = ws.getUserData();
      if (!conn.closed) {
        conn.closed = true;
        ws.end(1001, 'engine shutting down');
      }
    }
    this.connections.clear();
    this.app.close();
  }
}
