import { describe, it, expect } from 'vitest';
import { ConfigError, parseConfig, parseConfigWithWarnings, type RawConfig } from '../../src/config/config.js';
import { DEFAULTS, SNAPSHOT_INTERVAL_MS_MIN, TOKEN_LENGTH_MIN } from '../../src/config/defaults.js';
import { DEMO_CONFIG } from '../../src/config/demo.js';

function demo(): RawConfig {
  return structuredClone(DEMO_CONFIG);
}

function banksOf(raw: RawConfig): Record<string, unknown>[] {
  return raw['banks'] as Record<string, unknown>[];
}

function principalsOf(raw: RawConfig): Record<string, unknown>[] {
  return raw['principals'] as Record<string, unknown>[];
}

function configError(raw: unknown): ConfigError {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('parseConfig did not throw');
}

function expectKey(raw: unknown, key: string): void {
  const err = configError(raw);
  expect(err.key).toBe(key);
  expect(err.message).toContain(key);
  expect(err.name).toBe('ConfigError');
}

describe('parseConfig: the demo configuration', () => {
  it('parses and keeps what it says', () => {
    const cfg = parseConfig(demo());
    expect(cfg.banks).toHaveLength(14);
    expect(cfg.banks[0]).toEqual({ code: 'ICBC', name: 'Industrial and Commercial Bank of China', debitCapCents: 50_000_000_000_000 });
    expect(cfg.principals).toHaveLength(7);
    expect(cfg.principals[3]).toEqual({ token: 'demo-bank-ICBC-not-secret', role: 'bank', id: 'ICBC' });
    // The demo metrics token is the one grafana/prometheus.yml sends.
    expect(cfg.principals.filter((p) => p.role === 'metrics')).toEqual([{ token: 'demo-metrics-prometheus-not-secret', role: 'metrics', id: 'prometheus' }]);
    expect(cfg.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(cfg.shards).toBe(2);
    expect(cfg.workers).toBe(2);
    expect(cfg.snapshotIntervalMs).toBe(1000);
  });

  it('holds agreement and entrusted payments to a mandate only when they name one, as the defaults do, and ships three', () => {
    const cfg = parseConfig(demo());
    expect(cfg.requireMandates).toBe(false);
    expect(cfg.mandates.map((m) => m.id)).toEqual(['M-PI0001-ICBC', 'M-PI0001-CMB', 'M-PI0002-ICBC']);
  });

  it('has nothing to warn about', () => {
    expect(parseConfigWithWarnings(demo()).warnings).toEqual([]);
  });

  it('applies the defaults for keys it omits', () => {
    const cfg = parseConfig(demo());
    expect(cfg.limits).toEqual(DEFAULTS.limits);
    expect(cfg.limits.batchItemsMax).toBe(DEFAULTS.limits.batchItemsMax);
    expect(cfg.limits.batchItemsMax).toBe(10_000);
    expect(cfg.maxAmountCents).toBe(DEFAULTS.maxAmountCents);
    expect(cfg.maxAmountCents).toBe(1_000_000_000_000);
    expect(cfg.verifyOnStart).toBe(false);
    expect(cfg.logLevel).toBe('info');
  });

  it('defaults workers to min(shards, DEFAULTS.workers)', () => {
    const one = demo();
    delete one['workers'];
    one['shards'] = 1;
    expect(parseConfig(one).workers).toBe(1);

    const eight = demo();
    delete eight['workers'];
    eight['shards'] = 8;
    expect(parseConfig(eight).workers).toBe(Math.min(8, DEFAULTS.workers));

    const none = demo();
    delete none['workers'];
    delete none['shards'];
    const cfg = parseConfig(none);
    expect(cfg.shards).toBe(DEFAULTS.shards);
    expect(cfg.workers).toBe(Math.min(DEFAULTS.shards, DEFAULTS.workers));
  });

  it('needs only banks and principals', () => {
    const cfg = parseConfig({ banks: demo()['banks'], principals: demo()['principals'] });
    expect(cfg.listen).toEqual(DEFAULTS.listen);
    expect(cfg.dataDir).toBe(DEFAULTS.dataDir);
    expect(cfg.snapshotIntervalMs).toBe(DEFAULTS.snapshotIntervalMs);
  });

  it('overrides one limit and keeps the other defaults', () => {
    const raw = demo();
    raw['limits'] = { batchItemsMax: 500 };
    const cfg = parseConfig(raw);
    expect(cfg.limits.batchItemsMax).toBe(500);
    expect(cfg.limits.bodyBytesMax).toBe(DEFAULTS.limits.bodyBytesMax);
  });

  it('accepts maxAmountCents = MAX_SAFE_INTEGER', () => {
    const raw = demo();
    raw['maxAmountCents'] = Number.MAX_SAFE_INTEGER;
    expect(parseConfig(raw).maxAmountCents).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('returns a deeply frozen result', () => {
    const cfg = parseConfig(demo());
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.limits)).toBe(true);
    expect(Object.isFrozen(cfg.listen)).toBe(true);
    expect(Object.isFrozen(cfg.banks)).toBe(true);
    expect(Object.isFrozen(cfg.banks[0])).toBe(true);
    expect(Object.isFrozen(cfg.principals[0])).toBe(true);
    expect(() => {
      (cfg as { shards: number }).shards = 9;
    }).toThrow(TypeError);
  });

  it('does not modify its input or the demo configuration', () => {
    const before = JSON.stringify(DEMO_CONFIG);
    parseConfig(DEMO_CONFIG);
    expect(JSON.stringify(DEMO_CONFIG)).toBe(before);
    expect(Object.isFrozen(DEMO_CONFIG)).toBe(false);
  });
});

describe('parseConfig: errors name the key', () => {
  it('a non-object root', () => {
    expectKey(null, '(root)');
    expectKey([], '(root)');
  });

  it("unknown top-level key 'shardz'", () => {
    const raw = demo();
    raw['shardz'] = 4;
    expectKey(raw, 'shardz');
  });

  it("unknown 'limits.foo'", () => {
    const raw = demo();
    raw['limits'] = { foo: 1 };
    expectKey(raw, 'limits.foo');
  });

  it('unknown listen key', () => {
    const raw = demo();
    raw['listen'] = { host: '127.0.0.1', prot: 80 };
    expectKey(raw, 'listen.prot');
  });

  it('banks missing', () => {
    const raw = demo();
    delete raw['banks'];
    expectKey(raw, 'banks');
  });

  it('no bank', () => {
    const raw = demo();
    raw['banks'] = [];
    expectKey(raw, 'banks');
  });

  it('one bank, as in the contract example: a platform on which nothing can be paid yet', () => {
    const raw = demo();
    raw['banks'] = [banksOf(raw)[0]];
    raw['principals'] = (raw['principals'] as { role: string; id: string }[]).filter((p) => p.role !== 'bank' || p.id === banksOf(raw)[0]!['code']);
    raw['mandates'] = [];
    expect(parseConfig(raw).banks).toHaveLength(1);
  });

  it('banks not an array', () => {
    const raw = demo();
    raw['banks'] = { ICBC: 'x' };
    expectKey(raw, 'banks');
  });

  it("bad bank code 'icbc'", () => {
    const raw = demo();
    banksOf(raw)[0]!['code'] = 'icbc';
    expectKey(raw, 'banks[0].code');
  });

  it.each(['I', 'A'.repeat(17), 'IC-BC', ''])('bad bank code %j', (code) => {
    const raw = demo();
    banksOf(raw)[2]!['code'] = code;
    expectKey(raw, 'banks[2].code');
  });

  it('duplicate bank code', () => {
    const raw = demo();
    banksOf(raw)[1]!['code'] = 'ICBC';
    expectKey(raw, 'banks[1].code');
  });

  it.each(['', 7, null])('bank name %j', (name) => {
    const raw = demo();
    banksOf(raw)[1]!['name'] = name;
    expectKey(raw, 'banks[1].name');
  });

  it('bad debit cap', () => {
    const raw = demo();
    banksOf(raw)[1]!['debitCapCents'] = -1;
    expectKey(raw, 'banks[1].debitCapCents');
  });

  it('principals missing or empty', () => {
    const missing = demo();
    delete missing['principals'];
    expectKey(missing, 'principals');
    const empty = demo();
    empty['principals'] = [];
    expectKey(empty, 'principals');
  });

  it.each([['empty', ''], ['not a string', 12345678901234567], ['missing', undefined]])('principal token %s', (_what, token) => {
    const raw = demo();
    if (token === undefined) delete principalsOf(raw)[0]!['token'];
    else principalsOf(raw)[0]!['token'] = token;
    expectKey(raw, 'principals[0].token');
  });

  it.each(['demo institution PI0001', 'short one', 'tab\there', 'caf\u00e9-token-long-enough'])('principal token %j: not printable ASCII without spaces', (token) => {
    const raw = demo();
    principalsOf(raw)[0]!['token'] = token;
    expectKey(raw, 'principals[0].token');
  });

  it('a duplicate short token is still refused', () => {
    const raw = demo();
    principalsOf(raw)[0]!['token'] = 'abc';
    principalsOf(raw)[2]!['token'] = 'abc';
    expectKey(raw, 'principals[2].token');
  });

  it('a 16-character token is long enough', () => {
    const raw = demo();
    principalsOf(raw)[0]!['token'] = 'x'.repeat(16);
    const { config, warnings } = parseConfigWithWarnings(raw);
    expect(config.principals[0]!.token).toBe('x'.repeat(16));
    expect(warnings).toEqual([]);
  });

  it('duplicate token', () => {
    const raw = demo();
    principalsOf(raw)[2]!['token'] = principalsOf(raw)[0]!['token'];
    expectKey(raw, 'principals[2].token');
  });

  it("role 'admin'", () => {
    const raw = demo();
    principalsOf(raw)[1]!['role'] = 'admin';
    expectKey(raw, 'principals[1].role');
  });

  it('bank principal naming an unknown bank', () => {
    const raw = demo();
    const i = principalsOf(raw).findIndex((p) => p['role'] === 'bank');
    principalsOf(raw)[i]!['id'] = 'NOPE';
    expectKey(raw, `principals[${i}].id`);
  });

  it('institution id lowercase', () => {
    const raw = demo();
    principalsOf(raw)[0]!['id'] = 'pi0001';
    expectKey(raw, 'principals[0].id');
  });

  it('operator id with a space', () => {
    const raw = demo();
    const i = principalsOf(raw).findIndex((p) => p['role'] === 'operator');
    principalsOf(raw)[i]!['id'] = 'ops team';
    expectKey(raw, `principals[${i}].id`);
  });

  it('metrics id with a space', () => {
    const raw = demo();
    const i = principalsOf(raw).findIndex((p) => p['role'] === 'metrics');
    principalsOf(raw)[i]!['id'] = 'prom server';
    expectKey(raw, `principals[${i}].id`);
  });

  it.each([0, 65, 2.5, '2'])('shards %j', (shards) => {
    const raw = demo();
    raw['shards'] = shards;
    expectKey(raw, 'shards');
  });

  it('shards 64 is accepted', () => {
    const raw = demo();
    raw['shards'] = 64;
    expect(parseConfig(raw).shards).toBe(64);
  });

  it('workers > shards', () => {
    const raw = demo();
    raw['shards'] = 2;
    raw['workers'] = 3;
    expectKey(raw, 'workers');
  });

  it('workers 0', () => {
    const raw = demo();
    raw['workers'] = 0;
    expectKey(raw, 'workers');
  });

  it('snapshotIntervalMs 9', () => {
    expect(SNAPSHOT_INTERVAL_MS_MIN).toBe(10);
    const raw = demo();
    raw['snapshotIntervalMs'] = 9;
    expectKey(raw, 'snapshotIntervalMs');
  });

  it('maxAmountCents 2**53 (above MAX_SAFE_INTEGER)', () => {
    const raw = demo();
    raw['maxAmountCents'] = 2 ** 53;
    expectKey(raw, 'maxAmountCents');
  });

  it('maxAmountCents 0', () => {
    const raw = demo();
    raw['maxAmountCents'] = 0;
    expectKey(raw, 'maxAmountCents');
  });

  it('listen.port 70000', () => {
    const raw = demo();
    raw['listen'] = { host: '127.0.0.1', port: 70000 };
    expectKey(raw, 'listen.port');
  });

  it('listen.host empty', () => {
    const raw = demo();
    raw['listen'] = { host: '' };
    expectKey(raw, 'listen.host');
  });

  it("logLevel 'loud'", () => {
    const raw = demo();
    raw['logLevel'] = 'loud';
    expectKey(raw, 'logLevel');
  });

  it("verifyOnStart 'yes'", () => {
    const raw = demo();
    raw['verifyOnStart'] = 'yes';
    expectKey(raw, 'verifyOnStart');
  });

  it('a limit out of its bounds', () => {
    const raw = demo();
    raw['limits'] = { batchItemsMax: 0 };
    expectKey(raw, 'limits.batchItemsMax');
  });

  it('dataDir empty', () => {
    const raw = demo();
    raw['dataDir'] = '';
    expectKey(raw, 'dataDir');
  });
});

describe('parseConfig: what the contract allows', () => {
  it('starts with a token shorter than TOKEN_LENGTH_MIN and warns, naming the key and not the token', () => {
    const raw = demo();
    principalsOf(raw)[2]!['token'] = 'pi3';
    principalsOf(raw)[5]!['token'] = 'o'.repeat(TOKEN_LENGTH_MIN - 1);
    const { config, warnings } = parseConfigWithWarnings(raw);
    expect(config.principals[2]).toEqual({ token: 'pi3', role: 'institution', id: 'PI0003' });
    expect(warnings).toEqual([
      `principals[2].token is shorter than ${TOKEN_LENGTH_MIN} characters; use a long random token outside a trial`,
      `principals[5].token is shorter than ${TOKEN_LENGTH_MIN} characters; use a long random token outside a trial`,
    ]);
    for (const w of warnings) {
      expect(w).not.toContain('pi3');
      expect(w).not.toContain('o'.repeat(TOKEN_LENGTH_MIN - 1));
    }
    // parseConfig gives the same configuration without the warnings.
    expect(parseConfig(raw)).toEqual(config);
  });

  it('a one-character token is enough to start', () => {
    const raw = demo();
    principalsOf(raw)[0]!['token'] = 'x';
    expect(parseConfigWithWarnings(raw).warnings).toHaveLength(1);
  });

  it("takes a bank's name as optional, its code standing in when it is absent", () => {
    const raw = demo();
    delete banksOf(raw)[1]!['name'];
    const cfg = parseConfig(raw);
    expect(cfg.banks[1]).toEqual({ code: 'ABC', name: 'ABC', debitCapCents: 40_000_000_000_000 });
    expect(cfg.banks[0]!.name).toBe('Industrial and Commercial Bank of China');
    const bare = parseConfig({ banks: [{ code: 'ICBC' }, { code: 'CMB' }], principals: [{ token: 'ops-token', role: 'operator', id: 'ops' }] });
    expect(bare.banks).toEqual([
      { code: 'ICBC', name: 'ICBC' },
      { code: 'CMB', name: 'CMB' },
    ]);
  });

  it.each([10, 11, 50, 99])('accepts snapshotIntervalMs %j', (ms) => {
    const raw = demo();
    raw['snapshotIntervalMs'] = ms;
    expect(parseConfig(raw).snapshotIntervalMs).toBe(ms);
  });
});

describe('parseConfig: cluster mode and mandates', () => {
  const cluster = { node: 'n1', advertise: 'http://10.0.0.11:8080', nats: ['nats://10.0.0.11:4222'] };

  it('absent, the engine runs alone; present, its defaults fill in', () => {
    expect(parseConfig(demo()).cluster).toBeUndefined();
    expect(parseConfig({ ...demo(), cluster }).cluster).toEqual({ ...cluster, replicas: 3, leaseMs: 3000, logRetainEntries: 10_000_000 });
  });

  it('names the bad cluster key', () => {
    expectKey({ ...demo(), cluster: { ...cluster, replicas: 2 } }, 'cluster.replicas');
    expectKey({ ...demo(), cluster: { ...cluster, leaseMs: 10 } }, 'cluster.leaseMs');
    expectKey({ ...demo(), cluster: { ...cluster, advertise: 'ftp://x' } }, 'cluster.advertise');
    expectKey({ ...demo(), cluster: { ...cluster, nats: [] } }, 'cluster.nats');
    expectKey({ ...demo(), cluster: { ...cluster, node: 'a b' } }, 'cluster.node');
    expectKey({ ...demo(), cluster: { ...cluster, leader: true } }, 'cluster.leader');
    expectKey({ ...demo(), cluster: { ...cluster, logRetainEntries: -1 } }, 'cluster.logRetainEntries');
  });

  it('checks the configured mandates like a signing', () => {
    const m = { institution: 'PI0001', id: 'M-X', kind: 'agreement', payer: 'ICBC', account: 'a' };
    expect(parseConfig({ ...demo(), mandates: [m] }).mandates).toEqual([m]);
    expectKey({ ...demo(), mandates: [{ ...m, payer: 'NOPE' }] }, 'mandates[0].payer');
    expectKey({ ...demo(), mandates: [m, m] }, 'mandates[1].id');
    expectKey({ ...demo(), mandates: [{ ...m, kind: 'payout' }] }, 'mandates[0].kind');
    expectKey({ ...demo(), requireMandates: 'yes' }, 'requireMandates');
  });
});
