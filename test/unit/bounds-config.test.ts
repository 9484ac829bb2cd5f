/**
 * The bounds on WebSocket connections and on frames of forwards: defaults,
 * overrides, and refusals that name the key, like every other limit.
 */

import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, type RawConfig } from '../../src/config/config.js';
import { DEFAULTS } from '../../src/config/defaults.js';
import { DEMO_CONFIG } from '../../src/config/demo.js';

function withLimits(limits: Record<string, unknown>): RawConfig {
  return { ...structuredClone(DEMO_CONFIG), limits };
}

function refusedKey(raw: RawConfig): string {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).key;
  }
  throw new Error('parseConfig did not throw');
}

const KEYS = ['wsConnectionsMax', 'wsConnectionsPerPrincipalMax', 'wsForwardFrameItemsMax'] as const;

describe('connection and forward-frame bounds', () => {
  it('default to the values in defaults.ts', () => {
    const cfg = parseConfig(withLimits({}));
    expect(cfg.limits.wsConnectionsMax).toBe(DEFAULTS.limits.wsConnectionsMax);
    expect(cfg.limits.wsConnectionsPerPrincipalMax).toBe(DEFAULTS.limits.wsConnectionsPerPrincipalMax);
    expect(cfg.limits.wsForwardFrameItemsMax).toBe(DEFAULTS.limits.wsForwardFrameItemsMax);
    // One principal cannot take every connection by default.
    expect(DEFAULTS.limits.wsConnectionsPerPrincipalMax).toBeLessThan(DEFAULTS.limits.wsConnectionsMax);
  });

  it('take an override', () => {
    const cfg = parseConfig(withLimits({ wsConnectionsMax: 50, wsConnectionsPerPrincipalMax: 5, wsForwardFrameItemsMax: 10 }));
    expect(cfg.limits).toMatchObject({ wsConnectionsMax: 50, wsConnectionsPerPrincipalMax: 5, wsForwardFrameItemsMax: 10 });
  });

  it.each(KEYS)('refuse a bad limits.%s, naming it', (key) => {
    for (const bad of [0, -1, 1.5, '10', null, 10_000_000]) {
      expect(refusedKey(withLimits({ [key]: bad }))).toBe(`limits.${key}`);
    }
  });
});
