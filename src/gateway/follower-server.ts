/**
 * What a follower serves in cluster mode (PROTOCOL.md, "Replicated
 * deployment"): `GET /healthz`, `GET /readyz` (503 `NOT_LEADER` naming the
 * leader), `GET /metrics` (how far it has applied the log), and
 * `NOT_LEADER` with the leader for every other request, HTTP or a
 * WebSocket upgrade.
 */

import { App, us_listen_socket_close, us_socket_local_port, type us_listen_socket, type us_socket } from 'uWebSockets.js';
import type { EngineConfig } from '../config/config.js';
import { Codec } from '../protocol/codec.js';
import { statusLine } from '../protocol/errors.js';
import { Authenticator } from './auth.js';
import { authorize, beginExchange, reply, replyStatusOnly } from './http-io.js';
import { listenExclusive } from './server.js';

export interface FollowerStatus {
  node: string;
  leader: { node: string; url: string } | undefined;
}

export class FollowerGateway {
  private constructor(
    private readonly app: ReturnType<typeof App>,
    private socket: us_listen_socket | undefined,
    readonly port: number,
  ) {}

  static async listen(config: EngineConfig, status: () => FollowerStatus, metrics: () => Promise<{ contentType: string; body: string }>): Promise<FollowerGateway> {
    const app = App();
    const codec = new Codec({ messageBytesMax: config.limits.bodyBytesMax });
    const auth = new Authenticator(config.principals);
    const notLeader = (): Record<string, unknown> => {
      const s = status();
      const body: Record<string, unknown> = { code: 'NOT_LEADER', message: 'this node is a follower; send requests to the leader', role: 'follower', node: s.node };
      if (s.leader !== undefined) body['leader'] = s.leader;
      return body;
    };
    app.get('/healthz', (res, req) => reply(beginExchange(res, req), codec, 200, { status: 'ok', role: 'follower' }));
    app.get('/readyz', (res, req) => reply(beginExchange(res, req), codec, 503, notLeader()));
    // Load balancers that check health with HEAD get the GET's status, without its body.
    app.head('/healthz', (res) => replyStatusOnly(res, 200));
    app.head('/readyz', (res) => replyStatusOnly(res, 503));
    app.get('/metrics', (res, req) => {
      const ex = beginExchange(res, req);
      if (authorize(auth, codec, ex, req, ['metrics', 'operator']) === undefined) return;
      metrics().then(
        ({ contentType, body }) => {
          if (ex.aborted) return;
          ex.answered = true;
          res.cork(() => res.writeStatus(statusLine(200)).writeHeader('content-type', contentType).end(body));
        },
        () => reply(ex, codec, 500, { code: 'INTERNAL', message: 'metrics collection failed' }),
      );
    });
    // Everything else, a WebSocket upgrade included (no stream route is registered here), is the leader's.
    app.any('/*', (res, req) => {
      const ex = beginExchange(res, req);
      reply(ex, codec, 503, notLeader());
    });
    const socket = await listenExclusive(app, config.listen.host, config.listen.port);
    return new FollowerGateway(app, socket, us_socket_local_port(socket as unknown as us_socket));
  }

  close(): void {
    if (this.socket !== undefined) us_listen_socket_close(this.socket);
    this.socket = undefined;
    this.app.close();
  }
}
