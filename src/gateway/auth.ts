/**
 * Bearer-token authentication. Tokens are looked up by their SHA-256
 * digest, so the comparison the lookup makes is on a digest, never on the
 * secret: how long it takes tells an attacker nothing about a token. The
 * tokens themselves are kept nowhere after start and never logged.
 *
 * Roles (PROTOCOL.md): `institution`, `bank`, `operator`, and `metrics`,
 * the monitoring system's, which may read `GET /metrics` and nothing else.
 * Each route lists the roles it admits (http-io.ts `authorize`), so a role
 * a route does not name is FORBIDDEN there; the stream refuses a `metrics`
 * upgrade outright.
 */

import { createHash } from 'node:crypto';
import type { PrincipalConfig, Role } from '../config/config.js';

export interface Principal {
  role: Role;
  id: string;
}

function digest(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64');
}

export class Authenticator {
  private readonly byDigest = new Map<string, Principal>();

  constructor(principals: readonly PrincipalConfig[]) {
    for (const p of principals) this.byDigest.set(digest(p.token), Object.freeze({ role: p.role, id: p.id }));
  }

  fromToken(token: string | undefined): Principal | undefined {
    if (token === undefined || token.length === 0 || token.length > 512) return undefined;
    return this.byDigest.get(digest(token));
  }

  /** `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235). */
  fromAuthorization(header: string): Principal | undefined {
    const m = /^bearer +(\S+) *$/i.exec(header);
    return m === null ? undefined : this.fromToken(m[1]);
  }
}
