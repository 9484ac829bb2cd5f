import { describe, it, expect } from 'vitest';
import type { PrincipalConfig } from '../../src/config/config.js';
import { Authenticator } from '../../src/gateway/auth.js';

const INST = 'institution-token-0001';
const BANK = 'bank-token-ICBC-0001';
const OPS = 'operator-token-ops-0001';
const LONG_512 = 'L'.repeat(512);
const LONG_513 = 'M'.repeat(513);

const principals: PrincipalConfig[] = [
  { token: INST, role: 'institution', id: 'PI0001' },
  { token: BANK, role: 'bank', id: 'ICBC' },
  { token: OPS, role: 'operator', id: 'ops' },
  { token: LONG_512, role: 'institution', id: 'PI0512' },
  { token: LONG_513, role: 'institution', id: 'PI0513' },
];

const auth = new Authenticator(principals);

describe('Authenticator.fromToken', () => {
  it('maps each token to its principal', () => {
    expect(auth.fromToken(INST)).toEqual({ role: 'institution', id: 'PI0001' });
    expect(auth.fromToken(BANK)).toEqual({ role: 'bank', id: 'ICBC' });
    expect(auth.fromToken(OPS)).toEqual({ role: 'operator', id: 'ops' });
  });

  it('returns a frozen principal without the token', () => {
    const p = auth.fromToken(INST)!;
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.keys(p).sort()).toEqual(['id', 'role']);
  });

  it('refuses unknown, empty, undefined and near-miss tokens', () => {
    expect(auth.fromToken('unknown-token-000000')).toBeUndefined();
    expect(auth.fromToken('')).toBeUndefined();
    expect(auth.fromToken(undefined)).toBeUndefined();
    expect(auth.fromToken(INST.toUpperCase())).toBeUndefined();
    expect(auth.fromToken(`${INST} `)).toBeUndefined();
    expect(auth.fromToken(INST.slice(0, -1))).toBeUndefined();
  });

  it('accepts a 512-character token and refuses a longer one, even if configured', () => {
    expect(auth.fromToken(LONG_512)).toEqual({ role: 'institution', id: 'PI0512' });
    expect(auth.fromToken(LONG_513)).toBeUndefined();
  });
});

describe('Authenticator.fromAuthorization', () => {
  it("accepts 'Bearer x' and 'bearer x'", () => {
    expect(auth.fromAuthorization(`Bearer ${INST}`)).toEqual({ role: 'institution', id: 'PI0001' });
    expect(auth.fromAuthorization(`bearer ${BANK}`)).toEqual({ role: 'bank', id: 'ICBC' });
    expect(auth.fromAuthorization(`BEARER ${OPS}`)).toEqual({ role: 'operator', id: 'ops' });
  });

  it('tolerates extra spaces around the token', () => {
    expect(auth.fromAuthorization(`Bearer   ${INST}`)).toEqual({ role: 'institution', id: 'PI0001' });
    expect(auth.fromAuthorization(`Bearer ${INST}  `)).toEqual({ role: 'institution', id: 'PI0001' });
  });

  it.each([
    ['Basic scheme', `Basic ${INST}`],
    ['scheme only', 'Bearer'],
    ['scheme and space only', 'Bearer '],
    ['empty', ''],
    ['token only', INST],
    ['no space', `Bearer${INST}`],
    ['unknown token', 'Bearer unknown-token-000000'],
    ['two tokens', `Bearer ${INST} ${BANK}`],
    ['leading space', ` Bearer ${INST}`],
  ])('rejects %s', (_name, header) => {
    expect(auth.fromAuthorization(header)).toBeUndefined();
  });

  it('rejects a token longer than 512 characters', () => {
    expect(auth.fromAuthorization(`Bearer ${LONG_512}`)).toEqual({ role: 'institution', id: 'PI0512' });
    expect(auth.fromAuthorization(`Bearer ${LONG_513}`)).toBeUndefined();
  });
});
